"""Is a chip's own bootloader waiting on this port, where the module's firmware should answer?

With BOOT0 (STM32) or BOOT (Apollo3) held at reset, the chip starts its ROM
bootloader instead of RAK's bootloader and firmware. It answers no AT command:
an STM32 ROM that is already in sync (an earlier recovery) answers AT's bytes
with NACKs, the Apollo3 secure bootloader with binary CRC-error ACKs — garbage
to identification — and an STM32 ROM not yet in sync says nothing at all. Each
is found by its own handshake and believed only from an answer in its exact
shape. ``doctor`` asks before anything else; ``identify`` (``info``,
``flash``) only once nothing answered AT readably, so identifying a module that
answers costs no extra time.

What these probes send is harmless to an application: a 0x7F or two (a line of
noise to it) and a HELLO message (binary bytes without a line end).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from .. import catalog as _catalog
from ..catalog import Module
from ..link import Link

FULL = "FULL.hex"           # a combined bootloader + application image, as the recovery commands say


class _TimeUp(Exception):
    """A probe's own deadline passed (whatever answers keeps talking)."""


class _Bounded:
    """The link as a byte channel whose calls end at a deadline: a probe on a port that
    keeps talking must not wait for the line to go quiet for ever."""

    def __init__(self, link: Link, seconds: float) -> None:
        self.link = link
        self.end = time.monotonic() + seconds

    def _left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise _TimeUp()
        return left

    def write(self, data: bytes) -> None:
        self._left()
        self.link.write(data)

    def read(self, n: int, timeout: float) -> bytes:
        return self.link.read(n, min(timeout, self._left()))


def _module_port(entry: Any) -> bool:
    """Whether the port's USB id is a module's own USB (a RAK4631): no ROM talks there."""
    if entry is None or getattr(entry, "vid", None) is None:
        return False
    usb = _catalog.load().usb(entry.vid, entry.pid)
    return usb is not None and usb.kind == "module"


def may_have_stm32_rom(module: Module | None, entry: Any = None) -> bool:
    """Whether an STM32 ROM bootloader can be on this port (not for a native-USB or an Apollo3 module)."""
    if module is not None:
        return module.mcu.rom is not None
    return not _module_port(entry)


def may_have_apollo3_sbl(module: Module | None, entry: Any = None) -> bool:
    """Whether an Apollo3 secure bootloader can be on this port (a RAK11720's, or unknown)."""
    if module is not None:
        return module.mcu.key == "apollo3"
    if _module_port(entry):
        return False
    return any(m.mcu.key == "apollo3" for m in _catalog.load().modules.values())


def stm32_rom(link: Link, window: float = 0.8) -> dict[str, Any] | None:
    """0x7F at 8E1 (AN3155): an STM32 ROM bootloader answers ACK — or, already in sync from an
    earlier session, takes it as the first byte of a command: a second 0x7F makes that a bad
    command, which it answers NACK (as stm32flash relies on). So two, ``window`` / 2 apart.

    A lone 0x79 could be a 'y' in some firmware's text, so the ROM must also
    answer Get and Get ID in their exact shape before it is believed. Best sent
    before any AT command: a ROM that hears other bytes first may measure its
    baud rate from them. An application takes the single byte as noise.
    Returns its product ID, chip name, number of commands and the catalog's
    modules with that chip; None when no ROM answered.
    """
    from ..errors import RomGarbled, RomNack, RomNoHandshake, RomSilent
    from ..protocols.stm32_rom import RomClient
    if link.read(64, 0.05):
        return None           # a ROM bootloader never talks unasked; this port does (a sketch's output)
    link.set_parity("E")
    try:
        client = RomClient(_Bounded(link, 4 * window))
        client.handshake(window, interval=window / 2)
        info = client.get()
        pid = client.get_id()
    except (RomNoHandshake, RomNack, RomSilent, RomGarbled, _TimeUp):
        return None
    finally:
        link.discard_input()
        link.set_parity("N")
    cat = _catalog.load()
    modules = [m for m in cat.modules.values() if m.mcu.rom is not None and m.mcu.rom.pid == pid]
    return {"pid": pid, "chip": cat.chip_name(pid), "commands": len(info.commands),
            "modules": [m.key for m in modules]}


def apollo3_sbl(link: Link, baud: int, wait: float = 1.0) -> dict[str, Any] | None:
    """HELLO to the Apollo3 secure bootloader's wired update: its STATUS, found by shape and CRC.

    Asked only once nothing answered AT readably: the SBL answers AT's bytes with
    binary CRC-error ACKs (garbage to identification) and keeps listening while
    spoken to. Sent twice: the first HELLO may land behind a half message the
    earlier probes left in its buffer.
    """
    from ..protocols import apollo3_sbl as sbl
    if link.baud != baud:
        link.baud = baud
    link.discard_input()
    for _ in range(2):
        got = sbl.say_hello(link, wait)
        if isinstance(got, sbl.Status):
            link.discard_input()
            return got.to_dict()
    return None


