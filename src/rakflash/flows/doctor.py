"""``rakflash doctor``: what is wrong with a module, and what to type next.

Two steps, kept apart so each reads on its own:

1. :func:`examine` looks at one port and writes down what it saw in an
   :class:`Observation`: whether the port opens (and who else holds it), what
   answers at which baud rate (and the raw bytes heard), whether the port went
   away meanwhile, and — given an image (``--for FILE``) — the update plan or the
   refusal. It never writes firmware. Two things it does change, both undone or
   harmless: identification ends a transfer session an interrupted update left
   open, and to check a firmware against a bootloader the application can't
   name (RUI v3), it starts the bootloader for a moment, asks its version and
   starts the application again.
2. :data:`RULES` turn an observation into :class:`Finding`\\ s. Each rule is a
   short function: when it applies, it says the finding, why it matters and the
   next command.

Time is bounded: every port gets at most :data:`BUDGET` seconds (its link
stops itself at that deadline, see :class:`~rakflash.stoppable.StoppableLink`),
and several ports are examined side by side. Typical: about a second for a
module that answers (most of it waiting for an STM32 ROM bootloader's answer
to its handshake), about six seconds for a silent port (every catalog baud
rate is tried).
"""

from __future__ import annotations

import os
import platform
import shlex
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import catalog as _catalog, images
from ..at import looks_like_text
from ..catalog import Module, version_tuple
from ..errors import (AlreadyUpToDate, BootloaderTooOld, EchoingPort, Flooding, GarbageReply,
                      InSecureBootloader, NoResponse, UnknownDevice, PortLocked,
                      PortBusy, PortDisconnected, PortError, PortNotFound,
                      PortPermission, RakflashError)
from ..ports import PortEntry, list_serial_ports, other_openers
from ..stoppable import OutOfTime, StoppableLink
from ..trace import TraceWriter
from . import boot
from . import lock, rom_probe
from .discovery import module_ports
from .identify import DeviceInfo, identify
from .plan import Plan, check_compatibility, make_plan
from .transfers.legacy_dfu import RUI3_BOOTLOADER_PACKAGE

BUDGET = 20.0          # seconds doctor gives itself per port (ports are examined side by side)
EXTRA_BAUDS = (230400, 460800, 921600, 74880, 2400, 1200)   # tried only when every catalog rate gave garbage
FIRMWARE = "FIRMWARE.bin"   # stands for the person's file in a suggested command when --for wasn't given
PACKAGE = "PACKAGE.zip"     # a RAK4631's DFU package
DFU_PROTOCOLS = ("nordic-dfu", "legacy-dfu")


# ------------------------------------------------------------------ what doctor reports

LEVELS = ("ok", "note", "action", "problem")   # "problem": something stands in the way (non-zero exit)


@dataclass
class Finding:
    """One diagnosis: what doctor found, why it matters, and what to do next."""

    code: str              # a short machine name, e.g. "port-busy"
    level: str             # one of LEVELS
    finding: str
    why: str
    next: str              # what to do, in words
    command: str | None = None     # the exact command to type next, if there is one
    port: str | None = None
    exit_code: int = 0     # for a "problem": the exit code of its kind (4 port, 5 device, 6 plan, 3 image)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "code": self.code, "level": self.level, "finding": self.finding,
                "why": self.why, "next": self.next, "command": self.command, **self.details}


@dataclass
class Report:
    """Everything one ``doctor`` run found."""

    findings: list[Finding]
    devices: list[DeviceInfo]
    seconds: float
    budget: float = BUDGET

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    @property
    def exit_code(self) -> int:
        return self.problems[0].exit_code if self.problems else 0

    def to_dict(self) -> dict[str, Any]:
        return {"result": "problem" if self.problems else "ok", "exit_code": self.exit_code,
                "seconds": round(self.seconds, 2), "bound_seconds": self.budget,
                "findings": [f.to_dict() for f in self.findings],
                "devices": [d.to_dict() for d in self.devices]}


# ------------------------------------------------------------------ what doctor saw

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
    peeked: str | None = None             # bootloader version read by starting the bootloader briefly
    peek_left_app: bool | None = None     # whether the application runs again after that peek
    system: str = field(default_factory=platform.system)
    usb_present: list[tuple[int, int]] | None = None   # USB ids on the bus (no --port), where known

    @property
    def entry(self) -> PortEntry | None:
        return next((e for e in self.listing if e.device == self.port), None)

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
            self.baud = fields.get("baud")  # type: ignore[assignment]
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
            o.holders = [(p["pid"], p["name"]) for p in exc.details.get("programs", [])] \
                or other_openers(port)
        return o
    try:
        if _may_have_stm32_rom(o):
            step = "asking for an STM32 ROM bootloader"
            o.rom = rom_probe.stm32_rom(link)
        step = "identifying the module"
        try:
            if o.rom is None:      # a ROM bootloader answers no AT command: nothing more to learn
                # The STM32 ROM was asked above, before any AT command; identification asks
                # the Apollo3 secure bootloader itself once nothing answered AT readably.
                o.device = identify(link, module=module, baud=baud, chip_bootloaders=("apollo3-sbl",))
        except InSecureBootloader as exc:
            o.sbl = exc.details["sbl"]        # what answered is known
        except (NoResponse, GarbageReply, Flooding, EchoingPort, UnknownDevice, PortLocked) as exc:
            o.identify_error = exc
            o.bauds_tried = list(exc.details.get("bauds") or [])
        if isinstance(o.identify_error, GarbageReply):
            step = "trying baud rates outside the catalog's"
            o.device = _other_bauds(link, module, o)
        if o.device is not None and image is not None:
            step = "checking the image against the module"
            _check_image(link, o)
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


