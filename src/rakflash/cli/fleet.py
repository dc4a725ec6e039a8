"""``rakflash flash FILE --port A --port B …`` / ``--all``: many modules at once, and ``--report``.

The command is ``flash`` (cli/flash.py); this module holds what it needs for
several ports: the live table (one row per module: port, module, serial number,
phase, progress, result), the summary, the JSON stream, and the report file
(also used by a single-port ``flash --report``).
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .. import events as ev
from ..errors import ConfirmationNeeded, PortNotFound, ReportFailed, UsageError
from ..flows.discovery import module_ports
from ..flows.fleet import DeviceDone, DeviceOutcome, Fleet, ReportFile, ask_identifiers, settle
from ..flows.session import FlashOptions
from ..images import Image
from ..trace import TraceWriter
from .options import _same_file, open_trace, why_unwritable
from .output import ask_yes_no, emit_json, err, out

EXIT_SOME_FAILED = 11
LABELS = {"waiting": "waiting", "identify": "identifying", "settings": "reading settings",
          "boot": "entering bootloader", "erase": "erasing", "write": "writing", "verify": "verifying",
          "start": "starting new firmware",
          "settings-check": "checking settings", "provision": "keys from the batch", "done": "done"}


def open_report(path: str | None, firmware: str | None = None) -> ReportFile | None:
    """The ``--report`` file, opened for appending now (so a bad path fails before any module)."""
    if path is None:
        return None
    if firmware is not None and _same_file(path, firmware):
        raise UsageError(f"--report names the firmware file {firmware}: appending to it would damage it",
                         hint="Give --report another file name.")
    try:
        return ReportFile(path)
    except OSError as exc:
        raise UsageError(f"cannot append to the report file {path}: {why_unwritable(exc)}",
                         hint="Give --report a path in a folder you can write to. Nothing was "
                              "sent to any module.") from None


def report_failed(report: ReportFile, exc: OSError, missing: list[str],
                  outcomes: list[DeviceOutcome]) -> ReportFailed:
    """The error a run ends with when its report stopped taking lines: what the file said, whose
    lines are missing, and how the modules ended (their rows are in the output)."""
    ended = ", ".join(f"{o.port}: {o.result}" for o in outcomes)
    lines = "the line of {} is" if len(missing) == 1 else "the lines of {} are"
    return ReportFailed(f"the report {report.path} stopped taking lines ({why_unwritable(exc)}): "
                        f"{lines.format(', '.join(missing))} missing from it; "
                        f"{'the module' if len(outcomes) == 1 else 'the modules'} ended {ended}",
                        missing=missing)


def report_one(report: ReportFile, port: str, image: Image, session: Any, result: Any,
               failure: BaseException | None, seconds: float, started: str, link: Any = None) -> None:
    """Append the record of a single-port ``flash`` (the same fields as for several ports);
    :class:`ReportFailed` when the report no longer takes it."""
    o = DeviceOutcome(port, started=started)
    settle(o, session, result, failure, seconds)
    if link is not None:
        ask_identifiers(o, link, session)
    try:
        report.append(o.record(image))
    except OSError as exc:
        error = report_failed(report, exc, [port], [o])
        if o.message:
            error.message += f" ({o.message})"
        raise error from None


def flash_many(ports: list[str], all_ports: bool, image: Image | None, options: FlashOptions, *,
               report: ReportFile | None, trace_path: str | None, yes: bool, as_json: bool,
               provisioning: Any = None) -> None:
    """Update every port in ``ports`` (and every module port, with ``all_ports``) at once;
    with ``provisioning``, each module then gets its row of the batch (``image`` None: only that)."""
    if all_ports:
        found = [e.device for e in module_ports()]
        if not found and not ports:
            raise PortNotFound("no port with the USB ids of a RAK module or a USB-UART adapter",
                               hint="Plug the modules in and run 'rakflash ports'; name ports with --port.")
        ports = list(dict.fromkeys([*ports, *found]))
    if not options.dry_run and not yes:
        _confirm(ports, image, provisioning)
    with ExitStack() as stack:
        keep = image.path if image else ""
        traces = {p: open_port_trace(stack, trace_path, p, keep) for p in ports} if trace_path else {}
        view = JsonFleet() if as_json else FleetView(ports, "updating" if image is not None else "provisioning")
        fleet = Fleet(ports, image, options, emit=view, report=report, trace_for=traces.get,
                      provisioning=provisioning)
        t0 = time.monotonic()
        with view:
            outcomes = fleet.run()
    seconds = time.monotonic() - t0
    code = 130 if fleet.interrupted else (0 if all(o.ok for o in outcomes) else EXIT_SOME_FAILED)
    if report is not None and fleet.report_error is not None:
        # The run ends with the report's error (its last line, with --json, carries the summary).
        error = report_failed(report, fleet.report_error, fleet.unreported, outcomes)
        if as_json:
            error.details.update({k: v for k, v in summary(outcomes, seconds, report).items()
                                  if k not in ("result", "report")})
        else:
            show_summary(outcomes, seconds, None, fleet.interrupted)
        raise error
    if as_json:
        emit_json(summary(outcomes, seconds, report))
    else:
        show_summary(outcomes, seconds, report, fleet.interrupted)
    raise SystemExit(code)


def _modules(n: int) -> str:
    return f"{n} module" + ("" if n == 1 else "s")


def open_port_trace(stack: ExitStack, trace_path: str, port: str, firmware: str) -> TraceWriter:
    """One port's trace among several: ``F-PORTNAME.jsonl`` for ``--trace F.jsonl``."""
    p = Path(trace_path)
    return open_trace(stack, str(p.with_name(f"{p.stem}-{Path(port).name}{p.suffix}")),
                      (firmware,) if firmware else ())


