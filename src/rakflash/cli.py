"""The ``rakflash`` command line: a thin layer over the Python API.

Each command parses its arguments, calls the API, and renders the result as
text for people or as JSON (``--json``) for machines. Errors from
:mod:`rakflash.errors` become one ``error:`` line and one ``hint:`` line (or a
JSON object) and the documented exit code; never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
from contextlib import ExitStack
from typing import Any, Callable

import click
from rich.console import Console
from rich.table import Table

from . import __version__, catalog as _catalog, images
from .errors import Aborted, AlreadyUpToDate, RakflashError, UnknownDevice, UsageError
from .flows.identify import identify
from .link import Link
from .trace import TraceWriter

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _int(text: str) -> int:
    return int(text, 0)


class IntParam(click.ParamType):
    name = "ADDRESS"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        try:
            number = value if isinstance(value, int) else _int(value)
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


def emit_json(obj: dict) -> None:
    click.echo(json.dumps(obj, default=str))


DEVICE_KEYS = ("module", "mode", "app_version", "bootloader_version")

# What a command has learnt so far (e.g. the version running before an update),
# so that a JSON error line still carries it.
_known: dict[str, Any] = {}


def reports_errors(fn: Callable | None = None, *, json_keys: tuple[str, ...] = ()) -> Callable:
    """Turn rakflash errors into one clear line and an exit code.

    With ``--json`` the error is a JSON object; ``json_keys`` are always
    present in it (null when unknown), so scripts can read one shape.
    """
    if fn is None:
        return functools.partial(reports_errors, json_keys=json_keys)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)
        _known.clear()

        def base(result: str) -> dict:
            b = {k: None for k in json_keys}
            if "port" in kwargs:
                b["port"] = kwargs["port"]
            b.update({k: v for k, v in _known.items() if k in b or k == "module"})
            if "result" in b:
                b["result"] = result
            return b

        try:
            try:
                return fn(*args, **kwargs)
            except click.Abort:        # Ctrl-C or Ctrl-D at a confirmation prompt
                raise Aborted("update not confirmed (the prompt was closed)") from None
        except RakflashError as exc:
            if exc.exit_code == 0:      # nothing to do is not a failure
                if as_json:
                    emit_json({**base(exc.name), **exc.details, "message": exc.message, "error": None})
                else:
                    out.print(f"{exc.message}. {exc.hint}")
                sys.exit(0)
            if as_json:
                emit_json({**base(exc.name), **_error_json(exc, kwargs)})
            else:
                err.print(f"[bold red]error:[/] {exc.message}", markup=True)
                if exc.hint:
                    err.print(f"[bold]hint:[/] {exc.hint}", markup=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException):
            raise                  # click's own ways out keep their meaning
        except Exception as exc:   # a bug in rakflash: one line and the way to report it
            if os.environ.get("RAKFLASH_DEBUG"):
                raise
            message = f"internal error: {exc.__class__.__name__}: {exc}"
            hint = ("This is a bug in rakflash. Please report it with the command, its output and "
                    "a --trace file (RAKFLASH_DEBUG=1 shows the traceback).")
            if as_json:
                emit_json({**base("internal-error"), "error": "internal-error", "message": message,
                           "hint": hint})
            else:
                err.print(f"error: {message}", markup=False)
                err.print(f"hint: {hint}", markup=False)
            sys.exit(1)
        except KeyboardInterrupt:
            hint = ("If an update was under way, the module waits in its bootloader: run the "
                    "same command again to finish it.")
            if as_json:
                emit_json({**base("interrupted"), "error": "interrupted",
                           "message": "interrupted (Ctrl-C)", "hint": hint})
            else:
                err.print(f"interrupted. {hint}")
            sys.exit(130)

    return wrapper


def _error_json(exc: RakflashError, kwargs: dict) -> dict:
    d = {"error": exc.name, "message": exc.message, "hint": exc.hint}
    d.update({k: v for k, v in exc.details.items() if k not in d})
    return d


def _module_option(required: bool = False) -> Callable:
    return click.option("--module", "-m", "module_name", required=required, metavar="MODULE",
                        help="Module name (rak3172, rak811, …); see 'rakflash modules'.")


def _lookup_module(name: str | None) -> _catalog.Module | None:
    if name is None:
        return None
    try:
        return _catalog.load().module(name)
    except KeyError:
        known = ", ".join(m.key for m in _catalog.load().modules.values())
        raise UnknownDevice(f"no module called {name!r}", hint=f"Known modules: {known}.") from None


class _Rakflash(click.Group):
    """The command group; a usage error under ``--json`` is a JSON line too."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("standalone_mode", None)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            argv = kwargs.get("args") or (args[0] if args else None) or sys.argv[1:]
            if "--json" in argv:
                emit_json({"result": "usage", "error": "usage", "message": exc.format_message(),
                           "hint": "See 'rakflash COMMAND --help'."})
            else:
                exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            err.print("aborted")
            sys.exit(Aborted.exit_code)


