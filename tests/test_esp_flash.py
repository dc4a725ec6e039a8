"""rakflash's own flows for the ESP32 modules (RAK11200, RAK3112 family) through esptool's Python
API, against the virtual chips: ``info`` (chip, MAC, flash size, what the flash holds), ``flash``
with its refusals before writing, the three ways into download mode (esptool's RTS/DTR reset over
RFC 2217, the S3's USB Serial/JTAG reset, a person holding GPIO0 on a port without lines),
progress and JSON events from the one event stream, verification by the chip's own MD5, and
``inspect`` of ESP images."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from conftest import cli_json, run_as_a_person, run_cli
from rakflash.sim import Mode, esp_firmware

CHIPS = {"rak11200": (0, "ESP32-D0WD-V3 (revision v3.0)", 4), "rak3112": (9, "ESP32-S3 (QFN56) (revision v0.2)", 16)}
PINS = {"rak11200": "BOOT0 (ESP32 GPIO0", "rak3112": "GPIO0 (the BOOT pad)"}


def app(name: str, version: str = "1.1.0", size: int = 64 * 1024, seed: int = 0) -> bytes:
    chip, _, mb = CHIPS[name]
    return esp_firmware.app_image(chip, version, size, project=f"{name}-sample", flash_mb=mb, seed=seed)


def written(dev, data: bytes, at: int = 0x10000) -> bool:
    return dev.flash.read(at, len(data)) == data


def events(proc) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


# ------------------------------------------------------------------ info

@pytest.mark.parametrize("name", ["rak11200", "rak3112"])
def test_info_asks_the_chip_in_download_mode(virtual, name):
    """GPIO0 held (a pty has no lines to reset it): info reads chip, MAC, flash, partitions, app."""
    dev = virtual(name, boot_pin=True)
    code, out = cli_json("info", "--port", dev.port, *(["--module", name] if name == "rak11200" else []))
    assert code == 0, out
    chip = out["chip"]
    assert (out["module_key"], out["mode"], out["app_version"]) == (name, "rom", "1.0.0")
    assert chip["description"] == CHIPS[name][1] and chip["mac"] == dev.chip.mac.hex(":")
    assert chip["flash_size"] == CHIPS[name][2] << 20
    assert [p["label"] for p in chip["partition_table"]["partitions"]] == ["nvs", "phy_init", "factory"]
    assert out["bootloader_version"] == "ESP-IDF v5.1.4"
    assert any("let go of" in n for n in out["notes"])       # what starts the firmware again
    assert dev.mode == Mode.ROM


@pytest.mark.parametrize("name", ["rak11200", "rak3112"])
def test_info_over_rfc2217_resets_in_and_back_out(virtual, name):
    dev = virtual(name, transport="tcp", auto_reset=name == "rak11200")
    assert dev.wait_mode("app")
    seen = []
    dev.mode_listeners.append(seen.append)
    code, out = cli_json("info", "--port", dev.port, "--module", name)
    assert code == 0, out
    assert out["mode"] == "app" and out["chip"]["mac"] == dev.chip.mac.hex(":")
    assert Mode.ROM in seen and dev.wait_mode("app")


def test_info_finds_an_esp32_waiting_in_download_mode_unnamed(virtual):
    """No --module, no USB id: nothing answers AT; the ROM answers SYNC, and is asked."""
    dev = virtual("rak11200", boot_pin=True)
    code, out = cli_json("info", "--port", dev.port)
    assert code == 0, out
    assert out["module_key"] == "rak11200" and out["chip"]["chip"] == "ESP32"


# ------------------------------------------------------------------ flash

@pytest.mark.parametrize("name", ["rak11200", "rak3112"])
def test_flash_with_gpio0_held_verifies_by_the_chips_md5(virtual, name, tmp_path):
    """On a pty the chip waits in download mode (GPIO0 held); rakflash writes, the chip's MD5
    says it holds the image, and the person lets go of GPIO0 and resets when told: the new app's
    boot log says its version."""
    dev = virtual(name, boot_pin=True)
    image = app(name)
    (tmp_path / "app.bin").write_bytes(image)

    def person(event: dict) -> None:
        if event.get("event") == "prompt" and event["action"] == "release-gpio0-and-reset":
            dev.set_boot_pin(False)
            dev.press_reset()
    code, evs = run_as_a_person("flash", str(tmp_path / "app.bin"), "--port", dev.port, "--yes",
                                on_event=person)
    result = evs[-1]
    assert code == 0, result
    assert result["result"] == "ok" and (result["app_version_before"], result["app_version_after"]) == ("1.0.0", "1.1.0")
    assert result["version_confirmed"] and result["started_by"] == "person"
    assert result["verified"] == [{"address": 0x10000, "bytes": len(image),
                                   "md5": hashlib.md5(image).hexdigest()}]
    assert written(dev, image) and dev.mode == Mode.APP and dev.app_version == "1.1.0"
    phases = [e["phase"] for e in evs if e.get("event") == "phase"]
    assert phases == ["identify", "boot", "write", "verify", "start"]
    progress = [e for e in evs if e.get("event") == "progress"]
    assert progress and [p["bytes"] for p in progress] == sorted(p["bytes"] for p in progress)
    assert progress[-1]["bytes"] == progress[-1]["total"] == len(image)


@pytest.mark.parametrize("name", ["rak11200",
                                  # over RFC 2217 the S3's USB Serial/JTAG reset reaches it: nobody is asked
                                  pytest.param("rak3112", marks=pytest.mark.pty_only)])
def test_a_person_holds_gpio0_when_no_line_resets_the_chip(virtual, name, tmp_path):
    """The app runs and a pty has no RTS/DTR: rakflash asks the person to hold GPIO0 (named) and
    press reset, waits with a countdown, and goes on once the ROM answers."""
    dev = virtual(name)
    assert dev.wait_mode("app")
    (tmp_path / "app.bin").write_bytes(app(name))
    asked = []

    def person(event: dict) -> None:
        if event.get("event") == "prompt":
            asked.append(event)
            held = event["action"] == "hold-gpio0-and-reset"
            dev.set_boot_pin(held)
            dev.press_reset()
    code, evs = run_as_a_person("flash", str(tmp_path / "app.bin"), "--port", dev.port, "--yes",
                                on_event=person)
    assert code == 0, evs[-1]
    assert [a["action"] for a in asked] == ["hold-gpio0-and-reset", "release-gpio0-and-reset"]
    assert PINS[name] in asked[0]["message"] and asked[0]["pin"].startswith(PINS[name])
    assert evs[-1]["version_confirmed"] and dev.mode == Mode.APP and dev.app_version == "1.1.0"


@pytest.mark.parametrize("name", ["rak11200", "rak3112"])
def test_flash_over_rfc2217_needs_nobody(virtual, name, tmp_path):
    """esptool's reset (classic circuit / USB Serial/JTAG) enters download mode, its hard reset
    starts the new app, whose boot log confirms the version."""
    dev = virtual(name, transport="tcp", auto_reset=name == "rak11200")
    image = app(name, size=48 * 1024)
    (tmp_path / "app.bin").write_bytes(image)
    proc = run_cli("flash", str(tmp_path / "app.bin"), "--port", dev.port, "--yes", "--json", timeout=120)
    evs = events(proc)
    assert proc.returncode == 0, proc.stderr + proc.stdout[-2000:]
    assert not [e for e in evs if e.get("event") == "prompt"]
    assert evs[-1]["started_by"] == "reset" and evs[-1]["version_confirmed"]
    assert written(dev, image) and dev.wait_mode("app") and dev.app_version == "1.1.0"


def test_no_download_mode_is_a_named_error_naming_the_pin(virtual, tmp_path):
    dev = virtual("rak11200")
    assert dev.wait_mode("app")
    (tmp_path / "app.bin").write_bytes(app("rak11200"))
    code, out = cli_json("flash", str(tmp_path / "app.bin"), "--port", dev.port, "--yes",
                         "--reset-window", "2", timeout=90)
    assert (code, out["error"]) == (9, "download-mode-failed")
    assert "BOOT0 (ESP32 GPIO0" in out["hint"] and out["written"] == "nothing"
    assert dev.mode == Mode.APP and dev.app_version == "1.0.0"


def test_a_merged_binary_writes_bootloader_table_and_app(virtual, tmp_path):
    dev = virtual("rak3112", state="erased", boot_pin=True)
    merged = esp_firmware.merged(9, app("rak3112", "3.0.0"))
    (tmp_path / "merged.bin").write_bytes(merged)
    code, out = cli_json("flash", str(tmp_path / "merged.bin"), "--port", dev.port, "--yes",
                         "--reset-window", "1", timeout=90)
    assert code == 0, out
    assert out["parts"] == [{"address": 0, "bytes": len(merged)}] and written(dev, merged, 0)
    assert out["verified"][0]["md5"] == hashlib.md5(merged).hexdigest()
    dev.set_boot_pin(False)
    dev.press_reset()
    assert dev.wait_mode("app") and dev.app_version == "3.0.0"


def test_the_same_bytes_again_are_already_up_to_date(virtual, tmp_path):
    dev = virtual("rak11200", boot_pin=True)
    (tmp_path / "app.bin").write_bytes(app("rak11200"))
    assert cli_json("flash", str(tmp_path / "app.bin"), "--port", dev.port, "--yes",
                    "--reset-window", "1", timeout=90)[0] == 0
    dev.press_reset()                      # (GPIO0 still held: the ROM again)
    programs = dev.flash.programs
    code, out = cli_json("flash", str(tmp_path / "app.bin"), "--port", dev.port, "--yes", timeout=90)
    assert (code, out["result"]) == (0, "already-up-to-date") and dev.flash.programs == programs


# ------------------------------------------------------------------ refusals before writing

def refused(dev, path, *extra, timeout=90):
    erases, programs = dev.flash.erases, dev.flash.programs
    code, out = cli_json("flash", str(path), "--port", dev.port, "--yes", *extra, timeout=timeout)
    assert (dev.flash.erases, dev.flash.programs) == (erases, programs), "something was written"
    assert out["written"] == "nothing"
    return code, out


def test_an_image_for_the_other_chip_is_refused(virtual, tmp_path):
    dev = virtual("rak3112", boot_pin=True)
    (tmp_path / "esp32.bin").write_bytes(app("rak11200"))
    code, out = refused(dev, tmp_path / "esp32.bin", "--module", "rak3112")
    assert (code, out["error"]) == (6, "wrong-target")
    assert "ESP32" in out["message"] and "chip id 0" in out["message"]


def test_an_image_for_the_other_chip_is_refused_on_what_the_chip_says(virtual, tmp_path):
    """Without --module the image picks the module; the chip's own answer still decides."""
    dev = virtual("rak3112", boot_pin=True)
    (tmp_path / "esp32.bin").write_bytes(app("rak11200"))
    code, out = refused(dev, tmp_path / "esp32.bin")
    assert (code, out["error"]) == (6, "wrong-target") and "ESP32-S3" in out["message"]


