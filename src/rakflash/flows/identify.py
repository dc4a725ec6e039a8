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
4. Ask the dialect's questions (versions, model, serial number).

Nothing readable at any baud ends in :class:`~rakflash.errors.NoResponse`,
only unreadable bytes in :class:`~rakflash.errors.GarbageReply`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import catalog as _catalog
from ..at import AtConsole, AtReply, looks_like_text
from ..catalog import Catalog, Module
from ..errors import Flooding, GarbageReply, NoResponse
from ..link import Link


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

    def to_dict(self) -> dict:
        return {
            "port": self.port, "baud": self.baud,
            "module": self.module.name if self.module else None,
            "module_key": self.module.key if self.module else None,
            "module_certain": self.module_certain,
            "mode": self.mode, "dialect": self.dialect,
            "app_version": self.app_version, "bootloader_version": self.bootloader_version,
            "hardware_model": self.hardware_model, "hardware_id": self.hardware_id,
            "serial_number": self.serial_number, "notes": self.notes, "error": None,
        }


@dataclass
class Timing:
    """How long identification waits at each step (seconds)."""

    listen: float = 0.12          # unasked data before the first probe
    flood_confirm: float = 0.25   # more listening once data streams in
    probe: float = 0.35           # reply to a probe command
    query: float = 1.0            # reply to an information query


def candidate_bauds(link: Link, module: Module | None, cat: Catalog, baud: int | None) -> list[int]:
    order: list[int] = []
    pool = list(module.bauds) if module else [b for m in cat.modules.values() for b in m.bauds]
    for b in [baud or link.baud, *pool]:
        if b not in order:
            order.append(b)
    return order


def identify(link: Link, *, module: Module | None = None, baud: int | None = None,
             scan: bool = True, timing: Timing | None = None, cat: Catalog | None = None) -> DeviceInfo:
    """Find out what answers on ``link``; leaves the link at the baud that worked."""
    cat = cat or _catalog.load()
    timing = timing or Timing()
    bauds = candidate_bauds(link, module, cat, baud) if scan else [baud or link.baud]
    garbage_at: list[int] = []
    stream: tuple[int, bytes] | None = None
    for b in bauds:
        link.note(f"identify at {b} baud")
        if link.baud != b:
            link.baud = b
        unasked = _listen(link, timing)
        if len(unasked) >= 32:
            if looks_like_text(unasked) or stream is None:
                stream = (b, unasked)
            if looks_like_text(unasked):
                break      # a readable flood at this baud: other bauds won't help
            continue
        info = _probe(link, b, module, cat, timing)
        if info == "garbage":
            garbage_at.append(b)
        elif info is not None:
            return info
    if stream is not None:
        b, sample = stream
        lines = sample.decode("latin-1", "replace").splitlines()
        whole = lines[1:-1] if len(lines) > 2 else lines   # the first and last are likely cut
        first = next((ln.strip() for ln in whole if ln.strip() and looks_like_text(ln.encode("latin-1"))), "")
        raise Flooding(
            f"{link.port_name} streams data without pause and does not answer AT"
            + (f" (it prints lines like {first[:60]!r})" if first else ""),
            baud=b)
    if garbage_at:
        raise GarbageReply(f"{link.port_name} answers with unreadable bytes at "
                           f"{', '.join(map(str, garbage_at))} baud", bauds=garbage_at)
    raise NoResponse(f"nothing answers on {link.port_name} at "
                     f"{', '.join(map(str, bauds))} baud", bauds=bauds)


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
           timing: Timing) -> DeviceInfo | str | None:
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
    if reply.ok or reply.status == "error":
        return _rui3_app(link, baud, module, cat, timing)
    if boot["unsupported"] in lines or boot["banner"] in lines:
        return _bootloader(link, baud, module, cat, timing)
    if any(ln.startswith(v3["error_prefix"]) for ln in lines):
        return _v3_app(link, baud, module, cat, timing)
    if lines and not all(looks_like_text(ln.encode("latin-1")) for ln in lines):
        return "garbage"
    # Silence or an unknown line: ask the RUI v3 / bootloader way.
    reply = AtConsole(link, v3).command(v3["probe"], timing.probe)
    if reply.ok:
        return _v3_app(link, baud, module, cat, timing, version_reply=reply)
    text_lines = [ln for ln in reply.lines if ln and looks_like_text(ln.encode("latin-1"))]
    if any(ln == boot["unsupported"] for ln in text_lines):
        return _bootloader(link, baud, module, cat, timing)
    versions = [ln for ln in text_lines if ln != boot["banner"]]
    if versions and _module_for_bootloader(versions[0], module, cat)[0]:
        return _bootloader(link, baud, module, cat, timing, version=versions[0])
    if reply.lines and not text_lines:
        return "garbage"
    return None


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
    info = DeviceInfo(link.port_name, baud, "app", "rui3", app_version=app_version,
                      bootloader_version=ask("bootloader_version"),
                      hardware_model=ask("hardware_model"), hardware_id=ask("hardware_id"),
                      serial_number=ask("serial_number"))
    detected = _module_by_name(cat, "rui3", info.hardware_model, app_version)
    info.module = _reconcile(info, module, detected, "rui3")
    if info.module is None:
        info.notes.append(f"unknown RUI3 hardware model {info.hardware_model!r}")
    return info