def _may_have_stm32_rom(o: Observation) -> bool:
    """Whether an STM32 ROM bootloader can be on this port (not for a native-USB or an Apollo3 module)."""
    return rom_probe.may_have_stm32_rom(o.module, o.entry)


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


def _check_image(link: StoppableLink, o: Observation) -> None:
    """The plan ``flash`` would make, or its refusal; reads a bootloader version the app can't tell."""
    dev = o.device
    try:
        o.plan = make_plan(o.image, dev, module=o.module)
    except RakflashError as exc:      # a refusal (PlanRefused), or an image that doesn't fit the module
        o.plan_error = exc
        return
    plan = o.plan
    rule_applies = [r for r in plan.module.rules if plan.app_version
                    and version_tuple(plan.app_version) >= version_tuple(r.firmware_min)]
    if not rule_applies or dev.bootloader_version or dev.mode != "app":
        return
    # RUI v3 applications don't tell their bootloader's version, and this firmware
    # needs a recent one: ask the bootloader itself, then start the application again.
    if not boot.request_boot(link, plan.module):
        return
    o.peeked = boot.bootloader_version(link, plan.module)
    o.peek_left_app = boot.leave_bootloader(link, plan.module)
    try:
        check_compatibility(plan.module, plan.app_version, o.peeked)
    except BootloaderTooOld as exc:
        o.plan, o.plan_error = None, exc


# ------------------------------------------------------------------ the rules

Rule = Callable[[Observation], "Finding | None"]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    """Register ``fn`` as a doctor rule (rules run in the order they are written)."""
    RULES.append(fn)
    return fn


def _q(text: str) -> str:
    return shlex.quote(text)


def _doctor_again(o: Observation) -> str:
    return f"rakflash doctor --port {_q(o.port or 'PORT')}"


def _placeholder(module: Module | None) -> str:
    """What stands for the person's file in a suggested command: a DFU package for a RAK4631."""
    return PACKAGE if module is not None and module.protocol in DFU_PROTOCOLS else FIRMWARE


def _flash_command(o: Observation, *extra: str, module: Module | None = None) -> str:
    dev = o.device
    file = _q(o.image_path) if o.image_path else _placeholder(dev.module if dev else module)
    parts = ["rakflash flash", file, "--port", _q(o.port or "PORT")]
    if dev is not None and dev.baud != 115200 and not dev.usb:      # a native USB port has no baud rate
        parts += ["--baud", str(dev.baud)]
    if module is not None:
        parts += ["--module", module.key]
    return " ".join([*parts, *extra])


def _recovery_command(module: Module, port: str | None) -> str:
    """The command that writes a full image (bootloader included) without the serial bootloader:
    the catalog's ``rakflash recover`` command where rakflash has a way, else pyOCD over SWD."""
    return rom_probe.recovery_command(module, port or "PORT")


def _modules_with(text: str) -> str:
    mods = [m.name for m in _catalog.load().modules.values() if text in m.family]
    return " or ".join(mods)


# --- the ports as a whole (no --port given) ---------------------------------------

# Where each adapter's driver comes from (the vendors' download pages) and its Linux kernel module
# (mainline usb-serial drivers). Keyed by the catalog's USB-UART bridge ids.
DRIVERS: dict[tuple[int, int], dict[str, str]] = {
    (0x1A86, 0x7523): {"name": "CH340", "vendor": "WCH",
                       "Windows": "https://www.wch-ic.com/downloads/CH341SER_EXE.html",
                       "Darwin": "https://www.wch-ic.com/downloads/CH34XSER_MAC_ZIP.html",
                       "Linux": "ch341"},
    (0x10C4, 0xEA60): {"name": "CP210x", "vendor": "Silicon Labs",
                       "Windows": "https://www.silabs.com/developers/usb-to-uart-bridge-vcp-drivers",
                       "Darwin": "https://www.silabs.com/developers/usb-to-uart-bridge-vcp-drivers",
                       "Linux": "cp210x"},
    (0x0403, 0x6001): {"name": "FT232", "vendor": "FTDI",
                       "Windows": "https://ftdichip.com/drivers/vcp-drivers/",
                       "Darwin": "https://ftdichip.com/drivers/vcp-drivers/",
                       "Linux": "ftdi_sio"},
}


