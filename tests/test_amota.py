"""RAK11720: the Apollo3 OTA blob, AMOTA packets, and `rakflash flash` against the virtual module."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pipes import pipe

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FAST_BAUD, SRC, cli_json, flash_pressing_reset, run_cli
from rakflash.apollo3_ota import HEADER_SIZE, OtaHeader, build_blob, crc32_apollo3, looks_like_blob, parse_blob
from rakflash.errors import DeviceRejected, ImageFormatError, TransferTimeout, VerifyFailed
from rakflash.protocols import amota
from rakflash.sim import Mode, firmware

NEW = "RUI_4.0.6_RAK11720"


def test_crc_check_values():
    assert crc32_apollo3(b"123456789") == 0xC052A8C8
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_header_layout_and_round_trip():
    h = OtaHeader(0x14000, 1234, 0xDEADBEEF, version=7)
    raw = h.pack()
    assert len(raw) == 48
    words = struct.unpack("<12I", raw)
    assert words[:5] == (0, 0x14000, 1234, 0xDEADBEEF, 0)
    assert words[5:8] == (0xFFFFFFFF,) * 3 and words[11] == 0xFFFFFFFF and words[8] == 7
    assert OtaHeader.unpack(raw) == h


def test_blob_checks_length_and_crc():
    app = random.Random(1).randbytes(5000)
    blob = build_blob(app)
    assert looks_like_blob(blob)
    assert parse_blob(blob)[1] == app
    with pytest.raises(ImageFormatError, match="CRC"):
        parse_blob(blob[:100] + bytes([blob[100] ^ 1]) + blob[101:])
    with pytest.raises(ImageFormatError, match="truncated"):
        parse_blob(blob[:-10] + b"")


@settings(max_examples=50)
@given(st.integers(1, 4), st.binary(max_size=512))
def test_packet_framing_round_trip(cmd, payload):
    host, dev = pipe()
    host.write(amota.encode_packet(cmd, payload))
    length, c = struct.unpack("<HB", dev.read(3, 1))
    body = dev.read(length, 1)
    assert (c, body[:-4]) == (cmd, payload)
    assert struct.unpack("<I", body[-4:])[0] == zlib.crc32(payload)


def test_reply_lengths_match_the_vendor_script():
    assert amota.encode_reply(amota.DATA, 0, 512)[:4] == bytes([5, 0, 2, 0]) and len(amota.encode_reply(2, 0, 1)) == 8
    assert amota.encode_reply(amota.VERIFY, 0) == bytes([1, 0, 3, 0])
    assert amota.encode_packet(amota.VERIFY) == bytes([4, 0, 3, 0, 0, 0, 0])


def serve_in_thread(dev, app_size=1 << 20, **kw):
    flash = bytearray()
    state = {}

    def run():
        r = amota.AmotaReceiver(
            dev, load_address=0x14000, max_size=app_size, idle_timeout=1.0,
            on_header=lambda h: flash.clear(),
            on_data=lambda off, d: flash.__setitem__(slice(off, off + len(d)), d),
            read_image=lambda n: bytes(flash[:n]), **kw)
        state["result"] = r.serve()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return flash, state, t


def send_through_pipe(app, *, host_tamper=None, device_tamper=None, reply_timeout=1.0):
    """Our sender → our receiver in memory, with optional damage either way.
    Returns (what was written to flash, the receiver's result, progress reports)."""
    host, dev = pipe()
    host.tamper, dev.tamper = host_tamper, device_tamper
    flash, state, t = serve_in_thread(dev)
    progress = []
    amota.AmotaSender(host, reply_timeout=reply_timeout,
                      progress=lambda done, total: progress.append(done)).send(build_blob(app))
    t.join(2)
    return bytes(flash), state["result"], progress


def nth_of(cmd, n, change):
    """A tamper function that applies ``change`` to the ``n``-th packet (or reply) of ``cmd``."""
    seen = []

    def tamper(frame):
        if frame[2] == cmd:
            seen.append(1)
            if len(seen) == n:
                return change(frame)
        return frame
    return tamper


def test_sender_delivers_a_blob():
    app = random.Random(2).randbytes(20 * 1024 + 7)
    flash, result, _ = send_through_pipe(app)
    assert flash == app and result.status == "ok"


def test_damaged_data_packet_is_resent():
    app = random.Random(3).randbytes(3000)
    flash, result, _ = send_through_pipe(
        app, host_tamper=nth_of(amota.DATA, 1, lambda p: p[:20] + bytes([p[20] ^ 4]) + p[21:]))
    assert flash == app and result.status == "ok"


def test_bit_flip_in_the_length_field_is_resent():
    app = random.Random(4).randbytes(5000)
    flash, result, progress = send_through_pipe(
        app, host_tamper=nth_of(amota.DATA, 3, lambda p: p[:1] + bytes([p[1] ^ 0x04]) + p[2:]))
    assert flash == app and result.status == "ok" and progress.count(512) == 1


def test_bit_flip_in_the_command_byte_is_resent_after_the_deadline():
    app = random.Random(5).randbytes(5000)
    flash, result, _ = send_through_pipe(
        app, reply_timeout=0.3,
        host_tamper=nth_of(amota.DATA, 2, lambda p: p[:2] + bytes([p[2] ^ 0x08]) + p[3:]))
    assert flash == app and result.status == "ok"


def test_lost_data_reply_goes_on_from_where_the_device_stands():
    """No sequence numbers, so a lost DATA reply is not answered by sending DATA again (it
    would be written twice): the same HEADER asks the device for its count, and the
    transfer goes on from there (Ambiq's HEADER handling resumes)."""
    app = random.Random(6).randbytes(5000)
    host, dev = pipe()
    dev.tamper = nth_of(amota.DATA, 3, lambda r: b"")
    flash, state, t = serve_in_thread(dev)
    retries, progress = [], []
    sender = amota.AmotaSender(host, reply_timeout=0.3, on_retry=retries.append,
                               progress=lambda done, total: progress.append(done))
    sender.send(build_blob(app))
    t.join(2)
    assert bytes(flash) == app and state["result"].status == "ok"
    data = [w for w in host.written if w[2] == amota.DATA]
    assert len(data) == len(range(0, 5000, 512))            # every packet sent once
    assert progress.count(512) == 1 and sender.resumed == 1 and sender.started_over == 0
    assert any("asking the bootloader where it stands" in r for r in retries)


def test_a_bootloader_without_resume_starts_the_image_over():
    """A HEADER that erases and counts from 0 again: the reply says so, the image starts over."""
    app = random.Random(6).randbytes(5000)
    host, dev = pipe()
    dev.tamper = nth_of(amota.DATA, 3, lambda r: b"")
    flash, state, t = serve_in_thread(dev, resume=False)
    progress = []
    sender = amota.AmotaSender(host, reply_timeout=0.3,
                               progress=lambda done, total: progress.append(done))
    sender.send(build_blob(app))
    t.join(2)
    assert bytes(flash) == app and state["result"].status == "ok"
    assert progress.count(512) == 2 and sender.started_over == 1


def test_a_damaged_length_in_a_data_reply_is_not_an_internal_error():
    """Module → host: a DATA reply's length 5 arrives as 1 (a shorter, valid-looking one)."""
    app = random.Random(8).randbytes(3000)
    flash, result, progress = send_through_pipe(
        app, reply_timeout=0.3, device_tamper=nth_of(amota.DATA, 2, lambda r: b"\x01" + r[1:]))
    assert flash == app and result.status == "ok"
    assert progress.count(1024) == 1                       # not written twice


def test_a_damaged_count_in_a_data_reply_does_not_skip_or_repeat_a_packet():
    app = random.Random(9).randbytes(3000)
    flash, result, _ = send_through_pipe(
        app, reply_timeout=0.3, device_tamper=nth_of(amota.DATA, 2, lambda r: r[:5] + bytes([r[5] ^ 0x02]) + r[6:]))
    assert flash == app and result.status == "ok"


def test_a_damaged_count_in_the_position_reply_is_asked_again():
    """The HEADER reply that says where the device stands is taken only when two agree."""
    app = random.Random(10).randbytes(5000)
    headers = []

    def tamper(r):
        if r[2] == amota.DATA and not tamper.dropped:
            if struct.unpack("<I", r[4:8])[0] == 1536:
                tamper.dropped = True
                return b""                                  # the reply to DATA 3 is lost
        if r[2] == amota.HEADER:
            headers.append(r)
            if len(headers) == 2:                           # the first position answer: 1536 → 2048
                return r[:4] + struct.pack("<I", 2048)
        return r
    tamper.dropped = False
    flash, result, _ = send_through_pipe(app, reply_timeout=0.3, device_tamper=tamper)
    assert flash == app and result.status == "ok"
    assert len(headers) >= 4


def test_a_lost_reset_reply_is_not_sent_again():
    """RESET restarts the module: its reply lost is no failure, and the packet is not repeated."""
    app = random.Random(11).randbytes(2000)
    host, dev = pipe()
    dev.tamper = nth_of(amota.RESET, 1, lambda r: b"")
    flash, state, t = serve_in_thread(dev)
    amota.AmotaSender(host, reply_timeout=0.3).send(build_blob(app))
    t.join(2)
    assert state["result"].status == "ok"
    assert [w[2] for w in host.written].count(amota.RESET) == 1


def test_a_stray_byte_before_a_reply_costs_nothing():
    app = random.Random(7).randbytes(5000)
    flash, result, progress = send_through_pipe(
        app, reply_timeout=0.3, device_tamper=nth_of(amota.DATA, 3, lambda r: b"\xa7" + r))
    assert flash == app and progress.count(512) == 1      # no resend, no restart


def test_silent_device_times_out():
    host, _ = pipe()
    t0 = time.monotonic()
    with pytest.raises(TransferTimeout):
        amota.AmotaSender(host, reply_timeout=0.1, retries=2).send(build_blob(b"x" * 100))
    assert time.monotonic() - t0 < 2


def test_insufficient_flash_status_is_named():
    host, dev = pipe()
    serve_in_thread(dev, app_size=1000)
    with pytest.raises(DeviceRejected, match="insufficient flash") as e:
        amota.AmotaSender(host, reply_timeout=1).send(build_blob(b"y" * 2000))
    assert "does not fit the application region" in e.value.hint


def test_verify_mismatch_is_verify_failed():
    host, dev = pipe()
    serve_in_thread(dev)
    app = b"z" * 1500
    header = OtaHeader(0x14000, len(app), crc32_apollo3(app) ^ 1)
    with pytest.raises(VerifyFailed):
        amota.AmotaSender(host, reply_timeout=1).send(header.pack() + app)


@pytest.mark.parametrize("status", range(2, 8))
def test_every_status_maps_to_a_named_error_with_a_next_step(status):
    err = amota.status_error(amota.DATA, status)
    assert err.name == "device-rejected" and err.hint and amota.STATUS[status][0] in err.message


# ------------------------------------------------------------------ end to end through a pty

@pytest.fixture
def new_app(tmp_path, cat):
    p = tmp_path / "rak11720_new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak11720"), NEW, 30 * 1024 + 3))
    return p


