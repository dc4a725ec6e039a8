"""Update many modules at once: the same :class:`~rakflash.flows.session.FlashSession` on each port, side by side.

Each port gets its own thread, link and session, so one module that fails, is
pulled out or waits for a reset press never stops or slows the others: they
share nothing but the image (read-only) and the report file (one line per
module, appended under a lock). Threads rather than asyncio: every flow blocks
on its serial link with a deadline, and the work per byte is small (the
benchmark in ``benchmarks/fleet_speed.py`` measures both the wall time against
one module and the host's CPU per megabyte).

:meth:`Fleet.stop` (Ctrl-C in the CLI, a stop button on the web page) stops
every module cleanly: each link raises ``KeyboardInterrupt`` in its own thread
at its next read or write (see :class:`~rakflash.stoppable.StoppableLink`), so
each transfer ends its device's session (YMODEM CAN CAN, AMOTA RESET) as a
Ctrl-C on a single ``flash`` does, and the same command run again finishes the
ones that were cut off.

Every module's outcome is a :class:`DeviceOutcome`; its :meth:`~DeviceOutcome.record`
is the JSON Lines record ``--report`` appends (documented in the README).

With ``provisioning`` (a batch of keys and its ledger, :mod:`rakflash.provision`), each
module also gets its own row: claimed before its update when its application answers
(or refused then, before anything is written), written and read back after it; with no
image, only that (``rakflash provision``). Without it, nothing here changes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from .. import __version__
from ..at import AtConsole
from ..catalog import Dialect
from ..errors import (
    AlreadyUpToDate,
    DeviceError,
    KeysPresent,
    NotProvisionable,
    PlanRefused,
    ProvisionError,
    RakflashError,
)
from ..events import DeviceFound, Event, Phase, Progress
from ..images import Image
from ..stoppable import StoppableLink
from ..trace import TraceWriter, open_for_writing
from .identify import DeviceInfo
from .session import DryRun, FlashOptions, FlashSession
from .settings import read_value, setting_name
from .update import UpdateResult

if TYPE_CHECKING:
    from ..provision.keys import Provisioning

OK_RESULTS = ("ok", "already-up-to-date")


@dataclass
class DeviceOutcome:
    """What happened on one port (filled in as the session learns it)."""

    port: str
    started: str = ""                 # ISO 8601 UTC
    module: str | None = None
    serial_number: str | None = None
    dev_eui: str | None = None
    app_version_before: str | None = None
    app_version_after: str | None = None
    bootloader_version: str | None = None
    bytes: int = 0                    # bytes the bootloader acknowledged (so far, if cut off)
    seconds: float = 0.0
    result: str = "pending"           # "ok", "already-up-to-date", "dry-run", "interrupted" or an error name
    message: str | None = None
    hint: str | None = None
    exit_code: int = 0
    phase: str = "waiting"            # the step it is at, for a live row
    total: int | None = None          # bytes to write, once planned
    reported: bool = False            # its record went to the report and the event stream
    provision: dict[str, Any] | None = None   # with a batch (--provision): which row went where

    @property
    def done(self) -> bool:
        return self.result != "pending"

    @property
    def ok(self) -> bool:
        return self.result in OK_RESULTS or self.result == "dry-run"

    @property
    def error(self) -> str | None:
        return None if self.ok or not self.done else self.result

    def record(self, image: Image | None) -> dict[str, Any]:
        """The ``--report`` line for this module (with ``provision`` when a batch was given)."""
        record: dict[str, Any] = {"time": self.started, "host": socket.gethostname(), "port": self.port,
                "module": self.module, "serial_number": self.serial_number, "dev_eui": self.dev_eui,
                "app_version_before": self.app_version_before, "app_version_after": self.app_version_after,
                "bootloader_version": self.bootloader_version, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "result": self.result, "error": self.error,
                "message": None if self.ok else self.message, "image": image.path if image else None,
                "image_sha256": image.sha256 if image else None, "rakflash": __version__}
        if self.provision is not None:
            record["provision"] = self.provision
        return record


@dataclass(frozen=True)
class DeviceDone(Event):
    """A module's run ended (``info`` is its report record)."""

    kind: ClassVar[str] = "device-result"
    info: dict[str, Any] = field(default_factory=dict)


