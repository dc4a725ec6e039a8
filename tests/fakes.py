"""Things on a serial port that are not RAK modules, served on a real pty: an echo, a yes-man."""

from __future__ import annotations

import os
import select
import threading
import tty
from typing import Callable


class FakePort:
    """A pty whose other end answers every chunk (or line) it receives with ``respond(data)``."""

    def __init__(self, respond: Callable[[bytes], bytes], *, by_line: bool = False) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.respond = respond
        self.by_line = by_line
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        pending = b""
        while not self._stop:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not self.by_line:
                os.write(self.master, self.respond(data))
                continue
            pending += data
            while True:
                cut = min((i for i in (pending.find(b"\r"), pending.find(b"\n")) if i >= 0), default=-1)
                if cut < 0:
                    break
                line, pending = pending[:cut], pending[cut + 1:]
                if line.strip():
                    os.write(self.master, self.respond(line))

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        os.close(self.master)
        os.close(self._slave)

    def __enter__(self) -> FakePort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def echo() -> FakePort:
    """An adapter with TX and RX bridged and nothing attached: every byte comes back."""
    return FakePort(lambda data: data)


def yes_man() -> FakePort:
    """A device that answers OK to every line."""
    return FakePort(lambda line: b"OK\r\n", by_line=True)
