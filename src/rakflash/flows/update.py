"""Run a planned update: enter the bootloader, transfer, confirm the new version.

The steps (each with a deadline, each failure a named error):

1. enter the bootloader (or confirm the module already waits there);
2. read the bootloader's version if the application couldn't tell it, and
   check the catalog's compatibility rules again before writing;
3. ``at+update`` and the module's transfer protocol, with progress;
4. wait for the new application to answer and report the version the image
   carries;
5. check that the owner's LoRaWAN keys and settings (read from the old
   application before step 1) are still there, and write back any the new
   firmware lost (:mod:`rakflash.flows.settings`).

A failed transfer leaves the module in its bootloader; running the same
update again finishes the job (identification sees the bootloader and goes on).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..at import AtConsole, looks_like_text
from ..errors import BootloaderTooOld, TransferError, VerifyFailed, VersionUnconfirmed
from ..events import Event, Phase, Retry, Sink, Warning, nowhere
from ..link import Deadline, Link
from . import boot
from . import settings as keys
from .plan import Plan, recovery_after_forced_stall
from .settings import SettingsCheck
from .transfers import for_protocol


@dataclass
class UpdateResult:
    result: str
    module: str
    app_version_before: str | None
    app_version_after: str | None
    bytes: int
    seconds: float
    boot_seconds: float
    transfer_seconds: float
    settings: SettingsCheck | None = None    # None when the old application couldn't be asked
    warnings: list[dict] = field(default_factory=list)   # the Warning events of the run (code, message)
    version_confirmed: bool = True           # False: the image carries no version to check against
    retries: int = 0                         # packets or blocks sent again during the transfer
    reset_wait: float | None = None          # seconds waited for a reset press (a flood caught), if any
    resumed_at: int | None = None            # the byte this run resumed at (an interrupted run sent the rest)
    unconfirmed_because: str | None = None   # why the version can't be asked (an Arduino sketch), if so
    port_locked_again: bool | None = None    # a locked AT port rakflash opened: locked again? (None: wasn't locked)

    @property
    def bytes_sent(self) -> int:
        """The image's bytes this run sent (all of them, unless it resumed)."""
        return self.bytes - (self.resumed_at or 0)

    @property
    def rate(self) -> float:
        return self.bytes_sent / self.transfer_seconds if self.transfer_seconds else 0.0

    def to_dict(self) -> dict:
        return {"result": self.result, "module": self.module,
                "app_version_before": self.app_version_before,
                "app_version_after": self.app_version_after, "bytes": self.bytes,
                "bytes_sent": self.bytes_sent, "resumed_at": self.resumed_at,
                "seconds": round(self.seconds, 3), "boot_seconds": round(self.boot_seconds, 3),
                "transfer_seconds": round(self.transfer_seconds, 3),
                "bytes_per_second": round(self.rate), "version_confirmed": self.version_confirmed,
                "retries": self.retries,
                "reset_wait_seconds": None if self.reset_wait is None else round(self.reset_wait, 3),
                "settings_kept": self.settings.kept if self.settings else None,
                "settings": self.settings.to_dict() if self.settings else None,
                "warnings": self.warnings,
                # only where rakflash opened a locked AT port (recover's result has no such key yet)
                **({"port_locked_again": self.port_locked_again} if self.port_locked_again is not None else {})}