def test_an_image_larger_than_the_flash_is_refused(virtual, tmp_path):
    dev = virtual("rak11200", boot_pin=True)
    big = esp_firmware.merged(0, app("rak11200", size=64 * 1024),
                              table=esp_firmware.partition_table([("factory", 0, 0, 0x10000, 0x3E0000)]))
    big += b"\xff" * (5 * 1024 * 1024 - len(big))
    (tmp_path / "big.bin").write_bytes(big)
    code, out = refused(dev, tmp_path / "big.bin")
    assert (code, out["error"]) == (6, "image-too-large") and "4 MB of flash" in out["message"]


def test_a_partition_table_that_does_not_fit_the_flash_is_refused(virtual, tmp_path):
    dev = virtual("rak11200", boot_pin=True)
    table = esp_firmware.partition_table([("nvs", 1, 2, 0x9000, 0x6000), ("factory", 0, 0, 0x10000, 0x400000)])
    (tmp_path / "merged.bin").write_bytes(esp_firmware.merged(0, app("rak11200"), table=table))
    code, out = refused(dev, tmp_path / "merged.bin")
    assert (code, out["error"]) == (6, "partition-table")
    assert "'factory'" in out["message"] and "past the 4 MB of flash" in out["message"]


def test_an_app_larger_than_its_partition_is_refused(virtual, tmp_path):
    dev = virtual("rak11200", boot_pin=True)
    (tmp_path / "huge.bin").write_bytes(app("rak11200", size=0x110000))   # the factory slot is 1 MiB
    code, out = refused(dev, tmp_path / "huge.bin")
    assert (code, out["error"]) == (6, "image-too-large") and "'factory' partition" in out["message"]


