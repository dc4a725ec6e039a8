"""The STM32 ROM bootloader (AN3155) of the virtual STM32 modules.

With BOOT0 held high at reset (``SimOptions(boot_pin=True)``, ``dev.set_boot_pin(True)``
then ``dev.press_reset()``, or ``rakflash sim … --boot0``) the chip runs its ROM
bootloader instead of the RUI bootloader: it waits for the 0x7F handshake,
measures the host's baud rate from it, and serves AN3155 commands with the
chip's product ID, version byte and command set from the catalog, at 8E1
(11 bits a byte on the line), with the datasheet's erase and program times.

It works on the **same flash** the RUI bootloader and application run from: after
a recovery, Go (or a reset with BOOT0 low) runs whatever was written — the RUI
bootloader reports the version string at its version address, the application
its own.

Where the ROM listens: on the module's AT port for both RAK811 (UART1, pins 6/7)
and RAK3172 (UART2 = PA2/PA3, pins 2/1, RUI3's AT port); see docs/protocols.md.

Limits of the model (each says why):

* A Linux pseudo-terminal does not keep the parity bit of its settings (the pty
  driver clears PARENB), so the simulator cannot see whether a host opened the
  port at 8E1 or 8N1, and stm32flash refuses a pty at 8E1 ("Failed to set
  terminal flags": it reads its settings back). Over a pty the ROM therefore
  accepts an 8N1 host; where the pty keeps parity, an 8N1 host gets garbage.
* "Boot requested" and "application valid" are module state in the simulator
  (their flash encoding is not public): a ROM erase of the flag page or of the
  application's first page clears them, as a factory image does.
* Only the flash and the data EEPROM (RAK811, RAK4270: where RUI v3 keeps its settings)
  are readable and writable; RAM, system memory and option bytes are NACKed (nothing in
  rakflash touches them). A mass erase leaves the data EEPROM, as on the chip.
"""

from __future__ import annotations

from ..protocols.stm32_rom import RomChip, RomServer
from .device import Mode, VirtualModule
from .flash import FlashError


class ChipMemory:
    """The chip as the ROM bootloader sees it: the module's flash, and read-out protection."""

    def __init__(self, dev: "Stm32Rom") -> None:
        self.dev = dev
        self.flash = dev.flash
        self.mcu = dev.module.mcu

    @property
    def readout_protected(self) -> bool:
        return self.dev.readout_protected

    @readout_protected.setter               # (RomMemory's is a plain attribute)
    def readout_protected(self, active: bool) -> None:
        self.dev.readout_protected = active

    def set_readout_protection(self, active: bool) -> None:
        self.dev.readout_protected = active

    def _in_flash(self, address: int, size: int) -> bool:
        f = self.mcu.flash
        return f.start <= address and address + size <= f.end

    def _in_eeprom(self, address: int, size: int) -> bool:
        r = self.dev.eeprom_region()
        return r is not None and r.start <= address and address + size <= r.end

    def readable(self, address: int, size: int) -> bool:
        return self._in_flash(address, size) or self._in_eeprom(address, size)

    writable = readable

    def read(self, address: int, size: int) -> bytes:
        if self._in_eeprom(address, size):
            at = address - self.dev.eeprom_region().start
            return bytes(self.dev._eeprom[at:at + size])
        return self.flash.read(address, size)

    def program(self, address: int, data: bytes) -> None:
        if self._in_eeprom(address, len(data)):
            # Data EEPROM: written byte by byte, no erase needed (STM32L1/L0 reference manuals)
            at = address - self.dev.eeprom_region().start
            self.dev._eeprom[at:at + len(data)] = data
            return
        try:
            self.flash.program(address, data)
        except FlashError as exc:       # not erased: the flash controller flags an error, the ROM NACKs
            raise ValueError(str(exc)) from None

    def page_count(self) -> int:
        return self.mcu.flash.size // self.mcu.page_size

    def erase_pages(self, pages: list[int]) -> None:
        size = self.mcu.page_size
        for p in sorted(set(pages)):
            start = self.mcu.flash.start + p * size
            self.flash.erase(start, start + size)
            self.dev.rom_erased(start, start + size)

    def mass_erase(self) -> None:
        f = self.mcu.flash
        self.flash.erase(f.start, f.end)
        self.dev.rom_erased(f.start, f.end)


class Stm32Rom(VirtualModule):
    """Mixin: the STM32 chip's ROM bootloader, served on the module's AT port."""

    readout_protected = False
    rom_sessions = 0          # handshakes seen (for tests and the sim's status line)
    rom_log: list[str]        # commands served in the current ROM session

    def rom_chip(self) -> RomChip:
        rom = self.module.mcu.rom
        if rom is None:
            raise RuntimeError(f"{self.module.mcu.name} has no ROM bootloader in the catalog")
        return RomChip(pid=rom.pid, version=rom.version, commands=rom.commands,
                       mass_erase=rom.mass_erase)

    def run_rom(self) -> None:
        uart = self.uart
        saved = (uart.baud, uart.parity, uart.autobaud)
        uart.parity, uart.autobaud = "E", True

        def on_sync() -> None:
            # The ROM measures the host's rate from the 0x7F and talks at it from now on.
            uart.baud = uart.host_baud() or uart.baud
            self.rom_sessions += 1

        server = RomServer(uart, self.rom_chip(), ChipMemory(self), alive=lambda: not self._stop,
                           on_sync=on_sync)
        self.rom_log = server.log
        try:
            while not self._stop:
                result = server.serve()
                if result.status == "go":
                    uart.drain()
                    self._go_to(result.address)
                    return
                # a system reset (after Readout (Un)protect …): BOOT0 is still high,
                # so the ROM starts again and waits for a new handshake.
                server.synced = False
                uart.flush_input()
        except EOFError:
            return
        finally:
            uart.baud, uart.parity, uart.autobaud = saved

    def _go_to(self, address: int | None) -> None:
        """Go: the next start skips the boot pin (no reset happened) and runs the code at ``address``."""
        self._rom_go = address

    def rom_erased(self, start: int, end: int) -> None:
        """The ROM erased [start, end): an erased flag page or application start resets the boot state."""
        m = self.module
        touched = [r for r in ("flag", "application") if m.has_region(r)
                   and start < m.region(r).start + (m.mcu.page_size if r == "application" else m.region(r).size)
                   and m.region(r).start < end]
        if touched:
            self.app_valid = True
            self._boot_request = False

    def next_mode(self) -> Mode:
        go = getattr(self, "_rom_go", None)
        if go is not None:
            self._rom_go = None
            if go == self.module.app.start and self.app_present():
                return Mode.APP
            return Mode.BOOTLOADER if (self.boot_request or not self.app_present()) else Mode.APP
        return super().next_mode()
