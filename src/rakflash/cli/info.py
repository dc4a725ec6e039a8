"""``rakflash info --port P``: what is on the other end of a serial port."""

from __future__ import annotations

from contextlib import ExitStack

from ..flows.identify import identify
from .app import main
from .options import json_option, lookup_module, module_option, open_link, port_options
from .output import emit_json, print_device, reports_errors

DEVICE_KEYS = ("module", "mode", "app_version", "bootloader_version")


@main.command()
@port_options
@module_option()
@json_option()
@reports_errors(json_keys=DEVICE_KEYS)
def info(port: str, baud: int | None, trace_path: str | None, module_name: str | None, as_json: bool) -> None:
    """Say what is on the other end of a serial port."""
    module = lookup_module(module_name)
    with ExitStack() as stack:
        link = open_link(stack, port, baud, trace_path)
        dev = identify(link, module=module, baud=baud)
    if as_json:
        emit_json(dev.to_dict())
        return
    print_device(dev)
