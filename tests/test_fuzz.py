"""Fuzzing every parser that reads outside input: no internal error, whatever comes in.

Each target gets arbitrary (and, where it helps, nearly valid) input from
Hypothesis and must end in a result or a named rakflash error — never any
other exception, never a hang (every client here runs with tiny deadlines).
The outside input is what a person hands rakflash (firmware files, OTA blobs,
DFU packages, INFO0 dumps, the kept-settings file) and what a device answers
(AT replies, YMODEM, AMOTA, AN3155, SBL, Secure and legacy DFU replies).

In CI each target runs a few dozen examples, derandomized (the same ones every
run). For a long run (docs/reliability.md has the counts)::

    RAKFLASH_FUZZ_EXAMPLES=5000 RAKFLASH_FUZZ_REPORT=fuzz.json pytest tests/test_fuzz.py -n 0
"""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rakflash import catalog as _catalog
from rakflash.errors import RakflashError

EXAMPLES = int(os.environ.get("RAKFLASH_FUZZ_EXAMPLES", "40"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize="RAKFLASH_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
COUNTS: Counter = Counter()
CAT = _catalog.load()


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    """Write how many examples each target ran to $RAKFLASH_FUZZ_REPORT (for docs/reliability.md)."""
    yield
    path = os.environ.get("RAKFLASH_FUZZ_REPORT")
    if path:
        old = json.load(open(path)) if os.path.exists(path) else {}
        for k, v in COUNTS.items():
            old[k] = old.get(k, 0) + v
        with open(path, "w") as f:
            json.dump(old, f, indent=1, sort_keys=True)


def named_or_result(target: str, call):
    """Run ``call``; a RakflashError is a fine ending, anything else fails the test.
    (``target`` names the parser in a failure's report.)"""
    try:
        return call()
    except RakflashError as exc:
        assert exc.name and exc.message and exc.hint, exc
        return exc


class Device:
    """A device that answers every write with the next of ``answers`` (then stays silent).

    The ByteChannel shape (``read(n, timeout)``, ``write``) for protocol clients;
    reads never wait long: silence costs a millisecond, not the deadline.
    """

    def __init__(self, answers: list[bytes], first: bytes = b"") -> None:
        self.answers = list(answers)
        self.buf = bytearray(first)
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.answers:
            self.buf += self.answers.pop(0)

    def read(self, n: int, timeout: float) -> bytes:
        if not self.buf:
            time.sleep(min(timeout, 0.001))
            return b""
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


answers = st.lists(st.binary(max_size=80), max_size=12)


def mostly_right(right: list[bytes]):
    """A device that answers as it should, except now and then: an answer damaged (a byte
    changed), lost, cut short, doubled, or with noise around it — what a bad line does.
    Gets the fuzzing deep into a session rather than stopping at its first byte."""
    @st.composite
    def strategy(draw):
        out = []
        for answer in right:
            kind = draw(st.sampled_from(["ok"] * 3 + ["flip", "flip-head", "flip-head", "lost", "short", "twice",
                                                       "noise", "any"]))
            if kind.startswith("flip") and answer:        # framing lives in the first bytes
                at = draw(st.integers(0, min(3, len(answer) - 1) if kind == "flip-head" else len(answer) - 1))
                bit = 1 << draw(st.integers(0, 7))              # a bit error, as on the line
                answer = answer[:at] + bytes([answer[at] ^ bit]) + answer[at + 1:]
            elif kind == "lost":
                answer = b""
            elif kind == "short":
                answer = answer[:draw(st.integers(0, max(0, len(answer) - 1)))]
            elif kind == "twice":
                answer = answer + answer
            elif kind == "noise":
                answer = draw(st.binary(max_size=6)) + answer + draw(st.binary(max_size=6))
            elif kind == "any":
                answer = draw(st.binary(max_size=12))
            out.append(answer)
        return out + draw(st.lists(st.binary(max_size=12), max_size=3))
    return strategy()


# ------------------------------------------------------------------ firmware files

@pytest.fixture(scope="module")
def fw_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz-files")


def _valid_hex() -> bytes:
    from rakflash.sim import firmware
    return firmware.combined_hex(CAT.module("rak3172"), "RUI_BOOT_0.8_STM32WLE5CC",
                                 "RUI_4.0.6_RAK3172-E", 1024).encode()


VALID_HEX = _valid_hex()


def mutated(base: bytes):
    """``base`` with a few bytes changed, cut, or inserted."""
    @st.composite
    def strategy(draw):
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 6))):
            kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
            at = draw(st.integers(0, max(0, len(data) - 1)))
            if kind == "flip" and data:
                data[at] ^= draw(st.integers(1, 255))
            elif kind == "cut":
                del data[at:at + draw(st.integers(1, 40))]
            elif kind == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=20))
            else:
                del data[at:]
        return bytes(data)
    return strategy()