@rule
def driver_missing(o: Observation) -> Finding | None:
    """A USB-UART adapter (or a module's own USB) is on the bus, but no serial port came of it."""
    if o.port is not None or not o.usb_present or module_ports(o.listing):
        return None
    cat = _catalog.load()
    listed = {(e.vid, e.pid) for e in o.listing}
    missing = [(v, p) for v, p in o.usb_present if (v, p) not in listed
               and (u := cat.usb(v, p)) is not None and u.kind in ("module", "bridge")]
    if not missing:
        return None
    vid, pid = missing[0]
    usb = cat.usb(vid, pid)
    drv = DRIVERS.get((vid, pid))
    what = f"{drv['name'] if drv else usb.name} ({vid:04X}:{pid:04X})"
    if o.system == "Windows":
        text = (f"Install {drv['vendor']}'s {drv['name']} driver from {drv['Windows']}, then unplug the "
                f"adapter and plug it in again (Device Manager lists it under 'Other devices' until then):"
                if drv else "Install the device's driver (Device Manager lists it under 'Other devices'), "
                            "then unplug and plug it in again:")
    elif o.system == "Darwin":
        if drv and drv["name"] == "CH340":       # (DESIGN.md §2: the CH340 note on older macOS)
            text = (f"Recent macOS has a driver for the CH340; older macOS needs {drv['vendor']}'s, from "
                    f"{drv['Darwin']}. Then unplug the adapter and plug it in again:")
        elif drv:
            text = (f"Install {drv['vendor']}'s {drv['name']} driver from {drv['Darwin']}, then unplug the "
                    f"adapter and plug it in again:")
        else:
            text = "Unplug it and plug it in again; if no /dev/cu.* port appears, its driver is missing:"
    else:
        text = (f"Linux's {drv['Linux']} driver should take it: if 'dmesg' shows the adapter attached and "
                f"then 'disconnected' a second later, brltty (a braille display driver) took it — "
                f"'sudo apt remove brltty' — else load the driver ('sudo modprobe {drv['Linux']}'). Then "
                f"replug it and list the ports:" if drv else
                "Check 'dmesg' for what happened when it was plugged in, then list the ports:")
    return Finding("driver-missing", "problem", f"{what} is plugged in, but no serial port came of it",
                   "its driver is missing, or another driver took the device", text, "rakflash ports",
                   exit_code=4, details={"usb": [f"{v:04X}:{p:04X}" for v, p in missing]})


@rule
def no_serial_ports(o: Observation) -> Finding | None:
    if o.port is not None or o.listing:
        return None
    nexts = {
        "Linux": "Plug the module (or its USB-UART adapter) in. If 'dmesg' shows the adapter attached "
                 "and then 'disconnected' a second later, brltty (a braille display driver) took it: "
                 "'sudo apt remove brltty'.",
        "Darwin": "Plug the module (or its USB-UART adapter) in; a CH340 adapter needs WCH's driver on "
                  "older macOS. It shows up as /dev/cu.usbserial-… or /dev/cu.wchusbserial….",
        "Windows": "Plug the module (or its USB-UART adapter) in; in Device Manager an adapter without "
                   "its driver (CH340, CP210x) sits under 'Other devices' instead of 'Ports (COM & LPT)'.",
    }
    return Finding("no-serial-port", "problem", "this computer has no serial port at all",
                   "rakflash reaches a module only through a serial port: the cable, the adapter or its "
                   "driver is missing", nexts.get(o.system, nexts["Linux"]) + " Then list the ports:",
                   "rakflash ports", exit_code=4)


@rule
def no_module_port(o: Observation) -> Finding | None:
    if o.port is not None or not o.listing or module_ports(o.listing):
        return None
    names = ", ".join(f"{e.device} ({e.description or 'no USB ids'})" for e in o.listing[:6])
    return Finding("no-module-port", "problem",
                   f"{len(o.listing)} serial port(s), none with the USB ids of a RAK module or a USB-UART "
                   f"adapter: {names}",
                   "doctor sends AT commands only to ports that can be a module, not to other devices",
                   "If one of them is your module (a pseudo-terminal, an adapter rakflash doesn't know), "
                   "name it:", f"rakflash doctor --port {_q(o.listing[0].device)}", exit_code=4)


# --- opening the port ------------------------------------------------------------------

@rule
def port_not_found(o: Observation) -> Finding | None:
    if not isinstance(o.open_error, PortNotFound):
        return None
    others = o.candidates
    if others:
        alt = others[0]
        return Finding("port-moved", "problem",
                       f"{o.port} isn't there, but {alt.device} ({alt.probably or alt.description}) is",
                       "a USB port gets a new name when it is plugged in again or when a module with "
                       "native USB restarts into its bootloader (ttyACM0 becomes ttyACM1)",
                       f"Look at {alt.device} instead:", f"rakflash doctor --port {_q(alt.device)}",
                       port=o.port, exit_code=4)
    return Finding("port-not-found", "problem", f"{o.port} does not exist",
                   "nothing is plugged in under that name: a typo, or the cable is out",
                   "Check the cable and list the ports there are:", "rakflash ports",
                   port=o.port, exit_code=4)


# Programs known to grab serial ports, and how to keep them off for good.
KNOWN_HOLDERS: dict[str, tuple[str, str]] = {
    "ModemManager": ("ModemManager probes every new serial port for a modem and garbles the first "
                     "bytes; tell it to leave this adapter alone with a udev rule, then replug it:",
                     "echo 'ATTRS{{idVendor}}==\"{vid}\", ATTRS{{idProduct}}==\"{pid}\", "
                     "ENV{{ID_MM_DEVICE_IGNORE}}=\"1\"' | sudo tee /etc/udev/rules.d/99-rakflash-mm.rules"
                     " && sudo udevadm control --reload-rules"),
    "brltty": ("brltty (a braille display driver) claims USB-UART adapters such as the CH340; "
               "unless you use a braille display, remove it:", "sudo apt remove brltty"),
}


@rule
def port_busy(o: Observation) -> Finding | None:
    if not isinstance(o.open_error, PortBusy):
        return None
    if not o.holders:
        return Finding("port-busy", "problem", f"{o.port} is in use by another program",
                       "two programs on one port each get part of the bytes, so every tool seems to "
                       "get garbage or nothing",
                       "Close the serial monitor, IDE or other rakflash using it (on Windows, the "
                       "program is not named: look for an open terminal program), then:",
                       _doctor_again(o), port=o.port, exit_code=4)
    names = ", ".join(f"{name} (pid {pid})" for pid, name in o.holders)
    pid, name = o.holders[0]
    entry = o.entry
    if name in KNOWN_HOLDERS:
        text, command = KNOWN_HOLDERS[name]
        command = command.format(vid=f"{entry.vid:04x}" if entry and entry.vid is not None else "VID",
                                 pid=f"{entry.pid:04x}" if entry and entry.pid is not None else "PID")
    else:
        text = f"Close {name} (pid {pid}) — a serial monitor, IDE or another rakflash — then check again:"
        command = _doctor_again(o)
    return Finding("port-busy", "problem", f"{o.port} is open in {names}",
                   "two programs on one port each get part of the bytes, so every tool seems to get "
                   "garbage or nothing", text, command, port=o.port, exit_code=4,
                   details={"programs": [{"pid": p, "name": n} for p, n in o.holders]})


