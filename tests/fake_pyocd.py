"""A stand-in for pyOCD below rakflash's boundary: probes, sessions, a target with memory, a flash loader.

rakflash's :class:`~rakflash.swd_link.PyOCD` adapter runs unchanged on top of it:
the fake replaces only pyOCD's ``ConnectHelper`` and ``FlashLoader`` (same call
signatures) and raises pyOCD's own exception classes, so the mapping from pyOCD's
failures to rakflash's named errors is what is tested. It records what a person
would want to check on real hardware: the target type, the session options (reset
type), the regions written, the erase mode, what was read back, the resets.

The Apollo3 ROM's INFO0 helpers are modelled from RAK's ``jlink-prog-info0.txt``:
parameters at 0x10000000, data at 0x10001000, entry points 0x08000085 (erase) and
0x08000061 (program), result word after the parameters, 0 for success.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from pyocd.core import exceptions

from rakflash import apollo3_info0
from rakflash.swd_link import PyOCD

INFO0_KEY = 0xD894E09E          # jlink-prog-info0.txt


class CMSISDAPProbe:
    def __init__(self, unique_id: str, product: str = "RAKDAP1 CMSIS-DAP") -> None:
        self.unique_id, self.vendor_name, self.product_name = unique_id, "RAKwireless", product


class JLinkProbe:
    def __init__(self, unique_id: str) -> None:
        self.unique_id, self.vendor_name, self.product_name = unique_id, "Segger", "J-Link"


@dataclass
class Failures:
    """Ways pyOCD fails, each raised where pyOCD raises it."""

    open: Exception | None = None            # session.open(): busy probe, silent target, unknown target
    commit: Exception | None = None          # loader.commit(): transfer fault, flash failure
    read: Exception | None = None            # target.read_memory_block8()
    lose_byte_at: int | None = None          # flash doesn't take this byte (verify must catch it)
    session_none: bool = False               # session_with_chosen_probe() finds no probe


class FakeTarget:
    def __init__(self, world: FakeWorld, session: FakeSession) -> None:
        self.world, self.session = world, session
        self.registers: dict[str, int] = {}
        self.halted = False

    # memory
    def _region(self, addr: int, size: int) -> tuple[bytearray, int]:
        w = self.world
        for base, mem in ((w.flash_base, w.flash), (apollo3_info0.BASE, w.info0),
                          (0x10000000, w.sram), *w.extra.items()):
            if base <= addr and addr + size <= base + len(mem):
                return mem, addr - base
        raise exceptions.TransferFaultError(f"Memory transfer fault @ {addr:#010x}")

    def read_memory_block8(self, addr: int, size: int) -> list[int]:
        if self.world.failures.read:
            raise self.world.failures.read
        mem, off = self._region(addr, size)
        self.world.reads.append((addr, size))
        return list(mem[off:off + size])

    def read32(self, addr: int) -> int:
        mem, off = self._region(addr, 4)
        return struct.unpack_from("<I", mem, off)[0]

    def write_memory_block8(self, addr: int, data: list[int]) -> None:
        mem, off = self._region(addr, len(data))
        if mem is self.world.flash or mem is self.world.info0 or any(mem is m for m in self.world.extra.values()):
            raise exceptions.TransferFaultError(f"write to flash at {addr:#010x} without the algorithm")
        mem[off:off + len(data)] = bytes(data)

    def write_memory_block32(self, addr: int, words: list[int]) -> None:
        self.write_memory_block8(addr, list(struct.pack(f"<{len(words)}I", *words)))

    # core
    def write_core_register(self, name: str, value: int) -> None:
        self.registers[name] = value

    def halt(self) -> None:
        self.halted = True

    def resume(self) -> None:
        self.halted = False
        self.world.rom_call(self.registers.get("pc"), self.registers.get("xpsr", 0))

    def reset(self, reset_type: Any = None) -> None:
        self.world.resets.append(self.session.options.get("reset_type", "default"))
        if self.world.on_reset:
            self.world.on_reset()


class FakeSession:
    def __init__(self, world: FakeWorld, unique_id: str, target: str, options: dict) -> None:
        self.world, self.unique_id, self.target_type, self.options = world, unique_id, target, options
        self.target = FakeTarget(world, self)
        self.is_open = False

    def open(self) -> None:
        if self.world.failures.open:
            raise self.world.failures.open
        self.is_open = True
        self.world.opened.append((self.unique_id, self.target_type, dict(self.options)))

    def close(self) -> None:
        self.is_open = False
        self.world.closed += 1


class FakeFlashLoader:
    def __init__(self, session: FakeSession, progress=None, chip_erase=None, smart_flash=None,
                 trust_crc=None, keep_unwritten=None, no_reset=None) -> None:
        self.session, self.progress = session, progress
        session.world.loader_args = {"chip_erase": chip_erase, "smart_flash": smart_flash,
                                     "keep_unwritten": keep_unwritten}
        self.data: list[tuple[int, bytes]] = []

    def add_data(self, address: int, data) -> None:
        self.data.append((address, bytes(data)))

    def commit(self) -> None:
        w = self.session.world
        for phase in ("erase", "program"):          # pyOCD reports each phase from 0 to 1
            for frac in (0.0, 0.5, 1.0):
                if self.progress:
                    self.progress(frac)
            if phase == "erase" and w.failures.commit:
                raise w.failures.commit
        for address, data in self.data:
            off = address - w.flash_base
            if off < 0 or off + len(data) > len(w.flash):
                raise exceptions.FlashFailure(f"no flash at {address:#010x}")
            w.flash[off:off + len(data)] = data
            if w.failures.lose_byte_at is not None and address <= w.failures.lose_byte_at < address + len(data):
                w.flash[w.failures.lose_byte_at - w.flash_base] ^= 0xFF
            w.written.append((address, address + len(data)))


class FakeConnectHelper:
    def __init__(self, world: FakeWorld) -> None:
        self.world = world

    def get_all_connected_probes(self, blocking: bool = True, unique_id=None, print_wait_message: bool = True):
        assert blocking is False, "rakflash must never wait for a probe to be plugged in"
        return list(self.world.probes)

    def session_with_chosen_probe(self, blocking=True, return_first=False, unique_id=None,
                                  auto_open=True, options=None, **kwargs):
        assert blocking is False and auto_open is False
        if self.world.failures.session_none:
            return None
        s = FakeSession(self.world, unique_id, kwargs.get("target_override"), dict(options or {}))
        self.world.sessions.append(s)
        return s


@dataclass
class FakeWorld:
    """The probes on the desk and the chip behind them."""

    probes: list = field(default_factory=lambda: [CMSISDAPProbe("0700000100ab")])
    flash_base: int = 0
    flash_size: int = 0x100000
    installed: set = field(default_factory=lambda: {"ama3b1kk_kbr", "nrf52840"})   # builtins
    failures: Failures = field(default_factory=Failures)
    memory: bytearray | None = None          # a virtual module's flash, to write the real thing
    # More memory the probe reads, by address (e.g. an STM32L0/L1's data EEPROM at 0x08080000,
    # a virtual module's own bytes); writes to it fault as to flash, without a flash algorithm.
    extra: dict = field(default_factory=dict)
    on_reset: Any = None                     # called at a reset (e.g. the virtual module's button)

    def __post_init__(self) -> None:
        self.flash = self.memory if self.memory is not None else bytearray(b"\xff" * self.flash_size)
        self.info0 = bytearray(apollo3_info0.rak11720_default().raw)
        self.sram = bytearray(0x4000)
        self.sessions: list[FakeSession] = []
        self.opened: list[tuple] = []
        self.closed = 0
        self.written: list[tuple[int, int]] = []
        self.reads: list[tuple[int, int]] = []
        self.resets: list[str] = []
        self.rom_calls: list[int] = []
        self.loader_args: dict = {}

    def rom_call(self, pc: int | None, xpsr: int) -> None:
        """The Apollo3 ROM's INFO0 helpers, as RAK's J-Link script calls them."""
        self.rom_calls.append(pc)
        params = lambda i: struct.unpack_from("<I", self.sram, 4 * i)[0]   # noqa: E731
        thumb = bool(xpsr & (1 << 24))
        if pc == 0x08000084 and thumb:
            ok = params(0) == 0 and params(1) == INFO0_KEY
            if ok:
                self.info0[:] = b"\xff" * len(self.info0)
            struct.pack_into("<I", self.sram, 8, 0 if ok else 1)
        elif pc == 0x08000060 and thumb:
            instance, offset, words, key = params(0), params(1), params(2), params(3)
            ok = instance == 0 and key == INFO0_KEY and offset + words * 4 <= 8192
            if ok:
                data = self.sram[0x1000:0x1000 + words * 4]
                self.info0[offset:offset + words * 4] = bytes(a & b for a, b in
                                                              zip(self.info0[offset:offset + words * 4], data, strict=False))
            struct.pack_into("<I", self.sram, 16, 0 if ok else 2)


class FakePyOCD(PyOCD):
    """rakflash's real adapter, on the fake ConnectHelper and FlashLoader."""

    def __init__(self, world: FakeWorld) -> None:      # no super(): pyOCD's classes are replaced
        self.exceptions = exceptions
        self.world = world
        self._connect = FakeConnectHelper(world)
        self._loader = FakeFlashLoader

    def knows_target(self, target: str) -> bool:
        return target in self.world.installed