class ReportFile:
    """JSON Lines appended one record per module, each line written whole and flushed.

    Tried here (opened and closed), so a path that can't take lines fails before any module is
    touched: a folder that isn't there, a FIFO nothing reads (it would block the open), a device
    such as ``/dev/full`` (see :func:`~rakflash.trace.open_for_writing`); each line opens it again
    the same way. Raises OSError."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        with open_for_writing(path, append=True):
            pass

    def append(self, record: dict[str, Any]) -> None:
        """Append one line; OSError when the file no longer takes it (a full disk, a FIFO's reader gone)."""
        line = json.dumps(record) + "\n"
        with self._lock, open_for_writing(self.path, append=True) as f:
            f.write(line)
            f.flush()
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode):     # a FIFO or a device has nothing to sync
                os.fsync(f.fileno())


FleetSink = Callable[[str, Event], None]      # (port, event)


def _nowhere(port: str, event: Event) -> None:
    pass


class Fleet:
    """Flash ``image`` on every port in ``ports`` at once; :meth:`run` does it.

    ``emit(port, event)`` gets every session's events (and a :class:`DeviceDone`
    per module), ``report`` a :class:`ReportFile` to append to, ``trace_for(port)``
    an optional trace writer per port. Events arrive from the modules' threads.
    """

    def __init__(self, ports: list[str], image: Image | None, options: FlashOptions | None = None, *,
                 emit: FleetSink = _nowhere, report: ReportFile | None = None,
                 trace_for: Callable[[str], TraceWriter | None] | None = None,
                 grace: float = 15.0, provisioning: Provisioning | None = None) -> None:
        self.ports = list(dict.fromkeys(ports))
        self.image = image
        self.options = options or FlashOptions()
        self.emit = emit
        self.report = report
        self.trace_for = trace_for
        self.grace = grace                     # how long a stopped module may take to end cleanly
        # With a batch: each module gets its row after its update (or, without an image, as it is).
        self.provisioning = provisioning
        self.outcomes = {p: DeviceOutcome(p) for p in self.ports}
        self.interrupted = False
        self.report_error: OSError | None = None   # the first append to the report that failed
        self.unreported: list[str] = []            # ports whose line is missing from the report
        self._links: dict[str, StoppableLink] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._ended = {p: threading.Event() for p in self.ports}

    # ------------------------------------------------------------------ control
    def run(self) -> list[DeviceOutcome]:
        """Run every module's session; returns when all ended (Ctrl-C stops them all, cleanly)."""
        self._threads = [threading.Thread(target=self._one, args=(p,), daemon=True, name=f"fleet {p}")
                         for p in self.ports]
        for t in self._threads:
            t.start()
        try:
            self._join()
        except KeyboardInterrupt:
            self.stop()
            try:
                self._join(self.grace)
            except KeyboardInterrupt:
                pass                 # a second Ctrl-C: stop waiting for clean ends
        for o in self.outcomes.values():
            if not o.done:           # still busy after the grace period: report it cut off
                self._finish(o, "interrupted", "stopped before it finished")
        return [self.outcomes[p] for p in self.ports]

    def stop(self) -> None:
        """Stop every module at its next read or write (from any thread)."""
        with self._lock:
            self._stopping = True
            self.interrupted = True
            links = list(self._links.values())
        for link in links:
            link.stop()

    def _join(self, timeout: float | None = None) -> None:
        """Wait until every module's run has ended (at most ``timeout`` seconds).

        Waits on each run's own "ended" event, not on Thread.join: a Ctrl-C that
        lands inside join() can leave a thread that is still running looking ended.
        """
        end = None if timeout is None else time.monotonic() + timeout
        for ended in self._ended.values():
            while not ended.wait(0.2):   # short waits, so Ctrl-C reaches this thread promptly
                if end is not None and time.monotonic() >= end:
                    return

    # ------------------------------------------------------------------ one module
    def _one(self, port: str) -> None:
        o = self.outcomes[port]
        o.started = now_iso()
        t0 = time.monotonic()
        session: FlashSession | IdentifyOnly | None = None
        link: StoppableLink | None = None
        result: UpdateResult | DryRun | None = None
        failure: BaseException | None = None
        provision_failure: BaseException | None = None
        try:
            trace = self.trace_for(port) if self.trace_for else None
            link = StoppableLink(port, self.options.baud or 115200, trace=trace)
            with self._lock:
                self._links[port] = link
                if self._stopping:
                    link.stop()
            emit = lambda e: self._event(o, e)      # noqa: E731
            refused = None
            if self.provisioning is not None and self.image is not None and not self.options.dry_run:
                try:
                    o.provision = self._claim_early(o, link, emit)
                except (ProvisionError, KeysPresent, NotProvisionable) as exc:
                    refused = provision_failure = exc      # nothing written, not even the firmware
            if refused is not None:
                pass
            elif self.image is None:           # provisioning only: the module as it is
                session = IdentifyOnly(link, self.options, emit)
                session.run()
            else:
                session = FlashSession(link, self.image, self.options, emit=emit)
                try:
                    result = session.run()
                except AlreadyUpToDate as exc:
                    if self.provisioning is None:
                        raise
                    failure = exc            # current already: it still gets its row
            if self.provisioning is not None and refused is None and not isinstance(result, DryRun):
                assert session is not None      # (no refusal: one of the two ran)
                try:
                    firmware = result.app_version_after if isinstance(result, UpdateResult) else (
                        session.device.app_version if session.device else None)
                    module = session.plan.module if session.plan else (
                        session.device.module if session.device else None)
                    o.provision = self.provisioning.run(link, module, firmware=firmware, emit=emit,
                                                        slot=o.port).record()
                except (RakflashError, KeyboardInterrupt) as exc:
                    provision_failure = exc
        except BaseException as exc:       # noqa: BLE001 - every way out is this module's outcome
            failure = exc
        finally:
            try:
                settle(o, session, result, failure, time.monotonic() - t0)
                if self.provisioning is not None:
                    self._release_if_refused(o, failure)
                    settle_provisioning(o, self.image is None, failure, provision_failure)
                if link is not None:
                    ask_identifiers(o, link, session)
                    link.close()
                self._publish(o)
            finally:
                self._ended[port].set()

    def _release_if_refused(self, o: DeviceOutcome, failure: BaseException | None) -> None:
        """A row this run claimed before an update that its plan then refused (nothing written to
        the module, keys included) goes back to the batch: the module holds no row it won't get."""
        p = o.provision or {}
        if not (isinstance(failure, PlanRefused) and not isinstance(failure, AlreadyUpToDate)
                and p.get("result") == "claimed" and p.get("claimed_now") and self.provisioning is not None):
            return
        try:
            if self.provisioning.ledger.release(p["dev_eui"], p["serial_number"]):
                o.provision = {**p, "result": "released"}
        except RakflashError:
            pass      # it stays claimed for this module, as ledger show says

    def _claim_early(self, o: DeviceOutcome, link: StoppableLink, emit: Callable[[Event], None]) -> dict | None:
        """Before an update with a batch: a module whose application answers is refused here (keys
        of its own, no key commands, no row left) before anything is written, or its row is claimed,
        so an update that is cut off leaves the row claimed for it and the re-run finishes it with
        that row. A module that doesn't answer as an application (in its bootloader, flooding) is
        identified by its session as usual and claims its row after its update."""
        from ..provision.keys import claim_row, claimed_record
        from .identify import identify
        assert self.provisioning is not None       # (only with a batch)
        emit(Phase("identify", f"identifying the module on {link.port_name}"))
        try:
            dev = identify(link, module=self.options.module, baud=self.options.baud)
        except DeviceError:
            return None
        if dev.mode != "app" or dev.module is None or not dev.module_certain:
            return None
        o.module, o.serial_number, o.app_version_before = dev.module.name, dev.serial_number, dev.app_version
        emit(DeviceFound({k: v for k, v in dev.to_dict().items() if k != "error"}))
        return claimed_record(claim_row(link, dev.module, self.provisioning, firmware=dev.app_version,
                                        emit=emit, slot=o.port))

    def _event(self, o: DeviceOutcome, event: Event) -> None:
        if isinstance(event, Phase):
            o.phase = event.phase
            if event.info.get("bytes"):
                o.total = event.info["bytes"]
        elif isinstance(event, Progress):
            o.bytes, o.total = event.bytes, event.total
        elif isinstance(event, DeviceFound):
            info = event.info
            o.module = info.get("module") or o.module
            o.serial_number = info.get("serial_number") or o.serial_number
            o.app_version_before = info.get("app_version")
            o.bootloader_version = info.get("bootloader_version")
        self.emit(o.port, event)

    def _finish(self, o: DeviceOutcome, result: str, message: str) -> None:
        o.message, o.result, o.phase, o.exit_code = message, result, "done", 130
        self._publish(o)

    def _publish(self, o: DeviceOutcome) -> None:
        with self._lock:
            if o.reported:
                return
            o.reported = True
        record = o.record(self.image)
        if self.report is not None:
            try:
                self.report.append(record)
            except OSError as exc:       # the modules go on; the run ends with it (cli: report-failed)
                with self._lock:
                    self.report_error = self.report_error or exc
                    self.unreported.append(o.port)
        self.emit(o.port, DeviceDone(record))


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def settle(o: DeviceOutcome, session: FlashSession | IdentifyOnly | None,
           result: UpdateResult | DryRun | None, failure: BaseException | None, seconds: float) -> None:
    """Fill ``o`` from how one module's session ended: its result, or what stopped it."""
    o.seconds = seconds
    if session is not None:
        known = session.known
        o.module = known.get("module") or o.module
        o.serial_number = known.get("serial_number") or o.serial_number
        o.dev_eui = known.get("dev_eui") or o.dev_eui      # read with the settings, before it failed
        if session.device is not None:
            o.app_version_before = session.device.app_version
            o.bootloader_version = session.device.bootloader_version or o.bootloader_version
    if isinstance(result, DryRun):
        o.result, o.total = "dry-run", len(result.plan.payload)
    elif isinstance(result, UpdateResult):
        o.result, o.app_version_after, o.bytes = "ok", result.app_version_after, result.bytes
    elif isinstance(failure, RakflashError):
        o.result, o.message, o.exit_code = failure.name, failure.message, failure.exit_code
        o.module = o.module or _said(failure, "module")     # a flood never identified says which
        o.hint = (failure.hint or "").replace("--port PORT", f"--port {o.port}")   # this very port
        if isinstance(failure, AlreadyUpToDate):
            o.app_version_after = _said(failure, "app_version_after") or o.app_version_before
    elif isinstance(failure, KeyboardInterrupt):
        o.result, o.exit_code = "interrupted", 130
        o.message = "stopped (Ctrl-C) before it finished; run the same command again to finish it"
    elif failure is not None:          # a bug: this module's row says so, the others go on
        o.result, o.exit_code = "internal-error", 1
        o.message = f"{failure.__class__.__name__}: {failure}"
    o.phase = "done"