def permission_advice(path: str, entry: PortEntry | None, system: str) -> tuple[str, str, dict]:
    """How this user gets access to ``path`` on ``system``: (what to do, the command, details)."""
    if system == "Darwin":
        return ("macOS normally lets you open USB serial ports; use the /dev/cu.* name (a /dev/tty.* "
                "one waits for a carrier signal) and check the device's permissions:",
                f"ls -l {_q(path)}", {})
    if system == "Windows":
        return ("Windows refuses a port another program holds: close it (serial monitor, IDE).",
                f"rakflash doctor --port {_q(path)}", {})
    details: dict[str, Any] = {}
    try:
        import grp
        st = os.stat(path)
        group = grp.getgrgid(st.st_gid).gr_name
        group_may = bool(st.st_mode & 0o060)
    except (OSError, KeyError, ImportError):
        group, group_may = "dialout", True
    rule_text = None
    if entry is not None and entry.vid is not None:
        rule_text = (f'SUBSYSTEM=="tty", ATTRS{{idVendor}}=="{entry.vid:04x}", '
                     f'ATTRS{{idProduct}}=="{entry.pid:04x}", MODE="0660", TAG+="uaccess"')
        details["udev_rule"] = rule_text
    details["group"] = group
    if group != "root" and group_may:
        text = (f"{path} belongs to the group '{group}': add yourself to it, then log out and in "
                f"again (or start a shell with 'newgrp {group}')")
        if rule_text:
            text += ("; or give the logged-in user access with udev rules for every RAK module and "
                     "adapter ('rakflash udev --install' writes them; 'rakflash udev' shows them)")
        return text + ":", f"sudo usermod -aG {group} $USER", details
    if rule_text:
        return ("Only root may open it: give the logged-in user access with udev rules for every RAK "
                "module and adapter (this one's among them: " + rule_text + "), then replug the "
                "adapter:", "rakflash udev --install", details)
    return (f"Only root may open it: run rakflash with sudo, or change who may ({path} is owned "
            f"by group '{group}'):", f"ls -l {_q(path)}", details)


@rule
def permission_denied(o: Observation) -> Finding | None:
    if not isinstance(o.open_error, PortPermission):
        return None
    text, command, details = permission_advice(o.port or "", o.entry, o.system)
    return Finding("permission-denied", "problem", f"you may not open {o.port}",
                   "the operating system keeps serial ports from users it wasn't told to trust",
                   text, command, port=o.port, exit_code=4, details=details)


@rule
def other_port_error(o: Observation) -> Finding | None:
    e = o.open_error
    if e is None or isinstance(e, (PortNotFound, PortBusy, PortPermission)):
        return None
    return Finding(e.name, "problem", e.message, "rakflash can't open the port, so nothing can be checked",
                   e.hint, "rakflash ports", port=o.port, exit_code=e.exit_code)


@rule
def port_vanished(o: Observation) -> Finding | None:
    if not o.vanished or o.open_error is not None:
        return None
    return Finding("port-vanished", "problem", f"{o.port} went away while doctor was talking to the module",
                   "a loose cable or connector, a supply that browns out when the module starts its "
                   "radio, or an adapter whose RTS/DTR resets the module and its USB when the port opens",
                   "Plug it in again and find its name (it may have a new one); if it goes away every "
                   "time, try another cable, USB port or power supply:", "rakflash ports",
                   port=o.port, exit_code=4)


@rule
def out_of_time(o: Observation) -> Finding | None:
    if o.out_of_time is None:
        return None
    return Finding("out-of-time", "problem",
                   f"doctor stopped while {o.out_of_time}: its time for one port is up",
                   "something on the port answers so slowly or so much that doctor could not finish "
                   "within its bound", "Run 'info' to see how far identification gets on its own:",
                   f"rakflash info --port {_q(o.port or 'PORT')}", port=o.port, exit_code=5)


# --- what answers ----------------------------------------------------------------------

@rule
def stm32_rom_bootloader(o: Observation) -> Finding | None:
    if o.rom is None:
        return None
    said = rom_probe.stm32_rom_waiting(o.rom, o.port or "PORT", o.module)
    return Finding(said.code, "problem", said.finding, said.why, said.next(), said.command,
                   port=o.port, exit_code=5, details=said.details)


@rule
def apollo3_secure_bootloader(o: Observation) -> Finding | None:
    if o.sbl is None:
        return None
    said = rom_probe.apollo3_sbl_waiting(o.sbl, o.port or "PORT", o.module)
    return Finding(said.code, "problem", said.finding, said.why, said.next(), said.command,
                   port=o.port, exit_code=5, details={"sbl": o.sbl})


