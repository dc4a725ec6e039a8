"""The Apollo3 secure bootloader's wired update: framing, blobs, our client, and the simulated SBL."""

from __future__ import annotations

import random
import struct
import threading
import time
import zlib
from pipes import pipe

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from rakflash import apollo3_wired as wired
from rakflash.apollo3_info0 import rak11720_default
from rakflash.errors import DeviceRejected, ImageFormatError, TransferTimeout
from rakflash.protocols import apollo3_sbl as sbl
from rakflash.sim import Mode, firmware
from rakflash.sim.apollo3_sbl import SblReceiver

FAST = 921600


def info0_at(baud: int, **changes) -> bytes:
    """The simulated RAK11720's INFO0 with the wired update at ``baud`` (and other changes)."""
    return rak11720_default().replace(uart_baud=baud, **changes).raw


# ------------------------------------------------------------------ framing

def test_hello_is_the_vendor_scripts_bytes():
    # uart_wired_update.py: crc32(params) LE first, then the word (8 << 16) | HELLO.
    word = struct.pack("<I", 8 << 16)
    assert sbl.hello() == struct.pack("<I", zlib.crc32(word)) + word


@settings(max_examples=40)
@given(st.integers(0, 0xFFFFFFFF), st.binary(max_size=300))
def test_data_message_layout(seq, chunk):
    msg = sbl.encode_words(sbl.DATA, seq, data=chunk)
    crc, word, got_seq = struct.unpack_from("<III", msg)
    assert (word >> 16, word & 0xFFFF, got_seq) == (len(chunk) + 12, sbl.DATA, seq)
    assert crc == zlib.crc32(msg[4:]) and msg[12:] == chunk


def test_reply_sizes_are_what_the_vendor_script_reads():
    assert len(sbl.Status(1, 2, 3, 4).encode()) == 88
    assert len(sbl.Ack(sbl.UPDATE, 0).encode()) == 20


def test_reply_is_found_after_line_noise():
    host, dev = pipe()
    dev.write(b"\x00\xffgarbage" + sbl.Ack(sbl.DATA, 0, 512).encode())
    reply = sbl.read_reply(host, 1.0, (sbl.ACK,))
    assert isinstance(reply, sbl.Message) and sbl.Ack.decode(reply.payload) == sbl.Ack(sbl.DATA, 0, 512)


def test_text_instead_of_a_reply_is_handed_back():
    host, dev = pipe()
    dev.write(b"<BOOT MODE>\r\n")
    assert sbl.read_reply(host, 0.2) == b"<BOOT MODE>\r\n"


# ------------------------------------------------------------------ blobs

def test_blocks_split_at_the_vendor_size_and_round_trip():
    data = random.Random(1).randbytes(0x70000 + 1001)
    blocks = wired.build_blocks(data, 0x14000, ota=True)
    assert [b.header.load_address for b in blocks] == [0x14000, 0x84000]
    assert [b.header.size for b in blocks] == [0x70000, 1001]
    assert [b.header.ota for b in blocks] == [True, False]       # only the first block installs
    assert len(blocks[1].data) == 1004                         # padded to 4
    raw = b"".join(b.raw for b in blocks)
    again = wired.parse_blocks(raw)
    assert [(b.header, b.data) for b in again] == [(b.header, b.data) for b in blocks]
    assert wired.looks_like_blob(raw)


def test_wired_header_layout():
    raw = wired.WiredHeader(6, 0x14000, 0x7F48, options=1).pack()
    assert len(raw) == 96 and raw[80:82] == b"\x06\x01"
    assert struct.unpack_from("<III", raw, 84) == (0x12344321, 0x14000, 0x7F48)
    assert struct.unpack_from("<I", raw)[0] == 0x08000800        # key indexes 8, no algorithms


def test_truncated_and_foreign_blobs_are_named():
    raw = wired.build_blocks(b"x" * 5000, 0x14000)[0].raw
    with pytest.raises(ImageFormatError, match="truncated"):
        wired.parse_blocks(raw[:-8])
    with pytest.raises(ImageFormatError, match="not an Apollo3 wired-update blob"):
        wired.parse_blocks(b"\x01" * 200)


def test_ambiq_image_crc_is_checked():
    img = wired.build_image(b"code" * 100, 0xC000)
    parsed = wired.parse_image(img)
    assert parsed.crc_ok and parsed.install_address == 0xC000 and parsed.kind == "non-secure"
    broken = img[:200] + bytes([img[200] ^ 1]) + img[201:]
    assert not wired.parse_image(broken).crc_ok


