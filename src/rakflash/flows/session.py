"""A whole ``flash`` of one module over one port, as the CLI, the fleet runner and the web page run it.

The steps, each reported through the event sink (before them, a file that is not firmware is
refused without touching the port: :func:`images.check_firmware`):

1. identify what answers on the link — catching a module whose firmware
   floods the port in its start-up window after a reset (:func:`boot.identify_or_catch`),
   opening a locked AT port with its password (:mod:`.lock`; it is locked again at the end,
   whatever happens: after the update, the new application's);
2. plan, refusing before anything is written (:func:`planning.make_plan`); a
   module found already running the image's version still gets the settings
   check an earlier, cut-off run could not finish; a device that can't say
   which of several modules it is, given firmware for one of them, is asked
   about (``choose_module``) or refused, never written on a guess;
3. a dry run stops here with the plan; otherwise ``confirm(plan)`` decides;
4. the update itself (:func:`update.run_update`).

A module that was caught in its bootloader for this update and is then not
written (dry run, refusal, no confirmation, an error) is sent back to its
application. What was learnt before a failure (module, version running before, serial
number and DevEUI) stays readable in :attr:`FlashSession.known`, so a failure report can include it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..catalog import Module
from ..errors import Aborted, AlreadyUpToDate, ModuleUncertain, RakflashError
from ..events import Caught, DeviceFound, Event, Note, Phase, PlanReady, Recorder, Sink, Warning, nowhere, tee
from ..images import Image, check_firmware, target_module
from ..link import Link
from . import boot
from .identify import DeviceInfo
from .plan import Plan
from .planning import make_plan
from .settings import SettingsCheck, settle_earlier
from .update import UpdateResult, run_update

if TYPE_CHECKING:
    from .esp_update import EspPlan


@dataclass
class FlashOptions:
    """How to flash (each maps to a ``rakflash flash`` option)."""

    module: Module | None = None      # --module: what the person says is attached
    baud: int | None = None           # --baud: tried first (others are scanned)
    force: bool = False
    keep_settings: bool = True
    dry_run: bool = False
    reset_window: float = 30.0        # seconds to wait for a reset press when the firmware floods
    reset_line: str | None = None     # "rts" / "dtr" wired to the module's reset
    password: str | None = field(default=None, repr=False)   # a locked AT port's (--password)


@dataclass
class DryRun:
    """The outcome of a dry run: the plan, nothing written."""

    plan: Plan | EspPlan
    baud: int

    def to_dict(self) -> dict[str, Any]:
        p = self.plan
        return {"result": "ok", "dry_run": True, "module": p.module.name,
                "app_version_before": p.device.app_version, "app_version_after": None,
                "app_version_new": p.app_version, "bytes": len(p.payload), "seconds": 0.0,
                "estimated_seconds": round(p.estimate_seconds(self.baud), 2)}


Confirm = Callable[[Plan], bool]
ChooseModule = Callable[[ModuleUncertain], "Module | None"]
AskPassword = Callable[[], "str | None"]


class FlashSession:
    """One flash of ``image`` over an open ``link``; :meth:`run` does it."""

    def __init__(self, link: Link, image: Image, options: FlashOptions | None = None, *,
                 emit: Sink = nowhere, confirm: Confirm | None = None,
                 choose_module: ChooseModule | None = None, ask_password: AskPassword | None = None) -> None:
        self.link = link
        self.ask_password = ask_password     # asks for a locked AT port's password (None: no one to ask)
        self.opened_lock = False             # rakflash opened a locked AT port: it locks it again
        self.locked_again: bool | None = None
        self.choose_module = choose_module   # asks which module it is (None: refuse instead)
        self.image = image
        self.options = options or FlashOptions()
        self.reset_wait: float | None = None   # seconds waited for a reset press, when a flood was caught

        def emit_and_note(event: Event) -> None:
            if isinstance(event, Caught):
                self.reset_wait = (self.reset_wait or 0.0) + event.waited
            if isinstance(event, Phase) and event.phase == "start" and self._writing:
                self._sent = True        # the bootloader took it all and hands over to it
            if isinstance(event, Phase) and event.phase in ("erase", "write") and self._writing:
                self._data_sent = True   # the transfer begins: its first packet makes the bootloader erase
            emit(event)
        self.emit = emit_and_note
        self.confirm = confirm
        self.device: DeviceInfo | None = None
        self.plan: Plan | None = None
        self.settings_check: SettingsCheck | None = None   # for a module found up to date
        self.learnt: dict[str, Any] = {}     # serial number, DevEUI, as the update learns them
        self._writing = False
        self._sent = False
        self._data_sent = False

    @property
    def known(self) -> dict[str, Any]:
        """What this session has learnt so far (for a report of a failure)."""
        d: dict[str, Any] = {}
        if self.device is not None:
            d["app_version_before"] = self.device.app_version
            d["module"] = self.device.module.name if self.device.module else None
            d["serial_number"] = self.device.serial_number
        if self.plan is not None:
            d["module"] = self.plan.module.name
        # The update learns what identification could not (a module found in its bootloader
        # tells its serial number only once its new application runs) and the DevEUI
        # read with the settings: a report of a run that fails later still has them.
        d.update({k: v for k, v in self.learnt.items() if v})
        d["writing"] = self._writing     # an interruption from here on leaves the module in its bootloader
        d["sent"] = self._sent           # … until the transfer ended: then the new firmware starts
        # rakflash.written's one field: nothing until the transfer began, all once it ended
        d["written"] = "all" if self._sent else ("part" if self._data_sent else "nothing")
        return d

    def run(self) -> UpdateResult | DryRun:
        """Identify, plan, confirm and update; raises the named error of whatever stops it."""
        o, link = self.options, self.link
        # An ESP chip is identified, planned and written through its ROM download mode as one
        # session of its own (flows/esp_update.py), with the same events and result.
        from .transfers import running_whole_session
        if running_whole_session(o.module, self.image, link) is not None:
            from . import esp_update
            out = esp_update.run(self)
            return DryRun(out, link.baud) if isinstance(out, esp_update.EspPlan) else out
        # A file that is not firmware is refused before the port is touched (no reset press asked
        # for a flooding module, no bootloader entered); the plan checks it again with the rest.
        check_firmware(self.image, o.module)
        self.emit(Phase("identify", f"identifying the module on {link.port_name}"))
        self.device = dev = self._identify()
        self.emit(DeviceFound({k: v for k, v in dev.to_dict().items() if k != "error"}))
        written = False
        result = None
        try:
            try:
                self.plan = plan = self._plan(dev)
            except AlreadyUpToDate as exc:
                # The new firmware already runs: an earlier run may have been cut off
                # before it checked the owner's settings; finish that check now.
                warnings = Recorder()
                self.settings_check = (settle_earlier(link, dev, emit=tee(self.emit, warnings))
                                       if o.keep_settings else None)
                if self.settings_check is not None:
                    exc.details.update(settings_kept=self.settings_check.kept,
                                       settings=self.settings_check.to_dict(),
                                       warnings=[{"code": w.code, "message": w.message}
                                                 for w in warnings.of(Warning)])
                raise
            self.emit(PlanReady(plan.to_dict(link.baud)))
            if o.dry_run:
                return DryRun(plan, link.baud)
            if self.confirm is not None and not self.confirm(plan):
                raise Aborted("update not confirmed")
            written = self._writing = True       # from here on the module is the update's
            result = run_update(link, plan, emit=self.emit, reset_window=o.reset_window,
                                reset_line=o.reset_line, learnt=self.learnt)
            result.reset_wait = self.reset_wait
            return result
        finally:
            if dev.caught and not written:
                _release(link, dev)
            if self.opened_lock:
                self._lock_again(result, written)

    def _identify(self) -> DeviceInfo:
        """Identify (catching a flooding firmware); a locked AT port is opened with the password
        (--password, or asked for) and identified again — and locked again at the end."""
        from . import lock
        o, link = self.options, self.link

        def identify() -> DeviceInfo:
            return boot.identify_or_catch(link, module=o.module, baud=o.baud,
                                          fallback=target_module(self.image), reset_window=o.reset_window,
                                          reset_line=o.reset_line, emit=self.emit)
        dev, self.opened_lock = lock.opening(link, identify, o.password, self.ask_password)
        if self.opened_lock:
            self.emit(Note(f"{link.port_name}: the AT port was locked; rakflash opened it with the "
                           f"password and locks it again when it is done"))
        return dev

    def _lock_again(self, result: UpdateResult | None, written: bool) -> None:
        """Lock the AT port this session opened: the new application runs after an update, the
        old one when nothing was written; after a failed update the module waits in its bootloader."""
        from . import lock
        recorder = Recorder()
        why_not = ("the update did not finish: the module waits in its bootloader"
                   if written and result is None else None)
        self.locked_again = lock.lock_again(self.link, tee(self.emit, recorder), why_not=why_not)
        if result is not None:
            result.port_locked_again = self.locked_again
            result.warnings += [{"code": w.code, "message": w.message} for w in recorder.of(Warning)]

    def _plan(self, dev: DeviceInfo) -> Plan:
        o = self.options
        try:
            return make_plan(self.image, dev, module=o.module, force=o.force,
                             keep_settings=o.keep_settings)
        except ModuleUncertain as exc:
            chosen = self.choose_module(exc) if self.choose_module is not None else None
            if chosen is None:
                raise
            self.emit(Note(f"the module is a {chosen.name}, as you said"))
            return make_plan(self.image, dev, module=chosen, force=o.force,
                             keep_settings=o.keep_settings)


def _release(link: Link, dev: DeviceInfo) -> None:
    """Start the application of a module caught for an update that did not happen."""
    if dev.module is not None:
        try:
            boot.leave_bootloader(link, dev.module)
        except RakflashError:
            pass


def flash(link: Link, image: Image, options: FlashOptions | None = None, *,
          emit: Sink = nowhere, confirm: Confirm | None = None,
          choose_module: ChooseModule | None = None, ask_password: AskPassword | None = None
          ) -> UpdateResult | DryRun:
    """Flash ``image`` over ``link`` (see :class:`FlashSession`)."""
    return FlashSession(link, image, options, emit=emit, confirm=confirm,
                        choose_module=choose_module, ask_password=ask_password).run()