@rule
def loopback(o: Observation) -> Finding | None:
    if not isinstance(o.identify_error, EchoingPort) and \
            (not isinstance(o.identify_error, NoResponse) or not o.loopback):
        return None
    return Finding("loopback", "problem", f"everything sent to {o.port} comes straight back",
                   "the adapter's TX is connected to its own RX — a loopback jumper left on its pins, or "
                   "both adapter wires on the same module pin — so the module hears nothing",
                   "Take the jumper off; wire adapter TX → module RX, adapter RX → module TX and GND to "
                   "GND, then check again:", _doctor_again(o), port=o.port, exit_code=5)


def _pin_advice() -> str:
    """Which module pins carry the port that both the firmware's AT console and the chip's
    ROM bootloader use (catalog data). On a RAK3172 that is UART2: RUI3 offers AT on UART1
    (PB6/PB7) too, but with BOOT0 high the ROM is silent there."""
    parts = [f"{m.name}: {m.rom_access['uart_pins']}" for m in _catalog.load().modules.values()
             if m.rom_access.get("uart_pins") and m.rom_access.get("at_port")]
    if not parts:
        return ""
    return ("; use the port the chip's ROM bootloader listens on too (" + ", ".join(parts)
            + "): with BOOT0 high, a RAK3172 is silent on its UART1 (PB6/PB7)")


@rule
def silent(o: Observation) -> Finding | None:
    if not isinstance(o.identify_error, NoResponse) or o.loopback or o.readable_text():
        return None
    bauds = ", ".join(map(str, o.bauds_tried)) or "every catalog rate"
    others = o.candidates
    where = (f" Other ports that may be the module: {', '.join(e.device for e in others)}."
             if others else "")
    rom = " (nor did an STM32 ROM bootloader answer its 0x7F)" if _may_have_stm32_rom(o) else ""
    return Finding("silent", "problem", f"nothing answers on {o.port} at {bauds} baud{rom}",
                   "no tool can update or even recognise a module it can't hear: it is not powered, not "
                   "wired to this port's TX/RX, or this is not its port (a wrong baud rate would give "
                   "garbage, not silence)",
                   "Check, in this order: the module is powered (3.3 V, its LED); adapter TX → module RX "
                   "and adapter RX → module TX (swapped wires are the commonest mistake), GND to GND"
                   f"{_pin_advice()}; BOOT0 is not held high; press the module's reset button.{where} "
                   "Then check again:", _doctor_again(o), port=o.port, exit_code=5,
                   details={"bauds": o.bauds_tried})


@rule
def garbage(o: Observation) -> Finding | None:
    if not isinstance(o.identify_error, GarbageReply) or o.device is not None:
        return None
    bauds = ", ".join(map(str, o.bauds_tried))
    return Finding("garbage", "problem",
                   f"{o.port} answers, but only with unreadable bytes at {bauds} baud (and at "
                   f"{', '.join(map(str, EXTRA_BAUDS))})",
                   "the module talks at a rate or framing no RAK firmware uses (RAK firmware talks 8N1; "
                   "an STM32 ROM bootloader 8E1 after a 0x7F), the line is noisy (no common GND, long "
                   "wires), or it is not a RAK module (an ESP8266 boot ROM talks at 74880)",
                   "Check the GND wire; if you set the module to another baud rate, give it:",
                   f"rakflash doctor --port {_q(o.port or 'PORT')} --baud RATE", port=o.port,
                   exit_code=5, details={"bauds": o.bauds_tried})


@rule
def not_a_rak_module(o: Observation) -> Finding | None:
    dev = o.device
    at_device = isinstance(o.identify_error, UnknownDevice) or (
        dev is not None and dev.mode == "app" and dev.module is None
        and not dev.app_version and not dev.hardware_model)
    text = o.readable_text() if dev is None and isinstance(o.identify_error, (NoResponse, GarbageReply)) \
        else None
    if not at_device and text is None:
        return None
    said = ("it answers AT with OK, but none of RUI3's questions (AT+VER=?, AT+HWMODEL=?)" if at_device
            else f"at {text[0]} baud it answers in text, but not as RAK firmware does: {text[1][:60]!r}")
    return Finding("not-a-rak-module", "problem", f"{o.port} is not a RAK module: {said}",
                   "rakflash updates RAK modules only; a cellular modem or an ESP AT firmware answers AT "
                   "with OK too",
                   "Check which port your RAK module is on:", "rakflash ports", port=o.port, exit_code=5,
                   details={"heard": text[1] if text else None})


@rule
def flooding(o: Observation) -> Finding | None:
    if not isinstance(o.identify_error, Flooding):
        return None
    m = o.identify_error.message
    sample = m[m.find("(it prints lines like"):] if "(it prints" in m else ""
    # The module, when known: --module, or the port's USB id; with --for the file tells it.
    entry = o.entry
    by_usb = _catalog.load().modules.get(entry.module) if entry is not None and entry.module else None
    module = o.module or (by_usb if o.image is None else None)
    name_it = ""
    if module is None and o.image is None:
        # Nothing here tells which module it is (a flooding firmware answers nothing): flash
        # takes it from the file, else from --module — said how to find, never a placeholder.
        keys = ", ".join(mod.key for mod in _catalog.load().modules.values()
                         if mod.dialect.get("boot") and mod.protocol not in DFU_PROTOCOLS)
        name_it = (f" If rakflash can't tell the module from your file, add --module and the model "
                   f"printed on the module ({keys}; 'rakflash modules' lists them).")
    return Finding("flooding", "problem",
                   f"the firmware on {o.port} prints without pause {sample}".strip()
                   + ", so it can't hear AT commands",
                   "AT+BOOT never gets through, so ordinary updates fail (the vendor tools say 'Failed to "
                   "enter bootload phase'); right after a reset the module still listens for a moment",
                   "Update it anyway: rakflash asks you to press the module's reset button and catches "
                   "that moment (add --reset-with rts or dtr if the adapter's RTS/DTR is wired to RESET)."
                   + name_it + " For good, add a pause at the start of setup(), e.g. delay(5000);",
                   _flash_command(o, module=module), port=o.port, exit_code=5,
                   details={"baud": o.identify_error.details.get("baud")})