def _said(exc: RakflashError, key: str) -> str | None:
    """What ``exc`` says of ``key`` (a module's name, a version), when it says it."""
    value = exc.details.get(key)
    return value if isinstance(value, str) else None


def settle_provisioning(o: DeviceOutcome, only: bool, failure: BaseException | None,
                        provision_failure: BaseException | None) -> None:
    """Fill ``o`` from how a module's provisioning ended. The update's result stays in its
    fields (versions, bytes); a provisioning that failed makes the module's result its error."""
    if provision_failure is not None:
        settle(o, None, None, provision_failure, o.seconds)
        o.provision = {**(o.provision or {}), "result": "failed", "error": o.result}
    elif o.provision is None:
        o.provision = {"result": "not-attempted"}    # its update (or identification) failed first
    # (a row claimed before an update that failed stays "claimed": the re-run writes that row)
    elif only and failure is None:
        o.result = "ok"


class IdentifyOnly:
    """For provisioning without an update: who is on the port (a module running its
    application, or :class:`~rakflash.errors.NotProvisionable`); the same fields a
    :class:`FlashSession` offers a report."""

    def __init__(self, link: StoppableLink, options: FlashOptions, emit: Callable[[Event], None]) -> None:
        self.link, self.options, self.emit = link, options, emit
        self.device: DeviceInfo | None = None
        self.plan = None

    @property
    def known(self) -> dict[str, Any]:
        d = self.device
        return {} if d is None else {"module": d.module.name if d.module else None,
                                     "serial_number": d.serial_number, "app_version_before": d.app_version}

    def run(self) -> None:
        from .identify import identify
        self.emit(Phase("identify", f"identifying the module on {self.link.port_name}"))
        self.device = d = identify(self.link, module=self.options.module, baud=self.options.baud)
        self.emit(DeviceFound({k: v for k, v in d.to_dict().items() if k != "error"}))
        if d.mode != "app":
            raise NotProvisionable(f"the module on {self.link.port_name} is in its bootloader: its keys can "
                                   f"only be written once its application runs",
                                   hint="Finish its update first (rakflash flash FILE --port "
                                        f"{self.link.port_name} --provision BATCH does both).")


