"""``rakflash probes``: the debug probes pyOCD can see (for SWD recovery and INFO0)."""

from __future__ import annotations

from rich.table import Table

from .app import main
from .options import json_option
from .output import emit_json, out, read_only_command, reports_errors


@main.command()
@json_option()
@reports_errors(json_keys=("probes",))
def probes(as_json: bool) -> None:
    """List debug probes: CMSIS-DAP (RAKDAP1, DAPLink), J-Link, ST-Link.

    Needs pyOCD (pip install 'rakflash[swd]'); J-Link needs SEGGER's J-Link software too.
    """
    read_only_command()        # '| head' ends it quietly: it changes nothing
    from ..swd_link import list_probes
    found = list_probes()
    if as_json:
        emit_json({"probes": [p.to_dict() for p in found], "error": None})
        return
    if not found:
        out.print("no debug probe found (plug in a RAKDAP1 or another CMSIS-DAP probe, or a J-Link; "
                  "on Linux, pyOCD's udev rules give you access to it)")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("unique id", "kind", "vendor", "product"):
        table.add_column(col)
    for p in found:
        table.add_row(p.unique_id, p.kind, p.vendor or "-", p.product or "-")
    out.print(table)
    out.print("use one with: rakflash recover FILE --via swd --probe ID")
