"""What the page's buttons run: the same API calls as the CLI commands, results as the CLI's JSON.

* ``identify`` is ``rakflash info --json``: :func:`rakflash.flows.identify.identify`;
* ``inspect`` is ``rakflash inspect --json``: :func:`rakflash.images.load` and
  :func:`rakflash.images.analyse`;
* ``doctor`` is ``rakflash doctor --port PORT [--for FILE] --json``:
  :func:`rakflash.flows.doctor.diagnose`;
* ``flash`` is ``rakflash flash --json``: a :class:`~rakflash.flows.session.FlashSession`
  whose confirmation is the page's "Write" button, run as a :class:`~rakflash.web.jobs.Job`;
* ``recover`` is ``rakflash recover --json``: :func:`rakflash.flows.recover.plan_recovery`,
  the same confirmation, then :func:`rakflash.flows.recover.recover`, run as a job;
* ``keys`` is ``rakflash keys show --json`` (the keys masked) and ``keys backup``'s file:
  :func:`rakflash.flows.keys.read_over_at`;
* ``settings save`` / ``settings apply`` are those commands: :mod:`rakflash.flows.settings_files`;
* ``fleet`` is ``rakflash flash FILE --port A --port B … --report R --json``: a
  :class:`~rakflash.flows.fleet.Fleet` dry run shows every module's plan or refusal, then,
  once confirmed, a :class:`~rakflash.flows.fleet.Fleet` writes to the modules whose plans
  stood, run as one job.

No decision is made here; this module only adapts arguments and outcomes.
"""

from __future__ import annotations

from typing import Any, Callable

from .. import catalog as _catalog
from .. import images
from ..catalog import Module
from ..errors import (
    Aborted,
    ConfirmationNeeded,
    ModuleUncertain,
    NotProvisionable,
    PlanRefused,
    RakflashError,
    UnknownDevice,
)
from ..flows.identify import DeviceInfo, identify
from ..flows.keys import Backup
from ..flows.session import DryRun, FlashOptions, FlashSession
from ..flows.settings_files import SettingsFile
from ..link import Link
from ..stoppable import StoppableLink
from ..written import ALL, NOTHING, PART, SAID, Written
from .jobs import Job

# The keys every flash result has (null when unknown), as in `rakflash flash --json`.
FLASH_KEYS = ("result", "app_version_before", "app_version_after", "bytes", "seconds")


def lookup_module(name: str | None) -> Module | None:
    """The catalog module called ``name`` (None for none or "")."""
    if not name:
        return None
    cat = _catalog.load()
    try:
        return cat.module(name)
    except KeyError:
        raise UnknownDevice(f"no module called {name!r}",
                            hint=f"Known modules: {', '.join(cat.modules)}.") from None


def identify_port(port: str, baud: int | None, module: Module | None) -> dict[str, Any]:
    """What ``rakflash info --port PORT --json`` prints (raises the named error on failure)."""
    with Link(port, baud or 115200) as link:
        return identify(link, module=module, baud=baud).to_dict()


def inspect_file(path: str, name: str, module: Module | None = None) -> dict[str, Any]:
    """What ``rakflash inspect FILE --json`` prints; ``name`` is shown instead of the stored path
    (also in an error: the server's temporary folder means nothing to the person)."""
    try:
        image = images.load(path, module=module)
    except RakflashError as exc:
        exc.message = exc.message.replace(path, name)
        exc.args = (exc.message,)
        if exc.hint:
            exc.hint = exc.hint.replace(path, name)
        raise
    image.path = name
    return images.analyse(image, module=module).to_dict()


def doctor_port(port: str, *, image_path: str | None = None, name: str | None = None,
                module: Module | None = None, baud: int | None = None) -> dict[str, Any]:
    """What ``rakflash doctor --port PORT [--for FILE] --json`` prints.

    The dropped file is stored under a name of the server's; the commands doctor
    suggests name it as the person knows it (``name``).
    """
    import json

    from ..flows.doctor import diagnose
    report = diagnose(port, image_path=image_path, module=module, baud=baud).to_dict()
    if image_path and name:
        report = json.loads(json.dumps(report, default=str).replace(json.dumps(image_path)[1:-1],
                                                                    json.dumps(name)[1:-1]))
    return report


