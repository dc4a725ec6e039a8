"""`rakflash info`: identification through a real pty against virtual modules."""

from __future__ import annotations

import os
import time

import pytest
import serial

from conftest import FAST_BAUD, cli_json, run_cli
from rakflash.errors import Flooding, PortBusy
from rakflash.flows.identify import identify
from rakflash.link import Link
from rakflash.sim import firmware


def test_rui3_app_is_identified(virtual):
    dev = virtual("rak3172")
    with Link(dev.port, FAST_BAUD) as link:
        info = identify(link, baud=FAST_BAUD)
    assert info.module.key == "rak3172" and info.mode == "app"
    assert info.app_version == "RUI_4.0.5_RAK3172-E"
    assert info.bootloader_version == "RUI_BOOT_0.8_STM32WLE5CC"
    assert info.hardware_model == "rak3172" and info.serial_number == dev.opts.serial_number


def test_versions_come_from_what_is_in_flash(virtual):
    dev = virtual("rak3172", app_version="RUI_4.1.0_RAK3172-T", bootloader_version="RUI_BOOT_0.9_STM32WLE5CC")
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert code == 0
    assert out["app_version"] == "RUI_4.1.0_RAK3172-T"
    assert out["bootloader_version"] == "RUI_BOOT_0.9_STM32WLE5CC"
    assert out["error"] is None and out["port"] == dev.port and out["module"] == "RAK3172"


def test_module_in_bootloader_is_recognised_not_dead(virtual):
    dev = virtual("rak3172", state="bootloader")
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert code == 0
    assert out["mode"] == "bootloader" and out["module"] == "RAK3172"
    assert out["bootloader_version"] == "RUI_BOOT_0.8_STM32WLE5CC"
    assert out["app_version"] is None


def test_rui_v3_app_rak811(virtual):
    dev = virtual("rak811")
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak811")
    assert code == 0
    assert out["module"] == "RAK811" and out["mode"] == "app" and out["app_version"] == "V3.0.0.13.H"
    assert out["dialect"] == "rui-v3"


def test_rak811_bootloader(virtual):
    dev = virtual("rak811", state="bootloader", bootloader_version="V3.0.2")
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak811")
    assert (code, out["mode"], out["bootloader_version"]) == (0, "bootloader", "V3.0.2")


def test_baud_scan_finds_the_module(virtual):
    dev = virtual("rak3172", baud=9600, latency_ms=0.2)
    code, out = cli_json("info", "--port", dev.port)   # starts at 115200, scans
    assert code == 0 and out["module"] == "RAK3172"


def test_wrong_baud_only_gives_garbage(virtual):
    dev = virtual("rak3172", baud=230400)   # not a baud rate RAK3172 firmware uses
    code, out = cli_json("info", "--port", dev.port, "--module", "rak3172")
    assert (code, out["error"]) == (5, "garbage")
    for key in ("module", "mode", "app_version", "bootloader_version", "port"):
        assert key in out


def test_flooding_sketch_is_named(virtual):
    dev = virtual("rak3172", sketch="flooding", flood_after=0.0, baud=115200)
    time.sleep(0.2)
    with Link(dev.port, 115200) as link:
        with pytest.raises(Flooding, match="streams data"):
            identify(link)
    code, out = cli_json("info", "--port", dev.port)
    assert (code, out["error"]) == (5, "flooding")
    assert "reset" in out["hint"]


def _first_listen_hears_nothing(link: Link) -> None:
    """A host too busy to be scheduled while identify listens at the first rate: that listen
    comes back empty (what arrived meanwhile is dropped), the later reads are as they come."""
    real_read, calls = link.read, []

    def read(n, timeout):
        calls.append(n)
        if len(calls) == 1:
            link.discard_input()
            return b""
        return real_read(n, timeout)
    link.read = read


def test_a_flood_missed_at_its_rate_is_not_named_at_another(virtual):
    """A listen cut short at 115200 must not make the flood's stale 115200 bytes, read after the
    switch to 9600, look like a readable flood at 9600: the catch would then send AT+BOOT at 9600,
    and no reset press could ever work (most likely how a loaded CI host failed the web flood test)."""
    dev = virtual("rak3172", sketch="flooding", flood_after=0.0, baud=115200)
    time.sleep(0.2)
    with Link(dev.port, 115200) as link:
        _first_listen_hears_nothing(link)
        with pytest.raises(Flooding) as caught:
            identify(link)
    assert caught.value.details["baud"] == 115200, caught.value.details
    assert "sensor reading" in caught.value.message


