"""Option types and the options several commands share."""

from __future__ import annotations

import errno
import os
from contextlib import ExitStack
from typing import Any, Callable, overload

import click

from .. import catalog as _catalog
from ..errors import PortNotFound, UsageError
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


class Real(click.FloatRange):
    """A float within a range; 'nan' is in no range (click's FloatRange lets it through)."""

    def __init__(self, min: float | None = None, max: float | None = None, *, what: str = "a number",
                 **kw: Any) -> None:
        super().__init__(min, max, **kw)
        self.what = what

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        number = super().convert(value, param, ctx)
        if number != number:
            self.fail(f"{value!r} is not {self.what}", param, ctx)
        return number


WINDOW = Real(0, 3600, what="a number of seconds")
PROBABILITY = Real(0, 1, what="a probability (0 to 1)")


class CmsisPack(click.ParamType):
    """A CMSIS device pack file (``--pack``): a zip archive with a ``.pdsc`` description."""

    name = "pack"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        from ..swd_link import pack_devices
        path = click.Path(dir_okay=False, exists=True, path_type=str).convert(value, param, ctx)
        try:
            devices = pack_devices(path)
        except ValueError as exc:
            self.fail(f"{value} is not a CMSIS device pack ({exc}): a .pack is a zip archive with a "
                      f".pdsc description, as 'pyocd pack install' downloads it", param, ctx)
        if not devices:
            self.fail(f"{value} describes no device (its .pdsc has no <device Dname=…>)", param, ctx)
        return path


class ModuleName(click.ParamType):
    """A module of the catalog, by key, name or alias; gives its key. Completes in the shell."""

    name = "MODULE"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        try:
            return _catalog.load().module(str(value)).key
        except KeyError:
            self.fail(f"no module called {value!r}; known modules: {known_modules()}", param, ctx)

    def shell_complete(self, ctx: Any, param: Any, incomplete: str) -> list:
        from click.shell_completion import CompletionItem
        return [CompletionItem(m.key, help=m.name) for m in _catalog.load().modules.values()
                if m.key.startswith(incomplete.lower())]


def known_modules() -> str:
    return ", ".join(m.key for m in _catalog.load().modules.values())


class PortName(click.ParamType):
    """A serial port name: not empty. Completes with the ports the system lists."""

    name = "PORT"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value).strip()
        if not text:
            self.fail("the port name is empty; name a serial port such as /dev/ttyUSB0 or COM3 "
                      "('rakflash ports' lists them)", param, ctx)
        return text

    def shell_complete(self, ctx: Any, param: Any, incomplete: str) -> list:
        from click.shell_completion import CompletionItem

        from ..ports import list_serial_ports
        return [CompletionItem(p.device) for p in list_serial_ports() if p.device.startswith(incomplete)]


def json_option(help: str = "Print JSON.") -> Callable:
    return click.option("--json", "as_json", is_flag=True, help=help)


def module_option(required: bool = False) -> Callable:
    return click.option("--module", "-m", "module_name", required=required, type=ModuleName(),
                        help="Module name (rak3172, rak811, …); see 'rakflash modules'.")


@overload
def lookup_module(name: str) -> _catalog.Module: ...
@overload
def lookup_module(name: str | None) -> _catalog.Module | None: ...
def lookup_module(name: str | None) -> _catalog.Module | None:
    """The catalog module called ``name`` (None for None); an unknown name is a usage error."""
    if name is None:
        return None
    try:
        return _catalog.load().module(name)
    except KeyError:
        raise UsageError(f"no module called {name!r}",
                         hint=f"Known modules: {known_modules()}.") from None


def port_options(fn: Callable | None = None, *, required: bool = True, several: bool = False,
                 picks: bool = False) -> Callable:
    """--port, --baud and --trace, for every command that talks to a serial port
    (``@port_options``, or ``@port_options(required=False)`` where a port is optional).

    ``several=True``: --port may be given more than once (a tuple; the command
    checks that there is at least one, or another way to pick ports such as --all).
    ``picks=True``: without --port the command picks the only port that looks like a
    module's (:func:`pick_port`).
    """
    if fn is None:
        return lambda f: port_options(f, required=required, several=several, picks=picks)
    fn = click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
                      help="Record the raw serial exchange to FILE (JSON Lines)"
                           + ("; with several ports, one file per port (FILE-PORTNAME)." if several
                              else "."))(fn)
    fn = click.option("--baud", type=BAUD, default=None,
                      help="Baud rate to try first (default 115200; others are scanned).")(fn)
    picked = (" Without it: the one port whose USB ids are a module's or a USB-UART bridge's, if "
              "there is exactly one." if picks else "")
    if several:
        fn = click.option("--port", "-p", multiple=True, type=PortName(),
                          help="Serial port: /dev/ttyUSB0, COM3, socket://host:port. Give it several "
                               "times to update several modules at once." + picked)(fn)
    else:
        fn = click.option("--port", "-p", required=required and not picks, type=PortName(),
                          help="Serial port: /dev/ttyUSB0, COM3, socket://host:port." + picked)(fn)
    return fn


def open_link(stack: ExitStack, port: str, baud: int | None, trace_path: str | None, *,
              parity: str = "N", keep: tuple[str, ...] = ()) -> Link:
    """Open ``port`` (recording a trace if asked); closed when ``stack`` unwinds.

    ``keep``: files the trace must not overwrite (the firmware being written).
    """
    trace = open_trace(stack, trace_path, keep) if trace_path else None
    try:
        link = Link(port, baud or 115200, parity=parity, trace=trace)
    except PortNotFound as exc:
        exc.hint = _moved_hint(port) or exc.hint
        raise
    stack.callback(link.close)
    return link


