"""Nordic Secure DFU: rakflash's client against the virtual RAK4631-R's bootloader, over real ptys.

The virtual module re-enumerates on a new pty after AT+BOOT (native USB), checks
init packets as the nRF5 SDK bootloader does, and keeps its progress over a reset.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from pipes import pipe

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rakflash import dfu_package as dp
from rakflash import ports
from rakflash.errors import DfuRejected, PortDisconnected, PortNotBack, TransferError
from rakflash.link import Link
from rakflash.protocols import nordic_dfu as nd
from rakflash.protocols import slip
from rakflash.sim import firmware
from rakflash.sim.nordic_dfu import DfuState, InitVerdict, SecureDfuTarget
from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD

KEY = dp.new_signing_key()


@pytest.fixture
def rak4631(virtual):
    """Factory: a started virtual RAK4631-R (USB line, instant flash) that trusts KEY."""
    def make(**kw):
        kw.setdefault("baud", USB_FULL_SPEED_BAUD)
        kw.setdefault("dfu_key", KEY)
        return virtual("rak4631", **kw)

    return make


def app(dev, version="RUI_4.0.6_RAK4631", size=40_000):
    return firmware.app_image(dev.module, version, size)


def enter_dfu(dev) -> str:
    """AT+BOOT on the application's port; the bootloader's port, found as rakflash finds it."""
    with Link(dev.port) as link:
        link.write(b"AT+BOOT\r\n")
    entry = ports.wait_for_port("rak4631-r", "bootloader", serial_number=dev.opts.serial_number, timeout=5)
    return entry.device


def send(port, init, fw, **kw):
    with Link(port) as link:
        return nd.SecureDfuClient(link, **kw).send(init, fw)


# ------------------------------------------------------------------ framing

@given(st.binary(max_size=300))
def test_slip_round_trip(payload):
    frames = slip.Decoder().feed(b"\xc0" + slip.encode(payload))
    assert frames == ([payload] if payload else [])


def test_slip_drops_a_frame_with_a_broken_escape_and_keeps_the_next():
    d = slip.Decoder()
    assert d.feed(b"\x01\xdb\x00\x02\xc0" + slip.encode(b"ok")) == [b"ok"]
    assert d.dropped == 1


def test_write_size_and_prn_follow_the_mtu():
    assert nd.write_size(2051) == 1024 and nd.choose_prn(2051) == 0       # USB CDC: lossless
    assert nd.write_size(131) == 64 and nd.choose_prn(131) == 16          # UART: a CRC every 1 KiB


# ------------------------------------------------------------------ the virtual module

def test_at_boot_re_enumerates_on_a_new_port_with_the_bootloaders_usb_identity(rak4631):
    dev = rak4631()
    before = ports.port_entry(dev.port)
    assert (before.vid, before.pid, before.mode, before.module) == (0x1915, 0x521F, "app", "rak4631-r")
    old = dev.port
    new = enter_dfu(dev)
    assert new != old
    entry = ports.port_entry(new)
    assert entry.description == "Open DFU Bootloader" and entry.mode == "bootloader"
    assert entry.serial_number == before.serial_number
    assert ports.port_entry(old) is None or ports.port_entry(old).mode == "bootloader"


def test_a_port_that_does_not_come_back_is_a_named_error_naming_what_is_there(rak4631):
    dev = rak4631()
    with pytest.raises(PortNotBack) as e:
        ports.wait_for_port("rak4631-r", "bootloader", timeout=0.3)
    assert "did not come back" in e.value.message and f"{dev.port} (app)" in e.value.message
    assert e.value.exit_code == 4 and "rakflash ports" in e.value.hint


def test_update_end_to_end_the_new_application_answers_with_its_version(rak4631):
    dev = rak4631()
    fw = app(dev)
    init = dp.secure_init_packet(fw, key_pem=KEY, fw_version=2)
    seen = []
    report = send(enter_dfu(dev), init, fw, progress=lambda d, t: seen.append((d, t)))
    assert report.write_size == 1024 and report.prn == 0 and report.objects == 10
    assert seen[0] == (0, len(fw)) and seen[-1] == (len(fw), len(fw))
    entry = ports.wait_for_port("rak4631-r", "app", timeout=5)
    with Link(entry.device) as link:
        link.write(b"AT+VER=?\r\n")
        assert link.read_line(2) == b"AT+VER=RUI_4.0.6_RAK4631"


def test_a_cut_mid_object_resumes_from_the_devices_offset_and_crc(rak4631):
    dev = rak4631()
    fw = app(dev, size=30_000)
    init = dp.secure_init_packet(fw, key_pem=KEY, fw_version=2)
    port = enter_dfu(dev)
    # Power goes away in the middle of the fifth 4 KiB object (the init packet went first).
    dev.uart.faults.power_cut_after = dev.uart.faults.received + len(init) + 4 * 4096 + 2000
    with pytest.raises(PortDisconnected):          # native USB: the port goes with the power
        send(port, init, fw)
    port = ports.wait_for_port("rak4631-r", "bootloader", timeout=5).device
    report = send(port, init, fw)
    assert report.init_resumed and report.resumed_from == 4 * 4096     # whole executed objects kept
    assert report.objects == 4                                          # 30,000 bytes: 8 objects in all
    assert ports.wait_for_port("rak4631-r", "app", timeout=5)
    assert dev.app_version == "RUI_4.0.6_RAK4631" and dev.updates == 1


def test_an_object_damaged_on_the_way_is_sent_again_after_its_crc_check():
    """One byte of one Write flipped: the object's CRC disagrees, the object is created and sent again."""
    fw, flipped = FIRMWARE, []

    def tamper(data: bytes) -> bytes:
        if data[:1] == bytes([nd.OP_WRITE]) and len(data) > 500 and not flipped:
            flipped.append(1)
            return data[:100] + bytes([data[100] ^ 0x01]) + data[101:]
        return data

    host, backend, thread = served(requests=tamper)
    report = nd.SecureDfuClient(host).send(dp.secure_init_packet(fw, key_pem=None), fw)
    thread.join(5)
    assert report.retries == 1 and bytes(backend.mem[:len(fw)]) == fw and backend.activated