def test_flash_rak11720_from_bin(virtual, new_app):
    dev = virtual("rak11720")
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert code == 0, out
    assert (out["app_version_before"], out["app_version_after"]) == ("RUI_4.0.5_RAK11720", NEW)
    assert dev.flash.read(0x14000, out["bytes"]) == new_app.read_bytes()


def test_boot_request_is_0xaa_in_the_flag_page(virtual, new_app):
    """RAK11720's AT+BOOT writes 0xAA at 0xFE000 (DESIGN.md §2); a finished update clears it."""
    dev = virtual("rak11720")
    with serial.Serial(dev.port, FAST_BAUD, timeout=0.5) as ser:
        ser.write(b"AT+BOOT\r\n")
        assert dev.wait_mode(Mode.BOOTLOADER)
    assert dev.flash.read(0xFE000, 1) == b"\xaa"
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert code == 0, out
    assert dev.flash.read(0xFE000, 1) == b"\xff" and dev.mode == Mode.APP


def test_flash_rak11720_from_existing_blob(virtual, new_app, tmp_path):
    dev = virtual("rak11720")
    blob = tmp_path / "app.ota"
    blob.write_bytes(build_blob(new_app.read_bytes(), version=3))
    code, out = cli_json("flash", str(blob), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert code == 0, out
    assert out["app_version_after"] == NEW


def test_damaged_blob_is_refused_before_writing(virtual, new_app, tmp_path):
    dev = virtual("rak11720")
    raw = bytearray(build_blob(new_app.read_bytes()))
    raw[HEADER_SIZE + 10] ^= 0xFF
    bad = tmp_path / "bad.ota"
    bad.write_bytes(bytes(raw))
    code, out = cli_json("flash", str(bad), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert (code, out["error"]) == (3, "image-format") and "CRC" in out["message"]
    assert dev.updates == 0 and dev.mode == Mode.APP


def test_truncated_blob_is_named_truncated(virtual, new_app, tmp_path):
    dev = virtual("rak11720")
    cut = tmp_path / "cut.ota"
    cut.write_bytes(build_blob(new_app.read_bytes())[:-100])
    code, out = cli_json("flash", str(cut), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert (code, out["error"]) == (3, "image-format") and "truncated" in out["message"], out
    code, out = cli_json("inspect", str(cut))
    assert code == 3 and "truncated" in out["message"]
    assert dev.updates == 0


def test_inspect_shows_blob_header(new_app, tmp_path):
    blob = tmp_path / "app.ota"
    blob.write_bytes(build_blob(new_app.read_bytes(), version=9))
    code, out = cli_json("inspect", str(blob))
    assert code == 0 and out["format"] == "apollo3-ota"
    assert out["ota_header"]["load_address"] == 0x14000 and out["ota_header"]["version"] == 9
    assert out["module"] == "RAK11720" and out["app_version"] == NEW
    text = run_cli("inspect", str(blob)).stdout
    assert "load 0x14000" in text and "version 9" in text and "not encrypted" in text
    assert "binary type" in text and "storage type" in text


def test_bit_errors_on_rak11720_are_retried(virtual, new_app):
    dev = virtual("rak11720")
    dev.uart.faults.bit_error_rate = 3e-5
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert code == 0, out
    assert dev.flash.read(0x14000, out["bytes"]) == new_app.read_bytes()


def test_rerun_after_a_client_left_the_packet_session_open(virtual, new_app):
    """Another uploader died mid-transfer: the bootloader still sits in its packet loop."""
    dev = virtual("rak11720")
    blob = build_blob(new_app.read_bytes())
    with serial.Serial(dev.port, FAST_BAUD, timeout=1.0) as ser:
        ser.write(b"AT+BOOT\r\n")
        assert dev.wait_mode(Mode.BOOTLOADER)
        time.sleep(0.1)
        ser.write(b"at+update\r\n")
        assert b"Start firmware upgrade" in ser.read_until(b"...\r\n")
        time.sleep(0.05)
        ser.write(amota.encode_packet(amota.HEADER, blob[:48]))
        assert len(ser.read(8)) == 8
        ser.write(amota.encode_packet(amota.DATA, blob[48:48 + 512]))
        assert len(ser.read(8)) == 8
    # …and nothing more: the session stays open.
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (code, out["mode"], out["module"]) == (0, "bootloader", "RAK11720"), out
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert (code, out["app_version_after"]) == (0, NEW), out


def test_interrupted_flash_then_rerun_at_once(virtual, new_app):
    """Ctrl-C mid-transfer ends the device's packet session too, so the re-run needs no wait."""
    dev = virtual("rak11720", baud=115200)
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "flash", str(new_app), "--port", dev.port,
                             "--yes", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    for line in proc.stdout:
        if '"progress"' in line and json.loads(line)["bytes"] >= 4096:
            proc.send_signal(signal.SIGINT)
            break
    assert proc.wait(20) == 130
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--yes")
    assert (code, out["app_version_after"]) == (0, NEW), out


def test_flash_write_error_names_the_swd_command(virtual, new_app):
    dev = virtual("rak11720")
    program = dev.flash.program

    def worn_out_application_pages(addr, data):
        if addr in dev.module.app:
            raise OSError("program failed")
        program(addr, data)
    dev.flash.program = worn_out_application_pages
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert (code, out["error"]) == (7, "device-rejected") and "flash write error" in out["message"]
    assert "'pyocd flash -t ama3b1kk_kbr -e sector -O keep_unwritten=true -O reset_type=emulated FULL.hex'" in out["hint"]
    assert dev.wait_mode(Mode.BOOTLOADER)            # the bootloader stays in charge


def test_power_cut_on_rak11720_then_rerun(virtual, new_app):
    dev = virtual("rak11720")
    dev.uart.faults.power_cut_after = dev.uart.faults.received + 12000
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", timeout=90)
    assert (code, out["error"]) == (7, "device-restarted"), out
    assert "run the same command again" in out["hint"]
    assert dev.wait_mode(Mode.BOOTLOADER)
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert code == 0, out


def test_flooding_rak11720_caught_after_reset(virtual, new_app):
    dev = virtual("rak11720", baud=115200, sketch="flooding", flood_after=0.5)
    time.sleep(0.7)
    code, events = flash_pressing_reset(dev, str(new_app), "--port", dev.port, "--yes",
                                        "--reset-window", "20")
    assert code == 0, events[-1]
    assert "caught" in [e.get("event") for e in events]
    assert dev.app_version == NEW
    # The new, shorter application is quiet even though the old sketch's bytes
    # remain in flash pages beyond it.
    time.sleep(0.7)
    code, out = cli_json("info", "--port", dev.port, "--baud", "115200")
    assert (code, out["mode"], out["app_version"]) == (0, "app", NEW), out


def test_flooding_rak11720_without_reset_names_the_swd_command(virtual, new_app):
    dev = virtual("rak11720", baud=115200, sketch="flooding", flood_after=0.3)
    time.sleep(0.5)
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--yes", "--reset-window", "2")
    assert (code, out["error"]) == (9, "boot-entry-failed")
    assert "setup()" in out["hint"]
    assert "'pyocd flash -t ama3b1kk_kbr -e sector -O keep_unwritten=true -O reset_type=emulated FIRMWARE.hex'" in out["hint"]
    assert "stm32flash" not in out["hint"]        # Apollo3 has no STM32 ROM bootloader


def test_vendor_script_habits_work_against_the_simulator(virtual, new_app):
    """A client like RAK's uploader (DESIGN.md §2): a 0.15 s sleep, AT+BOOT twice and AT+UPDATE
    with 2 s sleeps, no detection, fixed-size 8-byte reads. It drops what the consoles said
    before the packets, which is what lets its fixed-size reads line up with the replies."""
    dev = virtual("rak11720", baud=115200, latency_ms=0.5)
    blob = build_blob(new_app.read_bytes())
    with serial.Serial(dev.port, 115200, timeout=1.0) as ser:
        time.sleep(0.15)
        ser.write(b"AT+BOOT\r\n")
        time.sleep(2)
        ser.write(b"AT+BOOT\r\n")
        time.sleep(2)
        ser.write(b"AT+UPDATE\r\n")
        time.sleep(2)
        ser.reset_input_buffer()
        packets = [amota.encode_packet(amota.HEADER, blob[:48])]
        packets += [amota.encode_packet(amota.DATA, blob[i:i + 512]) for i in range(48, len(blob), 512)]
        for p in packets:
            ser.write(p)
            reply = ser.read(8)
            assert len(reply) == 8 and reply[:2] == b"\x05\x00" and reply[3] == 0
        for cmd in (amota.VERIFY, amota.RESET):
            ser.write(amota.encode_packet(cmd))
            reply = ser.read(8)                      # asks for 8, gets 4 after its timeout
            assert reply == bytes([1, 0, cmd, 0])
    assert dev.wait_mode(Mode.APP)
    assert dev.app_version == NEW


@pytest.mark.parametrize("cmd, status", [(amota.DATA, amota.NO_BUFFER), (amota.HEADER, amota.INVALID_HEADER)],
                         ids=["DATA ok read as insufficient buffer", "HEADER ok read as invalid header"])
def test_one_damaged_status_byte_is_not_a_refusal(cmd, status):
    """Module → host: a bit flipped in the status of an OK reply reads as a refusal. A refusal
    counts when it comes twice; a DATA packet is not sent again blindly (it was taken)."""
    app = random.Random(12).randbytes(3000)
    flash, result, progress = send_through_pipe(
        app, reply_timeout=0.3, device_tamper=nth_of(cmd, 2 if cmd == amota.DATA else 1,
                                                     lambda r: r[:3] + bytes([status]) + r[4:]))
    assert flash == app and result.status == "ok"
    assert progress.count(1024) == 1


def test_a_refusal_that_comes_twice_is_named():
    app = random.Random(13).randbytes(3000)
    refuse = lambda r: r[:3] + bytes([amota.NO_BUFFER]) + r[4:] if r[2] == amota.DATA else r  # noqa: E731
    with pytest.raises(DeviceRejected, match="insufficient buffer"):
        send_through_pipe(app, reply_timeout=0.3, device_tamper=refuse)
