"""Planning refuses, before anything is written, every update that can't work."""

from __future__ import annotations

import pytest

from rakflash import images
from rakflash.errors import AlreadyUpToDate, BootloaderTooOld, ImageTooLarge, TouchesBootloader, WrongTarget
from rakflash.flows.identify import DeviceInfo
from rakflash.flows.planning import make_plan, minimum_transfer_seconds
from rakflash.sim import firmware


def device(cat, key="rak3172", mode="app", app="RUI_4.0.5_RAK3172-E", boot="RUI_BOOT_0.8_STM32WLE5CC"):
    return DeviceInfo("/dev/null", 115200, mode, "rui3", module=cat.module(key), app_version=app,
                      bootloader_version=boot)


def write(tmp_path, name, data):
    p = tmp_path / name
    (p.write_text if isinstance(data, str) else p.write_bytes)(data)
    return images.load(p)


def test_app_bin_plan(cat, tmp_path):
    m = cat.module("rak3172")
    img = write(tmp_path, "app.bin", firmware.app_image(m, "RUI_4.0.6_RAK3172-E", 5000))
    plan = make_plan(img, device(cat))
    assert plan.address == 0x08006000 and len(plan.payload) == 5000
    assert plan.app_version == "RUI_4.0.6_RAK3172-E"
    assert not plan.notes


def test_combined_hex_sends_only_the_application(cat, tmp_path):
    m = cat.module("rak3172")
    img = write(tmp_path, "full.hex", firmware.combined_hex(m, "RUI_BOOT_0.8_STM32WLE5CC", "RUI_4.0.6_RAK3172-E", 9000))
    plan = make_plan(img, device(cat))
    assert len(plan.payload) == 9000
    assert plan.payload[:8] == firmware.app_image(m, "RUI_4.0.6_RAK3172-E", 9000)[:8]
    assert any("only its application part" in n for n in plan.notes)


def test_bootloader_only_image_is_refused(cat, tmp_path):
    m = cat.module("rak3172")
    img = write(tmp_path, "boot.hex", firmware.to_hex(firmware.bootloader_image(m, "RUI_BOOT_0.9_STM32WLE5CC")))
    with pytest.raises(TouchesBootloader):
        make_plan(img, device(cat))


def test_too_large_is_refused_with_numbers(cat, tmp_path):
    m = cat.module("rak3172")
    img = write(tmp_path, "big.bin", firmware.app_image(m, "RUI_4.0.6_RAK3172-E", 200704 + 1024))
    with pytest.raises(ImageTooLarge, match="200,704"):
        make_plan(img, device(cat))


def test_image_for_another_module_is_refused(cat, tmp_path):
    img = write(tmp_path, "rak811.bin", firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 5000))
    with pytest.raises(WrongTarget, match="STM32L151"):
        make_plan(img, device(cat))


def test_same_version_is_skipped_unless_forced(cat, tmp_path):
    m = cat.module("rak3172")
    img = write(tmp_path, "same.bin", firmware.app_image(m, "RUI_4.0.5_RAK3172-E", 5000))
    with pytest.raises(AlreadyUpToDate):
        make_plan(img, device(cat))
    assert make_plan(img, device(cat), force=True).payload


def test_rak811_rule_needs_bootloader_305(cat, tmp_path):
    m = cat.module("rak811")
    img = write(tmp_path, "rak811.bin", firmware.app_image(m, "V3.0.0.14.H", 100 * 1024))
    dev = DeviceInfo("/dev/null", 115200, "bootloader", "rui-boot", module=m, bootloader_version="V3.0.2")
    with pytest.raises(BootloaderTooOld) as e:
        make_plan(img, dev)
    assert "3.0.5" in e.value.message
    assert "pyocd flash -t stm32l151cbux -e sector -O keep_unwritten=true FULL.hex" in e.value.hint
    assert "rakflash recover FULL.hex --port /dev/null --module rak811" in e.value.hint   # the port it is on
    dev.bootloader_version = "V3.0.5"
    assert make_plan(img, dev).app_version == "V3.0.0.14.H"
    older = write(tmp_path, "old.bin", firmware.app_image(m, "V3.0.0.13.H", 50 * 1024))
    dev.bootloader_version = "V3.0.2"
    assert make_plan(older, dev).payload


def test_minimum_time_counts_line_rate_and_flash(cat):
    m = cat.module("rak3172")
    t = minimum_transfer_seconds(m, 190 * 1024, 115200, 0.001)
    line = 190 * 1029 * 10 / 115200
    assert line < t < line + 5


def test_module_without_a_serial_update_is_refused_before_anything_is_sent(cat, tmp_path, monkeypatch):
    """A module whose protocol has no transfer in rakflash is refused, naming the SWD command."""
    from rakflash.errors import UnsupportedUpdate
    from rakflash.flows import transfers
    from rakflash.flows.identify import DeviceInfo
    monkeypatch.delitem(transfers.TRANSFERS, "nordic-dfu")
    m = cat.module("rak4631-r")
    img = write(tmp_path, "app.bin", firmware.app_image(m, "RUI_4.0.6_RAK4631", 9000))
    device = DeviceInfo("/dev/ttyACM0", 115200, "app", "rui3", module=m, app_version="RUI_4.0.5_RAK4631")
    with pytest.raises(UnsupportedUpdate) as e:
        make_plan(img, device)
    assert e.value.exit_code == 6 and "pyocd flash -t nrf52840 -e sector -O keep_unwritten=true FULL.hex" in e.value.hint


def test_a_plain_image_for_a_secure_dfu_module_is_refused_with_how_to_make_a_package(cat, tmp_path):
    """RAK4631-R's bootloader takes only signed packages: a .bin is refused before anything is sent."""
    from rakflash.errors import PackageMismatch
    from rakflash.flows.identify import DeviceInfo
    m = cat.module("rak4631-r")
    img = write(tmp_path, "app.bin", firmware.app_image(m, "RUI_4.0.6_RAK4631", 9000))
    device = DeviceInfo("/dev/ttyACM0", 115200, "app", "rui3", module=m, app_version="RUI_4.0.5_RAK4631")
    with pytest.raises(PackageMismatch) as e:
        make_plan(img, device)
    assert e.value.exit_code == 6 and "signed DFU packages" in e.value.message
    assert "nrfutil pkg generate --hw-version 52" in e.value.hint
