"""An in-memory duplex byte pipe implementing the ByteChannel shape, for protocol unit tests."""

from __future__ import annotations

import threading
import time
from typing import Callable


class _Queue:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.cond = threading.Condition()

    def put(self, data: bytes) -> None:
        with self.cond:
            self.buf += data
            self.cond.notify_all()

    def get(self, n: int, timeout: float) -> bytes:
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.buf) < n:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out


class End:
    """One end of the pipe. ``tamper(data) -> data`` alters what this end sends."""

    def __init__(self, rx: _Queue, tx: _Queue) -> None:
        self._rx, self._tx = rx, tx
        self.tamper: Callable[[bytes], bytes] | None = None
        self.written: list[bytes] = []

    def read(self, n: int, timeout: float) -> bytes:
        return self._rx.get(n, timeout)

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))
        if self.tamper:
            data = self.tamper(bytes(data))
        self._tx.put(data)


def pipe() -> tuple[End, End]:
    a, b = _Queue(), _Queue()
    return End(a, b), End(b, a)
