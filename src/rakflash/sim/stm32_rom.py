"""The STM32 ROM bootloader (AN3155) of the virtual STM32 modules.

With BOOT0 held high at reset (``SimOptions(boot_pin=True)``, ``dev.set_boot_pin(True)``
then ``dev.press_reset()``, or ``rakflash sim … --boot0``) the chip runs its ROM
bootloader instead of the RUI bootloader: it waits for the 0x7F handshake,
measures the host's baud rate from it, and serves AN3155 commands with the
chip's product ID, version byte and command set from the catalog, at 8E1
(11 bits a byte on the line), with the datasheet's erase and program times.
Its command loop (:class:`RomServer`, the device's side of
:mod:`rakflash.protocols.stm32_rom`) serves any :class:`RomMemory`; the modules'
is their flash (:class:`ChipMemory`).

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

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Protocol

from ..link import ByteChannel
from ..protocols.stm32_rom import (
    ACK,
    COMMAND_NAMES,
    ERASE,
    EXTENDED_ERASE,
    GET,
    GET_CHECKSUM,
    GET_ID,
    GET_VERSION,
    GO,
    MASS_ERASE,
    NACK,
    READ_MEMORY,
    READOUT_PROTECT,
    READOUT_UNPROTECT,
    SYNC,
    WRITE_MEMORY,
    WRITE_PROTECT,
    WRITE_UNPROTECT,
    stm32_crc,
    xor,
)
from .device import Mode, VirtualModule
from .flash import FlashError

# ------------------------------------------------------------------ the ROM's command loop

class RomMemory(Protocol):
    """What the ROM bootloader does to the chip; raising ``ValueError`` from any of them makes a NACK."""

    readout_protected: bool

    def readable(self, address: int, size: int) -> bool: ...
    def writable(self, address: int, size: int) -> bool: ...
    def read(self, address: int, size: int) -> bytes: ...
    def program(self, address: int, data: bytes) -> None: ...
    def erase_pages(self, pages: list[int]) -> None: ...
    def mass_erase(self) -> None: ...
    def set_readout_protection(self, active: bool) -> None: ...
    def page_count(self) -> int: ...


@dataclass(frozen=True)
class RomChip:
    """A chip's ROM bootloader as Get and Get ID describe it."""

    pid: int
    version: int
    commands: tuple[int, ...]
    mass_erase: bool = True
    option_bytes: tuple[int, int] = (0, 0)

    @property
    def pid_bytes(self) -> bytes:
        return self.pid.to_bytes(2, "big")


@dataclass
class ServeResult:
    """Why the ROM stopped serving: ``go`` (with ``address``) or ``reset`` (a system reset)."""

    status: str
    address: int | None = None


