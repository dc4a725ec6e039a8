"""Identify what is on the other end of a serial port.

The steps, at each candidate baud rate (the given one first, then the
catalog's):

1. Listen briefly. A port that keeps streaming data is *flooding*: a sketch
   prints without pause and commands can't get through. We still try ``AT``
   once amid the stream, then give up with :class:`~rakflash.errors.Flooding`.
2. Send ``AT``. ``OK`` means a RUI3 application; ``AT not support.`` the RUI
   bootloader; ``ERROR: n`` a RUI v3 application.
3. If ``AT`` got nothing, send ``at+version``: a RUI v3 application answers
   ``OK V3…``, a bootloader its version line.
4. Ask the dialect's questions (versions, model, serial number; on RUI v3
   the board, which only firmware that answers ``at+get_config=device:status``
   tells).

When nothing answered AT readably at any baud, the chip's own bootloader
may be what is there (a boot pin held at reset): an STM32 ROM bootloader's
handshake and the Apollo3 secure bootloader's HELLO are tried
(:mod:`~rakflash.flows.rom_probe`), and one that answers ends in
:class:`~rakflash.errors.InRomBootloader` or
:class:`~rakflash.errors.InSecureBootloader`, with how to leave it. Only then,
so a module that answers is identified no slower. Otherwise nothing readable at
any baud ends in :class:`~rakflash.errors.NoResponse`, only unreadable bytes in
:class:`~rakflash.errors.GarbageReply`. A port that
only echoes what it is sent is :class:`~rakflash.errors.EchoingPort`; a
device that answers ``OK`` to every line but none of the questions is
:class:`~rakflash.errors.UnknownDevice`; a RUI3 application whose AT port is locked
(``COMMAND_LOCKED`` to AT, ``AT+LOCK=?`` says locked) is :class:`~rakflash.errors.PortLocked`.

When the answers fit several modules (RUI v3 firmware that doesn't name its
board, a bootloader whose version names no module), the
:class:`DeviceInfo` says so: ``module_certain`` is False and ``candidates``
lists every module it could be. The plan applies the rules of each and never
writes on a guess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from .. import catalog as _catalog
from ..at import AtConsole, AtReply, looks_like_text
from ..catalog import Catalog, Module
from ..errors import EchoingPort, Flooding, GarbageReply, InRomBootloader, InSecureBootloader, NoResponse, UnknownDevice
from ..events import nowhere
from ..link import Link
from . import lock, rom_probe


@dataclass
class DeviceInfo:
    """What rakflash found on a port."""

    port: str
    baud: int
    mode: str                              # "app" or "bootloader"
    dialect: str                           # catalog dialect key of the console that answered
    module: Module | None = None
    module_certain: bool = True
    app_version: str | None = None
    bootloader_version: str | None = None
    hardware_model: str | None = None
    hardware_id: str | None = None
    serial_number: str | None = None
    notes: list[str] = field(default_factory=list)
    caught: bool = False                   # brought into the bootloader by a reset-window catch
    variant: str | None = None             # which bootloader family, where a module has two (RAK4631)
    usb: str | None = None                 # the port's USB id, when the port is a module's own USB
    candidates: list[Module] = field(default_factory=list)   # what it could be, when not certain
    chip: dict | None = None               # an ESP chip's own answers (flows/esp_chip.py)

    @property
    def could_be(self) -> list[Module]:
        """Every module this device could be: the one it is, or each candidate when uncertain."""
        if self.module_certain or not self.candidates:
            return [self.module] if self.module is not None else []
        return list(self.candidates)

    def to_dict(self) -> dict:
        return {
            "port": self.port, "baud": self.baud,
            "module": self.module.name if self.module else None,
            "module_key": self.module.key if self.module else None,
            "module_certain": self.module_certain,
            "candidates": [m.name for m in self.could_be] if not self.module_certain else [],
            "mode": self.mode, "dialect": self.dialect,
            "app_version": self.app_version, "bootloader_version": self.bootloader_version,
            "hardware_model": self.hardware_model, "hardware_id": self.hardware_id,
            "serial_number": self.serial_number, "variant": self.variant, "usb": self.usb,
            "notes": self.notes, "error": None,
            "companion": dict(self.module.companion) if self.module and self.module.companion else None,
            "chip": self.chip,
        }


@dataclass
class Timing:
    """How long identification waits at each step (seconds)."""

    listen: float = 0.12          # unasked data before the first probe
    flood_confirm: float = 0.25   # more listening once data streams in
    probe: float = 0.35           # reply to a probe command
    query: float = 1.0            # reply to an information query
    rom_window: float = 0.8       # an STM32 ROM bootloader's answer to 0x7F (two sent, half apart)
    sbl_hello: float = 1.0        # the Apollo3 secure bootloader's STATUS to HELLO (asked twice)


CHIP_BOOTLOADERS = ("stm32-rom", "apollo3-sbl", "esp-rom")


def candidate_bauds(link: Link, module: Module | None, cat: Catalog, baud: int | None) -> list[int]:
    order: list[int] = []
    pool = list(module.bauds) if module else [b for m in cat.modules.values() for b in m.bauds]
    for b in [baud or link.baud, *pool]:
        if b not in order:
            order.append(b)
    return order


def identify(link: Link, *, module: Module | None = None, baud: int | None = None,
             scan: bool = True, timing: Timing | None = None, cat: Catalog | None = None,
             chip_bootloaders: tuple[str, ...] = CHIP_BOOTLOADERS, emit=None) -> DeviceInfo:
    """Find out what answers on ``link``; leaves the link at the baud that worked.

    ``chip_bootloaders``: which chip bootloaders to ask for when nothing answered AT readably
    (with ``scan`` only: a single-rate identification is a flow's follow-up, whose module
    and state it already knows). ``emit``: where an ESP chip's identification says what the
    person must do (hold GPIO0 and reset, where no line resets it).
    """
    cat = cat or _catalog.load()
    timing = timing or Timing()
    from . import esp_chip
    if (module is not None and module.esp is not None) or (module is None and esp_chip.port_module(link)):
        # Asked in its ROM download mode; a person is asked to hold GPIO0 only where someone can
        # be told (emit), else the named error says so at once.
        return DeviceInfo(**esp_chip.ask(link, module, emit=emit or nowhere,
                                         window=esp_chip.PERSON_WINDOW if emit is not None else 0.0))
    entry = _port_entry(link)
    usb = _native_usb(entry, cat)
    if usb is not None and not usb[0].dialect.get("probe"):
        return _by_usb_id(link, *usb)          # no console to ask (an Arduino sketch, its bootloader)
    bauds = candidate_bauds(link, module, cat, baud) if scan else [baud or link.baud]
    garbage_at: list[int] = []
    readable: tuple[int, bytes] | None = None      # a stream that reads as text at its rate
    unreadable: tuple[int, bytes] | None = None    # a stream heard only as garbage
    unheard: list[int] = []                        # rates where nothing streamed in the listen
    for b in bauds:
        link.note(f"identify at {b} baud")
        unasked = _listen_at(link, b, timing)
        if len(unasked) >= 32:
            if looks_like_text(unasked):
                readable = (b, unasked)
                break      # a readable flood at this baud: other bauds won't help
            unreadable = unreadable or (b, unasked)
            continue
        unheard.append(b)
        info = _probe(link, b, module, cat, timing)
        if info == "garbage":
            garbage_at.append(b)
        elif info is not None:
            if usb is not None and info.module is not None and info.module.key == usb[0].key:
                _note_variant(info, *usb)
            return info
    if unreadable is not None and readable is None:
        # Something streams, unreadable wherever it was heard: the rate it reads at may be one
        # whose listen came up short (a busy host). Listen there once more before saying which.
        for b in unheard:
            unasked = _listen_at(link, b, timing)
            if len(unasked) >= 32 and looks_like_text(unasked):
                readable = (b, unasked)
                break
    heard = readable or unreadable
    if heard is not None:
        b, sample = heard
        lines = sample.decode("latin-1", "replace").splitlines()
        whole = lines[1:-1] if len(lines) > 2 else lines   # the first and last are likely cut
        # The latest clean line to quote: bytes framed at the rate before can start the sample,
        # and a line end among them cuts its first lines short.
        clean = [ln.strip() for ln in whole if ln.strip() and ln.strip().isascii() and ln.strip().isprintable()]
        quote = clean[-1] if clean else next(
            (ln.strip() for ln in reversed(whole) if ln.strip() and looks_like_text(ln.encode("latin-1"))), "")
        # The baud is the stream's only when it reads there; an unreadable one names none.
        raise Flooding(
            f"{link.port_name} streams data without pause and does not answer AT"
            + (f" (it prints lines like {quote[:60]!r})" if quote else ""),
            baud=b if readable else None)
    if scan:
        _name_a_chip_bootloader(link, module, entry, baud or bauds[0], chip_bootloaders, timing)
        if "esp-rom" in chip_bootloaders and module is None and not garbage_at:
            # An ESP chip waiting in its ROM download mode (GPIO0 held at reset) answers no AT
            # but a SYNC: then it is asked there.
            if link.baud != esp_chip.ROM_BAUD:
                link.baud = esp_chip.ROM_BAUD
            if esp_chip.answers_sync(link):
                return DeviceInfo(**esp_chip.ask(link, None, emit=emit or nowhere, window=0.0))
    if garbage_at:
        raise GarbageReply(f"{link.port_name} answers with unreadable bytes at "
                           f"{', '.join(map(str, garbage_at))} baud", bauds=garbage_at)
    raise NoResponse(f"nothing answers on {link.port_name} at "
                     f"{', '.join(map(str, bauds))} baud", bauds=bauds)


VARIANTS = {"nordic-dfu": "RUI3 (Nordic Secure DFU bootloader)",
            "legacy-dfu": "Arduino (Adafruit nRF52 bootloader)"}


def _port_entry(link: Link):
    """The port as the OS lists it (its USB ids), or None."""
    from ..ports import port_entry
    try:
        return port_entry(link.port_name)
    except Exception:        # listing ports must never stop identification
        return None


def _native_usb(entry, cat: Catalog):
    """(module, port entry) when the port is a module's own native USB (RAK4631), else None."""
    if entry is None or entry.module is None or entry.module not in cat.modules:
        return None
    return cat.modules[entry.module], entry


