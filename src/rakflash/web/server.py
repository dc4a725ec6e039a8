"""The local web server behind ``rakflash web``: routes, the event stream, and its life.

Routes (all under ``/SECRET/``, see :mod:`.guard`):

==========================  ===================================================
``GET  /``                  the page (``static/index.html``; its script and style beside it)
``GET  api/ports``          serial ports as ``rakflash ports --json``, with what holds each (``busy``),
                            what was last seen on it (``seen``) and whether the page may press its reset
``POST api/ports``          ``{"port": P}``: also list a port discovery can't see (a pty, ``socket://``)
``GET  api/modules``        the catalog's modules (for the "module" choice)
``POST api/identify``       ``{"port", "baud"?, "module"?}`` → ``rakflash info --json``
``POST api/images``         the file as the body (``X-File-Name``) → ``rakflash inspect --json``
``POST api/doctor``         ``{"port", "image"?, "module"?, "baud"?}`` → ``rakflash doctor --json``
``POST api/flash``          ``{"port", "image", …options}`` → a job that checks, waits for "write", writes;
                            ``{"ports": [A, B, …], …}``: several modules at once (a fleet job)
``GET  api/jobs/ID/report`` a fleet job's report (JSON Lines, as ``flash --report`` writes it)
``POST api/recover``        ``{"port", "image", "module"?, "window"?, …}`` → a recovery job (plan, confirm, guide, write)
``POST api/jobs/ID/answer`` ``{"write": true|false}`` or ``{"module": KEY}``: the person's answer to the job's question
``POST api/jobs/ID/stop``   stop the job as Ctrl-C stops the command (the device's session is ended cleanly)
``GET  api/jobs``           the jobs and their results
``GET  api/events``         server-sent events: every job event (replayed from the start), and ``ports``
``POST api/virtual/reset``  ``{"port"}``: press the reset button of a module started with ``--sim``
==========================  ===================================================

Serial work never runs on the event loop: identification runs in a worker
thread, updates in job threads (:mod:`.jobs`) that outlive any browser tab.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import PortBusy, RakflashError, UnknownDevice, UsageError
from ..flows.session import FlashOptions
from . import operations
from .guard import Guard, loopback_hosts
from .jobs import Board, port_key

MAX_UPLOAD = 32 * 1024 * 1024     # firmware is < 1 MiB, a DFU package a few MiB
KEEP_IMAGES = 40
STATIC = Path(str(resources.files("rakflash.web") / "static"))


class _BadRequest(Exception):
    """A request the page should never send (missing field, wrong type)."""


def _error(exc: RakflashError, status: int | None = None) -> JSONResponse:
    if status is None:
        status = 409 if isinstance(exc, PortBusy) else 400 if isinstance(exc, (UsageError, UnknownDevice)) else 200
    return JSONResponse({**exc.to_dict(), "error": exc.name}, status_code=status)


def _safe_name(name: str) -> str:
    """A file name to show and store: its last path part, printable, at most 120 characters."""
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()[-120:]
    return base if base.strip(".") else "firmware.bin"


class WebServer:
    """``rakflash web``: one server on one address, with its secret, jobs and uploaded images.

    ``ports`` are listed besides those the OS reports (ptys, ``socket://`` URLs);
    ``virtual`` are virtual modules (:mod:`rakflash.sim`) to list and whose reset
    button the page may press.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ports: tuple[str, ...] | list[str] = (),
                 virtual: tuple | list = (), token: str | None = None) -> None:
        self.host = host
        self.token = token or secrets.token_urlsafe(18)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(128)      # connections wait from now on, even before uvicorn runs
        except OSError:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[1]
        self.board = Board()
        self.virtual = {port_key(v.port): v for v in virtual}
        self.extra: dict[str, dict[str, Any]] = {}
        for v in virtual:
            self.extra[v.port] = {"port": v.port, "vid_pid": None, "serial_number": None,
                                  "description": f"virtual {v.module.name} (rakflash web --sim)",
                                  "probably": v.module.name, "module": v.module.key, "mode": None,
                                  "virtual": True}
        for p in ports:
            self.add_port(p)
        self.seen: dict[str, dict[str, Any]] = {}        # port key -> last identification
        self._dir = Path(tempfile.mkdtemp(prefix="rakflash-web-"))
        self._images: dict[str, tuple[str, str]] = {}   # id -> (stored path, shown name)
        self._reports: dict[str, str] = {}               # fleet job id -> its report file
        self._scan: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._scan_lock = threading.Lock()
        self.app = Guard(self._starlette(), token=self.token, hosts=loopback_hosts(self.port, host))
        self._uvicorn = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ life
    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/{self.token}/"

    def _server(self):
        import uvicorn
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, ws="none")
        board = self.board

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame):   # Ctrl-C: end the pages' event streams at once
                board.closing = True
                board.notify()
                super().handle_exit(sig, frame)

        self._uvicorn = Server(config)
        return self._uvicorn

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C / SIGTERM stop it; call in the main thread)."""
        self._server().run(sockets=[self.sock])

    def start(self) -> "WebServer":
        """Serve in a background thread (for tests and embedding); returns once it answers."""
        server = self._server()
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self.sock]},
                                        daemon=True, name="rakflash-web")
        self._thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the web server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving (jobs still running go on until they end) and drop the uploaded files."""
        self.board.closing = True
        self.board.notify()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "WebServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ ports
    def add_port(self, port: str) -> None:
        """List ``port`` even though discovery doesn't see it."""
        self.extra.setdefault(port, {"port": port, "vid_pid": None, "serial_number": None,
                                     "description": "added by hand", "probably": None, "module": None,
                                     "mode": None, "virtual": False})

    def _discovered(self) -> list[dict[str, Any]]:
        """What the OS lists (as ``rakflash ports --json``), rescanned at most once a second."""
        from ..ports import list_serial_ports
        with self._scan_lock:
            at, entries = self._scan
            if time.monotonic() - at > 1.0:
                entries = [e.to_dict() for e in list_serial_ports()]
                self._scan = (time.monotonic(), entries)
            return entries

    def ports(self) -> list[dict[str, Any]]:
        """Every port to show: discovered and added, with what holds it and what was last seen on it."""
        found = list(self._discovered())
        known = {port_key(e["port"]) for e in found}
        found += [dict(e) for p, e in self.extra.items() if port_key(p) not in known]
        for e in found:
            key = port_key(e["port"])
            e["busy"] = self.board.holder(e["port"])
            e["seen"] = self.seen.get(key)
            e["resettable"] = key in self.virtual      # the page may press this module's reset
        return found

    # ------------------------------------------------------------ the app
    def _starlette(self) -> Starlette:
        api = [
            Route("/", self.page),
            Route("/api/ports", self.api_ports, methods=["GET", "POST"]),
            Route("/api/modules", self.api_modules),
            Route("/api/identify", self.api_identify, methods=["POST"]),
            Route("/api/images", self.api_images, methods=["POST"]),
            Route("/api/doctor", self.api_doctor, methods=["POST"]),
            Route("/api/flash", self.api_flash, methods=["POST"]),
            Route("/api/recover", self.api_recover, methods=["POST"]),
            Route("/api/jobs", self.api_jobs),
            Route("/api/jobs/{job}/answer", self.api_answer, methods=["POST"]),
            Route("/api/jobs/{job}/stop", self.api_stop, methods=["POST"]),
            Route("/api/jobs/{job}/report", self.api_report),
            Route("/api/events", self.api_events),
            Route("/api/virtual/reset", self.api_virtual_reset, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC)),
        ]
        return Starlette(routes=[Route(f"/{self.token}", self.to_page), Mount(f"/{self.token}", routes=api)],
                         exception_handlers={_BadRequest: self._bad_request})

    async def _bad_request(self, request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "usage", "message": str(exc), "hint": "Reload the page."},
                            status_code=400)

    async def to_page(self, request: Request) -> Response:
        return RedirectResponse(f"/{self.token}/")

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise _BadRequest("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise _BadRequest("the request body is not a JSON object")
        return body

    @staticmethod
    def _field(body: dict[str, Any], name: str, kind: type | tuple, *, required: bool = False,
               check=None) -> Any:
        value = body.get(name)
        if value is None or value == "":
            if required:
                raise _BadRequest(f"'{name}' is missing")
            return None
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise _BadRequest(f"'{name}' has the wrong type")
        if check is not None and not check(value):
            raise _BadRequest(f"'{name}' is out of range: {value!r}")
        return value

    async def api_ports(self, request: Request) -> Response:
        if request.method == "POST":
            port = self._field(await self._body(request), "port", str, required=True,
                               check=lambda p: 0 < len(p) <= 256 and p.isprintable())
            self.add_port(port.strip())
            self.board.notify()
        return JSONResponse({"ports": await run_in_threadpool(self.ports)})

    async def api_modules(self, request: Request) -> Response:
        from .. import catalog
        mods = catalog.load().modules.values()
        return JSONResponse({"modules": [{"key": m.key, "name": m.name} for m in mods]})

    async def api_identify(self, request: Request) -> Response:
        body = await self._body(request)
        port = self._field(body, "port", str, required=True)
        baud = self._field(body, "baud", int, check=lambda b: 300 <= b <= 4_000_000)
        try:
            module = operations.lookup_module(self._field(body, "module", str))

            def work() -> dict[str, Any]:
                with self.board.hold(port, "identifying the module on it"):
                    return operations.identify_port(port, baud, module)

            info = await run_in_threadpool(work)
        except RakflashError as exc:
            return _error(exc)
        self.seen[port_key(port)] = info
        self.board.notify()
        return JSONResponse(info)

    def _image(self, body: dict[str, Any], *, required: bool) -> tuple[str, str] | None:
        image_id = self._field(body, "image", str, required=required)
        if image_id is None:
            return None
        if image_id not in self._images:
            raise _BadRequest("that firmware file is no longer on the server: drop it again")
        return self._images[image_id]

    async def api_doctor(self, request: Request) -> Response:
        body = await self._body(request)
        port = self._field(body, "port", str, required=True)
        baud = self._field(body, "baud", int, check=lambda b: 300 <= b <= 4_000_000)
        path, name = self._image(body, required=False) or (None, None)
        try:
            module = operations.lookup_module(self._field(body, "module", str))

            def work() -> dict[str, Any]:
                with self.board.hold(port, "doctor is checking it"):
                    return operations.doctor_port(port, image_path=path, name=name, module=module, baud=baud)

            report = await run_in_threadpool(work)
        except RakflashError as exc:
            return _error(exc)
        for device in report.get("devices", []):
            self.seen[port_key(device.get("port") or port)] = device
        self.board.notify()
        return JSONResponse(report)

    async def api_images(self, request: Request) -> Response:
        from urllib.parse import unquote
        name = _safe_name(unquote(request.headers.get("x-file-name", "firmware.bin")))
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_UPLOAD:
            return JSONResponse({"error": "image-too-large-to-upload",
                                 "message": f"{name} is over {MAX_UPLOAD >> 20} MiB: not firmware for these modules",
                                 "hint": "Pick the firmware file (.bin, .hex) itself."}, status_code=413)
        image_id = secrets.token_hex(6)
        folder = self._dir / image_id
        folder.mkdir()
        path = folder / name
        size = 0
        with path.open("wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD:
                    shutil.rmtree(folder, ignore_errors=True)
                    return JSONResponse({"error": "image-too-large-to-upload",
                                         "message": f"{name} is over {MAX_UPLOAD >> 20} MiB",
                                         "hint": "Pick the firmware file (.bin, .hex) itself."},
                                        status_code=413)
                f.write(chunk)
        self._images[image_id] = (str(path), name)
        while len(self._images) > KEEP_IMAGES:
            old = next(iter(self._images))
            shutil.rmtree(Path(self._images.pop(old)[0]).parent, ignore_errors=True)
        try:
            info = await run_in_threadpool(operations.inspect_file, str(path), name)
        except RakflashError as exc:
            return JSONResponse({"image": image_id, "name": name, "inspect": None,
                                 **{**exc.to_dict(), "error": exc.name}})
        return JSONResponse({"image": image_id, "name": name, "inspect": info, "error": None})

    async def api_flash(self, request: Request) -> Response:
        body = await self._body(request)
        ports = self._field(body, "ports", list, check=lambda ps: 1 <= len(ps) <= 64 and all(
            isinstance(p, str) and p for p in ps))
        port = self._field(body, "port", str, required=ports is None)
        path, name = self._image(body, required=True)
        try:
            options = FlashOptions(
                module=operations.lookup_module(self._field(body, "module", str)),
                baud=self._field(body, "baud", int, check=lambda b: 300 <= b <= 4_000_000),
                force=bool(self._field(body, "force", bool)),
                keep_settings=self._field(body, "keep_settings", bool) is not False,
                reset_window=self._field(body, "reset_window", float, check=lambda s: 0 <= s <= 3600) or 30.0,
                reset_line=self._field(body, "reset_line", str, check=lambda s: s in ("rts", "dtr")))
            if ports is not None and len(set(ports)) > 1:
                report = str(self._dir / f"report-{secrets.token_hex(4)}.jsonl")
                job = self.board.start("fleet", ports, name,
                                       operations.fleet_work(list(dict.fromkeys(ports)), path, name,
                                                             options, report),
                                       what=f"an update of several modules with {name} runs on it")
                self._reports[job.id] = report
                return JSONResponse({"job": job.id}, status_code=202)
            port = port or ports[0]
            work = operations.flash_work(path, name, options)

            def flash_and_note(job):
                result = work(job)
                self._note_result(job.port, result)
                return result

            job = self.board.start("flash", port, name, flash_and_note,
                                   what=f"an update with {name} runs on it")
        except RakflashError as exc:
            return _error(exc)
        return JSONResponse({"job": job.id}, status_code=202)

    async def api_recover(self, request: Request) -> Response:
        from ..flows.lines import check_line
        from ..flows.recover import METHODS, RecoveryOptions
        body = await self._body(request)
        port = self._field(body, "port", str, required=True)
        path, name = self._image(body, required=True)
        baud = self._field(body, "baud", int, check=lambda b: 300 <= b <= 4_000_000)
        method = self._field(body, "method", str, check=lambda m: m in METHODS)
        try:
            module = operations.lookup_module(self._field(body, "module", str))
            options = RecoveryOptions(
                baud=baud or 115200,
                window=self._field(body, "window", float, check=lambda s: 0 <= s <= 3600) or 30.0,
                reset_with=check_line(self._field(body, "reset_with", str), "reset line"),
                boot0_with=check_line(self._field(body, "boot0_with", str), "BOOT0 line"),
                remove_protection=bool(self._field(body, "remove_protection", bool)))
            work = operations.recover_work(path, name, module, options, baud=baud, method=method)

            def recover_and_note(job):
                result = work(job)
                if result.get("result") == "ok":
                    self.seen[port_key(job.port)] = {
                        "port": job.port, "module": result.get("module"), "mode": result.get("mode_after"),
                        "app_version": result.get("app_version_after"),
                        "bootloader_version": result.get("bootloader_version_after")}
                return result

            job = self.board.start("recover", port, name, recover_and_note,
                                   what=f"a recovery with {name} runs on it")
        except RakflashError as exc:
            return _error(exc)
        return JSONResponse({"job": job.id}, status_code=202)

    def _note_result(self, port: str, result: dict[str, Any]) -> None:
        """What an update leaves on the port is what the port list shows as last seen."""
        before = result.get("device")
        if not before:
            return
        if result.get("written") == "all" and result.get("result") == "ok":
            self.seen[port_key(port)] = {**before, "mode": "app", "app_version": result.get("app_version_after")}
        elif result.get("written") == "nothing" and before.get("mode") == "app":
            # Unchanged. (A module found in its bootloader may have been caught there for
            # this plan and sent back to its application since: what runs now is unknown.)
            self.seen[port_key(port)] = before

    async def api_jobs(self, request: Request) -> Response:
        return JSONResponse({"jobs": [j.summary() for j in list(self.board.jobs.values())]})

    async def api_answer(self, request: Request) -> Response:
        job = self.board.jobs.get(request.path_params["job"])
        if job is None:
            return JSONResponse({"error": "no-such-job", "message": "no such job"}, status_code=404)
        body = await self._body(request)
        if "module" in body:
            value = self._field(body, "module", str) or False
        else:
            value = self._field(body, "write", bool, required=True)
        if not job.answer(value):
            return JSONResponse({"error": "not-waiting",
                                 "message": "this job is not waiting for that answer"}, status_code=409)
        return JSONResponse({"job": job.id, "answer": value})

    async def api_stop(self, request: Request) -> Response:
        job = self.board.jobs.get(request.path_params["job"])
        if job is None:
            return JSONResponse({"error": "no-such-job", "message": "no such job"}, status_code=404)
        if not job.stop():
            return JSONResponse({"error": "not-running", "message": "this job has ended already"},
                                status_code=409)
        return JSONResponse({"job": job.id, "stopping": True})

    async def api_report(self, request: Request) -> Response:
        """A fleet job's report: one JSON line per module, as ``flash --report`` appends them."""
        path = self._reports.get(request.path_params["job"])
        if path is None or not Path(path).exists():
            return JSONResponse({"error": "no-report", "message": "no report for this job (yet)"},
                                status_code=404)
        return FileResponse(path, media_type="application/x-ndjson",
                            filename=f"rakflash-report-{request.path_params['job']}.jsonl")

    async def api_virtual_reset(self, request: Request) -> Response:
        port = self._field(await self._body(request), "port", str, required=True)
        dev = self.virtual.get(port_key(port))
        if dev is None:
            raise _BadRequest(f"{port} is no virtual module of this server")
        dev.press_reset()
        return JSONResponse({"port": port, "reset": True})

    async def api_events(self, request: Request) -> Response:
        """Server-sent events: every kept job event after ``Last-Event-ID`` (all, on first
        connect), then live; a ``ports`` event whenever the port list changes."""
        try:
            cursor = int(request.headers.get("last-event-id") or request.query_params.get("since") or 0)
        except ValueError:
            cursor = 0
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        board = self.board

        async def stream():
            nonlocal cursor
            board.listen(loop, wake)
            ports_sent = None
            quiet_since = time.monotonic()
            try:
                yield "retry: 1000\n\n"
                while not board.closing:
                    wake.clear()
                    ports = await anyio.to_thread.run_sync(self.ports)
                    if ports != ports_sent:
                        ports_sent = ports
                        yield f"event: ports\ndata: {json.dumps(ports, default=str)}\n\n"
                    for event in board.since(cursor):
                        cursor = event["seq"]
                        yield f"id: {cursor}\ndata: {json.dumps(event, default=str)}\n\n"
                        quiet_since = time.monotonic()
                    if time.monotonic() - quiet_since > 15:
                        yield ": still here\n\n"
                        quiet_since = time.monotonic()
                    try:
                        await asyncio.wait_for(wake.wait(), 1.0)
                    except asyncio.TimeoutError:
                        pass
            finally:
                board.unlisten(loop, wake)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})
