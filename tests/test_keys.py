"""The owner's LoRaWAN keys: never written back from a damaged read, never lost without a loud warning.

Every test runs `rakflash flash` against a virtual module through a real pty,
with the damage done on the line by the simulator (module → host as well as
host → module).
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import FAST_BAUD, cli_json, flash_pressing_reset, run_as_a_person, run_cli
from rakflash.flows.settings import READS
from rakflash.sim import Mode, Rewrite, firmware
from test_flash import KEYS, keys_on, set_keys

NEW = "RUI_4.0.6_RAK3172-E"


@pytest.fixture
def resetting_app(tmp_path, cat):
    """A new firmware whose settings layout changed: it resets the keys at its first start."""
    p = tmp_path / "new_layout.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 8 * 1024, new_settings_layout=True))
    return p


def flash_json(path, dev, *extra, baud=FAST_BAUD):
    """`rakflash flash … --json`: (exit code, all JSON lines)."""
    proc = run_cli("flash", str(path), "--port", dev.port, "--baud", str(baud), "--yes", "--json", *extra)
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.returncode, lines


def warnings_in(lines):
    return {e["code"]: e for e in lines if e.get("event") == "warning"}


def test_one_damaged_digit_in_a_key_is_not_written_back(virtual, resetting_app):
    """Module → host: one wrong hex digit in the answer to AT+DEVEUI=? before the update."""
    dev = virtual("rak3172")
    set_keys(dev)
    damaged = KEYS["DEVEUI"][:-1] + "D"
    dev.uart.faults.rewrite_to_host.append(
        Rewrite(f"AT+DEVEUI={KEYS['DEVEUI']}".encode(), f"AT+DEVEUI={damaged}".encode()))
    code, lines = flash_json(resetting_app, dev)
    out = lines[-1]
    assert (code, out["result"]) == (0, "ok"), out
    assert dev.uart.faults.rewrite_to_host[0].times == 0        # the damage did happen
    assert keys_on(dev) == KEYS                                 # the owner's value, not the damaged one
    assert out["settings_kept"] is True and "DEVEUI" in out["settings"]["restored"]


def test_a_key_that_never_reads_the_same_twice_is_left_alone_and_said(virtual, resetting_app):
    """Every read of DEVEUI before the update arrives differently damaged: it could not be
    checked, so it is never written; the other keys are put back; a warning says which."""
    dev = virtual("rak3172")
    set_keys(dev)
    good = f"AT+DEVEUI={KEYS['DEVEUI']}".encode()
    for digit in "DEF123456789"[:READS - 1]:          # the last read is right, but only once
        dev.uart.faults.rewrite_to_host.append(Rewrite(good, good[:-1] + digit.encode()))
    code, lines = flash_json(resetting_app, dev)
    out = lines[-1]
    assert (code, out["result"]) == (0, "ok"), out
    assert out["settings"]["unchecked"] == ["DEVEUI"]
    assert out["settings_kept"] is None
    warning = warnings_in(lines)["settings-unchecked"]
    assert "DEVEUI" in warning["message"] and "could not be checked" in warning["message"]
    assert "AT+DEVEUI=" in warning["message"]                  # what to do about it
    assert "settings-unchecked" in [w["code"] for w in out["warnings"]]
    now = keys_on(dev)
    assert now["DEVEUI"] == dev.opts.dev_eui                    # untouched: what the new firmware did
    assert (now["APPEUI"], now["APPKEY"]) == (KEYS["APPEUI"], KEYS["APPKEY"])


def test_a_non_ascii_byte_in_an_answer_is_not_an_internal_error(virtual, resetting_app):
    dev = virtual("rak3172")
    set_keys(dev)
    good = f"AT+APPEUI={KEYS['APPEUI']}".encode()
    dev.uart.faults.rewrite_to_host.append(Rewrite(good, good[:-1] + b"\xe9"))
    code, lines = flash_json(resetting_app, dev)
    out = lines[-1]
    assert (code, out["result"]) == (0, "ok"), out
    assert keys_on(dev) == KEYS


def test_a_value_that_is_not_a_well_formed_key_is_never_written(virtual, resetting_app):
    """The same non-hex answer every time before the update: consistent, but not a key."""
    dev = virtual("rak3172")
    set_keys(dev)
    good = f"AT+APPEUI={KEYS['APPEUI']}".encode()
    dev.uart.faults.rewrite_to_host.append(Rewrite(good, good[:-1] + b"\xe9", times=READS))
    code, lines = flash_json(resetting_app, dev)
    out = lines[-1]
    assert (code, out["result"]) == (0, "ok"), out
    assert out["settings"]["unchecked"] == ["APPEUI"] and "settings-unchecked" in warnings_in(lines)
    assert keys_on(dev)["APPEUI"] == "0" * 16                  # what the new firmware set, untouched


# ------------------------------------------------------------------ the kept-settings file

def _kept_path(tmp_path, dev):
    """Where a run keeps ``dev``'s settings (a module found in its bootloader tells its serial
    number and DevEUI once the new application runs)."""
    return tmp_path / "cache" / "rakflash" / f"settings-rak3172-SIM0000001-{dev.opts.dev_eui}.json"


OWNER = {"module": "rak3172", "serial_number": "SIM0000001"}


@pytest.mark.parametrize("content", [
    "[]", "6", json.dumps({**OWNER, "settings": "{"}), json.dumps({**OWNER, "settings": [[0, 0]]}),
    json.dumps({**OWNER, "settings": {"": "AC1F09FFFE0A0B0C"}}),
    json.dumps({**OWNER, "settings": {"AT+DEVEUI=?": "AC1F09FFFE0A0B0\u00e9"}}, ensure_ascii=False),
], ids=["list", "number", "settings-string", "settings-list", "empty-key", "non-ascii"])   # more: test_fuzz.py
def test_a_damaged_kept_settings_file_is_set_aside_and_the_run_goes_on(virtual, tmp_path, cat, content):
    """An update cut off earlier left the module in its bootloader; its kept file is damaged."""
    dev = virtual("rak3172", state="bootloader", serial_number="SIM0000001")
    path = _kept_path(tmp_path, dev)
    path.parent.mkdir(parents=True)
    original = content.encode()
    path.write_bytes(original)
    p = tmp_path / "new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 4 * 1024))
    code, lines = flash_json(p, dev)
    out = lines[-1]
    assert (code, out["result"]) == (0, "ok"), out
    warning = warnings_in(lines)["settings-file-damaged"]
    aside = list(path.parent.glob(path.name + ".damaged*"))
    assert len(aside) == 1 and aside[0].read_bytes() == original       # set aside, not deleted
    assert str(aside[0]) in warning["message"]                  # says where it went
    assert not path.exists()
    assert dev.app_version == NEW


def test_a_damaged_kept_file_is_said_in_words_too(virtual, tmp_path, cat):
    dev = virtual("rak3172", state="bootloader", serial_number="SIM0000001")
    path = _kept_path(tmp_path, dev)
    path.parent.mkdir(parents=True)
    path.write_text("[]")
    p = tmp_path / "new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 4 * 1024))
    proc = run_cli("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "damaged" in proc.stderr and ".damaged" in proc.stderr


# ------------------------------------------------------------------ keys that could not be read

def test_flooding_sketch_and_a_settings_resetting_firmware_keep_the_keys(virtual, resetting_app):
    """The sketch floods, so the module is caught in its bootloader after a reset press; the
    keys are read in the application's start-up window, and written back after the update."""
    dev = virtual("rak3172", sketch="flooding", flood_after=0.5, baud=115200)
    dev.settings.update(KEYS)
    dev.save_settings()
    dev.press_reset()
    time.sleep(0.8)                                   # flooding now
    code, events = flash_pressing_reset(dev, str(resetting_app), "--port", dev.port, "--yes",
                                        "--reset-window", "20")
    out = events[-1]
    assert code == 0, out
    assert out["settings_kept"] is True, out
    assert set(out["settings"]["restored"]) == {"DEVEUI", "APPEUI", "APPKEY"}
    assert dev.settings["APPKEY"] == KEYS["APPKEY"] and dev.settings["DEVEUI"] == KEYS["DEVEUI"]
    assert [e for e in events if e.get("event") == "prompt"][0]["action"] == "press-reset"