def _reconcile(info: DeviceInfo, named: Module | None, detected: Module | None,
               dialect: str) -> Module | None:
    """The module, from what the device says and what --module says; the device wins a conflict."""
    if named is None:
        return detected
    if detected is not None and detected.key != named.key:
        info.notes.append(f"--module says {named.name}, but the device says it is a {detected.name}")
        return detected
    if named.dialect.key != dialect and named.boot_dialect.key != dialect:
        info.notes.append(f"--module says {named.name}, but the device speaks {dialect}, which "
                          f"{named.name} does not")
        info.module_certain = False
    return named


def _v3_app(link: Link, baud: int, module: Module | None, cat: Catalog, timing: Timing,
            version_reply: AtReply | None = None) -> DeviceInfo:
    d = cat.dialects["rui-v3"]
    reply = version_reply or AtConsole(link, d).command(d["app_version"], timing.query)
    version = (reply.value or "").split()[0] if reply.value else None
    info = DeviceInfo(link.port_name, baud, "app", "rui-v3", app_version=version)
    mods = [m for m in cat.modules.values() if m.dialect.key == "rui-v3"]
    if module:
        info.module = _reconcile(info, module, None, "rui-v3")
    else:
        info.module = _module_by_name(cat, "rui-v3", None, version) or mods[0]
        info.module_certain = len(mods) == 1
        if not info.module_certain:
            info.notes.append(f"RUI v3 firmware does not say which module it runs on; assuming "
                              f"{info.module.name} (one of {', '.join(m.name for m in mods)}): "
                              f"use --module to be sure")
    return info


def _bootloader(link: Link, baud: int, module: Module | None, cat: Catalog, timing: Timing,
                version: str | None = None) -> DeviceInfo:
    d = cat.dialects["rui-boot"]
    con = AtConsole(link, d)
    if version is None:
        version = con.value(d["version"], timing.query)
    mod, certain = _module_for_bootloader(version or "", module, cat)
    conflict = module is not None and mod is not None and mod.key != module.key
    info = DeviceInfo(link.port_name, baud, "bootloader", "rui-boot", module=mod,
                      module_certain=certain, bootloader_version=version)
    status = con.command(d["status"], timing.query)
    if status.value and status.value != d["status_reply"]:
        info.notes.append(f"unexpected boot status {status.value!r}")
    if conflict:
        info.notes.append(f"--module says {module.name}, but the bootloader says it is a {mod.name}")
    info.notes.append("the module waits in its bootloader (an update was interrupted, or was "
                      "requested): 'rakflash flash' finishes the job")
    if mod is not None and not certain:
        info.notes.append(f"the bootloader does not say which module it belongs to; assuming "
                          f"{mod.name}: use --module to be sure")
    return info


def _module_by_name(cat: Catalog, dialect: str, model: str | None, version: str | None) -> Module | None:
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

    A ``module`` named by the user stands unless the version names another one.
    """
    matches = [m for m in cat.modules.values() if m.find_bootloader_version(version.encode())]
    named = [m for m in matches
             if m.name.lower() in version.lower() or m.mcu.name.lower() in version.lower()]
    if module is not None:
        if len(named) == 1 and named[0].key != module.key and not module.find_bootloader_version(version.encode()):
            return named[0], True
        return module, True
    if len(named) == 1:
        return named[0], True
    if matches:
        return matches[0], len(matches) == 1
    return None, False
