"""The SWD commands as people run them: recover --via swd, probes, info0 write — through the
real CLI code, in process, on the fake pyOCD (tests/fake_pyocd.py); and the real pyOCD where
no probe is attached (no probe found, no pyOCD installed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import FAST_BAUD, SRC, cli_json, run_cli
from fake_pyocd import CMSISDAPProbe, FakePyOCD, FakeWorld, JLinkProbe
from rakflash import apollo3_info0, catalog, swd_link
from rakflash.cli import main
from rakflash.sim import Mode, firmware

NEW_APP, NEW_BOOT = "RUI_4.0.6_RAK11720", "RUI_BOOT_0.4_RAK11720"


@pytest.fixture
def world(monkeypatch):
    """The probe on the desk; rakflash's pyOCD boundary talks to it."""
    holder = {"world": FakeWorld()}
    monkeypatch.setattr(swd_link, "pyocd_api", lambda: FakePyOCD(holder["world"]))
    return holder


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("{")]
    return result, [json.loads(ln) for ln in lines]


def full_hex(tmp_path, key="rak11720", boot=NEW_BOOT, app=NEW_APP):
    mod = catalog.load().module(key)
    if key != "rak11720":
        boot, app = firmware.DEFAULT_VERSIONS[mod.key][0], firmware.DEFAULT_VERSIONS[mod.key][2]
    p = tmp_path / f"{key}_FULL.hex"
    p.write_text(firmware.combined_hex(mod, boot, app, 20 * 1024))
    return p, app


def eeprom_of(dev) -> dict:
    """The virtual module's data EEPROM where the probe reads it (RUI v3 modules: STM32L0/L1)."""
    r = dev.eeprom_region()
    return {r.start: dev._eeprom} if r is not None else {}


# ------------------------------------------------------------------ recover --via swd

@pytest.mark.parametrize("key", ["rak11720", "rak3172", "rak811"])
def test_recover_via_swd_then_identify_over_the_port(virtual, world, tmp_path, key):
    """A flooding module, brought back through the probe; the port then shows the new firmware."""
    dev = virtual(key, sketch="flooding", flood_after=0.2)
    mod = dev.module
    world["world"] = FakeWorld(memory=dev.flash.mem, flash_base=mod.mcu.flash.start,
                               flash_size=mod.mcu.flash.size, installed={mod.swd_target},
                               on_reset=dev.press_reset, extra=eeprom_of(dev))
    path, app = full_hex(tmp_path, key)
    result, out = invoke("recover", str(path), "--module", key, "--via", "swd", "--port", dev.port,
                         "--baud", str(FAST_BAUD), "--yes", "--json")
    assert result.exit_code == 0, result.output
    final = out[-1]
    assert (final["result"], final["method"], final["verify"]) == ("ok", "swd", "read-back")
    assert (final["app_version_after"], final["mode_after"]) == (app, "app")
    assert (final["port"], final["error"], final["version_confirmed"], final["retries"]) == (dev.port, None, True, 0)
    assert dev.mode is Mode.APP and dev.app_version == app
    w = world["world"]
    assert w.opened[0][1] == mod.swd_target and w.resets == [mod.swd_options.get("reset_type", "default")]
    kinds = [e.get("event") for e in out]
    assert "progress" in kinds and kinds.index("plan") < kinds.index("progress")


def test_recover_via_swd_needs_no_port(world, tmp_path):
    path, _ = full_hex(tmp_path)
    result, out = invoke("recover", str(path), "--module", "rak11720", "--via", "swd", "--yes", "--json")
    assert result.exit_code == 0, result.output
    assert out[-1]["result"] == "ok" and out[-1]["app_version_after"] is None
    assert out[-1]["bootloader_version_after"] == NEW_BOOT            # read back from the chip
    assert any("not asked what runs now" in w["message"] for w in out[-1]["warnings"])
    assert (out[-1]["port"], out[-1]["error"], out[-1]["version_confirmed"]) == (None, None, False)
    assert out[-1]["reset_wait_seconds"] is None
    # a blank chip (the fake's flash is erased): its config block read before and after, erased both times
    assert (out[-1]["keys"], out[-1]["settings_kept"]) == ("kept", True)