# ------------------------------------------------------------------ client ↔ receiver in memory

def receiver_in_thread(dev, **kw):
    written = {}

    def on_block(raw):
        h = wired.WiredHeader.unpack(raw)
        written[h.load_address] = raw[96:96 + h.size]
        return kw.pop("block_status", sbl.SUCCESS)

    state = {}

    def run():
        state["result"] = SblReceiver(
            dev, status=lambda: sbl.Status(3, 0xF4000, 0, 0), on_block=on_block,
            on_otadesc=lambda a: sbl.SUCCESS, max_storage=0xF4000, first_timeout=2.0).serve()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return written, state, t


def nth(msg_type, n, change):
    seen = []

    def tamper(frame):
        if len(frame) >= 8 and struct.unpack_from("<I", frame, 4)[0] & 0xFFFF == msg_type:
            seen.append(1)
            if len(seen) == n:
                return change(frame)
        return frame
    return tamper


def deliver(data, *, host_tamper=None, device_tamper=None, reply=0.3):
    host, dev = pipe()
    host.tamper, dev.tamper = host_tamper, device_tamper
    written, state, t = receiver_in_thread(dev)
    assert isinstance(sbl.say_hello(host, 1.0), sbl.Status)
    client = sbl.SblClient(host, timing=sbl.Timing(reply=reply), chunk=1024)
    for block in wired.build_blocks(data, 0x14000):
        client.send_block(block)
    client.reset()
    t.join(2)
    return written, state["result"], client


def test_client_delivers_blocks_and_resets():
    data = random.Random(2).randbytes(9000)
    written, result, client = deliver(data)
    assert written[0x14000] == data and result.status == "reset" and client.retried == 0


def test_damaged_data_is_resent():
    data = random.Random(3).randbytes(5000)
    flip = nth(sbl.DATA, 2, lambda m: m[:40] + bytes([m[40] ^ 0x10]) + m[41:])
    written, _, client = deliver(data, host_tamper=flip)
    assert written[0x14000] == data and client.retried == 1


def test_lost_ack_is_not_written_twice():
    """DATA carries its offset: a resend after a lost ACK gets a sequence error = already taken."""
    data = random.Random(4).randbytes(5000)
    lose = nth(sbl.ACK, 3, lambda m: b"")
    written, _, client = deliver(data, device_tamper=lose)
    assert written[0x14000] == data and client.retried == 1


def test_silent_sbl_times_out_with_a_next_step():
    host, _ = pipe()
    client = sbl.SblClient(host, timing=sbl.Timing(reply=0.05), retries=2)
    t0 = time.monotonic()
    with pytest.raises(TransferTimeout) as e:
        client.send_block(wired.build_blocks(b"z" * 100, 0x14000)[0])
    assert time.monotonic() - t0 < 2 and "BOOT" in e.value.hint


@pytest.mark.parametrize("status", [1, 2, 4, 5, 6, 7, 8, 9, 11])
def test_every_refusal_is_a_named_error_with_a_next_step(status):
    err = sbl.status_error(sbl.UPDATE, status)
    assert err.name == "device-rejected" and err.hint and sbl.ACK_STATUS[status][0] in err.message


def test_security_refusal_points_to_swd():
    host, dev = pipe()
    receiver_in_thread(dev, block_status=sbl.SECURITY)
    client = sbl.SblClient(host, timing=sbl.Timing(reply=0.5))
    with pytest.raises(DeviceRejected, match="security") as e:
        client.send_block(wired.build_blocks(b"q" * 600, 0x14000)[0])
    assert "--via swd" in e.value.hint


# ------------------------------------------------------------------ the simulated SBL through a pty

