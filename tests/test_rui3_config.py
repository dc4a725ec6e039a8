"""RUI3's config block codec against RUI3's own numbers and against blocks built by hand.

The offsets RUI3 publishes for its legacy layouts (``ELEM_OFS_V85_*`` … and ``RUI_CFG_V*_SZ``
in RAK-STM32-RUI ``variants/WisDuo_RAK3172_Evaluation_Board/board_basic.h`` and RAK-nRF52-RUI
``variants/WisCore_RAK4631_Board/board_basic.h``) are copied here as numbers: the codec derives
its layouts from the structs, and must land on them.
"""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rakflash.protocols import rui3_config as rc

STM32, APOLLO3, NRF52 = (rc.PLATFORMS[k] for k in ("stm32wle5", "apollo3", "nrf52840"))

# board_basic.h: (V85 offsets, V87 offsets where they differ, V99 marker, sizes V85/V87/V99)
PUBLISHED = {
    "stm32wle5": {
        1: {"crc_verify": 0, "lora_work_mode": 4, "p2p.frequency": 8, "lora.region": 44,
            "rtc_delta.seconds": 432, "mode_type[0]": 440, "baudrate": 444, "atcmd_echo": 448,
            "serial_passwd": 449, "auto_sleep_time": 460, "sn": 464, "alias": 482},
        2: {"serial_lock_status[0]": 443, "baudrate": 448, "atcmd_echo": 452, "serial_passwd": 453,
            "auto_sleep_time": 464, "sn": 468, "alias": 486},
        3: {"v99_marker": 504},
        "sizes": (500, 504, 508)},
    "nrf52840": {
        1: {"crc_verify": 0, "lora_work_mode": 4, "p2p.frequency": 8, "ble.work_mode": 44,
            "lora.region": 60, "rtc_delta.seconds": 452, "mode_type[0]": 460, "baudrate": 468,
            "atcmd_echo": 472, "serial_passwd": 473, "auto_sleep_time": 484, "sn": 488, "alias": 506},
        2: {"serial_lock_status[0]": 466, "baudrate": 472, "atcmd_echo": 476, "serial_passwd": 477,
            "auto_sleep_time": 488, "sn": 492, "alias": 510},
        3: {"v99_marker": 528},
        "sizes": (524, 528, 532)},
}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_the_legacy_layouts_land_on_the_offsets_rui3_publishes(key):
    platform, pub = rc.PLATFORMS[key], PUBLISHED[key]
    want: dict[str, int] = {}
    for version in (1, 2, 3):
        want = {**want, **pub[version]}
        got = rc.fields(platform, version)
        assert {name: got[name].offset for name in want} == want, f"version {version}"
        assert rc.size(platform, version) == pub["sizes"][version - 1]


def _hand_built_stm32(**over) -> bytearray:
    """A latest-layout STM32WLE5 block built byte by byte, with offsets worked out by hand from
    service_nvm.h: header 8, lora_work_mode at 8, the 36-byte P2P struct at 12, PRE_lora_cfg_t
    at 48 (region 48, dev_eui 49, app_eui 57, app_key 65, app_skey 81, dev_addr 97, nwk_skey 105;
    join_mode 174, device_class 175, confirm 176, retry 177, dr 178, adr 180; jn1dl 184), RTC 436,
    mode_type 444-446, serial_lock_status 447-449, baudrate 452, serial_passwd 457, sn 472,
    hwmodel 539, rui_cfg_t_ex at 604; 660 bytes."""
    b = bytearray(660)
    struct.pack_into("<II", b, 0, 0xAABBCCDD, 4)
    b[8] = 1                                      # LoRaWAN
    b[48] = 5                                     # LORAMAC_REGION_EU868
    b[49:57] = bytes.fromhex("AC1F09FFFE012345")
    b[57:65] = bytes.fromhex("0102030405060708")
    b[65:81] = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    b[97:101] = bytes.fromhex("26011BDA")
    b[174], b[175], b[176], b[177], b[178], b[180] = 1, 2, 1, 3, 5, 1     # OTAA, class C, …
    struct.pack_into("<I", b, 184, 5000)
    b[447:450] = bytes([0, 0, 1])                 # UART2 (the AT port) locked
    struct.pack_into("<I", b, 452, 115200)
    b[457:466] = b"secret1\0\0"
    b[472:490] = b"SN0001".ljust(18, b"\0")
    b[539:571] = b"rak3172".ljust(32, b"\0")
    for k, v in over.items():
        b[int(k)] = v
    return b


