"""The trainer's view of its data iterator: buffered look-ahead and a resumable position."""

from collections import deque
from collections.abc import Iterable
from typing import Any

from jaxtyping import Float
from torch import Tensor

Batch = dict[str, Float[Tensor, "batch d_in"]]


class DataFeed:
    """Batches from an iterator, with the position of the last batch handed out.

    If the iterator has `state_dict()` / `load_state_dict()` (as saelab.activations' batch iterators do),
    the position is its state after that batch; otherwise it is a batch count, and resuming skips that many
    batches of a fresh iterator (which must then yield the same sequence).
    """

    def __init__(self, batches: Iterable[Batch]) -> None:
        self._iterator = iter(batches)
        self._ahead: deque[tuple[Batch, Any]] = deque()
        self._consumed = 0
        self._state: Any = None

    def _pull(self) -> bool:
        try:
            batch = next(self._iterator)
        except StopIteration:
            return False
        state = self._iterator.state_dict() if hasattr(self._iterator, "state_dict") else None
        self._ahead.append((batch, state))
        return True

    def look_ahead(self, n: int) -> list[Batch]:
        """The next n batches (fewer if the data ends) without consuming them."""
        while len(self._ahead) < n and self._pull():
            pass
        return [batch for batch, _ in list(self._ahead)[:n]]

    def next(self) -> Batch | None:
        """The next batch, or None when the data has run out."""
        if not self._ahead and not self._pull():
            return None
        batch, self._state = self._ahead.popleft()
        self._consumed += 1
        return batch

    def position(self) -> dict[str, Any]:
        return {"batches_consumed": self._consumed, "iterator_state": self._state}

    def restore(self, position: dict[str, Any]) -> None:
        """Continue after the batch recorded by `position()` (on a fresh feed)."""
        consumed, state = int(position["batches_consumed"]), position["iterator_state"]
        if state is not None and hasattr(self._iterator, "load_state_dict"):
            self._iterator.load_state_dict(state)
        else:
            for skipped in range(consumed):
                if not self._pull():
                    raise ValueError(
                        f"the data ended after {skipped} batches; the checkpoint is at batch {consumed}"
                    )
                self._ahead.popleft()
        self._consumed, self._state = consumed, state
