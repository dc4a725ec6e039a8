"""The Apollo3's secure bootloader (SBL) and INFO0, as part of the virtual RAK11720.

At every reset the simulated chip does what the SBL does (facts in
:mod:`rakflash.protocols.apollo3_sbl`, :mod:`rakflash.apollo3_wired`,
:mod:`rakflash.apollo3_info0` and docs/protocols.md):

1. an OTA registered by an earlier wired update is installed first: the Ambiq
   image at each pending descriptor entry is checked (magic, CRC) and copied to
   its install address, and the entry's status bits are cleared;
2. if INFO0 is valid and its override pin is at its active level — the BOOT pin
   is GPIO41 on the RAK11720 — the SBL listens on the UART at INFO0's baud rate
   for a wired update; no message within INFO0's wired timeout, or ABORT-and-quit,
   and it starts the main firmware; RESET restarts the chip;
3. otherwise the main firmware starts at INFO0's main pointer: RUI's bootloader
   at 0xC000, which runs the application or stays (see :mod:`rakflash.sim.device`).

The wired session is :class:`SblReceiver`, the SBL's message loop: the device's side
of :mod:`rakflash.protocols.apollo3_sbl`.

An INFO0 whose override pin is another GPIO, disabled, or of the other polarity
makes BOOT do nothing: the SBL never answers, as in the RAK forum thread behind
issue 8. What the SBL does that no public source states (status and state values,
which errors it reports when, OTA descriptor bookkeeping) is the simulator's model;
docs/protocols.md lists those choices.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .. import apollo3_info0 as info0_mod
from .. import apollo3_wired as wired
from ..apollo3_info0 import Info0
from ..link import ByteChannel, Deadline
from ..protocols import apollo3_sbl as sbl
from ..protocols.apollo3_sbl import (
    ABORT,
    ABORT_AND_QUIT,
    CRC_ERROR,
    DATA,
    HELLO,
    INVALID_OPERATION,
    INVALID_PARAMETER,
    MAX_MESSAGE,
    OTADESC,
    RESET,
    SEQUENCE,
    SUCCESS,
    TOO_BIG,
    TOO_MUCH_DATA,
    UNKNOWN_TYPE,
    UPDATE,
    Ack,
    Status,
    crc32,
)
from ..vector_table import vector_at
from .flash import FlashError

if TYPE_CHECKING:          # what the mixin is mixed into: its attributes are the module's
    from .device import VirtualModule as _Mixed
else:
    _Mixed = object

SBL_REGION_END = 0xC000      # the SBL's own flash: never written by a wired update
SBL_VERSION = 3              # what STATUS reports (the simulator's value; RAK's SBL version is not public)
MAX_OTAS = 8                 # am_hal_secure_ota.h AM_HAL_SECURE_OTA_MAX_OTA


# ------------------------------------------------------------------ the SBL's message loop

@dataclass
class ServeResult:
    """How a wired-update session ended: ``reset`` (RESET received, with ``option``),
    ``quit`` (ABORT and quit), ``timeout`` (no message within the wired timeout)."""

    status: str
    option: int = 0
    blocks: int = 0


class SblReceiver:
    """The SBL's message loop (the simulator's side).

    ``status()`` answers HELLO; ``on_block(raw) -> ack status`` installs one
    received block (its CRC already checked); ``on_otadesc(address) -> status``;
    ``first_timeout`` is INFO0's wired timeout (no message at all by then: the
    SBL gives up and boots the main firmware). Damaged or truncated messages are
    answered with a CRC status after the line went quiet, so the host can resend.
    """

    def __init__(self, channel: ByteChannel, *, status: Callable[[], Status],
                 on_block: Callable[[bytes], int], on_otadesc: Callable[[int], int],
                 max_storage: int, first_timeout: float, byte_time: float = 0.0) -> None:
        self.ch = channel
        self.status = status
        self.on_block = on_block
        self.on_otadesc = on_otadesc
        self.max_storage = max_storage
        self.first_timeout = first_timeout
        self.byte_time = byte_time
        self._block: bytearray | None = None
        self._want = (0, 0)          # (size, crc) of the block under way

    def _resync(self) -> None:
        """Drop bytes until the line is quiet (bounded), after a message that didn't parse."""
        quiet = Deadline(2.0)
        while self.ch.read(4096, 0.02) and not quiet.expired:
            pass

    def _message(self, timeout: float) -> tuple[int, int, bytes] | None:
        """(status, type, payload) of the next message; None when nothing came by ``timeout``."""
        head = self.ch.read(8, timeout)
        if not head:
            return None
        if len(head) < 8:
            head += self.ch.read(8 - len(head), 0.5)
            if len(head) < 8:
                self._resync()
                return CRC_ERROR, 0, b""
        crc, word = struct.unpack("<II", head)
        length, msg_type = word >> 16, word & 0xFFFF
        if length > MAX_MESSAGE:
            self._resync()
            return TOO_BIG, msg_type, b""
        if length < 8:
            self._resync()
            return CRC_ERROR, msg_type, b""
        rest = self.ch.read(length - 8, 0.5 + length * self.byte_time)
        if len(rest) < length - 8 or crc32(head[4:] + rest) != crc:
            self._resync()
            return CRC_ERROR, msg_type, b""
        return SUCCESS, msg_type, rest

    def serve(self, idle: Callable[[], bool] = lambda: False) -> ServeResult:
        """Answer messages until RESET, ABORT-and-quit, or no first message in time.
        ``idle()`` is asked every half second without traffic; True stops serving."""
        blocks = 0
        first = Deadline(self.first_timeout)
        talked = False
        while True:
            got = self._message(0.5 if talked else min(0.5, first.remaining()))
            if got is None:
                if not talked and first.expired:
                    return ServeResult("timeout")
                if idle():
                    return ServeResult("stopped", blocks=blocks)
                continue
            talked = True
            status, msg_type, payload = got
            if status != SUCCESS:
                self.ch.write(Ack(msg_type, status).encode())
                continue
            if msg_type == HELLO:
                self.ch.write(self.status().encode())
            elif msg_type == UPDATE:
                self.ch.write(Ack(UPDATE, self._update(payload)).encode())
            elif msg_type == DATA:
                ack = self._data(payload)
                if ack.status == SUCCESS and self._block is not None \
                        and len(self._block) == self._want[0]:
                    ack.status = self._finish()
                    blocks += ack.status == SUCCESS
                self.ch.write(ack.encode())
            elif msg_type == OTADESC and len(payload) >= 4:
                self.ch.write(Ack(OTADESC, self.on_otadesc(struct.unpack_from("<I", payload)[0])).encode())
            elif msg_type == ABORT and len(payload) >= 4:
                value = struct.unpack_from("<I", payload)[0]
                self._block = None
                self.ch.write(Ack(ABORT, SUCCESS).encode())
                if value == ABORT_AND_QUIT:
                    return ServeResult("quit", blocks=blocks)
            elif msg_type == RESET and len(payload) >= 4:
                self.ch.write(Ack(RESET, SUCCESS).encode())
                return ServeResult("reset", struct.unpack_from("<I", payload)[0], blocks)
            elif msg_type in (OTADESC, ABORT, RESET):
                self.ch.write(Ack(msg_type, INVALID_PARAMETER).encode())
            else:
                self.ch.write(Ack(msg_type, UNKNOWN_TYPE).encode())

    def _update(self, payload: bytes) -> int:
        if len(payload) < 12:
            return INVALID_PARAMETER
        size, crc, piggy = struct.unpack_from("<III", payload)
        if size == 0 or size > self.max_storage or piggy != len(payload) - 12:
            return INVALID_PARAMETER
        self._block = bytearray(payload[12:])
        self._want = (size, crc)
        return SUCCESS

    def _data(self, payload: bytes) -> Ack:
        if len(payload) < 4:
            return Ack(DATA, INVALID_PARAMETER)
        seq = struct.unpack_from("<I", payload)[0]
        if self._block is None:
            return Ack(DATA, INVALID_OPERATION, seq)
        if seq != len(self._block):
            return Ack(DATA, SEQUENCE, seq)
        if len(self._block) + len(payload) - 4 > self._want[0]:
            return Ack(DATA, TOO_MUCH_DATA, seq)
        self._block += payload[4:]
        return Ack(DATA, SUCCESS, seq)

    def _finish(self) -> int:
        block, (_, crc) = bytes(self._block or b""), self._want
        self._block = None
        if crc32(block) != crc:
            return CRC_ERROR
        return self.on_block(block)


