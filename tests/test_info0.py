"""Apollo3 INFO0: decoding a dump, what its values mean, building and comparing."""

from __future__ import annotations

import struct

import pytest

from rakflash import apollo3_info0 as info0
from rakflash.errors import ImageFormatError

SIG = (0x48EAAD88, 0xC9705737, 0x0A6B8458, 0xE41A9D74)


def dump(**words: int) -> bytes:
    """An INFO0 dump as create_info0.py writes one (erased, the signature, the words given
    by offset name) — written here by hand, so decoding is tested against the layout itself."""
    raw = bytearray(b"\xff" * 8192)
    struct.pack_into("<4I", raw, 0, *SIG)
    offsets = {"security": 0x10, "override": 0x20, "wired": 0x24, "u0": 0x28, "u1": 0x2C,
               "main": 0xC00, "ota": 0xC10, "wp_l": 0x1F8, "wp_h": 0x1FC}
    for name, value in words.items():
        struct.pack_into("<I", raw, offsets[name], value)
    return bytes(raw)


# SparkFun Artemis's published INFO0 (SparkFun_Artemis Bootloader/readme.md):
# --gpio 0x2f --gpiolvl 1 --u0 0x1C200c0 --u1 0xFFFF3031 --wTO 2500 --main 0xC000
ARTEMIS = dict(security=0x000257FF, override=0x80 | 47, wired=(2500 << 16) | (0x20 << 9) | (4 << 3) | 1,
               u0=0x1C200C0, u1=0xFFFF3031, main=0xC000)


def test_decodes_a_published_info0():
    i = info0.Info0.parse(dump(**ARTEMIS))
    assert i.signature == "valid"
    assert (i.override_gpio, i.override_high) == (47, True)
    assert (i.uart_baud, i.uart_framing, i.uart_pads[:2]) == (115200, "8N1", (0x31, 0x30))
    assert (i.wired_timeout_ms, i.wired_interfaces) == (2500, 1)
    assert i.main_ptr == 0xC000 and i.secure_boot == "off" and i.debugger_allowed
    shown = dict((k, v) for k, _, v in i.fields())
    assert shown["override"] == "GPIO47, acts when high"
    assert shown["uart"] == "UART0, 115200 baud 8N1, pads 49, 48"
    assert shown["wired_timeout_ms"] == "2500 ms" and shown["main_ptr"] == "0xc000"


def test_artemis_info0_on_a_rak11720_names_the_wrong_pin():
    """BOOT on the RAK11720 is GPIO41: an INFO0 that wants GPIO47 makes BOOT do nothing."""
    found = info0.Info0.parse(dump(**ARTEMIS)).findings()
    blocks = [f for f in found if f.level == "blocks"]
    assert [f.stops for f in blocks] == ["wired-update"]
    assert "GPIO47, not the BOOT pin (GPIO41)" in blocks[0].message


def test_the_simulators_default_is_reachable_with_boot_high():
    i = info0.rak11720_default()
    assert i.findings() == [] and i.wired_update_reachable()
    assert not i.wired_update_reachable(pin_high=False)


@pytest.mark.parametrize("words, stops, says", [
    (dict(override=0x7F), "wired-update", "override pin is disabled"),
    (dict(override=41), "wired-update", "acts when low"),
    (dict(override=0x80 | 41, wired=(20000 << 16) | 2), "wired-update", "UART interface is off"),
    (dict(override=0x80 | 41, wired=(20000 << 16) | 1, u0=0xFFFFFFFF), "wired-update", "not configured"),
    (dict(override=0x80 | 41, security=0x000257FE), "swd", "debugger is locked"),
    (dict(override=0x80 | 41, security=0x010257FF), "wired-update", "authenticated"),
    (dict(override=0x80 | 41, main=0x10000), "rui-bootloader", "not at RUI's bootloader"),
    (dict(override=0x80 | 41, wp_l=0xFFFFFFFF & ~(1 << 5)), "rui-bootloader", "0x14000-0x18000"),
])
def test_values_that_stop_something_are_named(words, stops, says):
    base = dict(security=0x000257FF, override=0x80 | 41, wired=(20000 << 16) | 1, u0=0x1C200C0,
                u1=0xFFFF2728, main=0xC000)
    i = info0.Info0.parse(dump(**{**base, **words}))
    hits = [f for f in i.findings() if f.stops == stops and f.level == "blocks"]
    assert hits and says in hits[0].message, [f.message for f in i.findings()]


def test_another_baud_rate_is_a_warning_that_says_what_to_pass():
    i = info0.rak11720_default().replace(uart_baud=921600)
    (w,) = i.findings()
    assert w.level == "warning" and "--baud 921600" in w.message


def test_an_unprogrammed_info0_says_the_sbl_ignores_it():
    raw = bytearray(b"\xff" * 8192)
    i = info0.Info0.parse(bytes(raw))
    assert i.signature == "invalid" and i.fields() == [("signature", "signature", "invalid")]
    assert i.findings()[0].stops == "wired-update" and "ignores every other" in i.findings()[0].message


@pytest.mark.parametrize("size, says", [(8193, "8,192 bytes"), (100, "too short"), (0xC16, "too short")])
def test_wrong_sized_files_are_refused(size, says):
    with pytest.raises(ImageFormatError, match=says):
        info0.Info0.parse(b"\xff" * size)