def _load_and_analyse(path, target):
    from rakflash import images

    def go():
        img = images.load(path)
        images.analyse(img)
        for key in ("rak3172", "rak811", "rak11720"):
            try:
                images.analyse(img, module=CAT.module(key))
            except RakflashError:
                pass
        return img
    return named_or_result(target, go)


@fuzz
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".bin", ".hex", ".ota", ".zip", ""]))
def test_any_bytes_as_a_firmware_file(fw_dir, data, suffix):
    COUNTS["firmware file (.bin/.hex/.ota/.zip/none): any bytes"] += 1
    p = fw_dir / f"fw{suffix}"
    p.write_bytes(data)
    _load_and_analyse(p, "firmware file: any bytes")


@fuzz
@given(data=mutated(VALID_HEX))
def test_a_damaged_intel_hex_file(fw_dir, data):
    COUNTS["firmware file: damaged Intel HEX"] += 1
    p = fw_dir / "fw.hex"
    p.write_bytes(data)
    _load_and_analyse(p, "firmware file: damaged Intel HEX")


def _valid_blob() -> bytes:
    from rakflash.apollo3_ota import build_blob
    from rakflash.sim import firmware
    return build_blob(firmware.app_image(CAT.module("rak11720"), "RUI_4.0.6_RAK11720", 1024))


@fuzz
@given(blob=st.one_of(mutated(_valid_blob()), st.binary(min_size=40, max_size=600),
                      st.binary(max_size=600).map(lambda app: _build_blob(app))))
def test_an_apollo3_ota_blob(fw_dir, blob):
    COUNTS["Apollo3 OTA blob (file and parser)"] += 1
    from rakflash.apollo3_ota import looks_like_blob, parse_blob
    looks_like_blob(blob)
    named_or_result("OTA blob", lambda: parse_blob(blob))
    p = fw_dir / "app.ota"
    p.write_bytes(blob)
    _load_and_analyse(p, "firmware file: OTA blob")


def _build_blob(app: bytes) -> bytes:
    from rakflash.apollo3_ota import build_blob
    return build_blob(app)


# ------------------------------------------------------------------ AT replies

AT_LINES = st.one_of(
    st.sampled_from(["OK", "AT_ERROR", "AT_PARAM_ERROR", "AT_COMMAND_NOT_FOUND", "ERROR: 1", "ERROR: 99",
                     "AT not support.", "<BOOT MODE>", "Boot Mode", "Stop Boot Mode", "", "C",
                     "AT+VER=RUI_4.0.5_RAK3172-E", "OK V3.0.0.13.H", "RUI_BOOT_0.8_STM32WLE5CC",
                     "AT+HWMODEL=rak3172", "AT+SN=SIM0000001", "AT+DEVEUI=AC1F09FFFE0A0B0C",
                     "AT+DEVEUI=AC1F09FFFE0A0B0D", "AT+APPKEY=" + "0" * 32, "AT+BAND=4"]),
    st.text(max_size=70), st.binary(max_size=70).map(lambda b: b.decode("latin-1")))


@fuzz
@given(dialect=st.sampled_from(["rui3", "rui-v3", "rui-boot"]), command=st.sampled_from(
    ["AT", "AT+VER=?", "AT+DEVEUI=?", "at+version", "at+bootstatus", "AT+BOOT"]), lines=st.lists(AT_LINES, max_size=8))