@rule
def application_answers(o: Observation) -> Finding | None:
    dev = o.device
    if dev is None or dev.mode != "app" or dev.module is None:
        return None
    if not dev.module.dialect.get("boot"):
        # An Arduino sketch on a RAK4631: told by its USB id, no console to ask.
        return Finding("application", "ok",
                       f"{dev.module.name} runs its sketch (told by its USB id {dev.usb})"
                       + (f", serial number {dev.serial_number}" if dev.serial_number else ""),
                       "a sketch has no console, so its version can't be read; its bootloader is "
                       "entered with a 1200-baud touch, which 'rakflash flash' makes",
                       "To update it:" if o.image is None else "The package check is the other "
                       "finding for this port.", None if o.image is not None else _flash_command(o),
                       port=o.port)
    boot_cmd = dev.module.dialect["boot"][0]
    what = (f"{dev.module.name}{'' if dev.module_certain else ' (probably)'} runs {dev.app_version or 'an unknown version'}"
            f" (bootloader {dev.bootloader_version or 'not told by the application'})"
            + (f", serial number {dev.serial_number}" if dev.serial_number else "")
            + (f", on its own USB port ({dev.usb})" if dev.usb else f", at {dev.baud} baud"))
    if o.image is not None:
        return Finding("application", "ok", what, f"its application answers, so an update starts with "
                       f"{boot_cmd}, no buttons needed", "The firmware check is the other finding for this port.",
                       None, port=o.port)
    return Finding("application", "ok", what,
                   f"its application answers, so an update starts with {boot_cmd}, no buttons needed",
                   "To update it (doctor --for FILE checks a firmware first):", _flash_command(o),
                   port=o.port)


@rule
def rak4631_variant(o: Observation) -> Finding | None:
    dev = o.device
    if dev is None or not dev.variant or dev.module is None:
        return None
    arduino = dev.module.protocol == "legacy-dfu"
    port = _q(o.port or "PORT")
    if arduino:
        nxt = ("Update it with an Arduino package (adafruit-nrfutil dfu genpkg); or move it to RUI3 — "
               "RAK's two documented steps, RUI3's bootloader then a RUI3 application, in one "
               "guided command (afterwards it takes no Arduino uploads):")
        command = f"rakflash convert-to-rui3 {RUI3_BOOTLOADER_PACKAGE} RUI3_APP.zip --port {port}"
    else:
        nxt = ("Update it with a RUI3 package (nrfutil pkg generate, signed with RAK's key), not an "
               "Arduino one:")
        command = _flash_command(o) if o.image is None else None
    return Finding("rak4631-variant", "note",
                   f"{dev.module.name}: {dev.variant}" + (f", USB id {dev.usb}" if dev.usb else ""),
                   "the two RAK4631 bootloaders take different packages: RUI3's Nordic Secure DFU "
                   "takes signed Secure DFU packages, the Arduino (Adafruit) one legacy DFU packages; a "
                   "package for the other refuses ('Extended Error 0x07' from nrfutil) or, on the "
                   "Adafruit bootloader, erases the sketch first",
                   nxt, command if o.image is None or arduino else None, port=o.port,
                   details={"variant": dev.variant, "usb": dev.usb})


@rule
def uncommon_baud(o: Observation) -> Finding | None:
    dev = o.device
    in_catalog = dev is not None and dev.module is not None and dev.baud in dev.module.bauds
    if dev is None or dev.usb or dev.baud == 115200 or (in_catalog and o.baud == dev.baud):
        return None
    given = o.baud == dev.baud
    return Finding("baud-rate", "note", f"{o.port} answers at {dev.baud} baud, not the usual 115200",
                   "RAK's own tools and most guides assume 115200"
                   + ("" if in_catalog else f", and {dev.baud} is not a rate RAK firmware uses"),
                   ("Nothing to do if it was set so on purpose" if given else
                    f"rakflash finds it by trying each rate; give --baud {dev.baud} to skip the search")
                   + " (a RUI3 application goes back to 115200 with AT+BAUD=115200).",
                   None, port=o.port, details={"baud": dev.baud})


@rule
def module_uncertain(o: Observation) -> Finding | None:
    dev = o.device
    if dev is None or dev.module is None or dev.module_certain or o.module is not None:
        return None
    could_be = dev.could_be
    if len(could_be) > 1 and all(m.same_flash_as(could_be[0]) for m in could_be):
        # The RAK3172's RUI3 variants in the one bootloader they share.
        return Finding("module-uncertain", "note",
                       f"in its bootloader the module can't say which of "
                       f"{', '.join(m.name for m in could_be)} it is (one RUI3 bootloader serves them all)",
                       "they share the chip, flash map and bootloader, so the update finishes the same on "
                       "each; the firmware is what differs (each board's is built for its own radio and "
                       "pins), and its version string names the board it is for",
                       "Finish the update with the firmware for the board on the label; to name the board "
                       "to doctor:", f"rakflash doctor --port {_q(o.port or 'PORT')} --module "
                       f"{dev.module.key}", port=o.port, details={"candidates": [m.name for m in could_be]})
    alike = _modules_with(dev.module.family.split(" / ")[0])
    return Finding("module-uncertain", "note",
                   f"the firmware doesn't say which module it runs on ({alike}); doctor assumed "
                   f"{dev.module.name}",
                   "the modules differ in flash size and chip, and firmware for one does not run on the other",
                   "Name it to be sure:", f"rakflash doctor --port {_q(o.port or 'PORT')} --module "
                   f"{dev.module.key}", port=o.port)


