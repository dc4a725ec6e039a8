"""Bad arguments are usage errors (exit 2, one line, never a traceback); Ctrl-C is always 130."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

from conftest import FAST_BAUD, SRC, cli_json, run_cli
from rakflash.sim import firmware


def one_line_usage_error(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("args", [
    ["sim", "rak3172", "--app-size", "300000"], ["sim", "rak3172", "--app-size", "999999999"],
    ["sim", "rak3172", "--app-size", "100"],
    ["sim", "rak3172", "--bit-error-rate", "2"], ["sim", "rak3172", "--drop-rate", "nan"],
    ["sim", "rak3172", "--latency-ms", "-1"], ["sim", "rak3172", "--flash-scale", "-1"],
    ["sim", "rak3172", "--power-cut-after", "-5"], ["sim", "rak3172", "--pull-cable-after", "0"],
    ["demo", "--size", "0"], ["demo", "--size", "-5"], ["demo", "--size", "999999999"],
])
def test_out_of_range_numbers_are_usage_errors(args):
    line = one_line_usage_error(run_cli(*args, timeout=20))
    assert f"'{args[-2]}'" in line and "--help" in line


def test_a_size_too_large_says_what_fits():
    line = one_line_usage_error(run_cli("demo", "--module", "rak811", "--size", "999999999"))
    assert "RAK811's application region (118,784 bytes)" in line


@pytest.mark.parametrize("command", [["inspect", "x.bin"], ["flash", "x.bin", "--port", "/dev/null"],
                                     ["info", "--port", "/dev/null"]])
def test_an_unknown_module_is_a_usage_error_listing_the_known_ones(command):
    line = one_line_usage_error(run_cli(*command, "--module", "rak9999"))
    assert "no module called 'rak9999'" in line
    assert ("rak3172, rak3172-sip, rak3172lp-sip, rak3172-t, rak3172-f, rak11160, rak811, rak4270, rak11720, "
            "rak4631-r, rak3401") in line
    code, out = cli_json(*command, "--module", "rak9999")
    assert (code, out["error"]) == (2, "usage") and "rak4270" in out["message"]


def test_module_names_are_case_and_alias_insensitive(tmp_path, cat):
    p = tmp_path / "app.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 4096))
    code, out = cli_json("inspect", str(p), "--module", "RAK3272")
    assert code == 0 and out["module"] == "RAK3172"


def test_an_empty_port_name_is_a_usage_error():
    line = one_line_usage_error(run_cli("info", "-p", ""))
    assert "port name is empty" in line and "rakflash ports" in line


def test_address_with_a_hex_file_is_said_not_ignored(tmp_path, cat):
    p = tmp_path / "app.hex"
    m = cat.module("rak3172")
    p.write_text(firmware.to_hex({m.app.start: firmware.app_image(m, "RUI_4.0.6_RAK3172-E", 4096)}))
    proc = run_cli("inspect", str(p), "--address", "0x08006000")
    assert proc.returncode == 2 and "Intel HEX, which carries its own addresses" in proc.stderr
    code, out = cli_json("flash", str(p), "--port", "/dev/null", "--address", "0x08006000")
    assert (code, out["error"]) == (2, "usage") and "Leave out --address" in out["hint"]


# ------------------------------------------------------------------ Ctrl-C and Ctrl-D at a prompt

def _start_on_a_terminal(*args: str):
    """`rakflash …` with a terminal on its standard input (so it asks), output piped."""
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", *args], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    return proc, master


def _wait_for(proc, text: bytes, timeout: float = 30) -> bytes:
    seen = b""
    end = time.monotonic() + timeout
    while text not in seen and time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    assert text in seen, seen
    return seen


@pytest.mark.parametrize("key", ["ctrl-c", "ctrl-d"])
def test_ctrl_c_at_the_confirmation_is_an_interrupt_and_ctrl_d_a_no(virtual, tmp_path, cat, key):
    dev = virtual("rak3172")
    p = tmp_path / "new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 4096))
    proc, master = _start_on_a_terminal("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD))
    try:
        _wait_for(proc, b"[y/N]: ")
        if key == "ctrl-c":
            proc.send_signal(signal.SIGINT)
        else:
            os.write(master, b"\x04")         # end of input on the terminal
        _, stderr = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    stderr = stderr.decode()
    if key == "ctrl-c":
        assert proc.returncode == 130 and "Nothing was written to the module" in stderr, stderr
    else:
        assert proc.returncode == 10 and "not confirmed" in stderr, stderr
    assert "Traceback" not in stderr and "If an update was under way" not in stderr
    assert dev.updates == 0


def test_ctrl_c_during_info_does_not_talk_of_an_update(tmp_path):
    master, slave = os.openpty()          # a port where nothing answers: info scans a while
    trace = tmp_path / "info.trace"
    try:
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen([sys.executable, "-m", "rakflash", "info", "--port", os.ttyname(slave),
                                 "--trace", str(trace)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        end = time.monotonic() + 30        # interrupt once it is talking to the port
        while b'"tx"' not in (trace.read_bytes() if trace.exists() else b"") and time.monotonic() < end:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 130, stderr
    assert "update" not in stderr and "Nothing was written" in stderr


@pytest.mark.parametrize("how", ["locked", "just-open"])
def test_one_busy_message_for_one_situation(virtual, how):
    """Another program has the port: whether it took the lock or not, the same words and next step."""
    import re
    dev = virtual("rak3172")
    if how == "locked":                   # another program that takes the port's lock (as pyserial can)
        other = subprocess.Popen([sys.executable, "-c", "import serial, sys, time; "
                                  f"s = serial.Serial({dev.port!r}, exclusive=True); print('held'); "
                                  "sys.stdout.flush(); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
        assert other.stdout.readline().strip() == "held"
        close = lambda: (other.kill(), other.wait())      # noqa: E731
    else:
        with open(dev.port, "rb") as tty:
            other = subprocess.Popen(["sleep", "30"], stdin=tty)
        close = lambda: (other.kill(), other.wait())      # noqa: E731
    try:
        code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    finally:
        close()
    assert (code, out["error"]) == (4, "port-busy"), out
    assert re.fullmatch(re.escape(dev.port) + r" is in use by another program: \S+ \(pid \d+\)", out["message"])
    assert out["hint"].startswith("Close it — the serial monitor") and out["programs"]