def test_at_replies_are_parsed_whatever_they_hold(dialect, command, lines):
    COUNTS["AT reply parser (3 dialects)"] += 1
    from rakflash.at import parse_reply
    reply = parse_reply(CAT.dialects[dialect], command, lines)
    assert reply.status in ("ok", "error", "none")


def fake_link(device: Device):
    from rakflash.link import Link

    class FakeSerial:
        def __init__(self) -> None:
            self.baudrate, self.parity, self.timeout, self.rts, self.dtr = 115200, "N", 0, False, False

        @property
        def in_waiting(self) -> int:
            return len(device.buf)

        def read(self, n: int) -> bytes:
            return device.read(n, self.timeout or 0)

        def write(self, data: bytes) -> int:
            device.write(bytes(data))
            return len(data)

        def close(self) -> None:
            pass

    class FuzzLink(Link):
        @staticmethod
        def _open(port, baud, parity, exclusive):
            return FakeSerial()

    return FuzzLink("fuzz://device", exclusive=False)


def _at_answers(lines):
    return [b"".join(ln.encode("latin-1", "replace") + b"\r\n" for ln in group) for group in lines]


@fuzz
@given(lines=st.lists(st.lists(AT_LINES, max_size=4), max_size=14), first=st.binary(max_size=40))
def test_identify_whatever_the_device_answers(lines, first):
    COUNTS["identify: AT replies over a link"] += 1
    from rakflash.flows.identify import Timing, identify
    tiny = Timing(listen=0.002, flood_confirm=0.002, probe=0.01, query=0.01)
    link = fake_link(Device(_at_answers(lines), first))
    named_or_result("identify: AT replies", lambda: identify(link, baud=115200, scan=False, timing=tiny))


@fuzz
@given(lines=st.lists(st.lists(AT_LINES, max_size=3), max_size=20))
def test_a_key_is_taken_only_when_read_the_same_twice_and_well_formed(lines):
    """Whatever the answers, a value read_settings trusts came twice, well-formed."""
    COUNTS["settings read: AT replies (consistency property)"] += 1
    from rakflash.flows import settings as keys
    module = CAT.module("rak3172")
    link = fake_link(Device(_at_answers(lines)))
    reading = keys.read_settings(link, module, timeout=0.005)
    said = [ln.split("=", 1)[1] for group in lines for ln in group if "=" in ln]
    for query, value in reading.values.items():
        assert keys.well_formed(module, query, value)
        assert said.count(value) >= 2, (query, value)
    assert set(reading.unreadable) | {keys.setting_name(q) for q in reading.values} == \
        {"DEVEUI", "APPEUI", "APPKEY", "BAND"}


# ------------------------------------------------------------------ the kept-settings file

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=12)
SETTINGS_VALUES = st.dictionaries(
    st.sampled_from(["AT+DEVEUI=?", "AT+APPEUI=?", "AT+APPKEY=?", "AT+BAND=?", "", "AT+X=?", "DEVEUI"]),
    st.one_of(st.sampled_from(["AC1F09FFFE0A0B0C", "0" * 32, "4", "é" * 16]), JSON), max_size=5)


@fuzz
@given(content=st.one_of(
    st.binary(max_size=300),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda s, m, n: json.dumps({"module": m, "serial_number": n, "settings": s}).encode(),
              st.one_of(SETTINGS_VALUES, JSON), st.sampled_from(["rak3172", "rak811", 5]),
              st.sampled_from(["SIM0000001", "other", None]))))
def test_the_kept_settings_file(tmp_path_factory, monkeypatch, content):
    COUNTS["kept-settings file"] += 1
    from rakflash.flows import settings as keys
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "kept-cache"))
    module = CAT.module("rak3172")
    path = keys._pending_file(module, "SIM0000001")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    try:
        values = keys.kept_from_earlier(module, "SIM0000001")
    except keys.KeptFileDamaged:
        return
    for query, value in (values or {}).items():
        assert query in module.dialect["settings"] and keys.well_formed(module, query, value)


# ------------------------------------------------------------------ YMODEM and AMOTA replies

