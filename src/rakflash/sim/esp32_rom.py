"""The ROM serial loader of the virtual ESP32 and ESP32-S3 (sim/esp32.py): the download mode's
command loop over SLIP, which runs esptool's flasher stub (esp32_stub.py) once MEM_END starts it. The facts it follows
are Espressif's (docs/protocols.md "ESP32 ROM download mode": esptool's serial-protocol
documentation, its targets' register facts, the esp-flasher-stub's command handling); none of
their code is here.

**The ROM loader** answers SLIP-framed commands with its 4 status bytes (SYNC eight times, value
0x20120707; the ESP32 answers READ_REG of 0x40001000 with its magic 0x00F01D83 and has no
GET_SECURITY_INFO; the ESP32-S3 reports chip id 9 in it), erases a whole region at FLASH_BEGIN,
computes MD5 as 32 hex characters, reads flash 64 bytes at a time; its UART measures the host's
baud rate from SYNC, and CHANGE_BAUDRATE sets another. **The stub** starts when MEM_END jumps to
an entry point inside what MEM_DATA loaded; its commands are in ``esp32_stub.py``, whose
``Loader`` is this one with the stub's command set added. The framing, the loop and the
commands both speak (with each one's status bytes and error codes) are here.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from typing import Protocol

from .esp32_chip import FLASH_READ_BPS, Chip, SpiNor
from .uart import SimUart

SYNC_VALUE = 0x20120707            # the ROM's value in its SYNC answers (esptool docs' trace)
ROM_MD5_BPS, STUB_MD5_BPS = 2e6, 5e6

# ROM loader errors (esptool docs, "ROM Loader Errors") and stub response codes (esp-flasher-stub).
ROM_BAD_MESSAGE, ROM_FAILED, ROM_CHECKSUM, ROM_FLASH_WRITE, ROM_DEFLATE = 0x05, 0x06, 0x07, 0x08, 0x0B
ROM_BAD_RAM_SIZE, ROM_BAD_RAM_ADDRESS = 0x0E, 0x0F
STUB_BAD_LEN, STUB_BAD_CHECKSUM, STUB_INVALID, STUB_SPI_FAILED = 0xC000, 0xC100, 0xC300, 0xC400
STUB_NOT_IN_FLASH_MODE, STUB_INFLATE, STUB_TOO_MUCH, STUB_NOT_IMPLEMENTED = 0xC600, 0xC700, 0xC900, 0xFF00

SYNC_PAYLOAD = b"\x07\x07\x12\x20" + b"\x55" * 32


class Board(Protocol):
    """What the loader uses of the module it runs in: ``esp32.EspModule``, named by its members
    here because esp32 imports this module (no import circle)."""

    chip: Chip
    uart: SimUart
    flash: SpiNor
    native_usb: bool
    stub_runs: int
    _stop: bool

    def gpio0_low_now(self) -> bool: ...


class Restart(Exception):
    """The loader hands the chip over: ``how`` is "app" (run the flash without a reset) or "reset"."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