def test_a_flood_caught_after_a_short_listen_is_caught_at_its_rate(virtual, cat):
    from rakflash.flows.boot import identify_or_catch
    dev = virtual("rak3172", sketch="flooding", flood_after=0.5, baud=115200)
    time.sleep(0.7)
    with Link(dev.port, 115200) as link:
        _first_listen_hears_nothing(link)
        info = identify_or_catch(link, module=None, fallback=cat.module("rak3172"), reset_window=10,
                                 emit=lambda e: dev.press_reset() if type(e).__name__ == "Prompt" else None)
        assert info.caught and info.mode == "bootloader" and link.baud == 115200


@pytest.mark.pty_only      # its silent port is a bare pty
def test_silent_port_is_no_response():
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        code, out = cli_json("info", "--port", path, "--module", "rak3172", "--baud", "115200")
        assert (code, out["error"]) == (5, "no-response")
        assert "wiring" in out["hint"]
    finally:
        os.close(master)
        os.close(slave)


def test_nonexistent_port():
    code, out = cli_json("info", "--port", "/dev/ttyNOPE99")
    assert (code, out["error"]) == (4, "port-not-found")
    proc = run_cli("info", "--port", "/dev/ttyNOPE99")
    assert proc.returncode == 4 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_busy_port(virtual):
    dev = virtual("rak3172")
    holder = serial.serial_for_url(dev.port, FAST_BAUD, exclusive=True)
    try:
        code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
        assert (code, out["error"]) == (4, "port-busy")
        with pytest.raises(PortBusy):
            Link(dev.port, FAST_BAUD)
    finally:
        holder.close()


def test_trace_records_the_exchange(virtual, tmp_path):
    from rakflash.trace import read_trace
    dev = virtual("rak3172")
    trace = tmp_path / "info.trace"
    code, _ = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD), "--trace", str(trace))
    assert code == 0
    events = read_trace(trace)
    assert events[0]["ev"] == "open"
    sent = b"".join(bytes.fromhex(e["hex"]) for e in events if e["ev"] == "tx")
    got = b"".join(bytes.fromhex(e["hex"]) for e in events if e["ev"] == "rx")
    assert b"AT+VER=?\r\n" in sent
    assert b"AT+VER=RUI_4.0.5_RAK3172-E" in got
    assert all(a["t"] <= b["t"] for a, b in zip(events, events[1:], strict=False))
    assert {"ev": "note", "text": f"identify at {FAST_BAUD} baud"}.items() <= events[1].items()


def test_bootloader_still_waiting_for_a_file_is_recognised(virtual):
    """An update cut off mid-way can leave the receiver polling 'C'; info still finds the bootloader."""
    dev = virtual("rak3172", state="bootloader")
    with serial.serial_for_url(dev.port, FAST_BAUD, timeout=1) as s:
        s.write(b"at+update\r")
        assert s.read_until(b"C").endswith(b"C")
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (code, out["mode"], out["module"]) == (0, "bootloader", "RAK3172")


@pytest.mark.parametrize("state", ["app", "bootloader"])
def test_the_device_wins_over_a_wrong_module_option(virtual, state):
    dev = virtual("rak3172", state=state)
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak811")
    assert code == 0 and out["module"] == "RAK3172", out
    assert any("--module says RAK811" in n for n in out["notes"])


def test_flash_with_a_wrong_module_option_is_refused(virtual, tmp_path, cat):
    from rakflash.sim import firmware
    dev = virtual("rak3172")
    p = tmp_path / "r811.bin"
    p.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 20 * 1024))
    code, out = cli_json("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak811", "--yes")
    assert (code, out["error"]) == (6, "wrong-target"), out
    assert "--module says RAK811, but the device is a RAK3172" in out["message"]
    assert dev.updates == 0


@pytest.mark.pty_only      # /proc names the programs sharing a device path
@pytest.mark.parametrize("who", ["plain", "owns-another-pty"])
def test_port_shared_with_another_program_is_named_busy(virtual, who):
    """A serial monitor without a lock would take part of the bytes: say so, by name.
    A program that owns some other pseudo-terminal (a terminal emulator, screen) still counts."""
    import subprocess
    import sys
    dev = virtual("rak3172")
    with open(dev.port, "rb") as tty:
        if who == "plain":
            other = subprocess.Popen(["sleep", "30"], stdin=tty)
        else:
            other = subprocess.Popen([sys.executable, "-c", "import os, time; os.openpty(); time.sleep(30)"],
                                     stdin=tty)
            time.sleep(0.3)
    try:
        code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
        assert (code, out["error"]) == (4, "port-busy"), out
        assert "(pid" in out["message"] and "Close it" in out["hint"]
    finally:
        other.kill()
        other.wait()
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert code == 0 and out["module"] == "RAK3172"