def _name_a_chip_bootloader(link: Link, module: Module | None, entry, baud: int,
                            which: tuple[str, ...], timing: Timing) -> None:
    """Nothing answered AT readably: raise the named error if the chip's own bootloader answers.

    At ``baud`` (the asked rate, else the first tried): an STM32 ROM already in sync
    from an earlier session (a recovery) talks at the rate it measured then; one not
    yet in sync measures it from the 0x7F. Asked after the AT probes, a ROM not yet
    in sync may have measured its rate from their bytes and stay silent: identification
    then ends as before (``doctor`` asks it first, and names it).
    """
    if "stm32-rom" in which and rom_probe.may_have_stm32_rom(module, entry):
        link.note("asking for an STM32 ROM bootloader (nothing answered AT readably)")
        if link.baud != baud:
            link.baud = baud
        rom = rom_probe.stm32_rom(link, timing.rom_window)
        if rom is not None:
            said = rom_probe.stm32_rom_waiting(rom, link.port_name, module)
            raise InRomBootloader(f"{said.finding}: {said.why}", hint=said.hint(),
                                  command=said.command, **said.details)
    if "apollo3-sbl" in which and rom_probe.may_have_apollo3_sbl(module, entry):
        link.note("asking for the Apollo3 secure bootloader (nothing answered AT readably)")
        status = rom_probe.apollo3_sbl(link, baud, timing.sbl_hello)
        if status is not None:
            said = rom_probe.apollo3_sbl_waiting(status, link.port_name, module)
            raise InSecureBootloader(f"{said.finding}: {said.why}", hint=said.hint(),
                                     command=said.command, **said.details)