# ------------------------------------------------------------------ saying what answered

def recovery_command(module: Module, port: str) -> str:
    """The command that writes a full image (bootloader included) without the serial bootloader:
    the catalog's ``rakflash recover`` command where rakflash has a way, else pyOCD over SWD."""
    return module.recover_command(FULL, shlex.quote(port)) or module.swd_command(FULL)


@dataclass
class Waiting:
    """What to tell a person about a chip bootloader that answered (doctor's finding, and the
    error ``info`` and ``flash`` end with): the same words in both."""

    code: str                  # "rom-bootloader" or "apollo3-sbl"
    finding: str               # what answers, and which chip / module it is
    why: str                   # why it answers instead of the firmware
    leave: str                 # how to start the firmware again (pins named)
    command: str | None        # the recovery command, when one module fits
    details: dict[str, Any] = field(default_factory=dict)

    def next(self) -> str:
        """The next step with the recovery command given apart (below it, as doctor shows it)."""
        first = ("If you meant to bring the module back, write the full image (bootloader and firmware) "
                 "now, as below. Otherwise " if self.command else "")
        return first + (self.leave[0].lower() if first else self.leave[0].upper()) + self.leave[1:]

    def hint(self) -> str:
        """The next step in one line: leave it first (the usual wish), recover as the other way."""
        rec = (f" Or, to write the full image (bootloader and firmware) now instead: {self.command}"
               if self.command else "")
        return self.leave[0].upper() + self.leave[1:] + rec


def stm32_rom_waiting(rom: dict[str, Any], port: str, module: Module | None = None) -> Waiting:
    """The words for an STM32 ROM bootloader that answered (``rom`` from :func:`stm32_rom`)."""
    cat = _catalog.load()
    mods = [cat.modules[k] for k in rom["modules"]]
    if module is not None and module in mods:
        mods = [module]
    names = " or ".join(m.name for m in mods)
    reachable = [m for m in mods if m.rom_access.get("boot0")]
    by_pins: dict[str, list[str]] = {}      # variants with the same pads said once
    for m in reachable:
        by_pins.setdefault(f"BOOT0 is {m.rom_access['boot0']}, reset is {m.rom_access['reset']}", []).append(m.name)
    pins = "; ".join(f"{', '.join(names)}: {where}" for where, names in by_pins.items())
    if len(reachable) > 1 and all(m.same_flash_as(reachable[0]) for m in reachable):
        # Variants of one chip and flash map (the RAK3172's): a full image is restored the same
        # way on each, so the base module's command serves them all.
        reachable = [next((m for m in reachable if m.variant_of is None), reachable[0])]
    return Waiting(
        "rom-bootloader",
        f"the STM32 ROM bootloader answers on {port}: {rom['chip']} (product ID 0x{rom['pid']:03X})"
        + (f", the chip of a {names}" if names else ""),
        "BOOT0 was high when the chip last started, so it runs its ROM bootloader instead of the RAK "
        "bootloader and firmware: AT commands go unanswered, and other tools call the module dead",
        "take BOOT0 low (to GND) and reset the module" + (f" ({pins})" if pins else "")
        + ": it starts its firmware again.",
        recovery_command(reachable[0], port) if len(reachable) == 1 else None,
        {"pid": rom["pid"], "chip": rom["chip"], "modules": [m.name for m in mods]})


def apollo3_sbl_waiting(status: dict[str, Any], port: str, module: Module | None = None) -> Waiting:
    """The words for an Apollo3 secure bootloader that answered HELLO (``status`` from :func:`apollo3_sbl`)."""
    mods = [m for m in _catalog.load().modules.values() if m.mcu.key == "apollo3"]
    m = module if module is not None and module.mcu.key == "apollo3" else (mods[0] if mods else None)
    a = m.rom_access if m is not None else {}
    pins = (f" ({m.name}: {a['boot0']}; reset: {a['reset']})" if m is not None and a.get("boot0") else "")
    return Waiting(
        "apollo3-sbl",
        f"the Apollo3 secure bootloader answers on {port}: it waits for a wired update (secure "
        f"bootloader version {status['version']})" + (f"; the chip of a {m.name}" if m else ""),
        "BOOT was held at the chip's last reset, so its secure bootloader waits for a wired update "
        "instead of starting RUI's bootloader and the firmware: AT commands go unanswered until the "
        "wired timeout INFO0 sets (or a reset with BOOT released)",
        f"release BOOT and reset the module{pins}: it starts its firmware again.",
        recovery_command(m, port) if m else None,
        {"sbl": status, "modules": [m.name] if m else []})
