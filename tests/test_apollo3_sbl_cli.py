"""`rakflash recover` over the RAK11720's secure bootloader, as a person runs it: the real
command in a subprocess, a virtual module on a pty, someone pressing the buttons when told."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from conftest import FAST_BAUD, SRC, run_as_a_person, run_cli
from rakflash import catalog
from rakflash.apollo3_info0 import rak11720_default
from rakflash.sim import Mode, firmware

NEW_APP, NEW_BOOT = "RUI_4.0.6_RAK11720", "RUI_BOOT_0.4_RAK11720"


def recover_as_a_person(dev, *args: str, reset_after: float = 0.0, timeout: float = 90):
    """Run `rakflash recover … --json`; at the prompt hold BOOT and press reset (after
    ``reset_after`` seconds of countdown), release BOOT when told. Returns (code, events)."""
    prompted: list[float] = []                   # when the hold-BOOT prompt came, until acted on

    def person(e: dict) -> None:
        if e.get("event") == "prompt" and e["action"] == "hold-boot-and-reset":
            prompted[:] = [time.monotonic()]
        if e.get("event") == "countdown" and prompted and e["action"] == "hold-boot-and-reset" \
                and time.monotonic() - prompted[0] >= reset_after:
            dev.set_boot_pin(True)
            dev.press_reset()
            prompted.clear()
        if e.get("event") == "prompt" and e["action"].startswith("release-boot"):
            dev.set_boot_pin(False)
            if e["action"] == "release-boot-and-reset":
                dev.press_reset()
    return run_as_a_person("recover", *args, on_event=person, timeout=timeout)


def full_hex(tmp_path, boot=NEW_BOOT, app=NEW_APP):
    p = tmp_path / "RAK11720_latest_final.hex"
    p.write_text(firmware.combined_hex(catalog.load().module("rak11720"), boot, app, 24 * 1024))
    return p


def info0_at(baud=FAST_BAUD, **changes):
    return rak11720_default().replace(uart_baud=baud, **changes).raw


def common(dev, path, *extra):
    return (str(path), "--port", dev.port, "--module", "rak11720", "--baud", str(FAST_BAUD), "--yes",
            "--window", "8", "--release-wait", "0", *extra)


def test_bricked_flooding_rak11720_brought_back_with_recover(virtual, tmp_path):
    """The seed: a sketch floods the port, AT+BOOT never gets through. BOOT + reset, and back."""
    dev = virtual("rak11720", info0=info0_at(), sketch="flooding", flood_after=0.2)
    time.sleep(0.4)
    code, events = recover_as_a_person(dev, *common(dev, full_hex(tmp_path)), reset_after=1.5)
    final = events[-1]
    assert code == 0, final
    assert (final["result"], final["method"], final["app_version_after"], final["mode_after"]) == \
        ("ok", "apollo3-sbl", NEW_APP, "app")
    assert final["bootloader_version_after"] == NEW_BOOT
    assert (final["port"], final["error"], final["version_confirmed"], final["settings_kept"]) == \
        (dev.port, None, True, None)
    assert final["keys"] == "not-read" and "wired update has no read command" in final["keys_reason"]
    assert {"retries", "boot_seconds", "reset_wait_seconds", "bytes_per_second", "settings"} <= set(final)
    kinds = [e.get("event") for e in events]
    assert kinds[0] == "plan" and "countdown" in kinds and "progress" in kinds
    assert dev.mode is Mode.APP and dev.app_version == NEW_APP and not dev.boot_pin
    notes = [e["message"] for e in events if e.get("event") == "note"]
    assert any("floods its AT port" in n for n in notes), notes          # the flood, by name


def test_module_without_a_valid_application_brought_back_with_recover(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at())
    dev.flash.load(0x14000, b"\xff" * 0x60000)                    # no application at all
    dev.press_reset()
    assert dev.wait_mode(Mode.BOOTLOADER)
    proc_args = common(dev, full_hex(tmp_path))
    code, events = recover_as_a_person(dev, *proc_args, reset_after=2.5)      # a late reset
    final = events[-1]
    assert code == 0, final
    assert (final["bootloader_version_before"], final["app_version_before"]) == ("RUI_BOOT_0.3_RAK11720", None)
    assert (final["bootloader_version_after"], final["app_version_after"]) == (NEW_BOOT, NEW_APP)
    status = [e for e in events if e.get("event") == "phase" and e["phase"] == "connect" and "sbl" in e]
    assert status and status[0]["sbl"]["max_storage"] == 0x100000 - 0xC000
    assert dev.mode is Mode.APP


def test_info0_without_override_pin_gives_a_clear_error(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at(override_gpio=0x7F))
    code, events = recover_as_a_person(dev, *common(dev, full_hex(tmp_path))[:-4], "--window", "2",
                                       "--release-wait", "0")
    final = events[-1]
    assert (code, final["error"], final["cause"]) == (9, "boot-entry-failed", "application")
    assert "INFO0" in final["message"] and "--via swd" in final["hint"]
    assert dev.app_version == "RUI_4.0.5_RAK11720"                 # nothing was written


def test_terminal_output_tells_the_person_what_to_do(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at())
    proc = run_cli(*("recover",) + common(dev, full_hex(tmp_path))[:-4] + ("--window", "1"), timeout=60)
    assert proc.returncode == 9
    assert "Hold BOOT (Apollo3 GPIO41, shared with SWO) high (connected to 3.3 V)" in proc.stderr
    assert "error: the secure bootloader did not answer within 1 s" in proc.stderr


def test_dry_run_shows_blocks_and_pins(tmp_path):
    proc = run_cli("recover", str(full_hex(tmp_path)), "--port", "/dev/null", "--module", "rak11720",
                   "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "UPDATE + DATA: 8,192 bytes at 0x0c000 (non-secure, written in place)" in proc.stdout
    # the bytes sent are the blocks' bytes and a 96-byte header each, and the line says so
    blocks = [int(ln.split("DATA: ")[1].split(" bytes")[0].replace(",", "")) for ln in proc.stdout.splitlines()
              if "UPDATE + DATA: " in ln]
    assert len(blocks) == 3
    assert (f"{sum(blocks) + 96 * 3:,} bytes to send: the image's {sum(blocks):,} bytes in 3 blocks, each "
            f"with its 96-byte wired-update header") in proc.stdout
    assert "Hold BOOT (Apollo3 GPIO41, shared with SWO) high" in proc.stdout and "estimate" in proc.stdout


def test_sim_takes_an_info0_dump(tmp_path):
    dump = tmp_path / "info0.bin"
    dump.write_bytes(rak11720_default().replace(override_gpio=0x7F).raw)
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "sim", "rak11720", "--info0", str(dump),
                             "--boot-pin", "--baud", str(FAST_BAUD)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=SRC))
    try:
        assert proc.stdout.readline().startswith("port: ")
        # BOOT is held, but this INFO0 has no override pin: the RUI firmware runs, not the ROM
        assert proc.stdout.readline().strip().startswith("running: app")
    finally:
        proc.terminate()
        proc.wait(10)
    bad = run_cli("sim", "rak3172", "--info0", str(dump))
    assert bad.returncode == 2 and "only the RAK11720" in bad.stderr
