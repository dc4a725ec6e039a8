"""nRF52 DFU packages (.zip): load, say what they carry, and make them (for tests and the simulator).

Two families, for the RAK4631's two bootloaders:

* **Secure DFU** (RUI3 RAK4631-R; ``nrfutil pkg generate``): ``manifest.json``
  names, per image, a firmware ``.bin`` and an init packet ``.dat``. The init
  packet is a protocol buffer (Nordic's ``dfu-cc.proto``: ``Packet`` → ``Command``
  or ``SignedCommand`` → ``InitCommand``) with the firmware type and version,
  the hardware version, the SoftDevices it may run on (``sd_req``), the image
  sizes and hash, and, signed, an ECDSA P-256 signature.
* **Legacy DFU** (the Arduino RAK4631's Adafruit bootloader; ``adafruit-nrfutil
  dfu genpkg``): the same zip layout, but the ``.dat`` is a fixed little-endian
  record — device type, revision, application version, SoftDevice list, the
  image's CRC-16 — and the manifest says ``"dfu_version": 0.5``.

The init packet is parsed with the ``protobuf`` library against Nordic's
published message layout, declared below as data and turned into message classes
at run time (``descriptor_pb2`` → ``DescriptorPool`` → ``GetMessageClass``), so
no generated ``_pb2.py`` is committed and the layout reads like the ``.proto``.
Sources: NordicSemiconductor/pc-nrfutil ``nordicsemi/dfu/dfu-cc.proto``,
``init_packet_pb.py``, ``package.py``, ``signing.py``; adafruit/Adafruit_nRF52_nrfutil
``nordicsemi/dfu/init_packet.py``, ``package.py``. See docs/protocols.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ImageEmpty, PackageError
from .vector_table import vector_at

SECURE, LEGACY = "secure-dfu", "legacy-dfu"
FAMILY_NAMES = {SECURE: "Nordic Secure DFU (RUI3 RAK4631-R, nrfutil)",
                LEGACY: "Adafruit legacy DFU (Arduino RAK4631, adafruit-nrfutil)"}
# The module whose bootloader takes each family, and so where a package's application is written:
# its catalog application region (modules.toml; docs/protocols.md cites RAK-nRF52-RUI's
# flash_nrf52840.ld, FLASH ORIGIN 0x27000, and the Adafruit nRF52 Arduino core's linker script,
# 0x26000). images.load places a package's images by the same module.
FAMILY_MODULES = {SECURE: "rak4631-r", LEGACY: "rak4631-arduino"}
_SHORT = {SECURE: "RUI3 (Nordic Secure DFU)", LEGACY: "Arduino (Adafruit legacy DFU)"}

# Nordic's dfu-cc.proto (proto2), as data: message → [(name, number, label, type, type name / default)].
_ENUMS = {
    "OpCode": ["RESET", "INIT"],
    "FwType": ["APPLICATION", "SOFTDEVICE", "BOOTLOADER", "SOFTDEVICE_BOOTLOADER", "EXTERNAL_APPLICATION"],
    "HashType": ["NO_HASH", "CRC", "SHA128", "SHA256", "SHA512"],
    "ValidationType": ["NO_VALIDATION", "VALIDATE_GENERATED_CRC", "VALIDATE_SHA256",
                       "VALIDATE_ECDSA_P256_SHA256"],
    "SignatureType": ["ECDSA_P256_SHA256", "ED25519"],
}
_MESSAGES: dict[str, list[tuple[str, int, str, str, str | None]]] = {
    "Hash": [("hash_type", 1, "required", "enum", "HashType"), ("hash", 2, "required", "bytes", None)],
    "BootValidation": [("type", 1, "required", "enum", "ValidationType"),
                       ("bytes", 2, "required", "bytes", None)],
    "InitCommand": [("fw_version", 1, "optional", "uint32", None),
                    ("hw_version", 2, "optional", "uint32", None),
                    ("sd_req", 3, "repeated", "uint32", "packed"),
                    ("type", 4, "optional", "enum", "FwType"),
                    ("sd_size", 5, "optional", "uint32", None),
                    ("bl_size", 6, "optional", "uint32", None),
                    ("app_size", 7, "optional", "uint32", None),
                    ("hash", 8, "optional", "message", "Hash"),
                    ("is_debug", 9, "optional", "bool", None),
                    ("boot_validation", 10, "repeated", "message", "BootValidation")],
    "ResetCommand": [("timeout", 1, "required", "uint32", None)],
    "Command": [("op_code", 1, "optional", "enum", "OpCode"), ("init", 2, "optional", "message", "InitCommand"),
                ("reset", 3, "optional", "message", "ResetCommand")],
    "SignedCommand": [("command", 1, "required", "message", "Command"),
                      ("signature_type", 2, "required", "enum", "SignatureType"),
                      ("signature", 3, "required", "bytes", None)],
    "Packet": [("command", 1, "optional", "message", "Command"),
               ("signed_command", 2, "optional", "message", "SignedCommand")],
}


@lru_cache(maxsize=1)
def messages() -> dict[str, Any]:
    """Message classes for Nordic's init packet layout, built at run time from the table above."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    labels = {"required": F.LABEL_REQUIRED, "optional": F.LABEL_OPTIONAL, "repeated": F.LABEL_REPEATED}
    types = {"uint32": F.TYPE_UINT32, "bytes": F.TYPE_BYTES, "bool": F.TYPE_BOOL,
             "enum": F.TYPE_ENUM, "message": F.TYPE_MESSAGE}
    fdp = descriptor_pb2.FileDescriptorProto(name="rakflash/dfu-cc.proto", package="dfu", syntax="proto2")
    for name, values in _ENUMS.items():
        e = fdp.enum_type.add(name=name)
        for number, value in enumerate(values):
            e.value.add(name=value, number=number)
    for name, fields in _MESSAGES.items():
        m = fdp.message_type.add(name=name)
        for fname, number, label, ftype, extra in fields:
            f = m.field.add(name=fname, number=number, label=labels[label], type=types[ftype])
            if ftype in ("enum", "message"):
                f.type_name = f".dfu.{extra}"
            if extra == "packed":
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"dfu.{name}"))
            for name in _MESSAGES}


