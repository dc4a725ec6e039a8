"""Raw serial traffic recording (``--trace FILE``) and replay.

Format: JSON Lines, one event per line, UTF-8. The first line is a header::

    {"trace": "rakflash", "version": 1, "started": "2026-11-24T21:00:00+00:00"}

Every other line has ``t`` (seconds since the trace started, float) and
``ev``, one of:

* ``"tx"`` / ``"rx"`` with ``hex``: bytes sent to / received from the device,
  and ``text``: the same bytes as ASCII with other bytes escaped (for reading);
* ``"open"`` with ``port``, ``baud``, ``parity``; ``"close"``;
* ``"baud"`` with ``baud``; ``"lines"`` with ``rts`` / ``dtr`` (null = unchanged);
* ``"note"`` with ``text``: what rakflash was doing at that moment;
* ``"tx-hidden"`` / ``"rx-hidden"`` with ``bytes`` and ``what``: bytes kept out of the trace
  (a lock password and the module's echo of it: :meth:`rakflash.link.Link.hidden`).

:class:`TraceReplay` turns a recorded trace back into a :class:`~rakflash.link.ByteChannel`
that answers with the recorded ``rx`` bytes, so a trace from a real module can
be replayed against the protocol code in a test.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from pathlib import Path
from typing import IO


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in data)


def open_for_writing(path: str | Path, *, append: bool = False, binary: bool = False) -> IO:
    """A file (text, or ``binary``) opened for writing, truncated or appended to, that can't hang
    the caller and is known to take data: O_NONBLOCK for the open only, so a FIFO nobody reads
    fails (ENXIO) instead of blocking; then a write of zero bytes, which leaves a working file as
    it was but fails where nothing can be written (``/dev/full``: ENOSPC). Raises OSError.
    (Used for --trace, --report and ``info0 show --save``.)"""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o644)
    try:
        os.set_blocking(fd, True)
        os.write(fd, b"")
        mode = ("a" if append else "w") + ("b" if binary else "")
        return os.fdopen(fd, mode) if binary else os.fdopen(fd, mode, encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise


class TraceWriter:
    """Appends timestamped, direction-tagged events to a trace file."""

    def __init__(self, path: str | Path | IO[str]) -> None:
        self._own = isinstance(path, (str, Path))     # else an open file, the caller's
        if isinstance(path, (str, Path)):
            self._f: IO[str] = open_for_writing(path)
        else:
            self._f = path
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._write({"trace": "rakflash", "version": 1,
                     "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})

    def _write(self, obj: dict) -> None:
        with self._lock:
            self._f.write(json.dumps(obj) + "\n")
            self._f.flush()

    def event(self, ev: str, **fields: object) -> None:
        self._write({"t": round(time.monotonic() - self._t0, 6), "ev": ev, **fields})

    def data(self, direction: str, data: bytes) -> None:
        self.event(direction, hex=data.hex(), text=_printable(data))

    def note(self, text: str) -> None:
        self.event("note", text=text)

    def close(self) -> None:
        if self._own:
            self._f.close()


def read_trace(path: str | Path) -> list[dict]:
    """All events of a trace file (header excluded)."""
    events = []
    with open(path, encoding="utf-8") as f:
        header = json.loads(f.readline())
        if header.get("trace") != "rakflash":
            raise ValueError(f"{path} is not a rakflash trace")
        for line in f:
            if line.strip():
                events.append(json.loads(line))
    return events


class TraceReplay:
    """A byte channel that plays back a trace's ``rx`` bytes.

    Writes are checked against the recorded ``tx`` bytes (``strict=True``
    raises on a mismatch); reads hand out the ``rx`` bytes recorded after the
    matching writes, in order, without waiting.
    """

    def __init__(self, events: list[dict], *, strict: bool = True) -> None:
        self._events = [e for e in events if e.get("ev") in ("tx", "rx")]
        self._i = 0
        self._rx = bytearray()
        self._expect_tx = bytearray()
        self.strict = strict
        self._advance()

    def _advance(self) -> None:
        # Release rx bytes up to the next tx event still owed.
        while self._i < len(self._events) and not self._expect_tx:
            e = self._events[self._i]
            self._i += 1
            if e["ev"] == "rx":
                self._rx += bytes.fromhex(e["hex"])
            else:
                self._expect_tx += bytes.fromhex(e["hex"])

    def write(self, data: bytes) -> None:
        for b in data:
            if not self._expect_tx:
                self._advance()
            if self.strict and (not self._expect_tx or self._expect_tx[0] != b):
                raise AssertionError(f"replay: unexpected byte {b:#04x} written")
            if self._expect_tx:
                del self._expect_tx[:1]
        if not self._expect_tx:
            self._advance()

    def read(self, n: int, timeout: float) -> bytes:
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out