def _note_variant(info: DeviceInfo, module: Module, entry) -> None:
    info.variant = VARIANTS.get(module.protocol)
    info.usb = f"{entry.vid:04X}:{entry.pid:04X}"
    if not info.serial_number:
        info.serial_number = entry.serial_number


def _by_usb_id(link: Link, module: Module, entry) -> DeviceInfo:
    """A module told by its USB id alone: nothing is sent to a firmware that has no console."""
    mode = entry.mode or "app"
    dialect = module.dialect.key if mode == "app" else module.boot_dialect.key
    info = DeviceInfo(link.port_name, link.baud, mode, dialect, module=module,
                      serial_number=entry.serial_number)
    _note_variant(info, module, entry)
    what = "its sketch" if mode == "app" else "its bootloader"
    info.notes.append(f"told by its USB id {info.usb} ({entry.description or 'no product string'}): "
                      f"{module.name} running {what}"
                      + ("; an Arduino sketch has no console, so its version can't be read"
                         if mode == "app" else "; 'rakflash flash' goes on from there"))
    return info


def _listen_at(link: Link, baud: int, timing: Timing) -> bytes:
    """:func:`_listen` at ``baud``. What waits in the buffers when the rate changes was framed at
    the previous one, so it is dropped first: read now, a flood heard there would look readable here."""
    if link.baud != baud:
        link.baud = baud
        link.discard_input()
    return _listen(link, timing)