YMODEM_RIGHT = [b"\x06C"] + [b"\x06"] * 2 + [b"\x15", b"\x06C", b"\x06"]   # block 0, 2 blocks, EOT×2, end


@fuzz
@given(replies=st.one_of(answers, mostly_right(YMODEM_RIGHT)), first=st.sampled_from([b"C", b"", b"\x00C"]),
       st_iap=st.booleans())
def test_ymodem_sender_whatever_the_receiver_answers(replies, first, st_iap):
    COUNTS["YMODEM sender: receiver replies"] += 1
    from rakflash.protocols.ymodem import YmodemSender
    sender = YmodemSender(Device(replies, first), retries=3, start_timeout=0.02, ack_timeout=0.01,
                          erase_timeout=0.02, byte_time=0.0, st_iap=st_iap,
                          restart_markers=(b"<BOOT MODE>", b"AT not support."))
    named_or_result("YMODEM replies", lambda: sender.send("fw.bin", bytes(range(256)) * 8))


def _amota_right():
    from rakflash.protocols import amota as a
    return ([a.encode_reply(a.HEADER, a.OK, 0)] + [a.encode_reply(a.DATA, a.OK, n) for n in (512, 1024, 1280)]
            + [a.encode_reply(a.VERIFY, a.OK), a.encode_reply(a.RESET, a.OK)])


def _amota_replies():
    from rakflash.protocols import amota
    plausible = st.builds(amota.encode_reply, st.integers(0, 6), st.integers(0, 8),
                          st.integers(0, (1 << 32) - 1))
    flipped = st.tuples(plausible, st.integers(0, 7), st.integers(1, 255)).map(
        lambda t: t[0][:t[1]] + bytes([t[0][t[1]] ^ t[2]]) + t[0][t[1] + 1:] if t[1] < len(t[0]) else t[0])
    return st.lists(st.one_of(plausible, flipped, st.binary(max_size=16),
                              st.tuples(plausible, st.binary(max_size=4)).map(lambda t: t[1] + t[0])),
                    max_size=14)


@fuzz
@given(data=st.binary(max_size=64))
def test_amota_reply_reader_on_any_bytes(data):
    COUNTS["AMOTA reply reader: any bytes"] += 1
    from rakflash.protocols import amota
    reply = amota.read_reply(Device([], data), 0.005)
    if isinstance(reply, amota.Reply):
        assert reply.cmd in amota.COMMAND_NAMES and reply.status in amota.STATUS
        assert reply.count is not None or reply.cmd in (amota.VERIFY, amota.RESET) or reply.status != amota.OK


@fuzz
@given(replies=st.one_of(_amota_replies(), mostly_right(_amota_right())))
def test_amota_sender_whatever_the_bootloader_answers(replies):
    COUNTS["AMOTA sender: bootloader replies"] += 1
    from rakflash.apollo3_ota import build_blob
    from rakflash.protocols import amota
    sender = amota.AmotaSender(Device(replies), retries=2, reply_timeout=0.01, verify_timeout=0.01,
                               restart_markers=(b"<BOOT MODE>",))
    named_or_result("AMOTA replies", lambda: sender.send(build_blob(bytes(range(256)) * 5)))


# ------------------------------------------------------------------ AN3155 (STM32 ROM) replies

ROM_RIGHT = [b"\x79",                                           # handshake
             b"\x79\x0b\x31\x00\x01\x02\x11\x21\x31\x44\x63\x73\x82\x92\x79",   # Get
             b"\x79\x31\x00\x00\x79", b"\x79\x01\x04\x29\x79",            # Get Version, Get ID
             b"\x79", b"\x79", b"\x79" + bytes(16),                     # Read Memory
             b"\x79", b"\x79", b"\x79",                                 # Write Memory
             b"\x79", b"\x79"]                                         # Extended Erase


@fuzz
@given(replies=st.one_of(st.lists(st.one_of(st.sampled_from([b"\x79", b"\x1f", b"\x00\x79"]),
                                            st.binary(max_size=20)), max_size=16),
                         mostly_right(ROM_RIGHT)))