class RomLoader:
    """The ROM loader's command loop, which runs the flasher stub's commands once MEM_END has
    started it (``start_stub`` and ``stub_command``: ``esp32_stub.Loader``)."""

    def __init__(self, dev: Board) -> None:
        self.dev = dev
        self.chip = dev.chip
        self.uart = dev.uart
        self.flash = dev.flash
        self.stub = False
        self.attached = False
        self.ram: list[tuple[int, int]] = []        # loaded (start, end) ranges
        self.mem: dict | None = None                # MEM_BEGIN state
        self.write: dict | None = None              # FLASH_BEGIN / FLASH_DEFL_BEGIN state
        self.carried = 0                            # stub: an error of the last post-processing
        self._frame = bytearray()
        self._in_frame = False
        self._escape = False
        self._pending: list[bytes] = []

    # -- SLIP ---------------------------------------------------------------------
    def frame(self, timeout: float) -> bytes | None:
        """The next SLIP frame's payload (bytes outside frames are dropped), or None."""
        end = time.monotonic() + timeout
        while not self._pending:
            left = end - time.monotonic()
            if left <= 0:
                return None
            chunk = self.uart.read(1, min(left, 0.5))       # the first byte, then what has come
            if chunk:
                chunk += self.uart.read(65536, 0)
            for b in chunk:
                if b == 0xC0:
                    if self._in_frame and self._frame:
                        self._pending.append(bytes(self._frame))
                    self._frame.clear()
                    self._in_frame = True
                    self._escape = False
                elif not self._in_frame:
                    continue
                elif self._escape:
                    self._escape = False
                    if b == 0xDC:
                        self._frame.append(0xC0)
                    elif b == 0xDD:
                        self._frame.append(0xDB)
                    else:
                        self._in_frame = False         # a broken escape: the frame is dropped
                        self._frame.clear()
                elif b == 0xDB:
                    self._escape = True
                else:
                    self._frame.append(b)
        return self._pending.pop(0)

    def send(self, payload: bytes) -> None:
        self.uart.write(b"\xc0" + payload.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
                        + b"\xc0")

    def respond(self, op: int, *, value: int = 0, data: bytes = b"", error: int = 0) -> None:
        if self.stub:
            status = struct.pack(">H", error)
        else:
            status = bytes([1 if error else 0, error, 0, 0])
        body = data + status
        self.send(struct.pack("<BBHI", 1, op, len(body), value) + body)

    # -- the loop -------------------------------------------------------------------
    def serve(self) -> None:
        while not self.dev._stop:
            packet = self.frame(0.5)
            if packet is None:
                continue
            if len(packet) < 8:
                continue
            direction, op, size, checksum = struct.unpack_from("<BBHI", packet)
            data = packet[8:]
            if direction != 0 or size != len(data):
                if self.stub:
                    self.respond(op, error=STUB_BAD_LEN if direction == 0 else STUB_INVALID)
                else:
                    self.invalid()
                continue
            if self.stub:
                self.stub_command(op, data, checksum)
            else:
                self.rom_command(op, data, checksum)

    def invalid(self) -> None:
        """The ROM's answer to a message it can't take (error 0x05): eight copies, whose command
        field is not the request's (esptool tells an unsupported command by that: its
        UnsupportedCommandError, and its drain of 8 × 14 bytes)."""
        for _ in range(8):
            self.send(struct.pack("<BBHI", 1, 0, 4, 0) + bytes([1, ROM_BAD_MESSAGE, 0, 0]))

    # -- commands both speak ------------------------------------------------------------
    def read_reg(self, addr: int) -> int:
        if addr == self.chip.gpio_in:        # the pins' levels now: GPIO0 low while held
            return 0xFFFFFFFE | (0 if self.dev.gpio0_low_now() else 1)
        return self.chip.regs.get(addr, 0)

    def write_regs(self, data: bytes) -> None:
        for i in range(0, len(data) - 15, 16):
            addr, value, mask, delay = struct.unpack_from("<IIII", data, i)
            if delay:
                time.sleep(min(delay, 100_000) / 1e6)
            old = self.chip.regs.get(addr, 0)
            self.chip.regs[addr] = (old & ~mask) | (value & mask)
            self._spi_side_effect(addr)

    def _spi_side_effect(self, addr: int) -> None:
        """A write of the USR bit to SPI_CMD runs the user command the SPI registers describe
        (esptool's run_spiflash_command: RDID, RDSR, RDSFDP, reset …); the bit clears when done."""
        base, spi = self.chip.spi_base, self.chip.spi
        if addr != base + spi["cmd"] or not self.chip.regs[addr] & (1 << 18):
            return
        regs = self.chip.regs
        regs[addr] &= ~(1 << 18)
        command = regs.get(base + spi["usr2"], 0) & 0xFF
        usr = regs.get(base + spi["usr"], 0)
        read_bits = (regs.get(base + spi["miso"], 0) + 1) if usr & (1 << 28) else 0
        answer = b""
        if command == 0x9F:                                      # RDID
            answer = bytes(self.flash.jedec)
        elif command == 0x5A:                                    # RDSFDP (24-bit address)
            raw = regs.get(base + spi["addr"], 0)
            where = (raw >> 8) if self.chip.spi_addr_msb else raw
            answer = _sfdp(self.flash.size)[where:where + 4]
        elif command in (0x05, 0x35, 0x15):                      # status registers
            answer = b"\0\0\0\0"
        n = (read_bits + 7) // 8
        regs[base + spi["w0"]] = int.from_bytes(answer[:n].ljust(4, b"\0")[:4], "little") if n else \
            regs.get(base + spi["w0"], 0)

    def sync(self, data: bytes, op: int) -> None:
        if data != SYNC_PAYLOAD:
            if self.stub:
                self.respond(op, error=STUB_BAD_LEN)
            else:
                self.invalid()
            return
        if not self.dev.native_usb and self.uart.autobaud:
            rate = self.uart.host_baud()
            if rate:
                self.uart.baud = rate             # measured from the 0x55s
            self.uart.autobaud = False
            self._set_clkdiv()
        for _ in range(8):
            self.respond(op, value=0 if self.stub else SYNC_VALUE)

    def _set_clkdiv(self) -> None:
        reg = 0x3FF40014 if self.chip.chip_id == 0 else 0x60000014
        apb = 40_000_000 if self.chip.chip_id == 0 else 80_000_000
        self.chip.regs[reg] = apb // max(1, self.uart.baud)

    def change_baud(self, new: int) -> None:
        self.uart.drain()
        if not self.dev.native_usb:
            self.uart.baud = new
            self._set_clkdiv()

    def md5(self, addr: int, size: int) -> bytes | None:
        if not self.flash.check(addr, size):
            return None
        self.flash.spend(size / (STUB_MD5_BPS if self.stub else ROM_MD5_BPS))
        return hashlib.md5(self.flash.read(addr, size)).digest()

    def mem_begin(self, data: bytes) -> int:
        size, _blocks, block_size, offset = struct.unpack_from("<IIII", data)
        if not any(lo <= offset and offset + size <= hi for lo, hi in self.chip.ram):
            return ROM_BAD_RAM_ADDRESS if not self.stub else STUB_TOO_MUCH
        self.mem = {"offset": offset, "size": size, "block": block_size, "left": size}
        return 0

    def mem_data(self, data: bytes, checksum: int) -> int:
        if self.mem is None:
            return ROM_FAILED if not self.stub else STUB_NOT_IN_FLASH_MODE
        length, seq = struct.unpack_from("<II", data)
        body = data[16:16 + length]
        if len(body) != length or length > self.mem["left"]:
            return ROM_BAD_RAM_SIZE if not self.stub else STUB_TOO_MUCH
        if data_checksum(body) != checksum & 0xFF:
            return ROM_CHECKSUM if not self.stub else STUB_BAD_CHECKSUM
        start = self.mem["offset"] + seq * self.mem["block"]
        self.ram.append((start, start + length))
        self.mem["left"] -= length
        return 0

    # -- the ROM ----------------------------------------------------------------------
    def rom_command(self, op: int, data: bytes, checksum: int) -> None:
        c = self.chip
        if op == 0x08:
            self.sync(data, op)
        elif op == 0x0A and len(data) == 4:
            self.respond(op, value=self.read_reg(struct.unpack("<I", data)[0]))
        elif op == 0x09 and len(data) >= 16 and len(data) % 16 == 0:
            self.write_regs(data)
            self.respond(op)
        elif op == 0x05 and len(data) == 16:
            self.respond(op, error=self.mem_begin(data))
        elif op == 0x07 and len(data) >= 16:
            self.respond(op, error=self.mem_data(data, checksum))
        elif op == 0x06 and len(data) == 8:
            flag, entry = struct.unpack("<II", data)
            self.respond(op)
            if flag == 0:
                self.uart.drain()
                if any(lo <= entry < hi for lo, hi in self.ram):
                    self.start_stub()
                else:
                    raise Restart("reset")        # a jump to nothing loaded: the chip crashes
        elif op == 0x0D and len(data) == 8:
            self.attached = True
            self.respond(op)
        elif op == 0x0B and len(data) == 24:
            self.respond(op)
        elif op == 0x0F and len(data) == 8:
            new, _ = struct.unpack("<II", data)
            self.respond(op)
            self.change_baud(new)             # (the ROM's crystal estimate is 40 MHz: no skew)
        elif op in (0x02, 0x10) and len(data) == 4 * c.rom_flash_begin_words:
            self.respond(op, error=self.rom_flash_begin(op, data))
        elif op in (0x03, 0x11) and len(data) >= 16:
            self.respond(op, error=self.rom_flash_data(op, data, checksum))
        elif op in (0x04, 0x12) and len(data) == 4:
            run_user_code, = struct.unpack("<I", data)
            self.respond(op)
            self.uart.drain()
            raise Restart("app" if run_user_code else "reset")
        elif op == 0x13 and len(data) == 16:
            addr, size, _, _ = struct.unpack("<IIII", data)
            digest = self.md5(addr, size) if self.attached else None
            if digest is None:
                self.respond(op, error=ROM_FAILED)
            else:
                self.respond(op, data=digest.hex().encode())
        elif op == 0x0E and len(data) == 8:
            addr, size = struct.unpack("<II", data)
            if not self.attached or size > 64 or not self.flash.check(addr, size):
                self.respond(op, error=0x0A)
            else:
                self.flash.spend(64 / FLASH_READ_BPS)
                self.respond(op, data=self.flash.read(addr, size).ljust(64, b"\xff"))
        elif op == 0x14 and c.has_security_info and not data:
            self.respond(op, data=security_info(c))
        else:
            self.invalid()

    def rom_flash_begin(self, op: int, data: bytes) -> int:
        size, _blocks, block_size, offset = struct.unpack_from("<IIII", data)
        if size and not self.flash.check(offset, size):
            return ROM_FAILED
        if size:
            self.flash.erase_range(offset, offset + size)    # the ROM erases it all up front
        self.write = {"offset": offset, "block": block_size, "defl": op == 0x10,
                      "inflate": zlib.decompressobj() if op == 0x10 else None, "at": offset}
        return 0

    def rom_flash_data(self, op: int, data: bytes, checksum: int) -> int:
        w = self.write
        if w is None or w["defl"] != (op == 0x11):
            return ROM_FAILED
        length, seq = struct.unpack_from("<II", data)
        body = data[16:16 + length]
        if len(body) != length:
            return ROM_BAD_MESSAGE
        if data_checksum(body) != checksum & 0xFF:
            return ROM_CHECKSUM
        if w["defl"]:
            try:
                out = w["inflate"].decompress(body)
            except zlib.error:
                return ROM_DEFLATE
            addr = w["at"]
            w["at"] += len(out)
        else:
            out, addr = body, w["offset"] + seq * w["block"]
        if out and (not self.flash.check(addr, len(out)) or not self.flash.program(addr, out)):
            return ROM_FLASH_WRITE
        return 0

    # -- what MEM_END starts (esp32_stub.Loader) ---------------------------------------
    def start_stub(self) -> None:
        raise NotImplementedError

    def stub_command(self, op: int, data: bytes, checksum: int) -> None:
        raise NotImplementedError


def data_checksum(data: bytes) -> int:
    c = 0xEF
    for b in data:
        c ^= b
    return c


def security_info(chip: Chip) -> bytes:
    """GET_SECURITY_INFO: flags, flash_crypt_cnt, 7 key purposes, chip id, eco version (20 bytes)."""
    return struct.pack("<IB7BII", 0, 0, *([0] * 7), chip.chip_id, 0)


def _sfdp(size: int) -> bytes:
    """A JEDEC SFDP header and basic parameter table (JESD216): signature "SFDP", one parameter
    header, density in the table's second word."""
    header = b"SFDP" + bytes([0x00, 0x01, 0x00, 0xFF])
    param = bytes([0x00, 0x00, 0x01, 0x09, 0x30, 0x00, 0x00, 0xFF])        # JEDEC basic, 9 dwords at 0x30
    table = bytearray(0x30 - len(header) - len(param))
    body = struct.pack("<II", 0xFFF920E5, size * 8 - 1) + b"\xff" * 28
    return header + param + bytes(table) + body
