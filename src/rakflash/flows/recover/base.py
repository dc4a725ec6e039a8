"""Bring back a module whose serial bootloader can't help: the recovery framework.

A *recovery method* is one way to write a full image (bootloader included)
past the RUI bootloader: the STM32 ROM bootloader over the UART
(``stm32-rom``), the Apollo3 secure bootloader's wired update
(``apollo3-sbl``), SWD through pyOCD (``swd``). Each is one module with one
:class:`RecoveryMethod` subclass and one entry in :data:`METHODS`. This module
holds what they share, written once:

1. :func:`check_image` — the image (or bootloader image + ``--app``) against
   the module: its MCU, every segment inside the chip's flash;
2. :func:`plan_recovery` — the method's :class:`RecoveryPlan` (what is erased
   and written, the person's steps, the time it takes at the link's rate),
   printed and confirmed by the caller (``--dry-run`` stops there);
3. :func:`recover` (after the caller printed the plan — a ``PlanReady`` event —
   and confirmed it) — identify what runs now over the AT port (versions
   before, best effort: the module may be dead), then the method's steps with
   one event stream (:mod:`rakflash.events`): ``guide`` (the person's
   instructions, a countdown) → ``connect`` → the owner's keys read →
   ``write`` → ``verify`` → the keys checked (written back if overwritten) →
   ``start``; then identify again over the AT port and report the versions
   before → after (:class:`RecoveryResult`, the same JSON keys as ``flash``
   plus ``bootloader_version_before`` / ``_after`` and ``keys``).

The owner's keys (:class:`~.owner_keys.OwnerKeys`, :func:`~.owner_keys.plan_keys`,
in :mod:`.owner_keys`): a method that can read and write the chip's memory
(:meth:`RecoveryMethod.read_memory` / :meth:`~RecoveryMethod.write_memory`: the
STM32 ROM, SWD) gets them read before anything is erased and checked after the
verify, the same steps for each; one that can't (the Apollo3 wired update) says so
in the plan, with whether the recovery writes where they are.

Phases emitted (``Phase.phase``): ``identify``, ``connect``, ``settings``
(the keys read), ``erase``, ``write``, ``verify``, ``settings-check``,
``settings-write`` (only when they are written back), ``start``,
``identify-after``; ``Keys`` (what was read before the write, and what became
of it); ``Prompt`` / ``Countdown`` while the person acts; ``Progress`` with
``phase`` ``write`` or ``verify``; ``Warning`` for what the person should still
do (e.g. release BOOT0), or what happened to the keys (``keys-overwritten``,
``keys-not-read``, ``keys-lost``).
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypedDict

from ... import catalog as _catalog
from ...catalog import Module
from ...errors import (
    Flooding,
    ImageTargetError,
    NotFirmware,
    PortLocked,
    RakflashError,
    RecoveryUnavailable,
    UsageError,
    VerifyFailed,
    WrongTarget,
)
from ...events import Event, Note, Phase, Prompt, Retry, Sink, Warning, nowhere
from ...images import Image, ImageInfo, Segment, analyse, application_start_problem, check_firmware, target_module
from ...link import Deadline, Link
from ...written import NOTHING, Written
from .owner_keys import KEPT, LOST, WRITTEN_BACK, KeysPlan, OwnerKeys, plan_keys

# The one table of recovery methods: name (the catalog's ``recovery``, ``--via``) →
# "module:Class", the module in this package (imported when used, so a method's optional
# dependency, e.g. pyOCD for "swd", is needed only by people who use it). Every lookup of a
# method by name goes through it (:func:`method_for`); adding a method is one module here
# and one entry.
METHODS: dict[str, str] = {
    "stm32-rom": "stm32_rom:Stm32RomMethod",
    "apollo3-sbl": "apollo3_sbl:Apollo3SblMethod",
    "swd": "swd:SwdMethod",
}


def method_for(name: str) -> RecoveryMethod:
    """The recovery method called ``name`` (see :data:`METHODS`)."""
    if name not in METHODS:
        raise UsageError(f"no recovery method {name!r} (have: {', '.join(sorted(METHODS))})",
                         hint="See 'rakflash modules' for each module's recovery methods.")
    module_name, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(f".{module_name}", __package__), cls)()


def default_method(module: Module) -> str:
    """The first of the module's recovery methods (catalog ``recovery``) that rakflash has."""
    for name in module.recovery:
        if name in METHODS:
            return name
    known = ", ".join(module.recovery) or "none"
    why = module.rom_access.get("none")
    raise RecoveryUnavailable(
        (f"{why}; " if why else "") +
        f"rakflash has no recovery method for {module.name} yet (its catalog lists: {known})",
        hint=f"Write the full image {module.recovery_advice()}.")


