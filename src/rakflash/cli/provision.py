"""``rakflash provision BATCH --all|--port …`` and ``rakflash ledger show|export BATCH``: production.

``flash FILE … --provision BATCH`` (cli/flash.py) runs the same provisioning after each
module's update; this module holds what both need: the batch read and checked against
its ledger before any module is touched (:func:`prepare`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from ..errors import UsageError
from ..flows.session import FlashOptions
from ..provision.batch import read_batch
from ..provision.export import FORMATS, export_rows
from ..provision.keys import Provisioning
from ..provision.ledger import check_against, default_path, describe, open_ledger, station_name, status
from .app import main
from .fleet import flash_many, open_report
from .options import json_option, lookup_module, module_option, port_options, verbosity_options
from .output import emit_json, out, reports_errors


def ledger_option(fn):
    return click.option("--ledger", "ledger_spec", metavar="L",
                        help="Where the claims are kept: an SQLite file, or postgresql://… for several "
                             "stations on one batch (default: BATCH.ledger.sqlite beside the batch).")(fn)


def station_option(fn):
    return click.option("--station", envvar="RAKFLASH_STATION", metavar="NAME",
                        help="This station's name in the ledger (default: the host name; "
                             "environment RAKFLASH_STATION).")(fn)


def prepare(batch_path: str, ledger_spec: str | None, station: str | None, force: bool) -> Provisioning:
    """Read and check the batch, open its ledger and check the batch against it: every
    refusal comes here, before any module is touched."""
    batch = read_batch(batch_path)
    ledger = open_ledger(ledger_spec, batch_path)
    try:
        check_against(batch, ledger)
    except BaseException:
        ledger.close()
        raise
    return Provisioning(batch, ledger, station or station_name(), force)


@main.command()
@click.argument("batch_path", metavar="BATCH", type=click.Path(dir_okay=False, path_type=str))
@port_options(several=True)
@click.option("--all", "all_ports", is_flag=True,
              help="Every module found: each port whose USB ids are a RAK module's or a USB-UART bridge's.")
@ledger_option
@station_option
@click.option("--force", is_flag=True, help="Replace keys a module already holds (not a row claimed for it).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="F",
              help="Append one JSON line per module to F (as flash --report, with which row went where).")
@module_option()
@click.option("--yes", "-y", is_flag=True, help="Answer the confirmation with yes (for scripts and CI).")
@json_option("Print JSON progress events, one device-result line per module and a summary line.")
@verbosity_options
@reports_errors
def provision(batch_path: str, port: tuple[str, ...], all_ports: bool, ledger_spec: str | None,
              station: str | None, force: bool, report_path: str | None, baud: int | None,
              trace_path: str | None, module_name: str | None, yes: bool, as_json: bool) -> None:
    """Give each module (already running its firmware) its own row of LoRaWAN keys from BATCH.

    BATCH is a CSV file with the columns DevEUI, AppEUI, AppKey (and optionally
    serial_number, binding a row to one module). Each row is claimed in the ledger
    before it is written over AT and read back; a module keeps its row across re-runs.
    """
    if all_ports and port:
        raise click.UsageError("--all takes every port that looks like a module's, and --port names ports "
                               "one by one: give one or the other")
    if not port and not all_ports:
        raise click.UsageError("name the modules' ports with --port (once per module), or give --all")
    module = lookup_module(module_name)
    report = open_report(report_path, batch_path)
    prov = prepare(batch_path, ledger_spec, station, force)
    try:
        flash_many(list(port), all_ports, None, FlashOptions(module=module, baud=baud), report=report,
                   trace_path=trace_path, yes=yes, as_json=as_json, provisioning=prov)
    finally:
        prov.ledger.close()


@main.group()
def ledger() -> None:
    """What a batch's ledger holds: which module got which row, and what is left."""


@ledger.command("show")
@click.argument("batch_path", metavar="BATCH", type=click.Path(dir_okay=False, path_type=str))
@ledger_option
@json_option("Print the claims and the counts as one JSON object.")
@reports_errors
def ledger_show(batch_path: str, ledger_spec: str | None, as_json: bool) -> None:
    """Every row of BATCH: claimed by which module and station, written or not, and what is left."""
    batch = read_batch(batch_path)
    with open_ledger(ledger_spec, batch_path, create=False) as led:
        st = status(batch, led)
    rows, counts, orphans = st["rows"], st, st["not_in_file"]
    if as_json:
        emit_json({"result": "ok", "ledger": describe(ledger_spec) if ledger_spec else default_path(batch_path),
                   **st})
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("line", "DevEUI", "state", "serial number", "station", "claimed at (UTC)"):
        table.add_column(col, no_wrap=col in ("DevEUI", "state"), overflow="fold")
    for r in rows:
        style = {"written": "green", "left": "dim", "failed": "red"}.get(r["state"], "yellow")
        table.add_row(str(r["line"]), r["dev_eui"], f"[{style}]{r['state']}[/]", r.get("serial_number") or "-",
                      r.get("station") or "-", (r.get("claimed_at") or "-")[:19].replace("T", " "))
    out.print(table)
    out.print(f"{batch.name}: {counts['total']} rows, {counts['written']} written, "
              f"{counts['not_written']} claimed and not written, {counts['left']} left")
    if orphans:
        out.print(f"[red]{len(orphans)} claims of this batch name are not rows of {batch_path}[/]: "
                  + ", ".join(f"{o['dev_eui']} ({o['serial_number']})" for o in orphans))


@ledger.command("export")
@click.argument("batch_path", metavar="BATCH", type=click.Path(dir_okay=False, path_type=str))
@ledger_option
@click.option("--format", "fmt", type=click.Choice(sorted(FORMATS)), required=True,
              help="tts-csv / tts-json: The Things Stack's end-device import files; chirpstack: a CSV of "
                   "what ChirpStack v4's API takes for each device (it has no file import).")
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, path_type=str), metavar="F",
              help="Write to F (default: standard output). It holds the AppKeys: keep it private.")
@click.option("--all-claimed", is_flag=True,
              help="Also rows claimed but not (yet) written and read back.")
@reports_errors
def ledger_export(batch_path: str, ledger_spec: str | None, fmt: str, output: str | None,
                  all_claimed: bool) -> None:
    """The rows written to modules, for a network server's bulk import (with their AppKeys, from BATCH)."""
    batch = read_batch(batch_path)
    with open_ledger(ledger_spec, batch_path, create=False) as led:
        claims = [c for c in led.claims(batch.name) if c.result == "written" or all_claimed]
    pairs = [(batch.by_dev_eui(c.dev_eui), c) for c in claims]
    text = export_rows(fmt, [(r, c) for r, c in pairs if r is not None])
    if output is None:
        sys.stdout.write(text)
        return
    if Path(output).resolve() == Path(batch_path).resolve():
        raise UsageError("--output names the batch file itself", hint="Give --output another file name.")
    import os
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)    # it holds keys
    with os.fdopen(fd, "w", newline="") as f:
        f.write(text)
    click.echo(f"{len(pairs)} devices written to {output} ({fmt})", err=True)
