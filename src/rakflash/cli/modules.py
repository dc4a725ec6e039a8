"""``rakflash modules``: the module catalog."""

from __future__ import annotations

import click
from rich.table import Table

from .. import catalog as _catalog
from ..flows.recover_stm32 import stm32flash_note
from .app import main
from .output import emit_json, out


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def modules(as_json: bool) -> None:
    """List the modules rakflash knows (the catalog)."""
    cat = _catalog.load()
    rows = [{"key": m.key, "name": m.name, "family": m.family, "mcu": m.mcu.name,
             "protocol": m.protocol, "app_base": m.app.start, "app_size": m.app.size,
             "swd_target": m.swd_target, "recovery": _recovery(m),
             "recover_command": m.recover_command(), "swd_command": m.swd_command(),
             "stm32flash_command": m.rom_uart_command() if m.recover_command() else None,
             "stm32flash_note": stm32flash_note(m) if m.recover_command() and m.rom_uart_command() else None,
             "rom_pins": dict(m.rom_access) or None,
             "inferred": list(m.inferred)} for m in cat.modules.values()]
    if as_json:
        emit_json({"modules": rows})
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("module", "family", "MCU", "serial update", "application", "SWD target"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["key"], r["family"], r["mcu"], r["protocol"],
                      f"{r['app_base']:#010x} ({r['app_size'] // 1024} KiB)", r["swd_target"])
    out.print(table)
    out.print("\nrecovery of a full image (FULL.hex), when the serial bootloader can't:")
    for r in rows:
        out.print(f"  {r['key']}: {r['recovery']}")
    unsure = [r for r in rows if r["inferred"]]
    if unsure:
        out.print("\nnot yet confirmed on real hardware (corrections from a --trace welcome):")
        for r in unsure:
            out.print(f"  {r['key']}: {'; '.join(r['inferred'])}")


def _recovery(m) -> str:
    """rakflash's own recovery commands, and the stm32flash equivalent for people who have it."""
    text = m.recovery_advice()
    if m.recover_command() and m.rom_uart_command():
        note = stm32flash_note(m)
        text += f" (the same with stm32flash, BOOT0 high: '{m.rom_uart_command()}'{'; ' + note if note else ''})"
    elif m.rom_access.get("none"):
        text += f" ({m.rom_access['none']})"
    return text