@dataclass
class RecoveryOptions:
    """How to run a recovery (each maps to a ``rakflash recover`` option).

    ``reset_with`` / ``boot0_with``: the adapter's modem line wired to the
    module's RESET / BOOT0 pin, in stm32flash's ``-i`` notation (``rts``,
    ``dtr``, ``-rts``, ``-dtr``: a leading ``-`` means the pin is active while
    the line is low). ``window``: seconds to wait for the person (a countdown).
    ``remove_protection``: allow removing read-out protection (it erases the
    whole chip), after ``confirm`` says yes a second time.
    """

    baud: int = 115200
    window: float = 30.0
    reset_with: str | None = None
    boot0_with: str | None = None
    remove_protection: bool = False
    confirm: Callable[[str], bool] = lambda question: False
    identify_before: bool = True
    after_timeout: float = 8.0
    release_wait: float = 5.0              # seconds given to release a boot pin before a restart
    probe: str | None = None               # SWD: the probe's (partial) unique id
    pack: str | None = None                # SWD: a CMSIS pack file for a target pyOCD lacks
    show_keys: bool = False                # show the AppKey and session keys read (masked otherwise)


@dataclass
class RecoveryPlan:
    """What a recovery will do, before anything happens (printed by ``--dry-run``)."""

    method: str
    module: Module
    image: ImageInfo
    segments: list[Segment]           # exactly what is written
    erase: list[tuple[int, int]]      # address ranges erased (whole pages)
    bytes: int                        # bytes sent to be written
    steps: list[str]
    guide: list[str]                  # what the person does, in order
    estimate_seconds: float
    baud: int
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)   # method-specific facts
    keys: KeysPlan | None = None    # what happens to the owner's keys (plan_recovery fills it in)

    @property
    def app_version(self) -> str | None:
        return self.image.app_version

    @property
    def bootloader_version(self) -> str | None:
        return self.image.bootloader_version

    def to_dict(self) -> dict:
        return {"method": self.method, "module": self.module.name, "bytes": self.bytes,
                "segments": [{"start": s.start, "end": s.end, "size": s.size} for s in self.segments],
                "erase": [{"start": a, "end": b} for a, b in self.erase],
                "app_version_new": self.app_version, "bootloader_version_new": self.bootloader_version,
                "estimated_seconds": round(self.estimate_seconds, 2), "baud": self.baud,
                "steps": self.steps, "guide": self.guide, "notes": self.notes,
                "keys": self.keys.to_dict() if self.keys else None, **self.details}


