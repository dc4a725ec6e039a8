"""RUI3's system config block: where a RUI3 module keeps the owner's keys and settings, decoded.

Pure format logic, no I/O: bytes read from the module's flash (over the STM32 ROM
bootloader, SWD, or a flash dump) in, a :class:`ConfigBlock` out, and back.

Facts (public RUI3 source; docs/protocols.md "RUI3's config block" has the table):

* Where: ``MCU_SYS_CONFIG_NVM_ADDR`` in ``cores/*/component/core/mcu/*/mcu_basic.h`` —
  STM32WLE5 0x0803F000 (RAK-STM32-RUI), Apollo3 0x000F4000 (RAK-APOLLO3-RUI),
  nRF52840 0x000D0000 (RAK-nRF52-RUI); the catalog's ``config`` regions carry them.
  ``service_nvm.c`` writes ``sizeof(PRE_rui_cfg_t)`` bytes there whenever a setting
  changes; with no valid block it starts from the factory-default block
  (``MCU_FACTORY_DEFAULT_NVM_ADDR``) or its compiled-in defaults.
* What (``component/service/nvm/service_nvm.h``, RUI3 3.5.0 to 5.0): ``PRE_rui_cfg_t`` —
  ``magic_num`` 0xAABBCCDD, ``version_code`` (0x01 V85, 0x02 V87, 0x03 V99, 0x04 latest),
  the LoRa work mode, the P2P parameters, the BLE config (``#ifdef SUPPORT_BLE``),
  ``PRE_lora_cfg_t`` (region, DevEUI, AppEUI, AppKey, session keys, DevAddr, …), the RTC
  delta, per-port mode and lock state (``SERIAL_MAX`` of each), baud rate, echo, the
  9-byte lock password, auto-sleep time, serial number, alias, debug level, three
  version strings, and ``rui_cfg_t_ex`` (whose last two members exist only with
  ``LORA_STACK_104``).
* How it is laid out: arm-none-eabi GCC with the Arduino ``platform.txt`` flags, which
  name no enum size, so GCC's default for AAPCS (non-Linux) targets applies: enums are
  as small as their values (``-fshort-enums``; every RUI3 enum here fits a byte), scalars
  aligned to their size, a struct to its largest member and padded to it. The three
  legacy layouts below confirm it byte for byte: RUI3's own offsets for them
  (``ELEM_OFS_V85_*`` … in ``variants/*/board_basic.h``) come out of these rules with
  one-byte enums and out of no other.
* Which members a platform has (``boards.txt`` flags; ``udrv_serial.h``'s ``SERIAL_PORT``):
  STM32WLE5 — UART0-2 (``SERIAL_MAX`` 3), no BLE, ``LORA_STACK_104``; Apollo3 (RAK11720) —
  UART0-2 and BLE0 (4), BLE config, ``LORA_STACK_104``; nRF52840 (RAK4631) — UART0-2,
  USB0, BLE0, NFC (6), BLE config, and its header has no ``LORA_STACK_104`` members.
* The legacy layouts (versions 1-3): RUI3 builds before 3.5.0 kept another block with no
  magic number — a CRC-32 (LoRaMac-node's ``Crc32``, the zlib CRC) over the rest at offset
  0, then the members with no version word; V87 added the lock states, V99 a marker
  0x000EDD1E at the end (``RUI_CFG_V85_SZ`` … and ``ELEM_OFS_*`` in ``board_basic.h``;
  ``service_nvm_data_recovery_from_legacy`` in RUI3 3.5.0's ``service_nvm.c`` moves them
  into the new block, on RAK3172, RAK3172-SiP and RAK4630 only). So a block that starts
  with the magic number is version 4; versions 1-3 are known by their CRC or marker.
  The span V99's CRC covers is not published: rakflash does not check it (the marker tells V99).

An unknown version is refused by name, never guessed at (:class:`UnknownLayout`).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Iterator, NoReturn

MAGIC = 0xAABBCCDD
V99_MARKER = 0x000EDD1E
LATEST = 4
VERSIONS = {1: "V85", 2: "V87", 3: "V99", 4: "latest"}   # RUI_VERSION_CODE_* in service_nvm.h


class ConfigError(ValueError):
    """Bytes that are not a config block rakflash can read; ``str()`` says why, in words."""


class Erased(ConfigError):
    """The config area is erased (all 0xFF): the module keeps no settings there."""


class NotAConfigBlock(ConfigError):
    """Bytes that are neither a RUI3 config block nor one of its legacy layouts."""


class UnknownLayout(ConfigError):
    """A config block whose layout version rakflash does not know (newer firmware)."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


