"""``rakflash convert-to-rui3 BOOTLOADER.zip APP.zip --port P``: an Arduino RAK4631 becomes a RAK4631-R."""

from __future__ import annotations

import sys
from contextlib import ExitStack

import click

from ..errors import ConfirmationNeeded
from ..flows.convert import convert_to_rui3
from .app import main
from .options import json_option, load_image, open_link, port_options
from .output import JsonEvents, TerminalEvents, ask_yes_no, emit_json, out, reports_errors

KEYS = ("result", "app_version_before", "app_version_after", "bytes", "seconds")


@main.command("convert-to-rui3")
@click.argument("bootloader_pkg", metavar="BOOTLOADER.zip", type=click.Path(dir_okay=True, path_type=str))
@click.argument("app_pkg", metavar="APP.zip", type=click.Path(dir_okay=True, path_type=str))
@port_options
@click.option("--yes", "-y", is_flag=True, help="Answer the confirmation with yes (for scripts).")
@json_option("Print JSON progress events and a JSON result line.")
@reports_errors(json_keys=KEYS)
def convert(bootloader_pkg: str, app_pkg: str, port: str, baud: int | None, trace_path: str | None,
            yes: bool, as_json: bool) -> None:
    """Turn an Arduino RAK4631 into a RAK4631-R: RUI3's bootloader, then the RUI3 application.

    BOOTLOADER.zip is RAK's RUI3 bootloader package for the Adafruit bootloader
    (rui3_nrf52840_bootloader_latest.zip); APP.zip the RUI3 application package.
    """
    bootloader = load_image(bootloader_pkg, None, None)
    app = load_image(app_pkg, None, None)
    with ExitStack() as stack:
        link = open_link(stack, port, baud, trace_path)
        render = stack.enter_context(JsonEvents() if as_json else TerminalEvents())

        def confirm(dev) -> bool:
            if yes:
                return True
            if not sys.stdin or not sys.stdin.isatty():
                raise ConfirmationNeeded("about to replace the module's bootloader, and there is no "
                                         "terminal to confirm it")
            return ask_yes_no(f"Replace the Adafruit bootloader of the RAK4631 on {port} with RUI3's "
                              f"(Arduino sketches can't be uploaded to it afterwards), then flash RUI3?")

        result = convert_to_rui3(link, bootloader, app, emit=render, confirm=confirm)
    if as_json:
        emit_json(result.to_dict())
        return
    out.print(f"[green]done[/]: the module is a RAK4631-R running {result.app_version_after}")
