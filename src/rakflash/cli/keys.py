"""``rakflash keys show|backup|restore``: the owner's LoRaWAN keys, read, kept as a file, written back."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable

import click

from ..catalog import Module
from ..errors import NotProvisionable, UsageError
from ..events import Phase, Sink
from ..flows import keys as flow
from ..flows.identify import DeviceInfo, identify
from ..flows.lock import lock_again, opening
from ..flows.recover.stm32_rom import read_over_rom
from ..link import Link
from .app import main
from .options import (
    WINDOW,
    CmsisPack,
    json_option,
    lookup_module,
    module_option,
    open_link,
    password_asker,
    password_option,
    pick_port,
    port_options,
    verbosity_options,
)
from .output import JsonEvents, TerminalEvents, emit_json, err, known, out, reports_errors

KEYS_JSON = ("result", "module", "port", "error")
VIA_WORDS = {"at": "over AT", "stm32-rom": "through the chip's STM32 ROM bootloader",
             "swd": "through a debug probe (SWD)"}
LABELS = (("dev_eui", "DevEUI"), ("app_eui", "AppEUI"), ("band", "band"), ("class", "class"),
          ("join_mode", "join mode"), ("dev_addr", "DevAddr"))


def via_options(fn: Callable) -> Callable:
    fn = click.option("--pack", metavar="FILE", type=CmsisPack(),
                      help="--via swd: a CMSIS device pack (.pack) for a target pyOCD does not know yet.")(fn)
    fn = click.option("--probe", metavar="ID",
                      help="--via swd: the probe's unique id, or part of it (see 'rakflash probes').")(fn)
    fn = click.option("--window", type=WINDOW, default=30.0, show_default=True, metavar="S",
                      help="--via stm32-rom: how long to wait for you to hold BOOT0 and reset.")(fn)
    fn = click.option("--via", type=click.Choice(["at", "stm32-rom", "swd"]), default="at", show_default=True,
                      help="at: the module's own AT commands (its application answers). stm32-rom: the "
                           "chip's ROM bootloader (BOOT0 held at reset), for a module whose application "
                           "no longer answers. swd: a debug probe and pyOCD (no --port needed). The last "
                           "two need --module.")(fn)
    return fn


@dataclass
class Via:
    """How the keys are read: ``via`` and what its options say."""

    via: str
    window: float = 30.0
    probe: str | None = None
    pack: str | None = None


@main.group()
def keys() -> None:
    """The owner's LoRaWAN keys: show them, back them up to a file, write a backup back."""


def _renderer(stack: ExitStack, link: Link | None, as_json: bool) -> Sink:
    render = stack.enter_context(JsonEvents() if as_json else TerminalEvents())
    if isinstance(render, TerminalEvents) and link is not None:
        link.on_step = render.step
    return render


def app_module(link: Link, module, baud: int | None, password: str | None, emit: Sink) -> tuple[DeviceInfo, bool]:
    """Identify the module whose application is to be asked (opening a locked AT port)."""
    emit(Phase("identify", f"identifying the module on {link.port_name}"))
    dev, opened = opening(link, lambda: identify(link, module=module, baud=baud), password,
                          password_asker(password))
    known["module"] = dev.module.name if dev.module else None
    if dev.mode != "app" or dev.module is None:
        if opened:
            lock_again(link, emit)
        what = ("waits in its bootloader, which has no keys to give" if dev.mode != "app"
                else "is not a module rakflash knows")
        raise NotProvisionable(f"the module on {link.port_name} {what}",
                               hint="Finish its update first ('rakflash flash FILE --port PORT'), or read its "
                                    "keys through the chip's ROM bootloader: --via stm32-rom --module MODULE.")
    return dev, opened


def app_module_for(stack: ExitStack, link: Link, module, baud: int | None, password: str | None,
                   emit: Sink) -> tuple[DeviceInfo, Module]:
    """:func:`app_module` for as long as ``stack`` is open: a port rakflash opened with the
    password is locked again as the stack closes (after the work, whether it succeeded or not)."""
    dev, opened = app_module(link, module, baud, password, emit)
    assert dev.module is not None         # app_module refuses a module rakflash doesn't know
    if opened:
        stack.callback(lock_again, link, emit)
    return dev, dev.module