def run_update(link: Link, plan: Plan, *, emit: Sink = nowhere, app_timeout: float = 15.0,
               reset_window: float = 30.0, reset_line: str | None = None,
               learnt: dict | None = None) -> UpdateResult:
    """Carry out ``plan`` over ``link``, reporting through ``emit``.

    ``learnt`` (a dict, optional) is filled as the run learns the module's
    identifiers — ``serial_number`` (from the settings read, or from the new
    application) and ``dev_eui`` (the DevEUI read consistently before the
    update) — so a report of a run that fails later still has them. Never a
    secret: only these two identifiers go there.

    ``reset_window`` / ``reset_line``: if the application starts flooding the
    port only now, the person is asked to press reset (or the line is pulsed)
    and the bootloader is caught, as when identification finds the flood.
    """
    warnings: list[dict] = []
    outer = emit
    learnt = {} if learnt is None else learnt

    retries = [0]

    def noting(event: Event) -> None:      # the result line lists the run's warnings and retries too
        if isinstance(event, Warning):
            warnings.append({"code": event.code, "message": event.message})
        elif isinstance(event, Retry):
            retries[0] += 1
        outer(event)

    emit = noting

    def phase(name: str, message: str, **info: object) -> None:
        link.note(f"update step: {name}")
        emit(Phase(name, message, info))

    module = plan.module
    transfer = for_protocol(plan.protocol)
    if transfer is None:
        raise TransferError(f"serial update over {plan.protocol} is not supported yet",
                            hint=f"Write a full image (FULL.hex) {module.recovery_advice()}.")
    t0 = time.monotonic()
    settings_before = None
    serial = plan.device.serial_number
    queries = list(module.dialect.get("settings", [])) if plan.keep_settings else []
    if plan.settings_to_keep:
        phase("settings", "reading the LoRaWAN keys and settings")
        settings_before = keys.before_update(link, module, serial, plan.settings_to_keep, emit=emit)
        serial = settings_before.serial_number or serial
        _learn(learnt, serial, settings_before)
    elif queries and plan.device.caught:
        # Caught in the bootloader after a reset: its application was never asked.
        # Start it again and read them in its quiet start-up window.
        phase("settings", "reading the LoRaWAN keys and settings in the application's start-up window")
        try:
            window = keys.read_in_start_up_window(link, module)
        except keys.WindowTooShort as exc:
            window = None
            boot.catch_after_reset(
                link, module, f"{module.name}'s start-up window was too short to read its keys and "
                f"settings ({exc}); press reset once more so the update can go on",
                window=reset_window, reset_line=reset_line, emit=emit)
        if window is not None:
            serial = serial or window.serial_number
            settings_before = keys.before_update(link, module, serial, queries, emit=emit,
                                                 reading=window)
            _learn(learnt, serial, settings_before)
    phase("boot", "entering the bootloader", mode=plan.device.mode)
    enter = getattr(transfer, "enter_bootloader", None)
    if enter is not None:
        # The transfer knows its own way in (a native-USB module re-enumerates on another port).
        boot_seconds, boot_version = enter(link, plan, emit)
        boot_version = boot_version or plan.device.bootloader_version
    else:
        boot_seconds = boot.enter_bootloader(
            link, plan.device, module,
            on_flood=lambda why: boot.catch_after_reset(link, module, why, window=reset_window,
                                                        reset_line=reset_line, emit=emit))
        boot_version = plan.device.bootloader_version or boot.bootloader_version(link, module)
    if boot_version != plan.device.bootloader_version:
        forced = len(plan.forced_past)
        try:
            plan.check_bootloader(boot_version)
        except BootloaderTooOld as exc:
            # Found only now (RUI v3 apps don't tell their bootloader's version):
            # nothing was written, so put the module back to work before saying so.
            if plan.device.mode == "app" and boot.leave_bootloader(link, module):
                exc.message = (exc.message.rstrip(".") +
                               "; nothing was written and the module runs its application again")
            raise
        if len(plan.forced_past) > forced:
            emit(Warning("bootloader-too-old", f"{plan.forced_past[-1].message.rstrip('.')}: "
                                               f"writing anyway (--force)"))
    if not getattr(transfer, "reports_phases", False):
        phase("write", "writing", bytes=len(plan.payload), bootloader_version=boot_version)
    t1 = time.monotonic()
    link.discard_input()
    try:
        resumed_at = transfer.send(link, plan, emit) or None
    except TransferError as exc:
        # Sent past a bootloader rule with --force, a stall is what the rule foretold:
        # the way out is the recovery command, not the same command again.
        exc.hint = recovery_after_forced_stall(plan, link.port_name) or exc.hint
        raise
    transfer_seconds = time.monotonic() - t1
    phase("start", "starting the new firmware")
    confirm = getattr(transfer, "confirm_version", None)
    if confirm is not None:
        after = confirm(link, plan, app_timeout, emit)    # None: the firmware can't be asked (it says so)
    else:
        after = wait_for_app_version(link, plan, app_timeout)
    if plan.app_version and after != plan.app_version and not (confirm is not None and after is None):
        raise VerifyFailed(f"after the update {module.name} reports "
                           f"{repr(after) if after else 'no version'}, but the image carries "
                           f"{plan.app_version!r}", bytes=len(plan.payload))
    if plan.app_version is None and confirm is None:
        emit(Warning("version-unconfirmed",
                     "the image carries no version string, so rakflash can't confirm which firmware "
                     "runs now; the new firmware answers"
                     + (f" and reports {after}" if after else ", without a version")))
    settings = None
    if queries:
        phase("settings-check", "checking the LoRaWAN keys and settings")
        serial = serial or _ask_serial_number(link, plan)
        _learn(learnt, serial, None)
        settings = keys.settle(link, module, serial, settings_before, emit=emit)
        if settings is None:
            keys.warn_unread(module, "the module was caught in its bootloader after a reset, and its "
                             "application could not be asked" if plan.device.caught else
                             "the module was in its bootloader, with no application to ask", emit)
    return UpdateResult("ok", module.name, plan.device.app_version, after, len(plan.payload),
                        time.monotonic() - t0, boot_seconds, transfer_seconds, settings, warnings,
                        version_confirmed=plan.app_version is not None and after is not None,
                        retries=retries[0], resumed_at=resumed_at,
                        unconfirmed_because=(getattr(transfer, "unconfirmed_because", None)
                                             if confirm is not None and after is None else None))