@click.group(cls=_Rakflash, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rakflash")
def main() -> None:
    """Firmware update and recovery for RAKwireless LoRa modules."""


# ---------------------------------------------------------------- inspect
@main.command()
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--address", type=IntParam(), help="Base address of a .bin (default: the target module's application base).")
@_module_option()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@reports_errors
def inspect(file: str, address: int | None, module_name: str | None, as_json: bool) -> None:
    """Say what a firmware file is: format, segments, target, regions, versions."""
    module = _lookup_module(module_name)
    img = images.load(file, address=address, module=module)
    info = images.analyse(img, module=module)
    if as_json:
        emit_json(info.to_dict())
        return
    _print_inspect(info)


def _print_inspect(info: images.ImageInfo) -> None:
    img = info.image
    names = {"bin": "raw binary", "hex": "Intel HEX", "apollo3-ota": "Apollo3 OTA blob (48-byte header + application)"}
    out.print(f"file      {img.path}")
    out.print(f"format    {names.get(img.format, img.format)}, {img.file_size:,} bytes on disk, {img.size:,} bytes of data")
    out.print(f"sha256    {img.sha256}")
    if img.format != "hex":
        how = {"--address": "given with --address", "catalog": "the target module's application base (catalog)",
               "blob header": "the blob header's load address",
               "default": "unknown target: assumed 0; give --address"}[img.base_source]
        out.print(f"base      {img.low:#010x} ({how})")
    if img.start_address is not None:
        out.print(f"start     {img.start_address:#010x} (start address record)")
    if info.module:
        vec = f"SP {info.vector[0]:#010x}, reset {info.vector[1]:#010x}" if info.vector else "no vector table"
        out.print(f"target    {info.module.name} ({info.mcu.name}) — from the vector table: {vec}")
    elif info.mcu:
        out.print(f"target    {info.mcu.name}, no module in the catalog")
    else:
        out.print("target    unknown: no Cortex-M vector table of a known MCU at the start of the image")
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("segment start")
    table.add_column("end")
    table.add_column("size", justify="right")
    for s in img.segments:
        table.add_row(f"{s.start:#010x}", f"{s.end:#010x}", f"{s.size:,}")
    out.print(table)
    if info.regions:
        rt = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        rt.add_column("region")
        rt.add_column("range")
        rt.add_column("covered", justify="right")
        for r in info.regions:
            rt.add_row(r.name, f"{r.start:#010x}-{r.end:#010x}", f"{r.bytes:,} of {r.end - r.start:,}")
        out.print(rt)
        if info.outside:
            out.print(f"[yellow]{info.outside:,} bytes lie outside the module's known regions[/]")
    out.print(f"versions  application: {info.app_version or '-'}; bootloader: {info.bootloader_version or '-'}")
    if img.ota_header is not None:
        h = img.ota_header
        out.print(f"ota       load {h.load_address:#x}, length {h.length:,}, crc {h.crc:#010x} (checked), "
                  f"version {h.version}, binary type {h.binary_type}, storage type {h.storage_type}, "
                  f"{'encrypted' if h.encrypted else 'not encrypted'}")


# ---------------------------------------------------------------- ports
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@reports_errors
def ports(as_json: bool) -> None:
    """List serial ports, with the module each probably is."""
    from .ports import list_serial_ports
    entries = list_serial_ports()
    if as_json:
        emit_json({"ports": [e.to_dict() for e in entries]})
        return
    if not entries:
        out.print("no serial ports found (is the module plugged in? on Linux, is your user in 'dialout'?)")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("port", "VID:PID", "description", "probably"):
        table.add_column(col)
    for e in entries:
        d = e.to_dict()
        table.add_row(e.device, d["vid_pid"] or "-", e.description or "-", e.probably or "-")
    out.print(table)


# ---------------------------------------------------------------- modules
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def modules(as_json: bool) -> None:
    """List the modules rakflash knows (the catalog)."""
    cat = _catalog.load()
    rows = [{"key": m.key, "name": m.name, "family": m.family, "mcu": m.mcu.name,
             "protocol": m.protocol, "app_base": m.app.start, "app_size": m.app.size,
             "swd_target": m.swd_target, "recovery": m.recovery_advice(),
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


# ---------------------------------------------------------------- info
def _port_options(fn: Callable) -> Callable:
    fn = click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
                      help="Record the raw serial exchange to FILE (JSON Lines).")(fn)
    fn = click.option("--baud", type=BAUD, default=None, help="Baud rate to try first (default 115200; others are scanned).")(fn)
    fn = click.option("--port", "-p", required=True, help="Serial port: /dev/ttyUSB0, COM3, socket://host:port.")(fn)
    return fn


def _open_link(stack: ExitStack, port: str, baud: int | None, trace_path: str | None) -> Link:
    trace = None
    if trace_path:
        try:
            trace = TraceWriter(trace_path)
        except OSError as exc:
            raise UsageError(f"cannot write the trace file {trace_path}: {exc.strerror or exc}",
                             hint="Give --trace a path in a folder you can write to.") from None
        stack.callback(trace.close)
    link = Link(port, baud or 115200, trace=trace)
    stack.callback(link.close)
    return link


@main.command()
@_port_options
@_module_option()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@reports_errors(json_keys=DEVICE_KEYS)
def info(port: str, baud: int | None, trace_path: str | None, module_name: str | None, as_json: bool) -> None:
    """Say what is on the other end of a serial port."""
    module = _lookup_module(module_name)
    with ExitStack() as stack:
        link = _open_link(stack, port, baud, trace_path)
        dev = identify(link, module=module, baud=baud)
    if as_json:
        emit_json(dev.to_dict())
        return
    _print_device(dev)


def _print_device(dev: Any) -> None:
    rows = [("port", f"{dev.port} at {dev.baud} baud"),
            ("module", (dev.module.name if dev.module else "unknown") + ("" if dev.module_certain else " (probably)")),
            ("mode", "application running" if dev.mode == "app" else "in its bootloader"),
            ("application", dev.app_version or ("-" if dev.mode == "app" else "- (the bootloader can't tell)")),
            ("bootloader", dev.bootloader_version or "-"),
            ("hardware", dev.hardware_model or "-"), ("hardware id", dev.hardware_id or "-"),
            ("serial number", dev.serial_number or "-"), ("AT dialect", dev.dialect)]
    for k, v in rows:
        out.print(f"{k:<14}{v}")
    for n in dev.notes:
        out.print(f"[yellow]note:[/] {n}")


# ---------------------------------------------------------------- flash
FLASH_KEYS = ("result", "app_version_before", "app_version_after", "bytes", "seconds")


@main.command()
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@_port_options
@_module_option()
@click.option("--address", type=IntParam(), help="Base address of a .bin (default: the module's application base).")
@click.option("--dry-run", is_flag=True, help="Print the plan (steps, bytes, estimated time) and exit.")
@click.option("--yes", "-y", is_flag=True, help="Answer every confirmation with yes (for scripts and CI).")
@click.option("--force", is_flag=True, help="Write even if the same version already runs, or past the compatibility check.")
@click.option("--reset-window", type=WINDOW, default=30.0, show_default=True, metavar="S",
              help="When the firmware floods the port: how long to wait for a reset press.")
@click.option("--reset-with", type=click.Choice(["rts", "dtr"]),
              help="The adapter's RTS or DTR line is wired to the module's reset: pulse it instead of asking.")
@click.option("--keep-settings/--no-keep-settings", default=True, show_default=True,
              help="Read the LoRaWAN keys and settings before the update, check them after it, "
                   "and write back any the new firmware lost.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON progress events and a JSON result line.")
@reports_errors(json_keys=FLASH_KEYS)
def flash(file: str, port: str, baud: int | None, trace_path: str | None, module_name: str | None,
          address: int | None, dry_run: bool, yes: bool, force: bool, reset_window: float,
          reset_with: str | None, keep_settings: bool, as_json: bool) -> None:
    """Update the application of a module over its serial bootloader."""
    from .errors import ConfirmationNeeded
    from .flows.boot import identify_or_catch
    from .flows.plan import make_plan
    from .flows.settings import settle_earlier
    from .flows.update import run_update
    module = _lookup_module(module_name)
    image = images.load(file, address=address, module=module)
    with ExitStack() as stack:
        link = _open_link(stack, port, baud, trace_path)
        dev = identify_or_catch(link, module=module, baud=baud, fallback=images.target_module(image),
                                reset_window=reset_window, reset_line=reset_with,
                                say=_json_event if as_json else _flood_notice)
        _known.update(app_version_before=dev.app_version,
                      module=dev.module.name if dev.module else None)
        if dev.caught:
            # Caught in the start-up window for this update: if it doesn't happen
            # (dry run, refusal, no confirmation), start the application again.
            stack.callback(_release_if_unused, link, dev)
        try:
            plan = make_plan(image, dev, module=module, force=force, keep_settings=keep_settings)
        except AlreadyUpToDate as exc:
            # The new firmware already runs: an earlier run may have been cut off
            # before it checked the owner's settings; finish that check now.
            check = settle_earlier(link, dev) if keep_settings else None
            if check is not None:
                exc.details.update(settings_kept=check.kept, settings=check.to_dict())
                if not as_json:
                    _show_settings(check)
            raise
        if dry_run:
            _show_plan(plan, link.baud, as_json)
            if as_json:
                emit_json({"result": "ok", "dry_run": True, "module": plan.module.name,
                           "app_version_before": dev.app_version, "app_version_after": None,
                           "app_version_new": plan.app_version, "bytes": len(plan.payload),
                           "seconds": 0.0, "estimated_seconds": round(plan.estimate_seconds(link.baud), 2)})
            return
        if not as_json:
            _show_plan(plan, link.baud, False)
        if not yes:
            if not sys.stdin or not sys.stdin.isatty():
                raise ConfirmationNeeded("about to write firmware, and there is no terminal to confirm it")
            if not click.confirm(f"Write {len(plan.payload):,} bytes to {plan.module.name} on {port}?"):
                raise Aborted("update not confirmed")
        dev.caught = False      # from here on the module is the update's
        if as_json:
            def progress(done: int, total: int) -> None:
                emit_json({"event": "progress", "bytes": done, "total": total})

            result = run_update(link, plan, progress=progress, event=_json_event,
                                reset_window=reset_window, reset_line=reset_with)
        else:
            result = _update_with_bar(link, plan, reset_window=reset_window, reset_line=reset_with)
    if as_json:
        emit_json(result.to_dict())
        return
    out.print(f"[green]done[/]: {result.module} {result.app_version_before or '(bootloader)'} → "
              f"{result.app_version_after}; {result.bytes:,} bytes in {result.seconds:.1f} s "
              f"(transfer {result.transfer_seconds:.1f} s, {result.rate / 1024:.1f} KiB/s; "
              f"bootloader entered in {result.boot_seconds:.2f} s)")
    _show_settings(result.settings, unchecked_reason=(
        "the module was in its bootloader, so its keys could not be read before the update, and no "
        "earlier run kept them" if keep_settings and result.settings is None
        and dev.module is not None and dev.module.dialect.get("settings") else None))


def _show_settings(check: Any, *, unchecked_reason: str | None = None) -> None:
    if check is None:
        if unchecked_reason:
            out.print(f"settings: not checked ({unchecked_reason}).")
        return
    if not check.names:
        return
    earlier = " (the values read by the earlier, interrupted run)" if check.from_earlier_run else ""
    if check.lost:
        where = (f" The values from before the update are in {check.kept_in} (readable only by you)."
                 if check.kept_in else "")
        err.print(f"[yellow]warning:[/] the new firmware lost {', '.join(check.lost)} and rakflash could "
                  f"not write them back: set them again with AT+<NAME>=<value>.{where}")
    elif check.restored:
        out.print(f"settings: the new firmware had reset {', '.join(check.restored)}; rakflash wrote "
                  f"back the values from before the update{earlier}.")
    else:
        out.print(f"settings: {', '.join(check.names)} kept{earlier}.")


def _release_if_unused(link: Link, dev: Any) -> None:
    """Start the application of a module caught for an update that did not happen."""
    from .flows.boot import leave_bootloader
    if dev.caught and dev.module is not None:
        try:
            leave_bootloader(link, dev.module)
        except RakflashError:
            pass


def _json_event(name: str, data: dict) -> None:
    emit_json({"event": name, **data})


def _flood_notice(name: str, data: dict) -> None:
    if name == "flooding":
        err.print(f"[yellow]{data['message']}.[/]")
        if data.get("reset_line"):
            err.print(f"Pulsing {data['reset_line'].upper()} to reset the module, then sending the boot command in a burst.")
        else:
            err.print("[bold]Press the module's reset button now.[/] rakflash sends the boot command "
                      "in a burst and catches the module as it starts.")
    elif name == "countdown":
        if err.is_terminal:
            err.print(f"  waiting for the reset: {data['seconds_left']} s left ", end="\r")
        elif data["seconds_left"] % 5 == 0:      # a log file gets a line every 5 s, not a smear
            err.print(f"  waiting for the reset: {data['seconds_left']} s left")
    elif name == "caught":
        err.print(("\n" if err.is_terminal else "") + "caught the module in its bootloader")


def _show_plan(plan: Any, baud: int, as_json: bool) -> None:
    if as_json:
        emit_json({"event": "plan", **plan.to_dict(baud)})
        return
    d = plan.device
    out.print(f"device    {plan.module.name} on {d.port}, {d.mode}, application {d.app_version or '-'}, "
              f"bootloader {d.bootloader_version or '-'}")
    out.print(f"image     {plan.image.image.path}: application {plan.app_version or '-'}, "
              f"{len(plan.payload):,} bytes to {plan.address:#010x}")
    for n in plan.notes:
        out.print(f"[yellow]note:[/] {n}")
    out.print("plan:")
    for i, step in enumerate(plan.steps, 1):
        out.print(f"  {i}. {step}")
    out.print(f"estimate  {plan.estimate_seconds(baud):.1f} s at {baud} baud")


def _update_with_bar(link: Link, plan: Any, **update_options: Any) -> Any:
    from rich.progress import (BarColumn, DownloadColumn, Progress, TimeRemainingColumn,
                               TransferSpeedColumn)
    from .flows.update import run_update
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task("entering bootloader", total=len(plan.payload))

        def event(name: str, data: dict) -> None:
            labels = {"settings": "reading settings", "boot": "entering bootloader", "transfer": "writing",
                      "verify": "starting new firmware", "flooding": "waiting for a reset",
                      "countdown": "waiting for a reset",
                      "caught": "entering bootloader"}
            if name == "flooding":
                _flood_notice(name, data)
            bar.update(task, description=labels.get(name, name)
                       + (f" ({data['seconds_left']} s left)" if name == "countdown" else ""))

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run_update(link, plan, progress=progress, event=event, **update_options)


# ---------------------------------------------------------------- sim
@main.command()
@click.argument("module_name", metavar="MODULE")
@click.option("--state", type=click.Choice(["app", "bootloader"]), default="app", show_default=True,
              help="Start in the application or in the bootloader (as after an interrupted update).")
@click.option("--baud", type=BAUD, default=115200, show_default=True, help="The module's UART baud rate.")
@click.option("--latency-ms", type=float, default=1.0, show_default=True, help="USB-UART turnaround latency.")
@click.option("--flash-scale", type=float, default=1.0, show_default=True,
              help="Multiply the datasheet flash erase/program times (0 = instant).")
@click.option("--app-version", help="Version string of the application the module starts with.")
@click.option("--bootloader-version", help="Version string of its bootloader.")
@click.option("--app-size", type=int, default=96 * 1024, show_default=True, help="Size of the starting application.")
@click.option("--sketch", type=click.Choice(["quiet", "flooding"]), default="quiet", show_default=True,
              help="'flooding': the application prints without pause after a short start-up window.")
@click.option("--bit-error-rate", type=float, default=0.0, help="Probability of a bit error per received byte.")
@click.option("--drop-rate", type=float, default=0.0, help="Probability of losing a received byte.")
@click.option("--power-cut-after", type=int, help="Cut the power after the module received N bytes.")
@click.option("--pull-cable-after", type=int, help="Pull the cable (the port vanishes) after N received bytes.")
@click.option("--any-baud", is_flag=True, help="Accept any host baud rate (by default a mismatch gives garbage, like a real line).")
def sim(module_name: str, state: str, baud: int, latency_ms: float, flash_scale: float,
        app_version: str | None, bootloader_version: str | None, app_size: int, sketch: str,
        bit_error_rate: float, drop_rate: float, power_cut_after: int | None,
        pull_cable_after: int | None, any_baud: bool) -> None:
    """Serve a virtual module on a pseudo-terminal until interrupted.

    The first line printed is 'port: /dev/pts/N'. Press the module's reset
    button with 'r' + Enter on standard input or with SIGUSR1; after
    --pull-cable-after, 'p' + Enter plugs the cable back in (a new port).
    """
    from .sim import Faults, SimOptions, create
    opts = SimOptions(baud=baud, latency_ms=latency_ms, state=state, flash_scale=flash_scale,
                      bootloader_version=bootloader_version, app_version=app_version,
                      app_size=app_size, sketch=sketch, strict_baud=not any_baud,
                      faults=Faults(bit_error_rate=bit_error_rate, drop_rate=drop_rate,
                                    power_cut_after=power_cut_after, pull_cable_after=pull_cable_after))
    try:
        dev = create(module_name, opts)
    except KeyError as exc:
        from .sim.modules import MODULES
        what = "no virtual" if str(exc.args[0]).startswith("no virtual") else "no module called"
        raise click.UsageError(f"{what} {module_name!r}; virtual modules: {', '.join(sorted(MODULES))}") from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    dev.start()
    click.echo(f"port: {dev.port}")
    sys.stdout.flush()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, lambda *a: (dev.press_reset(), click.echo("reset pressed")))

    def stdin_buttons() -> None:
        for line in sys.stdin:
            key = line.strip().lower()
            if key == "r":
                dev.press_reset()
                click.echo("reset pressed")
            elif key == "p" and dev.uart.closed:
                click.echo(f"cable plugged in again; port: {dev.plug_in()}")
            sys.stdout.flush()

    if sys.stdin is not None and not sys.stdin.closed:
        threading.Thread(target=stdin_buttons, daemon=True).start()
    seen = None
    unplugged = False
    try:
        while not stop.wait(0.2):
            if dev.uart.closed:
                if not unplugged:
                    click.echo("cable pulled: the port is gone ('p' + Enter plugs it back in)")
                    sys.stdout.flush()
                    unplugged = True
                continue
            unplugged = False
            now = (dev.mode, dev.resets, dev.updates)
            if now != seen and dev.mode is not None:
                # What a person watching the module would want to know: what runs now.
                running = dev.app_version if dev.mode.value == "app" else dev.bootloader_version
                click.echo(f"running: {dev.mode.value} {running or '-'}"
                           + (f" (updates so far: {dev.updates})" if dev.updates else ""))
                sys.stdout.flush()
                seen = now
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()


# ---------------------------------------------------------------- demo
@main.command()
@click.option("--module", "-m", "module_name", default="rak3172", show_default=True,
              type=click.Choice(["rak3172", "rak811", "rak11720"]), help="Which virtual module to update.")
@click.option("--size", type=int, default=24 * 1024, show_default=True, help="Size of the new application.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@reports_errors
def demo(module_name: str, size: int, as_json: bool) -> None:
    """Update a virtual module end to end over a pseudo-terminal, no hardware needed.

    The virtual module runs at 115200 baud with a USB-UART's turnaround
    latency and its MCU's datasheet flash timings, so what you see is what
    the same update takes on a real module.
    """
    import tempfile
    from pathlib import Path

    from .flows.plan import make_plan
    from .flows.update import run_update
    from .sim import SimOptions, create, firmware
    module = _catalog.load().module(module_name)
    boot_v, old_v, new_v = firmware.DEFAULT_VERSIONS[module.key]
    with create(module.key, SimOptions(latency_ms=1.0, app_version=old_v)) as dev, \
            tempfile.TemporaryDirectory() as tmp:
        new_file = Path(tmp) / f"{module.name}_{new_v}.bin"
        new_file.write_bytes(firmware.app_image(module, new_v, size))
        if not as_json:
            out.print(f"virtual {module.name} serving on {dev.port} (115200 baud, 1 ms latency)")
            out.print(f"new firmware {new_file.name}: {size:,} bytes\n")
        with ExitStack() as stack:
            link = _open_link(stack, dev.port, 115200, None)
            # RUI3 modules say what they are; RUI v3 firmware doesn't, so name it.
            device = identify(link, module=module if module.dialect.key == "rui-v3" else None)
            if not as_json:
                _print_device(device)
                out.print()
            plan = make_plan(images.load(new_file), device, module=module)
            if as_json:
                result = run_update(link, plan)
            else:
                _show_plan(plan, link.baud, False)
                result = _update_with_bar(link, plan)
        after = dev.app_version
    if as_json:
        emit_json({**result.to_dict(), "flash_reports": after})
        return
    out.print(f"[green]done[/]: {result.module} {result.app_version_before} → {result.app_version_after} "
              f"in {result.seconds:.1f} s (transfer {result.rate / 1024:.1f} KiB/s; bootloader entered "
              f"in {result.boot_seconds:.2f} s). The virtual module's flash now holds {after}.")
    _show_settings(result.settings)