class _MemoryBackend:
    def __init__(self):
        self.mem = bytearray(64 * 1024)
        self.activated = False
        self.init = None

    def check_init(self, data):
        self.init = dp.parse_init(data)
        return InitVerdict(firmware_size=self.init.app_size)

    def begin_object(self, offset, size):
        pass

    def write(self, offset, data):
        self.mem[offset:offset + len(data)] = data

    def check_firmware(self, size):
        import hashlib
        return None if hashlib.sha256(bytes(self.mem[:size])).digest()[::-1] == self.init.hash else 0x0C

    def activate(self):
        self.activated = True


def test_a_small_mtu_uses_prn_and_still_delivers():
    host, device = pipe()
    fw = bytes(range(256)) * 20
    backend = _MemoryBackend()
    target = SecureDfuTarget(device, backend, DfuState(), mtu=131, idle_timeout=5)
    threading.Thread(target=target.serve, daemon=True).start()
    report = nd.SecureDfuClient(host).send(dp.secure_init_packet(fw, key_pem=None), fw)
    assert report.write_size == 64 and report.prn == 16 and bytes(backend.mem[:len(fw)]) == fw
    crc_answers = [w for w in device.written if w[:2] == bytes([nd.OP_RESPONSE, nd.OP_CRC])]
    assert len(crc_answers) > len(fw) // 1024     # the PRN answers, besides one per object


@pytest.mark.parametrize("make, reason, words", [
    (lambda fw: dp.secure_init_packet(fw, key_pem=None, fw_version=2), "signature-missing", "not signed"),
    (lambda fw: dp.secure_init_packet(fw, key_pem=dp.new_signing_key(), fw_version=2),
     "verification-failed", "signed with another key"),
    (lambda fw: dp.secure_init_packet(fw, key_pem=KEY, hw_version=53), "hw-version", "other hardware"),
    (lambda fw: dp.secure_init_packet(fw, key_pem=KEY, sd_req=(0x00B6,)), "sd-version", "SoftDevice"),
    (lambda fw: dp.secure_init_packet(fw, key_pem=KEY, fw_version=0), "fw-version", "lower"),
    (lambda fw: dp.legacy_init_packet(fw), "init-command-invalid", "init packet is invalid"),
])
def test_every_refusal_is_a_named_error_with_a_next_step(rak4631, make, reason, words):
    dev = rak4631()
    fw = app(dev, size=5000)
    with pytest.raises(DfuRejected) as e:
        send(enter_dfu(dev), make(fw), fw)
    err = e.value
    assert err.details["reason"] == reason and words in err.message and err.exit_code == 7
    assert err.hint and "Extended" not in err.hint
    assert dev.app_version == "RUI_4.0.5_RAK4631"          # nothing was written over the application


def test_the_bootloader_console_answers_beside_the_dfu_packets(rak4631):
    dev = rak4631()
    port = enter_dfu(dev)
    with Link(port) as link:
        link.write(b"\r\nAT\r\n")
        assert link.read_line(1) == b"AT not support."
        link.write(b"at+version\r\n")
        assert link.read_line(1) == b"RUI_BOOT_0.6_RAK4631"
        link.write(b"at+run\r\n")
        assert link.read_line(1) == b"Stop Boot Mode"
    assert ports.wait_for_port("rak4631-r", "app", timeout=5)


# ------------------------------------------------------------------ interoperability