def enum_name(enum: str, number: int) -> str:
    values = _ENUMS[enum]
    return values[number] if 0 <= number < len(values) else f"{enum}({number})"


# ------------------------------------------------------------------ what a package is

@dataclass
class InitPacket:
    """What an init packet requires, whichever family it is."""

    family: str
    fw_type: str                         # APPLICATION, SOFTDEVICE, BOOTLOADER, SOFTDEVICE_BOOTLOADER
    fw_version: int | None = None
    hw_version: int | None = None        # Secure DFU: hardware version (52 on nRF52840 modules)
    device_type: int | None = None       # legacy: device type (0x0052)
    device_revision: int | None = None   # legacy
    sd_req: list[int] = field(default_factory=list)
    app_size: int = 0
    sd_size: int = 0
    bl_size: int = 0
    hash_type: str | None = None
    hash: bytes = b""
    crc16: int | None = None             # legacy: CRC-16/CCITT of the image
    signed: bool = False
    signature_type: str | None = None
    signature: bytes = b""
    is_debug: bool = False
    command_bytes: bytes = b""           # Secure DFU: the serialized InitCommand (what is signed)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"family": self.family, "type": self.fw_type, "fw_version": self.fw_version,
             "sd_req": [f"{x:#06x}" for x in self.sd_req], "signed": self.signed}
        if self.family == SECURE:
            d.update(hw_version=self.hw_version, hash_type=self.hash_type, hash=self.hash.hex(),
                     signature_type=self.signature_type, is_debug=self.is_debug,
                     sizes={"application": self.app_size, "softdevice": self.sd_size,
                            "bootloader": self.bl_size})
        else:
            d.update(device_type=f"{self.device_type:#06x}" if self.device_type is not None else None,
                     device_revision=self.device_revision,
                     crc16=f"{self.crc16:#06x}" if self.crc16 is not None else None)
        return d


