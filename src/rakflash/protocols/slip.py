"""SLIP framing (RFC 1055) as both nRF52 serial bootloaders use it.

END 0xC0 closes a frame; inside a frame ESC 0xDB escapes END (as DB DC) and
itself (as DB DD). Nordic's Secure DFU sends ``payload END``; Adafruit's legacy
DFU puts an END before the payload as well. The decoder takes both: empty frames
(two ENDs in a row) are skipped, and a frame with a broken escape is dropped
whole, as the bootloaders' own decoders do.

Hand-written: it is a few lines, and the PyPI SLIP packages either pull in a
socket layer or don't report broken escapes, which the tests need to see.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..link import ByteChannel

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD


def encode(payload: bytes, *, leading_end: bool = False) -> bytes:
    """One frame: escaped ``payload`` and END (and an END first when ``leading_end``)."""
    body = payload.replace(bytes([ESC]), bytes([ESC, ESC_ESC])).replace(bytes([END]), bytes([ESC, ESC_END]))
    return (bytes([END]) if leading_end else b"") + body + bytes([END])


class Decoder:
    """Turns a byte stream into frames; bytes may arrive in any pieces."""

    def __init__(self, max_frame: int = 8192) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._escaped = False
        self._broken = False
        self.dropped = 0          # frames dropped for a broken escape or for size

    def feed(self, data: bytes) -> list[bytes]:
        """The frames that ``data`` completes (without their ENDs)."""
        frames = []
        for b in data:
            if b == END:
                if self._broken:
                    self.dropped += 1
                elif self._buf:
                    frames.append(bytes(self._buf))
                self._buf.clear()
                self._escaped = self._broken = False
                continue
            if self._broken:
                continue
            if self._escaped:
                self._escaped = False
                if b == ESC_END:
                    self._buf.append(END)
                elif b == ESC_ESC:
                    self._buf.append(ESC)
                else:
                    self._broken = True
                continue
            if b == ESC:
                self._escaped = True
                continue
            self._buf.append(b)
            if len(self._buf) > self.max_frame:
                self._broken = True
        return frames

    @property
    def between_frames(self) -> bool:
        """Nothing of a frame has arrived since the last END."""
        return not self._buf and not self._escaped and not self._broken

    @property
    def pending(self) -> bytes:
        """Bytes of a frame not yet closed by END."""
        return bytes(self._buf)

    def reset(self) -> None:
        self._buf.clear()
        self._escaped = self._broken = False


def read_some(channel: ByteChannel, timeout: float) -> bytes:
    """Whatever a :class:`~rakflash.link.ByteChannel` has: waits up to ``timeout`` for one
    byte, then takes what else arrived without waiting (a frame's bytes come together)."""
    first = channel.read(1, timeout)
    return first + channel.read(65536, 0) if first else first
