"""A RUI3 module whose AT port is locked (AT+LOCK): named, opened with its password, locked again,
and the password nowhere — not in the output, -v, --json, a --trace file or a --report.

Every test runs the real command line against a virtual RAK3172 started with
``locked=PASSWORD`` (``rakflash sim rak3172 --locked PASSWORD``) through a real pty.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from conftest import FAST_BAUD, SRC, cli_json, run_cli
from rakflash.sim import firmware

PASSWORD = "Zq7#pw!x"
NEW = "RUI_4.0.6_RAK3172-E"


def secret_in(text: str) -> bool:
    """The password, as text or as the hex of its bytes (a trace's "hex" field)."""
    return PASSWORD in text or PASSWORD.encode().hex() in text


@pytest.fixture
def new_app(tmp_path, cat):
    p = tmp_path / "app.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 8 * 1024))
    return p


def test_info_names_a_locked_port_and_says_what_opens_it(virtual):
    dev = virtual("rak3172", locked=PASSWORD)
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (code, out["error"]) == (5, "port-locked"), out
    assert "COMMAND_LOCKED" in out["message"] and "--password" in out["hint"]
    proc = run_cli("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert proc.returncode == 5 and "locked" in proc.stderr
    assert "nothing answers" not in proc.stderr and "unknown" not in proc.stderr
    assert dev.locked


def test_info_opens_it_with_the_password_and_locks_it_again(virtual, tmp_path):
    dev = virtual("rak3172", locked=PASSWORD)
    trace = tmp_path / "info.trace"
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD), "--password", PASSWORD,
                         "--trace", str(trace))
    assert (code, out["module"], out["app_version"]) == (0, "RAK3172", dev.app_version), out
    assert out["port_locked"] is True and out["locked_again"] is True
    assert dev.locked                                   # as the module's flash holds it
    text = trace.read_text()
    assert not secret_in(text) and not secret_in(json.dumps(out))
    assert '"ev": "tx-hidden"' in text                   # the trace says something was kept out


def test_a_wrong_password_is_refused_by_name_and_the_port_stays_locked(virtual):
    dev = virtual("rak3172", locked=PASSWORD)
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD), "--password", "wrong")
    assert (code, out["error"]) == (5, "password-refused"), out
    assert dev.locked and "wrong" not in out["message"]
    code, out = cli_json("info", "--port", dev.port, "--password", "toolongpassword")
    assert (code, out["error"]) == (2, "usage") and "1 to 8" in out["message"]


def test_doctor_names_a_locked_port(virtual):
    dev = virtual("rak3172", locked=PASSWORD)
    proc = run_cli("doctor", "--port", dev.port, "--baud", str(FAST_BAUD), "--json")
    report = json.loads(proc.stdout.splitlines()[-1])
    codes = [f["code"] for f in report["findings"]]
    assert proc.returncode == 5 and codes[0] == "port-locked", report
    assert "silent" not in codes and "not-a-rak-module" not in codes
    command = report["findings"][0]["command"]
    assert "--password PASSWORD" in command
    # As printed, with the person's password in place of PASSWORD: it opens the port, and locks it again.
    proc = run_cli(*shlex.split(command.replace("PASSWORD", PASSWORD))[1:])
    assert proc.returncode == 0, proc.stderr
    assert dev.locked


def test_a_locked_module_is_updated_with_the_password_and_locked_again(virtual, new_app, tmp_path):
    dev = virtual("rak3172", locked=PASSWORD)
    trace, report = tmp_path / "flash.trace", tmp_path / "report.jsonl"
    proc = run_cli("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "-v",
                   "--password", PASSWORD, "--trace", str(trace), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert "port lock: the AT port is locked again" in proc.stdout
    assert dev.app_version == NEW and dev.locked
    for where, text in (("stdout", proc.stdout), ("-v on stderr", proc.stderr),
                        ("--trace", trace.read_text()), ("--report", report.read_text())):
        assert not secret_in(text), f"the password is in {where}"
    assert "sent the AT port's lock password (not shown)" in proc.stderr


def test_the_json_result_says_it_was_locked_again_and_holds_no_password(virtual, new_app):
    dev = virtual("rak3172", locked=PASSWORD)
    proc = run_cli("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "--json",
                   "--password", PASSWORD)
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = lines[-1]
    assert (proc.returncode, result["result"], result["port_locked_again"]) == (0, "ok", True), result
    assert result["settings_kept"] is True
    assert not secret_in(proc.stdout) and not secret_in(proc.stderr)
    assert dev.locked


def test_without_the_password_flash_stops_before_anything_and_says_why(virtual, new_app):
    dev = virtual("rak3172", locked=PASSWORD)
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert (code, out["error"], out["written"]) == (5, "port-locked", "nothing"), out
    assert dev.updates == 0 and dev.locked


@pytest.mark.pty_only          # the person's terminal is a pseudo-terminal here
def test_on_a_terminal_the_password_is_asked_for_and_never_echoed(virtual):
    import pty
    dev = virtual("rak3172", locked=PASSWORD)
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "info", "--port", dev.port, "--baud",
                             str(FAST_BAUD)], stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"password" not in seen.lower() and time.monotonic() < deadline:
            seen += _read(master)
        assert b"password (not shown)" in seen, seen
        time.sleep(0.2)                                # getpass has turned the echo off by now
        os.write(master, PASSWORD.encode() + b"\n")
        while proc.poll() is None and time.monotonic() < deadline:
            seen += _read(master)
        seen += _read(master)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    assert proc.returncode == 0, seen.decode(errors="replace")
    assert b"RAK3172" in seen and PASSWORD.encode() not in seen
    assert dev.locked


def _read(fd: int) -> bytes:
    import select
    if select.select([fd], [], [], 0.2)[0]:
        try:
            return os.read(fd, 4096)
        except OSError:
            return b""
    return b""