def _application(link: Link, module: Module | None, baud: int | None) -> DeviceInfo:
    """The module on ``link``, identified, whose application is to be asked for its keys or
    settings (as ``rakflash keys`` / ``settings`` ask it; a locked port is ``port-locked``)."""
    dev = identify(link, module=module, baud=baud)
    if dev.mode != "app" or dev.module is None:
        what = ("waits in its bootloader, which has no keys or settings to give" if dev.mode != "app"
                else "is not a module rakflash knows")
        raise NotProvisionable(f"the module on {link.port_name} {what}",
                               hint="Finish its update first (drop its firmware and Flash), then ask again.")
    return dev


def read_keys(port: str, baud: int | None, module: Module | None) -> Backup:
    """The module's keys and settings read over AT, as ``rakflash keys show|backup`` read them."""
    from ..flows.keys import read_over_at
    with Link(port, baud or 115200) as link:
        dev = _application(link, module, baud)
        assert dev.module is not None
        backup = read_over_at(link, dev.module)
        backup.serial_number = backup.serial_number or dev.serial_number
        return backup


def keys_shown(backup: Backup, port: str) -> dict[str, Any]:
    """What ``rakflash keys show --json`` prints: the AppKey and the session keys masked."""
    return {"result": "ok", **backup.shown(False), "module": backup.module.name, "port": port, "error": None}


def read_settings(port: str, baud: int | None, module: Module | None) -> tuple[SettingsFile, DeviceInfo]:
    """The module's settings, as ``rakflash settings save`` reads them."""
    from ..flows import settings_files
    with Link(port, baud or 115200) as link:
        dev = _application(link, module, baud)
        assert dev.module is not None
        return settings_files.read(link, dev.module, serial_number=dev.serial_number,
                                   firmware=dev.app_version), dev


def apply_settings(port: str, wanted: dict[str, str], baud: int | None, module: Module | None) -> dict[str, Any]:
    """``rakflash settings apply FILE --port PORT --json``: what differs written, each read back."""
    from ..flows import settings_files
    with Link(port, baud or 115200) as link:
        dev = _application(link, module, baud)
        assert dev.module is not None
        done = settings_files.apply(link, dev.module, wanted)
    return {"result": "ok", "port": port, "module": dev.module.name, "serial_number": dev.serial_number,
            **done.to_dict(), "error": None}


def outcome_of(exc: RakflashError) -> str:
    """How the page files an error: ``ok`` (nothing to do), ``refused`` (before writing),
    ``aborted`` (not confirmed) or ``failed``."""
    if exc.exit_code == 0:
        return "ok"
    if isinstance(exc, PlanRefused):
        return "refused"
    if isinstance(exc, (Aborted, ConfirmationNeeded)):
        return "aborted"
    return "failed"


def failure(exc: RakflashError, known: dict[str, Any], *, written: str,
            device: dict[str, Any] | None = None) -> dict[str, Any]:
    """A flash that stopped with ``exc``: the CLI's JSON error line, plus ``outcome``,
    ``written`` (nothing, part or all: :mod:`rakflash.written`, from what went out and was
    acknowledged) and the ``device`` as identified (when it was)."""
    d: dict[str, Any] = {k: None for k in FLASH_KEYS}
    d.update(known)
    d["device"] = device
    outcome = outcome_of(exc)
    d.update({"result": exc.name, "outcome": outcome, "written": written,
              "error": exc.name if exc.exit_code else None, "message": exc.message, "hint": exc.hint})
    d.update({k: v for k, v in exc.details.items() if k not in ("error", "message", "hint")})
    return d


def stopped(known: dict[str, Any], *, written: str, hint: str | None = None,
            device: dict[str, Any] | None = None, keys: tuple[str, ...] = FLASH_KEYS,
            why: str = "stopped from the page") -> dict[str, Any]:
    """A job stopped with the page's Stop button, as ``flash --json`` reports a Ctrl-C; ``hint``
    (default: from what was written) says what the module holds and the next step."""
    d: dict[str, Any] = {k: None for k in keys}
    d.update(known)
    if hint is None:
        hint = ("The module waits in its bootloader: check the plan again and flash to finish the update."
                if known.get("writing") else SAID[written])
    d.update(result="interrupted", outcome="stopped", written=written, error="interrupted",
             message=why, hint=hint, device=device)
    return d


def _link(job: Job, baud: int | None) -> StoppableLink:
    """The job's port, stoppable from the page (its Stop button)."""
    link = StoppableLink(job.port, baud or 115200)
    job.stopper = link.stop
    if job.stop_requested:
        link.stop()
    return link


