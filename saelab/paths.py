"""Where saelab's bundled files live: the bundled models, tokenizers and circuits (`data/`) and the web app
(`app/`). In a source checkout (or an editable install) they are the repository's top-level folders; a built
wheel carries copies of both inside the package, as `saelab/_bundled/{data,app}` (setup.py puts them there).
This module is the one place that knows."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _bundled(name: str) -> Path:
    """The wheel's copy of the repository folder `name` if there is one, else the source tree's."""
    packaged = _PACKAGE / "_bundled" / name
    return packaged if packaged.is_dir() else _PACKAGE.parent / name


def data_dir() -> Path:
    """The `data/` folder: bundled models, tokenizers, circuits."""
    return _bundled("data")


def app_dir() -> Path:
    """The `app/` folder: the Streamlit app's `main.py` and its pages."""
    return _bundled("app")
