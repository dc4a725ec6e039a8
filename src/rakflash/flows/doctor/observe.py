"""What doctor saw on a port: the facts, before any advice.

:func:`examine` looks at one port and writes down what it saw in an
:class:`Observation`: whether the port opens (and who else holds it), what
answers at which baud rate (and the raw bytes heard), whether the port went
away meanwhile, and — given an image (``--for FILE``) — the update plan or the
refusal. It never writes firmware. Two things it does change, both undone or
harmless: identification ends a transfer session an interrupted update left
open, and to check a firmware against a bootloader the application can't
name (RUI v3), it starts the bootloader for a moment, asks its version and
starts the application again.

Time is bounded: every port gets at most :data:`BUDGET` seconds (its link
stops itself at that deadline, see :class:`~rakflash.stoppable.StoppableLink`).
Typical: about a second for a module that answers (most of it waiting for an
STM32 ROM bootloader's answer to its handshake), about six seconds for a
silent port (every catalog baud rate is tried).
"""

from __future__ import annotations

import os
import platform
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ... import images
from ...at import looks_like_text
from ...catalog import Module
from ...errors import (
    EchoingPort,
    Flooding,
    GarbageReply,
    InSecureBootloader,
    NoResponse,
    PortBusy,
    PortDisconnected,
    PortError,
    PortLocked,
    RakflashError,
    UnknownDevice,
)
from ...ports import PortEntry, list_serial_ports, other_openers
from ...stoppable import OutOfTime, StoppableLink
from ...trace import TraceWriter
from .. import esp_chip, esp_update, rom_probe
from ..discovery import module_ports
from ..identify import DeviceInfo, identify
from ..plan import Plan
from .image_check import check_image

BUDGET = 20.0          # seconds doctor gives itself per port (ports are examined side by side)
EXTRA_BAUDS = (230400, 460800, 921600, 74880, 2400, 1200)   # tried only when every catalog rate gave garbage


@dataclass
class Observation:
    """What :func:`examine` saw on one port (or, with ``port`` None, of the ports as a whole)."""

    port: str | None
    listing: list[PortEntry] = field(default_factory=list)   # every port the OS lists
    module: Module | None = None          # --module
    baud: int | None = None               # --baud
    image_path: str | None = None         # --for
    image: images.Image | None = None
    image_error: RakflashError | None = None
    open_error: RakflashError | None = None
    holders: list[tuple[int, str]] = field(default_factory=list)   # programs holding the port
    device: DeviceInfo | None = None
    identify_error: RakflashError | None = None
    bauds_tried: list[int] = field(default_factory=list)
    heard: dict[int, bytes] = field(default_factory=dict)    # raw bytes received, per baud rate
    sent: dict[int, bytes] = field(default_factory=dict)
    rom: dict[str, Any] | None = None     # an STM32 ROM bootloader answered: pid, chip, modules
    sbl: dict[str, Any] | None = None     # the Apollo3 secure bootloader answered HELLO: its STATUS
    vanished: bool = False
    out_of_time: str | None = None        # the step doctor was at when its time ran out
    plan: Plan | None = None
    plan_error: RakflashError | None = None
    esp: bool = False                     # an ESP chip, asked in its ROM download mode (rules: esp.py)
    esp_plan: esp_update.EspPlan | None = None
    peeked: str | None = None             # bootloader version read by starting the bootloader briefly
    peek_left_app: bool | None = None     # whether the application runs again after that peek
    system: str = field(default_factory=platform.system)
    usb_present: list[tuple[int, int]] | None = None   # USB ids on the bus (no --port), where known

    @property
    def entry(self) -> PortEntry | None:
        return next((e for e in self.listing if e.device == self.port), None)

    @property
    def may_have_stm32_rom(self) -> bool:
        """Whether an STM32 ROM bootloader can be on this port (not for a native-USB or an Apollo3 module)."""
        return rom_probe.may_have_stm32_rom(self.module, self.entry)

    @property
    def candidates(self) -> list[PortEntry]:
        """Ports that may have a module behind them (discovery), other than this one."""
        return [e for e in module_ports(self.listing) if e.device != self.port]

    def readable_text(self) -> tuple[int, str] | None:
        """A readable line heard that is not an echo of what doctor sent: (baud, line)."""
        for baud, data in self.heard.items():
            sent = self.sent.get(baud, b"")
            for raw in data.replace(b"\r", b"\n").split(b"\n"):
                line = raw.strip()
                if len(line) >= 2 and looks_like_text(line) and line not in sent:
                    return baud, line.decode("ascii", "replace")
        return None

    @property
    def loopback(self) -> bool:
        """Everything heard is what was sent, byte for byte: TX is wired to RX."""
        for baud, data in self.heard.items():
            sent = self.sent.get(baud, b"")
            if len(data) >= 4 and sent.startswith(data) and len(data) * 2 >= len(sent):
                return True
        return False