def choose_module(job: Job, uncertain: ModuleUncertain) -> Module | None:
    """Which module it is, when the device can't say: the person picks one of the candidates on
    the page, or none (then the refusal stands) — as ``flash`` asks on a terminal."""
    modules = {m.key: m for m in uncertain.modules}
    key = job.ask(f"{uncertain.message}. Which module is it? The label on it says.",
                  {"candidates": [{"key": m.key, "name": m.name} for m in uncertain.modules],
                   "image_fits": [m.name for m in getattr(uncertain, "fits", [])]},
                  action="choose-module", choices=tuple(modules))
    return modules.get(key) if key else None


def flash_work(image_path: str, name: str, options: FlashOptions) -> Callable[[Job], dict[str, Any]]:
    """The job that checks ``image_path`` against the module on the job's port and, once the
    person confirms the plan on the page, writes it (``rakflash flash FILE --port PORT``)."""

    def work(job: Job) -> dict[str, Any]:
        session: FlashSession | None = None
        try:
            image = images.load(image_path, module=options.module)
            image.path = name
            with _link(job, options.baud) as link:
                session = FlashSession(link, image, options, emit=job.emit,
                                       confirm=lambda plan: job.ask(
                                           f"Write {len(plan.payload):,} bytes to {plan.module.name} "
                                           f"on {job.port}?",
                                           {"bytes": len(plan.payload), "module": plan.module.name,
                                            "port": job.port}),
                                       choose_module=lambda uncertain: choose_module(job, uncertain))
                outcome = session.run()
        except RakflashError as exc:
            known = session.known if session else {}
            return failure(exc, known, written=known.get("written", NOTHING),
                           device=session.device.to_dict() if session and session.device else None)
        except KeyboardInterrupt:
            known = session.known if session else {}
            return stopped(known, written=known.get("written", NOTHING), why=job.stop_reason,
                           device=session.device.to_dict() if session and session.device else None)
        d = outcome.to_dict()
        d.update(outcome="ok", written=NOTHING if isinstance(outcome, DryRun) else ALL, error=None,
                 device=session.device.to_dict() if session.device else None)
        return d

    return work


def recover_work(image_path: str, name: str, module: Module | None, options, *,
                 baud: int | None = None, method: str | None = None) -> Callable[[Job], dict[str, Any]]:
    """The job that plans a recovery of the module on the job's port with ``image_path`` (a full
    image), shows the plan and the person's steps, and once confirmed runs it
    (``rakflash recover FILE --port PORT``)."""
    from ..events import PlanReady
    from ..flows.recover import interrupted_hint, method_for, plan_recovery, recover

    def work(job: Job) -> dict[str, Any]:
        known: dict[str, Any] = {}
        written = Written()     # what went out and was acknowledged: what the chip holds
        try:
            image = images.load(image_path, module=module)
            image.path = name
            options.confirm = lambda question: job.ask(question, {"action": "remove-protection"})
            plan = plan_recovery(image, module, method=method, options=options)
            impl = method_for(plan.method)
            impl.port_commands(plan, options, job.port)
            known["module"] = plan.module.name
            impl.precheck(plan)      # a missing tool is said first, as `recover` does
            job.emit(PlanReady(plan.to_dict()))
            if not job.ask(f"Rewrite {plan.module.name}'s flash ({plan.bytes:,} bytes, bootloader "
                           f"included) over {job.port}?",
                           {"bytes": plan.bytes, "module": plan.module.name, "port": job.port,
                            "method": plan.method}):
                raise Aborted("recovery not confirmed")
            with _link(job, baud) as link:
                result = recover(link, plan, options, emit=job.emit, written=written)
        except RakflashError as exc:
            d = failure(exc, {**known, "bytes": written.bytes if written.state != NOTHING else None},
                        written=written.state)
            d.update({k: d.get(k) for k in ("bootloader_version_before", "bootloader_version_after")})
            return d
        except KeyboardInterrupt:
            hint = interrupted_hint(written, known["module"], plan.method) if "module" in known else None
            return stopped({**known, "bytes": written.bytes if written.state != NOTHING else None},
                           written=written.state, hint=hint, why=job.stop_reason)
        return {**result.to_dict(), "outcome": "ok", "error": None}

    return work


