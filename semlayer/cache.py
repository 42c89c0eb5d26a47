"""A cache bounded by the bytes its values hold, least recently used dropped first (the newest always stays).

Values are held by reference, never copied; safe to fill from several threads (a value is computed outside
the lock, so two threads may compute the same one; the last stored wins).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable


def array_bytes(value: Any) -> int:
    """About how many bytes a value holds: its ``nbytes`` when it says, a small constant otherwise."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (list, tuple)):
        return 64 + 32 * len(value)
    return 64


class BoundedCache:
    def __init__(self, max_bytes: int, sizeof: Callable[[Any], int] = array_bytes) -> None:
        self.max_bytes = max_bytes
        self.sizeof = sizeof
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes held (as ``sizeof`` counts them)."""
        return self._bytes

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            held = self._items.get(key)
            if held is not None:
                self._items.move_to_end(key)
            return None if held is None else held[0]

    def value(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value under ``key``, computed (outside the lock) and kept when missing."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
        value = compute()
        self.put(key, value)
        return value

    def put(self, key: Hashable, value: Any, size: int | None = None) -> None:
        size = self.sizeof(value) if size is None else size
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes += size - (0 if old is None else old[1])
            self._items[key] = (value, size)
            while self._bytes > self.max_bytes and len(self._items) > 1:
                self._bytes -= self._items.popitem(last=False)[1][1]

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
