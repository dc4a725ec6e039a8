"""The virtual module's flash: bytes at addresses, erased to 0xFF, with datasheet timing.

Erase works on whole pages and programming in the MCU's program unit, each
taking the time the catalog gives for that MCU (from its datasheet), scaled
by ``time_scale`` (0 makes flash instant for quick tests).
"""

from __future__ import annotations

import time

from ..catalog import Mcu


class FlashError(Exception):
    """Programming a location that was not erased (as the STM32 refuses to)."""


class Flash:
    def __init__(self, mcu: Mcu, *, time_scale: float = 1.0) -> None:
        self.mcu = mcu
        self.base = mcu.flash.start
        self.mem = bytearray(b"\xff") * mcu.flash.size
        self.time_scale = time_scale
        self.busy_seconds = 0.0   # modelled time spent erasing/programming
        # What anything running on the module (bootloader, ROM, firmware) did to the flash:
        # erase() and program() calls; load() (the factory's programmer) counts as neither.
        self.erases = 0
        self.programs = 0

    def _spend(self, seconds: float) -> None:
        seconds *= self.time_scale
        self.busy_seconds += seconds
        if seconds > 0:
            time.sleep(seconds)

    def _offset(self, addr: int, size: int) -> int:
        off = addr - self.base
        if off < 0 or off + size > len(self.mem):
            raise FlashError(f"{addr:#x}+{size} is outside flash")
        return off

    def read(self, addr: int, size: int) -> bytes:
        off = self._offset(addr, size)
        return bytes(self.mem[off:off + size])

    def erase(self, start: int, end: int) -> None:
        """Erase every page that [start, end) touches."""
        page = self.mcu.page_size
        first = (start - self.base) // page
        last = (end - 1 - self.base) // page
        self._offset(start, end - start)
        self.erases += 1
        self.mem[first * page:(last + 1) * page] = b"\xff" * ((last - first + 1) * page)
        self._spend((last - first + 1) * self.mcu.page_erase_ms / 1000)

    def program(self, addr: int, data: bytes) -> None:
        """Write ``data``; the target must be erased (bits only go from 1 to 0)."""
        off = self._offset(addr, len(data))
        current = self.mem[off:off + len(data)]
        if any(c != 0xFF for c, d in zip(current, data, strict=False) if d != 0xFF):
            raise FlashError(f"program at {addr:#x}: location not erased")
        self.programs += 1
        self.mem[off:off + len(data)] = data
        units = -(-len(data) // self.mcu.program_unit)
        self._spend(units * self.mcu.program_unit_us / 1e6)

    def load(self, addr: int, data: bytes) -> None:
        """Put bytes in place without timing (the factory programmer)."""
        off = self._offset(addr, len(data))
        self.mem[off:off + len(data)] = data
