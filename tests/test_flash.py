"""`rakflash flash` end to end through a real pty against the virtual YMODEM modules."""

from __future__ import annotations

import json
import os
import time

import pytest
import serial

from conftest import FAST_BAUD, cli_json, run_cli, signal_when
from rakflash.sim import Mode, firmware

NEW = "RUI_4.0.6_RAK3172-E"
OLD = "RUI_4.0.5_RAK3172-E"


@pytest.fixture
def new_app(tmp_path, cat):
    p = tmp_path / "rak3172_new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 40 * 1024 + 100))
    return p


def flash(path, dev, *extra, baud=FAST_BAUD, **kw):
    return cli_json("flash", str(path), "--port", dev.port, "--baud", str(baud), "--yes", *extra, **kw)


# The RAK3172 and its RUI3 variants: the same chip, bootloader and update; each its own image.
RAK3172_VARIANTS = ["rak3172", "rak3172-sip", "rak3172lp-sip", "rak3172-t", "rak3172-f", "rak11160"]


def variant_app(tmp_path, cat, name):
    """(old, new, image path): the variant's running version, and a newer image built for it."""
    _, old, new = firmware.DEFAULT_VERSIONS[name]
    p = tmp_path / f"{name}_new.bin"
    p.write_bytes(firmware.app_image(cat.module(name), new, 40 * 1024 + 100))
    return old, new, p


@pytest.mark.parametrize("name", RAK3172_VARIANTS)
def test_update_rak3172_end_to_end(virtual, tmp_path, cat, name):
    dev = virtual(name)
    old, new, new_app = variant_app(tmp_path, cat, name)
    code, out = flash(new_app, dev)
    assert code == 0, out
    assert out["result"] == "ok"
    assert (out["app_version_before"], out["app_version_after"]) == (old, new)
    assert out["bytes"] == 40 * 1024 + 100 and out["seconds"] > 0
    assert dev.app_version == new and dev.updates == 1
    # What is in the module's flash is byte for byte the image.
    assert dev.flash.read(0x08006000, out["bytes"]) == new_app.read_bytes()
    code, info = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert info["app_version"] == new and info["mode"] == "app" and info["module_key"] == name


