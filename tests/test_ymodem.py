"""YMODEM: the sender against the receiver in memory, with faults; and against lrzsz through ptys."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import threading
import time

import pytest
import serial
from hypothesis import given, settings, strategies as st

from rakflash.errors import TooManyRetries, TransferCancelled, TransferTimeout
from rakflash.link import Link
from rakflash.protocols.ymodem import (ACK, CAN, STX, SOH, YmodemReceiver, YmodemSender, crc16,
                                       make_block)
from rakflash.sim import Mode

from pipes import pipe

FAST = dict(ack_timeout=0.5, erase_timeout=1.0, start_timeout=1.0, byte_time=0.0)


def run_pair(data: bytes, *, tamper=None, max_size=1 << 20, sender_kw=None, receiver_kw=None):
    host, dev = pipe()
    host.tamper = tamper
    got = bytearray()
    result = {}

    def device():
        r = YmodemReceiver(dev, max_size=max_size, read_timeout=0.05,
                           on_block=lambda off, d: got.__setitem__(slice(off, off + len(d)), d),
                           **(receiver_kw or {}))
        result["r"] = r.receive()

    t = threading.Thread(target=device, daemon=True)
    t.start()
    try:
        YmodemSender(host, **{**FAST, **(sender_kw or {})}).send("fw.bin", data)
    finally:
        t.join(5)
    return bytes(got), result.get("r"), host


def test_crc_check_value():
    assert crc16(b"123456789") == 0x31C3


@pytest.mark.parametrize("size", [0, 1, 127, 128, 129, 1023, 1024, 1025, 5000])
def test_sizes_arrive_intact(size):
    data = random.Random(size).randbytes(size)
    got, r, _ = run_pair(data)
    assert r.status == "ok" and r.size == size and r.name == "fw.bin"
    assert got == data


@settings(max_examples=15, deadline=None)
@given(st.binary(max_size=4000))
def test_any_data_arrives_intact(data):
    got, r, _ = run_pair(data)
    assert (r.status, got) == ("ok", data)


def test_each_block_is_sent_once_on_a_clean_line():
    data = bytes(range(256)) * 20
    _, _, host = run_pair(data)
    blocks = [w for w in host.written if w[:1] in (bytes([SOH]), bytes([STX])) and len(w) > 100]
    seqs = [b[1] for b in blocks]
    assert seqs == [0, 1, 2, 3, 4, 5, 0]        # block 0, five data blocks, the closing block


def test_a_damaged_block_is_resent():
    data = random.Random(3).randbytes(6000)
    hits = []

    def flip(block):
        if block[:1] == bytes([STX]) and block[1] == 3 and not hits:
            hits.append(1)
            return block[:10] + bytes([block[10] ^ 0x40]) + block[11:]
        return block
    got, r, host = run_pair(data, tamper=flip)
    assert hits and got == data and r.status == "ok"


def test_stale_poll_does_not_duplicate_a_block():
    """A 'C' the receiver sent before our block arrived must not count as a NAK."""
    host, dev = pipe()
    data = random.Random(5).randbytes(3000)
    got = bytearray()

    def device():
        dev.read(1 << 16, 0.0)
        dev.write(b"C")
        r = YmodemReceiver(dev, max_size=1 << 20, read_timeout=0.05,
                           on_block=lambda off, d: got.__setitem__(slice(off, off + len(d)), d))
        # an extra poll right away, like the RUI receiver answering the LF after at+update
        dev.write(b"C")
        r.receive()
    t = threading.Thread(target=device, daemon=True)
    t.start()
    YmodemSender(host, **{**FAST, "byte_time": 0.002}).send("fw.bin", data)
    t.join(5)
    zero_blocks = [w for w in host.written if w[:1] == bytes([SOH]) and w[1] == 0 and w[3:4] != b"\0"]
    assert len(zero_blocks) == 1
    assert bytes(got) == data


def test_receiver_that_always_naks_gives_too_many_retries():
    host, dev = pipe()

    def device():
        dev.write(b"C")
        while True:
            if not dev.read(1, 2):
                return
            dev.read(2000, 0.02)
            dev.write(bytes([0x15]))
    threading.Thread(target=device, daemon=True).start()
    with pytest.raises(TooManyRetries):
        YmodemSender(host, **FAST, retries=3).send("x", b"abc")


def test_silent_receiver_times_out_quickly():
    host, dev = pipe()
    dev.write(b"C")
    t0 = time.monotonic()
    with pytest.raises(TransferTimeout, match="stopped answering"):
        YmodemSender(host, **FAST).send("x", b"abc")
    assert time.monotonic() - t0 < 5


def test_receiver_cancel_is_named():
    host, dev = pipe()

    def device():
        dev.write(b"C")
        dev.read(133, 2)
        dev.write(bytes([CAN, CAN]))
    threading.Thread(target=device, daemon=True).start()
    with pytest.raises(TransferCancelled):
        YmodemSender(host, **FAST).send("x", b"abc")


def test_oversized_image_is_cancelled_by_the_receiver():
    with pytest.raises(TransferCancelled):
        run_pair(b"x" * 3000, max_size=2048)


def test_receiver_cancels_after_too_many_errors():
    data = random.Random(9).randbytes(5000)

    def corrupt_data_blocks(block):
        if block[:1] == bytes([STX]):
            return block[:5] + bytes([block[5] ^ 1]) + block[6:]
        return block
    with pytest.raises((TransferCancelled, TooManyRetries)):
        run_pair(data, tamper=corrupt_data_blocks)


def test_block_framing():
    b = make_block(1, b"hi")
    assert b[:3] == bytes([SOH, 1, 0xFE]) and len(b) == 133
    assert int.from_bytes(b[-2:], "big") == crc16(b[3:-2])


# ------------------------------------------------------------------ interoperability with lrzsz

need_lrzsz = pytest.mark.skipif(not (shutil.which("socat") and shutil.which("sb") and shutil.which("rb")),
                                reason="socat and lrzsz (sb/rb) are not installed; .ci/run installs them")


@pytest.fixture
def pty_pair():
    proc = subprocess.Popen(["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
                            stderr=subprocess.PIPE, text=True)
    paths = []
    deadline = time.monotonic() + 5
    while len(paths) < 2 and time.monotonic() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"PTY is (\S+)", line)
        if m:
            paths.append(m.group(1))
    assert len(paths) == 2, "socat did not report two ptys"
    yield paths
    proc.kill()
    proc.wait()


@need_lrzsz
def test_sender_delivers_to_lrzsz_rb(pty_pair, tmp_path):
    a, b = pty_pair
    data = random.Random(20).randbytes(20 * 1024 + 77)
    with open(b, "rb+", buffering=0) as tty:
        rb = subprocess.Popen(["rb", "--ymodem"], stdin=tty, stdout=tty, stderr=subprocess.DEVNULL,
                              cwd=tmp_path)
        try:
            with Link(a, 115200, exclusive=False) as link:
                YmodemSender(link, start_timeout=10, byte_time=10 / 115200).send("firmware.bin", data)
            rb.wait(20)
        finally:
            if rb.poll() is None:
                rb.kill()
                rb.wait()
    assert rb.returncode == 0
    assert (tmp_path / "firmware.bin").read_bytes() == data


@need_lrzsz
@pytest.mark.parametrize("one_k", [True, False])
def test_lrzsz_sb_delivers_into_the_simulated_bootloader(virtual, tmp_path, cat, one_k):
    from rakflash.sim import firmware
    dev = virtual("rak3172", state="bootloader", baud=115200)
    image = firmware.app_image(cat.module("rak3172"), "RUI_4.0.7_RAK3172-E", 12 * 1024 + 5)
    path = tmp_path / "rak3172_app.bin"
    path.write_bytes(image)
    with serial.Serial(dev.port, 115200, timeout=1) as s:
        s.write(b"at+update\r")                # the bootloader starts its YMODEM receiver
        assert s.read_until(b"C").endswith(b"C")
    with open(dev.port, "rb+", buffering=0) as tty:
        args = ["sb", "--ymodem"] + (["-k"] if one_k else []) + [str(path)]
        sb = subprocess.run(args, stdin=tty, stdout=tty, stderr=subprocess.PIPE, timeout=60)
    assert sb.returncode == 0, sb.stderr
    assert dev.wait_mode(Mode.APP)
    assert dev.app_version == "RUI_4.0.7_RAK3172-E"
    assert dev.flash.read(0x08006000, len(image)) == image
