"""The Apollo3's secure bootloader (SBL) and INFO0, as part of the virtual RAK11720.

At every reset the simulated chip does what the SBL does (facts in
:mod:`rakflash.protocols.apollo3_sbl`, :mod:`rakflash.apollo3_info0` and
docs/protocols.md):

1. an OTA registered by an earlier wired update is installed first: the Ambiq
   image at each pending descriptor entry is checked (magic, CRC) and copied to
   its install address, and the entry's status bits are cleared;
2. if INFO0 is valid and its override pin is at its active level — the BOOT pin
   is GPIO41 on the RAK11720 — the SBL listens on the UART at INFO0's baud rate
   for a wired update; no message within INFO0's wired timeout, or ABORT-and-quit,
   and it starts the main firmware; RESET restarts the chip;
3. otherwise the main firmware starts at INFO0's main pointer: RUI's bootloader
   at 0xC000, which runs the application or stays (see :mod:`rakflash.sim.device`).

An INFO0 whose override pin is another GPIO, disabled, or of the other polarity
makes BOOT do nothing: the SBL never answers, as in the RAK forum thread behind
issue 8. What the SBL does that no public source states (status and state values,
which errors it reports when, OTA descriptor bookkeeping) is the simulator's model;
docs/protocols.md lists those choices.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .. import apollo3_info0 as info0_mod
from ..apollo3_info0 import Info0
from ..images import vector_at
from ..protocols import apollo3_sbl as sbl
from .flash import FlashError

if TYPE_CHECKING:          # what the mixin is mixed into: its attributes are the module's
    from .device import VirtualModule as _Mixed
else:
    _Mixed = object

SBL_REGION_END = 0xC000      # the SBL's own flash: never written by a wired update
SBL_VERSION = 3              # what STATUS reports (the simulator's value; RAK's SBL version is not public)
MAX_OTAS = 8                 # am_hal_secure_ota.h AM_HAL_SECURE_OTA_MAX_OTA


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
            result = sbl.SblReceiver(
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
        if address % sbl.FLASH_PAGE or address < SBL_REGION_END or address >= flash.end:
            return sbl.INVALID_ADDRESS
        self._ota_desc, self._desc_ready = address, False
        return sbl.SUCCESS

    def _install_block(self, raw: bytes) -> int:
        """One received block: check it as the SBL would, then write it (and register its OTA)."""
        if len(raw) < sbl.WU_HEADER_SIZE:
            return sbl.INVALID_PARAMETER
        h = sbl.WiredHeader.unpack(raw[:sbl.WU_HEADER_SIZE])
        data = raw[sbl.WU_HEADER_SIZE:]
        if not h.size <= len(data) < h.size + 4:
            return sbl.INVALID_PARAMETER
        if h.auth_algo or h.enc_algo or self.info0.security_policy & 0x3 \
                or self.info0.secure_boot == "on":
            return sbl.SECURITY             # the simulator checks no signatures: it refuses them
        if h.image_type == sbl.IMAGETYPE_INFO0_NOOTA:
            return self._write_info0(h, data)
        if h.key != sbl.FLASH_KEY:
            return sbl.SECURITY
        start, end = h.load_address, h.load_address + len(data)
        if start % sbl.FLASH_PAGE or start < SBL_REGION_END or end > self.module.mcu.flash.end \
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

    def _write_info0(self, h: sbl.WiredHeader, data: bytes) -> int:
        if h.key != sbl.INFO0_KEY:
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
        head = self.flash.read(at, sbl.AMBIQ_HEADER_SIZE)
        length = struct.unpack_from("<I", head)[0] & 0xFFFFF
        img = sbl.parse_image(self.flash.read(at, min(max(length, sbl.AMBIQ_HEADER_SIZE),
                                                      flash_end - at)))
        if img is None or img.magic != sbl.MAGIC_NONSECURE or not img.crc_ok:
            return False
        start, end = img.install_address, img.install_address + len(img.code)
        if start % sbl.FLASH_PAGE or start < SBL_REGION_END or end > flash_end \
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