@dataclass
class RecoveryResult:
    """How a recovery ended; ``to_dict()`` has every key of ``flash``'s result
    (:meth:`rakflash.flows.update.UpdateResult.to_dict`) plus the bootloader's versions,
    ``method``, ``verify``, ``verify_seconds`` and ``mode_after``.

    What a recovery means by ``flash``'s keys: ``boot_seconds`` is the time it took to
    reach the chip's recovery interface (the ROM bootloader, the secure bootloader, the
    probe), ``reset_wait_seconds`` the same time when a person was asked to hold the boot
    pin and reset (else ``None``), ``version_confirmed`` whether the module, asked after
    the recovery, reported the version the image carries, and ``settings_kept`` /
    ``settings`` is ``None``. ``keys`` says what became of the owner's keys (read from the
    chip's memory before the write and again after it: see :class:`OwnerKeys`), with
    ``keys_reason`` saying why, and ``settings_kept`` follows it (true when kept or written
    back and read back the same, false when lost, null when not read).
    """

    result: str
    module: str
    method: str
    app_version_before: str | None
    app_version_after: str | None
    bootloader_version_before: str | None
    bootloader_version_after: str | None
    bytes: int
    seconds: float
    transfer_seconds: float = 0.0
    verify_seconds: float = 0.0
    verify: str = ""
    mode_after: str | None = None
    warnings: list[dict] = field(default_factory=list)     # {"code", "message"}, as flash's
    boot_seconds: float = 0.0
    reset_wait: float | None = None
    retries: int = 0
    version_confirmed: bool = False
    written: str = "all"       # see rakflash.written: a result is only made once every block was acknowledged
    keys: str | None = None             # KEPT, WRITTEN_BACK, LOST or NOT_READ (see OwnerKeys)
    keys_reason: str | None = None      # the sentence that says what was read, found and done
    keys_kept_in: str | None = None     # the copy of what was read, where it stays (not confirmed)

    @property
    def rate(self) -> float:
        return self.bytes / self.transfer_seconds if self.transfer_seconds else 0.0

    def to_dict(self) -> dict:
        return {"result": self.result, "module": self.module, "method": self.method,
                "app_version_before": self.app_version_before,
                "app_version_after": self.app_version_after,
                "bootloader_version_before": self.bootloader_version_before,
                "bootloader_version_after": self.bootloader_version_after,
                "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "bytes_sent": self.bytes, "resumed_at": None,     # a recovery writes it all, every time
                "boot_seconds": round(self.boot_seconds, 3),
                "transfer_seconds": round(self.transfer_seconds, 3),
                "verify_seconds": round(self.verify_seconds, 3), "verify": self.verify,
                "bytes_per_second": round(self.rate), "version_confirmed": self.version_confirmed,
                "retries": self.retries,
                "reset_wait_seconds": None if self.reset_wait is None else round(self.reset_wait, 3),
                "settings_kept": {KEPT: True, WRITTEN_BACK: True, LOST: False}.get(self.keys or ""),
                "settings": None, "keys": self.keys, "keys_reason": self.keys_reason,
                "keys_kept_in": self.keys_kept_in,
                "mode_after": self.mode_after, "warnings": self.warnings, "written": self.written}


@dataclass
class Session:
    """What a method's steps share while a recovery runs."""

    link: Link | None
    plan: RecoveryPlan
    options: RecoveryOptions
    emit: Sink
    bootloader_version_before: str | None = None
    bootloader_version_after: str | None = None
    transfer_seconds: float = 0.0
    verify_seconds: float = 0.0
    verify: str = ""
    state: dict[str, Any] = field(default_factory=dict)    # the method's own
    written: Written = field(default_factory=Written)      # what went out and was acknowledged
    # Set by a method that erased the whole chip before the keys could be read (removing
    # read-out protection): says so, for the keys' result.
    erased_whole: str | None = None
    # Set when the keys were read over AT before the person was asked to reach the chip
    # (OwnerKeys.read_over_at_first): what a question about erasing the chip says of them.
    keys_over_at: str | None = None

    def warn(self, code: str, message: str, **info: Any) -> None:
        self.emit(Warning(code, message, info))

    @property
    def serial_link(self) -> Link:
        """The link of a method that talks over the serial port (``needs_port``): :func:`recover`
        runs such a method only with one."""
        assert self.link is not None, "a method that needs the serial port runs without one"
        return self.link