def ask_identifiers(o: DeviceOutcome, link: StoppableLink,
                    session: FlashSession | IdentifyOnly | None) -> None:
    """Ask the application that runs now (after an update, or one refused before writing) for
    its DevEUI — the value it has after the run — and for its serial number when the run never
    learnt it. What the run learnt stays where the application can't be asked."""
    if not (o.ok or o.exit_code == PlanRefused.exit_code):     # its application may not answer
        return
    if getattr(session, "opened_lock", False):      # its AT port is locked again: what the run learnt stands
        return
    o.dev_eui = _ask(link, session, _dev_eui_query) or o.dev_eui
    if o.serial_number is None:
        o.serial_number = _ask(link, session, lambda dialect: dialect.get("serial_number"))


def _dev_eui_query(dialect: Dialect) -> str | None:
    """The dialect's DevEUI query, where its AT set has one (RUI3)."""
    return next((q for q in dialect.get("settings", []) if setting_name(q).upper() == "DEVEUI"), None)


def _ask(link: StoppableLink, session: FlashSession | IdentifyOnly | None,
         query_in: Callable[[Dialect], str | None]) -> str | None:
    """One value from the module's application — the query ``query_in`` finds in its dialect —
    read consistently (twice the same, well-formed); None when it can't be asked."""
    dev = getattr(session, "device", None)
    module = dev.module if dev is not None else None
    query = query_in(module.dialect) if module is not None else None
    if not query or module is None:
        return None
    try:
        return read_value(AtConsole(link, module.dialect), module, query, 0.5, reads=4,
                          stop_when_silent=True)
    except (RakflashError, KeyboardInterrupt):
        return None


def run_fleet(ports: list[str], image: Image, options: FlashOptions | None = None, **kw: Any) -> list[DeviceOutcome]:
    """Flash ``image`` on every port at once (see :class:`Fleet`)."""
    return Fleet(ports, image, options, **kw).run()
