"""Feature-level circuits: sparse feature circuits over SAE/transcoder latents (Marks et al. 2024) and
attribution graphs of one prompt through a replacement model (Ameisen, Lindsey et al. 2025).

`types` holds the graph both produce, which the store keeps and the app draws.
"""
