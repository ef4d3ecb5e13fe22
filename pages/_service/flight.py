"""One computation per key at a time in this worker: a caller asking for a key that another thread is
computing (a dataset being loaded, a view's rates) waits for that computation instead of starting a
second one, then finds its result where the first put it (the loaded bundles, the result cache)."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager


class SingleFlight:
    """Keyed locks, each kept only while a thread holds or waits for it (memory bounded by the
    threads of the worker).

    Examples
    --------
    >>> flight = SingleFlight()
    >>> with flight.hold(("rates", "key")):
    ...     flight.busy(("rates", "key"))
    True
    >>> flight.busy(("rates", "key"))
    False
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._held: dict = {}  # key -> [lock, threads holding or waiting]

    @contextmanager
    def hold(self, key):
        with self._lock:
            entry = self._held.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._held[key]

    def busy(self, key) -> bool:
        """Is a thread computing (or waiting for) ``key`` now?"""
        with self._lock:
            return key in self._held


#: the one registry of this worker (dataset loads, compressions, cached views)
flight = SingleFlight()


def _forget_in_child() -> None:
    """A process forked while a thread held a key (a background job's process) starts with an empty
    registry: that thread does not exist there, so its lock would never be released."""
    flight._lock = threading.Lock()
    flight._held = {}


os.register_at_fork(after_in_child=_forget_in_child)