@dataclass
class PackageImage:
    """One image of a package: the firmware bytes and its init packet."""

    kind: str                            # manifest key: application, bootloader, softdevice, softdevice_bootloader
    bin_file: str
    dat_file: str
    firmware: bytes
    init_bytes: bytes
    init: InitPacket

    @property
    def crc32(self) -> int:
        return zlib.crc32(self.firmware) & 0xFFFFFFFF

    def to_dict(self) -> dict:
        return {"kind": self.kind, "bin_file": self.bin_file, "dat_file": self.dat_file,
                "size": len(self.firmware), "crc32": f"{self.crc32:#010x}",
                "sha256": hashlib.sha256(self.firmware).hexdigest(),
                "init_packet_bytes": len(self.init_bytes), "init": self.init.to_dict()}


@dataclass
class DfuPackage:
    path: str
    family: str
    images: list[PackageImage]
    manifest: dict
    sha256: str
    file_size: int

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES[self.family]

    def image(self, kind: str) -> PackageImage | None:
        return next((i for i in self.images if i.kind == kind), None)

    @property
    def application(self) -> PackageImage | None:
        return self.image("application")

    def linked_elsewhere(self, cat: Any = None) -> LinkedElsewhere | None:
        """Whether the application is linked for another base than where its family's bootloader
        writes it (see :func:`linked_elsewhere`)."""
        return linked_elsewhere(self, cat)

    def to_dict(self) -> dict:
        problem = self.linked_elsewhere()
        return {"file": self.path, "format": "dfu-package", "family": self.family,
                "family_name": self.family_name, "sha256": self.sha256, "file_size": self.file_size,
                "images": [i.to_dict() for i in self.images],
                "application_linked_elsewhere": problem.to_dict() if problem else None}


@dataclass(frozen=True)
class LinkedElsewhere:
    """A package's application whose vector table says it was linked for another address than the
    one its bootloader writes it at: the reset handler lies outside the image as placed, so the
    module would not start it (an Arduino sketch, linked for 0x26000, in a RUI3 package that puts
    it at 0x27000, say)."""

    family: str                  # the package's family
    placed_at: int               # where that family's bootloader writes the application
    size: int
    reset: int                   # the reset handler address the vector table names
    linked_for: int | None       # the other family's application base the image fits, if one does
    linked_for_family: str | None

    def describe(self) -> str:
        where = (f"linked for {self.linked_for:#07x}, where the {_SHORT[self.linked_for_family]} "
                 f"bootloader puts an application"
                 if self.linked_for is not None and self.linked_for_family is not None
                 else "linked for another address")
        side = "below" if self.reset < self.placed_at else "past the end of"
        return (f"its application is {where}; this package's {_SHORT[self.family]} bootloader "
                f"writes it at {self.placed_at:#07x}, and there its reset handler "
                f"({self.reset:#07x}) lies {side} the image: the module would not start it")

    def next_step(self) -> str:
        if self.linked_for_family == LEGACY:
            return ("It is an Arduino sketch in a RUI3 package: package it for the Arduino bootloader "
                    "('adafruit-nrfutil dfu genpkg --dev-type 0x0052 --application FILE.hex PKG.zip') "
                    "for an Arduino RAK4631, or build the firmware for RUI3 (RAK-nRF52-RUI links it "
                    "at 0x27000) and package that with 'nrfutil pkg generate'.")
        if self.linked_for_family == SECURE:
            return ("It is a RUI3 application in an Arduino package: package it with 'nrfutil pkg "
                    "generate' for a RAK4631-R, or build the sketch with the Arduino core (it links "
                    "at 0x26000) and package that with 'adafruit-nrfutil dfu genpkg'.")
        return (f"Rebuild the application linked for {self.placed_at:#07x} (the {FAMILY_NAMES[self.family]} "
                f"application base) and package it again.")

    def to_dict(self) -> dict:
        return {"placed_at": self.placed_at, "reset": self.reset, "linked_for": self.linked_for,
                "linked_for_family": self.linked_for_family, "message": self.describe()}


def application_base(family: str, cat: Any = None) -> int:
    """Where ``family``'s bootloader writes a package's application (the catalog's region)."""
    from . import catalog
    return (cat or catalog.load()).module(FAMILY_MODULES[family]).app.start