class RecoveryMethod:
    """One way to write a full image past the serial bootloader. Subclasses fill in the steps.

    ``plan`` decides without touching anything; the others run in this order
    inside :func:`recover`, each failure a named error from :mod:`rakflash.errors`.
    """

    name = ""
    needs_port = True        # talks over the serial port (SWD talks to a probe instead)
    # Removes read-out protection when asked (``--remove-readout-protection``): that erases the
    # whole chip before the keys can be read through it (see OwnerKeys.read_over_at_first).
    removes_protection = False
    # The next step once part of the image was written (said with what the chip holds then).
    again = "Run the same command again: it erases and writes the whole image anew."
    # What the note says when the chip's recovery interface answers already (after the
    # module's name): "ROM bootloader already answers (BOOT0 is held high)".
    already = "recovery interface already answers"

    def plan(self, image: ImageInfo, module: Module, options: RecoveryOptions) -> RecoveryPlan:
        raise NotImplementedError

    def precheck(self, plan: RecoveryPlan) -> None:
        """What can stop the recovery and be checked on this computer alone, before the plan
        is shown and confirmed (a missing tool, say): a named error. Touches no device."""

    def port_commands(self, plan: RecoveryPlan, options: RecoveryOptions, port: str | None) -> None:
        """Put the port, once the caller knows it, in the plan's equivalent commands of other
        tools (``plan.details``); a method whose commands name no port has nothing to do."""

    def answers_now(self, session: Session) -> bool:
        """Whether the chip's recovery interface answers already (an earlier run left it
        there): a quick look, before anything else is asked of the module. When it does,
        the framework does not ask over the AT port what runs (nothing does) and ``guide``
        asks nothing of the person."""
        return False

    def guide(self, session: Session) -> None:
        """Get the chip's recovery interface to answer: when it answers already
        (:meth:`answers_now`), a note says so and nothing is asked of the person (asked to
        reset anyway, they would cut the session short — issue 17.9); else :meth:`reach`."""
        if self.answers_now(session):
            session.emit(Note(f"{session.plan.module.name}'s {self.already}: nothing to do on the module"))
            return
        self.reach(session)

    def reach(self, session: Session) -> None:
        """Tell the person what to do (a ``Prompt`` event), drive wired lines, and get the
        chip's recovery interface to answer (``Countdown`` events while waiting)."""
        raise NotImplementedError

    def connect(self, session: Session) -> None:
        """Ask the chip what it is; refuse another chip or a locked one."""
        raise NotImplementedError

    def write(self, session: Session) -> None:
        """Erase what the plan erases and write the plan's segments (``Progress`` events),
        marking in ``session.written`` each erase or write before it goes out and each
        block once acknowledged."""
        raise NotImplementedError

    def verify(self, session: Session) -> None:
        """Check that the chip holds the plan's bytes; :class:`VerifyFailed` if not."""
        raise NotImplementedError

    def start(self, session: Session) -> None:
        """Start the written firmware and leave the port ready for AT identification."""
        raise NotImplementedError

    # -- the chip's memory, for the owner's keys (see OwnerKeys) -------------------------
    def memory_access(self, plan: RecoveryPlan) -> str | None:
        """None when this method reads the chip's memory and writes it (:meth:`read_memory`,
        :meth:`write_memory`): then the recovery reads the owner's keys before anything is
        written and checks them after. Else why it can't, said in the plan."""
        return f"{self.name} has no way to read the chip's memory"

    def touches(self, plan: RecoveryPlan) -> list[tuple[int, int]]:
        """Every address range the recovery erases or writes (whole pages): the plan's erase."""
        return list(plan.erase)

    def read_memory(self, session: Session, address: int, size: int, expect: bytes | None = None) -> bytes:
        """``size`` bytes at ``address`` as the chip holds them (runs after :meth:`connect`).
        ``expect``: what they should be — a method whose reads carry no check of their own may
        take a first read that matches it as confirmed, where otherwise it reads until two agree."""
        raise NotImplementedError

    def write_memory(self, session: Session, address: int, data: bytes) -> None:
        """Make the chip hold ``data`` at ``address``: in flash, ``address`` starts a page and
        ``data`` is whole pages, erased first; elsewhere (an STM32L0/L1's data EEPROM) written as
        it is. Runs after :meth:`verify`, before :meth:`start`."""
        raise NotImplementedError


# ------------------------------------------------------------------ shared steps

