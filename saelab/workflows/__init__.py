"""Workflows: library parts tied to a workspace and its results store (what the CLI and the demo run)."""
