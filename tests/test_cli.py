"""The command line as a person uses it: `rakflash sim` in one process, `rakflash info` in another."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_json, run_cli

SRC = str(Path(__file__).resolve().parent.parent / "src")


class SimProcess:
    """`rakflash sim ...` running in the background; .port is the pty it serves."""

    def __init__(self, *args: str) -> None:
        self.env = env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "rakflash", "sim", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        first = self.proc.stdout.readline()
        assert first.startswith("port: "), f"first line was {first!r}; stderr: {self.proc.stderr.read()}"
        self.port = first.split(":", 1)[1].strip()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def sim_process():
    procs = []

    def start(*args: str) -> SimProcess:
        p = SimProcess(*args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.mark.parametrize("key, module, app", [("rak3172", "RAK3172", "RUI_4.0.5_RAK3172-E"),
                                              ("rak3172-sip", "RAK3172-SiP", "RUI_4.0.5_RAK3272-SiP"),
                                              ("rak3172lp-sip", "RAK3172LP-SiP", "RUI_4.0.5_RAK3272LP-SiP"),
                                              ("rak3172-t", "RAK3172-T", "RUI_4.0.5_RAK3172-T"),
                                              ("rak3172-f", "RAK3172-F", "RUI_4.2.4_RAK3172-F"),
                                              ("rak11160", "RAK11160", "RUI_4.2.3_RAK11160")])
def test_sim_prints_port_first_and_info_identifies_it(sim_process, key, module, app):
    sim = sim_process(key, "--baud", "921600", "--latency-ms", "0.2")
    assert sim.port.startswith("/dev/pts/")
    code, out = cli_json("info", "--port", sim.port, "--baud", "921600")
    assert code == 0
    assert (out["module"], out["mode"], out["app_version"]) == (module, "app", app)
    assert out["bootloader_version"] == "RUI_BOOT_0.8_STM32WLE5CC" and out["error"] is None


def test_sim_starts_in_bootloader_on_request(sim_process):
    sim = sim_process("rak3172", "--state", "bootloader", "--baud", "921600")
    code, out = cli_json("info", "--port", sim.port, "--baud", "921600")
    assert (code, out["mode"]) == (0, "bootloader")


@pytest.mark.parametrize("kib", [8, 1])
def test_sim_tells_what_runs_as_it_changes(sim_process, tmp_path, cat, kib):
    """Every start is told, even a bootloader that runs for a few milliseconds (1 KiB at 921600)."""
    from rakflash.sim import firmware
    sim = sim_process("rak3172", "--baud", "921600", "--flash-scale", "0")
    new = tmp_path / "new.bin"
    new.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.7_RAK3172-E", kib * 1024))
    code, out = cli_json("flash", str(new), "--port", sim.port, "--baud", "921600", "--yes")
    assert code == 0, out
    time.sleep(0.5)
    sim.stop()
    lines = sim.proc.stdout.read().splitlines()
    assert lines[0] == "running: app RUI_4.0.5_RAK3172-E"
    assert "running: bootloader RUI_BOOT_0.8_STM32WLE5CC" in lines
    assert lines[-1] == "running: app RUI_4.0.7_RAK3172-E (updates so far: 1)"


def test_sim_cable_pulled_and_plugged_back_in(sim_process):
    sim = sim_process("rak3172", "--baud", "921600", "--pull-cable-after", "10")
    code, out = cli_json("info", "--port", sim.port, "--baud", "921600")
    assert (code, out["error"]) == (4, "port-disconnected"), out
    line = sim.proc.stdout.readline()
    while not line.startswith("cable pulled"):
        line = sim.proc.stdout.readline()
    sim.proc.stdin.write("p\n")
    sim.proc.stdin.flush()
    line = sim.proc.stdout.readline()
    assert line.startswith("cable plugged in again; port: /dev/pts/"), line
    code, out = cli_json("info", "--port", line.rsplit(" ", 1)[1].strip(), "--baud", "921600")
    assert code == 0 and out["module"] == "RAK3172", out


def test_sim_realistic_timing_at_115200(sim_process):
    """One end-to-end check at the real baud rate and USB-UART latency (how long it takes is the
    benchmarks' business, not a test's)."""
    sim = sim_process("rak3172", "--baud", "115200", "--latency-ms", "1")
    code, out = cli_json("info", "--port", sim.port)
    assert code == 0 and (out["module"], out["baud"]) == ("RAK3172", 115200)


def test_sim_unknown_module_is_a_usage_error():
    proc = run_cli("sim", "rak9999")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_demo_updates_a_virtual_module():
    proc = run_cli("demo")
    assert proc.returncode == 0, proc.stderr
    assert "RUI_4.0.5_RAK3172-E → RUI_4.0.6_RAK3172-E" in proc.stdout
    assert "flash now holds RUI_4.0.6_RAK3172-E" in proc.stdout


@pytest.mark.parametrize("module, after", [("rak811", "V3.0.0.14.H"), ("rak11720", "RUI_4.0.6_RAK11720")])
def test_demo_other_modules_json(module, after):
    code, out = cli_json("demo", "--module", module, "--size", "8192")
    assert code == 0, out
    assert (out["result"], out["app_version_after"], out["flash_reports"]) == ("ok", after, after)


def test_modules_lists_the_catalog():
    code, out = cli_json("modules")
    keys = {m["key"] for m in out["modules"]}
    assert {"rak3172", "rak811", "rak4270", "rak11720", "rak4631-r"} <= keys
    by_key = {m["key"]: m for m in out["modules"]}
    assert "pyocd flash -t ama3b1kk_kbr -e sector -O keep_unwritten=true -O reset_type=emulated" in by_key["rak11720"]["recovery"]
    assert "stm32flash" in by_key["rak3172"]["recovery"]
    assert any("at+update" in fact for fact in by_key["rak811"]["inferred"])


def test_ports_lists_json(monkeypatch):
    """What `rakflash ports --json` says of each port: its USB id and the module it probably is."""
    import json

    from click.testing import CliRunner

    from conftest import fake_usb_port
    from rakflash import cli, ports

    monkeypatch.setattr(ports.list_ports, "comports", lambda: [
        fake_usb_port("/dev/ttyUSB0", 0x10C4, 0xEA60, "CP2102 USB to UART")])
    result = CliRunner().invoke(cli.main, ["ports", "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)["ports"]
    assert (entry["port"], entry["vid_pid"]) == ("/dev/ttyUSB0", "10C4:EA60")
    assert "UART module" in entry["probably"]
    text = CliRunner().invoke(cli.main, ["ports"]).output
    assert "/dev/ttyUSB0" in text and "10C4:EA60" in text


def test_unwritable_trace_file_is_a_usage_error(tmp_path):
    code, out = cli_json("info", "--port", "/dev/null", "--trace", str(tmp_path / "no" / "such" / "t.jsonl"))
    assert (code, out["error"]) == (2, "usage") and "trace file" in out["message"]


def test_a_bug_is_one_line_with_how_to_report_it(monkeypatch, tmp_path):
    """Not a traceback: the error, and how to report it."""
    from click.testing import CliRunner

    from rakflash import cli, images

    def broken(*a, **k):
        raise ZeroDivisionError("boom")
    monkeypatch.setattr(images, "load", broken)
    monkeypatch.delenv("RAKFLASH_DEBUG", raising=False)
    result = CliRunner().invoke(cli.main, ["inspect", str(tmp_path / "x.bin")])
    assert result.exit_code == 1
    assert "internal error: ZeroDivisionError: boom" in result.output
    assert "--trace" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args", [["flash", "x.bin"], ["info", "--port", "/dev/null", "--baud", "-5"],
                                  ["inspect", "x.bin", "--address", "0x100000000"],
                                  ["flash", "x.bin", "--port", "/dev/null", "--reset-window", "nan"]])
def test_usage_errors_under_json_are_json(args):
    code, out = cli_json(*args)
    assert (code, out["result"], out["error"]) == (2, "usage", "usage") and out["message"]


def test_unknown_virtual_module_lists_the_ones_there_are():
    proc = run_cli("sim", "rak9")
    assert proc.returncode == 2 and ("virtual modules: rak11160, rak11200, rak11720, rak3112, rak3172, rak3172-f, rak3172-sip, "
                                    "rak3172-t, rak3172lp-sip, rak3212, rak3312, rak3401, rak4270, rak4631-arduino, "
                                    "rak4631-r, rak811") in proc.stderr