# ------------------------------------------------------------------ C types, as GCC lays them out

@dataclass(frozen=True)
class Scalar:
    fmt: str            # struct format letter: B b H h I

    @property
    def size(self) -> int:
        return struct.calcsize("<" + self.fmt)

    align = size


@dataclass(frozen=True)
class Bytes:
    n: int               # uint8_t name[n]: kept as bytes
    align = 1

    @property
    def size(self) -> int:
        return self.n


@dataclass(frozen=True)
class Array:
    of: CType
    n: int

    @property
    def align(self) -> int:
        return self.of.align

    @property
    def size(self) -> int:
        return self.of.size * self.n


@dataclass(frozen=True)
class Struct:
    members: tuple[tuple[str, CType], ...]

    @property
    def align(self) -> int:
        return max(t.align for _, t in self.members)

    def offsets(self) -> Iterator[tuple[str, CType, int]]:
        at = 0
        for name, t in self.members:
            at = _round_up(at, t.align)
            yield name, t, at
            at += t.size

    @property
    def size(self) -> int:
        end = 0
        for _, t, at in self.offsets():
            end = at + t.size
        return _round_up(end, self.align)


CType = Scalar | Bytes | Array | Struct
U8, I8, U16, I16, U32 = Scalar("B"), Scalar("b"), Scalar("H"), Scalar("h"), Scalar("I")
BOOL = ENUM = U8          # _Bool is one byte; enums one byte too (-fshort-enums, see above)


