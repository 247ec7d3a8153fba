"""Overlap the model's forward passes with tokenising ahead and with committing shards to disk.

Tokenisers and fsync release the GIL, so one helper thread each keeps the forward pass the bottleneck.
"""

import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple, TypeVar

T = TypeVar("T")


class _Failure(NamedTuple):
    error: BaseException


_DONE = object()


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """`items` in order, produced up to `depth` ahead by a background thread; its errors re-raise here."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(exc))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="saelab-prefetch", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


class OrderedCommits:
    """Runs commit jobs one at a time, in submission order, on a helper thread.

    `barrier()` waits for every job so far and re-raises the first error; call it before submitting the
    next shard's jobs (at most one shard is in flight) and before finishing.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="saelab-commit")
        self._pending: list[Future] = []

    def submit(self, job, *args) -> None:
        self._pending.append(self._executor.submit(job, *args))

    def barrier(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        try:
            self.barrier()
        finally:
            self._executor.shutdown(wait=True)
