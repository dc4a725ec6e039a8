"""A serial link that another thread can stop, or that stops itself at a deadline.

A flow blocks in its link's reads; nothing outside its thread can interrupt it
there (Python delivers Ctrl-C only to the main thread). Updating several modules
at once (:mod:`rakflash.flows.fleet`) and ``rakflash doctor``'s time bound both
need that:

* :meth:`StoppableLink.stop` wakes a read that is waiting and makes the
  link's next call raise the given exception (``KeyboardInterrupt`` by
  default) *once*; the calls after it go through, so the flow's own clean-up
  on Ctrl-C — ending a YMODEM or AMOTA session so the re-run starts clean —
  still reaches the device;
* ``deadline`` (a :func:`time.monotonic` time) makes every call after it
  raise :class:`OutOfTime`, which no flow catches.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .link import Link

SLICE = 0.1   # seconds: how late a stop is noticed at worst, on a port without cancel_read


class OutOfTime(BaseException):
    """A link's deadline passed (a BaseException, so that no flow's error handling swallows it)."""


class StoppableLink(Link):
    """A :class:`~rakflash.link.Link` with :meth:`stop` and an optional deadline."""

    def __init__(self, *args: Any, deadline: float | None = None, **kwargs: Any) -> None:
        """``args`` and ``kwargs``: :class:`~rakflash.link.Link`'s."""
        self.deadline = deadline
        self._stop_with: BaseException | None = None
        self._stop_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def stop(self, exc: BaseException | None = None) -> None:
        """Make the next call on this link (from any thread) raise ``exc`` (default ``KeyboardInterrupt``).

        A read waiting at that moment returns at once: pyserial's ``cancel_read``
        wakes it (POSIX and Windows ports, see ``Link._wait_read``); elsewhere
        (``socket://``) reads wait in slices of at most :data:`SLICE` seconds.
        """
        with self._stop_lock:
            self._stop_with = exc if exc is not None else KeyboardInterrupt()
        cancel = getattr(self._ser, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except Exception:      # a port closing at this moment: the flag is enough
                pass

    @property
    def stopping(self) -> bool:
        return self._stop_with is not None

    def _check(self) -> None:
        if self._stop_with is not None:
            with self._stop_lock:
                exc, self._stop_with = self._stop_with, None
            if exc is not None:
                raise exc
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise OutOfTime(f"{self.port_name}: out of time")

    def write(self, data: bytes) -> None:
        self._check()
        super().write(data)

    def _read_port(self, n: int, timeout: float) -> bytes:
        self._check()
        end = time.monotonic() + max(0.0, timeout)
        if self.deadline is not None:
            end = min(end, self.deadline)      # the call after this one raises OutOfTime
        wakes = self._ser is not None and hasattr(self._ser, "cancel_read")
        out = bytearray()
        while True:
            left = max(0.0, end - time.monotonic())
            out += super()._read_port(n - len(out), left if wakes else min(SLICE, left))
            if len(out) >= n:
                return bytes(out)
            if self._stop_with is not None:
                if out:           # keep what arrived: the call after the stop may want it
                    self._pending[:0] = out
                self._check()
            if time.monotonic() >= end:
                return bytes(out)
            # else: woken early (a stale wake-up, or a slice ended): wait on
