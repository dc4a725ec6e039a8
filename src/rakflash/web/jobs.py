"""Operations the page starts, run by the server so they outlive the browser tab.

A :class:`Job` is one operation on one port (check and flash an image, …). It
runs in a thread of its own, reports through the typed event stream
(:mod:`rakflash.events`) and keeps what it reported, so a tab opened later —
or the same tab after a reload — replays the whole story and then follows it
live. :class:`Board` holds the jobs, lets one operation at a time use a port,
and wakes the pages' event streams when something happens.

Everything here is plumbing between threads: what a job *does* is a flow
from :mod:`rakflash.flows`, called by :mod:`rakflash.web.operations`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import threading
import time
from typing import Any, Callable, Iterator

from .. import events as ev
from ..errors import Aborted, PortBusy, RakflashError
from .wording import for_page

# How long a plan waits for the person's "write it" before it is dropped (the
# module, if it was caught in its bootloader for it, is sent back to its application).
CONFIRM_WINDOW = 15 * 60.0
KEEP_FINISHED = 30          # finished jobs kept for the page to show


class ServerStopping(RakflashError):
    """``rakflash web`` was asked to stop (Ctrl-C) and lets only what already runs finish."""
    name = "server-stopping"
    hint = "Start 'rakflash web' again once it has stopped, then reload this page."


def port_key(port: str) -> str:
    """One name per port, so /dev/serial/by-id/… and /dev/ttyUSB0 are the same port."""
    return os.path.realpath(port) if port.startswith("/dev/") else port


class Job:
    """One operation on one port; ``emit`` is its event sink, ``ask`` its confirmation."""

    def __init__(self, board: Board, kind: str, ports: list[str], title: str) -> None:
        self.board = board
        self.id = secrets.token_hex(4)
        self.kind = kind                # "flash", "recover", "fleet"
        self.ports = ports              # the ports it holds (several for a fleet)
        self.port = ", ".join(ports)
        self.title = title              # what it works on (the file name)
        self.state = "running"          # running | confirm | done
        self.started = time.time()
        self.events: list[dict[str, Any]] = []
        self.result: dict[str, Any] | None = None
        self.confirmed = False          # the person said "write it": from here on the module may change
        self._t0 = time.monotonic()
        self._answer = threading.Event()
        self._value: Any = False
        self._question: tuple[str, tuple[str, ...]] = ("confirm-write", ())
        self._rate_base: dict[str, tuple[float, int]] = {}
        self._progress_at: dict[tuple, int] = {}      # (port, phase) -> index of its latest progress
        self.thread: threading.Thread | None = None
        # Set when the job has ended. Wait on this, not on Thread.join: a Ctrl-C landing inside
        # join() can leave a still-running thread looking ended (CPython).
        self.ended = threading.Event()
        self.stopper: Callable[[], None] | None = None   # stops the job's link (set by the work)
        self.stop_requested = False
        self.stop_reason = "stopped from the page"
        self.answered_in: str | None = None   # which tab answered (a plan cancelled elsewhere says so)

    # -- the event sink the flows report to -----------------------------------
    def emit(self, event: ev.Event, port: str | None = None) -> None:
        """Keep and publish one typed event (a :data:`rakflash.events.Sink`); ``port`` tags the
        events of one module of several (a fleet's ``emit(port, event)``)."""
        data = event.to_dict()
        if port is not None:
            data["port"] = port
        if isinstance(event, ev.Progress):
            data.update(self._rate(event, port))
        self.board.publish(self, data, replaces_progress=isinstance(event, ev.Progress))

    def emit_port(self, port: str, event: ev.Event) -> None:
        """The fleet's sink: ``(port, event)``."""
        self.emit(event, port)

    def _rate(self, p: ev.Progress, port: str | None = None) -> dict[str, float | None]:
        """Bytes per second since this phase's first progress report, and the time left at that rate."""
        now = time.monotonic()
        t0, b0 = self._rate_base.setdefault(f"{port}|{p.phase}", (now, p.bytes))
        if now - t0 < 0.2 or p.bytes <= b0:
            return {"rate": None, "eta": None}
        rate = (p.bytes - b0) / (now - t0)
        return {"rate": round(rate, 1), "eta": round(max(0, p.total - p.bytes) / rate, 1)}

    # -- questions to the person ------------------------------------------------
    def ask(self, message: str, info: dict[str, Any], window: float = CONFIRM_WINDOW, *,
            action: str = "confirm-write", choices: tuple[str, ...] = ()) -> Any:
        """Wait for the person's answer to ``message``, asked on the page as an ``action`` prompt.

        ``confirm-write`` is answered yes or no (True/False, also what it returns and what
        :attr:`confirmed` becomes); ``choose-module`` with one of ``choices`` (returned) or no
        (False). Nobody answering within ``window`` seconds is :class:`~rakflash.errors.Aborted`.
        """
        if self.board.stopping:            # a check that ends after Ctrl-C on the server asks nobody
            raise Aborted(self.board.stopping, hint="Nothing was written. Start 'rakflash web' again to update.")
        self._answer.clear()
        self._question = (action, choices)
        self._set_state("confirm")
        self.emit(ev.Prompt(action, message, window, info))
        answered = self._answer.wait(window)
        self._set_state("running")
        if not answered:
            raise Aborted(f"nobody answered within {window / 60:.0f} minutes",
                          hint="Nothing was written. Check the plan again to update.")
        if action == "confirm-write":
            self.confirmed = self._value is True
        return self._value

    def answer(self, value: Any) -> bool:
        """The person's answer (True/False, or one of the choices); False when the job is not
        waiting for one or the answer does not fit the question."""
        if self.state != "confirm" or self._answer.is_set():
            return False
        action, choices = self._question
        if value is not False and not (value is True and action == "confirm-write") \
                and value not in choices:
            return False
        self._value = value
        self._answer.set()
        return True

    def stop(self, why: str = "stopped from the page") -> bool:
        """Stop the job as Ctrl-C stops the command: a plan waiting for its confirmation is
        dropped; a running flow is interrupted at its next read or write and ends its
        device's session cleanly. False when the job has ended already."""
        if self.state == "done":
            return False
        self.stop_requested = True
        self.stop_reason = why
        if self.state == "confirm":
            return self.answer(False) or True
        if self.stopper is not None:
            self.stopper()
        return True

    # -- life -----------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        self.state = state
        self.board.publish(self, self.header())

    def header(self) -> dict[str, Any]:
        """The job as a ``job`` message: what it is and where it stands."""
        return {"event": "job", "kind": self.kind, "port": self.port, "ports": self.ports,
                "title": self.title, "state": self.state, "started": self.started}

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, **{k: v for k, v in self.header().items() if k != "event"},
                "result": self.result}

    def finish(self, result: dict[str, Any]) -> None:
        if self.answered_in is not None:
            result = {**result, "answered_in": self.answered_in}
        self.result = result
        self.board.publish(self, {"event": "result", **result})
        self._set_state("done")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._t0


