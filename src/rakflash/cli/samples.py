"""``rakflash samples DIR``: sample firmware for every virtual module and every path."""

from __future__ import annotations

import click
from rich.markup import escape

from .app import main
from .options import json_option
from .output import emit_json, out, reports_errors


@main.command()
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=str))
@json_option()
@reports_errors
def samples(folder: str, as_json: bool) -> None:
    """Write sample firmware for trying every flow on the virtual modules (rakflash sim).

    An application .bin and a full .hex (bootloader included) for each
    module, the RAK11720's Apollo3 OTA blob, a RAK4631-R Secure DFU package
    signed with DIR/dfu-key.pem (start the simulator with
    'rakflash sim rak4631 --dfu-key DIR/dfu-key.pem' so its bootloader
    trusts it), an Arduino RAK4631 sketch as a legacy .zip and a .hex, and
    the RUI3 bootloader package 'convert-to-rui3' takes. They run only on
    the simulator. The README's "Try every flow without hardware" uses them.
    """
    from ..errors import UsageError
    from ..sim.samples import write_samples
    try:
        written = write_samples(folder)
    except OSError as exc:
        raise UsageError(f"can't write the samples into {folder}: {exc.strerror or exc}",
                           hint="Name a folder you can write to.") from None
    except ValueError as exc:
        raise UsageError(f"{folder}/dfu-key.pem is not an ECDSA P-256 key in PEM ({exc})",
                           hint="Delete it, and 'rakflash samples' makes a new one.") from None
    rows = [{**s.to_dict(), "path": f"{folder.rstrip('/')}/{s.name}",
             "use": s.use.replace("DIR", folder.rstrip("/"))} for s in written]
    if as_json:
        emit_json({"folder": folder, "files": rows})
        return
    width = max(len(r["file"]) for r in rows)
    out.print(f"sample firmware for the virtual modules (rakflash sim), in {escape(folder)}:")
    for r in rows:
        out.print(f"  {escape(r['file']):<{width}}  {escape(r['what'])}", soft_wrap=True)
    out.print("They run only on the simulator. The README's \"Try every flow without hardware\" "
              "walks through each one.")