def test_progress_events_in_json(virtual, new_app):
    dev = virtual("rak3172")
    proc = run_cli("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "--json")
    events = [json.loads(ln) for ln in proc.stdout.splitlines()]
    progress = [e for e in events if e.get("event") == "progress"]
    assert len(progress) >= 40
    assert progress[-1]["bytes"] == progress[-1]["total"] == 40 * 1024 + 100
    assert [e["bytes"] for e in progress] == sorted(e["bytes"] for e in progress)
    assert events[-1]["result"] == "ok"


def test_human_output_has_plan_and_summary(virtual, new_app):
    dev = virtual("rak3172")
    proc = run_cli("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "plan:" in proc.stdout and f"{OLD} → {NEW}" in proc.stdout


def test_combined_hex_sends_only_app_and_says_so(virtual, tmp_path, cat):
    dev = virtual("rak3172")
    p = tmp_path / "full.hex"
    p.write_text(firmware.combined_hex(cat.module("rak3172"), "RUI_BOOT_0.9_STM32WLE5CC", NEW, 20000))
    proc = run_cli("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "only its application part" in proc.stdout
    assert dev.app_version == NEW
    assert dev.bootloader_version == "RUI_BOOT_0.8_STM32WLE5CC"   # the bootloader was left alone


def test_dry_run_writes_nothing(virtual, new_app):
    dev = virtual("rak3172")
    proc = run_cli("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "estimate" in proc.stdout and "YMODEM" in proc.stdout
    assert dev.updates == 0 and dev.app_version == OLD and dev.mode == Mode.APP


def test_a_downgrade_is_said_in_the_plan(virtual, tmp_path, cat):
    dev = virtual("rak3172")
    p = tmp_path / "older.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.1_RAK3172-E", 8000))
    proc = run_cli("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--dry-run")
    assert proc.returncode == 0 and f"this is a downgrade: {OLD} → RUI_4.0.1_RAK3172-E" in proc.stdout


def test_no_terminal_and_no_yes_is_a_named_error(virtual, new_app):
    dev = virtual("rak3172")
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (code, out["error"]) == (10, "confirmation-needed")
    assert dev.updates == 0 and dev.mode == Mode.APP


@pytest.mark.parametrize("make, error", [
    (lambda cat: firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 5000), "wrong-target"),
    (lambda cat: firmware.app_image(cat.module("rak3172"), NEW, 201 * 1024), "image-too-large"),
])
def test_refusals_write_nothing(virtual, tmp_path, cat, make, error):
    dev = virtual("rak3172")
    p = tmp_path / "x.bin"
    p.write_bytes(make(cat))
    code, out = flash(p, dev)
    assert (code, out["error"]) == (6, error)
    assert dev.updates == 0 and dev.mode == Mode.APP and dev.app_version == OLD


@pytest.mark.parametrize("address", ["0x08000000", "0x08006001", "0x08005000"])
def test_bin_at_a_wrong_address_is_refused(virtual, new_app, address):
    """Sent as given, the application would not start at its base: refuse before writing."""
    dev = virtual("rak3172")
    code, out = flash(new_app, dev, "--address", address, "--force")
    assert (code, out["error"]) == (6, "touches-bootloader"), out
    assert "does not start an application at 0x08006000" in out["message"]
    assert "--address" in out["hint"] and "0x08006000" in out["hint"]
    assert dev.updates == 0 and dev.mode == Mode.APP


def test_same_version_skipped_then_forced(virtual, tmp_path, cat):
    dev = virtual("rak3172")
    p = tmp_path / "same.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), OLD, 8000))
    code, out = flash(p, dev)
    assert (code, out["result"]) == (0, "already-up-to-date") and dev.updates == 0
    assert (out["app_version_before"], out["app_version_after"], out["bytes"]) == (OLD, OLD, 0)
    code, out = flash(p, dev, "--force")
    assert (code, out["result"]) == (0, "ok") and dev.updates == 1


@pytest.mark.parametrize("name", RAK3172_VARIANTS)
def test_interrupted_update_is_finished(virtual, tmp_path, cat, name):
    dev = virtual(name, state="bootloader")
    _, new, new_app = variant_app(tmp_path, cat, name)
    code, out = flash(new_app, dev)
    assert code == 0, out
    assert out["app_version_before"] is None and out["app_version_after"] == new


def test_rak811_old_bootloader_refused_with_recovery_advice(virtual, tmp_path, cat):
    dev = virtual("rak811", bootloader_version="V3.0.2")
    p = tmp_path / "RAK811_v3.0.0.14.bin"
    p.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 100 * 1024))
    proc = run_cli("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak811",
                   "--dry-run")
    assert proc.returncode == 0 and "needs bootloader 3.0.5 or later" in proc.stdout
    code, out = flash(p, dev, "--module", "rak811")
    assert (code, out["error"]) == (6, "bootloader-too-old")
    assert "3.0.5" in out["message"] and "pyocd flash -t stm32l151cbux -e sector -O keep_unwritten=true FULL.hex" in out["hint"]
    assert "runs its application again" in out["message"] and ".;" not in out["message"]
    assert out["app_version_before"] == "V3.0.0.13.H"
    assert dev.updates == 0
    assert dev.wait_mode(Mode.APP) and dev.app_version == "V3.0.0.13.H"     # back at work


def test_rak811_old_bootloader_forced_ends_in_timeout_not_hang(virtual, tmp_path, cat):
    dev = virtual("rak811", bootloader_version="V3.0.2")
    p = tmp_path / "RAK811_v3.0.0.14.bin"
    p.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 100 * 1024))
    t0 = time.monotonic()
    code, out = flash(p, dev, "--module", "rak811", "--force", timeout=120)
    assert (code, out["error"]) == (7, "transfer-timeout")
    assert time.monotonic() - t0 < 90
    # The same command would stall again: the way out is the recovery command, for this port.
    assert "running the same command again would stall again" in out["hint"]
    assert f"rakflash recover FULL.hex --port {dev.port} --module rak811" in out["hint"], out["hint"]
    assert "press its reset button" not in out["hint"]


def test_rak811_update_with_new_bootloader(virtual, tmp_path, cat):
    dev = virtual("rak811", bootloader_version="V3.0.5")
    p = tmp_path / "RAK811_v3.0.0.14.bin"
    p.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 100 * 1024))
    code, out = flash(p, dev, "--module", "rak811")
    assert code == 0, out
    assert (out["app_version_before"], out["app_version_after"]) == ("V3.0.0.13.H", "V3.0.0.14.H")


def test_bit_errors_and_drops_are_retried(virtual, new_app):
    dev = virtual("rak3172")
    dev.uart.faults.bit_error_rate = 2e-5
    dev.uart.faults.drop_rate = 1e-5
    code, out = flash(new_app, dev)
    assert code == 0, out
    assert dev.flash.read(0x08006000, out["bytes"]) == new_app.read_bytes()