def test_dry_run_prints_the_plan_and_the_pyocd_command(tmp_path):
    path, _ = full_hex(tmp_path)
    proc = run_cli("recover", str(path), "--module", "rak11720", "--via", "swd", "--probe", "0700",
                   "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert (f"same with pyOCD: pyocd flash -t ama3b1kk_kbr -e sector -O keep_unwritten=true "
            f"-O reset_type=emulated -u 0700 {path}") in proc.stdout
    assert "verify by reading every byte back" in proc.stdout
    proc = run_cli("recover", str(path), "--module", "rak11720", "--via", "swd", "--dry-run", "--json")
    events = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    plan, last = events[0], events[-1]
    assert plan["event"] == "plan" and plan["pyocd_command"].startswith("pyocd flash -t ama3b1kk_kbr ")
    assert last["dry_run"] is True and proc.returncode == 0
    assert (last["port"], last["error"], last["app_version_before"]) == (None, None, None)


def test_missing_pack_stops_before_the_probe_is_touched(world, tmp_path):
    path, _ = full_hex(tmp_path, "rak3172")
    world["world"] = FakeWorld(flash_base=0x08000000, flash_size=0x40000, installed=set())
    result, out = invoke("recover", str(path), "--module", "rak3172", "--via", "swd", "--yes", "--json")
    assert result.exit_code == 4
    assert out[-1]["error"] == "pack-missing" and "pyocd pack install stm32wle5ccux" in out[-1]["hint"]
    assert world["world"].opened == []


def test_missing_pack_is_named_without_a_probe_and_before_the_plan(world, tmp_path):
    path, _ = full_hex(tmp_path, "rak3172")
    world["world"] = FakeWorld(probes=[], installed=set())
    result, out = invoke("recover", str(path), "--module", "rak3172", "--via", "swd", "--yes", "--json")
    assert result.exit_code == 4 and [e.get("event") for e in out] == [None]     # no plan first
    assert out[-1]["error"] == "pack-missing" and "pyocd pack install stm32wle5ccux" in out[-1]["hint"]


