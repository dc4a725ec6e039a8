"""``rakflash doctor [--port P] [--for FILE]``: what is wrong with the module, and what to type next."""

from __future__ import annotations

from contextlib import ExitStack

import click

from ..flows.doctor import Report, diagnose
from .app import main
from .options import BAUD, json_option, lookup_module, module_option, open_trace
from .output import emit_json, out, read_only_command, reports_errors

MARKS = {"ok": "[green]✓[/]", "note": "[cyan]•[/]", "action": "[yellow]![/]", "problem": "[red]✗[/]"}


@main.command()
@click.option("--port", "-p", help="The serial port to check (default: every port whose USB ids may be a module).")
@click.option("--baud", type=BAUD, default=None, help="Baud rate to try first (others are scanned).")
@click.option("--for", "image_path", type=click.Path(dir_okay=True, path_type=str), metavar="FILE",
              help="Also check whether this firmware fits the module, and what stands in the way.")
@module_option()
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
              help="Record the raw serial exchange to FILE (JSON Lines); without --port, one file per port (FILE-PORTNAME).")
@json_option("Print the findings as one JSON object.")
@reports_errors
def doctor(port: str | None, baud: int | None, image_path: str | None, module_name: str | None,
           trace_path: str | None, as_json: bool) -> None:
    """Say what is wrong with a module and what to type next (within 20 s per port).

    Checks the port (missing, busy — naming the program —, no permission, gone),
    what answers on it at each baud rate (the application, its bootloader, a
    flooding sketch, garbage, silence, something that is not a RAK module) and,
    with --for FILE, whether that firmware fits and what stands in the way.
    Nothing is written to the module. Exit status 0 when nothing stands in the
    way, else the code of the first problem's kind (4 port, 5 device, 6 plan, 3 image).
    """
    read_only_command()        # '| head' ends it quietly: it changes nothing
    module = lookup_module(module_name)
    with ExitStack() as stack:
        trace, trace_for = None, None
        if trace_path and port is not None:
            trace = open_trace(stack, trace_path)
        elif trace_path:                 # every module port: one trace each, F-PORTNAME.jsonl
            from .fleet import open_port_trace
            trace_for = lambda p: open_port_trace(stack, trace_path, p, image_path or "")  # noqa: E731
        report = diagnose(port, image_path=image_path, module=module, baud=baud, trace=trace,
                          trace_for=trace_for)
    if as_json:
        emit_json(report.to_dict())
    else:
        show_report(report)
    raise SystemExit(report.exit_code)


def show_report(report: Report) -> None:
    """The findings for people: a mark, the finding, then why and what next."""
    port = None
    for f in report.findings:
        if f.port != port and f.port is not None:
            out.print(f"[bold]{f.port}[/]")
            port = f.port
        out.print(f"{MARKS[f.level]} {f.finding}", markup=True)
        out.print(f"  why   {f.why}", markup=False)
        out.print(f"  next  {f.next}", markup=False)
        if f.command:
            out.print(f"        {f.command}", markup=False)
    problems = len(report.problems)
    out.print(f"[dim]{problems or 'no'} problem{'' if problems == 1 else 's'} found in "
              f"{report.seconds:.1f} s (doctor takes at most {report.budget:.0f} s per port)[/]")