def test_an_app_alone_on_a_chip_without_partition_table_is_refused(virtual, tmp_path):
    dev = virtual("rak3112", state="erased", boot_pin=True)
    (tmp_path / "app.bin").write_bytes(app("rak3112"))
    code, out = refused(dev, tmp_path / "app.bin")
    assert (code, out["error"]) == (6, "partition-table") and "merged binary" in out["hint"]


def test_a_damaged_image_is_refused(virtual, tmp_path):
    dev = virtual("rak11200", boot_pin=True)
    image = bytearray(app("rak11200"))
    image[5000] ^= 0xFF
    (tmp_path / "bad.bin").write_bytes(image)
    code, out = refused(dev, tmp_path / "bad.bin")
    assert (code, out["error"]) == (3, "image-format") and "checksum" in out["message"]


def test_a_cortex_m_image_for_an_esp_module_is_refused_before_the_port(virtual, tmp_path, cat):
    from rakflash.sim import firmware
    dev = virtual("rak3112", boot_pin=True)
    (tmp_path / "stm32.bin").write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 8000))
    code, out = refused(dev, tmp_path / "stm32.bin", "--module", "rak3112")
    assert (code, out["error"]) == (3, "not-firmware") and "no ESP image" in out["message"]
    assert dev.stub_runs == 0                # the port was not touched