def test_stm32_rom_client_whatever_the_rom_answers(replies):
    COUNTS["AN3155 client: ROM replies"] += 1
    from rakflash.protocols import stm32_rom
    t = stm32_rom.RomTimeouts(answer=0.01, write=0.01, erase_page=0.001, erase_base=0.01, mass_erase=0.01)

    def session():
        client = stm32_rom.RomClient(Device(replies), t)
        client.handshake(0.02, interval=0.005)
        client.get()
        client.get_version()
        client.get_id()
        client.read_memory(0x08000000, 16)
        client.write_memory(0x08000000, bytes(16))
        client.erase_pages([0, 1])
        return client
    named_or_result("AN3155 replies", session)


# ------------------------------------------------------------------ Apollo3 SBL replies and files

@fuzz
@given(data=st.binary(max_size=200), replies=st.lists(st.binary(max_size=120), max_size=6))
def test_apollo3_sbl_whatever_it_answers(data, replies):
    COUNTS["Apollo3 SBL client: replies"] += 1
    from rakflash import apollo3_wired as wired
    from rakflash.protocols import apollo3_sbl as sbl
    sbl.find_reply(data)
    sbl.read_reply(Device([], data), 0.005)
    named_or_result("SBL replies", lambda: sbl.say_hello(Device(replies), 0.005))
    client = sbl.SblClient(Device(replies), timing=sbl.Timing(reply=0.005, page_write=0.001,
                                                             byte_time=0.0), retries=1)
    block = wired.build_blocks(bytes(300), 0xC000)[0]
    named_or_result("SBL replies", lambda: client.send_block(block))


def _valid_wired_blob() -> bytes:
    from rakflash import apollo3_wired as wired
    image = wired.build_image(bytes(range(256)) * 2, 0xC000)
    return b"".join(b.raw for b in wired.build_blocks(image, 0xC000))


@fuzz
@given(data=st.one_of(st.binary(max_size=400), mutated(_valid_wired_blob())))
def test_apollo3_wired_update_blobs_and_images(data):
    COUNTS["Apollo3 wired-update blob / Ambiq image"] += 1
    from rakflash import apollo3_wired as wired
    wired.looks_like_blob(data)
    wired.parse_image(data)
    named_or_result("SBL blob / Ambiq image", lambda: wired.parse_blocks(data))


