"""File bytes kept in memory, shared by every transfer, so a boot storm of 1,000 phones reads each file once.

An entry is valid while the file's (st_mtime_ns, st_size, st_ino) is unchanged; it carries the file's ETag so that
is computed once too. Bounded in total bytes, least recently used out first; safe to use from worker threads.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import NamedTuple


class Cached(NamedTuple):
    data: bytes
    etag: str


Identity = tuple[int, int, int]


class HotCache:
    def __init__(self, max_bytes: int, file_max: int) -> None:
        self.max_bytes = max_bytes
        self.file_max = min(file_max, max_bytes)
        self.total = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[Identity, Cached]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def identity(st: os.stat_result) -> Identity:
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def get(self, path: str, st: os.stat_result) -> Cached | None:
        with self._lock:
            entry = self._entries.get(path)
            if entry is None or entry[0] != self.identity(st):
                self.misses += 1
                if entry is not None:
                    self._drop(path)
                return None
            self.hits += 1
            self._entries.move_to_end(path)
            return entry[1]

    def put(self, path: str, st: os.stat_result, cached: Cached) -> None:
        size = len(cached.data)
        if size > self.file_max:
            return
        with self._lock:
            self._drop(path)
            while self._entries and self.total + size > self.max_bytes:
                _, (_, old) = self._entries.popitem(last=False)
                self.total -= len(old.data)
            self._entries[path] = (self.identity(st), cached)
            self.total += size

    def _drop(self, path: str) -> None:
        entry = self._entries.pop(path, None)
        if entry is not None:
            self.total -= len(entry[1].data)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.total = 0
