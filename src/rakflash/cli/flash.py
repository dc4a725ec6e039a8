"""``rakflash flash FILE --port P``: update a module's application over its serial bootloader."""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack

import click

from ..errors import AlreadyUpToDate, ConfirmationNeeded, RakflashError
from ..flows.fleet import now_iso
from ..flows.session import DryRun, FlashOptions, FlashSession
from .app import main
from .fleet import open_report, report_one
from .options import (
    WINDOW,
    IntParam,
    json_option,
    load_image,
    lookup_module,
    module_option,
    open_link,
    password_asker,
    password_option,
    pick_port,
    port_options,
    verbosity_options,
)
from .output import (
    RESULT_KEYS,
    JsonEvents,
    TerminalEvents,
    ask_module,
    ask_yes_no,
    emit_result,
    known,
    moved_hint,
    out,
    reports_errors,
    show_settings,
)
from .provision import ledger_option, prepare, station_option

# Every result line has these keys, however the command ends (success, refusal, failure, Ctrl-C).
FLASH_KEYS = RESULT_KEYS


@main.command()
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@port_options(several=True, picks=True)
@click.option("--all", "all_ports", is_flag=True,
              help="Update every module found: each port whose USB ids are a RAK module's or a USB-UART bridge's.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="F",
              help="Append one JSON line per module to F (port, module, serial number, DevEUI, versions, "
                   "bytes, seconds, result, error, the image's SHA-256).")
@module_option()
@click.option("--address", type=IntParam(), help="Base address of a .bin (default: the module's application base).")
@click.option("--dry-run", is_flag=True, help="Print the plan (steps, bytes, estimated time) and exit.")
@click.option("--yes", "-y", is_flag=True, help="Answer every confirmation with yes (for scripts and CI).")
@click.option("--force", is_flag=True, help="Write even if the same version already runs, or past the compatibility check.")
@click.option("--reset-window", type=WINDOW, default=30.0, show_default=True, metavar="S",
              help="When the firmware floods the port: how long to wait for a reset press.")
@click.option("--reset-with", type=click.Choice(["rts", "dtr"]),
              help="The adapter's RTS or DTR line is wired to the module's reset: pulse it instead of asking.")
@click.option("--keep-settings/--no-keep-settings", default=True, show_default=True,
              help="Read the LoRaWAN keys and settings before the update, check them after it, "
                   "and write back any the new firmware lost.")
@click.option("--provision", "batch_path", type=click.Path(dir_okay=False, path_type=str), metavar="BATCH",
              help="After each module's update, give it its own row of LoRaWAN keys from the CSV file BATCH "
                   "(see 'rakflash provision --help'); --force also replaces keys a module already holds.")
