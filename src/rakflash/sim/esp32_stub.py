"""esptool's flasher stub on the virtual ESP32 and ESP32-S3 (sim/esp32.py), as the ROM loader
(esp32_rom.py) runs it once MEM_END jumps to an entry point inside what MEM_DATA loaded. It says
``OHAI`` and then answers as esptool's flasher stub does (2 status bytes, SYNC value 0, compressed
writes with erasing just in time — sectors already blank are not erased until the first one that
is not —, the write of a block after its acknowledgement, READ_FLASH one packet per
acknowledgement and an MD5 at the end, errors of a block's write said at the next command). The
facts are the esp-flasher-stub's command handling (docs/protocols.md "ESP32 ROM download mode");
none of its code is here.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Any, Callable

from .esp32_chip import BLOCK, FLASH_READ_BPS, SECTOR
from .esp32_rom import (
    STUB_BAD_CHECKSUM,
    STUB_BAD_LEN,
    STUB_INFLATE,
    STUB_INVALID,
    STUB_NOT_IMPLEMENTED,
    STUB_NOT_IN_FLASH_MODE,
    STUB_SPI_FAILED,
    STUB_TOO_MUCH,
    RomLoader,
    data_checksum,
    security_info,
)

STUB_INFLIGHT = 1                  # esp-flasher-stub sends one READ_FLASH packet per acknowledgement


class Loader(RomLoader):
    """The ROM loader with the flasher stub it starts: the stub's command set."""

    def start_stub(self) -> None:
        self.stub = True
        self.dev.stub_runs += 1
        self.attached = True
        self.mem = None
        self.send(b"OHAI")

    def stub_command(self, op: int, data: bytes, checksum: int) -> None:
        if self.carried:                     # the last block's write failed: said now
            error, self.carried = self.carried, 0
            self.respond(op, error=error)
            return
        post: Callable[[], Any] | None = None
        value, out, error = 0, b"", 0
        if op == 0x08:
            self.sync(data, op)
            return
        elif op == 0x0A and len(data) == 4:
            value = self.read_reg(struct.unpack("<I", data)[0])
        elif op == 0x09 and data and len(data) % 16 == 0:
            self.write_regs(data)
        elif op == 0x0D and len(data) == 4:
            pass
        elif op == 0x0B and len(data) == 24:
            pass
        elif op == 0x0F and len(data) == 8:
            new, _ = struct.unpack("<II", data)
            post = lambda: self.change_baud(new)            # noqa: E731 - after the answer
        elif op in (0x02, 0x10) and len(data) in (16, 20):
            error = self.stub_flash_begin(op, data)
        elif op in (0x03, 0x11) and len(data) >= 16:
            error, post = self.stub_flash_data(op, data, checksum)
        elif op in (0x04, 0x12) and len(data) == 4:
            if self.write is None:
                error = STUB_NOT_IN_FLASH_MODE
            elif self.write["left"]:
                error = STUB_BAD_LEN
            else:
                self.write = None
        elif op == 0x05 and len(data) == 16:
            error = self.mem_begin(data)
        elif op == 0x07 and len(data) >= 16:
            error = self.mem_data(data, checksum)
        elif op == 0x06 and len(data) == 8:
            error = 0 if self.mem is not None else STUB_NOT_IN_FLASH_MODE
            self.mem = None
        elif op == 0x13 and len(data) == 16:
            addr, size, _, _ = struct.unpack("<IIII", data)
            digest = self.md5(addr, size)
            if digest is None:
                error = STUB_SPI_FAILED
            else:
                out = digest
        elif op == 0x14 and not data:
            if self.chip.has_security_info:
                out = security_info(self.chip)
            else:
                error = STUB_NOT_IMPLEMENTED
        elif op == 0xD2 and len(data) == 16:
            offset, length, packet, _inflight = struct.unpack("<IIII", data)
            if packet > 4096 or not self.flash.check(offset, length):
                error = STUB_BAD_LEN if packet > 4096 else STUB_SPI_FAILED
            else:
                post = lambda: self.stub_read_flash(offset, length, packet)   # noqa: E731
        elif op == 0xD0 and not data:
            self.flash.erase_range(0, self.flash.size)
        elif op == 0xD1 and len(data) == 8:
            addr, size = struct.unpack("<II", data)
            if addr % SECTOR or size % SECTOR or not self.flash.check(addr, size):
                error = STUB_BAD_LEN
            else:
                self.flash.erase_range(addr, addr + size)
        elif op == 0xD3:
            return                                           # RUN_USER_CODE: no answer
        else:
            error = STUB_INVALID
        self.respond(op, value=value, data=out if not error else b"", error=error)
        if post is not None and not error:
            result = post()
            if result:
                self.carried = result

    def stub_flash_begin(self, op: int, data: bytes) -> int:
        total, _blocks, block_size, offset = struct.unpack_from("<IIII", data)
        if not self.flash.check(offset, total):
            return STUB_SPI_FAILED
        erase_from = offset - offset % SECTOR
        erase_to = -(-(offset + total) // SECTOR) * SECTOR
        self.write = {"offset": offset, "left": total, "defl": op == 0x10, "block": block_size,
                      "inflate": zlib.decompressobj() if op == 0x10 else None,
                      "erase_at": erase_from, "erase_to": erase_to, "dirty": False}
        self._erase_next()
        return 0

    def _erase_next(self) -> None:
        """One erase step ahead of the writing: a sector read blank is skipped while no dirty
        one was seen; after that, sectors or 64 KiB blocks are erased without reading."""
        w = self.write
        assert w is not None                        # (a FLASH_BEGIN came first)
        at, end = w["erase_at"], w["erase_to"]
        if at >= end:
            return
        if not w["dirty"]:
            self.flash.spend(SECTOR / FLASH_READ_BPS)
            if self.flash.blank(at, SECTOR):
                w["erase_at"] = at + SECTOR
                return
            w["dirty"] = True
        size = BLOCK if at % BLOCK == 0 and at + BLOCK <= end else SECTOR
        self.flash.erase(at, size)
        w["erase_at"] = at + size

    def _write(self, data: bytes) -> int:
        w = self.write
        assert w is not None                        # (a FLASH_BEGIN came first)
        data = data[:w["left"]]
        while w["erase_at"] < w["offset"] + len(data):
            self._erase_next()
        if not self.flash.program(w["offset"], data):
            return STUB_SPI_FAILED
        w["offset"] += len(data)
        w["left"] -= len(data)
        return 0

    def stub_flash_data(self, op: int, data: bytes, checksum: int):
        w = self.write
        if w is None or w["defl"] != (op == 0x11):
            return STUB_NOT_IN_FLASH_MODE, None
        length, _seq = struct.unpack_from("<II", data)
        body = data[16:]
        if op == 0x03 and length != len(body):
            return STUB_TOO_MUCH, None
        body = body[:length]
        if data_checksum(body) != checksum & 0xFF:
            return STUB_BAD_CHECKSUM, None

        def post() -> int:              # after the acknowledgement, while the next block arrives
            if not w["defl"]:
                return self._write(body)
            self._erase_next()
            try:
                out = w["inflate"].decompress(body)
            except zlib.error:
                return STUB_INFLATE
            return self._write(out) if out else 0
        return 0, post

    def stub_read_flash(self, offset: int, length: int, packet: int) -> int:
        md5 = hashlib.md5()
        sent = 0
        while sent < length:
            n = min(packet, length - sent)
            self.flash.spend(n / FLASH_READ_BPS)
            chunk = self.flash.read(offset + sent, n)
            md5.update(chunk)
            self.send(chunk)
            sent += n
            ack = self.frame(5.0)          # one packet in flight: wait for the host's count
            if ack is None or len(ack) != 4:
                return STUB_BAD_LEN
        self.send(md5.digest())
        return 0

