"""``rakflash keys show|backup|restore``: the owner's keys read (over AT, or through the STM32 ROM
bootloader of a module whose application may be gone), kept in a private file, written back —
and never into another module's flash by mistake. Every test runs the command line against
virtual modules through real ptys."""

from __future__ import annotations

import json
import os
import stat

from conftest import FAST_BAUD, cli_json, run_as_a_person, run_cli
from rakflash.sim import Mode
from test_flash import at_exchange

KEYS = {"DEVEUI": "AC1F09FFFE0A0B0C", "APPEUI": "70B3D57ED0001234",
        "APPKEY": "2B7E151628AED2A6ABF7158809CF4F3C", "BAND": "5", "CLASS": "C", "NJM": "1"}
OTHER = {"DEVEUI": "0011223344556677", "APPEUI": "0000000000000001",
         "APPKEY": "000102030405060708090A0B0C0D0E0F", "BAND": "4", "CLASS": "A", "NJM": "0"}


def set_keys(dev, keys) -> None:
    for name, value in keys.items():
        assert at_exchange(dev.port, f"AT+{name}={value}")[-1] == "OK", name


def keys_on(dev, names=KEYS) -> dict[str, str]:
    return {n: at_exchange(dev.port, f"AT+{n}=?")[0].split("=", 1)[1] for n in names}


def keys(*args: str, timeout: float = 60):
    return cli_json("keys", *args, "--baud", str(FAST_BAUD), timeout=timeout)


def test_backup_and_restore_round_trip_over_at(virtual, tmp_path):
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    path = tmp_path / "keys.json"
    code, out = keys("backup", str(path), "--port", dev.port)
    assert (code, out["result"]) == (0, "ok"), out
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert KEYS["APPKEY"] not in json.dumps(out)                      # names only on the line
    saved = json.loads(path.read_text())
    assert (saved["module"], saved["serial_number"], saved["dev_eui"], saved["read_via"]) == \
        ("rak3172", dev.opts.serial_number, KEYS["DEVEUI"], "at")
    assert saved["read_at"] and {k: saved["settings"][k] for k in KEYS} == KEYS
    set_keys(dev, {**OTHER, "DEVEUI": KEYS["DEVEUI"]})                 # the keys change (or are reset)
    code, out = keys("restore", str(path), "--port", dev.port)
    assert (code, out["result"]) == (0, "ok"), out
    assert set(out["written"]) == {"APPEUI", "APPKEY", "BAND", "CLASS", "NJM"} and out["failed"] == []
    assert keys_on(dev) == KEYS
    assert KEYS["APPKEY"] not in json.dumps(out)
    code, out = keys("restore", str(path), "--port", dev.port)         # again: nothing to write
    assert (code, out["written"]) == (0, [])


def test_another_modules_backup_is_refused_unless_forced(virtual, tmp_path):
    a, b = virtual("rak3172"), virtual("rak3172")
    set_keys(a, KEYS)
    set_keys(b, OTHER)
    path = tmp_path / "a.json"
    assert keys("backup", str(path), "--port", a.port)[0] == 0
    code, out = keys("restore", str(path), "--port", b.port)
    assert (code, out["error"]) == (6, "another-module"), out
    assert a.opts.serial_number in out["message"] and "--force" in out["hint"]
    assert keys_on(b) == OTHER                                          # nothing written
    code, out = keys("restore", str(path), "--port", b.port, "--force")
    assert code == 0, out
    assert keys_on(b) == KEYS


