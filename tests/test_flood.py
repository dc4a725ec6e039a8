"""Firmware that floods the port: recognised, caught after a reset press, or a clean named failure."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import cli_json, flash_pressing_reset, run_cli
from rakflash.sim import Mode, firmware
from test_cli import SimProcess

NEW = "RUI_4.0.6_RAK3172-E"


@pytest.fixture
def new_app(tmp_path, cat):
    p = tmp_path / "new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 12 * 1024))
    return p


def test_reset_press_in_the_window_lets_the_update_through(virtual, new_app):
    dev = virtual("rak3172", sketch="flooding", flood_after=0.5, baud=115200)
    time.sleep(0.7)                  # the sketch is flooding now
    code, events = flash_pressing_reset(dev, str(new_app), "--port", dev.port, "--yes",
                                        "--reset-window", "20")
    assert code == 0, events[-1]
    names = [e.get("event") for e in events]
    assert names.index("prompt") < names.index("countdown") < names.index("caught")
    assert events[names.index("prompt")]["action"] == "press-reset"
    assert events[-1]["result"] == "ok" and events[-1]["app_version_after"] == NEW
    assert dev.app_version == NEW
    time.sleep(0.7)                  # past the old sketch's quiet start-up window
    code, out = cli_json("info", "--port", dev.port, "--baud", "115200")
    assert (code, out["mode"], out["app_version"]) == (0, "app", NEW), out


@pytest.mark.parametrize("stop", ["--dry-run", "refused"])
def test_a_caught_module_goes_back_to_its_application_when_nothing_is_written(virtual, new_app, stop, tmp_path, cat):
    dev = virtual("rak3172", sketch="flooding", flood_after=0.5, baud=115200)
    time.sleep(0.7)
    image = new_app
    if stop == "refused":
        image = tmp_path / "huge.bin"
        image.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 250 * 1024))
    code, events = flash_pressing_reset(dev, str(image), "--port", dev.port, "--yes", "--reset-window", "20",
                                        *(["--dry-run"] if stop == "--dry-run" else []))
    assert "caught" in [e.get("event") for e in events]
    assert code == (0 if stop == "--dry-run" else 6), events[-1]
    assert dev.wait_mode(Mode.APP) and dev.updates == 0


def test_no_reset_in_the_window_fails_cleanly_with_advice(virtual, new_app):
    dev = virtual("rak3172", sketch="flooding", flood_after=0.3, baud=115200)
    time.sleep(0.5)
    t0 = time.monotonic()
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--yes", "--reset-window", "2")
    assert (code, out["error"]) == (9, "boot-entry-failed")
    assert "prints without pause" in out["message"]
    assert "delay(" in out["hint"] and "setup()" in out["hint"]
    assert "'pyocd flash -t stm32wle5ccux -e sector -O keep_unwritten=true FIRMWARE.hex'" in out["hint"]
    assert f"'rakflash recover FIRMWARE.hex --port {dev.port} --module rak3172'" in out["hint"]
    assert time.monotonic() - t0 < 15
    assert dev.mode == Mode.APP and dev.updates == 0


def test_human_output_in_a_log_has_whole_lines(virtual, new_app):
    """Without a terminal (CI logs), the countdown never smears into the error line."""
    dev = virtual("rak3172", sketch="flooding", flood_after=0.3, baud=115200)
    time.sleep(0.5)
    proc = run_cli("flash", str(new_app), "--port", dev.port, "--yes", "--reset-window", "6")
    assert proc.returncode == 9
    assert "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any(ln.startswith("Press the module's reset button now.") for ln in lines)
    assert any(ln.startswith("error: ") for ln in lines) and any(ln.startswith("hint: ") for ln in lines)


def test_info_names_the_flood(virtual):
    dev = virtual("rak3172", sketch="flooding", flood_after=0.2, baud=115200)
    time.sleep(0.4)
    code, out = cli_json("info", "--port", dev.port)
    assert (code, out["error"]) == (5, "flooding")
    # A whole line of what the sketch prints, not a fragment cut at a read boundary.
    assert re.search(r"prints lines like 'sensor reading \d+: temperature=21.5 humidity=40'", out["message"])
    assert "'rakflash flash' gets past it" in out["hint"]


@pytest.mark.parametrize("press", ["sigusr1", "stdin"])
def test_sim_process_reset_button(new_app, press):
    sim = SimProcess("rak3172", "--sketch", "flooding")
    try:
        time.sleep(1.2)
        flash = subprocess.Popen([sys.executable, "-m", "rakflash", "flash", str(new_app), "--port", sim.port,
                                  "--yes", "--json", "--reset-window", "20"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=sim.env)
        lines = []
        for line in flash.stdout:          # wait until rakflash asks for the reset
            lines.append(line)
            if '"countdown"' in line:
                break
        if press == "sigusr1":
            sim.proc.send_signal(signal.SIGUSR1)
        else:
            sim.proc.stdin.write("r\n")
            sim.proc.stdin.flush()
        stdout, stderr = flash.communicate(timeout=60)
        stdout = "".join(lines) + stdout
        assert flash.returncode == 0, stdout + stderr
        assert '"result": "ok"' in stdout.splitlines()[-1]
    finally:
        sim.stop()


def test_reset_line_pulse_catches_the_module(virtual, cat, monkeypatch):
    from rakflash.flows.boot import identify_or_catch
    from rakflash.link import Link
    dev = virtual("rak3172", sketch="flooding", flood_after=0.3, baud=115200)
    time.sleep(0.5)
    pulses = []

    def adapter_rts_wired_to_reset(self, *, rts=None, dtr=None):
        # A pty has no modem lines; this stands in for an adapter whose RTS drives RESET.
        if rts:
            pulses.append("rts")
            dev.press_reset()
    monkeypatch.setattr(Link, "set_lines", adapter_rts_wired_to_reset)
    with Link(dev.port, 115200) as link:
        info = identify_or_catch(link, module=cat.module("rak3172"), reset_line="rts", reset_window=5)
    assert info.mode == "bootloader" and pulses == ["rts"]


@pytest.mark.pty_only      # over TCP (RFC 2217) the host does have RTS/DTR
def test_reset_with_on_a_port_without_modem_lines_is_a_clear_error(virtual, new_app):
    dev = virtual("rak3172", sketch="flooding", flood_after=0.3, baud=115200)
    time.sleep(0.5)
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--yes", "--reset-with", "rts")
    assert (code, out["error"]) == (4, "port-error") and "RTS/DTR" in out["message"]
    assert out["result"] == "port-error"


def test_old_sketch_bytes_beyond_a_shorter_image_do_not_make_it_flood(cat):
    """A bootloader erases only the pages it writes; what the old image left beyond is not code."""
    m = cat.module("rak3172")
    old = firmware.app_image(m, "RUI_4.0.5_RAK3172-E", 96 * 1024, flooding=True)
    new = firmware.app_image(m, NEW, 12 * 1024)
    region = new + old[len(new):]
    assert firmware.sketch_floods(old, "RUI_4.0.5_RAK3172-E")
    assert m.find_app_version(region) == NEW
    assert not firmware.sketch_floods(region, NEW)


def test_new_firmware_that_floods_is_named_not_a_failed_write(virtual, cat, tmp_path):
    """The update goes through, and the new sketch floods before it can be asked its version."""
    dev = virtual("rak3172", flood_after=0.0)
    p = tmp_path / "chatty.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 12 * 1024, flooding=True))
    code, out = cli_json("flash", str(p), "--port", dev.port, "--baud", "921600", "--yes")
    assert (code, out["error"]) == (8, "version-unconfirmed"), out
    assert "bootloader accepted it" in out["message"] and "prints without pause" in out["message"]
    assert "Nothing needs redoing" in out["hint"]
    assert dev.updates == 1 and dev.app_version == NEW


def test_flood_that_starts_after_identification_is_caught_too(virtual, new_app):
    """The sketch was still in its quiet start-up when identified; by AT+BOOT it floods."""
    from rakflash import images
    from rakflash.flows.identify import identify
    from rakflash.flows.planning import make_plan
    from rakflash.flows.update import run_update
    from rakflash.link import Link
    dev = virtual("rak3172", sketch="flooding", flood_after=30.0, baud=115200)
    from rakflash.events import Countdown, Phase
    events = []

    def emit(event):
        events.append(event.phase if isinstance(event, Phase) else event.kind)
        if isinstance(event, Countdown) and events.count("countdown") == 1:
            dev.opts.flood_after = 0.5        # the next start-up has its quiet window again
            dev.press_reset()

    with Link(dev.port, 115200) as link:
        device = identify(link)
        plan = make_plan(images.load(new_app), device)
        dev.opts.flood_after = 0.0            # …and now the sketch floods
        time.sleep(0.2)
        result = run_update(link, plan, emit=emit, reset_window=10)
    assert result.result == "ok" and result.app_version_after == NEW
    assert events.index("prompt") < events.index("caught") < events.index("write")


def test_a_banner_whose_console_stays_silent_does_not_end_the_wait(virtual, cat, monkeypatch):
    """The bootloader's banner came but its answers were lost; the person presses reset once more
    (the prompt is still up): the next start is caught, within the same window."""
    from rakflash.flows import boot
    from rakflash.link import Link
    dev = virtual("rak3172", sketch="flooding", flood_after=0.5, baud=115200)
    time.sleep(0.7)
    real_confirm, calls = boot.confirm_boot_mode, []

    def answers_lost_once(link, module, timeout=1.0, **kw):
        calls.append(dev.resets)
        if len(calls) <= 3:              # every answer to this start's console is lost…
            if len(calls) == 3:
                dev.press_reset()        # …and the person, seeing nothing happen, presses again
            return False
        return real_confirm(link, module, timeout, **kw)

    monkeypatch.setattr(boot, "confirm_boot_mode", answers_lost_once)

    def person(event):
        if type(event).__name__ == "Prompt":
            dev.press_reset()
    with Link(dev.port, 115200) as link:
        info = boot.identify_or_catch(link, module=cat.module("rak3172"), reset_window=15, emit=person)
    assert info.mode == "bootloader" and info.caught
    assert len(calls) >= 4 and dev.mode == Mode.BOOTLOADER


def test_a_window_with_banners_but_no_answer_says_so(virtual, cat, monkeypatch):
    """Not "no reset was seen" when the bootloader did start: the error says what happened."""
    from rakflash.errors import BootEntryFailed
    from rakflash.flows import boot
    from rakflash.link import Link
    dev = virtual("rak3172", sketch="flooding", flood_after=0.5, baud=115200)
    time.sleep(0.7)
    monkeypatch.setattr(boot, "confirm_boot_mode", lambda *a, **kw: False)   # every answer lost
    with Link(dev.port, 115200) as link, pytest.raises(BootEntryFailed) as caught:
        boot.identify_or_catch(link, module=cat.module("rak3172"), reset_window=3,
                               emit=lambda e: dev.press_reset() if type(e).__name__ == "Prompt" else None)
    assert "did not answer at+bootstatus" in caught.value.message
    assert "no reset was seen" not in caught.value.message