def _needs_module(via: Via, module) -> None:
    """``--via stm32-rom`` and ``--via swd`` need ``--module``: a usage error before anything is touched."""
    if via.via in ("stm32-rom", "swd") and module is None:
        why = ("nothing on the line says which module it is before its ROM bootloader answers, and the "
               "pins to hold differ" if via.via == "stm32-rom" else
               "the probe needs the chip's target, and where the keys are differs by module")
        raise UsageError(f"--via {via.via} needs --module: {why}",
                         hint="Add --module (rak3172, rak811, …; 'rakflash modules' lists them).")


def read_keys(stack: ExitStack, port: str | None, via: Via, module, baud: int | None, trace_path: str | None,
              password: str | None, as_json: bool, keep: tuple[str, ...] = ()) -> tuple[flow.Backup, str | None]:
    """The keys, the way ``via`` says: through a probe (no port), or over the port (picked when
    not given); and the port they were read on."""
    _needs_module(via, module)
    if via.via == "swd":
        known["module"] = module.name
        emit = _renderer(stack, None, as_json)
        return flow.read_over_swd(module, probe=via.probe, pack=via.pack, emit=emit), port
    port = pick_port(port)
    link = open_link(stack, port, baud, trace_path, keep=keep)
    return read(link, via.via, module, baud, password, via.window, _renderer(stack, link, as_json)), port


def read(link: Link, via: str, module, baud: int | None, password: str | None, window: float,
         emit: Sink) -> flow.Backup:
    """The keys, the way ``via`` says."""
    if via == "stm32-rom":
        _needs_module(Via(via), module)
        known["module"] = module.name
        return read_over_rom(link, module, window=window, emit=emit)
    dev, opened = app_module(link, module, baud, password, emit)
    assert dev.module is not None         # app_module refuses a module rakflash doesn't know
    try:
        backup = flow.read_over_at(link, dev.module, emit=emit)
        backup.serial_number = backup.serial_number or dev.serial_number
    finally:
        locked = lock_again(link, emit) if opened else None
    if opened:
        backup.lock = "locked (rakflash opened it with the password and " + \
            ("locked it again)" if locked else "could not lock it again: see the warning)")
    return backup


def _print(backup: flow.Backup, show_keys: bool) -> None:
    s = backup.shown(show_keys)
    how = (VIA_WORDS.get(backup.via, backup.via)
           + (f", config layout {s['layout_version']} ({flow.rc.VERSIONS.get(s['layout_version'], '?')})"
              if s["layout_version"] else ""))
    out.print(f"{'module':<14}{s['module']}" + (f", serial number {s['serial_number']}" if s["serial_number"] else ""))
    out.print(f"{'read':<14}{how}, {s['read_at']}")
    for key, label in LABELS:
        value = s.get(key)
        if key == "band" and value is not None and s["region"]:
            value = f"{value} ({s['region']})"
        if value is not None:
            out.print(f"{label:<14}{value}")
    for name, key in flow.SECRET_FIELDS.items():
        label = {"APPKEY": "AppKey", "APPSKEY": "AppSKey", "NWKSKEY": "NwkSKey"}[name]
        if s[f"{key}_blank"] is None:
            continue
        shown = s[key] if show_keys else ("all zeros (not set)" if s[f"{key}_blank"]
                                           else "set (hidden; --show-keys shows it)")
        out.print(f"{label:<14}{shown}")
    if s["port_lock"]:
        out.print(f"{'AT port lock':<14}{s['port_lock']}")
    if backup.unreadable:
        out.print(f"[yellow]could not be read the same way twice:[/] {', '.join(backup.unreadable)}")
    for n in backup.notes:
        out.print(f"[yellow]note:[/] {n}")


