"""STM32 ROM bootloader (AN3155): our client against our server in memory (every command,
both erase commands, the checksum, refusals and silences), and stm32flash / stm32loader
against the virtual chips through ptys."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pipes import pipe

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rakflash.errors import RomGarbled, RomNack, RomNoHandshake, RomSilent
from rakflash.protocols.stm32_rom import (
    ACK,
    ERASE,
    EXTENDED_ERASE,
    GET_CHECKSUM,
    NACK,
    RomClient,
    RomTimeouts,
    address_frame,
    stm32_crc,
)
from rakflash.sim import Mode
from rakflash.sim.stm32_rom import RomChip, RomServer

BASE, PAGE, PAGES = 0x08000000, 256, 64
STD = (0x00, 0x01, 0x02, 0x11, 0x21, 0x31, 0x63, 0x73, 0x82, 0x92)
FAST = RomTimeouts(answer=0.3, write=0.3, erase_page=0.01, erase_base=0.3, mass_erase=0.5)


class Memory:
    """A 16 KiB flash of 256-byte pages that refuses to program what is not erased."""

    def __init__(self, protected: bool = False) -> None:
        self.mem = bytearray(b"\x00" * PAGE * PAGES)
        self.readout_protected = protected
        self.erased: list[int] = []

    def _ok(self, a: int, n: int) -> bool:
        return BASE <= a and a + n <= BASE + len(self.mem)

    readable = writable = _ok

    def read(self, a: int, n: int) -> bytes:
        return bytes(self.mem[a - BASE:a - BASE + n])

    def program(self, a: int, data: bytes) -> None:
        if any(b != 0xFF for b in self.mem[a - BASE:a - BASE + len(data)]):
            raise ValueError("not erased")
        self.mem[a - BASE:a - BASE + len(data)] = data

    def erase_pages(self, pages):
        for p in pages:
            self.mem[p * PAGE:(p + 1) * PAGE] = b"\xff" * PAGE
        self.erased += pages

    def mass_erase(self):
        self.erase_pages(list(range(PAGES)))

    def set_readout_protection(self, active):
        self.readout_protected = active

    def page_count(self):
        return PAGES


def serve(erase=EXTENDED_ERASE, checksum=False, mass=True, memory=None):
    """A ROM on one end of a pipe (in a thread); returns (client, memory, server results)."""
    host, dev = pipe()
    memory = memory or Memory()
    chip = RomChip(pid=0x429, version=0x20, commands=STD + (erase,) + ((GET_CHECKSUM,) if checksum else ()),
                   mass_erase=mass)
    stop = threading.Event()
    results = []
    server = RomServer(dev, chip, memory, alive=lambda: not stop.is_set(), read_byte_timeout=0.05)

    def run():
        try:
            while not stop.is_set():
                results.append(server.serve())
                server.synced = False
        except EOFError:
            pass

    t = threading.Thread(target=run, daemon=True)
    t.start()
    client = RomClient(host, FAST)
    client._stop = stop
    return client, memory, results, host


@pytest.fixture
def rom():
    made = []

    def make(**kw):
        c = serve(**kw)
        made.append(c[0])
        return c

    yield make
    for c in made:
        c._stop.set()


@pytest.mark.parametrize("erase", [EXTENDED_ERASE, ERASE])
def test_write_read_erase_go_with_the_erase_command_get_offers(rom, erase):
    client, mem, results, host = rom(erase=erase)
    assert client.handshake(1.0) == "ack"
    info = client.get()
    assert info.erase_command == erase and info.version_text == "2.0"
    assert client.get_id() == 0x429
    client.erase_pages([1, 2])
    assert mem.erased == [1, 2]
    client.write_memory(BASE + 256, b"\x11\x22\x33")           # padded to 4 with 0xFF
    assert client.read_memory(BASE + 256, 5) == b"\x11\x22\x33\xff\xff"
    with pytest.raises(RomNack):                                # not erased: the chip refuses
        client.write_memory(BASE + 256, b"\x00" * 4)
    client.go(BASE)
    for _ in range(50):
        if results:
            break
        threading.Event().wait(0.02)
    assert results[0].status == "go" and results[0].address == BASE


def test_a_second_handshake_is_answered_nack(rom):
    client, *_ = rom()
    assert client.handshake(1.0) == "ack"
    assert client.handshake(1.0) == "nack"      # 0x7F 0x7F is a bad command: the ROM is in sync
    assert client.get_id() == 0x429


def test_mass_erase_refused_where_the_chip_has_none(rom):
    client, mem, *_ = rom(mass=False)
    client.handshake(1.0)
    client.get()
    with pytest.raises(RomNack) as exc:
        client.mass_erase()
    assert exc.value.details["step"] == "the mass erase" and mem.erased == []


def test_checksum_matches_the_crc_over_the_flash(rom):
    client, mem, *_ = rom(checksum=True)
    client.handshake(1.0)
    client.get()
    client.erase_pages([0])
    client.write_memory(BASE, bytes(range(64)))
    assert client.checksum(BASE, 64) == stm32_crc(bytes(range(64)))
    assert client.checksum(BASE, 128) == stm32_crc(bytes(range(64)) + b"\xff" * 64)


def test_readout_protection_leaves_only_the_identity_commands(rom):
    client, mem, results, host = rom(memory=Memory(protected=True))
    client.handshake(1.0)
    client.get()
    assert client.readout_protected(BASE)
    with pytest.raises(RomNack):
        client.write_memory(BASE, b"\0" * 4)
    client.readout_unprotect()                   # erases everything, then the chip resets
    assert mem.erased == list(range(PAGES)) and not mem.readout_protected
    assert client.handshake(1.0) == "ack"        # a fresh ROM after the reset
    client.get()
    assert not client.readout_protected(BASE)


def test_stray_zero_before_ack_is_skipped():
    class Line:
        def __init__(self):
            self.out = bytearray(b"\x00" + bytes([ACK]))

        def write(self, data):
            if data == b"\x00\xff":         # Get: a ROM's reply, a stray 0x00 before its ACK too
                self.out += b"\x00" + bytes([ACK, len(STD) + 1, 0x20, *STD, EXTENDED_ERASE, ACK])

        def read(self, n, timeout):
            got, self.out[:] = bytes(self.out[:n]), self.out[n:]
            return got

    assert RomClient(Line(), FAST).handshake(0.5) == "ack"


def test_silence_and_garbage_are_named():
    host, dev = pipe()
    client = RomClient(host, FAST)
    with pytest.raises(RomNoHandshake) as exc:
        client.handshake(0.3)
    assert exc.value.details["seen"] == "silent"
    dev.write(b"AT_COMMAND_NOT_FOUND\r\n" * 3)
    with pytest.raises(RomNoHandshake) as exc:
        client.handshake(0.3)
    assert exc.value.details["seen"] == "text"
    with pytest.raises(RomSilent):
        client.command(0x02)
    dev.write(b"\x42")
    with pytest.raises(RomGarbled):
        client.command(0x02)
    dev.write(bytes([NACK]))
    with pytest.raises(RomNack):
        client.command(0x02)


def test_a_damaged_address_is_nacked(rom):
    client, *_ = rom()
    client.handshake(1.0)
    client.get()
    client.command(0x11)
    frame = bytearray(address_frame(BASE))
    frame[4] ^= 1
    client.ch.write(bytes(frame))
    with pytest.raises(RomNack):
        client._ack("the read address")


def test_crc_is_the_stm32_crc_unit():
    # The STM32 CRC unit over one word 0x00000000 from init 0xFFFFFFFF (CRC-32/MPEG-2 of 4 zero bytes).
    assert stm32_crc(b"\0\0\0\0") == 0xC704DD7B
    with pytest.raises(ValueError):
        stm32_crc(b"123")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, PAGES * PAGE // 4 - 1), st.binary(min_size=1, max_size=256)),
                max_size=4))
def test_whatever_is_written_reads_back(writes):
    client, mem, *_ = serve()
    try:
        client.handshake(1.0)
        client.get()
        client.erase_pages(list(range(PAGES)))
        shadow = bytearray(b"\xff" * PAGE * PAGES)
        for word, data in writes:
            addr = word * 4
            data = data[:len(shadow) - addr]
            padded = data + b"\xff" * (-len(data) % 4)
            if not data or any(b != 0xFF for b in shadow[addr:addr + len(padded)]):
                continue
            client.write_memory(BASE + addr, data)
            shadow[addr:addr + len(padded)] = padded
        for off in range(0, 1024, 256):
            assert client.read_memory(BASE + off, 256) == bytes(shadow[off:off + 256])
    finally:
        client._stop.set()


# ------------------------------------------------------------------ third-party clients

# Skipped where the peers are missing, except in CI (.ci/run sets RAKFLASH_REQUIRE_PEERS).
need_stm32flash = pytest.mark.skipif(not shutil.which("stm32flash") and not os.environ.get("RAKFLASH_REQUIRE_PEERS"),
                                     reason="stm32flash (Debian package) is not installed")
try:
    import stm32loader  # noqa: F401
    HAVE_STM32LOADER = True
except ImportError:
    HAVE_STM32LOADER = False
need_stm32loader = pytest.mark.skipif(not HAVE_STM32LOADER and not os.environ.get("RAKFLASH_REQUIRE_PEERS"),
                                      reason="stm32loader (PyPI) is not installed")

# A pty can't carry parity (Linux clears or refuses PARENB), and stm32flash checks its
# settings after setting them, so it runs at -m 8n1 here; nothing else about it changes.
STM32FLASH = ["stm32flash", "-m", "8n1", "-b", "460800"]


@pytest.mark.pty_only      # the peer opens a device path
@need_stm32flash
@pytest.mark.parametrize("module,pid", [("rak811", "0x0429"), ("rak4270", "0x0447")])
def test_stm32flash_writes_verifies_reads_and_starts_the_virtual_chip(virtual, cat, tmp_path, module, pid):
    from rakflash.sim import firmware
    dev = virtual(module, boot_pin=True)
    assert dev.wait_mode(Mode.ROM)
    m = cat.module(module)
    image = firmware.app_image(m, "V3.0.0.99.H", 6000)
    path = tmp_path / "app.bin"
    path.write_bytes(image)
    w = subprocess.run([*STM32FLASH, "-w", str(path), "-v", "-S", f"{m.app.start:#x}", dev.port],
                       capture_output=True, text=True, timeout=60)
    assert w.returncode == 0, w.stdout + w.stderr
    assert f"Device ID    : {pid}" in w.stdout and "Wrote and verified" in w.stdout
    assert dev.flash.read(m.app.start, len(image)) == image
    back = tmp_path / "back.bin"
    r = subprocess.run([*STM32FLASH, "-r", str(back), "-S", f"{m.app.start:#x}:{len(image)}", dev.port],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert back.read_bytes() == image
    dev.set_boot_pin(False)
    g = subprocess.run([*STM32FLASH, "-g", f"{m.app.start:#x}", dev.port], capture_output=True,
                       text=True, timeout=60)
    assert g.returncode == 0, g.stdout + g.stderr
    assert dev.wait_mode(Mode.APP) and dev.app_version == "V3.0.0.99.H"


# stm32loader toggles RTS/DTR for reset and BOOT0, which a pty does not have: the wrapper
# turns those two calls into no-ops (the person holds BOOT0 here); its protocol code runs as is.
LOADER = """
import sys
from stm32loader import uart
uart.SerialConnection.enable_reset = lambda self, enable=True: None
uart.SerialConnection.enable_boot0 = lambda self, enable=True: None
from stm32loader.main import main
main(*sys.argv[1:])
"""


@pytest.mark.pty_only      # the peer opens a device path
@need_stm32loader
def test_stm32loader_mass_erases_writes_verifies_and_starts_the_virtual_rak3172(virtual, cat, tmp_path):
    from rakflash.sim import firmware
    dev = virtual("rak3172", boot_pin=True)
    assert dev.wait_mode(Mode.ROM)
    m = cat.module("rak3172")
    image = firmware.app_image(m, "RUI_4.0.9_RAK3172-E", 8192)
    path = tmp_path / "app.bin"
    path.write_bytes(image)
    p = subprocess.run([sys.executable, "-c", LOADER, "-p", dev.port, "-b", "115200", "-P", "none",
                        "-e", "-a", f"{m.app.start:#x}", "-w", "-v", "-g", f"{m.app.start:#x}",
                        "-n", str(path)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0x497" in (p.stdout + p.stderr).lower() and "Verification OK" in p.stderr
    assert dev.flash.read(m.app.start, len(image)) == image
    # it mass-erased (the STM32WL's ROM has one) and Go started the application directly
    assert dev.bootloader_version is None
    assert dev.wait_mode(Mode.APP) and dev.app_version == "RUI_4.0.9_RAK3172-E"


def test_a_flood_with_ack_bytes_in_it_is_no_handshake():
    # A sketch printing "humidity" sends 0x79 (ACK) all the time (issue 17.10): taken for the
    # ROM's answer, rakflash then waited for the line to go quiet, for ever.
    host, dev = pipe()
    stop = threading.Event()

    def sketch():
        n = 0
        while not stop.is_set():
            dev.write(f"sensor reading {n}: temperature=21.5 humidity=40\r\n".encode())
            n += 1
            stop.wait(0.001)

    threading.Thread(target=sketch, daemon=True).start()
    outcome = []

    def handshake():
        try:
            outcome.append(RomClient(host, FAST).handshake(1.0))
        except RomNoHandshake as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=handshake, daemon=True)
    waiting.start()
    waiting.join(15)
    stop.set()
    assert not waiting.is_alive(), "the handshake did not end by its window"
    assert isinstance(outcome[0], RomNoHandshake) and outcome[0].details["seen"] == "text"


def test_protection_is_claimed_only_when_every_probe_is_refused(rom):
    client, _, _, host = rom()
    client.handshake(1.0)
    damaged = []

    def damage_first_read_command(data: bytes) -> bytes:      # one bit flipped on the way to the chip
        if data == bytes([0x11, 0xEE]) and not damaged:
            damaged.append(data)
            return bytes([0x11, 0xEF])
        return data
    host.tamper = damage_first_read_command
    assert client.readout_protected(BASE) is False and damaged
    protected, _, _, _ = rom(memory=Memory(protected=True))
    protected.handshake(1.0)
    assert protected.readout_protected(BASE) is True