def test_a_short_dump_covering_the_configuration_is_padded():
    i = info0.Info0.parse(dump(**ARTEMIS)[:0xC20])
    assert len(i.raw) == 8192 and i.override_gpio == 47


def test_build_matches_the_hand_made_layout():
    built = info0.Info0.build(override_gpio=47, override_high=True, wired_timeout_ms=2500,
                              uart_pads=(0x31, 0x30))
    hand = info0.Info0.parse(dump(**ARTEMIS))
    for off in (0, 4, 8, 12, 0x10, 0x20, 0x24, 0x28, 0x2C, 0xC00):
        assert built.word(off) == hand.word(off), hex(off)


def test_diff_lists_changed_fields_and_other_words():
    old = info0.rak11720_default()
    new = old.replace(override_gpio=0x7F, wired_timeout_ms=500)
    raw = bytearray(new.raw)
    raw[0x1800:0x1804] = b"\x01\x02\x03\x04"                  # a key word
    changes = {c.key: c for c in info0.diff(old, info0.Info0(bytes(raw)))}
    assert changes["override"].before == "GPIO41, acts when high" and changes["override"].after == "disabled"
    assert changes["wired_timeout_ms"].after == "500 ms"
    assert "0x1800" in changes["other"].after
    assert info0.diff(old, old) == []


# ------------------------------------------------------------------ `rakflash info0 show`

def test_info0_show_decodes_a_dump(tmp_path):
    from conftest import cli_json, run_cli
    p = tmp_path / "artemis_info0.bin"
    p.write_bytes(dump(**ARTEMIS))
    proc = run_cli("info0", "show", str(p))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(ln.split() == ["override", "pin", "GPIO47,", "acts", "when", "high"] for ln in lines)
    assert any("wired UART" in ln and "115200 baud 8N1" in ln for ln in lines)
    assert any(ln.startswith("stops the wired update:") and "not the BOOT pin (GPIO41)" in ln for ln in lines)
    code, out = cli_json("info0", "show", str(p))
    assert code == 0 and out["source"] == str(p)
    assert (out["info0"]["override_gpio"], out["info0"]["override_level"]) == (47, "high")
    assert out["findings"][0]["stops"] == "wired-update"


def test_info0_show_says_when_nothing_stands_in_the_way(tmp_path):
    from conftest import run_cli
    p = tmp_path / "ok.bin"
    p.write_bytes(info0.rak11720_default().raw)
    proc = run_cli("info0", "show", str(p))
    assert proc.returncode == 0 and "nothing here stops the wired update, RUI's bootloader or SWD" in proc.stdout


def test_info0_show_of_a_missing_or_foreign_file(tmp_path):
    from conftest import cli_json
    code, out = cli_json("info0", "show", str(tmp_path / "nope.bin"))
    assert (code, out["error"]) == (3, "image-not-found")
    (tmp_path / "small.bin").write_bytes(b"\x00" * 64)
    code, out = cli_json("info0", "show", str(tmp_path / "small.bin"))
    assert (code, out["error"]) == (3, "image-format") and "too short" in out["message"]


def test_info0_show_without_a_file_needs_a_probe():
    from conftest import cli_json
    code, out = cli_json("info0", "show")
    if code == 0:
        pytest.skip("a probe is attached to this machine")
    assert (code, out["error"]) == (4, "probe-not-found")


@pytest.mark.parametrize("command", ["show", "write"])
@pytest.mark.parametrize("what", ["a FIFO", "/dev/zero"])
def test_info0_of_a_fifo_or_a_device_is_refused_before_it_is_read(tmp_path, command, what):
    """A FIFO hung `info0 show` and `info0 write`; /dev/zero was "8,193 bytes". Both are refused
    as firmware files are: not a regular file, before a byte is read."""
    import os

    from conftest import cli_json
    path = "/dev/zero"
    if what == "a FIFO":
        path = str(tmp_path / "info0.fifo")
        os.mkfifo(path)
    code, out = cli_json("info0", command, path, timeout=20)
    assert (code, out["error"]) == (3, "image-not-a-file"), out
    kind = "a FIFO" if what == "a FIFO" else "a character device"
    assert f"is not a regular file ({kind})" in out["message"] and "INFO0 dump" in out["hint"]


def test_info0_show_of_a_file_refuses_save_instead_of_ignoring_it(tmp_path):
    """`info0 show FILE --save F` decoded FILE and never wrote F, without a word."""
    from conftest import cli_json
    p = tmp_path / "info0.bin"
    p.write_bytes(dump(**ARTEMIS))
    saved = tmp_path / "saved.bin"
    code, out = cli_json("info0", "show", str(p), "--save", str(saved))
    assert (code, out["error"]) == (2, "usage") and "--save" in out["message"] and out["hint"]
    assert not saved.exists()


@pytest.mark.parametrize("where", ["/dev/full", "a FIFO nobody reads"])
def test_info0_show_save_to_a_path_that_cannot_take_it_is_refused_before_the_probe(tmp_path, where):
    import os

    from conftest import cli_json
    path = "/dev/full"
    if where.startswith("a FIFO"):
        path = str(tmp_path / "save.fifo")
        os.mkfifo(path)
    code, out = cli_json("info0", "show", "--save", path, timeout=20)
    assert (code, out["error"]) == (2, "usage"), out
    assert ("No space left" if path == "/dev/full" else "FIFO and nothing reads it") in out["message"]