@pytest.mark.parametrize("call", ["read", "read_line", "read_available"])
def test_port_vanishing_between_calls_is_a_named_error(virtual, call):
    """(Writes and settings on a pty whose other end is gone still succeed; the next read tells.)"""
    from rakflash.errors import PortDisconnected
    dev = virtual("rak3172")
    with Link(dev.port, FAST_BAUD) as link:
        dev.uart.pull_cable()
        time.sleep(0.05)
        with pytest.raises(PortDisconnected):
            {"read": lambda: link.read(10, 0.1), "read_line": lambda: link.read_line(0.1),
             "read_available": lambda: link.read_available(0.1)}[call]()


def test_port_opens_with_rts_and_dtr_released():
    """Adapters that wire RTS/DTR to RESET must not hold the module in reset just by opening."""
    with Link("loop://", 115200) as link:
        assert (link._ser.rts, link._ser.dtr) == (False, False)
        link.write(b"AT\r\n")
        assert link.read(4, 0.5) == b"AT\r\n"


def _held_in_its_chip_bootloader(virtual, name):
    """A module whose boot pin was held at its last reset: the chip's own bootloader runs."""
    from rakflash.sim import Mode
    kw = {}
    if name == "rak11720":
        from rakflash.apollo3_info0 import rak11720_default
        kw["info0"] = rak11720_default().replace(uart_baud=FAST_BAUD).raw
    dev = virtual(name, boot_pin=True, **kw)
    assert dev.wait_mode(Mode.ROM)
    return dev


@pytest.mark.parametrize("name, state", [("rak811", "left in sync by an earlier session"),
                                         ("rak3172", "fresh from reset"),
                                         ("rak11720", "secure bootloader")])
def test_a_chip_in_its_own_bootloader_is_named_with_the_way_out(virtual, tmp_path, cat, name, state):
    """BOOT0 left high after a recovery (or BOOT held on a RAK11720): info and flash said
    'unreadable bytes … the baud rate is probably wrong (try --baud)' or 'nothing answers'.
    They name the chip's bootloader, as doctor does, and the two ways out."""
    from rakflash.sim import Mode
    dev = _held_in_its_chip_bootloader(virtual, name)
    if state.startswith("left in sync"):
        with Link(dev.port, FAST_BAUD, parity="E") as link:     # as a recovery leaves it
            link.write(b"\x7f")
            assert link.read(1, 2.0) == b"\x79"
    error, leave = (("apollo3-sbl", "Release BOOT and reset") if name == "rak11720"
                    else ("rom-bootloader", "Take BOOT0 low (to GND) and reset"))
    recover = f"rakflash recover FULL.hex --port {dev.port} --module {name}"
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (code, out["error"]) == (5, error), out
    assert dev.module.name in out["message"] and "baud" not in out["hint"]
    assert out["hint"].startswith(leave) and out["hint"].endswith(recover) and out["command"] == recover
    image = tmp_path / "app.bin"
    version = {"rak811": "V3.0.0.14.H", "rak3172": "RUI_4.0.6_RAK3172-E", "rak11720": "RUI_4.0.6_RAK11720"}
    image.write_bytes(firmware.app_image(cat.module(name), version[name], 16 * 1024))
    flash = cat.module(name).mcu.flash
    before = dev.flash.read(flash.start, flash.size)
    code, out = cli_json("flash", str(image), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert (code, out["error"]) == (5, error) and out["hint"].startswith(leave), out
    assert dev.flash.read(flash.start, flash.size) == before and dev.updates == 0
    dev.set_boot_pin(False)            # what the hint says: release the pin, reset
    dev.press_reset()
    assert dev.wait_mode(Mode.APP)
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (code, out["mode"], out["module"]) == (0, "app", dev.module.name), out


@pytest.mark.parametrize("state", ["app", "bootloader"])
def test_a_module_that_answers_is_never_asked_for_a_chip_bootloader(virtual, tmp_path, state):
    """The chip-bootloader probes come only after AT found nothing readable: a module that
    answers is identified as fast as before, and no 0x7F or HELLO reaches it."""
    from rakflash.protocols import apollo3_sbl
    from rakflash.trace import read_trace
    dev = virtual("rak3172", state=state)
    trace = tmp_path / "info.trace"
    code, _ = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD), "--trace", str(trace))
    assert code == 0
    events = read_trace(trace)
    sent = b"".join(bytes.fromhex(e["hex"]) for e in events if e["ev"] == "tx")
    assert b"\x7f" not in sent and apollo3_sbl.hello() not in sent
    assert not [e for e in events if e["ev"] == "note" and "bootloader" in e.get("text", "")]