def check_image(image: Image, module: Module | None, *, app: Image | None = None) -> tuple[ImageInfo, Module]:
    """Check a full image (or a bootloader image plus ``app``) against ``module``.

    The module is the image's target when not given. Refuses an image for
    another MCU, a segment outside the chip's flash, overlapping images, and
    an image that holds neither bootloader nor application.
    """
    parts = [image] if app is None else [image, app]     # each file must be firmware on its own
    if app is not None:
        image = combine(image, app)
    module = module or target_module(image)
    if module is None:
        for part in parts:
            check_firmware(part)
        raise WrongTarget(f"{image.path}: rakflash can't tell which module this image is for",
                          hint="Name the module with --module (see 'rakflash modules').")
    for part in [*parts, image] if app is not None else [image]:
        try:
            info = analyse(part, module=module)    # the image checks every write path shares
        except NotFirmware:
            raise
        except ImageTargetError as exc:
            raise WrongTarget(exc.message, hint=exc.hint) from None
    problem = application_start_problem(image, module)
    if problem:                 # the bootloader would be left with an application that never starts
        raise WrongTarget(f"{image.path}: {problem}: {module.name} would not start it",
                          hint=f"Use the full image (FULL.hex) built for {module.name}.")
    flash = module.mcu.flash
    for seg in image.segments:
        if seg.start < flash.start or seg.end > flash.end:
            raise WrongTarget(
                f"{image.path} has bytes at {seg.start:#010x}-{seg.end:#010x}, outside "
                f"{module.name}'s flash ({flash.start:#010x}-{flash.end:#010x})",
                hint=f"Use the full image (FULL.hex) built for {module.name}.")
    if not (info.includes_bootloader or info.includes_app):
        raise WrongTarget(f"{image.path} holds neither a bootloader nor an application for {module.name}",
                          hint=f"Use the full image (FULL.hex) built for {module.name}.")
    built_for = _catalog.load().by_image_name(info.app_version)
    if built_for is not None and built_for.key != module.key and built_for.key not in module.takes_images_of:
        # Another board's image (a RAK3172's on a RAK3172-T): the same refusal as flash's.
        same = module.same_flash_as(built_for)
        raise WrongTarget(
            f"{image.path} is built for the {built_for.name} (its version string {info.app_version}), "
            f"but the module is a {module.name}"
            + (": RUI3 builds each board's image for its own radio and pins" if same
               else ", whose flash map differs"),
            hint=f"Use the full image (FULL.hex) built for {module.name}. Nothing was written."
                 + (f" If you mean to write it anyway, name the board it is for: --module {built_for.key} "
                    f"(the chip and flash map are the same)." if same else ""),
            version_names=built_for.name)
    return info, module


def combine(boot: Image, app: Image) -> Image:
    """A bootloader image and an application image as one (they must not overlap)."""
    for a in boot.segments:
        for b in app.segments:
            if a.start < b.end and b.start < a.end:
                raise WrongTarget(f"{boot.path} and {app.path} overlap at "
                                  f"{max(a.start, b.start):#010x}",
                                  hint="Give the bootloader image as FILE and the application with --app.")
    segs = sorted([*boot.segments, *app.segments], key=lambda s: s.start)
    return Image(f"{boot.path}+{app.path}", "hex", segs, boot.sha256, boot.file_size + app.file_size,
                 boot.start_address, parts=(boot, app))


def plan_recovery(image: Image, module: Module | None, *, method: str | None = None,
                  app: Image | None = None, options: RecoveryOptions | None = None) -> RecoveryPlan:
    """Check the image and let the method plan; nothing is touched."""
    options = options or RecoveryOptions()
    info, module = check_image(image, module, app=app)
    name = method or default_method(module)
    if name not in module.recovery:
        raise RecoveryUnavailable(
            f"{module.name} can't be recovered with {name} (its ways: {', '.join(module.recovery) or 'none'})",
            hint=f"Write the full image {module.recovery_advice()}.")
    impl = method_for(name)
    plan = impl.plan(info, module, options)
    plan.keys = plan_keys(plan, impl, options)
    return plan


class _Seen(TypedDict):
    """What :func:`recover` counts of its run's events, for the result."""

    warnings: list[dict]
    retries: int
    prompted: bool