@pytest.mark.parametrize("name", ["rak3172", "rak3172-sip", "rak11160"])
def test_power_cut_mid_transfer_then_rerun_finishes(virtual, tmp_path, cat, name):
    dev = virtual(name)
    _, new, new_app = variant_app(tmp_path, cat, name)
    dev.uart.faults.power_cut_after = dev.uart.faults.received + 20000
    code, out = flash(new_app, dev, timeout=120)
    assert (code, out["error"]) == (7, "device-restarted")
    assert dev.wait_mode(Mode.BOOTLOADER)       # the bootloader is in charge, not a brick
    code, out = flash(new_app, dev)
    assert code == 0, out
    assert out["app_version_after"] == new


def test_device_cancel_is_named_and_rerun_works(virtual, new_app):
    dev = virtual("rak3172")
    dev.uart.faults.bit_error_rate = 0.01          # every block arrives damaged
    code, out = flash(new_app, dev, timeout=120)
    assert code == 7 and out["error"] in ("transfer-cancelled", "too-many-retries")
    dev.uart.faults.bit_error_rate = 0
    assert dev.wait_mode(Mode.BOOTLOADER)
    code, out = flash(new_app, dev)
    assert code == 0, out


def test_cable_pulled_mid_transfer_is_named(virtual, new_app):
    dev = virtual("rak3172")
    dev.uart.faults.pull_cable_after = dev.uart.faults.received + 15000
    t0 = time.monotonic()
    code, out = flash(new_app, dev, timeout=60)
    assert (code, out["error"]) == (4, "port-disconnected")
    assert "run the same command again" in out["hint"]
    assert time.monotonic() - t0 < 30
    # Plugged back in, the module starts in its bootloader, and the same command finishes the job.
    unplugged_firmware = dev._thread
    port = dev.plug_in()
    assert not unplugged_firmware.is_alive()        # one firmware on the new port, not two
    assert dev.wait_mode(Mode.BOOTLOADER)
    code, out = cli_json("flash", str(new_app), "--port", port, "--baud", str(FAST_BAUD), "--yes")
    assert (code, out["app_version_after"]) == (0, NEW), out


# ------------------------------------------------------------------ the owner's keys and settings

KEYS = {"DEVEUI": "AC1F09FFFE0A0B0C", "APPEUI": "70B3D57ED0001234",
        "APPKEY": "2B7E151628AED2A6ABF7158809CF4F3C"}


def at_exchange(port: str, command: str, baud: int = FAST_BAUD) -> list[str]:
    """What a person typing into a terminal sees for one AT command (a reply ends at its OK or
    error line; the per-line wait has room for a loaded host — a CI run read nothing within 0.3 s)."""
    with serial.serial_for_url(port, baud, timeout=3.0) as ser:
        ser.write(command.encode() + b"\r\n")
        lines = []
        while (line := ser.readline()) and line.strip() not in (b"OK", b"AT_PARAM_ERROR"):
            lines.append(line.decode().strip())
        return lines + [line.decode().strip()]


def set_keys(dev) -> None:
    for name, value in KEYS.items():
        assert at_exchange(dev.port, f"AT+{name}={value}")[-1] == "OK"


def keys_on(dev) -> dict:
    return {name: at_exchange(dev.port, f"AT+{name}=?")[0].split("=", 1)[1] for name in KEYS}


def test_keys_and_settings_survive_an_update(virtual, new_app, cat):
    dev = virtual("rak3172")
    set_keys(dev)
    config = cat.module("rak3172").region("config")          # RUI3's config block: the keys' home
    stored = dev.flash.read(config.start, config.size)
    code, out = flash(new_app, dev)
    assert code == 0, out
    assert out["settings_kept"] is True
    assert out["settings"]["checked"] == ["DEVEUI", "APPEUI", "APPKEY", "BAND"]
    assert out["settings"]["restored"] == []
    assert keys_on(dev) == KEYS
    assert dev.flash.read(config.start, config.size) == stored         # not even rewritten
    assert all(v not in json.dumps(out) for v in KEYS.values())        # keys never printed


