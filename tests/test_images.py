"""Image loading and inspection: what `rakflash inspect` tells a person about a file."""

from __future__ import annotations

import intelhex
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import cli_json, run_cli
from rakflash import images
from rakflash.errors import ImageEmpty, ImageFormatError, ImageNotFound, ImageTargetError
from rakflash.sim import firmware


@pytest.fixture
def rak3172(cat):
    return cat.module("rak3172")


@pytest.fixture
def combined_hex(tmp_path, rak3172):
    p = tmp_path / "rak3172_full.hex"
    p.write_text(firmware.combined_hex(rak3172, "RUI_BOOT_0.8_STM32WLE5CC", "RUI_4.0.6_RAK3172-E"))
    return p


def test_combined_hex_is_described_region_by_region(combined_hex, rak3172):
    info = images.analyse(images.load(combined_hex))
    assert info.module.key == "rak3172"
    assert info.mcu.name == "STM32WLE5CC"
    names = [r.name for r in info.regions]
    assert names == ["bootloader", "flag", "bootloader-version", "application"]
    assert info.bootloader_version == "RUI_BOOT_0.8_STM32WLE5CC"
    assert info.app_version == "RUI_4.0.6_RAK3172-E"
    assert info.includes_bootloader and info.includes_app
    assert info.image.low == 0x08000000


def test_bin_takes_catalog_app_base_and_says_so(tmp_path, rak3172):
    p = tmp_path / "app.bin"
    p.write_bytes(firmware.app_image(rak3172, "RUI_4.0.6_RAK3172-E", 20000))
    img = images.load(p)
    assert (img.low, img.base_source) == (0x08006000, "catalog")
    info = images.analyse(img)
    assert info.module.key == "rak3172" and info.app_version == "RUI_4.0.6_RAK3172-E"
    assert [r.name for r in info.regions] == ["application"]


def test_bin_with_explicit_address(tmp_path, rak3172):
    p = tmp_path / "app.bin"
    p.write_bytes(firmware.app_image(rak3172, "RUI_4.0.6_RAK3172-E", 4096))
    img = images.load(p, address=0x08010000)
    assert (img.low, img.base_source) == (0x08010000, "--address")


def test_rak811_image_is_told_apart_from_rak3172(tmp_path, cat):
    p = tmp_path / "rak811.bin"
    p.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 30000))
    info = images.analyse(images.load(p))
    assert info.module.key in ("rak811",)
    assert info.image.low == 0x08003000
    assert info.app_version == "V3.0.0.14.H"


def test_image_for_another_mcu_is_refused_when_module_named(tmp_path, cat):
    p = tmp_path / "rak811.bin"
    p.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 30000))
    with pytest.raises(ImageTargetError, match="STM32L151"):
        images.analyse(images.load(p), module=cat.module("rak3172"))
    code, out = cli_json("inspect", str(p), "--module", "rak3172")
    assert code == 3 and out["error"] == "image-target"


def test_extended_segment_address_and_start_records(tmp_path):
    # Records built by hand: type 02 (segment 0x1000 → base 0x10000), data, type 03 start.
    def rec(addr, typ, data):
        body = bytes([len(data), addr >> 8, addr & 0xFF, typ]) + data
        return ":" + (body + bytes([(-sum(body)) & 0xFF])).hex().upper()
    text = "\n".join([rec(0, 2, b"\x10\x00"), rec(0x10, 0, b"\x01\x02\x03\x04"),
                      rec(0, 3, b"\x12\x34\x00\x10"), ":00000001FF"]) + "\n"
    p = tmp_path / "seg.hex"
    p.write_text(text)
    img = images.load(p)
    assert [(s.start, s.data) for s in img.segments] == [(0x10010, b"\x01\x02\x03\x04")]
    assert img.start_address == (0x1234 << 4) + 0x0010


@pytest.mark.parametrize("content, error, words", [
    (b"", ImageEmpty, "empty"),
    (b":0400000001020304F3\n:00000001FF\n", ImageFormatError, "checksum"),
    (b":0400000001020304F2\n", ImageFormatError, "truncated"),
    (b":0400000001020304F2\n:000000", ImageFormatError, "truncated"),
    (b":hello world\n", ImageFormatError, "invalid record"),
])
def test_bad_files_get_clear_errors(tmp_path, content, error, words):
    p = tmp_path / "bad.hex"
    p.write_bytes(content)
    with pytest.raises(error, match=words):
        images.load(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageNotFound, match="no such file"):
        images.load(tmp_path / "nope.hex")
    with pytest.raises(ImageNotFound, match="folder"):
        images.load(tmp_path)