def linked_elsewhere(pkg: DfuPackage, cat: Any = None) -> LinkedElsewhere | None:
    """The application's reset handler, from its vector table, must lie inside the image as its
    family's bootloader places it; None when it does, or when there is no application or no
    vector table to go on (whether the bytes are firmware at all is the image checks' question)."""
    app = pkg.application
    if app is None or pkg.family not in FAMILY_MODULES:
        return None
    vector = vector_at(app.firmware, 0)
    if vector is None:
        return None
    base, size, reset = application_base(pkg.family, cat), len(app.firmware), vector[1]
    if base <= reset < base + size:
        return None
    other = next(((f, b) for f in FAMILY_MODULES if f != pkg.family
                  for b in [application_base(f, cat)] if b <= reset < b + size), (None, None))
    return LinkedElsewhere(pkg.family, base, size, reset, other[1], other[0])


# Order in which nrfutil sends a package's images (SoftDevice and bootloader first).
IMAGE_ORDER = ("softdevice_bootloader", "softdevice", "bootloader", "application")


def is_package(path: str | Path) -> bool:
    """Whether ``path`` looks like a DFU package (a zip with a manifest.json)."""
    try:
        with zipfile.ZipFile(path) as z:
            return "manifest.json" in z.namelist()
    except _ZIP_FAULTS:              # a damaged zip: load() says what is wrong with it
        return False


def load(path: str | Path, *, raw: bytes | None = None) -> DfuPackage:
    """Read a package and parse every init packet; any defect is a :class:`PackageError`.
    ``raw``: the file's bytes, when the caller has read them already."""
    from .firmware_file import max_file_size, read_file
    limit = max_file_size()
    if raw is None:
        raw = read_file(path, limit)     # a regular file of sane size only (no FIFO, no /dev/zero)
    if not raw:
        raise ImageEmpty(f"{path} is empty")
    z = _open_zip(path, raw)
    names = set(z.namelist())
    with z:
        if "manifest.json" not in names:
            raise PackageError(f"{path} has no manifest.json: it is a zip, but not a DFU package")
        if z.getinfo("manifest.json").file_size > 1 << 20:
            raise PackageError(f"{path}: its manifest.json unpacks to more than 1 MiB: not a DFU manifest")
        text = _read_member(path, z, "manifest.json")
        try:
            manifest = json.loads(text)["manifest"]
            assert isinstance(manifest, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise PackageError(f"{path}: manifest.json is not a DFU manifest") from None
        images = []
        for kind in IMAGE_ORDER:
            entry = manifest.get(kind)
            if not entry:
                continue
            try:
                bin_file, dat_file = entry["bin_file"], entry["dat_file"]
            except (KeyError, TypeError):
                raise PackageError(f"{path}: the manifest's {kind} names no bin_file/dat_file") from None
            for name in (bin_file, dat_file):
                if name not in names:
                    raise PackageError(f"{path}: the manifest names {name}, which is not in the zip",
                                       hint="The package is incomplete: download it again.")
            for name in (bin_file, dat_file):
                if z.getinfo(name).file_size > limit:       # a zip bomb, or not a package
                    raise PackageError(f"{path}: {name} unpacks to {z.getinfo(name).file_size:,} "
                                       f"bytes, more than any firmware rakflash knows")
            firmware, init_bytes = _read_member(path, z, bin_file), _read_member(path, z, dat_file)
            try:
                init = parse_init(init_bytes, legacy_hint=_legacy_manifest(manifest), kind=kind)
            except PackageError as exc:
                raise PackageError(f"{path}: {dat_file}: {exc.message}", hint=exc.hint) from None
            _check_sizes(path, kind, firmware, init, entry)
            images.append(PackageImage(kind, bin_file, dat_file, firmware, init_bytes, init))
    if not images:
        raise PackageError(f"{path}: the manifest lists no application, bootloader or SoftDevice")
    families = {i.init.family for i in images}
    if len(families) > 1:
        raise PackageError(f"{path} mixes Secure DFU and legacy init packets")
    return DfuPackage(str(path), families.pop(), images, manifest, hashlib.sha256(raw).hexdigest(), len(raw))


# What Python's zipfile (and zlib beneath it) raises on a damaged or unusual zip. A package read
# from disk is outside input: each of these is the package's defect, said in words (a
# PackageError), never an internal error. Zip layout: PKWARE's APPNOTE.TXT (4.3.7 local header,
# 4.3.12 central directory, 4.4.4 flag bit 0 "encrypted", bit 6 "strong encryption", 4.4.5
# compression methods; 99 is WinZip's AES). nrfutil and adafruit-nrfutil write plain deflate
# (Python's zipfile, ZIP_DEFLATED: pc-nrfutil nordicsemi/dfu/package.py).
_ZIP_FAULTS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError,
               ValueError, struct.error, IndexError, UnicodeDecodeError)