class _Ear:
    """Stands in for a trace writer on doctor's link: keeps what was sent and heard at each
    baud rate (bounded), and passes everything on to a real trace if one is recorded."""

    KEEP = 16384

    def __init__(self, trace: TraceWriter | None = None) -> None:
        self.trace = trace
        self.baud: int | None = None
        self.heard: dict[int, bytearray] = defaultdict(bytearray)
        self.sent: dict[int, bytearray] = defaultdict(bytearray)

    def event(self, ev: str, **fields: object) -> None:
        if ev in ("open", "baud"):
            baud = fields.get("baud")
            self.baud = baud if isinstance(baud, int) else None
        if self.trace:
            self.trace.event(ev, **fields)

    def data(self, direction: str, data: bytes) -> None:
        keep = self.heard if direction == "rx" else self.sent
        buf = keep[self.baud or 0]
        if len(buf) < self.KEEP:
            buf += data[:self.KEEP - len(buf)]
        if self.trace:
            self.trace.data(direction, data)

    def note(self, text: str) -> None:
        if self.trace:
            self.trace.note(text)

    def close(self) -> None:
        pass


def examine(port: str, *, listing: list[PortEntry] | None = None, module: Module | None = None,
            baud: int | None = None, image: images.Image | None = None, image_path: str | None = None,
            budget: float = BUDGET, trace: TraceWriter | None = None) -> Observation:
    """Look at ``port`` for at most ``budget`` seconds; write down what was seen."""
    o = Observation(port, listing=list_serial_ports() if listing is None else listing,
                    module=module, baud=baud, image=image, image_path=image_path)
    ear = _Ear(trace)
    step = "opening the port"
    try:
        link = StoppableLink(port, baud or 115200, trace=ear, deadline=time.monotonic() + budget)
    except PortError as exc:
        o.open_error = exc
        if isinstance(exc, PortBusy):
            programs = exc.details.get("programs")
            o.holders = [(p["pid"], p["name"]) for p in (programs if isinstance(programs, list) else [])] \
                or other_openers(port)
        return o
    try:
        if esp_chip.claims(module, image, link):       # an ESP chip is asked in its ROM download mode
            step = "asking the ESP chip in its ROM download mode"
            _examine_esp(link, o)
            return o
        if o.may_have_stm32_rom:
            step = "asking for an STM32 ROM bootloader"
            o.rom = rom_probe.stm32_rom(link)
        step = "identifying the module"
        try:
            if o.rom is None:      # a ROM bootloader answers no AT command: nothing more to learn
                # The STM32 ROM was asked above, before any AT command; identification asks
                # the Apollo3 secure bootloader itself once nothing answered AT readably.
                o.device = identify(link, module=module, baud=baud,
                                    chip_bootloaders=("apollo3-sbl", "esp-rom"))
        except InSecureBootloader as exc:
            status = exc.details["sbl"]       # what answered is known
            o.sbl = status if isinstance(status, dict) else None
        except (NoResponse, GarbageReply, Flooding, EchoingPort, UnknownDevice, PortLocked) as exc:
            o.identify_error = exc
            bauds = exc.details.get("bauds")
            o.bauds_tried = list(bauds) if isinstance(bauds, (list, tuple)) else []
        if isinstance(o.identify_error, GarbageReply):
            step = "trying baud rates outside the catalog's"
            o.device = _other_bauds(link, module, o)
        if o.device is not None and image is not None:
            step = "checking the image against the module"
            check_image(link, o)
    except PortDisconnected as exc:
        o.vanished = True
        o.identify_error = exc
    except OutOfTime:
        o.out_of_time = step
    finally:
        o.heard = {b: bytes(v) for b, v in ear.heard.items()}
        o.sent = {b: bytes(v) for b, v in ear.sent.items()}
        link.close()
    if not o.vanished and not os.path.exists(port) and "://" not in port:
        o.vanished = True
    return o


def _examine_esp(link: StoppableLink, o: Observation) -> None:
    """Ask an ESP chip through esptool (no person is asked to act: doctor only says what to do)."""
    o.esp = True
    module = o.module if o.module is not None and o.module.esp is not None else esp_chip.port_module(link)
    try:
        o.device, o.esp_plan, o.plan_error = esp_update.examine(link, module, image=o.image, window=0.0)
    except PortDisconnected:
        raise
    except RakflashError as exc:              # download-mode-failed (the pin named), esptool-failed
        o.identify_error = exc


def _other_bauds(link: StoppableLink, module: Module | None, o: Observation) -> DeviceInfo | None:
    """Every catalog rate gave garbage: try the rates RAK firmware doesn't use (someone set one)."""
    for b in EXTRA_BAUDS:
        if b in o.bauds_tried:
            continue
        try:
            info = identify(link, module=module, baud=b, scan=False)
        except (NoResponse, GarbageReply):
            continue
        except Flooding as exc:
            o.identify_error = exc
            return None
        o.identify_error = None
        return info
    return None
