"""``rakflash info0 show|write``: the Apollo3's INFO0, which the secure bootloader configures itself from."""

from __future__ import annotations

import sys
from contextlib import ExitStack

import click
from rich.table import Table

from .. import apollo3_info0 as info0_mod
from ..errors import Aborted, ConfirmationNeeded, ImageFormatError, UsageError
from ..trace import open_for_writing
from .app import main
from .options import json_option, lookup_module, why_unwritable
from .output import JsonEvents, TerminalEvents, emit_json, known, out, read_only_command, reports_errors


@main.group()
def info0() -> None:
    """Apollo3 INFO0 (RAK11720): decode it, or write it from a file."""


def _apollo3(name: str | None):
    module = lookup_module(name or "rak11720")
    if module.mcu.key != "apollo3":
        raise UsageError(f"{module.name} has no Apollo3 INFO0", hint="INFO0 is the RAK11720's (Apollo3).")
    return module


def _read_over_swd(module, probe: str | None) -> tuple[bytes, str]:
    from .. import swd_link
    api = swd_link.pyocd_api()
    chosen = swd_link.choose_probe(api, probe)
    return swd_link.read_info0(api, chosen, module), f"{module.name} through {chosen.kind} probe {chosen.unique_id}"


@info0.command("show")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=str))
@click.option("--probe", metavar="ID", help="Read INFO0 over SWD through this probe (default: the only one attached).")
@click.option("--module", "-m", "module_name", metavar="MODULE", help="The module (default rak11720).")
@click.option("--save", metavar="FILE", type=click.Path(dir_okay=False), help="Also save the 8 KiB read from the chip.")
@json_option()
@reports_errors(json_keys=("source", "info0", "findings"))
def show(file: str | None, probe: str | None, module_name: str | None, save: str | None,
         as_json: bool) -> None:
    """Decode INFO0 from a dump FILE, or read it over SWD (without FILE).

    Prints the fields the secure bootloader and RUI's bootloader depend on, and which
    values would stop the wired update, RUI's bootloader or SWD from working.
    """
    read_only_command()        # '| head' ends it quietly: it changes nothing
    module = _apollo3(module_name)
    if file and probe:
        raise UsageError("give a dump FILE or --probe, not both")
    if file and save:
        raise UsageError(f"--save keeps the 8 KiB read from the chip over SWD; {file} is already a file",
                         hint="Copy the dump file instead, or leave out FILE to read INFO0 over SWD "
                              "and save it.")
    if save:
        _check_writable(save)                # before the probe is asked anything
    if file:
        info, source = info0_mod.Info0.load(file), file
    else:
        raw, source = _read_over_swd(module, probe)
        info = info0_mod.Info0.parse(raw, source=source)
        if save:
            try:
                with open_for_writing(save, binary=True) as f:
                    f.write(raw)
            except OSError as exc:
                raise UsageError(f"cannot write {save}: {why_unwritable(exc)}") from None
    known["source"] = source
    findings = info.findings()
    if as_json:
        emit_json({"source": source, "info0": info.to_dict(),
                   "findings": [f.to_dict() for f in findings], "error": None})
        return
    out.print(f"INFO0 of {source}")
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for _, label, value in info.fields():
        table.add_row(label, str(value))
    out.print(table)
    _print_findings(findings)
    if save and not file:
        out.print(f"saved the 8 KiB read from the chip to {save}")


def _check_writable(path: str) -> None:
    """A --save path that can't take the dump is a usage error now, not after the chip was read
    (opened as the trace and the report are: a FIFO nobody reads fails instead of hanging)."""
    try:
        with open_for_writing(path, append=True, binary=True):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {why_unwritable(exc)}",
                         hint="Give --save a path in a folder you can write to.") from None


def _print_findings(findings) -> None:
    if not findings:
        out.print("[green]nothing here stops the wired update, RUI's bootloader or SWD[/]")
    stops = {"wired-update": "stops the wired update", "rui-bootloader": "stops RUI's bootloader",
             "swd": "stops SWD", "info0-write": "limits INFO0 writes"}
    for f in findings:
        if f.level == "blocks":
            out.print(f"[bold red]{stops.get(f.stops, 'blocks')}:[/] {f.message}")
        elif f.level == "warning":
            out.print(f"[yellow]warning:[/] {f.message}")
        else:
            out.print(f"note: {f.message}")


@info0.command("write")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--probe", metavar="ID", help="The probe to write through (default: the only one attached).")
@click.option("--module", "-m", "module_name", metavar="MODULE", help="The module (default rak11720).")
@click.option("--dry-run", is_flag=True, help="Read the chip's INFO0 and print the differences; write nothing.")
@click.option("--yes", "-y", is_flag=True, help="Write without asking.")
@json_option("Print JSON events and a JSON result line.")
@reports_errors(json_keys=("result", "changes"))
def write(file: str, probe: str | None, module_name: str | None, dry_run: bool, yes: bool,
          as_json: bool) -> None:
    """Write INFO0 from FILE (8 KiB, e.g. made by create_info0.py) over SWD.

    Reads the chip's INFO0 first, shows what changes field by field and what the new
    values mean, asks, writes with the Apollo3 ROM's INFO0 helpers, and reads it back.
    """
    from .. import swd_link
    module = _apollo3(module_name)
    data = info0_mod.read_dump(file)         # a regular file only: a FIFO or /dev/zero is refused
    new = info0_mod.Info0.parse(data, source=file)
    if len(data) != info0_mod.SIZE:
        raise ImageFormatError(f"{file} is not a whole INFO0 image ({info0_mod.SIZE:,} bytes)",
                               hint="Write only a complete 8 KiB INFO0 file, e.g. one saved with "
                                    "'rakflash info0 show --save FILE' and edited.")
    api = swd_link.pyocd_api()
    chosen = swd_link.choose_probe(api, probe)
    old = info0_mod.Info0.parse(swd_link.read_info0(api, chosen, module))
    changes = info0_mod.diff(old, new)
    findings = new.findings()
    if as_json:
        emit_json({"event": "plan", "changes": [c.__dict__ for c in changes],
                   "findings": [f.to_dict() for f in findings]})
    else:
        _print_changes(changes)
        if changes:
            out.print("after the write:")
            _print_findings(findings)
    if not changes:
        _finish(as_json, "unchanged", changes, "INFO0 already holds these values: nothing to write")
        return
    if dry_run:
        _finish(as_json, "dry-run", changes, "dry run: nothing written")
        return
    if not yes:
        if not sys.stdin or not sys.stdin.isatty():
            raise ConfirmationNeeded("about to rewrite INFO0, and there is no terminal to confirm it")
        if not click.confirm(f"Write INFO0 of {module.name} ({len(changes)} field(s) change)? A wrong "
                             "INFO0 can make the secure bootloader or the debugger unreachable"):
            raise Aborted("INFO0 not written", hint="Nothing was written.")
    with ExitStack() as stack:
        render = stack.enter_context(JsonEvents() if as_json else TerminalEvents())
        swd_link.write_info0(api, chosen, module, new.raw, emit=render)
    _finish(as_json, "ok", changes, "INFO0 written and read back")


def _print_changes(changes) -> None:
    if not changes:
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("field", "now", "after"):
        table.add_column(col)
    for c in changes:
        table.add_row(c.label, str(c.before), str(c.after))
    out.print(table)


def _finish(as_json: bool, result: str, changes, text: str) -> None:
    if as_json:
        emit_json({"result": result, "changes": [c.__dict__ for c in changes], "error": None})
    else:
        out.print(text)
