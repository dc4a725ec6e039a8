"""``rakflash ports``: serial ports, with the module each probably is."""

from __future__ import annotations

import click
from rich.table import Table

from .app import main
from .output import emit_json, out, read_only_command, reports_errors


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@reports_errors
def ports(as_json: bool) -> None:
    """List serial ports, with the module each probably is."""
    read_only_command()        # '| head' ends it quietly: it changes nothing
    from ..ports import list_serial_ports
    entries = list_serial_ports()
    if as_json:
        emit_json({"ports": [e.to_dict() for e in entries]})
        return
    if not entries:
        out.print("no serial ports found (is the module plugged in? on Linux, is your user in 'dialout'?)")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("port", "VID:PID", "description", "probably"):
        table.add_column(col)
    for e in entries:
        d = e.to_dict()
        description = (e.description or "-") + (" (virtual)" if e.virtual else "")
        table.add_row(e.device, d["vid_pid"] or "-", description, e.probably or "-")
    out.print(table)