@ledger_option
@station_option
@password_option
@json_option("Print JSON progress events and a JSON result line.")
@verbosity_options
@reports_errors(json_keys=FLASH_KEYS)
def flash(file: str, port: tuple[str, ...], all_ports: bool, report_path: str | None, baud: int | None,
          trace_path: str | None, module_name: str | None, address: int | None, dry_run: bool, yes: bool,
          force: bool, reset_window: float, reset_with: str | None, keep_settings: bool,
          batch_path: str | None, ledger_spec: str | None, station: str | None, password: str | None,
          as_json: bool) -> None:
    """Update the application of a module over its serial bootloader.

    Several --port options, or --all, update several modules at once: one live
    row per module, then a summary; --report appends one JSON line per module.
    """
    if all_ports and port:
        # Which did the person mean: every module port, or these? Writing firmware to modules
        # they did not name is worse than asking.
        raise click.UsageError(f"--all takes every port that looks like a module's, and --port names "
                               f"ports one by one ({', '.join(port)}): give one or the other")
    module = lookup_module(module_name)
    if not port and not all_ports:
        port = (pick_port(None),)            # the only port that looks like a module's, said which
    image = load_image(file, address, module)
    ask_password = password_asker(password)      # --password checked here, before any port is opened
    options = FlashOptions(module=module, baud=baud, force=force, keep_settings=keep_settings,
                           dry_run=dry_run, reset_window=reset_window, reset_line=reset_with,
                           password=password)
    report = open_report(report_path, file)
    if batch_path is not None:      # each module's update, then its row: the fleet's runner, also for one
        if dry_run:
            raise click.UsageError("--provision writes keys: it has no dry run (leave out one or the other)")
        from .fleet import flash_many
        prov = prepare(batch_path, ledger_spec, station, force)
        try:
            flash_many(list(port), all_ports, image, options, report=report, trace_path=trace_path,
                       yes=yes, as_json=as_json, provisioning=prov)
        finally:
            prov.ledger.close()
        return
    if all_ports or len(port) > 1:
        from .fleet import flash_many
        flash_many(list(port), all_ports, image, options, report=report, trace_path=trace_path,
                   yes=yes, as_json=as_json)
        return
    one_port = port[0]
    known.update(port=one_port, written="nothing")        # until the session says otherwise
    started, t0 = now_iso(), time.monotonic()
    session = outcome = link = None
    try:
        with ExitStack() as stack:
            link = open_link(stack, one_port, baud, trace_path, keep=(file,))
            render = stack.enter_context(JsonEvents() if as_json else TerminalEvents())
            if isinstance(render, TerminalEvents):
                link.on_step = render.step          # -v: every AT exchange, timed
            interactive = not yes and sys.stdin is not None and sys.stdin.isatty()
            session = FlashSession(link, image, options, emit=render,
                                   confirm=None if yes else _ask(one_port),
                                   choose_module=ask_module if interactive else None,
                                   ask_password=ask_password)
            try:
                outcome = session.run()
            except RakflashError as exc:
                # Recovery commands in hints name this very port — or the one the module moved to.
                exc.hint = (exc.hint or "").replace("--port PORT", f"--port {one_port}")
                exc.hint = (exc.hint + moved_hint(one_port, link.port_name)).strip()
                if isinstance(exc, AlreadyUpToDate) and not as_json:
                    show_settings(session.settings_check)
                raise
            finally:
                known.update(session.known)
                if link is not None and link.port_name != one_port:
                    known["moved_to"] = link.port_name
                if report is not None:       # --report: the same line as for several modules
                    once, report = report, None
                    report_one(once, one_port, image, session, outcome, sys.exc_info()[1],
                               time.monotonic() - t0, started, link)
    finally:
        if report is not None:               # the port could not even be opened
            once, report = report, None
            report_one(once, one_port, image, None, None, sys.exc_info()[1], time.monotonic() - t0, started)
    if isinstance(outcome, DryRun):
        if as_json:
            emit_result({**outcome.to_dict(), "written": "nothing"}, one_port)
        return
    result = outcome
    if as_json:
        emit_result({**result.to_dict(), "written": "all"}, one_port)
        return
    out.print(f"[green]done[/]: {done_line(result, session.device)}")
    for v in getattr(result, "verified", None) or []:       # an ESP chip's own MD5 of each part
        out.print(f"verified: the chip's MD5 of {v['address']:#x}+{v['bytes']:,} is the image's ({v['md5']})")
    show_settings(result.settings)     # keys that could not be read: the flow's warning said so
    if result.port_locked_again:
        out.print("port lock: the AT port is locked again, as it was.")


def done_line(result, device) -> str:
    """What happened, in one line: versions before → after, bytes, time, rate, what was sent
    again, and how the bootloader was reached (a reset press waited for, when a flood was caught)."""
    if result.app_version_before:
        before = result.app_version_before
    elif device is not None and device.caught:
        before = "(a firmware that floods the port; its version unknown)"
    elif device is not None and device.mode == "bootloader":
        before = "(bootloader)"
    else:
        before = "(version unknown)"
    after = result.app_version_after or "(no version told)"
    if result.unconfirmed_because:          # by design (an Arduino sketch): a note said so, no warning
        after = f"the new firmware (not confirmed: {result.unconfirmed_because})"
    elif not result.version_confirmed:
        after += " (not confirmed, see the warning)"
    transfer = f"transfer {result.transfer_seconds:.1f} s, {result.rate / 1024:.1f} KiB/s"
    if result.retries:
        transfer += f", {result.retries} sent again"
    if result.reset_wait is not None:
        entry = f"caught in its bootloader after a reset, {result.reset_wait:.1f} s after asking for it"
    elif device is not None and device.mode == "bootloader":
        entry = "it was already in its bootloader"
    else:
        entry = f"bootloader entered in {result.boot_seconds:.2f} s"
    if result.resumed_at:                   # the bootloader kept what an interrupted run had sent
        sent = (f"{result.bytes_sent:,} bytes sent, resumed at byte {result.resumed_at:,} of "
                f"{result.bytes:,} (an interrupted run had sent the rest)")
    else:
        sent = f"{result.bytes:,} bytes"
    return f"{result.module} {before} → {after}; {sent} in {result.seconds:.1f} s ({transfer}; {entry})"


def _ask(port: str):
    """The confirmation before writing: a prompt on a terminal, else a clear refusal (use --yes)."""
    def confirm(plan) -> bool:
        if not sys.stdin or not sys.stdin.isatty():
            raise ConfirmationNeeded("about to write firmware, and there is no terminal to confirm it")
        return ask_yes_no(f"Write {len(plan.payload):,} bytes to {plan.module.name} on {port}?")
    return confirm
