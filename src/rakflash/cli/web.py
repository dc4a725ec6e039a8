"""``rakflash web``: serve the local web page and open it in the browser."""

from __future__ import annotations

import ipaddress
import os
import sys
import threading
import time
from contextlib import ExitStack

import click

from ..errors import UsageError
from .app import main
from .output import err, out, reports_errors


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback


def _can_open_browser() -> bool:
    """A graphical browser can be started (not on a headless server or in CI)."""
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on. Anything but loopback lets others on that network reach the page "
                   "(they still need its secret address).")
@click.option("--http-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="TCP port to serve on (0: any free one).")
@click.option("--port", "-p", "ports", multiple=True, metavar="PORT",
              help="Also list this serial port (a pty, socket://host:port: what port discovery can't see). Repeatable.")
@click.option("--sim", "sims", multiple=True, metavar="MODULE",
              help="Start a virtual module (rak3172, rak811, rak11720…) and list its port: try the page "
                   "without hardware. Repeatable.")
@click.option("--sim-sketch", type=click.Choice(["quiet", "flooding"]), default="quiet", show_default=True,
              help="The virtual modules' application: 'flooding' prints without pause (the reset-window case).")
@click.option("--no-browser", is_flag=True, help="Print the address only; don't open a browser.")
@reports_errors
def web(host: str, http_port: int, ports: tuple[str, ...], sims: tuple[str, ...], sim_sketch: str,
        no_browser: bool) -> None:
    """Serve a local web page that lists ports, identifies modules, checks and flashes firmware.

    The page's address carries a secret made for this run; it is printed, and
    opened in your browser when there is one. Stop with Ctrl-C: an update
    still running is waited for.
    """
    try:
        from ..web.server import WebServer
    except ImportError as exc:
        from ..errors import WebUnavailable
        raise WebUnavailable(f"'rakflash web' needs the web extra ({exc.name} is not installed)") from None
    from ..web.guard import AddressRefused, listen_address
    try:
        address = listen_address(host)[1]
    except AddressRefused as exc:
        raise UsageError(str(exc), hint="Name the one address to serve on (e.g. --host 192.168.1.20), "
                                        "or keep 127.0.0.1.") from None
    with ExitStack() as stack:
        virtual = []
        if sims:
            from ..sim import SimOptions, create
            from ..sim.modules import MODULES
            for name in sims:
                if name not in MODULES:
                    raise UsageError(f"no virtual module called {name!r}",
                                     hint=f"Virtual modules: {', '.join(sorted(MODULES))}.")
                dev = create(name, SimOptions(sketch=sim_sketch)).start()
                stack.callback(dev.stop)
                virtual.append(dev)
        try:
            server = WebServer(host, http_port, ports=ports, virtual=virtual, say=err.print)
        except OSError as exc:
            raise UsageError(f"cannot serve on {host}:{http_port}: {exc.strerror or exc}",
                             hint="Pick another --http-port, or leave it at 0 for any free one.") from None
        stack.callback(server.close)
        for dev in virtual:
            out.print(f"virtual {dev.module.name} on {dev.port}")
        out.print(f"rakflash web: {server.url}")
        if not _is_loopback(address):
            err.print(f"[yellow]warning:[/] serving on {host}: anyone on that network who learns the address "
                      f"can use the page.")
        if not no_browser and _can_open_browser():
            import webbrowser
            threading.Timer(0.5, webbrowser.open, args=(server.url,)).start()
        else:
            out.print("Open that address in your browser. Ctrl-C stops the server.")
        sys.stdout.flush()
        try:
            server.run()              # a Ctrl-C lets running updates finish while it serves on
        except KeyboardInterrupt:
            pass
        waited = _wait_for_jobs(server)       # still running after a third Ctrl-C, or a forced stop
        _say(list(dict.fromkeys([*server.draining, *waited])))
        if server.interrupts >= 2 and server.draining:
            sys.exit(130)             # the running updates were stopped, as a second Ctrl-C does to flash


def _wait_for_jobs(server) -> list:
    """Jobs still running once the server has stopped are let finish (Ctrl-C again stops them);
    returns them."""
    for job in server.board.running():
        if job.state == "confirm":
            job.answer(False)          # nothing written yet: drop it, the module goes back to its app
    running = [j for j in server.board.running() if j.thread is not None and not j.ended.is_set()]
    if not running:
        return []
    try:
        # The notice is printed inside the try: a second Ctrl-C right after it is read must
        # still be this one's, not escape as a bare interrupt of the command.
        err.print(f"waiting for {len(running)} running operation(s) to finish "
                  f"({', '.join(j.port for j in running)}); Ctrl-C again stops them — a module stopped "
                  f"mid-update waits in its bootloader and the next update finishes it.")
        _join(running)
    except KeyboardInterrupt:
        for job in running:
            job.stop("stopped by Ctrl-C on the server")   # each ends its device's session cleanly
        try:
            _join(running, 15.0)
        except KeyboardInterrupt:
            pass
        _say(list(dict.fromkeys([*server.draining, *running])))
        sys.exit(130)
    return running


def _join(jobs, timeout: float | None = None) -> None:
    """Wait for ``jobs`` to end (on their ``ended`` events: a Ctrl-C inside Thread.join can make
    a running thread look ended); short waits, so a Ctrl-C reaches this thread promptly."""
    end = None if timeout is None else time.monotonic() + timeout
    for job in jobs:
        while not job.ended.wait(0.2) and (end is None or time.monotonic() < end):
            pass


def _say(running) -> None:
    for job in running:
        r = job.result or {}
        err.print(f"{job.port}: {r.get('result')} {r.get('message') or ''}".rstrip())