@dataclass
class RomServer:
    """The ROM bootloader's command loop, for the simulator (AN3155, device side).

    ``read_byte_timeout`` is how long one wait for a host byte lasts before
    ``alive()`` is asked again; the ROM itself has no timeout and waits for
    the host for ever (until reset).
    """

    channel: ByteChannel
    chip: RomChip
    memory: RomMemory
    alive: Callable[[], bool] = lambda: True
    read_byte_timeout: float = 0.2
    on_sync: Callable[[], None] | None = None
    synced: bool = False
    log: list[str] = field(default_factory=list)

    def serve(self) -> ServeResult:
        """Wait for the handshake, then serve commands until Go or a system reset."""
        while not self.synced:
            b = self._get(1)
            if b[0] == SYNC:
                if self.on_sync:
                    self.on_sync()
                self.synced = True
                self._send(ACK)
            # anything else before the handshake: the autobaud measured garbage; keep waiting
        while True:
            code, check = self._get(2)
            if code ^ check != 0xFF or code not in self.chip.commands:
                self._send(NACK)
                continue
            if self.memory.readout_protected and code not in (GET, GET_VERSION, GET_ID,
                                                              READOUT_UNPROTECT):
                self._send(NACK)
                continue
            self.log.append(COMMAND_NAMES.get(code, hex(code)))
            result = self._dispatch(code)
            if result is not None:
                return result

    # -- commands ----------------------------------------------------------------
    def _dispatch(self, code: int) -> ServeResult | None:
        c = self.chip
        if code == GET:
            self._send(ACK, len(c.commands), c.version, *c.commands, ACK)
        elif code == GET_VERSION:
            self._send(ACK, c.version, *c.option_bytes, ACK)
        elif code == GET_ID:
            self._send(ACK, 1, *c.pid_bytes, ACK)
        elif code == READ_MEMORY:
            self._send(ACK)
            addr = self._address(lambda a: self.memory.readable(a, 1))
            if addr is None:
                return None
            n, check = self._get(2)
            if n ^ check != 0xFF or not self.memory.readable(addr, n + 1):
                self._send(NACK)
                return None
            self._send(ACK)
            self.channel.write(self.memory.read(addr, n + 1))
        elif code == GO:
            self._send(ACK)
            addr = self._address(lambda a: self.memory.readable(a, 8))
            if addr is None:
                return None
            return ServeResult("go", addr)
        elif code == WRITE_MEMORY:
            self._send(ACK)
            addr = self._address(lambda a: a % 4 == 0 and self.memory.writable(a, 1))
            if addr is None:
                return None
            n = self._get(1)[0]
            data = self._get(n + 1)
            check = self._get(1)[0]
            if xor(data, n) != check or not self.memory.writable(addr, n + 1):
                self._send(NACK)
                return None
            self._nack_on_error(partial(self.memory.program, addr, data))
        elif code in (ERASE, EXTENDED_ERASE):
            self._send(ACK)
            self._erase(code)
        elif code == GET_CHECKSUM:
            self._send(ACK)
            addr = self._address(lambda a: a % 4 == 0 and self.memory.readable(a, 4))
            if addr is None:
                return None
            size = self._address(lambda n: n % 4 == 0 and self.memory.readable(addr, n))
            if size is None:
                return None
            crc = stm32_crc(self.memory.read(addr, size)).to_bytes(4, "big")
            self._send(ACK, *crc, xor(crc))
        elif code == READOUT_UNPROTECT:
            self._send(ACK)
            self.memory.mass_erase()
            self.memory.set_readout_protection(False)
            self._send(ACK)
            self._drain()
            return ServeResult("reset")
        elif code == READOUT_PROTECT:
            self._send(ACK)
            self.memory.set_readout_protection(True)
            self._send(ACK)
            self._drain()
            return ServeResult("reset")
        elif code == WRITE_UNPROTECT:
            self._send(ACK, ACK)
            self._drain()
            return ServeResult("reset")
        elif code == WRITE_PROTECT:
            self._send(ACK)
            n = self._get(1)[0]
            sectors = self._get(n + 1)
            if xor(sectors, n) != self._get(1)[0]:
                self._send(NACK)
                return None
            self._send(ACK)
            self._drain()
            return ServeResult("reset")
        return None

    def _erase(self, code: int) -> None:
        if code == ERASE:
            n = self._get(1)[0]
            if n == 0xFF:
                if self._get(1)[0] != 0x00 or not self.chip.mass_erase:
                    self._send(NACK)
                    return
                self._nack_on_error(self.memory.mass_erase)
                return
            pages = list(self._get(n + 1))
            if xor(pages, n) != self._get(1)[0]:
                self._send(NACK)
                return
        else:
            raw = self._get(2)
            n = int.from_bytes(raw, "big")
            if n >= 0xFFF0:
                # 0xFFFF mass erase, 0xFFFE / 0xFFFD bank erases: then their checksum.
                if self._get(1)[0] != xor(raw) or n != MASS_ERASE or not self.chip.mass_erase:
                    self._send(NACK)
                    return
                self._nack_on_error(self.memory.mass_erase)
                return
            body = self._get(2 * (n + 1))
            if xor(body, xor(raw)) != self._get(1)[0]:
                self._send(NACK)
                return
            pages = [int.from_bytes(body[i:i + 2], "big") for i in range(0, len(body), 2)]
        if any(p >= self.memory.page_count() for p in pages):
            self._send(NACK)
            return
        self._nack_on_error(lambda: self.memory.erase_pages(pages))

    # -- helpers -------------------------------------------------------------------
    def _nack_on_error(self, action: Callable[[], None]) -> None:
        try:
            action()
        except ValueError:
            self._send(NACK)
            return
        self._send(ACK)

    def _address(self, valid: Callable[[int], bool] = lambda a: True) -> int | None:
        """A 4-byte value and its XOR: ACKed and returned if it checks out and is ``valid``, else NACKed."""
        raw = self._get(5)
        value = int.from_bytes(raw[:4], "big")
        if xor(raw) != 0 or not valid(value):
            self._send(NACK)
            return None
        self._send(ACK)
        return value

    def _get(self, n: int) -> bytes:
        """``n`` bytes from the host, waiting as long as it takes (the ROM has no timeout)."""
        out = bytearray()
        while len(out) < n:
            if not self.alive():
                raise EOFError("the chip stopped")
            out += self.channel.read(n - len(out), self.read_byte_timeout)
        return bytes(out)

    def _send(self, *codes: int) -> None:
        self.channel.write(bytes(codes))

    def _drain(self) -> None:
        drain = getattr(self.channel, "drain", None)
        if drain:
            drain()


# ------------------------------------------------------------------ the chip it runs on

class ChipMemory:
    """The chip as the ROM bootloader sees it: the module's flash, and read-out protection."""

    def __init__(self, dev: Stm32Rom) -> None:
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
