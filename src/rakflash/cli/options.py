"""Option types and the options several commands share."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Callable

import click

from .. import catalog as _catalog
from ..errors import UnknownDevice, UsageError
from ..link import Link
from ..trace import TraceWriter


class IntParam(click.ParamType):
    """A 32-bit address, decimal or 0x-hex."""

    name = "ADDRESS"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        try:
            number = value if isinstance(value, int) else int(value, 0)
        except ValueError:
            self.fail(f"{value!r} is not a number (use 0x08006000 or 134242304)", param, ctx)
        if not 0 <= number <= 0xFFFFFFFF:
            self.fail(f"{value!r} is not a 32-bit address", param, ctx)
        return number


BAUD = click.IntRange(300, 4_000_000)        # what serial adapters and the simulator can do


class _Seconds(click.FloatRange):
    """Seconds from 0 to an hour; 'nan' is not a number of seconds."""

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        seconds = super().convert(value, param, ctx)
        if seconds != seconds:
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


WINDOW = _Seconds(0, 3600)


def json_option(help: str = "Print JSON.") -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=help)


def module_option(required: bool = False) -> Callable:
    return click.option("--module", "-m", "module_name", required=required, metavar="MODULE",
                        help="Module name (rak3172, rak811, …); see 'rakflash modules'.")


def lookup_module(name: str | None) -> _catalog.Module | None:
    """The catalog module called ``name`` (None for None)."""
    if name is None:
        return None
    try:
        return _catalog.load().module(name)
    except KeyError:
        known = ", ".join(m.key for m in _catalog.load().modules.values())
        raise UnknownDevice(f"no module called {name!r}", hint=f"Known modules: {known}.") from None


def port_options(fn: Callable) -> Callable:
    """--port, --baud and --trace, for every command that talks to a serial port."""
    fn = click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
                      help="Record the raw serial exchange to FILE (JSON Lines).")(fn)
    fn = click.option("--baud", type=BAUD, default=None,
                      help="Baud rate to try first (default 115200; others are scanned).")(fn)
    fn = click.option("--port", "-p", required=True,
                      help="Serial port: /dev/ttyUSB0, COM3, socket://host:port.")(fn)
    return fn


def open_link(stack: ExitStack, port: str, baud: int | None, trace_path: str | None, *,
              parity: str = "N") -> Link:
    """Open ``port`` (recording a trace if asked); closed when ``stack`` unwinds."""
    trace = None
    if trace_path:
        try:
            trace = TraceWriter(trace_path)
        except OSError as exc:
            raise UsageError(f"cannot write the trace file {trace_path}: {exc.strerror or exc}",
                             hint="Give --trace a path in a folder you can write to.") from None
        stack.callback(trace.close)
    link = Link(port, baud or 115200, parity=parity, trace=trace)
    stack.callback(link.close)
    return link