def _listen(link: Link, timing: Timing) -> bytes:
    """Data that arrives without asking; keeps listening while it streams."""
    first = link.read(4096, timing.listen)
    if len(first) < 32:
        link.discard_input()
        return first
    more = link.read(65536, timing.flood_confirm)
    if len(more) < 16:
        return b""       # a burst at reset, not a stream
    data = first + more
    # One try at AT amid the stream: a chatty but attentive app still answers.
    link.write(b"AT\r\n")
    end = time.monotonic() + timing.probe
    while time.monotonic() < end:
        line = link.read_line(end - time.monotonic())
        if line is not None and line.strip() in (b"OK", b"AT not support."):
            return b""   # it answers; treat as a normal console
    return data


def _probe(link: Link, baud: int, module: Module | None, cat: Catalog,
           timing: Timing) -> DeviceInfo | Literal["garbage"] | None:
    """Identify at one baud: a DeviceInfo, "garbage", or None for silence."""
    rui3 = cat.dialects["rui3"]
    boot = cat.dialects["rui-boot"]
    v3 = cat.dialects["rui-v3"]
    # An empty line first ends whatever half line (noise, an earlier wrong-baud
    # attempt) sits in the device's line buffer, so the probe arrives clean.
    link.write(b"\r\n")
    _settle(link)
    reply = AtConsole(link, rui3).command(rui3["probe"], timing.probe)
    abort = _transfer_session_abort(reply.lines)
    if abort:
        # A bootloader still in the transfer session of an update cut off
        # mid-way: end that session and it returns to its console.
        link.write(abort)
        _settle(link, cap=1.0)
        link.write(b"\r\n")
        _settle(link)
        reply = AtConsole(link, rui3).command(rui3["probe"], timing.probe)
    lines = reply.lines
    if lock.says_locked(lines) and lock.lock_state(link, timing.query) == "locked":
        raise lock.locked_error(link.port_name, link.baud)      # a RUI3 application whose AT port is locked
    if reply.ok or reply.status == "error":
        return _rui3_app(link, baud, module, cat, timing)
    if boot["unsupported"] in lines or boot["banner"] in lines:
        return _bootloader(link, baud, module, cat, timing)
    if any(ln.startswith(v3["error_prefix"]) for ln in lines):
        return _v3_app(link, baud, module, cat, timing)
    if lines and not all(looks_like_text(ln.encode("latin-1")) for ln in lines):
        return "garbage"
    # Silence or an unknown line: ask the RUI v3 / bootloader way.
    first = lines
    reply = AtConsole(link, v3).command(v3["probe"], timing.probe)
    if any(ln in rui3["errors"] for ln in reply.lines):
        # Only a RUI3 application answers an unknown command with its error words
        # (its answer to AT was damaged on the line, or came late).
        return _rui3_app(link, baud, module, cat, timing)
    if reply.ok and not reply.value:
        # A bare OK is no RUI v3 answer (that is 'OK V3.0.0.14.H'): it is the late
        # answer to AT of a RUI3 application on a slow line. Ask AT again, patiently.
        if AtConsole(link, rui3).command(rui3["probe"], timing.query).ok:
            return _rui3_app(link, baud, module, cat, timing)
    if reply.ok:
        return _v3_app(link, baud, module, cat, timing, version_reply=reply)
    if _only_echo(first, rui3["probe"]) and _only_echo(reply.lines, v3["probe"]):
        raise EchoingPort(f"{link.port_name} sends back every line it is sent ({rui3['probe']!r}, "
                          f"{v3['probe']!r}) and nothing else answers")
    text_lines = [ln for ln in reply.lines if ln and looks_like_text(ln.encode("latin-1"))]
    if any(ln == boot["unsupported"] for ln in text_lines):
        return _bootloader(link, baud, module, cat, timing)
    versions = [ln for ln in text_lines if ln != boot["banner"]]
    if versions and _module_for_bootloader(versions[0], module, cat)[0]:
        return _bootloader(link, baud, module, cat, timing, version=versions[0])
    if reply.lines and not text_lines:
        return "garbage"
    return None