def recover(link: Link | None, plan: RecoveryPlan, options: RecoveryOptions | None = None, *,
            emit: Sink = nowhere, written: Written | None = None) -> RecoveryResult:
    """Carry out ``plan`` over ``link`` (opened at the module's AT settings). A method
    that needs no port (``swd``) may run without one: then nothing is identified.

    ``written`` (optional) is kept up to date with what went out and was acknowledged,
    so a caller stopped by Ctrl-C can say what the chip holds. Once part of the image
    was written, an error's ``details["written"]`` and hint say what the chip holds
    and the next step (:func:`say_what_it_holds`)."""
    options = options or RecoveryOptions()
    t0 = time.monotonic()
    method = method_for(plan.method)
    if link is None and method.needs_port:
        raise UsageError(f"recovery with {plan.method} needs the module's serial port",
                         hint="Give it with --port.")
    at_baud = link.baud if link else options.baud   # the AT console's rate (the ROM's may differ)
    outer = emit
    seen: _Seen = {"warnings": [], "retries": 0, "prompted": False}

    def counted(event: Event) -> None:  # the result lists the run's warnings and retries, as flash's
        if isinstance(event, Warning):
            seen["warnings"].append({"code": event.code, "message": event.message})
        elif isinstance(event, Retry):
            seen["retries"] += 1
        elif isinstance(event, Prompt):
            seen["prompted"] = True
        outer(event)
    emit = counted

    before = None
    session = Session(link, plan, options, emit, written=written if written is not None else Written())
    keys = OwnerKeys(session, method)
    t_guide = time.monotonic()
    try:
        if options.identify_before and method.needs_port and link is not None \
                and not method.answers_now(session):
            emit(Phase("identify", "asking the module what runs now (it may not answer)"))
            failed: list[RakflashError] = []
            before = _identify_quietly(link, plan.module, at_baud, timeout=None, failed=failed)
            if before is None:
                emit(Note(_unanswered(failed)))
            keys.read_over_at_first(link, before, _why_no_app(before, failed))
            t_guide = time.monotonic()
        elif link is not None:
            keys.read_over_at_first(link, None, "rakflash did not ask the application first" if not
                                    options.identify_before else f"{plan.module.name}'s {method.already}: "
                                    f"no application runs")
        method.guide(session)
        boot_seconds = time.monotonic() - t_guide
        asked = seen["prompted"]        # the person was asked to reach the chip (not, later, to release a pin)
        emit(Phase("connect", f"asking the chip what it is ({plan.method})"))
        method.connect(session)
        keys.read_before()
        method.write(session)
        session.written.all_written()
        emit(Phase("verify", "checking what the chip holds"))
        method.verify(session)
        session.written.verified = True
        keys.check_after()
        emit(Phase("start", "starting the written firmware"))
        method.start(session)
    except RakflashError as exc:
        say_what_it_holds(exc, session, method)
        keys.say_where_the_copy_is(exc)
        raise
    try:
        return _after(link, session, before, at_baud, keys, lambda **what: RecoveryResult(
            "ok", plan.module.name, plan.method, bytes=plan.bytes, seconds=time.monotonic() - t0,
            transfer_seconds=session.transfer_seconds, verify_seconds=session.verify_seconds,
            verify=session.verify, warnings=seen["warnings"], boot_seconds=boot_seconds,
            reset_wait=boot_seconds if asked else None, retries=seen["retries"], keys=keys.state,
            keys_reason=keys.reason, keys_kept_in=keys.kept_in, **what))
    except RakflashError as exc:
        keys.say_where_the_copy_is(exc)
        raise


def _after(link: Link | None, session: Session, before: Any, at_baud: int, keys: OwnerKeys,
           result: Callable[..., RecoveryResult]) -> RecoveryResult:
    """What runs after the recovery: ask the module (over its AT port, when there is one)
    which versions it runs now, write back the keys read over AT before when the chip was
    erased whole (:meth:`OwnerKeys.write_back_over_at`), and make the result."""
    plan, options = session.plan, session.options
    emit = session.emit

    if link is None:
        session.warn("not-identified", "no serial port was given: the module was not asked what "
                     "runs now ('rakflash info --port PORT' tells)")
        return result(app_version_before=None, app_version_after=None,
                      bootloader_version_before=session.bootloader_version_before,
                      bootloader_version_after=session.bootloader_version_after, mode_after=None)
    emit(Phase("identify-after", "asking the module what runs now"))
    after = _identify_quietly(link, plan.module, at_baud, timeout=options.after_timeout, quick=True)
    if after is None:
        raise VerifyFailed(
            f"the image was written and verified, but {plan.module.name} does not answer over its "
            f"AT port within {options.after_timeout:.0f} s",
            hint=_release_hint(plan.module) + " Then run 'rakflash info --port PORT'.",
            written=session.written.state)
    app_after = after.app_version if after.mode == "app" else None
    if plan.app_version and app_after and app_after != plan.app_version:
        # One answer damaged on its way back must not fail a recovery that worked: a version
        # other than the image's stands only when the module says it twice.
        answers = [after]
        for _ in range(2):
            again = _identify_quietly(link, plan.module, at_baud, timeout=options.after_timeout, quick=True)
            if again is None:
                break
            if any(a.app_version == again.app_version and a.mode == again.mode for a in answers):
                after = again
                break
            answers.append(again)
        else:
            raise VerifyFailed(
                f"{plan.module.name}'s answers after the recovery disagree with each other ("
                + ", ".join(repr(a.app_version) for a in answers) + "): the line damages what it "
                "sends, and rakflash can't confirm which firmware runs",
                hint="Run 'rakflash info --port PORT' to ask it again; check the cable and ground.",
                written=session.written.state)
        app_after = after.app_version if after.mode == "app" else None
    boot_after = after.bootloader_version or session.bootloader_version_after
    if plan.app_version and app_after and app_after != plan.app_version:
        raise VerifyFailed(f"after the recovery {plan.module.name} reports {app_after!r}, but the "
                           f"image carries {plan.app_version!r}", written=session.written.state)
    if plan.app_version and after.mode != "app":
        session.warn("bootloader-waits", f"{plan.module.name} waits in its bootloader after the "
                     f"recovery: 'rakflash flash' with an application finishes the job")
    if plan.app_version:       # the module told the version the image carries
        confirmed = app_after == plan.app_version
    else:                      # a bootloader-only image: its version, if the module tells it
        confirmed = bool(plan.bootloader_version) and after.bootloader_version == plan.bootloader_version
    keys.write_back_over_at(link, after)
    return result(
        app_version_before=before.app_version if before and before.mode == "app" else None,
        app_version_after=app_after,
        bootloader_version_before=session.bootloader_version_before
        or (before.bootloader_version if before else None),
        bootloader_version_after=boot_after, mode_after=after.mode, version_confirmed=confirmed)