def test_a_hand_built_block_reads_as_built():
    block = rc.decode(bytes(_hand_built_stm32()) + b"\xff" * 100, STM32)
    assert block.version == 4 and len(block.raw) == 660
    at = rc.at_values(block)
    assert at["DEVEUI"] == "AC1F09FFFE012345" and at["APPEUI"] == "0102030405060708"
    assert at["APPKEY"] == "00112233445566778899AABBCCDDEEFF" and at["DEVADDR"] == "26011BDA"
    assert (at["BAND"], at["CLASS"], at["NJM"], at["CFM"], at["RETY"], at["DR"], at["ADR"]) == \
        ("4", "C", "1", "1", "3", "5", "1")
    assert at["JN1DL"] == "5"                      # stored in ms, said in seconds
    assert rc.lock_state(block) == "locked" and rc.lock_state(block, "UART0") == "open"
    assert rc.password(block) == "secret1"
    d = rc.describe(block)
    assert (d["serial_number"], d["hardware_model"], d["region"], d["join_mode"], d["baud"]) == \
        ("SN0001", "rak3172", "EU868", "OTAA", 115200)
    assert "APPKEY" not in str(d) and at["APPKEY"] not in str(d)      # describe() holds no key


def test_a_hand_built_v87_block_is_known_by_its_crc():
    b = bytearray(504)
    b[4] = 1
    b[44] = 8                                    # US915
    b[45:53] = bytes.fromhex("0011223344556677")
    b[443:446] = bytes([0, 0, 1])                # V87's lock states
    struct.pack_into("<I", b, 448, 9600)
    struct.pack_into("<I", b, 0, zlib.crc32(bytes(b[4:504])))
    block = rc.decode(bytes(b) + bytes(64), STM32)
    assert block.version == 2 and rc.VERSIONS[block.version] == "V87"
    assert rc.at_value(block, "DEVEUI") == "0011223344556677" and rc.at_value(block, "BAND") == "5"
    assert rc.lock_state(block) == "locked" and block["baudrate"] == 9600
    b[100] ^= 1                                  # one bit off: neither V85's nor V87's CRC
    with pytest.raises(rc.NotAConfigBlock):
        rc.decode(bytes(b), STM32)


def test_an_unknown_layout_version_is_refused_by_name():
    b = _hand_built_stm32()
    struct.pack_into("<I", b, 4, 5)
    with pytest.raises(rc.UnknownLayout) as e:
        rc.decode(bytes(b), STM32)
    assert "layout version 5 is newer than rakflash knows" in str(e.value) and e.value.version == 5
    struct.pack_into("<I", b, 4, 0)
    with pytest.raises(rc.UnknownLayout, match="layout version 0 is not one RUI3 writes"):
        rc.decode(bytes(b), STM32)
    struct.pack_into("<I", b, 4, 2)               # legacy versions never carried the magic
    with pytest.raises(rc.NotAConfigBlock, match="legacy form"):
        rc.decode(bytes(b), STM32)


def test_erased_and_foreign_bytes_are_said_so():
    with pytest.raises(rc.Erased):
        rc.decode(b"\xff" * 2048, STM32)
    with pytest.raises(rc.NotAConfigBlock, match="magic number"):
        rc.decode(b"KEY=value;" * 80, STM32)
    with pytest.raises(rc.NotAConfigBlock, match="too few"):
        rc.decode(b"\xdd\xcc", STM32)