def test_keys_that_truly_could_not_be_read_are_said_plainly(virtual, tmp_path, cat):
    """A module in its bootloader, nothing kept from an earlier run: not only a null."""
    dev = virtual("rak3172", state="bootloader")
    p = tmp_path / "new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 4 * 1024))
    code, lines = flash_json(p, dev)
    out = lines[-1]
    assert (code, out["result"], out["settings_kept"]) == (0, "ok", None)
    warning = warnings_in(lines)["settings-unread"]
    assert "could not be read" in warning["message"] and "set them again" in warning["message"]
    assert warning["settings"] == ["DEVEUI", "APPEUI", "APPKEY", "BAND"]
    assert [w["code"] for w in out["warnings"]] == ["settings-unread"]
    proc = run_cli("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "--force")
    assert proc.returncode == 0
    assert "warning:" not in proc.stderr                       # the application answered this time


def test_the_values_an_earlier_run_kept_win_over_what_a_reset_firmware_reports(virtual, tmp_path, cat,
                                                                                resetting_app):
    """Cut off after the new firmware started (it reset the keys) and before the check; the
    next run brings another image: it must not take the reset values for the owner's. (The owner
    kept the module's factory DevEUI, which a settings reset restores: it says whose values they are.)"""
    dev = virtual("rak3172", dev_eui=KEYS["DEVEUI"])
    module = _kept_then_reset(dev, cat, resetting_app)
    time.sleep(0.1)
    assert keys_on(dev)["APPKEY"] == "0" * 32
    newer = tmp_path / "newer.bin"
    newer.write_bytes(firmware.app_image(module, "RUI_4.0.7_RAK3172-E", 4 * 1024))
    code, out = cli_json("flash", str(newer), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert code == 0, out
    assert keys_on(dev) == KEYS
    assert out["settings"]["from_earlier_run"] is True


def flash_pressing_reset_at_every_prompt(dev, *args, timeout=120):
    """`rakflash flash … --json`, pressing reset once per press-reset prompt (at its first countdown)."""
    armed = []

    def person(event: dict) -> None:
        if event.get("event") == "prompt":
            armed[:] = [True]
        elif event.get("event") == "countdown" and armed:
            dev.press_reset()
            armed.clear()
    return run_as_a_person("flash", *args, on_event=person, timeout=timeout)


def test_a_start_up_window_too_short_for_the_keys_is_said_loudly(virtual, resetting_app):
    """The sketch floods 0.15 s after a start and the adapter is slow: long enough to catch
    the bootloader, too short to read the keys. One more reset press, and a loud warning."""
    dev = virtual("rak3172", sketch="flooding", flood_after=0.15, baud=115200, latency_ms=20)
    dev.settings.update(KEYS)
    dev.save_settings()
    dev.press_reset()
    time.sleep(0.4)
    code, events = flash_pressing_reset_at_every_prompt(
        dev, str(resetting_app), "--port", dev.port, "--yes", "--reset-window", "20")
    out = events[-1]
    assert (code, out["result"]) == (0, "ok"), out
    prompts = [e for e in events if e.get("event") == "prompt"]
    assert len(prompts) == 2 and "too short" in prompts[1]["message"]
    assert out["settings_kept"] is None
    warning = warnings_in(events)["settings-unread"]
    assert "could not be read" in warning["message"] and "set them again" in warning["message"]
    assert dev.app_version == NEW


def test_a_damaged_serial_number_does_not_hide_the_kept_keys_from_the_re_run(virtual, tmp_path, cat,
                                                                               resetting_app):
    """Identification's one read of AT+SN=? arrives damaged; the kept file is named by the
    serial number read consistently, so the re-run after a power cut still finds the keys."""
    dev = virtual("rak3172", serial_number="SIM0000001", dev_eui=KEYS["DEVEUI"])
    set_keys(dev)
    dev.uart.faults.rewrite_to_host.append(Rewrite(b"AT+SN=SIM0000001", b"AT+SN=SIM0000009"))
    dev.uart.faults.power_cut_after = dev.uart.faults.received + 6000
    code, lines = flash_json(resetting_app, dev)
    assert (code, lines[-1]["error"]) == (7, "device-restarted"), lines[-1]
    assert dev.wait_mode(Mode.BOOTLOADER)
    code, lines = flash_json(resetting_app, dev)
    out = lines[-1]
    assert (code, out["result"]) == (0, "ok"), out
    assert "settings-unread" not in warnings_in(lines)
    assert out["settings"]["from_earlier_run"] is True and out["settings_kept"] is True
    assert keys_on(dev) == KEYS


# ------------------------------------------------------------------ keys that can't be confirmed

def _damage_appkey_answers(dev) -> None:
    """Every answer to AT+APPKEY=? from now on arrives with a stray byte: never a well-formed answer."""
    dev.uart.faults.rewrite_to_host.append(Rewrite(b"AT+APPKEY=", b"AT+APPKEY\x7f=", times=10_000))


@pytest.mark.parametrize("name", ["rak11720", "rak3172"])
@pytest.mark.parametrize("when", ["before the update", "after the update"])
def test_a_key_that_cannot_be_confirmed_is_never_checked_and_said_to_maybe_have_changed(
        virtual, tmp_path, cat, name, when):
    """The RAK11720 soak case (heavy noise toward the host): APPKEY changed, exit 0, and the
    JSON listed it under both `checked` and `unchecked` with `lost: []`. A key whose value
    after the update rakflash can't confirm is never 'checked', and the result says plainly
    that it may have changed — whether its reads were damaged before the update (left alone)
    or after it (written back, but never read back)."""
    dev = virtual(name)
    set_keys(dev)
    resetting_app = tmp_path / "new_layout.bin"       # a firmware that resets the keys at its first start
    resetting_app.write_bytes(firmware.app_image(cat.module(name), NEW.replace("RAK3172-E", name.upper()),
                                                 8 * 1024, new_settings_layout=True))
    if when.startswith("before"):
        _damage_appkey_answers(dev)
    code, events = run_as_a_person(
        "flash", str(resetting_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes",
        on_event=lambda e: _damage_appkey_answers(dev)
        if when.startswith("after") and e.get("phase") == "settings-check" else None)
    out = events[-1]
    assert (code, out["result"]) == (0, "ok"), out
    settings = out["settings"]
    assert "APPKEY" not in settings["checked"] and settings["unchecked"] == ["APPKEY"], settings
    assert set(settings["checked"]) == {"DEVEUI", "APPEUI", "BAND"} and "APPKEY" not in settings["lost"]
    assert out["settings_kept"] is None
    warned = [w for w in out["warnings"] if "APPKEY" in w["message"]]
    assert warned and all("AT+APPKEY=?" in w["message"] for w in warned), out["warnings"]
    dev.uart.faults.rewrite_to_host.clear()
    now = keys_on(dev)
    assert (now["DEVEUI"], now["APPEUI"]) == (KEYS["DEVEUI"], KEYS["APPEUI"])
    if when.startswith("before"):
        assert now["APPKEY"] != KEYS["APPKEY"]        # the new firmware reset it: it did change
    else:
        assert now["APPKEY"] == KEYS["APPKEY"]        # written back; only the reads were damaged
        # what the warning says: the same command again, on a clean line, checks it again
        code, again = cli_json("flash", str(resetting_app), "--port", dev.port, "--baud", str(FAST_BAUD),
                               "--yes")
        assert (code, again["result"], again["settings_kept"]) == (0, "already-up-to-date", True), again
        assert "APPKEY" in again["settings"]["checked"] and not again["settings"]["unchecked"]


def test_the_result_says_plainly_which_keys_may_have_changed(virtual, resetting_app):
    dev = virtual("rak3172")
    set_keys(dev)
    _damage_appkey_answers(dev)
    proc = run_cli("flash", str(resetting_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stdout.splitlines() if ln.startswith("settings:")]
    assert any("APPKEY may have changed" in ln for ln in said), proc.stdout
    assert not any("APPKEY" in ln and ("kept" in ln or "wrote back" in ln) for ln in said), said


# ------------------------------------------------------------------ whose kept values they are

def test_a_module_sharing_a_serial_number_is_never_offered_the_others_kept_keys(virtual, tmp_path):
    """Two modules with one serial number (a batch with copied ones); B's update is cut off and
    its keys are kept. Flashing A must neither say nor do 'using the values an earlier,
    interrupted run kept': they are B's. B's own re-run still gets them."""
    a = virtual("rak3172", serial_number="SAME-SN")
    b = virtual("rak3172", serial_number="SAME-SN", dev_eui=KEYS["DEVEUI"])   # B's owner keeps its own
    assert a.opts.dev_eui != b.opts.dev_eui                    # each module has its own
    set_keys(b)
    b.uart.faults.power_cut_after = b.uart.faults.received + 6000
    new = tmp_path / "new.bin"
    new.write_bytes(firmware.app_image(a.module, NEW, 16 * 1024, new_settings_layout=True))
    code, lines = flash_json(new, b)
    assert (code, lines[-1]["error"]) == (7, "device-restarted"), lines[-1]
    assert b.wait_mode(Mode.BOOTLOADER)

    a_keys = keys_on(a)
    code, lines = flash_json(new, a)
    out = lines[-1]
    assert (code, out["result"]) == (0, "ok"), out
    assert not any("earlier, interrupted run kept" in e.get("message", "") and e.get("event") == "note"
                   for e in lines)
    assert out["settings"]["from_earlier_run"] is False
    assert keys_on(a) == a_keys                                 # A's own keys, not B's
    other = warnings_in(lines)["settings-kept-for-another"]     # B's file is named, not used
    assert KEYS["DEVEUI"] in other["message"] and "does not use them" in other["message"]

    code, lines = flash_json(new, b)                            # B's re-run finishes with B's keys
    out = lines[-1]
    assert (code, out["result"]) == (0, "ok"), out
    assert keys_on(b) == KEYS


def test_kept_keys_of_a_devEUI_the_new_firmware_reset_are_named_not_used(virtual, tmp_path, cat,
                                                                          resetting_app):
    """The owner had set their own DevEUI; the update was cut off after the new firmware reset
    it to the factory one. Whose kept values those are can't be told now: the warning names
    the file and how to set them again, and nothing is written from it."""
    dev = virtual("rak3172")
    module = _kept_then_reset(dev, cat, resetting_app)
    newer = tmp_path / "newer.bin"
    newer.write_bytes(firmware.app_image(module, "RUI_4.0.7_RAK3172-E", 4 * 1024))
    code, lines = flash_json(newer, dev)
    assert lines[-1]["result"] == "ok", lines[-1]
    warning = warnings_in(lines)["settings-kept-for-another"]
    kept = tmp_path / "cache" / "rakflash" / f"settings-rak3172-{dev.opts.serial_number}-{KEYS['DEVEUI']}.json"
    assert str(kept) in warning["message"] and "AT+APPKEY=<value>" in warning["message"]
    assert kept.exists()                                        # still there for the owner
    assert keys_on(dev)["APPKEY"] == "0" * 32                   # nothing written from it


def test_a_fifo_beside_the_kept_files_does_not_hang_the_run(virtual, tmp_path, cat):
    """The files kept under another DevEUI are looked at too: one that is a FIFO is passed over."""
    import os
    dev = virtual("rak3172", state="bootloader")
    folder = tmp_path / "cache" / "rakflash"
    folder.mkdir(parents=True)
    os.mkfifo(folder / f"settings-rak3172-{dev.opts.serial_number}-AC1F09FFFE999999.json")
    p = tmp_path / "new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 4 * 1024))
    code, lines = flash_json(p, dev)
    assert (code, lines[-1]["result"]) == (0, "ok"), lines[-1]


def _kept_then_reset(dev, cat, resetting_app):
    """The owner's keys set and kept by an earlier, cut-off run; then a firmware that resets them
    at its first start is written and started (as that run's update would have left it)."""
    from rakflash.flows import settings as flows_settings
    set_keys(dev)
    module = cat.module("rak3172")
    flows_settings.keep_until_checked(module, dev.opts.serial_number,
                                      {f"AT+{k}=?": v for k, v in KEYS.items()})
    image = resetting_app.read_bytes()
    dev.flash.erase(module.app.start, module.app.start + len(image))
    dev.flash.program(module.app.start, image)
    dev.press_reset()
    assert dev.wait_mode(Mode.APP)
    return module