def eventually(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def hello_over(port, baud, timeout=1.0):
    with serial.Serial(port, baud, timeout=timeout) as ser:
        ser.write(sbl.hello())
        return ser.read(88)


def test_boot_pin_held_at_reset_starts_the_sbl(virtual):
    dev = virtual("rak11720", boot_pin=True, info0=info0_at(FAST))
    assert dev.wait_mode(Mode.ROM)
    reply = hello_over(dev.port, FAST)
    status = sbl.find_reply(reply)
    assert status is not None and status.type == sbl.STATUS
    assert sbl.Status.decode(status.payload).max_storage == 0x100000 - 0xC000


def test_without_boot_the_rui_firmware_runs(virtual):
    dev = virtual("rak11720", info0=info0_at(FAST))
    assert dev.wait_mode(Mode.APP)
    dev.set_boot_pin(True)
    dev.press_reset()
    assert dev.wait_mode(Mode.ROM)
    dev.set_boot_pin(False)
    dev.press_reset()
    assert dev.wait_mode(Mode.APP)


@pytest.mark.parametrize("change", [dict(override_gpio=0x7F), dict(override_gpio=17),
                                    dict(override_high=False), dict(valid=False)])
def test_an_info0_set_otherwise_makes_boot_do_nothing(virtual, change):
    dev = virtual("rak11720", boot_pin=True, info0=info0_at(FAST, **change))
    assert dev.wait_mode(Mode.APP)                      # the SBL never takes over
    assert sbl.find_reply(hello_over(dev.port, FAST, 0.3)) is None


def test_wired_timeout_then_the_firmware_starts(virtual):
    dev = virtual("rak11720", boot_pin=True, info0=info0_at(FAST, wired_timeout_ms=300))
    assert dev.wait_mode(Mode.ROM)
    assert dev.wait_mode(Mode.APP, timeout=3)


def test_sbl_answers_only_at_the_info0_baud(virtual):
    dev = virtual("rak11720", baud=FAST, boot_pin=True)      # INFO0 says 115200
    assert dev.wait_mode(Mode.ROM)
    assert sbl.find_reply(hello_over(dev.port, FAST, 0.3)) is None
    assert sbl.find_reply(hello_over(dev.port, 115200)) is not None


def test_in_place_blocks_rewrite_a_bricked_module(virtual, cat):
    """No RUI bootloader and no application: the SBL writes both where they belong."""
    mod = cat.module("rak11720")
    dev = virtual("rak11720", boot_pin=True, info0=info0_at(FAST))
    dev.flash.load(0xC000, b"\xff" * 0x8000)
    dev.flash.load(0x14000, b"\xff" * 0x20000)
    boot = firmware.bootloader_image(mod, "RUI_BOOT_0.4_RAK11720")
    app = firmware.app_image(mod, "RUI_4.0.6_RAK11720", 20000)
    with serial.Serial(dev.port, FAST, timeout=1) as ser:
        ser.write(sbl.hello())
        assert sbl.find_reply(ser.read(88))
        client = sbl.SblClient(serial_channel(ser), timing=sbl.Timing(byte_time=10 / FAST))
        for addr, data in [*boot.items(), (0x14000, app)]:
            for block in wired.build_blocks(data, addr):
                client.send_block(block)
        dev.set_boot_pin(False)
        client.reset()
    assert dev.wait_mode(Mode.APP)
    assert dev.app_version == "RUI_4.0.6_RAK11720" and dev.bootloader_version == "RUI_BOOT_0.4_RAK11720"


def test_sbl_refuses_its_own_region_and_unsigned_blobs_when_info0_wants_signatures(virtual):
    dev = virtual("rak11720", boot_pin=True, info0=info0_at(FAST, security_policy=1))
    with serial.Serial(dev.port, FAST, timeout=1) as ser:
        ser.write(sbl.hello())
        assert sbl.find_reply(ser.read(88))
        client = sbl.SblClient(serial_channel(ser))
        with pytest.raises(DeviceRejected, match="security"):
            client.send_block(wired.build_blocks(b"a" * 1000, 0x14000)[0])
    dev2 = virtual("rak11720", boot_pin=True, info0=info0_at(FAST))
    with serial.Serial(dev2.port, FAST, timeout=1) as ser:
        ser.write(sbl.hello())
        assert sbl.find_reply(ser.read(88))
        with pytest.raises(DeviceRejected, match="invalid address"):
            sbl.SblClient(serial_channel(ser)).send_block(wired.build_blocks(b"a" * 1000, 0x2000)[0])
    assert dev2.flash.read(0x2000, 4) != b"aaaa"


class serial_channel:
    """A pyserial port as a ByteChannel (the tests' stand-in for rakflash's Link)."""

    def __init__(self, ser):
        self.ser = ser

    def read(self, n, timeout):
        self.ser.timeout = timeout
        return self.ser.read(n)

    def write(self, data):
        self.ser.write(data)


# ------------------------------------------------------------------ RAK's uploader, byte for byte

def vendor_burn_bootloader(port: str, blob: bytes, *, otadesc: int = 0xF8000, reset: int = 1,
                           split: int = 0x70000, person=None) -> list[str]:
    """A client with the habits of RAK's ``uart_wired_update.py`` as "Burn Bootloader" runs it
    (``-f bootloader_apollo3_ota.bin -i 6 -o 0xF8000``, 115200 baud): opens the port with a 16 s
    timeout, says RESET, sleeps 2 s, sends HELLO and reads exactly 88 bytes; then OTADESC, the
    blob's blocks last first (UPDATE, DATA chunks of 8180 bytes with their offset), RESET —
    every message as its CRC, a 0.15 s sleep, then the rest, every ACK read as exactly 20 bytes,
    a NACK retried up to 4 times. Returns what it would print that matters."""
    said = []
    with serial.Serial(port, 115200, timeout=16) as ser:
        if person:
            person()                       # the person resets the board now
        time.sleep(2)

        def send(params, n):
            ser.write(struct.pack("<I", zlib.crc32(params)))
            time.sleep(0.15)
            ser.write(params)
            return ser.read(n)

        def send_acked(params):
            for _ in range(1, 5):
                r = send(params, 20)
                assert len(r) == 20, "No response"
                word = struct.unpack_from("<I", r, 4)[0]
                assert word & 0xFFFF == 7, "unexpected response"
                if struct.unpack_from("<I", r, 12)[0] == 0:
                    return r
                said.append("Received NACK")
            raise AssertionError("numTries exceeded")

        r = send(struct.pack("<I", (8 << 16) | 0), 88)
        word = struct.unpack_from("<I", r, 4)[0]
        if word & 0xFFFF != 1:
            said.append("Received Unknown Message")
            return said
        said.append("Received Status")
        send_acked(struct.pack("<II", (12 << 16) | 2, otadesc))
        block = 96 + split
        n = (len(blob) + block - 1) // block
        end = len(blob)
        for i in range(n, 0, -1):
            start = (i - 1) * block
            part = blob[start:end]
            end -= len(part)
            send_acked(struct.pack("<IIII", (20 << 16) | 3, len(part), zlib.crc32(part), 0))
            for x in range(0, len(part), 8192 - 12):
                chunk = part[x:x + 8192 - 12]
                send_acked(struct.pack("<II", ((len(chunk) + 12) << 16) | 8, x) + chunk)
        send_acked(struct.pack("<II", (12 << 16) | 6, reset))
        said.append("Done.")
    return said


def test_rak_burn_bootloader_flow_works_against_the_simulator(virtual, cat):
    """RAK's own recovery: a wired blob that stages the RUI bootloader at 0x14000 and has the
    SBL install it at 0xC000 by OTA at the next reset (like prebuilt/bootloader_apollo3_ota.bin)."""
    mod = cat.module("rak11720")
    dev = virtual("rak11720", baud=115200, latency_ms=0.5)
    dev.flash.load(0xC000, b"\xff" * 0x8000)                  # the RUI bootloader is gone
    code = firmware.bootloader_image(mod, "RUI_BOOT_0.3_RAK11720")[0xC000]
    blob = b"".join(b.raw for b in wired.build_blocks(wired.build_image(code, 0xC000), 0x14000, ota=True))

    def person():
        dev.set_boot_pin(True)
        dev.press_reset()
    said = vendor_burn_bootloader(dev.port, blob, person=person)
    assert said == ["Received Status", "Done."]
    # BOOT is still held: the chip restarts, installs the OTA, and its SBL listens again.
    assert eventually(lambda: dev.sbl_sessions == 1 and dev.ota_pointer is None)
    assert dev.mode == Mode.ROM
    assert dev.flash.read(0xC000, len(code)) == code
    assert dev.flash.read(0xF8000, 4) == struct.pack("<I", 0x14000)   # entry: done, success
    dev.set_boot_pin(False)
    dev.press_reset()
    assert dev.wait_mode(Mode.BOOTLOADER)     # RUI's bootloader runs; the app page held the staging copy


def test_vendor_client_gets_unknown_message_when_the_reset_comes_too_late(virtual):
    """The seed thread: HELLO went out before the reset, the app answered, the script gave up."""
    dev = virtual("rak11720", baud=115200, latency_ms=0.5, boot_pin=False)
    late = threading.Timer(2.6, lambda: (dev.set_boot_pin(True), dev.press_reset()))
    late.start()
    try:
        with serial.Serial(dev.port, 115200, timeout=1.5) as ser:
            time.sleep(2)
            ser.write(sbl.hello())
            reply = ser.read(88)
        assert sbl.find_reply(reply) is None   # "Received Unknown Message" (or no response)
    finally:
        late.cancel()