@pytest.mark.parametrize("make, code, name", [
    (lambda d: d / "missing.bin", 3, "image-not-found"),
    (lambda d: d, 3, "image-not-found"),
    (lambda d: (d / "empty.bin").write_bytes(b"") and d / "empty.bin" or d / "empty.bin", 3, "image-empty"),
    (lambda d: (d / "bad.hex").write_text(":0400000001020304F3\n:00000001FF\n") and d / "bad.hex", 3, "image-format"),
    (lambda d: (d / "text.hex").write_text("this is not a hex file\n") and d / "text.hex", 3, "image-format"),
])
def test_cli_inspect_bad_input_exit_codes(tmp_path, make, code, name):
    path = make(tmp_path)
    rc, out = cli_json("inspect", str(path))
    assert (rc, out["error"]) == (code, name)
    proc = run_cli("inspect", str(path))
    assert proc.returncode == code
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "hint: " in proc.stderr


def test_cli_inspect_json_for_combined_image(combined_hex):
    rc, out = cli_json("inspect", str(combined_hex))
    assert rc == 0
    assert out["format"] == "hex" and out["module"] == "RAK3172"
    assert out["app_version"] == "RUI_4.0.6_RAK3172-E"
    assert out["bootloader_version"] == "RUI_BOOT_0.8_STM32WLE5CC"
    assert {r["name"] for r in out["regions"]} == {"bootloader", "flag", "bootloader-version", "application"}
    assert len(out["sha256"]) == 64


def test_cli_inspect_text_names_base_source(tmp_path, rak3172):
    p = tmp_path / "app.bin"
    p.write_bytes(firmware.app_image(rak3172, "RUI_4.0.6_RAK3172-E", 8192))
    proc = run_cli("inspect", str(p))
    assert proc.returncode == 0, proc.stderr
    assert "0x08006000" in proc.stdout and "application base" in proc.stdout
    assert "RUI_4.0.6_RAK3172-E" in proc.stdout


# ------------------------------------------------------------------ property tests

segments = st.dictionaries(
    st.integers(0, 0x0FFF_0000).map(lambda a: a & ~0xF),
    st.binary(min_size=1, max_size=300), min_size=1, max_size=5)


@settings(max_examples=60, deadline=None)
@given(segments)
def test_hex_round_trip(tmp_path_factory, segs):
    ih = intelhex.IntelHex()
    for addr, data in segs.items():
        for i, b in enumerate(data):
            ih[addr + i] = b
    p = tmp_path_factory.mktemp("hx") / "x.hex"
    firmware_text = firmware.to_hex({a: bytes(ih.tobinarray(start=a, size=len(d))) for a, d in segs.items()})
    p.write_text(firmware_text)
    img = images.load(p)
    for addr in range(ih.minaddr(), ih.maxaddr() + 1, 37):
        if addr in ih.addresses():
            assert img.read(addr, 1) == bytes([ih[addr]])
    assert img.size == len(ih)


@settings(max_examples=80, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 199), st.integers(1, 255))
def test_any_corrupted_data_byte_is_caught(tmp_path_factory, data, pos, delta):
    text = firmware.to_hex({0x1000: data})
    lines = text.splitlines()
    # Corrupt one hex digit pair inside the first data record's payload.
    first = lines[1] if lines[0][7:9] == "04" else lines[0]
    idx = lines.index(first)
    n = int(first[1:3], 16)
    k = 9 + 2 * (pos % n)
    old = int(first[k:k + 2], 16)
    lines[idx] = first[:k] + f"{(old + delta) & 0xFF:02X}" + first[k + 2:]
    p = tmp_path_factory.mktemp("hx") / "bad.hex"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImageFormatError):
        images.load(p)


def test_ports_name_what_a_usb_id_probably_is(monkeypatch):
    from conftest import fake_usb_port
    from rakflash import ports

    monkeypatch.setattr(ports.list_ports, "comports", lambda: [
        fake_usb_port("/dev/ttyACM0", 0x1915, 0x521F, "RAK4631"),
        fake_usb_port("/dev/ttyUSB0", 0x1A86, 0x7523, "USB Serial"),
        fake_usb_port("/dev/ttyS0", None, None, "n/a")])
    entries = {e.device: e.to_dict() for e in ports.list_serial_ports()}
    assert "RAK4631-R" in entries["/dev/ttyACM0"]["probably"]
    assert entries["/dev/ttyACM0"]["vid_pid"] == "1915:521F"
    assert "RAK3172" in entries["/dev/ttyUSB0"]["probably"]
    assert entries["/dev/ttyS0"]["probably"] is None and entries["/dev/ttyS0"]["vid_pid"] is None
