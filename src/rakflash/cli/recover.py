"""``rakflash recover FILE --port P``: write a full image past the serial bootloader.

A thin layer over :mod:`rakflash.flows.recover`: check and plan (no I/O),
print the plan, confirm (this rewrites the bootloader), then run the
method's steps while the person follows the prompt, and report the versions
before → after.
"""

from __future__ import annotations

import sys
from contextlib import ExitStack

import click
from rich.markup import escape

from .. import images
from ..errors import Aborted, ConfirmationNeeded, RakflashError, UsageError
from ..events import Event, Keys, PlanReady, Warning
from ..flows.lines import check_line
from ..flows.recover import METHODS, RecoveryOptions, interrupted_hint, method_for, plan_recovery, recover
from ..written import NOTHING, Written
from .app import main
from .options import WINDOW, CmsisPack, json_option, lookup_module, module_option, open_link, port_options
from .output import RESULT_KEYS, JsonEvents, TerminalEvents, emit_json, emit_result, err, known, out, reports_errors

# flash's keys on every result line (success, failure, dry run, Ctrl-C), and the bootloader's versions.
# ``keys``: what became of the owner's keys (null when a run ends before it is known), and where the
# copy read before the write stays when it was not confirmed.
RECOVER_KEYS = RESULT_KEYS + ("bootloader_version_before", "bootloader_version_after", "keys", "keys_kept_in")


@main.command("recover")
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@port_options(required=False)
@module_option()
@click.option("--app", "app_file", type=click.Path(dir_okay=True, path_type=str),
              help="An application image to write with FILE when FILE holds only the bootloader.")
@click.option("--method", "--via", "method", type=click.Choice(sorted(METHODS)), default=None,
              help="How to reach the chip (default: the module's first, see 'rakflash modules'); "
                   "'--via swd' writes through a debug probe and pyOCD.")
@click.option("--probe", metavar="ID", help="SWD: the probe's unique id, or part of it (see 'rakflash probes').")
@click.option("--pack", metavar="FILE", type=CmsisPack(),
              help="SWD: a CMSIS device pack (.pack) for a target pyOCD does not know yet (offline machines).")
@click.option("--dry-run", is_flag=True, help="Print the plan and the time it takes, touch nothing.")
@click.option("--yes", "-y", is_flag=True, help="Confirm writing without a prompt.")
@click.option("--window", type=WINDOW, default=30.0, show_default=True, metavar="S",
              help="How long to wait for you to hold BOOT0 and reset the module.")
@click.option("--release-wait", type=WINDOW, default=5.0, show_default=True, metavar="S",
              help="RAK11720: seconds you get to release BOOT before rakflash restarts the module.")
@click.option("--reset-with", metavar="LINE",
              help="The adapter line wired to RESET: rts, dtr, or -rts/-dtr when active low (stm32flash -i style).")
@click.option("--boot0-with", metavar="LINE",
              help="The adapter line wired to BOOT0: rts, dtr, -rts or -dtr (stm32flash -i style).")
@click.option("--show-keys", is_flag=True,
              help="Show the AppKey and session keys read from the chip before the write (masked otherwise).")
@click.option("--remove-readout-protection", "remove_protection", is_flag=True,
              help="If the chip is read-out protected, remove the protection: this ERASES THE WHOLE "
                   "CHIP, keys included (asked once more).")