# ------------------------------------------------------------------ the chip it runs on

class Apollo3SecureBootloader(_Mixed):
    """Mixin for :class:`~rakflash.sim.device.VirtualModule`: INFO0, the SBL, OTA."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        raw = self.opts.info0
        self.info0 = Info0.parse(raw) if raw is not None else info0_mod.rak11720_default()
        self.ota_pointer: int | None = None        # the chip's OTA pointer register
        self._ota_desc: int | None = None          # OTADESC of this wired session
        self._desc_ready = False
        self.sbl_sessions = 0                      # wired updates served (for tests)

    # ------------------------------------------------------------ at reset
    def has_rom_bootloader(self) -> bool:
        return True

    def override_asserted(self) -> bool:
        """What the SBL sees at reset: a valid INFO0 whose override pin is the BOOT pin,
        at the level BOOT is held at (``boot_pin``: held high)."""
        i = self.info0
        return i.signature == "valid" and i.override_enabled \
            and i.override_gpio == info0_mod.RAK11720_BOOT_GPIO and i.override_high == self.boot_pin

    def starts_rom(self) -> bool:
        return self.ota_pointer is not None or self.override_asserted()

    def run_rom(self) -> None:
        if self.ota_pointer is not None:
            self._install_otas()
        if not self.override_asserted():
            self.run_main()
            return
        i = self.info0
        listens_here = (i.wired_interfaces & info0_mod.WIRED_UART
                        and i.uart_instance == 0
                        and i.uart_pads[:2] == info0_mod.RAK11720_UART_PADS)
        timeout = i.wired_timeout_ms / 1000
        if not listens_here or i.uart_baud is None:
            # The SBL waits on another interface or pins: nothing on the AT port answers.
            self.uart.read(1 << 20, timeout)
            self.run_main()
            return
        module_baud = self.uart.baud
        self.uart.baud = i.uart_baud
        try:
            self._ota_desc, self._desc_ready = None, False
            result = SblReceiver(
                self.uart, status=self._status, on_block=self._install_block,
                on_otadesc=self._otadesc, max_storage=self.module.mcu.flash.end - SBL_REGION_END,
                first_timeout=timeout, byte_time=self.uart.byte_time,
            ).serve(idle=lambda: self._stop)
            self.uart.drain()
        finally:
            self.uart.baud = module_baud
        if result.status == "reset":
            self.sbl_sessions += 1
            return                       # the chip restarts (RESET)
        if result.status != "stopped":
            self.run_main()              # wired timeout, or ABORT and quit

    def run_main(self, mode=None) -> None:
        """The SBL starts the firmware at INFO0's main pointer. Only RUI's bootloader at
        0xC000, with a vector table there, is something the simulator runs: a main
        pointer elsewhere, or an erased RUI bootloader, leaves the chip silent."""
        i = self.info0
        main = info0_mod.RUI_BOOTLOADER_START
        if (i.signature == "valid" and i.main_ptr != main) or \
                vector_at(self.flash.read(main, 8), 0) is None:
            while not self._stop:
                self.uart.read(4096, 0.5)
            return
        super().run_main(mode)

    def app_present(self) -> bool:
        """RUI's bootloader jumps only to a vector table that fits the chip: an SBL
        staging copy left at 0x14000 (an Ambiq image header) is no application."""
        if not super().app_present():
            return False
        vector = vector_at(self.flash.read(self.module.app.start, 8), 0)
        mcu = self.module.mcu
        return vector is not None and mcu.ram.start < vector[0] <= mcu.ram.end \
            and vector[1] in self.module.app

    # ------------------------------------------------------------ wired session
    def _status(self) -> sbl.Status:
        max_storage = self.module.mcu.flash.end - SBL_REGION_END
        return sbl.Status(version=SBL_VERSION, max_storage=max_storage, status=0,
                          state=1 if self.ota_pointer is not None else 0)

    def _otadesc(self, address: int) -> int:
        flash = self.module.mcu.flash
        if address % wired.FLASH_PAGE or address < SBL_REGION_END or address >= flash.end:
            return sbl.INVALID_ADDRESS
        self._ota_desc, self._desc_ready = address, False
        return sbl.SUCCESS

    def _install_block(self, raw: bytes) -> int:
        """One received block: check it as the SBL would, then write it (and register its OTA)."""
        if len(raw) < wired.WU_HEADER_SIZE:
            return sbl.INVALID_PARAMETER
        h = wired.WiredHeader.unpack(raw[:wired.WU_HEADER_SIZE])
        data = raw[wired.WU_HEADER_SIZE:]
        if not h.size <= len(data) < h.size + 4:
            return sbl.INVALID_PARAMETER
        if h.auth_algo or h.enc_algo or self.info0.security_policy & 0x3 \
                or self.info0.secure_boot == "on":
            return sbl.SECURITY             # the simulator checks no signatures: it refuses them
        if h.image_type == wired.IMAGETYPE_INFO0_NOOTA:
            return self._write_info0(h, data)
        if h.key != wired.FLASH_KEY:
            return sbl.SECURITY
        start, end = h.load_address, h.load_address + len(data)
        if start % wired.FLASH_PAGE or start < SBL_REGION_END or end > self.module.mcu.flash.end \
                or any(lo < end and start < hi for lo, hi in self.info0.protected_ranges()):
            return sbl.INVALID_ADDRESS
        if h.ota and self._ota_desc is None:
            return sbl.INVALID_OPERATION
        try:
            self.flash.erase(start, end)
            self.flash.program(start, data)
        except (FlashError, OSError):
            return sbl.FAILURE
        app = self.module.app
        if start <= app.start < end:
            self.app_valid = True           # the application's first page is what was sent
        if h.ota:
            self._register_ota(start)
        return sbl.SUCCESS

    def _write_info0(self, h: wired.WiredHeader, data: bytes) -> int:
        if h.key != wired.INFO0_KEY:
            return sbl.SECURITY
        offset = h.load_address << 2        # INFO0 blocks carry a word offset
        if offset + h.size > info0_mod.SIZE:
            return sbl.INVALID_ADDRESS
        if self.info0.signature == "valid" and self.info0.info0_program_quadrants == 0:
            return sbl.FAILURE
        raw = bytearray(self.info0.raw)
        raw[offset:offset + h.size] = data[:h.size]
        self.info0 = Info0(bytes(raw))
        return sbl.SUCCESS

    def _register_ota(self, blob: int) -> None:
        desc = self._ota_desc
        assert desc is not None
        if not self._desc_ready:
            self.flash.erase(desc, desc + 4)
            self._desc_ready = True
        for i in range(MAX_OTAS):
            slot = desc + 4 * i
            if self.flash.read(slot, 4) == b"\xff" * 4:
                self.flash.program(slot, struct.pack("<I", blob | 0x3))
                break
        self.ota_pointer = desc

    def _install_otas(self) -> None:
        """Install every pending OTA of the descriptor, clearing its status bits
        (both for success, bit 0 only for failure: am_hal_secure_ota.h)."""
        desc, self.ota_pointer = self.ota_pointer, None
        assert desc is not None          # (run_rom installs only with a pointer)
        flash = self.module.mcu.flash
        for i in range(MAX_OTAS):
            slot = desc + 4 * i
            entry = struct.unpack("<I", self.flash.read(slot, 4))[0]
            if entry == 0xFFFFFFFF:
                break
            if entry & 0x3 != 0x3:
                continue
            ok = self._install_image(entry & ~0x3, flash.end)
            self.flash.load(slot, struct.pack("<I", entry & ~(0x3 if ok else 0x1)))

    def _install_image(self, at: int, flash_end: int) -> bool:
        head = self.flash.read(at, wired.AMBIQ_HEADER_SIZE)
        length = struct.unpack_from("<I", head)[0] & 0xFFFFF
        img = wired.parse_image(self.flash.read(at, min(max(length, wired.AMBIQ_HEADER_SIZE),
                                                      flash_end - at)))
        if img is None or img.magic != wired.MAGIC_NONSECURE or not img.crc_ok:
            return False
        start, end = img.install_address, img.install_address + len(img.code)
        if start % wired.FLASH_PAGE or start < SBL_REGION_END or end > flash_end \
                or (start < at + img.length and at < end):
            return False
        try:
            self.flash.erase(start, end)
            self.flash.program(start, img.code)
        except (FlashError, OSError):
            return False
        if start <= self.module.app.start < end:
            self.app_valid = True
        return True