def _only_echo(lines: list[str], command: str) -> bool:
    """The answer to ``command`` was the command itself and nothing else."""
    return bool(lines) and all(ln.strip() == command for ln in lines)


def _transfer_session_abort(lines: list[str]) -> bytes | None:
    """What ends the transfer session the probe's answer reveals, if it reveals one.

    Only 'C's: a YMODEM receiver asking for a file (CAN CAN ends it). An AMOTA
    reply (invalid packet length): the RAK11720's packet loop (RESET ends it).
    """
    from ..protocols import amota, ymodem
    text = "".join(lines)
    if text and set(text) == {"C"}:
        return ymodem.ABORT
    if amota.looks_like_reply(text.encode("latin-1")):
        return amota.ABORT
    return None


def _settle(link: Link, cap: float = 0.3) -> None:
    """Drop input until the line has been quiet for ~40 byte times (at least 30 ms)."""
    quiet = max(0.03, 400 / link.baud)
    end = time.monotonic() + cap
    while time.monotonic() < end and link.read_available(quiet):
        pass


def _rui3_app(link: Link, baud: int, module: Module | None, cat: Catalog, timing: Timing) -> DeviceInfo:
    d = cat.dialects["rui3"]
    con = AtConsole(link, d)
    ask = lambda key: con.value(d[key], timing.query)  # noqa: E731
    app_version = ask("app_version")
    if app_version is None:
        _refuse_a_yes_man(link, con, d, timing)
    info = DeviceInfo(link.port_name, baud, "app", "rui3", app_version=app_version,
                      bootloader_version=ask("bootloader_version"),
                      hardware_model=ask("hardware_model"), hardware_id=ask("hardware_id"),
                      serial_number=ask("serial_number"))
    if not any((app_version, info.bootloader_version, info.hardware_model, info.hardware_id,
                info.serial_number)):
        raise UnknownDevice(
            f"{link.port_name} answers AT with OK, but none of RUI3's questions ({d['app_version']}, "
            f"{d['hardware_model']}, {d['serial_number']}): it is not a module rakflash knows "
            f"(an AT modem?)",
            hint="Check that this is the module's port ('rakflash ports' lists them); a RAK module "
                 "answers AT+VER=? (RUI3) or at+version (RUI v3) with its firmware version.")
    detected = _module_by_name(cat, "rui3", info.hardware_model, app_version)
    info.module = _reconcile(info, module, detected, "rui3")
    _note_another_variants_image(info, cat)
    _note_companion(info)
    if info.module is None:
        info.notes.append(f"unknown RUI3 hardware model {info.hardware_model!r}" if info.hardware_model
                          else f"the device does not tell its hardware model ({d['hardware_model']})")
    return info


