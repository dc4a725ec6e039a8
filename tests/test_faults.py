"""Line faults in both directions: the simulator's, and the flows that must get through them."""

from __future__ import annotations

import pytest
import serial

from conftest import FAST_BAUD, cli_json
from rakflash.sim import Faults, Rewrite, firmware
from test_cli import SimProcess

NEW = {"rak3172": "RUI_4.0.6_RAK3172-E", "rak811": "V3.0.0.14.H", "rak11720": "RUI_4.0.6_RAK11720"}


def exchange(port: str, data: bytes, want: int = 200) -> bytes:
    """Send ``data``; what comes back until the line has been quiet for 0.3 s (the first byte
    may take up to 5 s on a loaded machine)."""
    with serial.serial_for_url(port, FAST_BAUD, timeout=5) as ser:
        ser.write(data)
        got = ser.read(1)
        ser.timeout = 0.3
        while got and len(got) < want:
            more = ser.read(want - len(got))
            if not more:
                break
            got += more
        return got


def test_module_to_host_damage_is_seeded_and_reaches_the_host(virtual):
    clean = exchange(virtual("rak3172").port, b"AT+VER=?\r\n")
    assert clean == b"AT+VER=RUI_4.0.5_RAK3172-E\r\nOK\r\n"
    damaged = [exchange(virtual("rak3172", faults=Faults(bit_error_rate_to_host=0.2, seed=7)).port,
                        b"AT+VER=?\r\n") for _ in range(2)]
    assert damaged[0] != clean and len(damaged[0]) == len(clean)   # bits flipped, none lost
    assert damaged[0] == damaged[1]                                # the same seed, the same damage
    dropped = exchange(virtual("rak3172", faults=Faults(drop_rate_to_host=0.3)).port, b"AT+VER=?\r\n")
    assert len(dropped) < len(clean)
    noisy = exchange(virtual("rak3172", faults=Faults(garbage_rate_to_host=0.3)).port, b"AT+VER=?\r\n")
    assert len(noisy) > len(clean)


def test_host_to_module_garbage_makes_the_module_refuse_the_command(virtual):
    dev = virtual("rak3172", faults=Faults(garbage_rate=1.0, seed=3))
    reply = exchange(dev.port, b"AT\r\n")
    assert b"AT_COMMAND_NOT_FOUND" in reply and b"OK" not in reply


def test_a_scripted_rewrite_happens_once(virtual):
    dev = virtual("rak3172")
    dev.uart.faults.rewrite_to_host.append(Rewrite(b"RUI_4.0.5", b"RUI_4.0.9"))
    assert b"RUI_4.0.9" in exchange(dev.port, b"AT+VER=?\r\n")
    assert b"RUI_4.0.5" in exchange(dev.port, b"AT+VER=?\r\n")


def test_sim_command_line_faults_toward_the_host():
    """`rakflash sim --drop-rate-to-host 1`: the module hears everything, the host gets nothing."""
    sim = SimProcess("rak3172", "--baud", "921600", "--latency-ms", "0.2", "--drop-rate-to-host", "1",
                     "--bit-error-rate-to-host", "0.5", "--garbage-rate-to-host", "0.5", "--fault-seed", "5")
    try:
        code, out = cli_json("info", "--port", sim.port, "--baud", "921600", "--module", "rak3172")
        assert (code, out["error"]) == (5, "no-response"), out
    finally:
        sim.stop()


DIRECTIONS = {
    # Rates per byte. Toward the module the traffic is the image (tens of KiB), toward
    # the host it is answers (a few hundred bytes), hence higher rates there.
    "to-module": dict(bit_error_rate=3e-5, drop_rate=1e-5, garbage_rate=1e-5),
    "to-host": dict(bit_error_rate_to_host=4e-3, drop_rate_to_host=1e-3, garbage_rate_to_host=1e-3),
}


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("name", ["rak3172", "rak811", "rak11720"])
def test_updates_get_through_line_faults_in_either_direction(virtual, tmp_path, cat, name, direction):
    """Bit errors, lost bytes and noise bytes, each way: retried, resumed, and the module ends
    up with the image byte for byte and the new version running."""
    module = cat.module(name)
    dev = virtual(name, faults=Faults(seed=11, **DIRECTIONS[direction]))
    image = firmware.app_image(module, NEW[name], 24 * 1024)
    p = tmp_path / f"{name}.bin"
    p.write_bytes(image)
    code, out = cli_json("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes",
                         "--module", name, timeout=120)
    assert code == 0, out
    assert out["app_version_after"] == NEW[name]
    assert dev.flash.read(module.app.start, len(image)) == image
    sent = dev.uart.faults.received if direction == "to-module" else dev.uart.faults.sent
    assert sent > 0