def _learn(learnt: dict, serial: str | None, reading: keys.Reading | None) -> None:
    """Note the module's identifiers (serial number, DevEUI) for a report; never a key."""
    if serial:
        learnt["serial_number"] = serial
    dev_eui = keys.dev_eui_of(reading.values) if reading is not None else None
    if dev_eui:
        learnt["dev_eui"] = dev_eui


def _ask_serial_number(link: Link, plan: Plan) -> str | None:
    """The serial number, from the new application (the bootloader could not tell it)."""
    query = plan.module.dialect.get("serial_number")
    if not query:
        return None
    # Read consistently: it names the file the owner's keys were kept in.
    return keys.read_value(AtConsole(link, plan.module.dialect), plan.module, query, 0.5)


FLOOD_LINES = 40   # unasked lines, with no answer, that make the new firmware a flooding one


def wait_for_app_version(link: Link, plan: Plan, timeout: float) -> str | None:
    """Poll the new application until it answers the version query; its version (None when
    it answers without one).

    Raises :class:`VersionUnconfirmed` when the new firmware prints without
    pause (it runs, but can't be asked), :class:`VerifyFailed` when nothing answers.
    Answers are never taken for chatter, even when they carry no version.
    """
    dialect = plan.module.dialect
    console = AtConsole(link, dialect)
    deadline = Deadline(timeout)
    chatter: list[str] = []
    others: list[str | None] = []
    # Asked again soon: a query sent while the new application still starts is lost, and waiting
    # half a second for its answer was most of what confirming the version cost. A running module
    # answers within a reply's time on the line (80 characters) and a turnaround.
    per_try = min(0.5, max(0.1, 80 * 10 / link.baud + 0.03))
    while not deadline.expired:
        reply = console.command(dialect["app_version"], min(per_try, deadline.remaining()))
        if reply.ok:
            value = reply.value.split()[0] if reply.value else None
            version = (plan.module.find_app_version(value.encode()) or value) if value else None
            # Another version than expected counts once it is said twice: one
            # damaged byte on the line is not a failed update. An image without a
            # version expects none: any answer will do.
            if version == plan.app_version or version in others:
                return version
            others.append(version)
            continue
        if reply.status == "none":       # answers, even without a version, are no chatter
            chatter += [ln for ln in reply.lines if ln and looks_like_text(ln.encode("latin-1"))]
        if len(chatter) >= FLOOD_LINES:
            raise VersionUnconfirmed(
                f"the update was written and {plan.module.name}'s bootloader accepted it, but the new "
                f"firmware prints without pause (lines like {chatter[-2][:60]!r}), so it can't be "
                f"asked for its version", bytes=len(plan.payload))
    raise VerifyFailed(f"the new application did not answer {dialect['app_version']} within "
                       f"{timeout:.0f} s after the transfer",
                       hint="Run 'rakflash info --port PORT': if the module waits in its "
                            "bootloader, run the same update again.", bytes=len(plan.payload))