def _round_up(n: int, align: int) -> int:
    return -(-n // align) * align


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    type: Scalar | Bytes

    @property
    def size(self) -> int:
        return self.type.size


def _flatten(t: CType, name: str, base: int) -> Iterator[Field]:
    if isinstance(t, Struct):
        for member, mt, at in t.offsets():
            yield from _flatten(mt, f"{name}.{member}" if name else member, base + at)
    elif isinstance(t, Array):
        for i in range(t.n):
            yield from _flatten(t.of, f"{name}[{i}]", base + i * t.of.size)
    else:
        yield Field(name, base, t)


# ------------------------------------------------------------------ the structs (service_nvm.h)

P2P = Struct((          # PRE_S_LORAP2P_PARAM
    ("frequency", U32), ("spreadfact", U8), ("bandwidth", U16), ("codingrate", U8),
    ("preamlen", U16), ("powerdbm", U8), ("p2p_workmode", U8), ("crypt_enable", BOOL),
    ("crypt_key", Bytes(8)), ("bitrate", U32), ("deviation", U32), ("fsk_rxbw", U32)))

BLE = Struct((          # PRE_ble_central_cfg_t (the legacy layouts' reserve[14] is mac[12] + reserve[2])
    ("work_mode", U8), ("long_range_enable", U8), ("mac", Bytes(12)), ("reserve", Bytes(2))))

MC_SESSION = Struct((   # McSession_t (service_lora_multicast.h)
    ("devclass", U8), ("address", U32), ("mc_app_skey", Bytes(16)), ("mc_nwk_skey", Bytes(16)),
    ("frequency", U32), ("datarate", I8), ("periodicity", U16), ("group_id", I8), ("entry", U8)))

RTC_DELTA = Struct((("seconds", U32), ("subseconds", U32)))     # PRE_rtc_delta_t


def _lora(ports: int) -> Struct:
    """PRE_lora_cfg_t: its last member has one byte per serial port."""
    return Struct((
        ("region", ENUM), ("dev_eui", Bytes(8)), ("app_eui", Bytes(8)), ("app_key", Bytes(16)),
        ("app_skey", Bytes(16)), ("dev_addr", Bytes(4)), ("nwk_id", Bytes(4)), ("nwk_skey", Bytes(16)),
        ("multi_dev_addr", U32), ("multi_nwks_key", Bytes(16)), ("multi_apps_key", Bytes(16)),
        ("multicast_enable", BOOL), ("ch_mask", Array(U16, 6)), ("join_mode", ENUM),
        ("device_class", ENUM), ("confirm", U8), ("retry", U8), ("dr", ENUM), ("rx2dr", ENUM),
        ("adr", BOOL), ("tx_power", U8), ("dutycycle_enable", U8), ("jn1dl", U32), ("jn2dl", U32),
        ("rx1dl", U32), ("rx2dl", U32), ("rx2fq", U32), ("pub_nwk_mode", BOOL),
        ("linkcheck_mode", U8), ("ping_slot_periodicity", U8), ("join_start", BOOL),
        ("auto_join", BOOL), ("auto_join_period", U32), ("auto_join_max_cnt", U32),
        ("mc_session_group", Array(MC_SESSION, 4)), ("chs", U32), ("tp_port", Array(U8, ports))))


def _ex(cert: bool) -> Struct:
    """rui_cfg_t_ex: added to in sequence; ``certif`` and ``IsCertPortOn`` with LORA_STACK_104."""
    members: list[tuple[str, CType]]
    members = [("iqinverted", BOOL), ("symbol_timeout", U32), ("syncword", U16),
               ("syncword_dirty_byte", U8), ("fix_length_payload", BOOL), ("lbt_enable", U8),
               ("lbt_rssi", I16), ("lbt_scantime", U32), ("auto_sleep_level", U8),
               ("crypt_key16", Bytes(16)), ("crypt_iv", Bytes(16)), ("cad", U8)]
    if cert:
        members += [("certif", U8), ("is_cert_port_on", U8)]
    return Struct(tuple(members))


# ------------------------------------------------------------------ platforms

@dataclass(frozen=True)
class Platform:
    """The ``#ifdef`` set a RUI3 build for one MCU compiles the block with."""

    key: str
    name: str
    ports: tuple[str, ...]       # SERIAL_PORT, in order (SERIAL_MAX of them)
    ble: bool                    # SUPPORT_BLE: the BLE config member
    cert: bool                   # LORA_STACK_104 members in rui_cfg_t_ex
    legacy: bool                 # RUI3 before 3.5.0 ran on it with the legacy layouts
    at_port: str                 # DEFAULT_SERIAL_CONSOLE: the AT port a module's users talk to
    source: str

    def port_index(self, name: str) -> int:
        return self.ports.index(name)


PLATFORMS: dict[str, Platform] = {p.key: p for p in (
    Platform("stm32wle5", "STM32WLE5 (RAK3172 family)", ("UART0", "UART1", "UART2"), ble=False,
             cert=True, legacy=True, at_port="UART2",
             source="RAK-STM32-RUI: cores/STM32WLE/component/service/nvm/service_nvm.h, "
                    "cores/STM32WLE/component/core/mcu/stm32wle5xx/mcu_basic.h, boards.txt "
                    "(-DLORA_STACK_104), variants/WisDuo_RAK3172_Evaluation_Board/board_basic.h"),
    Platform("apollo3", "Apollo3 (RAK11720)", ("UART0", "UART1", "UART2", "BLE0"), ble=True,
             cert=True, legacy=False, at_port="UART0",
             source="RAK-APOLLO3-RUI: cores/apollo3/component/service/nvm/service_nvm.h, "
                    "cores/apollo3/component/core/mcu/apollo3/mcu_basic.h, boards.txt "
                    "(-DSUPPORT_BLE -DLORA_STACK_104), variants/WisCore_RAK11720_Board/board_basic.h"),
    Platform("nrf52840", "nRF52840 (RAK4631-R, RAK3401)",
             ("UART0", "UART1", "UART2", "USB0", "BLE0", "NFC"), ble=True, cert=False, legacy=True,
             at_port="USB0",
             source="RAK-nRF52-RUI: cores/nRF5/component/service/nvm/service_nvm.h, "
                    "cores/nRF5/component/core/mcu/nrf52840/mcu_basic.h, boards.txt "
                    "(-DSUPPORT_USB -DSUPPORT_BLE -DSUPPORT_NFC), "
                    "variants/WisCore_RAK4631_Board/board_basic.h"),
)}


def layout(platform: Platform, version: int) -> Struct:
    """The block of ``version`` as ``platform``'s build lays it out (versions 1-4)."""
    n = len(platform.ports)
    lora = _lora(n)
    if version == LATEST:
        members: list[tuple[str, CType]] = [("magic_num", U32), ("version_code", U32),
                                            ("lora_work_mode", U8), ("p2p", P2P)]
        if platform.ble:
            members.append(("ble", BLE))
        members += [("lora", lora), ("rtc_delta", RTC_DELTA), ("mode_type", Array(ENUM, n)),
                    ("serial_lock_status", Array(ENUM, n)), ("baudrate", U32), ("atcmd_echo", U8),
                    ("serial_passwd", Bytes(9)), ("auto_sleep_time", U32), ("sn", Bytes(18)),
                    ("alias", Bytes(16)), ("debug_level", U8), ("firmware_ver", Bytes(32)),
                    ("hwmodel", Bytes(32)), ("cli_ver", Bytes(32)), ("ex", _ex(platform.cert))]
        return Struct(tuple(members))
    if version in (1, 2, 3):
        members = [("crc_verify", U32), ("lora_work_mode", U8), ("p2p", P2P)]
        if platform.ble:
            members.append(("ble", BLE))
        members += [("lora", lora), ("rtc_delta", RTC_DELTA), ("mode_type", Array(ENUM, n))]
        if version >= 2:
            members.append(("serial_lock_status", Array(ENUM, n)))
        members += [("baudrate", U32), ("atcmd_echo", U8), ("serial_passwd", Bytes(9)),
                    ("auto_sleep_time", U32), ("sn", Bytes(18)), ("alias", Bytes(16))]
        if version == 3:
            members.append(("v99_marker", U32))
        return Struct(tuple(members))
    raise _unknown(version, platform)


def fields(platform: Platform, version: int) -> dict[str, Field]:
    """Every member of the block, by its dotted name (``lora.dev_eui``, ``mode_type[2]`` …)."""
    return {f.name: f for f in _flatten(layout(platform, version), "", 0)}


def size(platform: Platform, version: int = LATEST) -> int:
    """``sizeof`` the block: what RUI3 writes at the config address."""
    return layout(platform, version).size


def _unknown(version: int, platform: Platform | None = None) -> UnknownLayout:
    if version > LATEST:
        return UnknownLayout(f"layout version {version} is newer than rakflash knows (it reads RUI3's "
                             f"config layouts 1 to {LATEST}): a firmware newer than rakflash wrote it, "
                             f"and rakflash does not guess at its fields", version)
    return UnknownLayout(f"layout version {version} is not one RUI3 writes (1 to {LATEST})", version)


def _legacy_crc_span(platform: Platform, version: int) -> int:
    """The bytes a legacy block's CRC covers: [4, sizeof) for V85 and V87 (RUI3 3.5.0's check).
    V99's span is not published: rakflash writes it over [4, sizeof) too (which no V87 check can
    take for its own) and never checks it: the marker tells V99."""
    return layout(platform, version).size


# ------------------------------------------------------------------ the block

Value = int | bytes


@dataclass
class ConfigBlock:
    """One decoded block: its layout ``version``, every member's value, and the bytes it came
    from (padding included), so that encoding what was decoded gives the same bytes back."""

    platform: Platform
    version: int
    values: dict[str, Value]
    raw: bytes = b""

    @property
    def size(self) -> int:
        return size(self.platform, self.version)

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def get(self, name: str, default: Value | None = None) -> Value | None:
        return self.values.get(name, default)

    def replace(self, **changes: Value) -> ConfigBlock:
        """A copy with some members changed (dotted names: ``replace(**{"lora.adr": 0})``)."""
        known = fields(self.platform, self.version)
        for name, value in changes.items():
            _check(known[name] if name in known else _no_member(name, self), value)
        return ConfigBlock(self.platform, self.version, {**self.values, **changes}, self.raw)

    def text(self, name: str) -> str:
        """A char array member as text (up to its first NUL; erased 0xFF bytes end it too)."""
        raw = self.values[name]
        assert isinstance(raw, bytes)
        return raw.split(b"\0", 1)[0].split(b"\xff", 1)[0].decode("latin-1")


def _no_member(name: str, block: ConfigBlock) -> NoReturn:
    raise KeyError(f"the version {block.version} block of {block.platform.name} has no member {name!r}")


def _check(f: Field, value: Value) -> None:
    if isinstance(f.type, Bytes):
        if not isinstance(value, (bytes, bytearray)) or len(value) != f.size:
            raise ValueError(f"{f.name} takes {f.size} bytes")
        return
    lo, hi = {"B": (0, 0xFF), "b": (-0x80, 0x7F), "H": (0, 0xFFFF), "h": (-0x8000, 0x7FFF),
              "I": (0, 0xFFFFFFFF)}[f.type.fmt]
    if not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{f.name} takes a number from {lo} to {hi}")


def detect(raw: bytes, platform: Platform) -> int:
    """The layout version of the block at the start of ``raw``; a named :class:`ConfigError` if
    it is none rakflash reads."""
    if len(raw) < 8:
        raise NotAConfigBlock(f"{len(raw)} bytes are too few for a config block")
    magic, version = struct.unpack_from("<II", raw)
    if magic == MAGIC:
        if version == LATEST:
            return LATEST
        if version in (1, 2, 3):
            raise NotAConfigBlock(f"the block starts with RUI3's magic number but says layout version "
                                  f"{version} ({VERSIONS[version]}), which RUI3 only ever kept in its "
                                  f"legacy form, without the magic number: damaged, or not RUI3's")
        raise _unknown(version, platform)
    need = size(platform)
    if raw[:need].count(0xFF) == min(len(raw), need):
        raise Erased("the config area is erased (every byte 0xFF): the module keeps no settings there")
    if platform.legacy:
        for version in (1, 2):       # RUI3 3.5.0 checks V99 first and lets a CRC match win
            span = _legacy_crc_span(platform, version)
            if len(raw) >= span and struct.unpack_from("<I", raw)[0] == zlib.crc32(raw[4:span]):
                return version
        at = fields(platform, 3)["v99_marker"].offset
        if len(raw) >= at + 4 and struct.unpack_from("<I", raw, at)[0] == V99_MARKER:
            return 3
    raise NotAConfigBlock(f"no RUI3 config block: it does not start with the magic number "
                          f"0x{MAGIC:08X}" + (", and it is none of the legacy layouts (no matching CRC, "
                                              "no V99 marker)" if platform.legacy else ""))


def decode(raw: bytes, platform: Platform) -> ConfigBlock:
    """The block at the start of ``raw`` (bytes after it are ignored)."""
    version = detect(raw, platform)
    need = size(platform, version)
    if len(raw) < need:
        raise NotAConfigBlock(f"a version {version} block of {platform.name} is {need} bytes; "
                              f"only {len(raw)} were given")
    values: dict[str, Value] = {}
    for f in fields(platform, version).values():
        if isinstance(f.type, Bytes):
            values[f.name] = bytes(raw[f.offset:f.offset + f.size])
        else:
            values[f.name] = struct.unpack_from("<" + f.type.fmt, raw, f.offset)[0]
    return ConfigBlock(platform, version, values, bytes(raw[:need]))


def encode(block: ConfigBlock) -> bytes:
    """The block's bytes: its values written over the bytes it was decoded from (zeros for a
    new one), the header it needs (magic and version, or a legacy block's CRC and marker)."""
    platform, version = block.platform, block.version
    known = fields(platform, version)      # raises UnknownLayout for a version it doesn't know
    need = size(platform, version)
    out = bytearray(block.raw[:need].ljust(need, b"\0"))
    for name, value in block.values.items():
        f = known.get(name) or _no_member(name, block)
        _check(f, value)
        if isinstance(f.type, Bytes):
            assert isinstance(value, (bytes, bytearray))     # _check said so
            out[f.offset:f.offset + f.size] = value
        else:
            struct.pack_into("<" + f.type.fmt, out, f.offset, value)
    if version == LATEST:
        struct.pack_into("<II", out, 0, MAGIC, LATEST)
    else:
        if version == 3:
            struct.pack_into("<I", out, known["v99_marker"].offset, V99_MARKER)
        struct.pack_into("<I", out, 0, zlib.crc32(bytes(out[4:_legacy_crc_span(platform, version)])))
    return bytes(out)


def new(platform: Platform, version: int = LATEST, **values: Value) -> ConfigBlock:
    """A block of zeros with ``values`` set (dotted member names)."""
    block = decode(encode(ConfigBlock(platform, version, {}, b"")), platform)
    return block.replace(**values) if values else block


# ------------------------------------------------------------------ what the AT commands show

# AT+BAND's numbers and the LoRaMac region each stores (atcmd_supplement.c At_Band; LoRaMac.h's
# LoRaMacRegion_t order, and RUI3's SERVICE_LORA_AS923_2..4 = 20..22 in service_lora.h).
BANDS = {0: (4, "EU433"), 1: (2, "CN470"), 2: (9, "RU864"), 3: (7, "IN865"), 4: (5, "EU868"),
         5: (8, "US915"), 6: (1, "AU915"), 7: (6, "KR920"), 8: (0, "AS923-1"), 9: (20, "AS923-2"),
         10: (21, "AS923-3"), 11: (22, "AS923-4"), 12: (10, "LA915")}
REGION_TO_BAND = {region: band for band, (region, _) in BANDS.items()}
CLASSES = "ABC"               # SERVICE_LORA_CLASS: 0 A, 1 B, 2 C
JOIN_MODES = {0: "ABP", 1: "OTAA"}
LOCK_STATES = {0: "open", 1: "locked", 2: "disabled"}    # SERIAL_WLOCK_STATE


@dataclass(frozen=True)
class AtSetting:
    """One AT setting and the member it reads: ``to_at`` turns the stored value into what
    ``AT+X=?`` answers, ``from_at`` the reverse (None where the text is no value of it)."""

    name: str
    member: str
    kind: str          # "hex", "number", "band", "class", "ms-as-s"
    secret: bool = False


AT_SETTINGS: tuple[AtSetting, ...] = (
    AtSetting("DEVEUI", "lora.dev_eui", "hex"), AtSetting("APPEUI", "lora.app_eui", "hex"),
    AtSetting("APPKEY", "lora.app_key", "hex", secret=True),
    AtSetting("DEVADDR", "lora.dev_addr", "hex"),
    AtSetting("APPSKEY", "lora.app_skey", "hex", secret=True),
    AtSetting("NWKSKEY", "lora.nwk_skey", "hex", secret=True),
    AtSetting("BAND", "lora.region", "band"), AtSetting("CLASS", "lora.device_class", "class"),
    AtSetting("NJM", "lora.join_mode", "number"), AtSetting("ADR", "lora.adr", "number"),
    AtSetting("DR", "lora.dr", "number"), AtSetting("CFM", "lora.confirm", "number"),
    AtSetting("RETY", "lora.retry", "number"), AtSetting("TXP", "lora.tx_power", "number"),
    AtSetting("PNM", "lora.pub_nwk_mode", "number"),
    AtSetting("JN1DL", "lora.jn1dl", "ms-as-s"), AtSetting("JN2DL", "lora.jn2dl", "ms-as-s"),
    AtSetting("RX1DL", "lora.rx1dl", "ms-as-s"), AtSetting("RX2DL", "lora.rx2dl", "ms-as-s"),
    AtSetting("RX2DR", "lora.rx2dr", "number"), AtSetting("LINKCHECK", "lora.linkcheck_mode", "number"),
)
AT_BY_NAME = {s.name: s for s in AT_SETTINGS}


def at_value(block: ConfigBlock, name: str) -> str | None:
    """What ``AT+<name>=?`` would answer on a module holding ``block`` (None: a stored value
    the command has no answer for, such as a region number RUI3 does not know)."""
    s = AT_BY_NAME[name]
    value = block[s.member]
    if s.kind == "hex":
        assert isinstance(value, bytes)
        return value.hex().upper()
    assert isinstance(value, int)
    if s.kind == "band":
        band = REGION_TO_BAND.get(value)
        return None if band is None else str(band)
    if s.kind == "class":
        return CLASSES[value] if value < len(CLASSES) else None
    if s.kind == "ms-as-s":
        return str(value // 1000)
    return str(value)


def at_values(block: ConfigBlock, names: tuple[str, ...] | list[str] | None = None) -> dict[str, str]:
    """:func:`at_value` of each setting in ``names`` (all by default) that has one."""
    out = {}
    for name in names or AT_BY_NAME:
        value = at_value(block, name)
        if value is not None:
            out[name] = value
    return out


def stored_value(name: str, text: str) -> Value | None:
    """The member value ``AT+<name>=<text>`` stores, or None when ``text`` is no value of it."""
    s = AT_BY_NAME[name]
    text = text.strip()
    if s.kind == "hex":
        try:
            return bytes.fromhex(text) if text and len(text) % 2 == 0 else None
        except ValueError:
            return None
    if s.kind == "class":
        return CLASSES.index(text.upper()) if len(text) == 1 and text.upper() in CLASSES else None
    if not text.isdigit() or len(text) > 9:
        return None
    n = int(text)
    if s.kind == "band":
        return BANDS[n][0] if n in BANDS else None
    if s.kind == "ms-as-s":
        return n * 1000
    return n if n <= 0xFF else None


def with_at_values(block: ConfigBlock, values: dict[str, str]) -> ConfigBlock:
    """``block`` with AT settings written as ``AT+X=value`` would store them; a value the
    setting can't take raises ValueError naming it."""
    changes: dict[str, Value] = {}
    for name, text in values.items():
        s = AT_BY_NAME[name]
        stored = stored_value(name, text)
        f = fields(block.platform, block.version)[s.member]
        if stored is None or (isinstance(stored, bytes) and len(stored) != f.size):
            raise ValueError(f"{text!r} is not a value of AT+{name}")
        changes[s.member] = stored
    return block.replace(**changes)


def lock_state(block: ConfigBlock, port: str | None = None) -> str:
    """The lock state of ``port`` (the platform's AT port by default): open, locked or disabled.
    The V85 layout keeps none: open."""
    p = block.platform
    name = f"serial_lock_status[{p.port_index(port or p.at_port)}]"
    if name not in block.values:
        return "open"
    value = block[name]
    assert isinstance(value, int)
    return LOCK_STATES.get(value, f"unknown ({value})")


def password(block: ConfigBlock) -> str:
    """The AT port's lock password (``serial_passwd``, 1-8 printable characters and a NUL)."""
    return block.text("serial_passwd")


def describe(block: ConfigBlock) -> dict[str, object]:
    """What a person wants to see of a block, with no key in it: identity, band, class,
    join mode, the AT port's lock, the strings. The keys are in :func:`at_values`."""
    at = at_values(block)
    return {
        "layout_version": block.version, "layout": VERSIONS[block.version],
        "platform": block.platform.key,
        "dev_eui": at.get("DEVEUI"), "app_eui": at.get("APPEUI"), "dev_addr": at.get("DEVADDR"),
        "band": at.get("BAND"),
        "region": BANDS[int(at["BAND"])][1] if "BAND" in at else None,
        "class": at.get("CLASS"), "join_mode": JOIN_MODES.get(int(block["lora.join_mode"])),
        "adr": at.get("ADR"), "dr": at.get("DR"), "confirm": at.get("CFM"), "retry": at.get("RETY"),
        "serial_number": block.text("sn") or None,
        "hardware_model": block.text("hwmodel") or None if "hwmodel" in block.values else None,
        "firmware": block.text("firmware_ver") or None if "firmware_ver" in block.values else None,
        "at_port_lock": lock_state(block),
        "baud": block["baudrate"],
    }


__all__ = ["MAGIC", "LATEST", "VERSIONS", "PLATFORMS", "Platform", "ConfigBlock", "ConfigError",
           "Erased", "NotAConfigBlock", "UnknownLayout", "layout", "fields", "size", "detect", "decode",
           "encode", "new", "AT_SETTINGS", "AT_BY_NAME", "at_value", "at_values", "stored_value",
           "with_at_values", "lock_state", "password", "describe", "BANDS"]
