"""``rakflash demo``: a virtual module updated end to end, no hardware needed."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path

import click

from .. import catalog as _catalog
from .. import images
from ..flows.identify import identify
from ..flows.planning import make_plan
from ..flows.update import run_update
from . import output
from .app import main
from .flash import done_line
from .options import json_option, open_link, verbosity_options
from .output import TerminalEvents, emit_json, out, print_device, reports_errors, show_plan, show_settings


@main.command()
@click.option("--module", "-m", "module_name", default="rak3172", show_default=True,
              type=click.Choice(["rak3172", "rak811", "rak11720"]), help="Which virtual module to update.")
@click.option("--size", type=click.IntRange(512), default=24 * 1024, show_default=True,
              help="Size of the new application, in bytes (at most the module's application region).")
@json_option()
@verbosity_options
@reports_errors
def demo(module_name: str, size: int, as_json: bool) -> None:
    """Update a virtual module end to end, no hardware needed.

    The virtual module is served on a pseudo-terminal where the system has them
    (Linux, macOS) and over TCP on this computer elsewhere (Windows:
    rfc2217://127.0.0.1:PORT); RAKFLASH_SIM_TRANSPORT=tcp or pty forces one.

    The virtual module runs at 115200 baud with a USB-UART's turnaround
    latency and its MCU's datasheet flash timings, so what you see is what
    the same update takes on a real module.
    """
    from ..sim import SimOptions, create, firmware
    module = _catalog.load().module(module_name)
    if size > module.app.size:
        raise click.BadParameter(f"{size:,} bytes do not fit {module.name}'s application region "
                                 f"({module.app.size:,} bytes)", param_hint="'--size'")
    boot_v, old_v, new_v = firmware.DEFAULT_VERSIONS[module.key]
    # -q: the result and any warning only, as for 'flash' (no module table, plan or progress).
    chatty = not as_json and output.verbosity >= 0
    from ..sim.transport import default_transport
    try:
        transport = default_transport()        # a pty where the system has them, else TCP
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    with create(module.key, SimOptions(latency_ms=1.0, app_version=old_v, transport=transport)) as dev, \
            tempfile.TemporaryDirectory() as tmp:
        new_file = Path(tmp) / f"{module.name}_{new_v}.bin"
        new_file.write_bytes(firmware.app_image(module, new_v, size))
        if chatty:
            out.print(f"virtual {module.name} serving on {dev.port} (115200 baud, 1 ms latency)")
            out.print(f"new firmware {new_file.name}: {size:,} bytes\n")
        with ExitStack() as stack:
            link = open_link(stack, dev.port, 115200, None)
            device = identify(link)      # the virtual module says what it is, as a real one does
            if chatty:
                print_device(device)
                out.print()
            plan = make_plan(images.load(new_file), device, module=module)
            if as_json:
                result = run_update(link, plan)
            else:
                if chatty:
                    show_plan(plan.to_dict(link.baud))
                with TerminalEvents() as render:
                    result = run_update(link, plan, emit=render)
        after = dev.app_version
    if as_json:
        emit_json({**result.to_dict(), "port": device.port, "error": None, "flash_reports": after})
        return
    out.print(f"[green]done[/]: {done_line(result, device)}. The virtual module's flash now holds {after}.")
    show_settings(result.settings)
