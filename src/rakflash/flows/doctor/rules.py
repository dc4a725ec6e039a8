"""Doctor's rule book: what each observation means, why it matters, and what to type next.

Each finding is one function here, taking an :class:`~.observe.Observation` and returning a
:class:`~.report.Finding` when it applies (else None), registered in :data:`RULES` by
``@rule``. Rules run in the order they are written, and findings of one level are reported
in that order (problems first, then actions, ok, notes: :func:`~.run.findings_for`), so a
new rule goes where its finding should read. What is data stays data: each of ``flash``'s
refusals of a ``--for`` file — why it matters, the command past it — is a row of
:data:`REFUSALS`, and what to do about the computer itself (an adapter's driver, a program
holding the port, permission to open it) is in ``host_advice.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from shlex import quote
from typing import Callable

from ... import catalog as _catalog
from ...catalog import Module
from ...errors import (
    AlreadyUpToDate,
    EchoingPort,
    Flooding,
    GarbageReply,
    NoResponse,
    PortBusy,
    PortLocked,
    PortNotFound,
    PortPermission,
    UnknownDevice,
)
from .. import rom_probe
from ..discovery import module_ports
from ..lock import LOCKED
from ..transfers.legacy_dfu import RUI3_BOOTLOADER_PACKAGE
from .commands import DFU_PROTOCOLS, FIRMWARE, PACKAGE, doctor_again, flash_command, recovery_command
from .host_advice import DRIVERS, KNOWN_HOLDERS, driver_advice, permission_advice
from .observe import EXTRA_BAUDS, Observation
from .report import Finding

Rule = Callable[[Observation], "Finding | None"]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    """Register ``fn`` as a doctor rule (rules run in the order they are written)."""
    RULES.append(fn)
    return fn


def _modules_with(text: str) -> str:
    mods = [m.name for m in _catalog.load().modules.values() if text in m.family]
    return " or ".join(mods)


# --- the ports as a whole (no --port given) ---------------------------------------

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
    assert usb is not None          # missing holds only ids the catalog knows
    drv = DRIVERS.get((vid, pid))
    what = f"{drv['name'] if drv else usb.name} ({vid:04X}:{pid:04X})"
    text = driver_advice(drv, o.system)
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
                   "name it:", f"rakflash doctor --port {quote(o.listing[0].device)}", exit_code=4)


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
                       f"Look at {alt.device} instead:", f"rakflash doctor --port {quote(alt.device)}",
                       port=o.port, exit_code=4)
    return Finding("port-not-found", "problem", f"{o.port} does not exist",
                   "nothing is plugged in under that name: a typo, or the cable is out",
                   "Check the cable and list the ports there are:", "rakflash ports",
                   port=o.port, exit_code=4)


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
                       doctor_again(o), port=o.port, exit_code=4)
    names = ", ".join(f"{name} (pid {pid})" for pid, name in o.holders)
    pid, name = o.holders[0]
    entry = o.entry
    if name in KNOWN_HOLDERS:
        text, command = KNOWN_HOLDERS[name]
        command = command.format(vid=f"{entry.vid:04x}" if entry and entry.vid is not None else "VID",
                                 pid=f"{entry.pid:04x}" if entry and entry.pid is not None else "PID")
    else:
        text = f"Close {name} (pid {pid}) — a serial monitor, IDE or another rakflash — then check again:"
        command = doctor_again(o)
    return Finding("port-busy", "problem", f"{o.port} is open in {names}",
                   "two programs on one port each get part of the bytes, so every tool seems to get "
                   "garbage or nothing", text, command, port=o.port, exit_code=4,
                   details={"programs": [{"pid": p, "name": n} for p, n in o.holders]})


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
                   f"rakflash info --port {quote(o.port or 'PORT')}", port=o.port, exit_code=5)


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
                   "GND, then check again:", doctor_again(o), port=o.port, exit_code=5)


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
    rom = " (nor did an STM32 ROM bootloader answer its 0x7F)" if o.may_have_stm32_rom else ""
    return Finding("silent", "problem", f"nothing answers on {o.port} at {bauds} baud{rom}",
                   "no tool can update or even recognise a module it can't hear: it is not powered, not "
                   "wired to this port's TX/RX, or this is not its port (a wrong baud rate would give "
                   "garbage, not silence)",
                   "Check, in this order: the module is powered (3.3 V, its LED); adapter TX → module RX "
                   "and adapter RX → module TX (swapped wires are the commonest mistake), GND to GND"
                   f"{_pin_advice()}; BOOT0 is not held high; press the module's reset button.{where} "
                   "Then check again:", doctor_again(o), port=o.port, exit_code=5,
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
                   f"rakflash doctor --port {quote(o.port or 'PORT')} --baud RATE", port=o.port,
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
    said = ("it answers AT with OK, but none of RUI3's questions (AT+VER=?, AT+HWMODEL=?)"
            if at_device or text is None
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
                   flash_command(o, module=module), port=o.port, exit_code=5,
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
                       "finding for this port.", None if o.image is not None else flash_command(o),
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
                   "To update it (doctor --for FILE checks a firmware first):", flash_command(o),
                   port=o.port)


@rule
def rak4631_variant(o: Observation) -> Finding | None:
    dev = o.device
    if dev is None or not dev.variant or dev.module is None:
        return None
    arduino = dev.module.protocol == "legacy-dfu"
    command: str | None
    port = quote(o.port or "PORT")
    if arduino:
        nxt = ("Update it with an Arduino package (adafruit-nrfutil dfu genpkg); or move it to RUI3 — "
               "RAK's two documented steps, RUI3's bootloader then a RUI3 application, in one "
               "guided command (afterwards it takes no Arduino uploads):")
        command = f"rakflash convert-to-rui3 {RUI3_BOOTLOADER_PACKAGE} RUI3_APP.zip --port {port}"
    else:
        nxt = ("Update it with a RUI3 package (nrfutil pkg generate, signed with RAK's key), not an "
               "Arduino one:")
        command = flash_command(o) if o.image is None else None
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
                       "to doctor:", f"rakflash doctor --port {quote(o.port or 'PORT')} --module "
                       f"{dev.module.key}", port=o.port, details={"candidates": [m.name for m in could_be]})
    alike = _modules_with(dev.module.family.split(" / ")[0])
    return Finding("module-uncertain", "note",
                   f"the firmware doesn't say which module it runs on ({alike}); doctor assumed "
                   f"{dev.module.name}",
                   "the modules differ in flash size and chip, and firmware for one does not run on the other",
                   "Name it to be sure:", f"rakflash doctor --port {quote(o.port or 'PORT')} --module "
                   f"{dev.module.key}", port=o.port)


@rule
def second_chip(o: Observation) -> Finding | None:
    """A module with a second chip (RAK11160's ESP8684): what rakflash does and can't do for it."""
    module = o.device.module if o.device is not None else None
    c = module.companion if module is not None else {}
    if module is None or not c:
        return None
    return Finding("second-chip", "note",
                   f"the {module.name} also carries an {c['chip']} ({c['does']}) running {c['firmware']}",
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
                   f"Update it with the {dev.module.name} firmware:", flash_command(o), port=o.port,
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
                   flash_command(o), port=o.port)


# --- the image (--for FILE) --------------------------------------------------------------

@rule
def image_unusable(o: Observation) -> Finding | None:
    if o.image_error is None:
        return None
    e = o.image_error
    return Finding(e.name, "problem", f"{o.image_path}: {e.message}",
                   "rakflash checks a firmware file before it writes anything, and this one fails",
                   e.hint, f"rakflash inspect {quote(o.image_path or FIRMWARE)}", exit_code=e.exit_code)


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
                   "Write it:", flash_command(o), port=o.port, details={"notes": p.notes})


@rule
def image_already_there(o: Observation) -> Finding | None:
    if not isinstance(o.plan_error, AlreadyUpToDate):
        return None
    return Finding("already-up-to-date", "ok", o.plan_error.message,
                   "writing the same version again changes nothing",
                   "Nothing to do; to write it anyway:", flash_command(o, "--force"), port=o.port)


def _recover(o: Observation, module: Module) -> str | None:
    return recovery_command(module, o.port)


def _convert_to_rui3(o: Observation, module: Module) -> str | None:
    """A RUI3 package for an Arduino RAK4631: RAK's conversion takes it as its second step."""
    package = getattr(o.image, "package", None) if o.image is not None else None
    if module.protocol == "legacy-dfu" and package is not None and package.family == "secure-dfu":
        return (f"rakflash convert-to-rui3 {RUI3_BOOTLOADER_PACKAGE} {quote(o.image_path or PACKAGE)} "
                f"--port {quote(o.port or 'PORT')}")
    return None


@dataclass(frozen=True)
class Refusal:
    """What doctor says about one of ``flash``'s refusals of the ``--for`` file."""

    why: str                 # why the refusal matters
    way_on: Callable[[Observation, Module], str | None] | None = None   # the command past it, if any


# Each refusal, by the error's name: adding one is a row here.
REFUSALS: dict[str, Refusal] = {
    "bootloader-too-old": Refusal("the bootloader would stall part-way ('Start sending…' that never moves) "
                                  "and leave the module without an application", _recover),
    "wrong-target": Refusal("firmware built for another chip or module does not run on this one"),
    "image-too-large": Refusal("the bootloader can't place it: the application region is smaller"),
    "touches-bootloader": Refusal("the serial bootloader writes only the application region; the rest of "
                                  "this image would not be written", _recover),
    "not-supported": Refusal("rakflash has no serial update for this module yet", _recover),
    "package-mismatch": Refusal("a package for the other RAK4631 bootloader is refused by it ('Extended "
                                "Error 0x07' from nrfutil) or, on the Adafruit bootloader, erases the "
                                "sketch first", _convert_to_rui3),
}
OTHER_REFUSAL = Refusal("flash would refuse it")


@rule
def image_refused(o: Observation) -> Finding | None:
    e = o.plan_error
    if e is None or isinstance(e, AlreadyUpToDate):
        return None
    refusal = REFUSALS.get(e.name, OTHER_REFUSAL)
    module = (o.device.module if o.device else None) or o.module
    command = refusal.way_on(o, module) if refusal.way_on is not None and module is not None else None
    peek = (f" (doctor read bootloader {o.peeked} from the bootloader itself; the module "
            f"{'runs its application again' if o.peek_left_app else 'stays in its bootloader: press reset'})"
            if o.peeked else "")
    hint = (e.hint or "").replace("--port PORT", f"--port {quote(o.port or 'PORT')}")
    return Finding(e.name, "problem", e.message + peek, refusal.why, hint, command, port=o.port,
                   exit_code=e.exit_code)


@rule
def locked_port(o: Observation) -> Finding | None:
    """A locked RUI3 AT port (AT+LOCK): identification ended in PortLocked."""
    if not isinstance(o.identify_error, PortLocked):
        return None
    port = o.port or "PORT"
    return Finding(
        "port-locked", "problem", f"the AT port on {port} is locked (AT+LOCK): the module answers "
        f"every command with {LOCKED}",
        "nothing can be read from it or sent to its bootloader until the port's password opens it, "
        "so an update or a check of its keys would stop here",
        "Give the password it was locked with (AT+PWORD): rakflash opens the port, does its job and "
        "locks it again (in a terminal it asks for it without showing it):",
        f"rakflash info --port {quote(port)}{_at_rate(o.identify_error)} --password PASSWORD", port=o.port,
        exit_code=5)


def _at_rate(e: PortLocked) -> str:
    """``--baud RATE`` where the locked port answered at another rate than the module's default."""
    baud = e.details.get("baud")
    return f" --baud {baud}" if isinstance(baud, int) and baud != 115200 else ""