def test_an_independent_secure_dfu_client_updates_the_virtual_module(rak4631, tmp_path):
    """nrfutil 6 doesn't install on Python 3.11, so a separate client written from Nordic's
    documented transport (tests/nrf_secure_dfu_reference.py) stands in for it, with a PRN too."""
    dev = rak4631()
    fw = app(dev, size=20_000)
    pkg = tmp_path / "rui3.zip"
    pkg.write_bytes(dp.secure_package(fw, key_pem=KEY, fw_version=2))
    client = Path(__file__).parent / "nrf_secure_dfu_reference.py"
    done = subprocess.run([sys.executable, str(client), enter_dfu(dev), str(pkg), "--prn", "4"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "mtu 2051" in done.stdout
    assert ports.wait_for_port("rak4631-r", "app", timeout=5)
    assert dev.app_version == "RUI_4.0.6_RAK4631"


FIRMWARE = bytes(range(256)) * 40


def served(answers=None, *, requests=None):
    """A Secure DFU target in memory; its answers pass through ``answers`` on their way to the
    host, the host's requests through ``requests``: (the host's end, the target's memory, its
    thread)."""
    host, device = pipe()
    backend = _MemoryBackend()
    target = SecureDfuTarget(device, backend, DfuState(), idle_timeout=5)
    thread = threading.Thread(target=target.serve, daemon=True)
    thread.start()
    device.tamper, host.tamper = answers, requests
    return host, backend, thread


def answer_to(data: bytes, op: int) -> bytes | None:
    """The SLIP frame's first three bytes if ``data`` is a successful answer to ``op``."""
    head = data.strip(b"\xc0")[:3]
    return head if head == bytes([nd.OP_RESPONSE, op, nd.RES_SUCCESS]) else None


@pytest.mark.parametrize("op", [nd.OP_CRC, nd.OP_SELECT, nd.OP_MTU])
def test_an_answer_that_lost_a_byte_on_the_way_is_asked_again(op):
    """A byte dropped from an answer (SLIP has no checksum) leaves it too short for its values:
    the request is sent again, not unpacked into a struct.error (found by the soak)."""
    fw, cut = FIRMWARE, []

    def tamper(data: bytes) -> bytes:
        if answer_to(data, op) and not cut:
            cut.append(1)
            return data[:-3] + data[-2:]          # one byte of its data lost
        return data

    host, backend, thread = served(tamper)
    report = nd.SecureDfuClient(host).send(dp.secure_init_packet(fw, key_pem=None), fw)
    thread.join(5)
    assert cut and bytes(backend.mem[:len(fw)]) == fw and backend.activated
    assert report.mtu == 2051 or op != nd.OP_MTU


def test_a_whole_object_written_but_not_executed_is_executed_by_the_re_run():
    """The checksum answer after an object's last Write is lost, so the run ends before its
    Execute: the device holds the whole object, unexecuted. The re-run executes it (as
    pc-nrfutil's resume does) instead of creating the next one — which the device starts at
    the last executed offset, so every object came back 'damaged' (found by the soak)."""
    from rakflash.errors import TransferTimeout
    fw, lost = FIRMWARE, []

    def tamper(data: bytes) -> bytes:
        frame = data.strip(b"\xc0")
        if frame[:2] == bytes([nd.OP_RESPONSE, nd.OP_CRC]) and frame[3:7] == (4096).to_bytes(4, "little") \
                and not lost:
            lost.append(1)
            return b""
        return data

    host, backend, thread = served(tamper)
    init = dp.secure_init_packet(fw, key_pem=None)
    with pytest.raises(TransferTimeout):
        nd.SecureDfuClient(host, timeouts=nd.Timeouts(reply=0.3)).send(init, fw)
    report = nd.SecureDfuClient(host).send(init, fw)
    thread.join(5)
    assert lost and report.resumed_from == 4096 and report.retries == 0
    assert bytes(backend.mem[:len(fw)]) == fw and backend.activated


@pytest.mark.parametrize("op", [nd.OP_CRC, nd.OP_SELECT, nd.OP_CREATE])
def test_a_result_code_no_bootloader_sends_is_taken_for_damage_and_asked_again(op):
    """One flipped bit turns SUCCESS (0x01) into 0x81, a code no Nordic bootloader sends: the
    request is asked again (the soak saw such answers end as 'result-129')."""
    fw, flipped = FIRMWARE, []

    def tamper(data: bytes) -> bytes:
        head = answer_to(data, op)
        if head and not flipped:
            flipped.append(1)
            return data.replace(head, bytes([nd.OP_RESPONSE, op, 0x81]), 1)
        return data

    host, backend, thread = served(tamper)
    report = nd.SecureDfuClient(host).send(dp.secure_init_packet(fw, key_pem=None), fw)
    thread.join(5)
    assert flipped and bytes(backend.mem[:len(fw)]) == fw and backend.activated
    assert report.retries >= 1


def test_a_damaged_answer_to_execute_is_named_and_not_sent_again():
    """Execute is not sent twice (a second one after the first took effect is out of order):
    a damaged answer ends in a named error whose hint is the re-run, which resumes."""
    fw, executes = FIRMWARE, []

    def tamper(data: bytes) -> bytes:
        head = answer_to(data, nd.OP_EXECUTE)
        if head:
            executes.append(1)
            if len(executes) == 2:                  # the first data object's Execute
                return data.replace(head, bytes([nd.OP_RESPONSE, nd.OP_EXECUTE, 0x41]), 1)
        return data

    host, _, _ = served(tamper)
    with pytest.raises(TransferError) as exc:
        nd.SecureDfuClient(host).send(dp.secure_init_packet(fw, key_pem=None), fw)
    assert exc.value.name == "transfer-error" and "arrived damaged" in exc.value.message
    assert "run the same command again" in exc.value.hint.lower() and len(executes) == 2