def open_trace(stack: ExitStack, trace_path: str, keep: tuple[str, ...] = ()) -> TraceWriter:
    """Open the ``--trace`` file for writing (closed when ``stack`` unwinds), or a usage error
    saying why not; ``keep``: files it must not overwrite (the firmware being written)."""
    for path in keep:
        if _same_file(trace_path, path):
            raise UsageError(f"--trace names the firmware file {path}: recording the trace "
                             f"would overwrite the firmware",
                             hint="Give --trace another file name.")
    try:
        trace = TraceWriter(trace_path)
    except OSError as exc:
        raise UsageError(f"cannot write the trace file {trace_path}: {why_unwritable(exc)}",
                         hint="Give --trace a path in a folder you can write to.") from None
    stack.callback(trace.close)
    return trace


def why_unwritable(exc: OSError) -> str:
    """Why a file named by an option (--trace, --report) can't be written, in words: the OS's,
    except for a FIFO nothing reads (opened without blocking, it fails with ENXIO)."""
    return "it is a FIFO and nothing reads it" if exc.errno == errno.ENXIO else exc.strerror or str(exc)


def _moved_hint(port: str) -> str | None:
    """Where a vanished port's module may be now: a native USB port gets a new name when the
    module restarts into its bootloader or is plugged in again (ttyACM0 becomes ttyACM1)."""
    from ..flows.discovery import module_ports
    others = [e for e in module_ports() if e.device != port]
    if not others:
        return None
    where = "; ".join(f"{e.device} ({e.probably or e.description})" for e in others[:3])
    again = (f"run the same command with --port {others[0].device}" if len(others) == 1
             else "run the same command with the right --port")
    return (f"The module may have moved to another port (a native USB port is renamed when the "
            f"module restarts into its bootloader or is plugged in again): {where}. If so, {again}.")


def load_image(path: str, address: int | None, module: _catalog.Module | None):
    """Load a firmware file for a command; ``--address`` with a file that carries its own
    addresses (Intel HEX) is a usage error rather than silently ignored."""
    from .. import images
    image = images.load(path, address=address, module=module)
    if address is not None and image.format == "hex":
        raise UsageError(f"--address places a .bin file, but {path} is Intel HEX, which carries "
                         f"its own addresses",
                         hint="Leave out --address for a .hex file.")
    return image


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def verbosity_options(fn: Callable) -> Callable:
    """-v / -q: how much the terminal output says (on the command group and on the commands
    that show progress, so either place works: ``rakflash -q flash …``, ``rakflash flash … -q``)."""
    from . import output

    def level(value: int) -> Callable:
        def set_level(ctx: click.Context, param: click.Parameter, flag: bool) -> None:
            if not flag:
                return
            if output.verbosity not in (0, value):
                raise click.UsageError("-v and -q contradict each other: give one", ctx=ctx)
            output.verbosity = value
        return set_level

    fn = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=level(-1),
                      help="Say less: no plan, notes or progress bar; warnings, errors and the "
                           "result line only.")(fn)
    fn = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=level(1),
                      help="Say more: a line for every step with the time since the start, and "
                           "every retry with its reason.")(fn)
    return fn


def pick_port(port: str | None) -> str:
    """``port``, or — none given — the only port that looks like a module's (its USB ids are a
    module's or a USB-UART bridge's, as ``rakflash ports`` shows), said on standard error."""
    if port:
        return port
    from ..flows.discovery import module_ports
    from .output import err, known, verbosity
    found = module_ports()
    if len(found) != 1:
        which = ("no serial port looks like a module's" if not found else
                 f"{len(found)} ports could be a module's: {', '.join(e.device for e in found)}")
        raise UsageError(f"no --port given, and {which}",
                         hint="Name the port with --port ('rakflash ports' lists them, with what each "
                              "probably is).")
    entry = found[0]
    known["port"] = entry.device
    if verbosity >= 0:
        err.print(f"port: {entry.device} ({entry.probably or entry.description}), the only port that "
                  f"looks like a module's", markup=False, highlight=False)
    return entry.device


def password_option(fn: Callable) -> Callable:
    """--password: a locked RUI3 AT port's password (AT+PWORD)."""
    return click.option("--password", metavar="PASSWORD",
                        help="The password of a RUI3 module whose AT port is locked (AT+LOCK; set with "
                             "AT+PWORD). rakflash opens the port with it and locks it again when done. "
                             "Without it, rakflash asks on a terminal, never showing what you type; "
                             "the password never appears in its output, a --trace file or a report.")(fn)


def password_asker(password: str | None) -> Callable[[], str | None] | None:
    """How a command gets a locked port's password: --password (checked now), else a prompt on
    a terminal that never shows what is typed, else none (the port-locked error stands)."""
    import sys

    from ..flows.lock import check_password
    if password is not None:
        check_password(password)
        return lambda: password
    if sys.stdin is None or not sys.stdin.isatty():
        return None

    def ask() -> str | None:
        answer = click.prompt("The module's AT port is locked. Its password (not shown)", hide_input=True,
                              default="", show_default=False, err=True)
        return check_password(answer) if answer else None
    return ask