def test_keys_the_new_firmware_resets_are_written_back(virtual, tmp_path, cat):
    dev = virtual("rak3172")
    set_keys(dev)
    p = tmp_path / "new_layout.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 30 * 1024, new_settings_layout=True))
    proc = run_cli("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "had reset DEVEUI, APPEUI, APPKEY; rakflash wrote back" in proc.stdout
    assert keys_on(dev) == KEYS
    dev.press_reset()                        # and they stay after the next start
    assert dev.wait_mode(Mode.APP)
    time.sleep(0.1)
    assert keys_on(dev) == KEYS


def test_no_keep_settings_leaves_them_to_the_firmware(virtual, tmp_path, cat):
    dev = virtual("rak3172")
    set_keys(dev)
    p = tmp_path / "new_layout.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 30 * 1024, new_settings_layout=True))
    code, out = flash(p, dev, "--no-keep-settings")
    assert code == 0, out
    assert out["settings_kept"] is None
    assert keys_on(dev)["APPKEY"] == "0" * 32     # what the new firmware did, untouched


def test_dry_run_lists_the_settings_check(virtual, new_app):
    dev = virtual("rak3172")
    proc = run_cli("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--dry-run")
    assert "read the LoRaWAN keys and settings (DEVEUI, APPEUI, APPKEY, BAND)" in proc.stdout


# ------------------------------------------------------------------ one JSON shape for every ending

@pytest.mark.parametrize("ending", ["dry-run", "refused", "transfer-error", "interrupted"])
def test_last_json_line_always_has_the_result_keys(virtual, new_app, tmp_path, cat, ending):
    import signal
    import subprocess
    import sys

    from conftest import SRC
    dev = virtual("rak3172")
    args = [str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "--json"]
    if ending == "dry-run":
        args.append("--dry-run")
    elif ending == "refused":
        big = tmp_path / "big.bin"
        big.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 250 * 1024))
        args[0] = str(big)
    elif ending == "transfer-error":
        dev.uart.faults.pull_cable_after = dev.uart.faults.received + 8000
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "flash", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    lines = signal_when(proc, lambda e: ending == "interrupted" and e.get("event") == "progress",
                        signal.SIGINT)
    proc.wait(30)
    last = lines[-1]
    assert {"result", "app_version_before", "app_version_after", "bytes", "seconds"} <= set(last), last
    assert last["app_version_before"] == OLD          # known before anything went wrong
    expected = {"dry-run": "ok", "refused": "image-too-large", "transfer-error": "port-disconnected",
                "interrupted": "interrupted"}[ending]
    assert last["result"] == expected, last
    assert proc.returncode == {"dry-run": 0, "refused": 6, "transfer-error": 4, "interrupted": 130}[ending]


def test_keys_survive_an_update_cut_off_before_it_could_check_them(virtual, tmp_path, cat):
    """Power lost mid-transfer: the re-run starts in the bootloader with no application to ask,
    so it takes the values the first run kept, and writes back what the new firmware reset.
    (The owner kept the module's factory DevEUI, which the reset restores: it says whose they are.)"""
    dev = virtual("rak3172", dev_eui=KEYS["DEVEUI"])
    set_keys(dev)
    p = tmp_path / "new_layout.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 30 * 1024, new_settings_layout=True))
    dev.uart.faults.power_cut_after = dev.uart.faults.received + 15000
    code, out = flash(p, dev)
    assert (code, out["error"]) == (7, "device-restarted"), out
    kept = list((tmp_path / "cache" / "rakflash").glob("settings-rak3172-*.json"))
    assert len(kept) == 1 and oct(kept[0].stat().st_mode & 0o777) == "0o600"
    assert dev.wait_mode(Mode.BOOTLOADER)
    proc = run_cli("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "wrote back the values from before the update (the values read by the earlier" in proc.stdout
    assert keys_on(dev) == KEYS
    assert not kept[0].exists()                   # checked: nothing is left on disk


def test_up_to_date_module_still_gets_the_check_an_earlier_run_missed(virtual, tmp_path, cat):
    """Cut off after the transfer but before the check: the re-run finds the new version running.
    (The owner kept the module's factory DevEUI, which the reset restores: it says whose they are.)"""
    from rakflash.flows import settings as flows_settings
    dev = virtual("rak3172", dev_eui=KEYS["DEVEUI"])
    set_keys(dev)
    module = cat.module("rak3172")
    flows_settings.keep_until_checked(module, dev.opts.serial_number,
                                      {f"AT+{k}=?": v for k, v in KEYS.items()})
    p = tmp_path / "new_layout.bin"
    p.write_bytes(firmware.app_image(module, NEW, 30 * 1024, new_settings_layout=True))
    dev.flash.erase(module.app.start, module.app.start + len(p.read_bytes()))
    dev.flash.program(module.app.start, p.read_bytes())
    dev.press_reset()                              # the new firmware starts and resets the keys
    assert dev.wait_mode(Mode.APP)
    time.sleep(0.1)
    assert keys_on(dev)["APPKEY"] == "0" * 32
    code, out = flash(p, dev)
    assert (code, out["result"]) == (0, "already-up-to-date"), out
    assert out["settings_kept"] is True and set(out["settings"]["restored"]) == {"APPEUI", "APPKEY"}
    assert keys_on(dev) == KEYS