_DAMAGED = "The package is damaged (a cut or corrupted download): download it again."


def _open_zip(path: str | Path, raw: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise PackageError(f"{path} is not a zip file (a DFU package is a .zip with a manifest.json)") from None
    except NotImplementedError as exc:       # e.g. "zip file version 8.4": a damaged directory entry
        raise PackageError(f"{path}: its zip directory asks for what no DFU package uses ({exc})",
                           hint=_DAMAGED) from None
    except _ZIP_FAULTS as exc:
        raise PackageError(f"{path}: its zip directory is damaged ({_why(exc)})", hint=_DAMAGED) from None


def _read_member(path: str | Path, z: zipfile.ZipFile, name: str) -> bytes:
    """One member's bytes (its CRC-32 checked by zipfile), or a PackageError saying what is wrong."""
    info = z.getinfo(name)
    if info.flag_bits & 0x41:
        raise PackageError(f"{path}: {name} is encrypted in the zip; a DFU package never is",
                           hint="Use the package as nrfutil or adafruit-nrfutil made it (not re-zipped "
                                "with a password), or download it again.")
    try:
        return z.read(name)
    except NotImplementedError as exc:
        what = (f"compression method {info.compress_type}, which rakflash can't unpack"
                if "compression method" in str(exc) else f"a zip feature no DFU package uses ({exc})")
        raise PackageError(f"{path}: {name} is stored with {what} (nrfutil writes deflate, method 8)",
                           hint="Use the package as nrfutil or adafruit-nrfutil made it, or download it "
                                "again.") from None
    except _ZIP_FAULTS as exc:
        raise PackageError(f"{path}: {name} is damaged in the zip ({_why(exc)})", hint=_DAMAGED) from None


def _why(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, zlib.error):
        return f"its compressed data does not unpack: {text}"
    if isinstance(exc, EOFError):
        return "its compressed data ends too early"
    return text or exc.__class__.__name__


def _legacy_manifest(manifest: dict) -> bool:
    return "dfu_version" in manifest or any(
        isinstance(v, dict) and isinstance(v.get("init_packet_data"), dict)
        and "firmware_crc16" in v["init_packet_data"] for v in manifest.values())


def parse_init(data: bytes, *, legacy_hint: bool = False, kind: str = "application") -> InitPacket:
    """An init packet of either family. A protobuf ``Packet`` is Secure DFU; the fixed record, legacy."""
    secure, missing = _parse_secure(data)
    if secure is not None and not (legacy_hint and _parse_legacy(data, kind) is not None):
        return secure
    legacy = _parse_legacy(data, kind)
    if legacy is not None:
        return legacy
    if missing:
        raise PackageError(f"the init packet is a Secure DFU packet without the fields dfu-cc.proto "
                           f"requires: {', '.join(missing)}",
                           hint="The package is damaged or was put together by hand: make it again "
                                "with 'nrfutil pkg generate'.")
    raise PackageError(f"the init packet ({len(data)} bytes) is neither a Secure DFU protobuf packet nor "
                       f"a legacy DFU record")


def _parse_secure(data: bytes) -> tuple[InitPacket | None, list[str]]:
    """The Secure DFU init packet in ``data``, or None and the required fields it lacks (a packet
    that parses but misses a field proto2 requires, such as the hash's bytes, can't be re-serialized
    for the signature check: protobuf raises EncodeError)."""
    from google.protobuf.message import DecodeError
    m = messages()
    packet = m["Packet"]()
    try:
        packet.ParseFromString(data)
    except DecodeError:
        return None, []
    if packet.HasField("signed_command"):
        command, signed = packet.signed_command.command, True
    elif packet.HasField("command"):
        command, signed = packet.command, False
    else:
        return None, []
    if not command.HasField("init"):
        return None, []
    if not packet.IsInitialized():
        return None, packet.FindInitializationErrors()
    init = command.init
    out = InitPacket(
        SECURE, enum_name("FwType", init.type),
        fw_version=init.fw_version if init.HasField("fw_version") else None,
        hw_version=init.hw_version if init.HasField("hw_version") else None,
        sd_req=list(init.sd_req), app_size=init.app_size, sd_size=init.sd_size, bl_size=init.bl_size,
        hash_type=enum_name("HashType", init.hash.hash_type) if init.HasField("hash") else None,
        hash=bytes(init.hash.hash) if init.HasField("hash") else b"", is_debug=init.is_debug,
        signed=signed, command_bytes=init.SerializeToString())
    if signed:
        out.signature_type = enum_name("SignatureType", packet.signed_command.signature_type)
        out.signature = bytes(packet.signed_command.signature)
    return out, []


# The legacy record (adafruit-nrfutil init_packet.py): device type u16, device revision u16,
# application version u32, SoftDevice count u16 and that many u16, then the image CRC-16.
_LEGACY_HEAD = struct.Struct("<HHIH")
LEGACY_NO_VERSION = 0xFFFFFFFF       # the application version field's "not set"
_LEGACY_TYPES = {"application": "APPLICATION", "softdevice": "SOFTDEVICE", "bootloader": "BOOTLOADER",
                 "softdevice_bootloader": "SOFTDEVICE_BOOTLOADER"}


def _parse_legacy(data: bytes, kind: str) -> InitPacket | None:
    if len(data) < _LEGACY_HEAD.size + 2:
        return None
    dev_type, dev_rev, app_version, count = _LEGACY_HEAD.unpack_from(data)
    if len(data) != _LEGACY_HEAD.size + 2 * count + 2:
        return None
    sd = list(struct.unpack_from(f"<{count}H", data, _LEGACY_HEAD.size))
    crc = struct.unpack_from("<H", data, len(data) - 2)[0]
    # 0xFFFFFFFF is adafruit-nrfutil's "no --application-version given": not set, not a version.
    return InitPacket(LEGACY, _LEGACY_TYPES.get(kind, kind.upper()),
                      fw_version=None if app_version == LEGACY_NO_VERSION else app_version,
                      device_type=dev_type, device_revision=dev_rev, sd_req=sd, crc16=crc)


def _check_sizes(path: str | Path, kind: str, firmware: bytes, init: InitPacket, entry: dict) -> None:
    if not firmware:
        raise PackageError(f"{path}: the {kind} image is empty")
    if init.family == SECURE:
        want = {"APPLICATION": init.app_size, "EXTERNAL_APPLICATION": init.app_size,
                "SOFTDEVICE": init.sd_size, "BOOTLOADER": init.bl_size,
                "SOFTDEVICE_BOOTLOADER": init.sd_size + init.bl_size}.get(init.fw_type)
        if want is not None and want != len(firmware):
            raise PackageError(f"{path}: the init packet says {want:,} bytes of {init.fw_type.lower()}, "
                               f"the image has {len(firmware):,}",
                               hint="The package is damaged or was put together by hand: make it again.")
        if init.hash_type == "SHA256" and hashlib.sha256(firmware).digest()[::-1] != init.hash:
            raise PackageError(f"{path}: the {kind} image does not match the hash in its init packet",
                               hint="The package is damaged: download it again.")
    elif init.crc16 is not None and crc16_ccitt(firmware) != init.crc16:
        raise PackageError(f"{path}: the {kind} image does not match the CRC-16 in its init packet",
                           hint="The package is damaged: download it again.")


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), as the legacy DFU uses: check value 0x29B1."""
    import binascii
    return binascii.crc_hqx(data, crc)


# ------------------------------------------------------------------ signing (ECDSA P-256)

def public_key_bytes(key_pem: bytes) -> bytes:
    """The 64-byte raw public key (x, y big-endian) of a PEM private or public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        pub = key.public_key()
    except (ValueError, TypeError):
        pub = serialization.load_pem_public_key(key_pem)
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 key")
    n = pub.public_numbers()
    return n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big")