@json_option("Print JSON events and a JSON result line.")
@reports_errors(json_keys=RECOVER_KEYS)
def recover_command(file: str, port: str | None, baud: int | None, trace_path: str | None,
                    module_name: str | None, app_file: str | None, method: str | None,
                    probe: str | None, pack: str | None, dry_run: bool,
                    yes: bool, window: float, release_wait: float, reset_with: str | None, boot0_with: str | None,
                    show_keys: bool, remove_protection: bool, as_json: bool) -> None:
    """Write a full image (bootloader + application) when the serial bootloader can't.

    For STM32 modules (RAK811, RAK3172) through the chip's ROM bootloader, for the
    RAK11720 through the Apollo3's secure bootloader: only the USB-UART adapter and a
    jumper on BOOT0/BOOT are needed; rakflash says which pins. With '--via swd', through
    a debug probe (RAKDAP1, J-Link) and pyOCD, for every module: --port is then optional
    (given, the module is asked what runs afterwards).
    """
    module = lookup_module(module_name)
    image = images.load(file, module=module)
    app = images.load(app_file, module=module) if app_file else None
    options = RecoveryOptions(
        baud=baud or 115200, window=window, release_wait=release_wait,
        reset_with=check_line(reset_with, "--reset-with"), boot0_with=check_line(boot0_with, "--boot0-with"),
        remove_protection=remove_protection, confirm=_second_confirmation(yes), probe=probe, pack=pack,
        show_keys=show_keys)
    plan = plan_recovery(image, module, method=method, app=app, options=options)
    method_impl = method_for(plan.method)
    method_impl.port_commands(plan, options, port)
    known.update(module=plan.module.name, written=NOTHING)      # until recover() says otherwise
    if port is None and method_impl.needs_port:
        raise UsageError(f"recovering {plan.module.name} with {plan.method} needs its serial port",
                         hint="Give it with --port (or recover with --via swd and a probe).")
    warnings: list[dict] = []
    try:
        method_impl.precheck(plan)        # a missing tool is said first, not after the whole plan
    except RakflashError as exc:
        if not dry_run:
            raise
        # a dry run still shows the plan, and what would stop it
        warnings.append({"code": exc.name, "message": f"{exc.message}. {exc.hint}"})
    with ExitStack() as stack:
        # The port is opened before the plan is shown: one that does not exist or that another
        # program holds is said at once, not after the plan and the question (a dry run
        # touches no port).
        link = open_link(stack, port, baud, trace_path,
                         keep=(file,) + ((app_file,) if app_file else ())) if port and not dry_run else None
        if as_json:
            emit_json(PlanReady(plan.to_dict()).to_dict())
            for w in warnings:
                emit_json(Warning(w["code"], w["message"]).to_dict())
        else:
            show_recovery_plan(plan, port)
            for w in warnings:
                err.print(f"[yellow]warning:[/] {escape(w['message'])}")
        if dry_run:
            if as_json:
                emit_result({"result": "ok", "dry_run": True, "module": plan.module.name,
                             "method": plan.method, "bytes": plan.bytes, "seconds": 0.0,
                             "estimated_seconds": round(plan.estimate_seconds, 2),
                             "app_version_new": plan.app_version,
                             "bootloader_version_new": plan.bootloader_version,
                             "bootloader_version_before": None, "bootloader_version_after": None,
                             "warnings": warnings, "written": NOTHING}, port)
            return
        if not yes:
            if not sys.stdin or not sys.stdin.isatty():
                raise ConfirmationNeeded("about to rewrite the module's flash (bootloader included), and "
                                         "there is no terminal to confirm it")
            if not click.confirm(f"Rewrite {plan.module.name}'s flash ({plan.bytes:,} bytes, bootloader "
                                 f"included) {('over ' + port) if port else 'through the probe'}?"):
                raise Aborted("recovery not confirmed")
        render = stack.enter_context(JsonEvents() if as_json else TerminalEvents())
        written = Written()

        def noting_the_copy(event: Event) -> None:
            # Where the keys read before the write are kept (None once read back the same),
            # for the line a Ctrl-C ends with.
            if isinstance(event, Keys):
                known["keys_kept_in"] = event.info.get("kept_in")
            render(event)
        try:
            result = recover(link, plan, options, emit=noting_the_copy, written=written)
        finally:
            # What the chip holds now, for the line a failure or Ctrl-C ends with.
            copy = known.get("keys_kept_in")
            known.update(written=written.state, bytes=written.bytes,
                         written_hint=interrupted_hint(written, plan.module.name, plan.method)
                         + (f" The keys read before the write are kept in {copy}." if copy else ""))
    if as_json:
        emit_result(result.to_dict(), port)
        return
    out.print(f"[green]done[/]: {result.module} bootloader {result.bootloader_version_before or 'unknown'} → "
              f"{result.bootloader_version_after or 'unknown'}, application "
              f"{result.app_version_before or 'unknown'} → {result.app_version_after or 'unknown'}; "
              f"{result.bytes:,} bytes written and verified ({result.verify}) in {result.seconds:.1f} s")
    if result.keys:
        colour = {"kept": "green", "written-back": "green", "lost": "red"}.get(result.keys, "yellow")
        out.print(f"keys: [{colour}]{result.keys}[/] — {escape(result.keys_reason or '')}"
                  + (f" (copy kept in {escape(result.keys_kept_in)})" if result.keys_kept_in else ""))


def show_recovery_plan(plan, port: str | None) -> None:
    """The plan for people: what is written, the steps, what you do, the estimate."""
    img = plan.image
    where = f"on {port}" if port else "(no serial port)"
    out.print(f"module    {plan.module.name} ({plan.module.mcu.name}) {where}, method {plan.method}")
    out.print(f"image     {img.image.path}: bootloader {plan.bootloader_version or '-'}, application "
              f"{plan.app_version or '-'}, {plan.details.get('bytes_said') or f'{plan.bytes:,} bytes to write'}")
    for n in plan.notes:
        out.print(f"[yellow]note:[/] {n}")
    if plan.keys:
        out.print(f"keys      {escape(plan.keys.says)}")
    out.print("plan:")
    for i, step in enumerate(plan.steps, 1):
        out.print(f"  {i}. {step}")
    out.print("you:")
    for step in plan.guide:
        out.print(f"  - {step}")
    out.print(f"estimate  {plan.estimate_seconds:.1f} s at {plan.details.get('rate') or f'{plan.baud} baud'}")
    if plan.details.get("stm32flash"):
        note = plan.details.get("stm32flash_note")
        out.print(f"same with stm32flash{f' ({note})' if note else ''}: {plan.details['stm32flash']}")
    if plan.details.get("pyocd_command"):
        out.print(f"same with pyOCD: {plan.details['pyocd_command']}")


def _second_confirmation(yes: bool):
    """Removing read-out protection erases the whole chip: asked on a terminal even after
    the first yes; --yes with --remove-readout-protection answers it in scripts."""
    def confirm(question: str) -> bool:
        if sys.stdin and sys.stdin.isatty():
            return click.confirm(question)
        return yes
    return confirm
