"""Batches transferred to the devices ahead of the step that uses them, with an exact data state.

:class:`DevicePrefetcher` keeps ``size`` batches in flight: each is read from the data iterator and
handed to ``put`` (``DataParallel.shard_batch``: an asynchronous host-to-device transfer) while the
devices still run earlier steps, so the loop never waits for input between two dispatches.

Reading ahead would make a checkpoint save the data stream ``size`` batches too far. So the
prefetcher remembers the iterator's state after each batch it read, and ``get_state`` answers the
state after the last batch *handed out*: a checkpoint of step k resumes the stream at batch k+1,
exactly as without prefetching (the bit-identical resume tests hold). It is saved in grain's own
file format, so a checkpoint restores into the plain grain iterator.
"""
from __future__ import annotations

import collections
import json
from typing import Any, Callable, Iterator, Optional

DEFAULT_SIZE = 2


class DevicePrefetcher:
    """``next()`` -> ``(local numpy batch, device batch)``; ``limit`` caps how many batches are read
    (the steps left in the phase, so nothing is read that no step uses)."""

    def __init__(self, iterator: Iterator[dict], put: Callable[[dict], Any], *, size: int = DEFAULT_SIZE,
                 limit: Optional[int] = None):
        if size < 1:
            raise ValueError(f"prefetch size must be >= 1, got {size}")
        self._it, self._put, self._size, self._left = iterator, put, size, limit
        self._queue: collections.deque = collections.deque()
        self._stateful = hasattr(iterator, "get_state") and hasattr(iterator, "set_state")
        self._state = iterator.get_state() if self._stateful else None

    def __iter__(self):
        return self

    def _fill(self) -> None:
        while len(self._queue) < self._size and self._left != 0:
            try:
                local = next(self._it)
            except StopIteration:
                self._left = 0
                break
            state = self._it.get_state() if self._stateful else None
            self._queue.append((local, self._put(local), state))
            if self._left is not None:
                self._left -= 1

    def __next__(self) -> tuple[dict, Any]:
        self._fill()
        if not self._queue:
            raise StopIteration
        local, device, self._state = self._queue.popleft()
        self._fill()  # the next batches start transferring while this one is used
        return local, device

    # -- grain's checkpoint protocol (orbax ``grain.checkpoint.CheckpointSave``) ------------------
    def get_state(self) -> bytes:
        """The data state after the last batch handed out, as grain writes it."""
        state = self._state
        return state if isinstance(state, bytes) else json.dumps(state, indent=4).encode()

    def set_state(self, state) -> None:
        self._queue.clear()
        self._it.set_state(json.loads(state) if isinstance(state, bytes) and not
                           isinstance(self._state, bytes) else state)
        self._state = self._it.get_state()

    def close(self) -> None:
        self._queue.clear()
        if hasattr(self._it, "close"):
            self._it.close()