def _note_another_variants_image(info: DeviceInfo, cat: Catalog) -> None:
    """The board (AT+HWMODEL=?, stored once and kept across updates) runs an image RUI3 builds for
    another board (AT+VER=?): say so, and which one, since its next update should be its own."""
    built_for = cat.by_image_name(info.app_version)
    if info.module is None or built_for is None or built_for.key == info.module.key:
        return
    how = ("RUI3 itself builds that image for this board too"
           if built_for.key in info.module.takes_images_of else
           f"its next update should be {info.module.name} firmware")
    info.notes.append(f"it runs {info.app_version}, an image built for the {built_for.name}, on a "
                      f"{info.module.name} (AT+HWMODEL={info.hardware_model}): {how}")


def _note_companion(info: DeviceInfo) -> None:
    """A second chip on the module (RAK11160's ESP8684): what it is, and what rakflash does with it."""
    c = info.module.companion if info.module is not None else {}
    if c and info.module is not None:
        info.notes.append(companion_words(info.module))


def companion_words(module: Module) -> str:
    """One sentence on a module's second chip: what it runs, how it is reached, what rakflash does."""
    c = module.companion
    return (f"the {module.name} also carries an {c['chip']} ({c['does']}) running {c['firmware']} "
            f"({c['reach']}); {c['leaves']}; {c['cannot']}")


# A command no module knows: a RUI3 application answers it with AT_COMMAND_NOT_FOUND.
NONSENSE = "AT+RAKFLASH_NO_SUCH_COMMAND"


def _refuse_a_yes_man(link: Link, con: AtConsole, d, timing: Timing) -> None:
    """A device that said OK to ``AT`` but did not answer the version query: if it says
    OK to a command no module knows too, it answers OK to anything — not a RAK module."""
    if con.command(NONSENSE, timing.probe).ok:
        raise UnknownDevice(
            f"{link.port_name} answers OK to every line, even to {NONSENSE!r}, which no module "
            f"knows, but does not answer {d['app_version']}: it is not a module rakflash knows "
            f"(another AT device, a modem?)",
            hint="Check that this is the module's port ('rakflash ports' lists them); a RAK module "
                 "answers AT+VER=? (RUI3) or at+version (RUI v3) with its firmware version.")


def _reconcile(info: DeviceInfo, named: Module | None, detected: Module | None,
               dialect: str) -> Module | None:
    """The module, from what the device says and what --module says; the device wins a conflict."""
    if named is None:
        return detected
    if detected is not None and detected.key != named.key:
        info.notes.append(f"--module says {named.name}, but the device says it is a {detected.name}")
        return detected
    if named.dialect.key != dialect and named.boot_dialect.key != dialect:
        speaks = {"rui3": "RUI3", "rui-v3": "RUI v3", "rui-boot": "the RUI bootloader's"}.get(dialect, dialect)
        info.notes.append(f"--module says {named.name}, but the device answers in {speaks} AT "
                          f"commands, which a {named.name} does not speak")
        return detected
    return named


def _v3_app(link: Link, baud: int, module: Module | None, cat: Catalog, timing: Timing,
            version_reply: AtReply | None = None) -> DeviceInfo:
    d = cat.dialects["rui-v3"]
    reply = version_reply or AtConsole(link, d).command(d["app_version"], timing.query)
    version = (reply.value or "").split()[0] if reply.value else None
    info = DeviceInfo(link.port_name, baud, "app", "rui-v3", app_version=version)
    info.hardware_model, info.hardware_id = _board_status(link, d, timing)
    detected = _module_by_name(cat, "rui-v3", info.hardware_model, version)
    mods = [m for m in cat.modules.values() if m.dialect.key == "rui-v3"]
    if module:
        detected = _reconcile(info, module, detected, "rui-v3")
    if detected:
        info.module = detected
    elif info.hardware_model:
        info.notes.append(f"the firmware says it runs on a {info.hardware_model}, a module rakflash "
                          f"does not know")
    else:
        info.module, info.candidates = mods[0], mods
        info.module_certain = len(mods) == 1
        if not info.module_certain:
            info.notes.append(f"this RUI v3 firmware does not say which module it runs on (no answer "
                              f"to {d['board_status']}): it could be a "
                              f"{' or a '.join(m.name for m in mods)}; name it with --module")
    return info


