"""The owner's keys through a recovery (issue 19, phase 2): read from the chip's memory before
anything is written, shown (the keys masked), kept as a copy, read again after the write —
"kept", or written back and read back when the image or an erase overwrote them — and, where
the chip can't be read, said in the plan before anything is written.

Every run is the real recovery code against virtual modules through a real pty (the STM32 ROM,
the Apollo3 secure bootloader) or the fake pyOCD on the virtual module's own flash (SWD); the
keys are set over AT on the running firmware and checked over AT and in the simulator's flash."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from pathlib import Path

import pytest
from pyocd.core import exceptions

from conftest import FAST_BAUD, run_cli
from fake_pyocd import Failures, FakePyOCD, FakeWorld
from rakflash import catalog, images, swd_link
from rakflash.errors import ReadoutProtected, TransferFault
from rakflash.events import Keys, Note, Phase, Warning
from rakflash.flows import keys as keys_flow
from rakflash.flows.recover import plan_recovery, recover
from rakflash.link import Link
from rakflash.protocols import rui3_config as rc
from rakflash.sim import Mode, firmware
from test_flash import at_exchange
from test_keys_backup import KEYS, keys_on, set_keys
from test_recover import Person, fast, full_hex
from test_swd_cli import eeprom_of, invoke

RAK3172_BOOT, RAK3172_APP = "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.6_RAK3172-E"
CONFIG = 0x0803F000
BLOCK = rc.size(rc.PLATFORMS["stm32wle5"])


def rak3172_full(tmp_path: Path, cat, extra: dict[int, bytes] | None = None) -> Path:
    """The RAK3172's FULL.hex (bootloader + application); with ``extra``, more segments
    (bytes on the config page, as an image that covers it would carry)."""
    path = full_hex(tmp_path, cat, "rak3172", RAK3172_BOOT, RAK3172_APP)
    if not extra:
        return path
    segments = {s.start: s.data for s in images.load(path).segments}
    segments.update(extra)
    covering = tmp_path / "FULL-with-config-page.hex"
    covering.write_text(firmware.to_hex(segments))
    return covering


def run_rom(dev, path, key="rak3172", **kw):
    options = fast(**kw)
    plan = plan_recovery(images.load(path), catalog.load().module(key), options=options)
    person = Person(dev)
    with Link(dev.port, FAST_BAUD) as link:
        result = recover(link, plan, options, emit=person)
    return plan, result, person.events


def cache_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "cache" / "rakflash"
    return sorted(folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------ the STM32 ROM bootloader

def test_rom_recovery_reads_the_keys_first_and_reads_them_back_kept(virtual, cat, tmp_path):
    """A RAK3172 whose image covers only the bootloader and the application: the config block is
    read before the erase, shown with the AppKey masked, kept as a copy, read again — kept."""
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    block_before = dev.flash.read(CONFIG, BLOCK)
    plan, result, events = run_rom(dev, rak3172_full(tmp_path, cat))
    assert plan.keys.read and plan.keys.overwritten == []
    assert "0x0803F000" in plan.keys.says and "doesn't cover them" in plan.keys.says

    before, after = events.of(Keys)
    assert (before.when, after.when, after.state) == ("before", "after", "kept")
    shown = before.info
    assert (shown["dev_eui"], shown["app_eui"], shown["band"], shown["class"]) == \
        (KEYS["DEVEUI"], KEYS["APPEUI"], KEYS["BAND"], KEYS["CLASS"])
    assert shown["app_key"] is None and shown["app_key_blank"] is False       # masked, and set
    assert KEYS["APPKEY"] not in json.dumps([e.to_dict() for e in events.events])
    # read before anything was erased
    kinds = [(type(e).__name__, getattr(e, "phase", None)) for e in events.events]
    assert kinds.index(("Keys", None)) < kinds.index(("Phase", "erase"))

    assert (result.keys, result.to_dict()["settings_kept"]) == ("kept", True)
    assert "unchanged" in result.keys_reason and KEYS["DEVEUI"] in result.keys_reason
    assert dev.flash.read(CONFIG, BLOCK) == block_before
    # the copy was kept while the chip was written, and goes once the keys read back the same
    assert shown["kept_in"] and result.keys_kept_in is None and cache_files(tmp_path) == []
    assert dev.wait_mode(Mode.APP) and keys_on(dev) == KEYS


def test_a_byte_damaged_on_the_line_is_never_what_is_kept_or_written_back(virtual, cat, tmp_path):
    """Read Memory carries no checksum: one AppKey byte damaged on its way to the host, once. The
    block counts only when two reads agree, so the copy holds the chip's bytes, the check after
    the write finds them unchanged, and nothing is written back (with the damaged copy, the
    check would have 'found' a difference and written the damage into the chip)."""
    from rakflash.sim import Faults, Rewrite
    key = bytes.fromhex(KEYS["APPKEY"])
    damage = Rewrite(key[:6], key[:5] + bytes([key[5] ^ 0x10]))
    dev = virtual("rak3172", faults=Faults(rewrite_to_host=[damage]))
    set_keys(dev, KEYS)
    block_before = dev.flash.read(CONFIG, BLOCK)
    assert key in block_before                          # RUI3 keeps the AppKey as its 16 bytes
    _, result, events = run_rom(dev, rak3172_full(tmp_path, cat), show_keys=True)
    assert damage.times == 0                                       # the damage did happen
    assert events.of(Keys)[0].info["app_key"] == KEYS["APPKEY"]
    assert result.keys == "kept" and not any(e.code == "keys-overwritten" for e in events.of(Warning))
    assert dev.flash.read(CONFIG, BLOCK) == block_before


def test_show_keys_shows_the_appkey_read_before(virtual, cat, tmp_path):
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    _, result, events = run_rom(dev, rak3172_full(tmp_path, cat), show_keys=True)
    assert events.of(Keys)[0].info["app_key"] == KEYS["APPKEY"] and result.keys == "kept"


def test_an_image_that_covers_the_config_page_gets_the_block_written_back(virtual, cat, tmp_path):
    """An image with bytes on the config page: said in the plan; after the write the block reads
    differently, is written back (the image's other bytes on that page kept) and read back."""
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    block_before = dev.flash.read(CONFIG, BLOCK)
    tail = b"the image's own bytes on the config page"
    path = rak3172_full(tmp_path, cat, {CONFIG: b"\x00" * 64, CONFIG + 0x400: tail})
    plan, result, events = run_rom(dev, path)
    assert plan.keys.overwritten == ["config"] and "the image covers RUI3's config block" in plan.keys.says
    warned = [e for e in events.of(Warning) if e.code == "keys-overwritten"]
    assert warned and "the image covers it" in warned[0].message
    assert [e.phase for e in events.of(Phase)].count("settings-write") == 1
    assert (result.keys, result.to_dict()["settings_kept"]) == ("written-back", True)
    assert "read it back the same" in result.keys_reason
    # the simulator's flash: the block as it was, and the image's bytes beside it on the page
    assert dev.flash.read(CONFIG, BLOCK) == block_before
    assert dev.flash.read(CONFIG + 0x400, len(tail)) == tail
    assert dev.wait_mode(Mode.APP) and keys_on(dev) == KEYS
    assert cache_files(tmp_path) == []


AT_FIRST = "the application answers: rakflash reads the keys over AT first and writes them back over AT " \
           "once the new firmware runs"


def config_keys(dev) -> dict[str, str]:
    """The keys as the simulator's flash holds them in RUI3's config block."""
    block = rc.decode(dev.flash.read(CONFIG, BLOCK), rc.PLATFORMS["stm32wle5"])
    return {n: v for n, v in rc.at_values(block, list(KEYS)).items()}


def test_readout_protection_removal_reads_the_keys_over_at_first_and_writes_them_back(virtual, cat, tmp_path):
    """RDP level 1 blocks only the ROM's and the debugger's reads: the protected chip's RUI3
    application still runs and answers AT. So with --remove-readout-protection the keys are read
    over AT when the module is first asked what runs (before BOOT0), shown masked and kept; the
    removal erases the chip, the config block with it; once the new firmware answers they are
    written back over AT, each read back — the flash and the AT answers hold the owner's keys."""
    dev = virtual("rak3172", readout_protected=True)
    set_keys(dev, KEYS)
    asked: list[str] = []
    plan, result, events = run_rom(dev, rak3172_full(tmp_path, cat), remove_protection=True,
                                   confirm=lambda q: asked.append(q) or True)
    assert plan.keys.at_first and plan.keys.to_dict()["at_first"] is True
    assert AT_FIRST in plan.keys.says and "can't be saved" in plan.keys.says    # both cases, said before
    notes = [e.message for e in events.of(Note)]
    assert any(AT_FIRST in n for n in notes), notes                 # and which one holds, at identify

    before, after = events.of(Keys)
    assert (before.when, before.info["read_via"], before.info["dev_eui"], before.info["app_key"]) == \
        ("before", "at", KEYS["DEVEUI"], None)                      # shown, the AppKey masked
    assert before.info["kept_in"]                                   # a copy was kept while erased
    kinds = [(type(e).__name__, getattr(e, "phase", None)) for e in events.events]
    assert kinds.index(("Keys", None)) < kinds.index(("Prompt", None)) < kinds.index(("Phase", "erase"))
    assert asked and "read the keys over AT" in asked[0] and before.info["kept_in"] in asked[0]
    assert any(e.code == "protection-removed" for e in events.of(Warning))
    assert not any(e.code in ("keys-not-read", "keys-lost") for e in events.of(Warning))

    assert (after.when, after.state) == ("after", "written-back")
    assert (result.keys, result.to_dict()["settings_kept"]) == ("written-back", True)
    assert "over AT" in result.keys_reason and "erased the whole chip" in result.keys_reason
    assert KEYS["DEVEUI"] in result.keys_reason and result.keys_kept_in is None
    assert KEYS["APPKEY"] not in json.dumps([e.to_dict() for e in events.events] + [result.to_dict()])
    # the simulator: protection off, the config block in flash and the AT answers hold the keys
    assert not dev.readout_protected
    assert dev.wait_mode(Mode.APP) and keys_on(dev) == KEYS
    assert config_keys(dev) == KEYS
    assert cache_files(tmp_path) == []                             # confirmed: the copy goes


def test_readout_protection_removal_with_keys_that_wont_write_back_says_lost_and_names_the_copy(
        virtual, cat, tmp_path):
    """The write-back over AT fails (every AppKey write damaged on its way to the module, three
    times): 'lost', the copy named, and the 'keys restore' command it names puts them back."""
    from rakflash.sim import Rewrite
    dev = virtual("rak3172", readout_protected=True)
    set_keys(dev, KEYS)
    damage = Rewrite(f"AT+APPKEY={KEYS['APPKEY'][:6]}".encode(), f"AT+APPKEY=0{KEYS['APPKEY'][1:6]}".encode(),
                     times=3)
    dev.opts.faults.rewrite_to_module.append(damage)     # from now on: only a write of that AppKey matches
    _, result, events = run_rom(dev, rak3172_full(tmp_path, cat), remove_protection=True,
                                confirm=lambda q: True)
    assert damage.times == 0
    assert (result.keys, result.to_dict()["settings_kept"]) == ("lost", False)
    copy = result.keys_kept_in
    assert copy and Path(copy).exists() and stat.S_IMODE(os.stat(copy).st_mode) == 0o600
    command = f"rakflash keys restore {copy} --port {dev.port} --force"
    assert command in result.keys_reason and "APPKEY" in result.keys_reason
    lost = [e for e in events.of(Warning) if e.code == "keys-lost"]
    assert lost and command in lost[0].message
    assert events.of(Keys)[-1].state == "lost"
    assert KEYS["APPKEY"] not in json.dumps([e.to_dict() for e in events.events] + [result.to_dict()])
    assert dev.wait_mode(Mode.APP) and keys_on(dev, ["APPKEY"]) != {"APPKEY": KEYS["APPKEY"]}
    out, _ = invoke(*command.split()[1:], "--baud", str(FAST_BAUD), "--json")      # what it says to run
    assert out.exit_code == 0, out.output
    assert keys_on(dev) == KEYS and config_keys(dev) == KEYS


def test_remove_readout_protection_on_a_chip_that_is_not_protected_checks_through_the_rom(virtual, cat, tmp_path):
    """--remove-readout-protection, but the chip turns out unprotected: the keys read over AT first
    are read again through the ROM and checked there ('kept'), nothing is erased whole, nobody is
    asked a second time, and the AT copy goes with the ROM one (no copy stays behind)."""
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    asked: list[str] = []
    _, result, events = run_rom(dev, rak3172_full(tmp_path, cat), remove_protection=True,
                                confirm=lambda q: asked.append(q) or True)
    read = [(e.when, e.info["read_via"], e.state) for e in events.of(Keys)]
    assert read == [("before", "at", None), ("before", "stm32-rom", None), ("after", "stm32-rom", "kept")]
    assert asked == [] and result.keys == "kept" and "unchanged" in result.keys_reason
    assert cache_files(tmp_path) == [] and result.keys_kept_in is None
    assert dev.wait_mode(Mode.APP) and keys_on(dev) == KEYS


@pytest.mark.parametrize("key, app", [("rak3172", "flooding"), ("rak3172", "bootloader"), ("rak3172", "locked"),
                                      ("rak811", "quiet")])
def test_readout_protection_removal_without_an_answering_application_says_the_keys_cant_be_saved(
        virtual, cat, tmp_path, key, app):
    """RDP level 1 and no application that answers AT (one that floods the port, a module
    waiting in its RUI bootloader, a locked AT port: 'recover' takes no password, and says so),
    or RUI v3, whose keys rakflash can't decode: the ROM refuses
    every read, and removing the protection erases the chip. The plan says the keys can't be saved
    then (and names 'keys backup' over AT), so does the run once it knows, and the second question;
    the result says what is true: lost where they lie in the erased flash (RUI3), not read where
    they lie outside it (RUI v3's data EEPROM)."""
    state = "lost" if key == "rak3172" else "not-read"
    if key == "rak3172":
        dev = virtual(key, readout_protected=True, sketch="flooding" if app == "flooding" else "quiet",
                      flood_after=3600.0 if app == "flooding" else 0.8)
        set_keys(dev, KEYS)
        if app == "flooding":
            dev.opts.flood_after = 0.0                             # it floods from now on
        elif app == "locked":
            assert at_exchange(dev.port, "AT+LOCK")[-1] == "OK" and dev.locked
        else:
            assert at_exchange(dev.port, "AT+BOOT") and dev.wait_mode(Mode.BOOTLOADER)
        path = rak3172_full(tmp_path, cat)
    else:
        dev = virtual(key, readout_protected=True)
        path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    asked: list[str] = []
    plan, result, events = run_rom(dev, path, key, remove_protection=True,
                                   confirm=lambda q: asked.append(q) or True)
    says = plan.keys.says
    assert "can't be saved" in says and "rakflash keys backup" in says
    assert plan.keys.at_first is (key == "rak3172")
    if key == "rak3172":
        notes = [e.message for e in events.of(Note)]
        assert any("can't read the keys over AT" in n and "can't be saved" in n for n in notes), notes
        if app == "locked":
            assert any("locked" in n and "--password" in n for n in notes), notes
    assert asked and "can't read them first" in asked[0] and "rakflash keys backup" in asked[0]
    assert result.keys == state and "could not read" in result.keys_reason
    assert result.to_dict()["settings_kept"] is (False if state == "lost" else None)
    assert any(e.code == "keys-not-read" for e in events.of(Warning))
    assert events.of(Keys) == []                                   # nothing was read, nothing is shown
    if key == "rak3172":
        assert dev.flash.read(CONFIG, BLOCK) == b"\xff" * BLOCK    # the removal did erase them
        assert dev.wait_mode(Mode.APP) and keys_on(dev, ["DEVEUI"]) != {"DEVEUI": KEYS["DEVEUI"]}
        assert cache_files(tmp_path) == []


def test_readout_protection_refused_names_keys_backup_first(virtual, cat, tmp_path):
    dev = virtual("rak3172", readout_protected=True)
    with pytest.raises(ReadoutProtected) as refused:
        run_rom(dev, rak3172_full(tmp_path, cat))
    assert "rakflash keys backup FILE --port PORT" in refused.value.hint and dev.readout_protected
    # The command as printed, FILE and PORT filled in, on a protected RAK3172 whose application
    # runs at the module's own 115200 baud (the printed command names no rate): it still answers AT.
    app = virtual("rak3172", readout_protected=True, baud=115200)
    for name, value in KEYS.items():
        assert at_exchange(app.port, f"AT+{name}={value}", baud=115200)[-1] == "OK", name
    backup = tmp_path / "keys.json"
    command = re.search(r"\('(rakflash keys backup [^']*)'\)", refused.value.hint).group(1)
    proc = run_cli(*shlex.split(command.replace("FILE", str(backup)).replace("PORT", app.port))[1:])
    assert proc.returncode == 0, proc.stderr
    assert {k: keys_flow.load(str(backup)).settings[k] for k in KEYS} == KEYS


def test_rui_v3_keeps_a_raw_copy_of_the_data_eeprom(virtual, cat, tmp_path):
    dev = virtual("rak811", bootloader_version="3.0.2", app_version="V3.0.0.13.H")
    eeprom = bytes(dev._eeprom)
    plan, result, events = run_rom(dev, full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H"), "rak811")
    assert not plan.keys.decoded and "can't be decoded" in plan.keys.says
    before = events.of(Keys)[0].info
    assert before["decoded"] is False and any("can't be decoded" in n for n in before["notes"])
    assert before["regions"] == [{"region": "user-data", "address": "0x08080000", "size": 0x1000}]
    assert result.keys == "kept" and bytes(dev._eeprom) == eeprom


# ------------------------------------------------------------------ the Apollo3 secure bootloader

def test_apollo3_wired_update_says_it_cant_read_and_what_it_leaves(cat, tmp_path):
    from test_apollo3_sbl_recover import full_hex as rak11720_full
    path = rak11720_full(tmp_path)
    plan = plan_recovery(images.load(path), cat.module("rak11720"), method="apollo3-sbl", options=fast())
    assert not plan.keys.read and plan.keys.overwritten == []
    assert "wired update has no read command" in plan.keys.says
    assert "writes only the image's pages" in plan.keys.says and "0x000F4000" in plan.keys.says
    assert "not touched" in plan.keys.says
    # an image with bytes on the config page: then the plan says they will be overwritten
    segments = {s.start: s.data for s in images.load(path).segments}
    segments[0xF4000] = b"\x00" * 64
    covering = tmp_path / "RAK11720-covering.hex"
    covering.write_text(firmware.to_hex(segments))
    plan = plan_recovery(images.load(covering), cat.module("rak11720"), method="apollo3-sbl", options=fast())
    assert plan.keys.overwritten == ["config"] and "overwrites them" in plan.keys.says
    assert "rakflash keys backup" in plan.keys.says and "--via swd" in plan.keys.says


def test_apollo3_recovery_result_says_not_read(virtual, tmp_path):
    from test_apollo3_sbl_recover import brick, info0_at, run
    from test_apollo3_sbl_recover import full_hex as rak11720_full
    dev = virtual("rak11720", info0=info0_at())
    config = dev.flash.read(0xF4000, 0x2000)
    brick(dev)
    assert dev.wait_mode(Mode.BOOTLOADER)
    result, events = run(dev, rak11720_full(tmp_path))
    assert (result.keys, result.to_dict()["settings_kept"]) == ("not-read", None)
    assert "no read command" in result.keys_reason and events.of(Keys) == []
    assert dev.flash.read(0xF4000, 0x2000) == config               # the config page, untouched


# ------------------------------------------------------------------ SWD

def swd_world(dev, monkeypatch, **kw) -> FakeWorld:
    mod = dev.module
    world = FakeWorld(memory=dev.flash.mem, flash_base=mod.mcu.flash.start, flash_size=mod.mcu.flash.size,
                      installed={mod.swd_target}, on_reset=dev.press_reset, extra=eeprom_of(dev), **kw)
    monkeypatch.setattr(swd_link, "pyocd_api", lambda: FakePyOCD(world))
    return world


@pytest.mark.parametrize("covering", [False, True])
def test_swd_recovery_reads_the_block_and_checks_it(virtual, cat, tmp_path, monkeypatch, covering):
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    block_before = dev.flash.read(CONFIG, BLOCK)
    world = swd_world(dev, monkeypatch)
    path = rak3172_full(tmp_path, cat, {CONFIG: b"\x00" * 64} if covering else None)
    result, out = invoke("recover", str(path), "--module", "rak3172", "--via", "swd", "--port", dev.port,
                         "--baud", str(FAST_BAUD), "--yes", "--json")
    assert result.exit_code == 0, result.output
    plan = next(e for e in out if e.get("event") == "plan")
    assert plan["keys"]["read"] and plan["keys"]["overwritten"] == (["config"] if covering else [])
    assert world.reads[:2] == [(CONFIG, BLOCK), (0x0803E000, BLOCK)]     # the block, before any write
    kinds = [f"{e.get('event')}:{e.get('phase', e.get('when'))}" for e in out]
    assert kinds.index("keys:before") < kinds.index("phase:erase")
    before = next(e for e in out if e.get("event") == "keys" and e["when"] == "before")
    assert before["dev_eui"] == KEYS["DEVEUI"] and before["app_key"] is None
    final = out[-1]
    assert (final["keys"], final["settings_kept"]) == (("written-back" if covering else "kept"), True)
    if covering:
        assert (CONFIG, CONFIG + 0x800) in world.written           # the page, through the flash loader
    assert dev.flash.read(CONFIG, BLOCK) == block_before
    assert KEYS["APPKEY"] not in result.output
    assert dev.wait_mode(Mode.APP) and keys_on(dev) == KEYS


def test_a_recovery_that_fails_after_the_read_says_where_the_copy_is(virtual, tmp_path, monkeypatch, cat):
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    fault = exceptions.TransferFaultError("Memory transfer fault @ 0x08000000")
    swd_world(dev, monkeypatch, failures=Failures(commit=fault))
    result, out = invoke("recover", str(rak3172_full(tmp_path, cat)), "--module", "rak3172", "--via", "swd",
                         "--yes", "--json")
    assert result.exit_code == 7
    final = out[-1]
    copy = Path(final["keys_kept_in"])
    assert final["error"] == "transfer-fault" and str(copy) in final["hint"] and "keys restore" in final["hint"]
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o600
    kept = keys_flow.load(copy)                                    # a backup 'keys restore' takes
    assert (kept.via, kept.dev_eui) == ("swd", KEYS["DEVEUI"]) and kept.settings["APPKEY"] == KEYS["APPKEY"]
    assert KEYS["APPKEY"] not in result.output


def test_keys_backup_via_swd(virtual, tmp_path, monkeypatch):
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    world = swd_world(dev, monkeypatch)
    path = tmp_path / "swd.json"
    result, out = invoke("keys", "backup", str(path), "--via", "swd", "--module", "rak3172", "--json")
    assert result.exit_code == 0, result.output
    assert (out[-1]["result"], out[-1]["read_via"], out[-1]["layout_version"], out[-1]["port"]) == \
        ("ok", "swd", 4, None)
    saved = json.loads(path.read_text())
    assert {k: saved["settings"][k] for k in KEYS} == KEYS and saved["read_via"] == "swd"
    assert saved["serial_number"] == dev.opts.serial_number and saved["raw"][0]["address"] == "0x0803F000"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert world.written == [] and world.resets == [] and world.closed == 1     # read only, let go
    assert KEYS["APPKEY"] not in result.output
    result, out = invoke("keys", "show", "--via", "swd", "--module", "rak3172", "--json")
    assert (out[-1]["dev_eui"], out[-1]["app_key"], out[-1]["read_via"]) == (KEYS["DEVEUI"], None, "swd")


def test_keys_via_swd_a_refused_read_and_a_missing_module(virtual, tmp_path, monkeypatch):
    dev = virtual("rak3172")
    fault = exceptions.TransferFaultError("Memory transfer fault @ 0x0803f000")
    swd_world(dev, monkeypatch, failures=Failures(read=fault))
    result, out = invoke("keys", "show", "--via", "swd", "--module", "rak3172", "--json")
    assert (result.exit_code, out[-1]["error"]) == (7, "transfer-fault")
    assert "read-out protection" in out[-1]["message"] and "keys backup" in out[-1]["hint"]
    result, out = invoke("keys", "show", "--via", "swd", "--json")
    assert (result.exit_code, out[-1]["error"]) == (2, "usage") and "--module" in out[-1]["message"]


def test_keys_via_swd_reads_a_rui_v3_data_eeprom_raw(virtual, monkeypatch):
    dev = virtual("rak4270")
    swd_world(dev, monkeypatch)
    result, out = invoke("keys", "show", "--via", "swd", "--module", "rak4270", "--json")
    assert result.exit_code == 0, result.output
    assert out[-1]["decoded"] is False and any("can't be decoded" in n for n in out[-1]["notes"])


def test_the_swd_read_error_is_named_in_the_flow(cat):
    """swd_link.read_memory: a bus fault on a read is a named transfer fault, not pyOCD's exception."""
    world = FakeWorld(flash_base=0x08000000, flash_size=0x40000, installed={"stm32wle5ccux"})
    api = FakePyOCD(world)
    probe = swd_link.choose_probe(api, None)
    with swd_link.connected(api, probe, "stm32wle5ccux", {}) as session, pytest.raises(TransferFault):
        swd_link.read_memory(api, session, 0x20000000, 4)
