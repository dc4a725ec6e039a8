"""``rakflash settings save|apply``: a module's settings (not its keys) as a file, applied to others."""

from __future__ import annotations

import sys
from contextlib import ExitStack

import click

from ..errors import RakflashError, UsageError
from ..flows import settings_files as flow
from .app import main
from .keys import _renderer, app_module_for
from .options import (
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
from .output import emit_json, err, out, reports_errors

SETTINGS_JSON = ("result", "module", "port", "error")


@main.group("settings")
def settings_group() -> None:
    """Settings as files, like WisToolBox templates: band, class, join mode, ADR, data rate, … (no keys)."""


@settings_group.command("save", help="Save a module's settings to FILE: " + ", ".join(flow.NAMES)
                        + " (no keys, no DevEUI: one file fits many modules).")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@port_options(picks=True)
@module_option()
@password_option
@json_option("Print one JSON object.")
@verbosity_options
@reports_errors(json_keys=SETTINGS_JSON)
def settings_save(file: str, port: str | None, baud: int | None, trace_path: str | None,
                  module_name: str | None, password: str | None, as_json: bool) -> None:
    module = lookup_module(module_name)
    port = pick_port(port)
    with ExitStack() as stack:
        link = open_link(stack, port, baud, trace_path, keep=(file,))
        emit = _renderer(stack, link, as_json)
        dev, known_module = app_module_for(stack, link, module, baud, password, emit)
        got = flow.read(link, known_module, serial_number=dev.serial_number, firmware=dev.app_version,
                        emit=emit)
    flow.save(got, file)
    if as_json:
        emit_json({"result": "ok", "file": file, "module": known_module.name, "port": port,
                   "serial_number": dev.serial_number, "settings": got.settings,
                   "unreadable": got.unreadable, "error": None})
        return
    out.print(f"[green]saved[/]: {len(got.settings)} settings of {known_module.name} "
              f"{dev.serial_number or ''} to {file}: "
              + ", ".join(f"{k}={v}" for k, v in got.settings.items()))
    if got.unreadable:
        err.print(f"[yellow]warning:[/] {', '.join(got.unreadable)} could not be read the same way twice "
                  f"and {'is' if len(got.unreadable) == 1 else 'are'} not in the file")


@settings_group.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@port_options(several=True)
@click.option("--all", "all_ports", is_flag=True,
              help="Every module found: each port whose USB ids are a RAK module's or a USB-UART bridge's.")
@module_option()
@password_option
@json_option("Print one JSON object per module (and a summary line with several).")
@verbosity_options
@reports_errors(json_keys=SETTINGS_JSON)
def settings_apply(file: str, port: tuple[str, ...], all_ports: bool, baud: int | None,
                   trace_path: str | None, module_name: str | None, password: str | None,
                   as_json: bool) -> None:
    """Apply the settings in FILE: only what differs is written, each value read back."""
    if all_ports and port:
        raise click.UsageError("--all takes every port that looks like a module's, and --port names ports "
                               "one by one: give one or the other")
    module = lookup_module(module_name)
    wanted = flow.load(file, module)              # a bad file is said before any module is touched
    password_asker(password)                      # --password checked now
    if all_ports:
        from ..flows.discovery import module_ports
        ports = [e.device for e in module_ports()]
        if not ports:
            raise UsageError("--all: no serial port looks like a module's",
                             hint="Name the port with --port ('rakflash ports' lists them).")
    else:
        ports = list(port) or [pick_port(None)]
    if trace_path and len(ports) > 1:
        raise click.UsageError("--trace records one port: give it with one --port")
    if len(ports) == 1 and not all_ports:
        result = _apply_one(ports[0], file, wanted, module, baud, trace_path, password, as_json)
        _say(result, as_json)
        return
    failures: list[RakflashError] = []
    for p in ports:
        try:
            result = _apply_one(p, file, wanted, module, baud, None, password, as_json)
        except RakflashError as exc:
            result = {"result": exc.name, "port": p, "module": None, "error": exc.name,
                      "message": exc.message, "hint": exc.hint}
            failures.append(exc)
        _say(result, as_json)
    if as_json:
        emit_json({"summary": True, "result": "ok" if not failures else "failed", "modules": len(ports),
                   "failed": len(failures), "error": failures[0].name if failures else None})
    else:
        out.print(f"{len(ports) - len(failures)} of {len(ports)} modules have the settings of {file}")
    if failures:
        from .fleet import EXIT_SOME_FAILED
        sys.exit(EXIT_SOME_FAILED)        # several modules, at least one failed: each said why above


def _apply_one(port: str, file: str, wanted: dict[str, str], module, baud, trace_path, password,
               as_json: bool) -> dict:
    with ExitStack() as stack:
        link = open_link(stack, port, baud, trace_path, keep=(file,))
        emit = _renderer(stack, link, as_json)
        dev, known_module = app_module_for(stack, link, module, baud, password, emit)
        done = flow.apply(link, known_module, wanted, emit=emit)
    return {"result": "ok", "port": port, "module": known_module.name, "serial_number": dev.serial_number,
            **done.to_dict(), "error": None}


def _say(result: dict, as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    if result["error"]:
        err.print(f"[bold red]{result['port']}[/]: {result['message']}")
        return
    who = f"[green]{result['port']}[/]: {result['module']} {result['serial_number'] or ''}".rstrip()
    if not result["changed"]:
        out.print(f"{who}: already has every setting of the file ({', '.join(result['same'])})")
        return
    out.print(f"{who}: {', '.join(result['changed'])} applied and read back"
              + (f"; already so: {', '.join(result['same'])}" if result["same"] else ""))