@rule
def second_chip(o: Observation) -> Finding | None:
    """A module with a second chip (RAK11160's ESP8684): what rakflash does and can't do for it."""
    dev = o.device
    c = dev.module.companion if dev is not None and dev.module is not None else {}
    if not c:
        return None
    return Finding("second-chip", "note",
                   f"the {dev.module.name} also carries an {c['chip']} ({c['does']}) running {c['firmware']}",
                   f"{c['leaves'][0].upper()}{c['leaves'][1:]}; {c['cannot']}",
                   f"Nothing to do for an update. To talk to the {c['chip']}: {c['reach']} (rakflash "
                   f"never switches the port over).", None, port=o.port,
                   details={"chip": c["chip"], "firmware": c["firmware"]})


@rule
def another_boards_image(o: Observation) -> Finding | None:
    """The board (AT+HWMODEL=?) runs an image RUI3 builds for another board (AT+VER=?)."""
    dev = o.device
    if dev is None or dev.module is None or dev.mode != "app":
        return None
    built_for = _catalog.load().by_image_name(dev.app_version)
    if built_for is None or built_for.key == dev.module.key or built_for.key in dev.module.takes_images_of:
        return None
    return Finding("another-boards-image", "note",
                   f"the {dev.module.name} (AT+HWMODEL={dev.hardware_model}) runs {dev.app_version}, an "
                   f"image built for the {built_for.name}",
                   "RUI3 builds each board's image for its own radio and pins; rakflash refuses "
                   f"another board's image, so the next update wants {dev.module.name} firmware",
                   f"Update it with the {dev.module.name} firmware:", _flash_command(o), port=o.port,
                   details={"hardware_model": dev.hardware_model, "image_for": built_for.name})


@rule
def waits_in_bootloader(o: Observation) -> Finding | None:
    dev = o.device
    if dev is None or dev.mode != "bootloader":
        return None
    name = dev.module.name if dev.module else "the module"
    if dev.module is not None and not dev.module_certain and \
            all(m.same_flash_as(dev.module) for m in dev.could_be):
        name += " (or one of its RUI3 variants)"        # their one bootloader doesn't say which
    return Finding("in-bootloader", "action",
                   f"{name} waits in its bootloader {dev.bootloader_version or ''}".rstrip()
                   + ": its application does not run",
                   "an update was cut off (power, cable, Ctrl-C) or the bootloader was asked to stay "
                   "(AT+BOOT); the module is not dead, and the next serial update goes on from here",
                   "Finish the update (the same firmware as before, or any for this module):",
                   _flash_command(o), port=o.port)


# --- the image (--for FILE) --------------------------------------------------------------

@rule
def image_unusable(o: Observation) -> Finding | None:
    if o.image_error is None:
        return None
    e = o.image_error
    return Finding(e.name, "problem", f"{o.image_path}: {e.message}",
                   "rakflash checks a firmware file before it writes anything, and this one fails",
                   e.hint, f"rakflash inspect {_q(o.image_path or FIRMWARE)}", exit_code=e.exit_code)


@rule
def image_fits(o: Observation) -> Finding | None:
    if o.plan is None:
        return None
    p = o.plan
    app = p.module.app
    peek = (f"; doctor read bootloader {o.peeked} from the bootloader itself and started the "
            f"application again" if o.peeked else "")
    # What flash's plan notes (a downgrade, only the application part of a full .hex …), doctor
    # says too: "fits" alone hid a downgrade that flash then pointed out.
    noted = "".join(f"; note: {n}" for n in p.notes)
    downgrade = any(n.startswith("this is a downgrade") for n in p.notes)
    return Finding("image-fits", "note" if downgrade else "ok",
                   f"{o.image_path} fits: {p.app_version or 'an application'} ({len(p.payload):,} bytes) into "
                   f"{p.module.name}'s application region ({app.size:,} bytes at {app.start:#010x}){peek}"
                   f"{noted}",
                   f"nothing stands in the way: the bootloader takes it over {p.protocol.upper()}, about "
                   f"{p.estimate_seconds(p.device.baud):.0f} s "
                   + ("over its USB port" if p.device.usb else f"at {p.device.baud} baud"),
                   "Write it:", _flash_command(o), port=o.port, details={"notes": p.notes})


@rule
def image_already_there(o: Observation) -> Finding | None:
    if not isinstance(o.plan_error, AlreadyUpToDate):
        return None
    return Finding("already-up-to-date", "ok", o.plan_error.message,
                   "writing the same version again changes nothing",
                   "Nothing to do; to write it anyway:", _flash_command(o, "--force"), port=o.port)


# Why each refusal matters, by the error's name.
REFUSAL_WHY = {
    "bootloader-too-old": "the bootloader would stall part-way ('Start sending…' that never moves) and "
                          "leave the module without an application",
    "wrong-target": "firmware built for another chip or module does not run on this one",
    "image-too-large": "the bootloader can't place it: the application region is smaller",
    "touches-bootloader": "the serial bootloader writes only the application region; the rest of "
                          "this image would not be written",
    "not-supported": "rakflash has no serial update for this module yet",
    "package-mismatch": "a package for the other RAK4631 bootloader is refused by it ('Extended Error "
                        "0x07' from nrfutil) or, on the Adafruit bootloader, erases the sketch first",
}