def test_dry_run_plans_and_writes_nothing(virtual, tmp_path):
    dev = virtual("rak11200", boot_pin=True)
    (tmp_path / "app.bin").write_bytes(app("rak11200"))
    proc = run_cli("flash", str(tmp_path / "app.bin"), "--port", dev.port, "--dry-run", timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "enter the ESP32's ROM download mode" in proc.stdout and "verify: the chip computes the MD5" in proc.stdout
    assert dev.flash.programs == 0 and dev.app_version == "1.0.0"


# ------------------------------------------------------------------ inspect

def test_inspect_reads_a_merged_binary_made_by_esptool(tmp_path):
    """Parts made by the simulator, merged by esptool's own merge-bin: rakflash says where each
    part goes and what it is."""
    boot, table = esp_firmware.bootloader_image(0), esp_firmware.default_table()
    for n, data in (("boot", boot), ("table", table), ("app", app("rak11200", "4.2.0"))):
        (tmp_path / f"{n}.bin").write_bytes(data)
    subprocess.run([sys.executable, "-m", "esptool", "--chip", "esp32", "merge-bin", "-o",
                    str(tmp_path / "merged.bin"), "0x1000", str(tmp_path / "boot.bin"), "0x8000",
                    str(tmp_path / "table.bin"), "0x10000", str(tmp_path / "app.bin")],
                   check=True, capture_output=True)
    code, out = cli_json("inspect", str(tmp_path / "merged.bin"))
    assert code == 0
    assert (out["format"], out["module"], out["app_version"]) == ("esp-merged", "RAK11200", "4.2.0")
    esp = out["esp"]
    assert [(i["kind"], i["flash_offset"]) for i in esp["images"]] == [("bootloader", 0x1000), ("app", 0x10000)]
    assert esp["partition_table"]["flash_offset"] == 0x8000 and out["esp_problems"] == []
    human = run_cli("inspect", str(tmp_path / "merged.bin")).stdout
    assert "merged binary" in human and "factory" in human and "version 4.2.0" in human


@pytest.mark.parametrize("make, kind, base", [
    (lambda: esp_firmware.bootloader_image(9), "bootloader", 0x0),
    (lambda: esp_firmware.bootloader_image(0), "bootloader", 0x1000),
    (lambda: esp_firmware.default_table(), "partition-table", 0x8000),
    (lambda: app("rak3112"), "app", 0x10000)])
def test_inspect_places_each_part_where_it_goes(tmp_path, make, kind, base):
    (tmp_path / "x.bin").write_bytes(make())
    code, out = cli_json("inspect", str(tmp_path / "x.bin"))
    assert code == 0 and out["esp"]["kind"] == kind and out["segments"][0]["start"] == base


def test_inspect_says_what_is_damaged(tmp_path):
    image = bytearray(app("rak3112"))
    image[-10] ^= 1                       # in the appended SHA-256
    (tmp_path / "x.bin").write_bytes(image)
    code, out = cli_json("inspect", str(tmp_path / "x.bin"))
    assert code == 0 and any("SHA-256" in p for p in out["esp_problems"])


def test_the_terminal_says_what_the_chip_verified(virtual, tmp_path):
    """Without --json: the done line, then the chip's MD5 of what was written (no one lets go of
    GPIO0 here, so the new version is said as not confirmed, and why)."""
    dev = virtual("rak11200", boot_pin=True)
    image = app("rak11200")
    (tmp_path / "app.bin").write_bytes(image)
    proc = run_cli("flash", str(tmp_path / "app.bin"), "--port", dev.port, "--yes", "--reset-window", "1",
                   timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "done: RAK11200 1.0.0 → 1.1.0 (not confirmed, see the warning)" in proc.stdout
    assert (f"verified: the chip's MD5 of 0x10000+{len(image):,} is the image's "
            f"({hashlib.md5(image).hexdigest()})") in proc.stdout
    assert "let go of GPIO0 and press reset to start it" in proc.stderr and written(dev, image)