@fuzz
@given(data=st.binary(max_size=64), size=st.sampled_from([0, 100, 0xC14, 0xC18, 0x2000, 0x2004]))
def test_an_info0_dump(data, size):
    COUNTS["Apollo3 INFO0 dump"] += 1
    from rakflash.apollo3_info0 import Info0

    def go():
        raw = (data * (size // max(1, len(data)) + 1))[:size] if data else bytes(size)
        info = Info0.parse(raw, source="dump")
        info.findings()
        info.to_dict()
        return info
    named_or_result("INFO0 dump", go)


# ------------------------------------------------------------------ RAK4631: DFU packages and replies

def _zip(files: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


MANIFESTS = st.one_of(
    JSON, st.builds(lambda kind, bin_, dat, extra: {"manifest": {kind: {"bin_file": bin_, "dat_file": dat, **extra}}},
                    st.sampled_from(["application", "bootloader", "softdevice", "softdevice_bootloader", "x"]),
                    st.sampled_from(["app.bin", "missing.bin", 5]), st.sampled_from(["app.dat", "missing.dat"]),
                    st.dictionaries(st.sampled_from(["init_packet_data", "dfu_version"]), JSON, max_size=2)))


@fuzz
@given(manifest=MANIFESTS, firmware=st.binary(max_size=300), init=st.binary(max_size=80),
       raw=st.binary(max_size=200), use_raw=st.booleans())
def test_a_dfu_package(fw_dir, manifest, firmware, init, raw, use_raw):
    COUNTS["DFU package (.zip) and init packet"] += 1
    from rakflash import dfu_package
    p = fw_dir / "pkg.zip"
    if use_raw:
        p.write_bytes(raw)
    else:
        p.write_bytes(_zip({"manifest.json": json.dumps(manifest), "app.bin": firmware, "app.dat": init}))
    dfu_package.is_package(p)
    named_or_result("DFU package", lambda: dfu_package.load(p))
    _load_and_analyse(p, "DFU package as a firmware file")
    named_or_result("DFU init packet", lambda: dfu_package.parse_init(init))


@fuzz
@given(frames=st.lists(st.one_of(st.binary(max_size=30), st.binary(max_size=20).map(lambda b: b"\x60" + b)),
                       max_size=12), raw=st.binary(max_size=60))
def test_nordic_secure_dfu_client_whatever_the_bootloader_answers(frames, raw):
    COUNTS["Nordic Secure DFU client: replies (SLIP)"] += 1
    from rakflash.protocols import nordic_dfu, slip
    slip.Decoder().feed(raw)
    replies = [slip.encode(f) for f in frames] + [raw]
    t = nordic_dfu.Timeouts(reply=0.005, create=0.005, execute=0.005, last_execute=0.005, ping=0.02)

    def session():
        client = nordic_dfu.SecureDfuClient(Device(replies), timeouts=t, retries=1)
        client.connect()
        client.send(b"\x12\x00", bytes(600))
    named_or_result("Secure DFU replies", session)


@fuzz
@given(frames=st.lists(st.binary(max_size=24), max_size=10), raw=st.binary(max_size=40))
def test_legacy_dfu_client_whatever_the_bootloader_answers(frames, raw):
    COUNTS["Adafruit legacy DFU client: replies (SLIP)"] += 1
    from rakflash.protocols import legacy_dfu, slip
    legacy_dfu.decode_frame(raw)
    replies = [slip.encode(f, leading_end=True) for f in frames] + [raw]
    client = legacy_dfu.LegacyDfuClient(Device(replies), ack_timeout=0.005, retries=1,
                                        page_erase=0.0001, page_write=0.0001)
    named_or_result("legacy DFU replies", lambda: client.send(b"\x52\x00" * 7, bytes(600)))


# The DFU package reader under damage at the zip's own level: what a cut download, a bad disk or a
# hand-edited package does to the bytes. A zip (PKWARE APPNOTE 4.3.7, 4.3.12, 4.3.16): per member a
# local header ("PK\3\4": version, flags, method, CRC-32, sizes, name) and its data (deflate, as
# nrfutil writes it), then the central directory ("PK\1\2", the same fields again, and the local
# header's offset), then the end record ("PK\5\6"). Flag bit 0 says encrypted, bit 6 strong
# encryption; method 8 is deflate, 0 stored, anything else (99 is AES) is what a reader may not know.

def _key_pem() -> bytes:
    from rakflash import dfu_package
    return dfu_package.new_signing_key()


FUZZ_KEY = _key_pem()
_FW = bytes(range(256)) * 2 + b"RUI_4.0.6_RAK4631 " * 8      # compresses, as firmware does


def _packages() -> dict[str, bytes]:
    from rakflash import dfu_package as d
    two = io.BytesIO()                       # a SoftDevice+bootloader image beside the application
    with zipfile.ZipFile(two, "w", zipfile.ZIP_DEFLATED) as z:
        sd_bl = _FW[::-1]
        init = d.secure_init_packet(sd_bl, fw_type="BOOTLOADER", key_pem=FUZZ_KEY)
        z.writestr("manifest.json", json.dumps({"manifest": {
            "bootloader": {"bin_file": "bl.bin", "dat_file": "bl.dat"},
            "application": {"bin_file": "app.bin", "dat_file": "app.dat"}}}))
        z.writestr("bl.bin", sd_bl)
        z.writestr("bl.dat", init)
        z.writestr("app.bin", _FW)
        z.writestr("app.dat", d.secure_init_packet(_FW, key_pem=FUZZ_KEY))
    return {"secure, signed": d.secure_package(_FW, key_pem=FUZZ_KEY),
            "secure, unsigned": d.secure_package(_FW, key_pem=None),
            "legacy": d.legacy_package(_FW),
            "bootloader and application": two.getvalue()}


PACKAGES = _packages()


def _zip_parts(raw: bytes) -> dict[str, list[tuple[int, int]]]:
    """Where a zip's structures are: [(offset, length)] per kind, for damage aimed at each."""
    z = zipfile.ZipFile(io.BytesIO(raw))
    parts: dict[str, list[tuple[int, int]]] = {"local header": [], "member data": [],
                                               "central directory": [], "end record": []}
    for info in z.infolist():
        head = 30 + len(info.filename.encode()) + len(info.extra)
        parts["local header"].append((info.header_offset, head))
        parts["member data"].append((info.header_offset + head, info.compress_size))
    end = raw.rfind(b"PK\x05\x06")
    parts["central directory"].append((z.start_dir, end - z.start_dir))
    parts["end record"].append((end, len(raw) - end))
    return parts


@st.composite
def damaged_packages(draw):
    """A valid package with its zip structure damaged where a reader decides things: a header's
    signature, flags (encrypted, strong encryption, data descriptor, patched data), compression
    method, CRC, sizes, name length or offset; the deflate data; the central directory; the end."""
    raw = bytearray(PACKAGES[draw(st.sampled_from(sorted(PACKAGES)))])
    parts = _zip_parts(bytes(raw))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(sorted(parts)))
        start, length = draw(st.sampled_from(parts[kind]))
        length = min(length, len(raw) - start)          # an earlier cut may have shortened the zip
        if length <= 0:
            continue
        how = draw(st.sampled_from(["flip", "field", "field", "cut", "insert"]))
        if how == "field" and kind in ("local header", "central directory"):
            at = start if kind == "local header" else start + 4 * draw(st.integers(0, max(0, length // 4 - 12)))
            if kind == "central directory":                   # find a central header to aim at
                found = bytes(raw).find(b"PK\x01\x02", at)
                at = found if found >= 0 else start
            if at + 46 > len(raw):                            # past the end after an earlier cut
                continue
            flags, method = (6, 8) if kind == "local header" else (8, 10)
            field = draw(st.sampled_from(["flags", "method", "crc", "sizes", "name length", "offset",
                                          "version"]))
            if field == "flags":
                raw[at + flags] |= draw(st.sampled_from([0x01, 0x08, 0x20, 0x40, 0x41]))
            elif field == "method":
                raw[at + method:at + method + 2] = draw(st.sampled_from([0, 1, 9, 12, 14, 93, 95, 98, 99,
                                                                          0xFFFF])).to_bytes(2, "little")
            elif field == "crc":
                raw[at + method + 6] ^= draw(st.integers(1, 255))
            elif field == "sizes":
                raw[at + method + 10 + draw(st.integers(0, 7))] ^= draw(st.integers(1, 255))
            elif field == "name length":
                raw[at + method + 18] ^= draw(st.integers(1, 255))
            elif field == "offset" and kind == "central directory":
                raw[at + 42 + draw(st.integers(0, 3))] ^= draw(st.integers(1, 255))
            else:
                raw[at + 4 + draw(st.integers(0, 1))] ^= draw(st.integers(1, 255))
        elif how in ("flip", "field"):
            at = start + draw(st.integers(0, length - 1))
            raw[at] ^= draw(st.integers(1, 255))
        elif how == "cut":
            at = start + draw(st.integers(0, length - 1))
            del raw[at:at + draw(st.integers(1, 16))]
        else:
            at = start + draw(st.integers(0, length - 1))
            raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


def _try_package(fw_dir, raw: bytes, target: str):
    from rakflash import dfu_package
    p = fw_dir / "damaged.zip"
    p.write_bytes(raw)
    dfu_package.is_package(p)
    pkg = named_or_result(target, lambda: dfu_package.load(p))
    if isinstance(pkg, dfu_package.DfuPackage):       # what inspect and the plan ask of a package
        pkg.to_dict()
        pkg.linked_elsewhere()
    _load_and_analyse(p, target + " (images.load)")


@fuzz
@given(raw=damaged_packages())
def test_a_dfu_package_damaged_in_its_zip_structure(fw_dir, raw):
    COUNTS["DFU package: zip structure damaged (headers, flags, method, deflate, directory)"] += 1
    _try_package(fw_dir, raw, "DFU package: damaged zip")


def _rezip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


def _members(which: str) -> dict[str, bytes]:
    z = zipfile.ZipFile(io.BytesIO(PACKAGES[which]))
    return {n: z.read(n) for n in z.namelist()}


@fuzz
@given(which=st.sampled_from(sorted(PACKAGES)), data=st.data())
def test_a_dfu_package_with_a_damaged_manifest(fw_dir, which, data):
    COUNTS["DFU package: manifest.json damaged"] += 1
    members = _members(which)
    members["manifest.json"] = data.draw(st.one_of(mutated(members["manifest.json"]),
                                                   JSON.map(lambda v: json.dumps({"manifest": v}).encode())))
    _try_package(fw_dir, _rezip(members), "DFU package: damaged manifest")


def _secure_init_variants():
    """Secure DFU init packets as protobuf messages, with fields dropped, emptied or set to other
    values (required ones included: serialized partially, as a hand-made or damaged packet would
    be), then now and then damaged byte by byte (which reaches enum values the layout lacks)."""
    from rakflash import dfu_package as d

    @st.composite
    def strategy(draw):
        m = d.messages()
        packet = m["Packet"]()
        packet.ParseFromString(d.secure_init_packet(_FW, key_pem=FUZZ_KEY if draw(st.booleans()) else None))
        command = packet.signed_command.command if packet.HasField("signed_command") else packet.command
        init = command.init
        for _ in range(draw(st.integers(1, 4))):
            change = draw(st.sampled_from(["hash empty", "hash gone", "hash bytes", "hash type", "type",
                                           "sizes", "sd_req", "signature", "signature type", "no init",
                                           "boot validation", "versions"]))
            if change == "hash empty":
                init.hash.ClearField("hash")
            elif change == "hash gone":
                init.ClearField("hash")
            elif change == "hash bytes":
                init.hash.hash = draw(st.binary(max_size=40))
            elif change == "hash type":
                init.hash.hash_type = draw(st.integers(0, 4))   # proto2 enums: only known values
            elif change == "type":
                init.type = draw(st.integers(0, 4))
            elif change == "sizes":
                setattr(init, draw(st.sampled_from(["app_size", "sd_size", "bl_size"])),
                        draw(st.integers(0, (1 << 32) - 1)))
            elif change == "sd_req":
                init.sd_req[:] = draw(st.lists(st.integers(0, (1 << 32) - 1), max_size=4))
            elif change == "signature" and packet.HasField("signed_command"):
                packet.signed_command.signature = draw(st.binary(max_size=70))
            elif change == "signature type" and packet.HasField("signed_command"):
                packet.signed_command.signature_type = draw(st.integers(0, 1))
            elif change == "no init":
                command.ClearField("init")
            elif change == "boot validation":
                bv = init.boot_validation.add()
                if draw(st.booleans()):
                    bv.type = draw(st.integers(0, 3))
            elif change == "versions":
                init.fw_version = draw(st.integers(0, (1 << 32) - 1))
                init.hw_version = draw(st.integers(0, (1 << 32) - 1))
        out = packet.SerializePartialToString()
        if draw(st.booleans()):
            out = draw(mutated(out))
        return out
    return strategy()


LEGACY_INITS = st.one_of(
    mutated(bytes.fromhex("5200ffffffffffff0100feff") + b"\x00\x00"),
    st.builds(lambda head, sds, tail: head + sds + tail, st.binary(min_size=8, max_size=10),
              st.binary(max_size=12), st.binary(max_size=3)))


@fuzz
@given(which=st.sampled_from(sorted(PACKAGES)), init=st.one_of(_secure_init_variants(), LEGACY_INITS),
       data=st.data())
def test_a_dfu_package_with_a_damaged_init_packet(fw_dir, which, init, data):
    COUNTS["DFU package: init packet damaged (Secure DFU protobuf, legacy record)"] += 1
    from rakflash import dfu_package
    members = _members(which)
    dat = data.draw(st.sampled_from(sorted(n for n in members if n.endswith(".dat"))))
    members[dat] = init
    _try_package(fw_dir, _rezip(members), "DFU package: damaged init packet")
    for legacy_hint in (False, True):
        named_or_result("DFU init packet", lambda hint=legacy_hint: dfu_package.parse_init(init, legacy_hint=hint))