@keys.command("show")
@port_options(picks=True)
@module_option()
@via_options
@click.option("--show-keys", is_flag=True, help="Show the AppKey and the session keys (masked otherwise).")
@password_option
@json_option("Print one JSON object.")
@verbosity_options
@reports_errors(json_keys=KEYS_JSON)
def keys_show(port: str | None, baud: int | None, trace_path: str | None, module_name: str | None, via: str,
              window: float, probe: str | None, pack: str | None, show_keys: bool, password: str | None,
              as_json: bool) -> None:
    """Show a module's DevEUI, AppEUI, band, class and join mode (the keys masked)."""
    module = lookup_module(module_name)
    with ExitStack() as stack:
        backup, port = read_keys(stack, port, Via(via, window, probe, pack), module, baud, trace_path,
                                 password, as_json)
    if as_json:
        emit_json({"result": "ok", **backup.shown(show_keys), "module": backup.module.name, "port": port,
                   "error": None})
        return
    _print(backup, show_keys)


@keys.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@port_options(picks=True)
@module_option()
@via_options
@password_option
@json_option("Print one JSON object (names only: the values are in the file).")
@verbosity_options
@reports_errors(json_keys=KEYS_JSON)
def keys_backup(file: str, port: str | None, baud: int | None, trace_path: str | None, module_name: str | None,
                via: str, window: float, probe: str | None, pack: str | None, password: str | None,
                as_json: bool) -> None:
    """Read a module's keys and settings into FILE (JSON, readable by you only)."""
    module = lookup_module(module_name)
    flow.check_new_file(file)          # said before the module is touched (a BOOT0 dance for nothing)
    with ExitStack() as stack:
        backup, port = read_keys(stack, port, Via(via, window, probe, pack), module, baud, trace_path,
                                 password, as_json, keep=(file,))
    flow.save(backup, file)
    result: dict[str, Any] = {
        "result": "ok", "file": file, "module": backup.module.name, "port": port,
        "serial_number": backup.serial_number, "dev_eui": backup.dev_eui, "read_via": backup.via,
        "read_at": backup.read_at, "decoded": backup.decoded, "layout_version": backup.layout_version,
        "settings": sorted(backup.settings), "unreadable": backup.unreadable,
        "raw_bytes": sum(len(r["hex"]) // 2 for r in backup.raw), "notes": backup.notes, "error": None}
    if as_json:
        emit_json(result)
        return
    what = (", ".join(n for n in flow.KEY_NAMES if n in backup.settings) if backup.settings
            else f"{result['raw_bytes']:,} raw bytes")
    out.print(f"[green]backed up[/]: {backup.module.name}"
              + (f" {backup.serial_number}" if backup.serial_number else "")
              + (f" (DevEUI {backup.dev_eui})" if backup.dev_eui else "")
              + f" to {file} (readable by you only): {what}, read "
              + VIA_WORDS.get(backup.via, backup.via) + ".")
    if backup.unreadable:
        err.print(f"[yellow]warning:[/] {', '.join(backup.unreadable)} could not be read the same way twice "
                  f"and {'is' if len(backup.unreadable) == 1 else 'are'} not in the backup")
    for n in backup.notes:
        out.print(f"[yellow]note:[/] {n}")


@keys.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@port_options(picks=True)
@module_option()
@click.option("--force", is_flag=True, help="Write a backup of another module (another serial number or DevEUI).")
@password_option
@json_option("Print one JSON object (names only).")
@verbosity_options
@reports_errors(json_keys=KEYS_JSON)
def keys_restore(file: str, port: str | None, baud: int | None, trace_path: str | None, module_name: str | None,
                 force: bool, password: str | None, as_json: bool) -> None:
    """Write the keys and settings in FILE back to a module over AT, each checked by reading it back."""
    backup = flow.load(file)                     # a bad file is said before the module is touched
    module = lookup_module(module_name)
    port = pick_port(port)
    with ExitStack() as stack:
        link = open_link(stack, port, baud, trace_path, keep=(file,))
        emit = _renderer(stack, link, as_json)
        dev, known_module = app_module_for(stack, link, module, baud, password, emit)
        done = flow.restore(link, known_module, backup, force=force, emit=emit)
    if as_json:
        emit_json({"result": "ok", "module": known_module.name, "port": port, "file": file,
                   "serial_number": dev.serial_number, "dev_eui": backup.dev_eui, **done.to_dict(),
                   "error": None})
        return
    if done.written:
        out.print(f"[green]restored[/]: {', '.join(done.written)} written to {known_module.name} "
                  f"{dev.serial_number or ''} and read back".replace("  ", " "))
    if done.same:
        out.print(f"already there: {', '.join(done.same)}")
