"""`rakflash info`: what it says about the module, and the bootloader version RUI v3 firmware can't tell."""

from __future__ import annotations

import json

from conftest import FAST_BAUD, cli_json, run_cli
from rakflash.sim import Mode


def test_rui_v3_bootloader_version_only_on_request(virtual):
    dev = virtual("rak811", bootloader_version="3.0.2")
    port = ["--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak811"]
    proc = run_cli("info", *port)
    assert proc.returncode == 0, proc.stderr
    assert "--ask-bootloader" in proc.stdout            # says how to learn it, without rebooting anything
    assert dev.resets == 0 and dev.mode == Mode.APP

    code, out = cli_json("info", *port, "--ask-bootloader")
    assert code == 0 and out["bootloader_version"] == "V3.0.2", out
    assert out["mode"] == "app" and any("runs again" in n for n in out["notes"])
    assert dev.wait_mode(Mode.APP) and dev.resets >= 1   # a visit to the bootloader, and back


def test_ask_bootloader_leaves_a_module_that_tells_it_alone(virtual):
    dev = virtual("rak3172")
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD), "--ask-bootloader")
    assert code == 0 and out["bootloader_version"] == "RUI_BOOT_0.8_STM32WLE5CC"
    assert dev.resets == 0                               # RUI3 answers AT+BOOTVER=?: no visit needed


def test_verbose_shows_every_identification_step_timed_on_stderr(virtual):
    """`info -v`, as `flash -v`: a line per step and AT exchange, with the seconds since the start."""
    dev = virtual("rak811")
    port = ["--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak811"]
    quiet = run_cli("info", *port)
    assert quiet.returncode == 0 and "at+version" not in quiet.stderr
    proc = run_cli("info", *port, "-v", "--ask-bootloader")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert all(ln.startswith("[") and " s] " in ln for ln in lines), lines
    assert any(f"identifying the module on {dev.port}" in ln for ln in lines)
    assert any("at+version → OK 'V3.0.0.13.H'" in ln for ln in lines)     # the query and its answer
    assert any("at+bootstatus" in ln for ln in lines)                       # --ask-bootloader's visit
    assert "module        RAK811" in proc.stdout                            # the answer is unchanged
    proc = run_cli("info", *port, "-v", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["module"] == "RAK811"   # stdout: one object
    assert "at+version → OK" in proc.stderr