@rule
def image_refused(o: Observation) -> Finding | None:
    e = o.plan_error
    if e is None or isinstance(e, AlreadyUpToDate):
        return None
    module = (o.device.module if o.device else None) or o.module
    command = None
    if e.name in ("bootloader-too-old", "touches-bootloader", "not-supported") and module is not None:
        command = _recovery_command(module, o.port)
    package = getattr(o.image, "package", None) if o.image is not None else None
    if e.name == "package-mismatch" and module is not None and module.protocol == "legacy-dfu" \
            and package is not None and package.family == "secure-dfu":
        # A RUI3 package for an Arduino RAK4631: RAK's conversion takes it as its second step.
        command = (f"rakflash convert-to-rui3 {RUI3_BOOTLOADER_PACKAGE} {_q(o.image_path or PACKAGE)} "
                   f"--port {_q(o.port or 'PORT')}")
    peek = (f" (doctor read bootloader {o.peeked} from the bootloader itself; the module "
            f"{'runs its application again' if o.peek_left_app else 'stays in its bootloader: press reset'})"
            if o.peeked else "")
    hint = (e.hint or "").replace("--port PORT", f"--port {_q(o.port or 'PORT')}")
    return Finding(e.name, "problem", e.message + peek, REFUSAL_WHY.get(e.name, "flash would refuse it"),
                   hint, command, port=o.port, exit_code=e.exit_code)


rule(lock.locked_port)      # a locked RUI3 AT port (flows/lock.py)


# ------------------------------------------------------------------ putting it together

def findings_for(o: Observation) -> list[Finding]:
    """Every rule's finding for ``o``, problems first (each tagged with its port)."""
    found = []
    for r in RULES:
        f = r(o)
        if f is not None:
            f.port = f.port or o.port
            found.append(f)
    e = o.plan_error
    if e is not None and not isinstance(e, AlreadyUpToDate) and o.image_path:
        _refusal_outranks(found, o.image_path, e.name,
                          (o.device.module if o.device is not None else None) or o.module)
    order = {"problem": 0, "action": 1, "ok": 2, "note": 3}
    return sorted(found, key=lambda f: order[f.level])


def _refusal_outranks(found: list[Finding], image_path: str, refusal: str,
                      module: Module | None = None) -> None:
    """Findings must not contradict each other: when ``flash`` would refuse the ``--for`` file
    (``refusal``: the refusing finding's code — a plan refusal, or the image's own error), no
    other finding may advise flashing it. Such a finding keeps what it found, points at the
    refusal (whose next step is the way on), and its command takes any other firmware."""
    if module is not None:
        other = _placeholder(module)
    else:
        other = PACKAGE if image_path.lower().endswith(".zip") else FIRMWARE
    for f in found:
        if f.code == refusal or not _flashes(f.command, image_path):
            continue
        f.command = " ".join(_q(other if w == image_path else w) for w in shlex.split(f.command or ""))
        f.next = (f"{f.next.rstrip(' :')}, but not with {os.path.basename(image_path)}: flash refuses it "
                  f"(the '{refusal}' finding says why, and its next step is the way on). With a "
                  f"firmware this module takes:")


def _flashes(command: str | None, image_path: str) -> bool:
    """Whether ``command`` is ``rakflash flash`` of ``image_path``."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return False
    return words[:2] == ["rakflash", "flash"] and image_path in words[2:]


def diagnose(port: str | None = None, *, image_path: str | None = None, module: Module | None = None,
             baud: int | None = None, budget: float = BUDGET, trace: TraceWriter | None = None,
             trace_for: Callable[[str], TraceWriter | None] | None = None,
             listing: list[PortEntry] | None = None) -> Report:
    """Examine ``port`` (or every port that may be a module) and apply the rules.

    Bounded: each port gets ``budget`` seconds, and ports are examined side by side.
    ``trace`` records the exchange (one port); ``trace_for(port)`` gives each port its own.
    """
    t0 = time.monotonic()
    listing = list_serial_ports() if listing is None else listing
    image, image_error = None, None
    if image_path is not None:
        try:
            image = images.load(image_path, module=module)
        except RakflashError as exc:
            image_error = exc
    findings: list[Finding] = []
    if image_error is not None:
        # The image's own finding only: the port rules have their observations below.
        findings += [f for f in findings_for(Observation(None, listing=listing, image_path=image_path,
                                                         image_error=image_error))
                     if f.code == image_error.name]
    ports = [port] if port is not None else [e.device for e in module_ports(listing)]
    if not ports:
        from ..usb_devices import present
        system = platform.system()
        findings += findings_for(Observation(None, listing=listing, image_path=image_path, system=system,
                                             usb_present=present(system)))
        return Report(findings, [], time.monotonic() - t0, budget)
    seen: dict[str, Observation] = {}
    traces = {p: trace_for(p) for p in ports} if trace_for is not None else {}   # opened here, not in a thread

    def look(p: str) -> None:
        seen[p] = examine(p, listing=listing, module=module, baud=baud, image=image,
                          image_path=image_path, budget=budget, trace=traces.get(p, trace))

    threads = [threading.Thread(target=look, args=(p,), daemon=True, name=f"doctor {p}") for p in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(budget + 5)
    for p in ports:
        if p in seen:
            findings += findings_for(seen[p])
    if image_error is not None and image_path:
        _refusal_outranks(findings, image_path, image_error.name)
    devices = [seen[p].device for p in ports if p in seen and seen[p].device is not None]
    return Report(findings, devices, time.monotonic() - t0, budget)