def fleet_work(ports: list[str], image_path: str, name: str, options: FlashOptions,
               report_path: str, batch: dict[str, Any] | None = None) -> Callable[[Job], dict[str, Any]]:
    """The job that updates several modules at once: every module's plan (a dry run of the
    fleet, nothing written), the person's one confirmation for the modules whose plans stood,
    then the fleet itself, one report record per module appended to ``report_path``.

    ``batch`` (``{"path", "ledger"?, "station"?}``): after its update each module gets its row of
    keys, as ``flash … --provision`` gives it; the batch is checked against its ledger first."""
    import dataclasses

    from ..flows.fleet import Fleet, ReportFile

    def work(job: Job) -> dict[str, Any]:
        try:
            image = images.load(image_path, module=options.module)
            provisioning = provisioning_for(batch) if batch else None
        except RakflashError as exc:
            return failure(exc, {}, written=NOTHING)
        try:
            return run(job, image, provisioning)
        finally:
            if provisioning is not None:
                provisioning.ledger.close()

    def run(job: Job, image, provisioning) -> dict[str, Any]:
        image.path = name
        check = Fleet(ports, image, dataclasses.replace(options, dry_run=True), emit=job.emit_port)
        job.stopper = check.stop
        if job.stop_requested:
            check.stop()
        planned = check.run()
        ready = [o.port for o in planned if o.result == "dry-run"]
        results = {o.port: o.record(image) for o in planned}
        if ready and not job.stop_requested:
            try:
                keys = f" and give each a row of {provisioning.batch.name}" if provisioning is not None else ""
                yes = job.ask(f"Write {name} to the modules on {', '.join(ready)}{keys}?",
                              {"ports": ready, "modules": len(ready)})
            except Aborted:
                yes = False
            if yes:
                fleet = Fleet(ready, image, options, emit=job.emit_port, report=ReportFile(report_path),
                              provisioning=provisioning)
                job.stopper = fleet.stop
                if job.stop_requested:
                    fleet.stop()
                for o in fleet.run():
                    results[o.port] = o.record(image)
        return fleet_summary([results[p] for p in ports], confirmed=job.confirmed, report=report_path)

    return work


def provisioning_for(batch: dict[str, Any]):
    """The batch of keys a fleet job gives its modules (checked against its ledger: every
    refusal comes before any module is touched)."""
    from ..provision.batch import read_batch
    from ..provision.keys import Provisioning
    from ..provision.ledger import check_against, open_ledger, station_name
    rows = read_batch(batch["path"])
    ledger = open_ledger(batch.get("ledger"), batch["path"])
    try:
        check_against(rows, ledger)
    except BaseException:
        ledger.close()
        raise
    return Provisioning(rows, ledger, batch.get("station") or station_name(), bool(batch.get("force")))


def batch_status(path: str, ledger_spec: str | None) -> dict[str, Any]:
    """What ``rakflash ledger show BATCH --json`` says, for the page (no ledger yet: every row left)."""
    from ..errors import LedgerError
    from ..provision.batch import read_batch
    from ..provision.ledger import default_path, describe, open_ledger, status
    rows = read_batch(path)
    try:
        ledger = open_ledger(ledger_spec, path, create=False)
    except LedgerError:
        if ledger_spec and ledger_spec.startswith("postgres"):
            raise
        ledger = None
    try:
        return {"result": "ok", "path": path, "ledger": describe(ledger_spec) if ledger_spec else default_path(path),
                "ledger_exists": ledger is not None, **status(rows, ledger)}
    finally:
        if ledger is not None:
            ledger.close()


def fleet_summary(records: list[dict[str, Any]], *, confirmed: bool, report: str) -> dict[str, Any]:
    """A fleet job's result: each module's report record (``devices``), counted by result, and
    the outcome — ``ok`` (every module), ``failed`` (one or more did not make it), or ``aborted``
    (plans stood but the person did not confirm; nothing written). ``written``: nothing (not
    confirmed), all (every module updated or up to date), or part (a module did not make it,
    and may hold part of the image)."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    failed = [r for r in records if r["error"]]
    written = NOTHING if not confirmed else (PART if failed else ALL)
    if confirmed:
        outcome = "failed" if failed else "ok"
    else:
        outcome = "aborted" if any(r["result"] == "dry-run" for r in records) else "failed"
    result = "interrupted" if counts.get("interrupted") else outcome
    return {"result": result, "outcome": outcome, "written": written, "modules": len(records),
            "ok": len(records) - len(failed), "failed": len(failed), "results": counts,
            "devices": records, "report": report if confirmed else None, "error": None}
