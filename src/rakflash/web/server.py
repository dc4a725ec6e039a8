"""The local web server behind ``rakflash web``: routes, the event stream, and its life.

Routes (all under ``/SECRET/``, see :mod:`.guard`):

==========================  ===================================================
``GET  /``                  the page (``static/index.html``; its script and style beside it)
``GET  api/ports``          serial ports as ``rakflash ports --json``, with what holds each (``busy``),
                            what was last seen on it (``seen``) and whether the page may press its reset
``POST api/ports``          ``{"port": P}``: also list a port discovery can't see (a pty, ``socket://``)
``POST api/ports/remove``   ``{"port": P}``: take a port added on the page off the list again
``GET  api/modules``        the catalog's modules (for the "module" choice)
``POST api/identify``       ``{"port", "baud"?, "module"?}`` → ``rakflash info --json``
``POST api/images``         the file as the body (``X-File-Name``) → ``rakflash inspect --json``
``POST api/doctor``         ``{"port", "image"?, "module"?, "baud"?}`` → ``rakflash doctor --json``
``POST api/keys``           ``{"port", "baud"?, "module"?}`` → ``rakflash keys show --json`` (keys masked)
``POST api/keys/backup``    the same → ``rakflash keys backup``'s file, as a download (it holds the keys)
``POST api/settings/save``  the same → ``rakflash settings save``'s file, as a download
``POST api/settings/apply`` ``{"port", "file": {a settings file's object}, …}`` → ``settings apply --json``
``POST api/flash``          ``{"port", "image", …options}`` → a job that checks, waits for "write", writes;
                            ``{"ports": [A, B, …], …}``: several modules at once (a fleet job)
                            ``"batch": PATH`` (``"ledger"``, ``"station"`` optional): each module then gets
                            its row of keys from that CSV file (a fleet job, also for one port)
``GET  api/jobs/ID/report`` a fleet job's report (JSON Lines, as ``flash --report`` writes it)
``POST api/batch``          ``{"path", "ledger"?}``: a production batch's rows and their state in its ledger,
                            as ``rakflash ledger show --json`` (checked line by line; no ledger yet: all left)
``POST api/recover``        ``{"port", "image", "module"?, "window"?, …}`` → a recovery job (plan, confirm, guide, write)
``POST api/jobs/ID/answer`` ``{"write": true|false}`` or ``{"module": KEY}``: the person's answer to the job's question
``POST api/jobs/ID/stop``   stop the job as Ctrl-C stops the command (the device's session is ended cleanly)
``POST api/jobs/ID/dismiss`` take a finished job off the page (every tab)
``GET  api/jobs``           the jobs and their results
``GET  api/events``         server-sent events: every job event (replayed from the start), and ``ports``
``POST api/virtual/reset``  ``{"port"}``: press the reset button of a module started with ``--sim``
``POST api/virtual/boot``   ``{"port", "high"}``: hold its boot pin (BOOT0 / BOOT) high, or let it go
``POST api/virtual/plug``   ``{"port"}``: plug its cable back in (a new port, the module powered afresh)
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
from typing import TYPE_CHECKING, Any, Literal, overload

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
from .guard import Guard, listen_address, own_hosts
from .jobs import Board, port_key
from .wording import for_page, report_for_page

if TYPE_CHECKING:
    import uvicorn

MAX_UPLOAD = 32 * 1024 * 1024     # firmware is < 1 MiB, a DFU package a few MiB
KEEP_IMAGES = 40
STATIC = Path(str(resources.files("rakflash.web") / "static"))


MAX_JSON_BODY = 64 * 1024          # the page's requests are a few hundred bytes


class _BadRequest(Exception):
    """A request the page should never send (missing field, wrong type, too large, not JSON)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(exc: RakflashError, status: int | None = None) -> JSONResponse:
    if status is None:
        status = 409 if isinstance(exc, PortBusy) else 400 if isinstance(exc, (UsageError, UnknownDevice)) else 200
    return JSONResponse(for_page({**exc.to_dict(), "error": exc.name}), status_code=status)


def _safe_name(name: str) -> str:
    """A file name to show and store: its last path part, printable, at most 120 characters."""
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()[-120:]
    return base if base.strip(".") else "firmware.bin"


