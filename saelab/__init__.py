"""saelab: a mechanistic-interpretability workbench built on sparse autoencoders."""
__version__ = "0.1.0"