def test_a_late_answer_to_at_is_not_taken_for_another_module():
    """On a slow line (a loaded host, a sluggish adapter) a RUI3 module's OK to AT comes after
    the probe's deadline, just as 'at+version' is asked: that OK is no RUI v3 answer."""
    from rakflash.flows.identify import Timing, identify
    from test_fuzz import Device, fake_link
    answers = [b"", b"", b"OK\r\n",                        # '\r\n', AT (late), at+version: the late OK
               b"OK\r\n", b"AT+VER=RUI_4.0.5_RAK3172-E\r\nOK\r\n", b"AT+BOOTVER=RUI_BOOT_0.8_STM32WLE5CC\r\nOK\r\n",
               b"AT+HWMODEL=rak3172\r\nOK\r\n", b"AT+HWID=stm32wle5xx\r\nOK\r\n", b"AT+SN=SIM0000001\r\nOK\r\n"]
    link = fake_link(Device(answers))
    info = identify(link, baud=115200, scan=False, timing=Timing(listen=0.01, flood_confirm=0.01, probe=0.05, query=0.1))
    assert (info.module.key, info.mode, info.app_version) == ("rak3172", "app", "RUI_4.0.5_RAK3172-E")



def test_a_damaged_ok_to_at_does_not_make_an_application_a_bootloader():
    """Module → host: AT's OK arrives as 'GK'; then at+version gets AT_COMMAND_NOT_FOUND, which
    only a RUI3 application says. With --module given, that line was taken for a bootloader's
    version, and the update then failed to enter a bootloader it believed it was in."""
    from rakflash import catalog
    from rakflash.flows.identify import Timing, identify
    from test_fuzz import Device, fake_link
    answers = [b"", b"GK\r\n", b"AT_COMMAND_NOT_FOUND\r\n",
               b"AT+VER=RUI_4.0.5_RAK11720\r\nOK\r\n", b"AT+BOOTVER=RUI_BOOT_0.3_RAK11720\r\nOK\r\n",
               b"AT+HWMODEL=rak11720\r\nOK\r\n", b"AT+HWID=ambiq-apollo3\r\nOK\r\n", b"AT+SN=SIM0000001\r\nOK\r\n"]
    link = fake_link(Device(answers))
    info = identify(link, module=catalog.load().module("rak11720"), baud=115200, scan=False,
                    timing=Timing(listen=0.01, flood_confirm=0.01, probe=0.05, query=0.1))
    assert (info.module.key, info.mode, info.app_version) == ("rak11720", "app", "RUI_4.0.5_RAK11720")


def test_one_damaged_digit_in_the_bootloaders_version_does_not_refuse_a_good_update(virtual, tmp_path, cat):
    """A RAK811 on bootloader 3.0.5 whose version answer arrives once as 'V³.0.5' (one flipped
    bit): read that way it is older than 3.0.5 and 3.0.0.14 would be refused; asked again, the
    answers agree on V3.0.5 and the update goes through (found by the soak)."""
    dev = virtual("rak811")
    dev.uart.faults.rewrite_to_host.append(Rewrite(b"V3.0.5", b"V\xb3.0.5"))
    image = firmware.app_image(cat.module("rak811"), NEW["rak811"], 24 * 1024)
    p = tmp_path / "rak811.bin"
    p.write_bytes(image)
    code, out = cli_json("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes",
                         "--module", "rak811", timeout=120)
    assert code == 0, out
    assert out["app_version_after"] == NEW["rak811"]
    assert dev.uart.faults.rewrite_to_host[0].times == 0       # the damaged answer did arrive


def test_bytes_already_sent_are_not_garbled_by_a_later_change_of_the_line():
    """The ROM answers Go's ACK at the host's (auto-detected) rate, waits for the line to drain,
    then hands over to the application's UART settings: that ACK was sent before the change and
    must arrive intact (stm32loader saw 0x90 for it in CI)."""
    from rakflash.sim.uart import PtyUart
    uart = PtyUart(921600)
    try:
        with serial.serial_for_url(uart.path, 115200, timeout=1) as host:
            got = []
            for _ in range(50):
                uart.autobaud = True           # the ROM accepts the host's rate
                uart.write(bytes([0x79]))
                uart.drain()
                uart.autobaud = False          # Go: the application's 921600 from now on
                got.append(host.read(1))
    finally:
        uart.close()
    assert got == [bytes([0x79])] * 50
