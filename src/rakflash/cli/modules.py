"""``rakflash modules``: the module catalog."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from .. import catalog as _catalog
from ..flows.recover.stm32flash import stm32flash_note
from .app import main
from .output import emit_json, out, read_only_command


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def modules(as_json: bool) -> None:
    """List the modules rakflash knows (the catalog)."""
    read_only_command()        # '| head' ends it quietly: it changes nothing
    cat = _catalog.load()
    rows: list[dict[str, Any]] = [{"key": m.key, "name": m.name, "family": m.family, "mcu": m.mcu.name,
             "protocol": m.protocol, "app_base": m.app.start, "app_size": m.app.size,
             "swd_target": m.swd_target, "recovery": _recovery(m),
             "recover_command": m.recover_command(),
             "swd_command": m.swd_command() if m.swd_target else None,
             "esptool_command": m.esptool_command(),        # an ESP32 module's, through its ROM
             "esp": dict(m.esp) if m.esp else None,
             "stm32flash_command": m.rom_uart_command() if m.recover_command() else None,
             "stm32flash_note": stm32flash_note(m) if m.recover_command() and m.rom_uart_command() else None,
             "rom_pins": dict(m.rom_access) or None,
             "inferred": list(m.inferred), "aliases": list(m.aliases), "variant_of": m.variant_of,
             "hardware_models": list(m.hardware_models), "image_names": list(m.image_names),
             "takes_images_of": list(m.takes_images_of), "sources": list(m.sources),
             "companion": dict(m.companion) or None} for m in cat.modules.values()]
    if as_json:
        emit_json({"modules": rows})
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    # The module names and SWD targets are typed by people ('--module rak4631-arduino', 'pyocd
    # flash -t stm32wle5ccux'): never folded or cut; the other columns give way, folded, not cut.
    cells = [(r["key"], r["family"], r["mcu"], r["protocol"],
              f"{r['app_base']:#010x} ({r['app_size'] // 1024} KiB)", r["swd_target"] or "-") for r in rows]
    heads = ("module", "family", "MCU", "update", "application", "SWD target")
    words = [max(len(w) for c in [*cells, heads] for w in c[i].split()) for i in range(len(heads))]
    full = [max(len(c[i]) for c in [*cells, heads]) for i in range(len(heads))]
    # Where the table is wider than the terminal, the other columns keep their longest word whole
    # while there is room, chip names first; past that they fold (never '…'). Fixed widths, so
    # rich's narrowing (proportional over the columns that may wrap) only touches the others.
    gaps = 2 * (len(heads) - 1)
    natural = sum(full) + gaps
    widths = {0: full[0], 5: full[5]}
    if natural > out.width:
        def fits(w: dict) -> bool:      # with 4 characters for every column not given a width
            return sum(w.values()) + 4 * (len(heads) - len(w)) + gaps <= out.width
        for i in (2, 3, 4, 1):                  # whole words first…
            if fits({**widths, i: words[i]}):
                widths[i] = words[i]
        for i in (2, 3, 4, 1):                  # …then whole lines, where there is still room
            if i in widths and fits({**widths, i: full[i]}):
                widths[i] = full[i]
    for i, col in enumerate(heads):
        if i in (0, len(heads) - 1):
            table.add_column(col, no_wrap=True, min_width=widths[i])
        else:
            table.add_column(col, overflow="fold", width=widths.get(i) if natural > out.width else None)
    for c in cells:
        table.add_row(*c)
    out.print(table)
    out.print("\nrecovery of a full image (FULL.hex), when the serial bootloader can't:")
    for r in rows:
        out.print(f"  {r['key']}: {r['recovery']}")
    told = [r for r in rows if r["hardware_models"] or r["aliases"]]
    if told:
        out.print("\nhow a module tells which it is (AT+HWMODEL=? · its images' version strings end in) "
                  "and other names it goes by:")
        for r in told:
            said = " · ".join(filter(None, [", ".join(r["hardware_models"]),
                                            ", ".join(f"_{n}" for n in r["image_names"])]))
            also = [f"also takes {', '.join(r['takes_images_of'])} images"] if r["takes_images_of"] else []
            if r["aliases"]:
                also.append(f"also called {', '.join(r['aliases'])}")
            if r["companion"]:
                also.append(f"with an {r['companion']['chip']} ({r['companion']['firmware']}) rakflash "
                            f"does not update")
            out.print(f"  {r['key']}: {said or '-'}" + "".join(f"; {a}" for a in also))
    sourced = [r for r in rows if r["sources"]]
    if sourced:
        out.print("\nsources (docs/protocols.md has them all):")
        for r in sourced:
            out.print(f"  {r['key']}: {'; '.join(r['sources'])}")
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