def _download_name(kind: str, module: str, serial: str | None) -> str:
    """``keys-rak3172-SIM0123.json``: the module and its serial number, in characters any file
    system takes."""
    part = re.sub(r"[^A-Za-z0-9._-]", "_", serial or "")[:40]
    return f"{kind}-{module}" + (f"-{part}" if part else "") + ".json"


def _keys(port: str, baud: int | None, module, body: dict[str, Any]):
    return operations.read_keys(port, baud, module)


def _download(text: str, name: str) -> Response:
    """A JSON file the browser saves (``Content-Disposition: attachment``), as the command writes it."""
    return Response(text, media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


class WebServer:
    """``rakflash web``: one server on one address, with its secret, jobs and uploaded images.

    ``ports`` are listed besides those the OS reports (ptys, ``socket://`` URLs);
    ``virtual`` are virtual modules (:mod:`rakflash.sim`) to list and whose reset
    button the page may press.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ports: tuple[str, ...] | list[str] = (),
                 virtual: tuple | list = (), token: str | None = None, say=None) -> None:
        family, self.host = listen_address(host)     # AddressRefused for "every address"
        self.token = token or secrets.token_urlsafe(18)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((self.host, port))
            self.sock.listen(128)      # connections wait from now on, even before uvicorn runs
        except OSError:
            self.sock.close()
            raise
        self.port = self.sock.getsockname()[1]
        self.board = Board()
        self.virtual = list(virtual)
        self.extra: dict[str, dict[str, Any]] = {}
        for p in ports:
            self.add_port(p)
        # What the person named on the command line (or started) may be anything pyserial opens.
        self._trusted = {port_key(p) for p in ports}
        self._added: set[str] = set()            # port keys added on the page (removable there)
        self.seen: dict[str, dict[str, Any]] = {}        # port key -> last identification
        self._dir = Path(tempfile.mkdtemp(prefix="rakflash-web-"))
        self._images: dict[str, tuple[str, str]] = {}   # id -> (stored path, shown name)
        self._reports: dict[str, str] = {}               # fleet job id -> its report file
        self._scan: tuple[float, list[dict[str, Any]]] = (0.0, [])
        self._scan_lock = threading.Lock()
        self.app = Guard(self._starlette(), token=self.token, hosts=own_hosts(self.host, self.port, host))
        self.interrupts = 0                      # Ctrl-Cs (SIGINT/SIGTERM) so far: see _drain
        self.draining: list = []                 # the jobs the first one let finish
        self._say = say or (lambda text: None)
        self._uvicorn: uvicorn.Server | None = None
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
        web = self

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame):
                if web._drain():                 # updates still run: serve on until they end
                    return
                board.closing = True             # end the pages' event streams at once
                board.notify()
                super().handle_exit(sig, frame)

        self._uvicorn = Server(config)
        return self._uvicorn

    def _drain(self) -> bool:
        """A Ctrl-C (or SIGTERM) on the server. The first: plans waiting for their yes are dropped
        (nothing written), no new operation starts, and the server — the pages' event streams,
        their Stop buttons — goes on until the running updates end, telling the pages so; then it
        stops. The second: those updates are stopped as Ctrl-C stops 'flash' (the device's session
        ends cleanly). The third stops the server at once. True while it serves on."""
        self.interrupts += 1
        if self.interrupts == 1:
            for job in self.board.running():
                if job.state == "confirm":
                    job.answer(False)
            self.board.stopping = ("rakflash web is stopping (Ctrl-C in its terminal): it lets what runs "
                                   "finish and starts nothing new")
            self.draining = [j for j in self.board.running() if j.thread is not None and not j.ended.is_set()]
            if not self.draining:
                return False
            ports = ", ".join(j.port for j in self.draining)
            self._say(f"waiting for {len(self.draining)} running operation(s) to finish ({ports}); "
                      f"Ctrl-C again stops them — a module stopped mid-update waits in its bootloader "
                      f"and the next update finishes it.")
            self.board.announce({"event": "server", "state": "stopping", "message": (
                f"rakflash web was stopped in its terminal (Ctrl-C). It lets the running "
                f"{'update' if len(self.draining) == 1 else 'updates'} on {ports} finish, then stops; "
                f"nothing new can be started. Stop still works here.")})
            threading.Thread(target=self._exit_when_drained, daemon=True, name="rakflash-web-drain").start()
            return True
        if self.interrupts == 2 and self.draining:
            for job in self.draining:
                job.stop("stopped by Ctrl-C on the server")   # each ends its device's session cleanly
            self.board.announce({"event": "server", "state": "stopping", "message": (
                "rakflash web was stopped again (a second Ctrl-C): the running updates are being stopped "
                "cleanly; each module waits in its bootloader, and the next update finishes it.")})
            return True
        return False

    def _exit_when_drained(self) -> None:
        for job in self.draining:
            job.ended.wait()
        self.board.announce({"event": "server", "state": "stopped", "message": (
            "rakflash web has stopped. Start it again ('rakflash web') to use this page.")})
        time.sleep(1.0)                          # the pages' streams carry the last results out
        self.board.closing = True
        self.board.notify()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    def run(self) -> None:
        """Serve until interrupted (Ctrl-C / SIGTERM stop it; call in the main thread)."""
        self._server().run(sockets=[self.sock])

    def start(self) -> WebServer:
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

    def __enter__(self) -> WebServer:
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

    def _virtual_at(self, port: str):
        """The virtual module (``--sim``) whose port this is now (a RAK4631's moves at each reset,
        a pulled cable comes back on a new one)."""
        key = port_key(port)
        return next((v for v in self.virtual if port_key(v.port) == key), None)

    def _virtual_entry(self, v) -> dict[str, Any]:
        """A virtual module as the port list shows it, with the buttons its board has: reset, the
        boot pin (BOOT0 on the STM32s, BOOT on the RAK11720), and its cable."""
        pin = ("BOOT" if "apollo" in v.module.mcu.name.lower() else "BOOT0") if v.has_rom_bootloader() else None
        esp = getattr(v.module, "esp", None) is not None        # an ESP chip's GPIO0 is held low
        return {"port": v.port, "vid_pid": None, "serial_number": None,
                "description": f"virtual {v.module.name} (rakflash web --sim)",
                "probably": v.module.name, "module": v.module.key, "mode": None, "virtual": True,
                "controls": {"boot_pin": "GPIO0" if esp else pin, "boot_level": "low" if esp else "high",
                             "boot_high": bool(v.boot_pin), "plugged": not v.uart.closed}}

    def ports(self) -> list[dict[str, Any]]:
        """Every port to show: discovered and added, with what holds it and what was last seen on it."""
        found = list(self._discovered())
        virtual = {port_key(v.port): self._virtual_entry(v) for v in self.virtual}
        for e in found:
            if port_key(e["port"]) in virtual:
                e["controls"] = virtual[port_key(e["port"])]["controls"]
        known = {port_key(e["port"]) for e in found}
        found += [e for k, e in virtual.items() if k not in known]
        known |= virtual.keys()
        found += [dict(e) for p, e in self.extra.items() if port_key(p) not in known]
        for e in found:
            key = port_key(e["port"])
            e["busy"] = self.board.holder(e["port"])
            job = self.board.holding_job(e["port"])
            e["busy_job"] = job.id if job is not None else None
            e["waiting"] = job is not None and job.state == "confirm"    # a plan, not yet a write
            e["removable"] = key in self._added          # added on the page: the page may remove it
            e["seen"] = self.seen.get(key)
            e["resettable"] = key in virtual           # a virtual module: the page has its buttons
        return found

    # ------------------------------------------------------------ the app
    def _starlette(self) -> Starlette:
        api = [
            Route("/", self.page),
            Route("/api/ports", self.api_ports, methods=["GET", "POST"]),
            Route("/api/ports/remove", self.api_remove_port, methods=["POST"]),
            Route("/api/modules", self.api_modules),
            Route("/api/identify", self.api_identify, methods=["POST"]),
            Route("/api/images", self.api_images, methods=["POST"]),
            Route("/api/doctor", self.api_doctor, methods=["POST"]),
            Route("/api/keys", self.api_keys, methods=["POST"]),
            Route("/api/keys/backup", self.api_keys_backup, methods=["POST"]),
            Route("/api/settings/save", self.api_settings_save, methods=["POST"]),
            Route("/api/settings/apply", self.api_settings_apply, methods=["POST"]),
            Route("/api/flash", self.api_flash, methods=["POST"]),
            Route("/api/batch", self.api_batch, methods=["POST"]),
            Route("/api/recover", self.api_recover, methods=["POST"]),
            Route("/api/jobs", self.api_jobs),
            Route("/api/jobs/{job}/answer", self.api_answer, methods=["POST"]),
            Route("/api/jobs/{job}/stop", self.api_stop, methods=["POST"]),
            Route("/api/jobs/{job}/dismiss", self.api_dismiss, methods=["POST"]),
            Route("/api/jobs/{job}/report", self.api_report),
            Route("/api/events", self.api_events),
            Route("/api/virtual/reset", self.api_virtual_reset, methods=["POST"]),
            Route("/api/virtual/boot", self.api_virtual_boot, methods=["POST"]),
            Route("/api/virtual/plug", self.api_virtual_plug, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC)),
        ]
        return Starlette(routes=[Route(f"/{self.token}", self.to_page), Mount(f"/{self.token}", routes=api)],
                         exception_handlers={_BadRequest: self._bad_request})

    async def _bad_request(self, request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "usage", "message": str(exc), "hint": "Reload the page."},
                            status_code=getattr(exc, "status", 400))

    async def to_page(self, request: Request) -> Response:
        return RedirectResponse(f"/{self.token}/")

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    async def _body(self, request: Request) -> dict[str, Any]:
        """The request's JSON object: ``application/json`` only, and at most MAX_JSON_BODY bytes —
        refused (413) before a larger one is read in full."""
        kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind != "application/json":
            raise _BadRequest(f"the request body must be application/json, not {kind or 'untyped'}", 415)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_JSON_BODY:
            raise _BadRequest(f"the request body is over {MAX_JSON_BODY // 1024} KiB", 413)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_JSON_BODY:
                raise _BadRequest(f"the request body is over {MAX_JSON_BODY // 1024} KiB", 413)
        try:
            body = json.loads(raw)
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

    @overload
    def _port(self, body: dict[str, Any], name: str = ..., *, required: Literal[True] = ...) -> str: ...
    @overload
    def _port(self, body: dict[str, Any], name: str = ..., *, required: bool) -> str | None: ...
    def _port(self, body: dict[str, Any], name: str = "port", *, required: bool = True) -> str | None:
        """A port named by the page: one given on the command line or started with ``--sim``, else
        only what looks like a serial port on this computer (:func:`ports.not_a_serial_port`) —
        never a file or another computer's socket opened because a request asked."""
        port = self._field(body, name, str, required=required,
                           check=lambda p: 0 < len(p) <= 256 and p.isprintable())
        return None if port is None else self._allowed(port.strip())

    def _allowed(self, port: str) -> str:
        if port_key(port) not in self._trusted:
            from ..ports import not_a_serial_port
            reason = not_a_serial_port(port)
            if reason is not None:
                raise _BadRequest(reason)
        return port

    async def api_ports(self, request: Request) -> Response:
        if request.method == "POST":
            port = self._port(await self._body(request))
            if port_key(port) not in self._trusted and port not in self.extra:
                self._added.add(port_key(port))
            self.add_port(port)
            self.board.notify()
        return JSONResponse({"ports": await run_in_threadpool(self.ports)})

    async def api_remove_port(self, request: Request) -> Response:
        """Take a port added on the page off the list (discovered ports come and go by themselves)."""
        port = self._field(await self._body(request), "port", str, required=True)
        key = port_key(port)
        if key not in self._added:
            raise _BadRequest(f"{port} was not added on this page: only ports added here can be removed")
        if self.board.holder(port):
            raise _BadRequest(f"{port} is busy: {self.board.holder(port)}", 409)
        self._added.discard(key)
        for name in [p for p in self.extra if port_key(p) == key]:
            del self.extra[name]
        self.board.notify()
        return JSONResponse({"ports": await run_in_threadpool(self.ports)})

    async def api_modules(self, request: Request) -> Response:
        from .. import catalog
        mods = catalog.load().modules.values()
        return JSONResponse({"modules": [{"key": m.key, "name": m.name} for m in mods]})

    async def api_identify(self, request: Request) -> Response:
        body = await self._body(request)
        port = self._port(body)
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

    async def _on_port(self, request: Request, doing: str, work) -> tuple[str, Any]:
        """``work(port, baud, module, body)`` in a worker thread, holding the request's port (one
        operation per port); the port and what it returned."""
        body = await self._body(request)
        port = self._port(body)
        baud = self._field(body, "baud", int, check=lambda b: 300 <= b <= 4_000_000)
        module = operations.lookup_module(self._field(body, "module", str))

        def held() -> Any:
            with self.board.hold(port, doing):
                return work(port, baud, module, body)

        return port, await run_in_threadpool(held)

    async def api_keys(self, request: Request) -> Response:
        """``keys show --json``: the AppKey and the session keys masked (never sent to the page)."""
        try:
            port, backup = await self._on_port(request, "reading the module's keys", _keys)
        except RakflashError as exc:
            return _error(exc)
        return JSONResponse(operations.keys_shown(backup, port))

    async def api_keys_backup(self, request: Request) -> Response:
        """``keys backup``'s file as a download: the one answer that carries the keys (the point of a
        backup), to the person who pressed the button; never logged, never kept on the server."""
        from ..flows.keys import file_text
        try:
            _, backup = await self._on_port(request, "backing up the module's keys", _keys)
        except RakflashError as exc:
            return _error(exc)
        name = _download_name("keys", backup.module.key, backup.serial_number or backup.dev_eui)
        return _download(file_text(backup), name)

    async def api_settings_save(self, request: Request) -> Response:
        from ..flows.settings_files import file_text
        try:
            _, (got, dev) = await self._on_port(request, "reading the module's settings",
                                                   lambda p, b, m, _: operations.read_settings(p, b, m))
        except RakflashError as exc:
            return _error(exc)
        assert dev.module is not None
        return _download(file_text(got), _download_name("settings", dev.module.key, dev.serial_number))

    async def api_settings_apply(self, request: Request) -> Response:
        """``settings apply``: the file's object as the body's ``file`` (checked as a file is), then
        only what differs written, each read back."""
        from ..flows.settings_files import parse

        def apply(port: str, baud: int | None, module, body: dict[str, Any]) -> dict[str, Any]:
            file, name = body.get("file"), body.get("name")
            if not isinstance(file, dict):
                raise _BadRequest("'file' is missing: the settings file's JSON object")
            shown = _safe_name(name) if isinstance(name, str) else "the settings file"
            return operations.apply_settings(port, parse(file, shown, module), baud, module)

        try:
            _, result = await self._on_port(request, "applying settings to the module", apply)
        except RakflashError as exc:
            return _error(exc)
        return JSONResponse(result)

    @overload
    def _image(self, body: dict[str, Any], *, required: Literal[True]) -> tuple[str, str]: ...
    @overload
    def _image(self, body: dict[str, Any], *, required: bool) -> tuple[str, str] | None: ...
    def _image(self, body: dict[str, Any], *, required: bool) -> tuple[str, str] | None:
        image_id = self._field(body, "image", str, required=required)
        if image_id is None:
            return None
        if image_id not in self._images:
            raise _BadRequest("that firmware file is no longer on the server: drop it again")
        return self._images[image_id]

    async def api_doctor(self, request: Request) -> Response:
        body = await self._body(request)
        port = self._port(body)
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
        return JSONResponse(report_for_page(report))

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
                                 **for_page({**exc.to_dict(), "error": exc.name})})
        return JSONResponse({"image": image_id, "name": name, "inspect": info, "error": None})

    async def api_flash(self, request: Request) -> Response:
        body = await self._body(request)
        ports = self._field(body, "ports", list, check=lambda ps: 1 <= len(ps) <= 64 and all(
            isinstance(p, str) and p for p in ps))
        if ports is not None:
            ports = [self._allowed(p.strip()) for p in ports]
        port = self._port(body, required=ports is None)
        path, name = self._image(body, required=True)
        batch = self._batch(body)
        try:
            options = FlashOptions(
                module=operations.lookup_module(self._field(body, "module", str)),
                baud=self._field(body, "baud", int, check=lambda b: 300 <= b <= 4_000_000),
                force=bool(self._field(body, "force", bool)),
                keep_settings=self._field(body, "keep_settings", bool) is not False,
                reset_window=self._field(body, "reset_window", float, check=lambda s: 0 <= s <= 3600) or 30.0,
                reset_line=self._field(body, "reset_line", str, check=lambda s: s in ("rts", "dtr")))
            if batch is not None and ports is None:
                ports = [port]
            if ports is not None and (len(set(ports)) > 1 or batch is not None):
                report = str(self._dir / f"report-{secrets.token_hex(4)}.jsonl")
                job = self.board.start("fleet", ports, name,
                                       operations.fleet_work(list(dict.fromkeys(ports)), path, name,
                                                             options, report, batch),
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

    def _batch(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A production batch named by the page: a CSV file on this computer, its ledger (a file or a
        postgresql:// URL; default beside the batch) and this station's name."""
        text = lambda v: 0 < len(v) <= 4096 and v.isprintable()     # noqa: E731
        path = self._field(body, "batch", str, check=text)
        if path is None:
            return None
        return {"path": path.strip(), "ledger": self._field(body, "ledger", str, check=text),
                "station": self._field(body, "station", str, check=lambda v: 0 < len(v) <= 64 and v.isprintable()),
                "force": bool(self._field(body, "force", bool))}

    async def api_batch(self, request: Request) -> Response:
        body = await self._body(request)
        batch = self._batch({"batch": body.get("path"), "ledger": body.get("ledger")})
        if batch is None:
            raise _BadRequest("'path' is missing")
        try:
            return JSONResponse(await run_in_threadpool(operations.batch_status, batch["path"], batch["ledger"]))
        except RakflashError as exc:
            return _error(exc)

    async def api_recover(self, request: Request) -> Response:
        from ..flows.lines import check_line
        from ..flows.recover import METHODS, RecoveryOptions
        body = await self._body(request)
        port = self._port(body)
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
        elif result.get("written") in ("part", "all"):
            # Stopped or failed once writing had begun: the application seen before may be gone
            # (the module most likely waits in its bootloader). Say that it is not known.
            self.seen[port_key(port)] = {"port": before.get("port"), "module": before.get("module"),
                                         "mode": None, "note": "changed by a stopped update: Identify to see"}
        elif before.get("mode") == "app":
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
        tab = self._field(body, "tab", str, check=lambda t: len(t) <= 40)
        before, job.answered_in = job.answered_in, tab      # set first: the job may end at once
        if not job.answer(value):
            job.answered_in = before
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

    async def api_dismiss(self, request: Request) -> Response:
        job_id = request.path_params["job"]
        if not self.board.dismiss(job_id):
            return JSONResponse({"error": "not-finished", "message": "only a finished job can be dismissed",
                                 "hint": "Stop it first, or wait until it ends."}, status_code=409)
        self._reports.pop(job_id, None)
        return JSONResponse({"job": job_id, "dismissed": True})

    async def api_report(self, request: Request) -> Response:
        """A fleet job's report: one JSON line per module, as ``flash --report`` appends them."""
        path = self._reports.get(request.path_params["job"])
        if path is None or not Path(path).exists():
            return JSONResponse({"error": "no-report", "message": "no report for this job (yet)"},
                                status_code=404)
        return FileResponse(path, media_type="application/x-ndjson",
                            filename=f"rakflash-report-{request.path_params['job']}.jsonl")

    def _virtual_of(self, body: dict[str, Any]):
        port = self._field(body, "port", str, required=True)
        dev = self._virtual_at(port)
        if dev is None:
            raise _BadRequest(f"{port} is no virtual module of this server")
        return dev

    async def api_virtual_reset(self, request: Request) -> Response:
        dev = self._virtual_of(await self._body(request))
        dev.press_reset()
        self.board.notify()
        return JSONResponse({"port": dev.port, "reset": True})

    async def api_virtual_boot(self, request: Request) -> Response:
        """Hold the virtual module's boot pin high or let it go low (sampled at its next reset)."""
        body = await self._body(request)
        dev = self._virtual_of(body)
        if not dev.has_rom_bootloader():
            raise _BadRequest(f"a {dev.module.name} has no boot pin that starts a ROM bootloader")
        dev.set_boot_pin(self._field(body, "high", bool, required=True))
        self.board.notify()
        return JSONResponse({"port": dev.port, "boot_high": dev.boot_pin})

    async def api_virtual_plug(self, request: Request) -> Response:
        """Plug the virtual module's cable back in (it comes back on a new port, powered afresh)."""
        dev = self._virtual_of(await self._body(request))
        if not dev.uart.closed:
            raise _BadRequest(f"the cable of {dev.port} is plugged in")
        await run_in_threadpool(dev.plug_in)
        self.board.notify()
        return JSONResponse({"port": dev.port, "plugged": True})

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