def new_signing_key() -> bytes:
    """A fresh ECDSA P-256 private key, PEM (what 'nrfutil keys generate' makes)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def sign(data: bytes, key_pem: bytes) -> bytes:
    """nrfutil's signature: ECDSA P-256 over SHA-256, r and s each as 32 little-endian bytes."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 key")
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "little") + s.to_bytes(32, "little")


def verify(data: bytes, signature: bytes, public_key: bytes) -> bool:
    """Check an nrfutil-style signature against a raw 64-byte public key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
    if len(signature) != 64 or len(public_key) != 64:
        return False
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + public_key)
    r = int.from_bytes(signature[:32], "little")
    s = int.from_bytes(signature[32:], "little")
    try:
        pub.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


# ------------------------------------------------------------------ making packages

def secure_init_packet(firmware: bytes, *, fw_version: int = 1, hw_version: int = 52,
                       sd_req: tuple[int, ...] = (0x0100,), fw_type: str = "APPLICATION",
                       key_pem: bytes | None = None) -> bytes:
    """A Secure DFU init packet for ``firmware``, as ``nrfutil pkg generate`` makes it.

    Signed when ``key_pem`` is given: the signature covers the serialized
    ``InitCommand`` (pc-nrfutil ``init_packet_pb.py``); the hash is SHA-256 of the
    image, stored little-endian as nrfutil stores it.
    """
    m = messages()
    init = m["InitCommand"](fw_version=fw_version, hw_version=hw_version, sd_req=list(sd_req),
                            type=_ENUMS["FwType"].index(fw_type), is_debug=False)
    size_field = {"APPLICATION": "app_size", "SOFTDEVICE": "sd_size", "BOOTLOADER": "bl_size"}[fw_type]
    setattr(init, size_field, len(firmware))
    init.hash.hash_type = _ENUMS["HashType"].index("SHA256")
    init.hash.hash = hashlib.sha256(firmware).digest()[::-1]
    packet = m["Packet"]()
    if key_pem is None:
        packet.command.op_code = _ENUMS["OpCode"].index("INIT")
        packet.command.init.CopyFrom(init)
    else:
        sc = packet.signed_command
        sc.command.op_code = _ENUMS["OpCode"].index("INIT")
        sc.command.init.CopyFrom(init)
        sc.signature_type = _ENUMS["SignatureType"].index("ECDSA_P256_SHA256")
        sc.signature = sign(init.SerializeToString(), key_pem)
    return packet.SerializeToString()


def legacy_init_packet(firmware: bytes, *, device_type: int = 0x0052, device_revision: int = 0xFFFF,
                       app_version: int = 0xFFFFFFFF, sd_req: tuple[int, ...] = (0xFFFE,)) -> bytes:
    """A legacy init packet as ``adafruit-nrfutil dfu genpkg`` makes it."""
    return (_LEGACY_HEAD.pack(device_type, device_revision, app_version, len(sd_req))
            + struct.pack(f"<{len(sd_req)}H", *sd_req) + struct.pack("<H", crc16_ccitt(firmware)))


def make_package(firmware: bytes, init: bytes, *, legacy: bool = False, name: str = "app",
                 kind: str = "application") -> bytes:
    """A package zip: manifest.json, ``name.bin``, ``name.dat``."""
    entry: dict[str, Any] = {"bin_file": f"{name}.bin", "dat_file": f"{name}.dat"}
    manifest: dict[str, Any] = {kind: entry}
    if legacy:
        parsed = _parse_legacy(init, kind)
        if parsed is None:
            raise ValueError("not a legacy init packet")
        entry["init_packet_data"] = {
            "application_version": LEGACY_NO_VERSION if parsed.fw_version is None else parsed.fw_version,
            "device_revision": parsed.device_revision,
            "device_type": parsed.device_type, "firmware_crc16": parsed.crc16,
            "softdevice_req": parsed.sd_req}
        manifest["dfu_version"] = 0.5
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps({"manifest": manifest}, indent=4))
        z.writestr(entry["bin_file"], firmware)
        z.writestr(entry["dat_file"], init)
    return out.getvalue()


def secure_package(firmware: bytes, *, key_pem: bytes | None, **init_kw: Any) -> bytes:
    """A Secure DFU application package (signed when ``key_pem`` is given)."""
    return make_package(firmware, secure_init_packet(firmware, key_pem=key_pem, **init_kw))


def legacy_package(firmware: bytes, **init_kw: Any) -> bytes:
    """An Adafruit legacy DFU application package."""
    return make_package(firmware, legacy_init_packet(firmware, **init_kw), legacy=True)
