"""``rakflash info --port P``: what is on the other end of a serial port."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import click

from ..events import Phase
from ..flows.boot import peek_bootloader_version
from ..flows.identify import DeviceInfo, identify
from ..flows.lock import lock_again, opening
from ..link import Link
from . import output
from .app import main
from .options import (
    json_option,
    lookup_module,
    module_option,
    open_link,
    password_asker,
    password_option,
    pick_port,
    port_options,
    verbosity_options,
)
from .output import TerminalEvents, emit_json, print_device, read_only_command, reports_errors

DEVICE_KEYS = ("module", "mode", "app_version", "bootloader_version")


@main.command()
@port_options(picks=True)
@module_option()
@click.option("--ask-bootloader", is_flag=True,
              help="RUI v3 firmware (RAK811, RAK4270) doesn't tell its bootloader's version: enter the "
                   "bootloader for a moment to ask it, then start the application again.")
@password_option
@json_option()
@verbosity_options
@reports_errors(json_keys=DEVICE_KEYS)
def info(port: str, baud: int | None, trace_path: str | None, module_name: str | None,
         ask_bootloader: bool, password: str | None, as_json: bool) -> None:
    """Say what is on the other end of a serial port."""
    read_only_command()        # '| head' ends it quietly: it changes nothing
    module = lookup_module(module_name)
    port = pick_port(port)
    ask = password_asker(password)
    locked = None
    with ExitStack() as stack:
        link = open_link(stack, port, baud, trace_path)
        render = None
        if output.verbosity > 0:       # -v: every step and AT exchange, timed, on standard error
            render = stack.enter_context(TerminalEvents())
            render(Phase("identify", f"identifying the module on {port}"))
            link.on_step = render.step
        persons_part = _PersonsPart(stack, as_json)     # an ESP chip: hold GPIO0 and reset
        dev, opened = opening(link, lambda: identify(link, module=module, baud=baud, emit=persons_part),
                              password, ask)
        try:
            if ask_bootloader:
                link.step("asking the bootloader its version (--ask-bootloader)")
                _ask_bootloader(link, dev)
        finally:
            if opened:
                locked = lock_again(link, render or TerminalEvents(level=0))
                dev.notes.append("its AT port was locked: rakflash opened it with the password and "
                                 + ("locked it again" if locked else "could not lock it again (see the warning)"))
    if as_json:
        emit_json({**dev.to_dict(), **({"port_locked": True, "locked_again": locked} if opened else {})})
        return
    print_device(dev)


def _ask_bootloader(link: Link, dev: DeviceInfo) -> None:
    """Fill in the bootloader version an application couldn't tell, from the bootloader itself."""
    if dev.bootloader_version or dev.mode != "app" or dev.module is None:
        return
    version, back = peek_bootloader_version(link, dev.module)
    if version is None and not back:
        dev.notes.append("the bootloader could not be entered to ask its version")
        return
    dev.bootloader_version = version
    if back:
        dev.notes.append("bootloader version read in the bootloader itself; the application runs again")
    else:
        dev.notes.append("bootloader version read in the bootloader itself, but the application did not "
                         "start again: the module waits in its bootloader ('rakflash flash' goes on from "
                         "there, or power it off and on)")


class _PersonsPart:
    """What identification asks of the person (an ESP chip with no reset line: hold GPIO0 and
    press reset), shown as flash shows it; nothing is shown when nothing is asked."""

    def __init__(self, stack: ExitStack, as_json: bool) -> None:
        self.stack, self.as_json = stack, as_json
        self.render: Any = None           # made at the first event: JsonEvents or TerminalEvents

    def __call__(self, event) -> None:
        if self.render is None:
            from .output import JsonEvents
            self.render = self.stack.enter_context(JsonEvents() if self.as_json else TerminalEvents())
        self.render(event)