class Board:
    """The jobs of one server, the ports they hold, and the event streams listening."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._seq = itertools.count(1)
        self.jobs: dict[str, Job] = {}
        self._holders: dict[str, str] = {}          # port key -> what holds it (for the busy message)
        self._holder_jobs: dict[str, Job] = {}
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._notices: list[dict[str, Any]] = []     # board-wide messages ("dismissed", "server")
        self.closing = False      # the event streams end
        self.stopping: str | None = None     # why no new operation may start (the server is stopping)

    # -- one operation per port -----------------------------------------------
    def _take(self, ports: list[str], what: str, job: Job | None = None) -> None:
        """Hold every port of ``ports``, or none of them (PortBusy naming the first taken one)."""
        keys = [port_key(p) for p in ports]
        with self._lock:
            if self.stopping:
                raise ServerStopping(self.stopping)
            for port, key in zip(ports, keys, strict=False):
                if key in self._holders:
                    holder = self._holder_jobs.get(key)
                    waiting = holder is not None and holder.state == "confirm"
                    raise PortBusy(f"{port} is busy: {self.holder(port)}",
                                   hint=("That plan waits for someone's yes, perhaps in another tab or "
                                         "window: confirm or cancel it on its card, or with 'Cancel "
                                         "plan' in the port's row, then check again." if waiting else
                                         "One operation per port at a time: wait until it ends (it "
                                         "shows on this page), then try again."),
                                   job=holder.id if holder is not None else None)
            for key in keys:
                self._holders[key] = what
                if job is not None:
                    self._holder_jobs[key] = job
        self.notify()

    def _give_back(self, ports: list[str]) -> None:
        with self._lock:
            for key in map(port_key, ports):
                self._holders.pop(key, None)
                self._holder_jobs.pop(key, None)
        self.notify()

    @contextlib.contextmanager
    def hold(self, port: str, what: str) -> Iterator[None]:
        """Hold ``port`` for a short operation (identify) in the calling thread; PortBusy if taken."""
        self._take([port], what)
        try:
            yield
        finally:
            self._give_back([port])

    def holder(self, port: str) -> str | None:
        """What holds ``port`` now (None: free); a plan waiting for its confirmation says so."""
        with self._lock:
            key = port_key(port)
            job = self._holder_jobs.get(key)
            if job is not None and job.state == "confirm":
                return f"a plan for {job.title} waits for its confirmation"
            return self._holders.get(key)

    def holding_job(self, port: str) -> Job | None:
        """The job that holds ``port``, if a job does (identify holds it without one)."""
        with self._lock:
            return self._holder_jobs.get(port_key(port))

    def start(self, kind: str, port: str | list[str], title: str, work: Callable[[Job], dict[str, Any]],
              *, what: str) -> Job:
        """Run ``work(job)`` in a thread of its own, holding ``port`` (or each of a list of
        ports); PortBusy if one is taken.

        ``work`` returns the job's result (a dict like the CLI's final ``--json``
        line); an exception that escapes it becomes an ``internal-error`` result.
        """
        ports = [port] if isinstance(port, str) else list(dict.fromkeys(port))
        job = Job(self, kind, ports, title)
        self._take(ports, what, job)
        with self._lock:
            self.jobs[job.id] = job
            self._forget_old()
        self.publish(job, job.header())

        def run() -> None:
            result: dict[str, Any]
            try:
                result = work(job)
            except RakflashError as exc:       # work() normally turns these into results itself
                result = {"result": exc.name, "outcome": "failed", **exc.to_dict()}
            except Exception as exc:  # noqa: BLE001 - a bug must still end the job with a message
                result = {"result": "internal-error", "outcome": "failed", "error": "internal-error",
                          "message": f"internal error: {exc.__class__.__name__}: {exc}",
                          "hint": "This is a bug in rakflash. Please report it with what you did."}
            finally:
                self._give_back(ports)
            try:
                job.finish(for_page(result, kind))
            finally:
                job.ended.set()

        job.thread = threading.Thread(target=run, daemon=True, name=f"web-{kind}-{job.id}")
        job.thread.start()
        return job

    def _forget_old(self) -> None:
        done = sorted((j for j in self.jobs.values() if j.state == "done"), key=lambda j: j.started)
        for j in done[:max(0, len(done) - KEEP_FINISHED)]:
            del self.jobs[j.id]

    def dismiss(self, job_id: str) -> bool:
        """Take a finished job off every page (False: no such job, or it has not ended)."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.state != "done":
                return False
            del self.jobs[job_id]
        self.announce({"event": "dismissed", "job": job_id})
        return True

    def announce(self, data: dict[str, Any]) -> None:
        """A message for every page that belongs to no job (a job dismissed, the server stopping)."""
        with self._lock:
            self._notices.append({**data, "seq": next(self._seq)})
            del self._notices[:-200]
        self.notify()

    def running(self) -> list[Job]:
        with self._lock:
            return [j for j in self.jobs.values() if j.state != "done"]

    # -- events -----------------------------------------------------------------
    def publish(self, job: Job, data: dict[str, Any], *, replaces_progress: bool = False) -> None:
        """Stamp ``data`` (sequence number, job, time) and keep it; wake the streams."""
        with self._lock:
            data = {**data, "seq": next(self._seq), "job": job.id, "t": round(job.elapsed, 3)}
            key = (data.get("port"), data.get("phase"))
            at = job._progress_at.get(key) if replaces_progress else None
            if at is not None:
                job.events[at] = data        # a page needs only each module's latest progress
            else:
                job.events.append(data)
                if replaces_progress:
                    job._progress_at[key] = len(job.events) - 1
        self.notify()

    def since(self, seq: int) -> list[dict[str, Any]]:
        """Every kept event after ``seq``, all jobs, in order."""
        with self._lock:
            found = [e for j in self.jobs.values() for e in j.events if e["seq"] > seq]   # progress
            # entries are replaced in place with a newer seq, so order by seq, not by position
            found += [e for e in self._notices if e["seq"] > seq]
        return sorted(found, key=lambda e: e["seq"])

    def listen(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        with self._lock:
            self._listeners.add((loop, wake))

    def unlisten(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        with self._lock:
            self._listeners.discard((loop, wake))

    def notify(self) -> None:
        """Wake every event stream (from any thread)."""
        with self._lock:
            listeners = list(self._listeners)
        for loop, wake in listeners:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:     # that stream's loop is gone
                self.unlisten(loop, wake)