def _confirm(ports: list[str], image: Image | None, provisioning: Any = None) -> None:
    what = "firmware" if image is not None else "LoRaWAN keys"
    if not sys.stdin or not sys.stdin.isatty():
        raise ConfirmationNeeded(f"about to write {what} to {_modules(len(ports))}, and there is no "
                                 f"terminal to confirm it")
    from ..errors import Aborted
    keys = f" and give each a row of {provisioning.batch.name}" if provisioning is not None and image else ""
    question = (f"Write {Path(image.path).name} to the modules on {', '.join(ports)}{keys}?" if image is not None
                else f"Give the modules on {', '.join(ports)} each a row of {provisioning.batch.name}?")
    if not ask_yes_no(question):
        raise Aborted("update not confirmed" if image is not None else "provisioning not confirmed")


def summary(outcomes: list[DeviceOutcome], seconds: float, report: ReportFile | None) -> dict:
    """The last JSON line of a run over several ports."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.result] = counts.get(o.result, 0) + 1
    failed = [o for o in outcomes if not o.ok]
    interrupted = any(o.result == "interrupted" for o in outcomes)
    return {"result": "interrupted" if interrupted else ("failed" if failed else "ok"),
            "modules": len(outcomes), "ok": sum(1 for o in outcomes if o.ok), "failed": len(failed),
            "results": counts, "seconds": round(seconds, 3),
            "report": report.path if report else None,
            **({"provisioned": sum(1 for o in outcomes
                                   if (o.provision or {}).get("result") in ("written", "already-written"))}
               if any(o.provision is not None for o in outcomes) else {}),
            "failures": [{"port": o.port, "error": o.result, "message": o.message, "hint": o.hint}
                         for o in failed]}


def show_summary(outcomes: list[DeviceOutcome], seconds: float, report: ReportFile | None,
                 interrupted: bool) -> None:
    s = summary(outcomes, seconds, report)
    words = ", ".join(f"{n} {r}" for r, n in s["results"].items())
    colour = "green" if s["result"] == "ok" else "red"
    out.print(f"[{colour}]{s['ok']} of {_modules(s['modules'])} done[/] in {seconds:.1f} s ({words})")
    for o in outcomes:
        if not o.ok:
            err.print(f"[red]{o.port}[/]: {o.result}: {o.message or ''}", markup=True)
            if o.hint:
                err.print(f"  hint: {o.hint}", markup=False)
    for o in outcomes:          # with a batch: which row went where
        p = o.provision or {}
        if p.get("dev_eui"):
            how = {"written": "written and read back", "already-written": "already written before",
                   "claimed": "claimed for it, not written yet: run the same command again to finish it",
                   "failed": "claimed for it, not written: run the same command again to write it"}
            out.print(f"{o.port}: {o.serial_number} has line {p['line']} of {p['batch']} (DevEUI {p['dev_eui']}), "
                      + how.get(p["result"], p["result"]), markup=False)
    if interrupted:
        err.print("interrupted: run the same command again to finish the modules that were cut off "
                  "(those already done say so and are left alone).")
    if report is not None:
        out.print(f"report: {len(outcomes)} lines appended to {report.path}")


class JsonFleet:
    """Every event as a JSON line with its ``port``; a ``device-result`` line per module."""

    def __call__(self, port: str, event: ev.Event) -> None:
        emit_json({**event.to_dict(), "port": port})

    def __enter__(self) -> JsonFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FleetView:
    """One live row per module on a terminal; without one (a log), a line per step and result."""

    COLUMNS = ("port", "module", "serial number", "phase", "progress", "result")

    def __init__(self, ports: list[str], verb: str = "updating") -> None:
        self.verb = verb
        self.rows = {p: DeviceOutcome(p) for p in ports}
        self.notes: list[str] = []
        self.live: Live | None = None
        self.terminal = err.is_terminal

    def __enter__(self) -> FleetView:
        if self.terminal:
            self.live = Live(self._render(), console=err, refresh_per_second=4, transient=False)
            self.live.start()
        else:
            err.print(f"{self.verb} {_modules(len(self.rows))}: {', '.join(self.rows)}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.stop()

    def __call__(self, port: str, event: ev.Event) -> None:
        row = self.rows[port]
        before = (row.phase, row.result)
        if isinstance(event, ev.Phase):
            row.phase = event.phase
            if event.info.get("bytes"):
                row.total = event.info["bytes"]
        elif isinstance(event, ev.Progress):
            row.bytes, row.total = event.bytes, event.total
        elif isinstance(event, ev.DeviceFound):
            row.module = event.info.get("module")
            row.serial_number = event.info.get("serial_number")
        elif isinstance(event, ev.Prompt) and event.action == "press-reset":
            row.phase = "press reset"
            self._say(f"{port}: {event.message}. Press this module's reset button now.")
        elif isinstance(event, ev.Countdown):
            row.phase = f"press reset ({event.seconds_left} s)"
        elif isinstance(event, ev.Caught):
            row.phase = "boot"
        elif isinstance(event, (ev.Warning, ev.Note)):
            self._say(f"{port}: {event.message}")
        elif isinstance(event, DeviceDone):
            r = event.info
            row.result, row.message = r["result"], r.get("message")
            row.module = r["module"] or row.module
            row.serial_number = r["serial_number"] or row.serial_number
            row.bytes = r["bytes"] or row.bytes
            row.phase = "done"
        if self.live is not None:
            self.live.update(self._render())
        elif (row.phase, row.result) != before and not row.phase.startswith("press reset ("):
            if row.result != "pending":
                err.print(f"{port}: {row.result}" + (f": {row.message}" if row.message else ""), markup=False)
            else:
                err.print(f"{port}: {LABELS.get(row.phase, row.phase)}", markup=False)

    def _say(self, text: str) -> None:
        if self.live is not None:
            self.notes = [*self.notes[-4:], text]
        else:
            err.print(text, markup=False)

    def _render(self) -> Group:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for c in self.COLUMNS:
            table.add_column(c, no_wrap=True)
        for row in self.rows.values():
            table.add_row(row.port, row.module or "-", row.serial_number or "-",
                          LABELS.get(row.phase, row.phase), self._progress(row), self._result(row))
        return Group(table, *(Text(n, style="yellow") for n in self.notes))

    @staticmethod
    def _progress(row: DeviceOutcome) -> Any:
        if not row.total:
            return "-"
        grid = Table.grid(padding=(0, 1))
        grid.add_row(ProgressBar(total=row.total, completed=row.bytes, width=20),
                     Text(f"{row.bytes / 1024:,.0f}/{row.total / 1024:,.0f} KiB"))
        return grid

    @staticmethod
    def _result(row: DeviceOutcome) -> Text:
        if row.result == "pending":
            return Text("…")
        style = "green" if row.result in ("ok", "already-up-to-date", "dry-run") else "red"
        return Text(row.result, style=style)