def _board_status(link: Link, d, timing: Timing) -> tuple[str | None, str | None]:
    """(board, MCU) from RUI v3's ``at+get_config=device:status``, or Nones if it isn't answered."""
    query = d.get("board_status")
    if not query:
        return None, None
    reply = AtConsole(link, d).command(query, timing.query)
    if not reply.ok:
        return None, None
    lines = (reply.value or "").splitlines()
    # The reply is complete with its first line; the board's other lines follow it.
    quiet = max(0.05, 200 * 10 / link.baud)
    while (more := link.read_line(quiet)) is not None:
        lines.append(more.decode("latin-1").strip())
    found = {}
    for line in lines:
        for key in ("board_prefix", "mcu_prefix"):
            if line.startswith(d[key]):
                found[key] = line[len(d[key]):].strip() or None
    return found.get("board_prefix"), found.get("mcu_prefix")


def _bootloader(link: Link, baud: int, module: Module | None, cat: Catalog, timing: Timing,
                version: str | None = None) -> DeviceInfo:
    d = cat.dialects["rui-boot"]
    con = AtConsole(link, d)
    if version is None:
        version = con.agreed_value(d["version"], timing.query)
    mod, certain = _module_for_bootloader(version or "", module, cat)
    candidates = _bootloader_candidates(version or "", cat)
    info = DeviceInfo(link.port_name, baud, "bootloader", "rui-boot", module=mod,
                      module_certain=certain, bootloader_version=version,
                      candidates=candidates if not certain else [])
    status = con.command(d["status"], timing.query)
    if status.value and status.value != d["status_reply"]:
        info.notes.append(f"unexpected boot status {status.value!r}")
    if module is not None and mod is not None and mod.key != module.key:
        said = (f"the bootloader says it is a {mod.name}" if certain else
                f"this bootloader ({version}) is a {' or a '.join(m.name for m in candidates)}'s")
        info.notes.append(f"--module says {module.name}, but {said}")
    info.notes.append("the module waits in its bootloader (an update was interrupted, or was "
                      "requested): 'rakflash flash' finishes the job")
    if mod is not None and not certain:
        info.notes.append(f"the bootloader does not say which module it belongs to: it could be a "
                          f"{' or a '.join(m.name for m in info.could_be)}; name it with --module")
    return info


def _bootloader_candidates(version: str, cat: Catalog) -> list[Module]:
    """The modules whose bootloader could answer ``version``, the ones it names first."""
    matches = [m for m in cat.modules.values() if m.find_bootloader_version(version.encode())]
    named = [m for m in matches
             if any(n in version.lower() for n in (m.name.lower(), m.mcu.name.lower(), *m.aliases))]
    return named or matches


def _module_by_name(cat: Catalog, dialect: str, model: str | None, version: str | None) -> Module | None:
    # RUI3 names its board exactly (AT+HWMODEL=?, and the image's "RUI_<version>_<name>"): those
    # tell a RAK3172-SiP from a RAK3172, which a name found inside another can't.
    for exact in (cat.by_hardware_model(model), cat.by_image_name(version)):
        if exact is not None and exact.dialect.key == dialect:
            return exact
    for text in (model, version):
        if not text:
            continue
        low = text.lower()
        for m in cat.modules.values():
            if m.dialect.key != dialect:
                continue
            if any(name and name in low for name in (m.key.split("-")[0], m.name.lower(), *m.aliases)):
                return m
    return None


def _module_for_bootloader(version: str, module: Module | None, cat: Catalog) -> tuple[Module | None, bool]:
    """The module whose bootloader reports ``version`` (and whether that's certain).

    A ``module`` named by the user stands (and settles which of several it is)
    unless the version is no bootloader version of that module.
    """
    candidates = _bootloader_candidates(version, cat)
    if module is not None and (not candidates or module in candidates):
        return module, True
    if candidates:
        return candidates[0], len(candidates) == 1
    return None, False
