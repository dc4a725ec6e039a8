"""The virtual ESP32 (RAK11200) and ESP32-S3 (RAK3112) against esptool's own command line,
unchanged, run as a subprocess: chip-id, write-flash, verify-flash, read-flash, with its flasher
stub and without (``--no-stub``); over a pty (a person holds GPIO0 low: no modem lines there) and
over RFC 2217 (esptool's own RTS/DTR resets: the classic circuit, the S3's USB Serial/JTAG)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import serial

from rakflash.sim import Mode, esp_firmware

ESP32_CHIP = "ESP32-D0WD-V3 (revision v3.0)"
S3_CHIP = "ESP32-S3 (QFN56) (revision v0.2)"
CHIPS = {"rak11200": (0, ESP32_CHIP, 4), "rak3112": (9, S3_CHIP, 16)}


def esptool(port: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esptool", "--port", port, *args],
                          capture_output=True, text=True, timeout=timeout)


def new_app(name: str, version: str = "1.1.0", size: int = 96 * 1024, seed: int = 0) -> bytes:
    chip, _, mb = CHIPS[name]
    return esp_firmware.app_image(chip, version, size, project=f"{name}-sample", flash_mb=mb, seed=seed)


@pytest.fixture
def held(virtual):
    """A virtual ESP module whose GPIO0 a person holds low: it starts in the ROM's download mode
    (on a pty esptool's RTS/DTR reset can't reach it, and says so)."""
    def make(name: str, **kw):
        kw.setdefault("boot_pin", True)
        return virtual(name, **kw)
    return make


@pytest.mark.parametrize("name", ["rak11200", "rak3112"])
def test_esptool_chip_id(held, name):
    dev = held(name)
    proc = esptool(dev.port, "chip-id")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Chip type:          {CHIPS[name][1]}" in proc.stdout
    assert f"MAC:                {dev.chip.mac.hex(':')}" in proc.stdout
    assert "Stub flasher running." in proc.stdout and dev.stub_runs == 1
    assert dev.mode == Mode.ROM          # esptool's hard reset can't reach it on a pty either


@pytest.mark.parametrize("name", ["rak11200", "rak3112"])
def test_esptool_writes_verifies_and_reads_back(held, name, tmp_path):
    dev = held(name)
    app = new_app(name)
    (tmp_path / "app.bin").write_bytes(app)
    proc = esptool(dev.port, "-b", "921600", "write-flash", "0x10000", str(tmp_path / "app.bin"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Hash of data verified." in proc.stdout
    assert dev.flash.read(0x10000, len(app)) == app and dev.app_version == "1.1.0"
    # The stub still runs at 921600: a reset (GPIO0 still held) brings the ROM back for the next.
    dev.press_reset()
    proc = esptool(dev.port, "verify-flash", "0x10000", str(tmp_path / "app.bin"))
    assert proc.returncode == 0 and "Verification successful (digest matched)." in proc.stdout, proc.stdout
    # The stub answers SYNC with value 0: the next esptool finds it running and uploads nothing.
    proc = esptool(dev.port, "read-flash", "0x10000", str(len(app)), str(tmp_path / "back.bin"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Stub flasher is already running" in proc.stdout
    assert (tmp_path / "back.bin").read_bytes() == app
    other = new_app(name, seed=1)
    (tmp_path / "other.bin").write_bytes(other)
    proc = esptool(dev.port, "verify-flash", "0x10000", str(tmp_path / "other.bin"))
    assert proc.returncode != 0 and "Verification failed" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["rak11200", "rak3112"])
def test_esptool_through_the_rom_alone(held, name, tmp_path):
    """--no-stub: the ROM erases the region at FLASH_BEGIN, takes uncompressed blocks, answers
    MD5 in hex and reads 64 bytes a command."""
    dev = held(name)
    app = new_app(name, size=24 * 1024)
    (tmp_path / "app.bin").write_bytes(app)
    proc = esptool(dev.port, "--no-stub", "write-flash", "0x10000", str(tmp_path / "app.bin"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Took" in proc.stdout and "Hash of data verified." in proc.stdout
    assert dev.flash.read(0x10000, len(app)) == app and dev.stub_runs == 0
    proc = esptool(dev.port, "--no-stub", "read-flash", "0x10000", "0x400", str(tmp_path / "back.bin"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "back.bin").read_bytes() == app[:0x400]


@pytest.mark.parametrize("name", ["rak11200", "rak3112"])
def test_a_merged_binary_written_by_esptool_boots(held, name, tmp_path):
    dev = held(name)
    chip = CHIPS[name][0]
    merged = esp_firmware.merged(chip, new_app(name, "2.0.0"))
    (tmp_path / "merged.bin").write_bytes(merged)
    proc = esptool(dev.port, "-b", "921600", "write-flash", "0x0", str(tmp_path / "merged.bin"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The person lets go of GPIO0 and presses reset: the ROM starts the flash, the app runs.
    dev.set_boot_pin(False)
    dev.press_reset()
    assert dev.wait_mode("app") and dev.app_version == "2.0.0"


def test_the_rom_refuses_an_erased_flash_boot(virtual):
    """A RAK3112 leaves the factory with no firmware: its ROM finds no bootloader and says so."""
    dev = virtual("rak3112", state="erased")
    with serial.serial_for_url(dev.port, 115200, timeout=0.5) as s:
        dev.press_reset()
        seen = s.read(400)
    assert b"invalid header: 0xffffffff" in seen and dev.app_version is None


def test_the_app_tells_its_version_in_its_boot_log(virtual):
    dev = virtual("rak11200")
    with serial.serial_for_url(dev.port, 115200, timeout=1.0) as s:
        dev.press_reset()
        seen = b""
        end = time.monotonic() + 3
        while b"app_main" not in seen and time.monotonic() < end:
            seen += s.read(256)
    assert b"boot:0x13 (SPI_FAST_FLASH_BOOT)" in seen
    assert b"App version:      1.0.0" in seen and b"Project name:     rak11200-sample" in seen


@pytest.mark.parametrize("name", ["rak11200", "rak3112"])
def test_synthetic_images_are_what_esptool_reads(name, tmp_path):
    chip = CHIPS[name][0]
    (tmp_path / "app.bin").write_bytes(new_app(name))
    (tmp_path / "boot.bin").write_bytes(esp_firmware.bootloader_image(chip))
    app = subprocess.run([sys.executable, "-m", "esptool", "image-info", str(tmp_path / "app.bin")],
                         capture_output=True, text=True)
    assert app.returncode == 0, app.stderr
    assert "(valid)" in app.stdout and "invalid" not in app.stdout
    assert "App version: 1.1.0" in app.stdout and f"Project name: {name}-sample" in app.stdout
    boot = subprocess.run([sys.executable, "-m", "esptool", "image-info", str(tmp_path / "boot.bin")],
                          capture_output=True, text=True)
    assert boot.returncode == 0 and "Bootloader Information" in boot.stdout, boot.stderr


# ------------------------------------------------------------------ esptool's own resets (RFC 2217)

@pytest.mark.parametrize("name, before", [("rak11200", "default-reset"), ("rak3112", "usb-reset")])
def test_esptool_resets_it_into_download_mode_and_back(virtual, name, before, tmp_path):
    """Over RFC 2217 the host's RTS/DTR reach the chip: esptool's classic reset (the RAK11200
    behind an adapter with the auto-reset circuit) or its USB Serial/JTAG reset (the RAK3112)
    starts the ROM's download mode, and its hard reset afterwards starts the new app."""
    dev = virtual(name, transport="tcp", auto_reset=name == "rak11200")
    assert dev.wait_mode("app")
    app = new_app(name, size=16 * 1024)
    (tmp_path / "app.bin").write_bytes(app)
    seen = []
    dev.mode_listeners.append(seen.append)
    proc = esptool(dev.port, "--before", before, "-b", "921600", "write-flash", "0x10000",
                   str(tmp_path / "app.bin"), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert Mode.ROM in seen and dev.wait_mode("app")
    assert dev.app_version == "1.1.0" and dev.flash.read(0x10000, len(app)) == app


def test_a_rak11200_without_a_reset_circuit_needs_boot0(virtual):
    """As RAK documents it: RTS/DTR reach neither EN nor GPIO0, the app keeps running and esptool
    reads its boot log's mode — until a person holds BOOT0 low and presses reset."""
    dev = virtual("rak11200", transport="tcp")
    assert dev.wait_mode("app")
    proc = esptool(dev.port, "--connect-attempts", "1", "chip-id", timeout=120)
    assert proc.returncode != 0 and dev.mode == Mode.APP
    dev.set_boot_pin(True)
    dev.press_reset()
    assert dev.wait_mode("rom")
    proc = esptool(dev.port, "--before", "no-reset", "chip-id", timeout=120)
    assert proc.returncode == 0 and ESP32_CHIP in proc.stdout, proc.stdout + proc.stderr


def test_the_reset_button_clears_the_s3s_usb_download_latch(virtual):
    """esptool's usb-reset leaves the S3 in download mode with its latch set (RTC_CNTL_OPTION1);
    a core reset keeps it (the ROM again), the reset button's chip reset clears it (the app)."""
    dev = virtual("rak3112", transport="tcp")
    assert dev.wait_mode("app")
    proc = esptool(dev.port, "--before", "usb-reset", "--after", "no-reset", "chip-id", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dev.mode == Mode.ROM and dev.chip.regs[dev.chip.OPTION1] & 1
    with serial.serial_for_url(dev.port, 115200, timeout=0.5) as port:   # RTS pulse: the peripheral's reset
        port.dtr = False
        port.rts = True
        time.sleep(0.1)
        port.rts = False
        time.sleep(0.5)
        assert dev.mode == Mode.ROM
    dev.press_reset()
    assert dev.wait_mode("app") and not dev.chip.regs[dev.chip.OPTION1] & 1