def say_what_it_holds(exc: RakflashError, session: Session, method: RecoveryMethod) -> None:
    """Put what the chip holds now into a recovery's error: ``details["written"]`` (nothing,
    part, all) and, once anything was written, a hint that says what and the next step."""
    w = session.written
    exc.details.setdefault("written", w.state)
    if w.state == NOTHING:
        return
    exc.details.setdefault("bytes", w.bytes)
    holds = w.holds(session.plan.module.name)
    exc.hint = f"{holds} {exc.hint or method.again}".strip()


def interrupted_hint(written: Written, module: str, method: str) -> str:
    """What the chip holds after Ctrl-C (or a stop from the page) in a recovery, and the next step."""
    if written.state == NOTHING:
        return written.holds()
    return f"{written.holds(module)} {method_for(method).again}"


def _identify_quietly(link: Link, module: Module, baud: int, *, timeout: float | None,
                      failed: list[RakflashError] | None = None, quick: bool = False):
    """Identify over the AT port at ``baud``; None when nothing answers (the last
    error appended to ``failed``, if given).

    With ``timeout``, keep asking until it passes (a freshly started firmware
    takes a moment); without, ask once. ``quick``: shorter waits for the first
    listen and the probe's answer — the module was just started at a rate rakflash
    knows, and a wait cut short is simply asked again until ``timeout``.
    """
    from ..identify import Timing, identify
    link.set_parity("N")
    if link.baud != baud:
        link.baud = baud
    deadline = Deadline(timeout or 0.0)
    while True:
        try:
            return identify(link, module=module, baud=baud, scan=False,
                            timing=Timing(listen=0.05, probe=0.15) if quick else None)
        except RakflashError as exc:
            if deadline.expired:
                if failed is not None:
                    failed.append(exc)
                return None
            time.sleep(0.1)


def _unanswered(failed: list[RakflashError]) -> str:
    """The note when the module could not be identified before a recovery, saying why."""
    exc = failed[-1] if failed else None
    if isinstance(exc, Flooding):
        return ("the module floods its AT port with data and does not answer AT (a firmware "
                "that prints without pause): versions before are unknown")
    if isinstance(exc, PortLocked):
        return ("the module's AT port is locked (AT+LOCK: it answers COMMAND_LOCKED): versions "
                "before are unknown")
    return "the module does not answer over its AT port: versions before are unknown"


def _why_no_app(device: Any, failed: list[RakflashError]) -> str | None:
    """Why no application answered AT before the recovery (None: it did)."""
    if device is not None:
        return None
    exc = failed[-1] if failed else None
    if isinstance(exc, Flooding):
        return "the application floods its AT port and does not answer AT"
    if isinstance(exc, PortLocked):
        return "the application's AT port is locked ('rakflash recover' takes no password)"
    return "nothing answers over the AT port"


def _release_hint(module: Module) -> str:
    pin = module.rom_access.get("boot0")
    return (f"Release BOOT0 ({pin}) and press reset." if pin else "Press the module's reset button.")


def catalog_module(name: str | None) -> Module | None:
    return _catalog.load().module(name) if name else None
