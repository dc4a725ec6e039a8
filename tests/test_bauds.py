"""Every baud rate in the catalog works end to end; where a 1 KiB YMODEM block can't reach the
bootloader within its wait, 128-byte blocks do; where not even those can, the plan says why."""

from __future__ import annotations

import json
from pipes import pipe

import pytest

from conftest import cli_json, run_cli
from rakflash import catalog
from rakflash.errors import TooManyRetries, TransferCancelled
from rakflash.protocols import ymodem
from rakflash.sim import Mode, firmware

NEW = {"rak3172": "RUI_4.0.7_RAK3172-E", "rak811": "V3.0.0.15.H", "rak11720": "RUI_4.0.7_RAK11720"}


def _cases():
    """Each rate of the catalog's lists once on a RAK3172 (whose list has them all), the block-size
    switch points again on the RAK811's slower flash, and the lowest rate over AMOTA."""
    cat = catalog.load()
    every = sorted({b for m in cat.modules.values() for b in m.bauds})
    assert set(every) <= set(cat.module("rak3172").bauds)
    return ([("rak3172", b) for b in every] + [("rak811", 9600), ("rak811", 19200)]
            + [("rak11720", min(cat.module("rak11720").bauds))])


@pytest.mark.parametrize("module, baud", _cases())
def test_every_catalog_baud_rate_updates_end_to_end(virtual, tmp_path, cat, module, baud):
    dev = virtual(module, baud=baud, latency_ms=1.0)
    p = tmp_path / "small.bin"
    p.write_bytes(firmware.app_image(cat.module(module), NEW[module], 1536))
    args = ["flash", str(p), "--port", dev.port, "--baud", str(baud), "--yes", "--json"]
    if module == "rak811":
        args += ["--module", "rak811"]
    proc = run_cli(*args, timeout=120)
    events = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0, events[-1] if events else proc.stderr
    assert events[-1]["app_version_after"] == NEW[module] and dev.app_version == NEW[module]
    steps = " ".join(next(e for e in events if e.get("event") == "plan")["steps"])
    if module != "rak11720":
        small = baud < 38400          # 1,028 bytes after the header take over 0.35 s (0.7 of the wait)
        assert ("YMODEM with 128-byte blocks" in steps) == small, steps
        assert ("YMODEM-1K" in steps) == (not small), steps


def test_a_rate_too_slow_for_any_block_is_refused_in_the_plan(virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=2400, latency_ms=1.0)
    p = tmp_path / "small.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW["rak3172"], 1536))
    code, out = cli_json("flash", str(p), "--port", dev.port, "--baud", "2400", "--yes")
    assert (code, out["error"]) == (6, "baud-too-low"), out
    assert "even a 128-byte YMODEM block takes 0.55 s on the wire" in out["message"]
    assert "faster rate" in out["hint"] and "lower" not in out["hint"]
    assert dev.updates == 0 and dev.mode == Mode.APP


@pytest.mark.parametrize("baud, size", [(4800, 128), (9600, 128), (19200, 128), (38400, 1024),
                                        (57600, 1024), (115200, 1024), (2400, None)])
def test_block_size_follows_the_receivers_wait(baud, size):
    assert ymodem.block_size_for(baud, 0.5) == size
    assert ymodem.block_size_for(baud, None) == 1024       # a receiver without that limit (lrzsz)


def test_the_simulated_receiver_drops_a_block_slower_than_its_wait():
    """As ST IAP's ReceivePacket: the rest of a block must arrive within one read timeout."""
    import threading
    import time
    host, dev = pipe()
    got = []
    receiver = ymodem.YmodemReceiver(dev, max_size=4096, read_timeout=0.2,
                                     on_block=lambda off, data: got.append(data))
    thread = threading.Thread(target=lambda: got.append(receiver.receive()), daemon=True)
    thread.start()
    assert host.read(1, 1) == b"C"
    block0 = ymodem.header_block("x", 1024)
    host.write(block0)
    assert host.read(2, 1) == bytes([ymodem.ACK, ymodem.CRC_REQUEST])
    block = ymodem.make_block(1, b"d" * 1024)
    host.write(block[:600])                     # the line is too slow: the rest comes too late
    time.sleep(0.35)
    host.write(block[600:])
    assert host.read(1, 1) == b"C"              # taken as a bad packet, asked again
    host.write(ymodem.ABORT)
    thread.join(3)
    assert not [g for g in got if isinstance(g, bytes)]


def test_no_hint_suggests_a_lower_baud_rate():
    """Noise is met with a shorter cable and a good ground, not a lower rate (which the bootloader
    may not even have)."""
    import threading
    host, dev = pipe()
    dev.write(b"C")
    sender = ymodem.YmodemSender(host, ack_timeout=0.5, erase_timeout=0.5, start_timeout=0.5, retries=2)

    def every_block_damaged():            # what an ST IAP receiver answers a damaged block: C
        while dev.read(133, 2.0):
            dev.write(b"C")
    threading.Thread(target=every_block_damaged, daemon=True).start()
    with pytest.raises((TooManyRetries, TransferCancelled)) as exc:
        sender.send("x", b"abc")
    assert "baud" not in exc.value.hint and "GND" in exc.value.hint
