"""Errors raised at saelab's boundaries. The CLI prints them as one line and exits non-zero."""


class SaelabError(Exception):
    """A user-facing error: the message names the offending value and what to do."""


class ModelNotAvailableError(SaelabError):
    """A model name or path that cannot be loaded here (unknown, or not reachable offline)."""


class StoreError(SaelabError):
    """The results store cannot be opened or written (corrupt file, foreign file, locked too long)."""
