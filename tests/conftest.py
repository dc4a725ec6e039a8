"""Shared fixtures: virtual modules on real ptys, and the rakflash CLI as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rakflash import catalog
from rakflash.sim import SimOptions, create

# Tests run the virtual modules fast: a high simulated baud rate and instant
# flash. Realistic 115200-baud timing belongs to benchmarks/ and a few marked
# end-to-end checks.
FAST_BAUD = 921600
SRC = str(Path(__file__).resolve().parent.parent / "src")   # the checkout's package, for subprocesses


def pytest_configure(config):
    config.addinivalue_line("markers", "pty_only: checks what only a pseudo-terminal has (no modem "
                            "lines, /proc openers, a path) or uses a bare one; skipped when "
                            "RAKFLASH_SIM_TRANSPORT=tcp and where there are no ptys")
    # pyserial 3.5's RFC 2217 client names its reader thread the old way (tests open rfc2217://
    # ports directly too; rakflash's own link silences it where it opens one)
    config.addinivalue_line("filterwarnings",
                            r"ignore:set(Daemon|Name)\(\) is deprecated:DeprecationWarning")


def pytest_collection_modifyitems(config, items):
    if not hasattr(os, "openpty"):        # Windows
        skip = pytest.mark.skip(reason="needs a pseudo-terminal, which this system doesn't have")
    elif os.environ.get("RAKFLASH_SIM_TRANSPORT", "").strip().lower() == "tcp":
        skip = pytest.mark.skip(reason="about the pty transport; the virtual modules run over TCP here")
    else:
        return
    for item in items:
        if "pty_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cat():
    return catalog.load()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test keeps rakflash's per-user files (settings kept between runs) to itself."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # Virtual USB ports (native-USB simulators) are registered per test, so tests running at
    # the same time (or a simulator someone runs by hand) never see each other's ports.
    monkeypatch.setenv("RAKFLASH_VIRTUAL_PORTS", str(tmp_path / "virtual-ports"))


@pytest.fixture
def virtual():
    """Factory: virtual(module, **SimOptions fields) -> started VirtualModule (stopped after the test).

    On a pty, or over TCP (rfc2217://127.0.0.1:PORT) when RAKFLASH_SIM_TRANSPORT=tcp (the
    simulator's default follows the variable; open ports with serial.serial_for_url)."""
    started = []

    def make(name: str = "rak3172", **kw):
        kw.setdefault("baud", FAST_BAUD)
        kw.setdefault("latency_ms", 0.2)
        kw.setdefault("flash_scale", 0.0)
        dev = create(name, SimOptions(**kw)).start()
        started.append(dev)
        return dev

    yield make
    for dev in started:
        dev.stop()


def run_cli(*args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real ``rakflash`` command line in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "rakflash", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, input=input)


def run_as_a_person(command: str, *args: str, on_event, timeout: float = 90) -> tuple[int, list[dict]]:
    """Run `rakflash COMMAND … --json`; ``on_event`` sees each event as it comes and does what a
    person at the module would (press reset, hold a pin). Returns (exit code, events)."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", command, *args, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    events: list[dict] = []
    try:
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            events.append(json.loads(line))
            on_event(events[-1])
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, events


def flash_pressing_reset(dev, *args: str, timeout: float = 90) -> tuple[int, list[dict]]:
    """Run `rakflash flash … --json` and press the virtual module's reset button once
    rakflash says it is waiting for it (its first countdown event), as a person would."""
    pressed = []

    def person(event: dict) -> None:
        if event.get("event") == "countdown" and not pressed:
            dev.press_reset()
            pressed.append(True)
    return run_as_a_person("flash", *args, on_event=person, timeout=timeout)


def cli_json(*args: str, **kw) -> tuple[int, dict]:
    """Run the CLI with ``--json`` and return (exit code, the last JSON object printed)."""
    proc = run_cli(*args, "--json", **kw)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON on stdout; stderr: {proc.stderr}"
    return proc.returncode, json.loads(lines[-1])


def fake_usb_port(device: str, vid: int | None, pid: int | None, description: str):
    """A serial port as pyserial's port listing describes it, for tests without hardware."""
    from serial.tools import list_ports_common
    p = list_ports_common.ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.description = vid, pid, description
    return p


def signal_when(proc: subprocess.Popen, condition, sig) -> list[dict]:
    """The JSON lines of a running ``rakflash … --json``: ``sig`` is sent at the first line that
    meets ``condition`` (a person's Ctrl-C, a service manager's SIGTERM); returns every line."""
    lines: list[dict] = []
    for line in proc.stdout:
        lines.append(json.loads(line))
        if condition(lines[-1]):
            proc.send_signal(sig)
            break
    return lines + [json.loads(ln) for ln in proc.stdout.read().splitlines()]


# ------------------------------------------------------------------ the browser (the page's tests)

CHROMIUM = os.environ.get("RAKFLASH_CHROMIUM", "/usr/bin/chromium")
# Headless, and nothing that reaches for the network beyond the page itself.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-default-apps", "--disable-extensions"]
WAIT_MS = 30_000


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, through Playwright: one per test worker, shared by every
    browser test module (Playwright's sync API runs one instance per thread)."""
    import shutil

    from web_support import REQUIRED, need
    sync_api = need("playwright.sync_api", "drives the browser")

    def missing(reason: str):
        if REQUIRED:
            pytest.fail(f"{reason}; .ci/run installs Debian's chromium package")
        pytest.skip(reason)

    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        missing(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set RAKFLASH_CHROMIUM)")
    pw = sync_api.sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
    except sync_api.Error as exc:
        pw.stop()
        missing(f"Chromium at {CHROMIUM} does not start: {str(exc).splitlines()[0]}")
    sync_api.expect.set_options(timeout=WAIT_MS)
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def page(browser):
    """A fresh browser context and page; a script error on the page fails the test."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(WAIT_MS)
    pg = context.new_page()
    errors: list[str] = []
    context.on("weberror", lambda e: errors.append(str(e.error)))
    yield pg
    context.close()
    assert not errors, f"script errors on the page: {errors}"