def test_show_masks_the_keys_unless_asked(virtual):
    dev = virtual("rak11720")
    set_keys(dev, KEYS)
    proc = run_cli("keys", "show", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert proc.returncode == 0, proc.stderr
    assert KEYS["DEVEUI"] in proc.stdout and "5 (US915)" in proc.stdout and "OTAA" in proc.stdout
    assert KEYS["APPKEY"] not in proc.stdout + proc.stderr and "set (hidden" in proc.stdout
    code, out = keys("show", "--port", dev.port)
    assert code == 0 and (out["app_key"], out["app_key_blank"], out["class"], out["join_mode"]) == (None, False, "C", "OTAA")
    assert KEYS["APPKEY"] not in json.dumps(out)
    code, out = keys("show", "--port", dev.port, "--show-keys")
    assert out["app_key"] == KEYS["APPKEY"] and out["keys_shown"] is True


def holds_boot0_and_resets(dev):
    """A person at the module: BOOT0 held and reset when rakflash asks."""
    def person(event):
        if event.get("event") == "prompt" and event.get("action") == "hold-boot0-and-reset":
            dev.set_boot_pin(True)
            dev.press_reset()
    return person


def test_a_backup_through_the_rom_bootloader_decodes_the_config_block(virtual, tmp_path):
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    path = tmp_path / "rom.json"
    code, events = run_as_a_person("keys", "backup", str(path), "--port", dev.port, "--baud", str(FAST_BAUD),
                                   "--via", "stm32-rom", "--module", "rak3172", "--window", "20",
                                   on_event=holds_boot0_and_resets(dev))
    out = events[-1]
    assert (code, out["result"], out["read_via"], out["layout_version"]) == (0, "ok", "stm32-rom", 4), out
    prompt = next(e for e in events if e.get("event") == "prompt")
    assert "pin 21" in prompt["message"]                               # which pins, for this module
    saved = json.loads(path.read_text())
    assert {k: saved["settings"][k] for k in KEYS} == KEYS
    assert saved["serial_number"] == dev.opts.serial_number and saved["dev_eui"] == KEYS["DEVEUI"]
    assert saved["raw"][0]["region"] == "config" and saved["raw"][0]["address"] == "0x0803F000"
    assert KEYS["APPKEY"] not in json.dumps(events)
    # Go started the firmware again; the backup restores over AT like any other
    dev.set_boot_pin(False)
    assert dev.wait_mode(Mode.APP)
    set_keys(dev, {"APPKEY": OTHER["APPKEY"]})
    code, out = keys("restore", str(path), "--port", dev.port)
    assert (code, out["written"]) == (0, ["APPKEY"]), out
    assert keys_on(dev) == KEYS


def test_a_rui_v3_module_gets_a_raw_copy_said_to_be_undecodable(virtual, tmp_path):
    dev = virtual("rak811")
    path = tmp_path / "rak811.json"
    code, events = run_as_a_person("keys", "backup", str(path), "--port", dev.port, "--baud", str(FAST_BAUD),
                                   "--via", "stm32-rom", "--module", "rak811", "--window", "20",
                                   on_event=holds_boot0_and_resets(dev))
    out = events[-1]
    assert (code, out["decoded"], out["raw_bytes"]) == (0, False, 0x1000), out
    assert any("can't be decoded" in n for n in out["notes"])
    saved = json.loads(path.read_text())
    assert saved["raw"][0]["address"] == "0x08080000" and bytes.fromhex(saved["raw"][0]["hex"]) == bytes(dev._eeprom)
    dev.set_boot_pin(False)
    assert dev.wait_mode(Mode.APP)
    code, out = keys("restore", str(path), "--port", dev.port)
    assert (code, out["error"]) == (6, "keys-not-decoded"), out
    code, out = keys("backup", str(tmp_path / "at.json"), "--port", dev.port)   # over AT: no key commands
    assert (code, out["error"]) == (6, "not-provisionable") and "--via stm32-rom" in out["hint"]


def test_read_out_protection_is_named_and_nothing_is_changed(virtual, tmp_path):
    dev = virtual("rak3172", readout_protected=True)
    code, events = run_as_a_person("keys", "show", "--port", dev.port, "--baud", str(FAST_BAUD), "--via",
                                   "stm32-rom", "--module", "rak3172", "--window", "20",
                                   on_event=holds_boot0_and_resets(dev))
    out = events[-1]
    assert (code, out["error"]) == (6, "readout-protected"), out
    assert "erases the whole chip" in out["hint"] and dev.readout_protected


def test_what_is_refused_is_refused_before_the_module_is_touched(virtual, tmp_path):
    dev = virtual("rak3172")
    there = tmp_path / "there.json"
    there.write_text("{}")
    code, out = keys("backup", str(there), "--port", dev.port)
    assert (code, out["error"]) == (2, "usage") and "exists" in out["message"]
    assert there.read_text() == "{}"
    code, out = keys("show", "--port", dev.port, "--via", "stm32-rom")
    assert (code, out["error"]) == (2, "usage") and "--module" in out["message"]
    code, out = keys("restore", str(there), "--port", dev.port)
    assert (code, out["error"]) == (2, "usage") and "not a keys backup" in out["message"]
    assert dev.resets == 0


def test_a_locked_module_is_read_with_its_password_and_locked_again(virtual, tmp_path):
    dev = virtual("rak3172", locked="k3ys")
    code, out = keys("show", "--port", dev.port)
    assert (code, out["error"]) == (5, "port-locked")
    code, out = keys("show", "--port", dev.port, "--password", "k3ys")
    assert code == 0 and out["dev_eui"] == dev.opts.dev_eui.upper() and "locked it again" in out["port_lock"]
    assert dev.locked and "k3ys" not in json.dumps(out)


def test_what_a_recovery_will_call_reads_notices_the_loss_and_writes_the_block_back(virtual, cat):
    """The pieces `recover` puts together (issue 19, phase 2): read the block before the erase,
    see the keys gone after it, write the raw block back, read it again — kept."""
    from rakflash.flows import keys as flow
    from rakflash.flows.recover.stm32_rom import rom_read
    from test_sim_config import _rom
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    m = cat.module("rak3172")
    link, client = _rom(dev)
    with link:
        def read(a, n):
            return rom_read(client, a, n)
        before = flow.read_from_memory(read, m, "stm32-rom")
        assert before.decoded and {k: before.settings[k] for k in KEYS} == KEYS
        assert before.serial_number == dev.opts.serial_number
        page = (m.region("config").start - m.mcu.flash.start) // m.mcu.page_size
        client.erase_pages([page])
        lost = flow.read_from_memory(read, m, "stm32-rom")
        assert not lost.decoded and set(flow.changed(before, lost)) >= set(KEYS)
        for address, data in flow.raw_writes(before):
            for at in range(0, len(data), 256):
                client.write_memory(address + at, data[at:at + 256])
        after = flow.read_from_memory(read, m, "stm32-rom")
        assert flow.changed(before, after) == []
        client.go(m.mcu.flash.start)
    dev.set_boot_pin(False)
    assert dev.wait_mode(Mode.APP)
    assert keys_on(dev) == KEYS
    # … and what was read goes in the kept-settings store `flash` uses, as its own values
    from rakflash.flows import settings
    settings.keep_until_checked(m, before.serial_number, before.kept_values())
    kept = settings.kept_from_earlier(m, before.serial_number, before.dev_eui)
    assert kept == {f"AT+{n}=?": KEYS[n] for n in ("DEVEUI", "APPEUI", "APPKEY", "BAND")}