def test_dry_run_warns_when_pyocd_lacks_the_target(world, tmp_path):
    path, _ = full_hex(tmp_path, "rak811")
    world["world"] = FakeWorld(probes=[], installed=set())
    result = CliRunner().invoke(main, ["recover", str(path), "--module", "rak811", "--via", "swd",
                                       "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0 and "same with pyOCD" in result.stdout
    assert "warning: pyOCD does not know the target stm32l151cbux" in result.stderr
    assert "pyocd pack install stm32l151cbux" in result.stderr
    result, out = invoke("recover", str(path), "--module", "rak811", "--via", "swd", "--dry-run", "--json")
    assert result.exit_code == 0 and out[-1]["dry_run"] is True
    assert [w["code"] for w in out[-1]["warnings"]] == ["pack-missing"]
    assert any(e.get("event") == "warning" and e["code"] == "pack-missing" for e in out)
    world["world"] = FakeWorld(probes=[])                       # a known target: no warning
    result, out = invoke("recover", str(full_hex(tmp_path)[0]), "--module", "rak11720", "--via", "swd",
                         "--dry-run", "--json")
    assert out[-1]["warnings"] == []


def test_no_probe_is_named_with_the_exit_code(world, tmp_path):
    world["world"] = FakeWorld(probes=[])
    path, _ = full_hex(tmp_path)
    result, out = invoke("recover", str(path), "--module", "rak11720", "--via", "swd", "--yes", "--json")
    assert result.exit_code == 4 and out[-1]["error"] == "probe-not-found"


def test_the_sbl_way_still_needs_a_port(tmp_path):
    path, _ = full_hex(tmp_path)
    code, out = cli_json("recover", str(path), "--module", "rak11720", "--yes")
    assert code == 2 and "needs its serial port" in out["message"]


# ------------------------------------------------------------------ probes

def test_probes_lists_kinds(world):
    world["world"] = FakeWorld(probes=[CMSISDAPProbe("0700000100ab"), JLinkProbe("000801234567")])
    result, out = invoke("probes", "--json")
    assert result.exit_code == 0
    assert [(p["unique_id"], p["kind"]) for p in out[-1]["probes"]] == \
        [("0700000100ab", "CMSIS-DAP"), ("000801234567", "J-Link")]
    text = CliRunner().invoke(main, ["probes"]).stdout
    assert "0700000100ab" in text and "RAKDAP1 CMSIS-DAP" in text and "--via swd --probe ID" in text


def test_probes_with_real_pyocd_and_nothing_attached():
    code, out = cli_json("probes")
    if out["probes"]:
        pytest.skip("a probe is attached to this machine")
    assert code == 0 and out["error"] is None
    assert "no debug probe found" in run_cli("probes").stdout


def test_without_pyocd_one_line_says_how_to_get_it(tmp_path):
    shadow = tmp_path / "no_pyocd"
    (shadow / "pyocd").mkdir(parents=True)
    (shadow / "pyocd" / "__init__.py").write_text("raise ImportError('No module named pyocd')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow), SRC]))
    proc = subprocess.run([sys.executable, "-m", "rakflash", "probes"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 4
    assert proc.stderr.splitlines() == ["error: SWD needs pyOCD, which is not installed",
                                        "hint: Install it with: pip install 'rakflash[swd]'"]
    path, _ = full_hex(tmp_path, "rak3172")
    proc = subprocess.run([sys.executable, "-m", "rakflash", "recover", str(path), "--via", "swd",
                           "--module", "rak3172", "--yes"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 4 and proc.stdout == ""                 # said first, not after the plan
    assert proc.stderr.splitlines()[0] == "error: SWD needs pyOCD, which is not installed"


# ------------------------------------------------------------------ info0 over SWD

def test_info0_show_reads_over_swd_and_saves(world, tmp_path):
    world["world"].info0[:] = apollo3_info0.rak11720_default().replace(override_gpio=0x7F).raw
    save = tmp_path / "dump.bin"
    result, out = invoke("info0", "show", "--save", str(save), "--json")
    assert result.exit_code == 0
    assert out[-1]["info0"]["override_gpio"] is None
    assert [f["stops"] for f in out[-1]["findings"] if f["level"] == "blocks"] == ["wired-update"]
    assert save.read_bytes() == bytes(world["world"].info0)


def test_info0_write_shows_the_diff_and_writes_only_when_confirmed(world, tmp_path):
    w = world["world"]
    w.info0[:] = apollo3_info0.rak11720_default().replace(override_gpio=0x7F).raw
    new = tmp_path / "info0.bin"
    new.write_bytes(apollo3_info0.rak11720_default().raw)
    before = bytes(w.info0)
    dry = CliRunner().invoke(main, ["info0", "write", str(new), "--dry-run"])
    assert dry.exit_code == 0 and "override pin" in dry.stdout and "disabled" in dry.stdout
    assert "GPIO41, acts when high" in dry.stdout and bytes(w.info0) == before
    refused = CliRunner().invoke(main, ["info0", "write", str(new)], input="n\n")
    assert refused.exit_code == 10 and bytes(w.info0) == before      # no terminal, no --yes
    result, out = invoke("info0", "write", str(new), "--yes", "--json")
    assert result.exit_code == 0 and out[-1]["result"] == "ok"
    assert bytes(w.info0) == new.read_bytes() and w.rom_calls == [0x08000084, 0x08000060]
    again, out = invoke("info0", "write", str(new), "--yes", "--json")
    assert out[-1]["result"] == "unchanged"


def test_info0_write_refuses_a_partial_file(world, tmp_path):
    part = tmp_path / "part.bin"
    part.write_bytes(apollo3_info0.rak11720_default().raw[:0xC20])
    result, out = invoke("info0", "write", str(part), "--yes", "--json")
    assert result.exit_code == 3 and "whole INFO0" in out[-1]["message"]
    assert world["world"].opened == []


def test_a_write_that_faults_says_what_the_chip_holds(world, tmp_path):
    # Issue 17.4: one field, three values. A fault once pyOCD erases and programs is "part"
    # (the sectors may be erased), with the next step; a probe never found is "nothing".
    from fake_pyocd import Failures, exceptions
    fault = exceptions.TransferFaultError("Memory transfer fault @ 0x0000c000-0x0000c003")
    world["world"] = FakeWorld(failures=Failures(commit=fault))
    path, _ = full_hex(tmp_path)
    result, out = invoke("recover", str(path), "--module", "rak11720", "--via", "swd", "--yes", "--json")
    assert result.exit_code == 7 and (out[-1]["error"], out[-1]["written"]) == ("transfer-fault", "part")
    assert out[-1]["hint"].startswith("Writing had begun: the erase of 0x0000c000-") and "run again" in out[-1]["hint"]
    world["world"] = FakeWorld(probes=[])
    result, out = invoke("recover", str(path), "--module", "rak11720", "--via", "swd", "--yes", "--json")
    assert (out[-1]["error"], out[-1]["written"]) == ("probe-not-found", "nothing")