def test_apollo3_never_had_the_legacy_layouts():
    v85 = rc.encode(rc.new(STM32, 1))            # a well-formed V85 block of an STM32WLE5
    with pytest.raises(rc.NotAConfigBlock):
        rc.decode(v85 + bytes(200), APOLLO3)
    with pytest.raises(rc.UnknownLayout):
        rc.layout(APOLLO3, 7)


def test_platform_members_differ_where_the_builds_differ():
    stm, apo, nrf = (rc.fields(p, 4) for p in (STM32, APOLLO3, NRF52))
    assert "ble.mac" not in stm and "ble.mac" in apo and "ble.mac" in nrf
    assert "ex.certif" in stm and "ex.certif" in apo and "ex.certif" not in nrf
    assert sum(n.startswith("serial_lock_status[") for n in stm) == 3
    assert sum(n.startswith("serial_lock_status[") for n in apo) == 4
    assert sum(n.startswith("serial_lock_status[") for n in nrf) == 6
    assert stm["lora.dev_eui"].offset == 49 and apo["lora.dev_eui"].offset == nrf["lora.dev_eui"].offset == 65
    assert (rc.size(STM32), rc.size(APOLLO3), rc.size(NRF52)) == (660, 676, 684)


def test_at_values_go_in_and_come_out_as_the_at_commands_say_them():
    block = rc.with_at_values(rc.new(NRF52), {"BAND": "9", "CLASS": "b", "JN2DL": "6", "APPKEY": "AB" * 16,
                                              "NJM": "1"})
    assert block["lora.region"] == 20 and block["lora.device_class"] == 1 and block["lora.jn2dl"] == 6000
    assert rc.at_values(block, ["BAND", "CLASS", "JN2DL", "APPKEY", "NJM"]) == {
        "BAND": "9", "CLASS": "B", "JN2DL": "6", "APPKEY": "AB" * 16, "NJM": "1"}
    for name, bad in (("BAND", "13"), ("CLASS", "D"), ("DEVEUI", "12"), ("APPKEY", "XY" * 16), ("DR", "")):
        with pytest.raises(ValueError, match=f"AT\\+{name}"):
            rc.with_at_values(block, {name: bad})
    assert rc.at_value(block.replace(**{"lora.region": 3}), "BAND") is None     # CN779: no AT+BAND number


_PLATFORM_VERSIONS = [(p, v) for p in rc.PLATFORMS.values() for v in ((1, 2, 3, 4) if p.legacy else (4,))]


@st.composite
def blocks(draw):
    platform, version = draw(st.sampled_from(_PLATFORM_VERSIONS))
    members = rc.fields(platform, version)
    header = {"magic_num", "version_code", "crc_verify", "v99_marker"}
    chosen = draw(st.lists(st.sampled_from(sorted(set(members) - header)), max_size=25, unique=True))
    values = {}
    for name in chosen:
        f = members[name]
        if isinstance(f.type, rc.Bytes):
            values[name] = draw(st.binary(min_size=f.size, max_size=f.size))
        else:
            lo, hi = {"B": (0, 255), "b": (-128, 127), "H": (0, 65535), "h": (-32768, 32767),
                      "I": (0, 2**32 - 1)}[f.type.fmt]
            values[name] = draw(st.integers(lo, hi))
    return rc.new(platform, version, **values), values


@settings(max_examples=300, deadline=None)
@given(blocks())
def test_what_is_encoded_decodes_to_the_same_values(case):
    block, values = case
    raw = rc.encode(block)
    assert len(raw) == rc.size(block.platform, block.version)
    back = rc.decode(raw + b"\xff" * 64, block.platform)
    assert back.version == block.version
    assert {k: back[k] for k in values} == values
    assert rc.encode(back) == raw                  # padding and all: the same bytes


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(rc.PLATFORMS.values())), st.data())
def test_any_latest_block_re_encodes_to_its_own_bytes(platform, data):
    n = rc.size(platform)
    raw = struct.pack("<II", rc.MAGIC, rc.LATEST) + data.draw(st.binary(min_size=n - 8, max_size=n - 8))
    assert rc.encode(rc.decode(raw, platform)) == raw
