"""Adafruit legacy DFU: the Arduino RAK4631's bootloader, rakflash's client, and adafruit-nrfutil against the sim."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pipes import pipe

import pytest

from rakflash import dfu_package as dp
from rakflash import ports
from rakflash.errors import TransferTimeout
from rakflash.link import Link
from rakflash.protocols import legacy_dfu as ld
from rakflash.sim import firmware
from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD


@pytest.fixture
def arduino(virtual):
    """A started virtual Arduino RAK4631 on its USB line (conftest's ``virtual``)."""
    def make(**kw):
        kw.setdefault("baud", USB_FULL_SPEED_BAUD)
        return virtual("rak4631-arduino", **kw)

    return make


def sketch(dev, version="ARDUINO_SKETCH_1.1", size=20_000):
    return firmware.app_image(dev.module, version, size)


def touch_1200(dev) -> str:
    """The 1200-baud touch on the sketch's port; the bootloader's port, found by its USB id."""
    with Link(dev.port) as link:
        link.touch(1200)
        entry = ports.wait_for_port("rak4631-arduino", "bootloader", serial_number=dev.opts.serial_number,
                                    timeout=5)
    return entry.device


def test_header_and_crc_round_trip_and_damage_is_seen():
    frame = ld.encode_packet(3, ld.data_payload(b"\x00\xc0\xdb" * 10))
    body = dp_frames(frame)[0]
    f = ld.decode_frame(body)
    assert (f.seq, f.ack, f.reliable, f.ptype) == (3, 4, True, 14) and f.payload.endswith(b"\x00\xc0\xdb")
    assert ld.decode_frame(body[:5] + bytes([body[5] ^ 1]) + body[6:]) is None      # payload damaged
    assert ld.decode_frame(bytes([body[0] ^ 8]) + body[1:]) is None                  # header damaged


def dp_frames(raw: bytes) -> list[bytes]:
    from rakflash.protocols import slip
    return slip.Decoder().feed(raw)


def test_touch_re_enumerates_and_rakflash_updates_the_sketch(arduino):
    dev = arduino()
    assert ports.port_entry(dev.port).pid == 0x8029
    old = dev.port
    port = touch_1200(dev)
    assert port != old and ports.port_entry(port).pid == 0x002A       # serial-only DFU after a touch
    fw = sketch(dev)
    seen = []
    with Link(port) as link:
        client = ld.LegacyDfuClient(link, progress=lambda d, t: seen.append(d))
        client.send(dp.legacy_init_packet(fw), fw)
    assert seen[-1] == len(fw) and client.retried == 0
    back = ports.wait_for_port("rak4631-arduino", "app", timeout=5)
    assert back.pid == 0x8029 and dev.app_version == "ARDUINO_SKETCH_1.1"


def test_a_lost_acknowledgement_is_resent_and_not_taken_twice():
    host, device = pipe()
    written = bytearray()

    class Backend:
        def start(self, *a): return True
        def init(self, p): return True
        def data(self, offset, chunk): written[offset:offset + len(chunk)] = chunk
        def stop(self, size): return True

    target = ld.LegacyDfuTarget(device, Backend(), idle_timeout=5)
    result = {}
    threading.Thread(target=lambda: result.setdefault("r", target.serve()), daemon=True).start()
    dropped = []

    def lose_third_ack(data):
        if len(dropped) < 3:
            dropped.append(data)
            return data if len(dropped) < 3 else b""
        return data

    device.tamper = lose_third_ack        # the acknowledgement of the first DATA packet is lost
    fw = bytes(range(256)) * 8
    client = ld.LegacyDfuClient(host, ack_timeout=0.3)
    client.send(dp.legacy_init_packet(fw), fw)
    assert client.retried == 1 and bytes(written) == fw
    assert result.get("r") in (None, "activated")


def test_a_bootloader_that_never_answers_is_a_timeout_with_a_next_step():
    host, _device = pipe()
    with pytest.raises(TransferTimeout) as e:
        ld.LegacyDfuClient(host, ack_timeout=0.05, retries=1).send(b"x" * 14, b"y" * 100)
    assert "START" in e.value.message and "run the same command again" in e.value.hint


def test_a_rui3_package_sent_anyway_is_never_activated(arduino):
    """The Adafruit bootloader erases at START, before it sees the init packet: so rakflash must
    refuse such a package before sending (the flow does); the bootloader at least never starts it."""
    dev = arduino()
    fw = sketch(dev, size=5000)
    port = touch_1200(dev)
    with Link(port) as link:
        ld.LegacyDfuClient(link).send(dp.secure_init_packet(fw, key_pem=None), fw)
    assert dev.wait_mode("bootloader", 1) and dev.updates == 0
    assert ports.port_entry(port).mode == "bootloader"


# ------------------------------------------------------------------ interoperability

need_adafruit = pytest.mark.skipif(
    shutil.which("adafruit-nrfutil") is None and not os.environ.get("RAKFLASH_REQUIRE_PEERS"),
    reason="adafruit-nrfutil is not installed (pip install -e '.[test]' installs it)")


@pytest.mark.pty_only      # the peer opens a device path
@need_adafruit
def test_adafruit_nrfutil_updates_the_virtual_arduino_rak4631(arduino, tmp_path):
    """adafruit-nrfutil, unchanged, against the bootloader (entered by a double reset: UF2 mode).

    `--touch 1200` skips its DTR toggle, which a pty can't do; the bootloader ignores the touch.
    adafruit-nrfutil exits 0 even when it fails, so the module itself is asked."""
    dev = arduino(state="bootloader")
    assert ports.port_entry(dev.port).pid == 0x0029
    fw = sketch(dev, size=12_000)
    app = tmp_path / "sketch.bin"
    app.write_bytes(fw)
    pkg = tmp_path / "sketch.zip"
    subprocess.run(["adafruit-nrfutil", "dfu", "genpkg", "--dev-type", "0x0052", "--application",
                    str(app), str(pkg)], check=True, capture_output=True, timeout=60)
    done = subprocess.run(["adafruit-nrfutil", "dfu", "serial", "--package", str(pkg), "-p", dev.port,
                           "-b", "115200", "--singlebank", "--touch", "1200"],
                          capture_output=True, text=True, timeout=90)
    assert "Device programmed" in done.stdout, done.stdout + done.stderr
    assert ports.wait_for_port("rak4631-arduino", "app", timeout=5)
    assert dev.app_version == "ARDUINO_SKETCH_1.1" and dev.updates == 1


# ------------------------------------------------------------------ an interrupted session

def abandon_a_session(port: str, fw: bytes, packets: int) -> None:
    """What an interrupted run leaves: START, INIT and DATA packets up to ``packets`` in all,
    acknowledged, then nothing more (too-many-retries mid-DATA, SIGTERM, a closed terminal)."""
    init = dp.legacy_init_packet(fw)
    with Link(port) as link:
        client = ld.LegacyDfuClient(link)
        client.packet(ld.start_payload(ld.MODE_APPLICATION, app_size=len(fw)), "START", timeout=3)
        client.packet(ld.init_payload(init), "INIT", timeout=3)
        for i in range(packets - 2):
            client.packet(ld.data_payload(fw[i * 512:(i + 1) * 512]), "DATA")


@pytest.mark.parametrize("packets", range(3, 11), ids=lambda n: f"waits-for-packet-{(n + 1) % 8}")
def test_an_update_cut_mid_session_is_finished_by_the_same_command(arduino, tmp_path, packets):
    """The bootloader keeps an interrupted session: it waits for that session's next packet number
    and takes no new START (the Adafruit bootloader resets when one comes in mid-session). The
    re-run failed 'START was not acknowledged after 5 tries' with a hint about cables; it must
    restart the session and finish, whatever number the bootloader waits for: another than the new
    START's (it answers so), the START's own (it takes it: a START mid-session resets the chip), or
    the INIT's (it takes the START for a repeat, then the INIT: that resets the chip too)."""
    import json

    from conftest import run_cli
    dev = arduino()
    fw = sketch(dev, size=20_000)
    port = touch_1200(dev)
    abandon_a_session(port, sketch(dev, "ARDUINO_SKETCH_0.9", 20_000), packets)
    assert dev.mode.value == "bootloader" and not dev.app_present()       # the sketch is partly erased
    pkg = tmp_path / "sketch.zip"
    pkg.write_bytes(dp.legacy_package(fw))
    proc = run_cli("flash", str(pkg), "--port", port, "--yes", "--json", timeout=90)
    events = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert (proc.returncode, events[-1]["result"]) == (0, "ok"), events[-1]
    # The sketch runs (its port may be listed a moment before the simulated MCU says so on a
    # loaded host: wait for the mode, don't sample it once).
    assert dev.app_version == "ARDUINO_SKETCH_1.1" and dev.wait_mode("app", timeout=10), dev.mode
    notes = " | ".join(e["message"] for e in events if e.get("event") == "note")
    assert "earlier, interrupted update" in notes and "starts" in notes, notes


def test_a_bootloader_that_does_not_come_back_after_the_restart_says_what_to_press(arduino, tmp_path,
                                                                                    monkeypatch):
    """The restart that ends an earlier session needs the module to come back on a new port; one
    that doesn't is dfu-session-in-progress, with the reset press as the next step. (The Adafruit
    bootloader's error handler halts instead of resetting while a debugger is attached.)"""
    from rakflash.flows.session import FlashOptions, FlashSession
    from rakflash.images import load
    dev = arduino()
    port = touch_1200(dev)
    abandon_a_session(port, sketch(dev, "ARDUINO_SKETCH_0.9", 20_000), 5)
    served = ld.LegacyDfuTarget._process

    def restarts_into_nothing(self, payload):
        outcome = served(self, payload)
        while outcome == "reset" and not dev._stop:       # halted: no reset, no new port
            time.sleep(0.05)
        return outcome
    monkeypatch.setattr(ld.LegacyDfuTarget, "_process", restarts_into_nothing)
    pkg = tmp_path / "sketch.zip"
    pkg.write_bytes(dp.legacy_package(sketch(dev)))
    with Link(port) as link, pytest.raises(ld.EarlierSession) as caught:
        FlashSession(link, load(str(pkg)), FlashOptions()).run()
    assert "did not come back" in caught.value.message
    assert "Press the module's reset button once" in caught.value.hint
    assert caught.value.name == "dfu-session-in-progress" and caught.value.exit_code == 7
