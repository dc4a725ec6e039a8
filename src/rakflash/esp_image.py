"""ESP32 firmware files: ESP-IDF app and bootloader images, partition tables, merged binaries.

What an ESP chip boots is laid out by Espressif's formats (docs/protocols.md "ESP32 images" has
the sources: ESP-IDF "App Image Format" and "Partition Tables", esptool "Firmware Image Format"):

* an **image** (``.bin`` of an app or of the second-stage bootloader) starts with an 8-byte
  header — magic ``0xE9``, segment count, SPI flash mode, flash size and frequency in one byte,
  entry point — and a 16-byte extended header holding the **chip id** the image is built for
  (ESP32 0, ESP32-S3 9, …), the chip revisions it accepts and whether a SHA-256 is appended;
  then its segments (load address, length, bytes), padding to 16 bytes, an XOR checksum byte
  (seed 0xEF) over the segments' bytes, and the optional SHA-256 of everything before it. An app
  has segments mapped from flash (DROM, IROM); the first DROM segment starts with the app
  descriptor (``esp_app_desc_t``, magic 0xABCD5432: version, project name, build date, ESP-IDF
  version). A bootloader has RAM segments only; its first DRAM segment may start with the
  bootloader descriptor (magic byte 0x50).
* a **partition table** (at flash 0x8000) is a list of 32-byte entries (magic ``AA 50``, type,
  subtype, offset, size, label, flags), optionally followed by an MD5 entry (``EB EB``) over them,
  ended by erased bytes.
* a **merged binary** (``esptool merge-bin``) is the flash from 0 (or from the bootloader's
  offset) with the bootloader, the partition table at 0x8000 and the apps at their partitions.

:func:`load` recognises these files (``images.load`` asks it before taking a file as a raw
``.bin``) and places them where they go in flash; :func:`analyse` says which chip and module they
are for, what they hold and what is wrong with them, for ``inspect`` and for the plan.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

from . import catalog as _catalog
from .catalog import Catalog, Module
from .errors import ImageTargetError, NotFirmware
from .firmware_file import short_path

IMAGE_MAGIC = 0xE9
CHECKSUM_SEED = 0xEF
APP_DESC_MAGIC = 0xABCD5432
BOOTLOADER_DESC_MAGIC = 0x50
PARTITION_MAGIC = b"\xaa\x50"
PARTITION_MD5_MAGIC = b"\xeb\xeb"
PARTITION_TABLE_OFFSET = 0x8000
PARTITION_TABLE_MAX = 0xC00          # ESP-IDF: the table is at most 0xC00 bytes (95 entries + MD5)
APP_OFFSET = 0x10000                 # the first app partition of ESP-IDF's and Arduino's default tables
APP_ALIGN = 0x10000                  # app partitions must start on a 64 KiB boundary (the MMU page)

# The chip id an image's extended header carries (esptool: each target's IMAGE_CHIP_ID).
CHIPS = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2", 13: "ESP32-C6",
         16: "ESP32-H2", 18: "ESP32-P4", 20: "ESP32-C61", 23: "ESP32-C5"}
# Where each chip's ROM looks for the second-stage bootloader (esptool BOOTLOADER_FLASH_OFFSET).
BOOTLOADER_OFFSETS = {0: 0x1000, 2: 0x1000}
# Address ranges the chip maps from flash (esptool targets: DROM_MAP_* / IROM_MAP_*): an image with
# a segment there runs from flash, so it is an app; the bootloader has RAM segments only.
FLASH_MAPPED = {0: ((0x3F400000, 0x3F800000, "DROM"), (0x400D0000, 0x40400000, "IROM")),
                2: ((0x3F000000, 0x3FF80000, "DROM"), (0x40080000, 0x40800000, "IROM")),
                9: ((0x3C000000, 0x3E000000, "DROM"), (0x42000000, 0x44000000, "IROM"))}
_DEFAULT_MAPPED = ((0x3C000000, 0x3D000000, "DROM"), (0x42000000, 0x43000000, "IROM"))

FLASH_MODES = {0: "QIO", 1: "QOUT", 2: "DIO", 3: "DOUT"}
FLASH_SIZES = {0x00: "1MB", 0x10: "2MB", 0x20: "4MB", 0x30: "8MB", 0x40: "16MB", 0x50: "32MB",
               0x60: "64MB", 0x70: "128MB"}
FLASH_SIZE_BYTES = {name: int(name[:-2]) << 20 for name in FLASH_SIZES.values()}

# ESP-IDF partition types and subtypes ("Partition Tables").
PARTITION_TYPES = {0x00: "app", 0x01: "data"}
APP_SUBTYPES = {0x00: "factory", 0x20: "test", **{0x10 + n: f"ota_{n}" for n in range(16)}}
DATA_SUBTYPES = {0x00: "ota", 0x01: "phy", 0x02: "nvs", 0x03: "coredump", 0x04: "nvs_keys",
                 0x05: "efuse", 0x06: "undefined", 0x80: "esphttpd", 0x81: "fat", 0x82: "spiffs",
                 0x83: "littlefs"}


class EspImageError(ValueError):
    """Bytes that start like an ESP file but can't be one (said in words)."""


@dataclass
class EspSegment:
    load_address: int
    data: bytes
    file_offset: int           # where its bytes start in the image
    memory: str                # "DROM", "IROM" or "RAM"


@dataclass
class EspAppImage:
    """One ESP-IDF image (an app or a second-stage bootloader)."""

    offset: int                # where it starts in the file
    chip_id: int
    entry: int
    flash_mode: int
    flash_size_freq: int
    segments: list[EspSegment]
    min_rev_full: int
    max_rev_full: int
    hash_appended: bool
    length: int                # bytes from the header to the end of the checksum (and hash)
    checksum: int
    checksum_ok: bool
    sha256_ok: bool | None     # None: no hash appended
    app_desc: dict[str, Any] | None = None
    bootloader_desc: dict[str, Any] | None = None

    @property
    def chip(self) -> str:
        return CHIPS.get(self.chip_id, f"an unknown chip (id {self.chip_id})")

    @property
    def kind(self) -> str:
        return "app" if any(s.memory != "RAM" for s in self.segments) else "bootloader"

    @property
    def flash_size(self) -> str | None:
        return FLASH_SIZES.get(self.flash_size_freq & 0xF0)

    @property
    def version(self) -> str | None:
        """The app's version (its descriptor), or the bootloader's ESP-IDF version."""
        if self.app_desc:
            return self.app_desc["version"] or None
        if self.bootloader_desc:
            return f"ESP-IDF {self.bootloader_desc['idf_ver']}" if self.bootloader_desc["idf_ver"] else None
        return None

    def problems(self) -> list[str]:
        out = []
        if not self.checksum_ok:
            out.append(f"its checksum byte {self.checksum:#04x} does not match its segments (the file "
                       f"is damaged)")
        if self.sha256_ok is False:
            out.append("its appended SHA-256 does not match its bytes (the file is damaged)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"offset": self.offset, "kind": self.kind, "chip": self.chip, "chip_id": self.chip_id,
                "entry": self.entry, "flash_mode": FLASH_MODES.get(self.flash_mode, self.flash_mode),
                "flash_size": self.flash_size, "length": self.length,
                "min_rev": f"v{self.min_rev_full // 100}.{self.min_rev_full % 100}",
                "max_rev": f"v{self.max_rev_full // 100}.{self.max_rev_full % 100}",
                "segments": [{"load_address": s.load_address, "size": len(s.data), "memory": s.memory}
                             for s in self.segments],
                "checksum_ok": self.checksum_ok, "sha256_ok": self.sha256_ok,
                "app": self.app_desc, "bootloader": self.bootloader_desc}


@dataclass
class Partition:
    label: str
    type: int
    subtype: int
    offset: int
    size: int
    flags: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def type_name(self) -> str:
        return PARTITION_TYPES.get(self.type, f"{self.type:#04x}")

    @property
    def subtype_name(self) -> str:
        table = APP_SUBTYPES if self.type == 0 else DATA_SUBTYPES if self.type == 1 else {}
        return table.get(self.subtype, f"{self.subtype:#04x}")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "type": self.type_name, "subtype": self.subtype_name,
                "offset": self.offset, "size": self.size, "encrypted": bool(self.flags & 1)}


@dataclass
class PartitionTable:
    partitions: list[Partition]
    md5_ok: bool | None          # None: the table carries no MD5 entry

    @property
    def apps(self) -> list[Partition]:
        return [p for p in self.partitions if p.type == 0]

    def first_app(self) -> Partition | None:
        """Where a flashed app goes: the factory partition, else the first OTA slot."""
        apps = self.apps
        return next((p for p in apps if p.subtype == 0), None) or (apps[0] if apps else None)

    def problems(self, flash_size: int | None = None) -> list[str]:
        """What makes the table unusable on a chip with ``flash_size`` bytes of flash."""
        out = []
        if self.md5_ok is False:
            out.append("its MD5 entry does not match its entries (the table is damaged)")
        if not self.apps:
            out.append("it has no app partition, so the bootloader has nothing to start")
        for p in self.partitions:
            if p.offset < PARTITION_TABLE_OFFSET + 0x1000:
                out.append(f"partition {p.label!r} starts at {p.offset:#x}, inside the bootloader "
                           f"or the partition table (below {PARTITION_TABLE_OFFSET + 0x1000:#x})")
            if p.type == 0 and p.offset % APP_ALIGN:
                out.append(f"app partition {p.label!r} at {p.offset:#x} is not on a 64 KiB boundary")
            if flash_size is not None and p.end > flash_size:
                out.append(f"partition {p.label!r} ({p.offset:#x}-{p.end:#x}) ends past the "
                           f"{flash_size // (1 << 20)} MB of flash")
        ordered = sorted(self.partitions, key=lambda p: p.offset)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if b.offset < a.end:
                out.append(f"partitions {a.label!r} and {b.label!r} overlap at {b.offset:#x}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"partitions": [p.to_dict() for p in self.partitions], "md5_ok": self.md5_ok}


@dataclass
class EspFile:
    """What an ESP file holds: its parts at the flash offsets they go to."""

    kind: str                                  # "app", "bootloader", "partition-table", "merged"
    base: int                                  # where the file's first byte goes in flash
    images: list[tuple[int, EspAppImage]] = field(default_factory=list)     # (flash offset, image)
    table: tuple[int, PartitionTable] | None = None
    base_source: str = "file"

    @property
    def chip_id(self) -> int | None:
        ids = {img.chip_id for _, img in self.images}
        return ids.pop() if len(ids) == 1 else (None if not ids else -1)

    @property
    def chip(self) -> str | None:
        cid = self.chip_id
        if cid is None:
            return None
        return "several chips" if cid == -1 else CHIPS.get(cid, f"an unknown chip (id {cid})")

    def part(self, kind: str) -> tuple[int, EspAppImage] | None:
        return next(((o, i) for o, i in self.images if i.kind == kind), None)

    @property
    def app(self) -> EspAppImage | None:
        found = self.part("app")
        return found[1] if found else None

    @property
    def bootloader(self) -> EspAppImage | None:
        found = self.part("bootloader")
        return found[1] if found else None

    def problems(self, flash_size: int | None = None) -> list[str]:
        out = []
        for offset, img in self.images:
            out += [f"the {img.kind} at {offset:#x}: {p}" for p in img.problems()]
        if self.chip_id == -1:
            out.append("its images are built for different chips: "
                       + ", ".join(f"{i.kind} at {o:#x} for the {i.chip}" for o, i in self.images))
        if self.table is not None:
            out += [f"the partition table: {p}" for p in self.table[1].problems(flash_size)]
            for offset, img in self.images:
                if img.kind != "app":
                    continue
                slot = next((p for p in self.table[1].apps if p.offset == offset), None)
                if slot is None:
                    out.append(f"the app at {offset:#x} is in no app partition of its partition table")
                elif img.length > slot.size:
                    out.append(f"the app at {offset:#x} ({img.length:,} bytes) is larger than its "
                               f"partition {slot.label!r} ({slot.size:,} bytes)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "base": self.base, "chip": self.chip,
                "images": [img.to_dict() | {"flash_offset": o} for o, img in self.images],
                "partition_table": ({"flash_offset": self.table[0], **self.table[1].to_dict()}
                                    if self.table else None)}


# ------------------------------------------------------------------ parsing

def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _memory(chip_id: int, addr: int) -> str:
    for lo, hi, name in FLASH_MAPPED.get(chip_id, _DEFAULT_MAPPED):
        if lo <= addr < hi:
            return name
    return "RAM"


def parse_image(data: bytes, offset: int = 0) -> EspAppImage:
    """The ESP image at ``offset`` of ``data``; :class:`EspImageError` when it is none."""
    if len(data) < offset + 24:
        raise EspImageError(f"too short for an ESP image header at {offset:#x}")
    magic, count, mode, size_freq, entry = struct.unpack_from("<BBBBI", data, offset)
    if magic != IMAGE_MAGIC:
        raise EspImageError(f"no ESP image magic (0xE9) at {offset:#x}")
    (_wp, _d1, _d2, _d3, chip_id, _min_rev, min_full, max_full, _res,
     hash_appended) = struct.unpack_from("<BBBBHBHH4sB", data, offset + 8)
    if not 1 <= count <= 16:
        raise EspImageError(f"an ESP image header at {offset:#x} with {count} segments")
    if hash_appended not in (0, 1):
        raise EspImageError(f"an ESP image header at {offset:#x} whose hash flag is {hash_appended}")
    if chip_id not in CHIPS:
        raise EspImageError(f"an ESP image header at {offset:#x} for chip id {chip_id}, which no "
                            f"Espressif chip esptool knows has")
    pos = offset + 24
    segments = []
    checksum = CHECKSUM_SEED
    for n in range(count):
        if len(data) < pos + 8:
            raise EspImageError(f"the ESP image at {offset:#x} ends inside segment {n}'s header")
        addr, length = struct.unpack_from("<II", data, pos)
        if len(data) < pos + 8 + length:
            raise EspImageError(f"the ESP image at {offset:#x} ends inside segment {n} "
                                f"({length:,} bytes from {pos + 8:#x})")
        body = bytes(data[pos + 8:pos + 8 + length])
        for b in body:
            checksum ^= b
        segments.append(EspSegment(addr, body, pos + 8 - offset, _memory(chip_id, addr)))
        pos += 8 + length
    pos += 15 - (pos - offset) % 16          # padded so that the checksum byte ends a 16-byte block
    if len(data) < pos + 1:
        raise EspImageError(f"the ESP image at {offset:#x} ends before its checksum")
    stored = data[pos]
    end = pos + 1
    sha_ok = None
    if hash_appended:
        if len(data) < end + 32:
            raise EspImageError(f"the ESP image at {offset:#x} ends before its SHA-256")
        sha_ok = hashlib.sha256(data[offset:end]).digest() == bytes(data[end:end + 32])
        end += 32
    img = EspAppImage(offset, chip_id, entry, mode, size_freq, segments, min_full, max_full,
                      bool(hash_appended), end - offset, stored, stored == checksum, sha_ok)
    first_drom = next((s for s in segments if s.memory == "DROM"), None)
    if first_drom is not None:
        img.app_desc = parse_app_desc(first_drom.data)
    elif segments and img.kind == "bootloader":
        first_ram = next((s for s in segments if len(s.data) >= 80), None)
        if first_ram is not None:
            img.bootloader_desc = parse_bootloader_desc(first_ram.data)
    return img


def peek(head: bytes) -> dict[str, Any] | None:
    """What the first bytes of an image say (its chip, and the app or bootloader descriptor at
    the start of its first segment) when only they were read; None when they start no image."""
    if len(head) < 32 or head[0] != IMAGE_MAGIC:
        return None
    chip_id, = struct.unpack_from("<H", head, 12)
    if chip_id not in CHIPS:
        return None
    addr, length = struct.unpack_from("<II", head, 24)
    first = head[32:32 + length]
    memory = _memory(chip_id, addr)
    return {"chip_id": chip_id, "chip": CHIPS[chip_id],
            "app": parse_app_desc(first) if memory == "DROM" else None,
            "bootloader": parse_bootloader_desc(first) if memory == "RAM" else None}


def parse_app_desc(data: bytes) -> dict[str, Any] | None:
    """``esp_app_desc_t`` at the start of an app's first DROM segment (ESP-IDF "App Image Format")."""
    if len(data) < 256 or struct.unpack_from("<I", data, 0)[0] != APP_DESC_MAGIC:
        return None
    secure_version, = struct.unpack_from("<I", data, 4)
    version, project, time_, date, idf = struct.unpack_from("32s32s16s16s32s", data, 16)
    elf_sha = data[144:176]
    return {"version": _cstr(version), "project_name": _cstr(project), "time": _cstr(time_),
            "date": _cstr(date), "idf_ver": _cstr(idf), "secure_version": secure_version,
            "app_elf_sha256": elf_sha.hex()}


def parse_bootloader_desc(data: bytes) -> dict[str, Any] | None:
    """``esp_bootloader_desc_t`` at the start of a bootloader's DRAM segment (ESP-IDF 5.x)."""
    if len(data) < 80 or data[0] != BOOTLOADER_DESC_MAGIC:
        return None
    version, idf, date_time = struct.unpack_from("<I32s24s", data, 4)
    return {"version": version, "idf_ver": _cstr(idf), "date_time": _cstr(date_time)}


def parse_partition_table(data: bytes) -> PartitionTable:
    """An ESP-IDF partition table; :class:`EspImageError` when ``data`` does not start with one."""
    if data[:2] != PARTITION_MAGIC:
        raise EspImageError("no partition table magic (AA 50)")
    parts: list[Partition] = []
    md5_ok = None
    for pos in range(0, min(len(data), PARTITION_TABLE_MAX), 32):
        entry = data[pos:pos + 32]
        if len(entry) < 32 or entry == b"\xff" * 32:
            break
        if entry[:2] == PARTITION_MD5_MAGIC:
            md5_ok = hashlib.md5(data[:pos]).digest() == entry[16:32]
            break
        if entry[:2] != PARTITION_MAGIC:
            raise EspImageError(f"partition table entry {pos // 32} does not start with AA 50")
        ptype, subtype, offset, size, label, flags = struct.unpack_from("<BBII16sI", entry, 2)
        parts.append(Partition(_cstr(label), ptype, subtype, offset, size, flags))
    if not parts:
        raise EspImageError("a partition table without entries")
    return PartitionTable(parts, md5_ok)


def _try_image(raw: bytes, offset: int) -> EspAppImage | None:
    try:
        return parse_image(raw, offset)
    except EspImageError:
        return None


def detect(raw: bytes) -> EspFile | None:
    """What ESP file ``raw`` is, where it goes in flash; None when it is no ESP file.

    A merged binary is told by an image and a partition table at their offsets relative to each
    other (the bootloader 0x7000 below the table on the ESP32, 0x8000 below on later chips); a
    lone image by its header; a lone partition table by its first entry's magic.
    """
    if raw[:2] == PARTITION_MAGIC:
        try:
            table = parse_partition_table(raw)
        except EspImageError:
            return None
        return EspFile("partition-table", PARTITION_TABLE_OFFSET, table=(PARTITION_TABLE_OFFSET, table),
                       base_source="the partition table's offset")
    # A merged binary from flash 0 (the ESP32's bootloader at 0x1000, later chips' at 0), or one
    # that starts at the ESP32 bootloader's own offset (merge-bin --target-offset 0x1000).
    for base, boot_at in ((0, 0x1000), (0, 0), (0x1000, 0x1000)):
        table_at = PARTITION_TABLE_OFFSET - base
        if raw[table_at:table_at + 2] != PARTITION_MAGIC:
            continue
        boot = _try_image(raw, boot_at - base)
        if boot is None or BOOTLOADER_OFFSETS.get(boot.chip_id, 0) != boot_at:
            continue
        try:
            table = parse_partition_table(raw[table_at:])
        except EspImageError:
            continue
        found = EspFile("merged", base, [(boot_at, boot)], (PARTITION_TABLE_OFFSET, table),
                        base_source="a merged binary: its own layout")
        for p in table.apps:
            app = _try_image(raw, p.offset - base) if p.offset - base < len(raw) else None
            if app is not None:
                found.images.append((p.offset, app))
        return found
    img = _try_image(raw, 0)
    if img is None:
        return None
    if img.kind == "bootloader":
        return EspFile("bootloader", BOOTLOADER_OFFSETS.get(img.chip_id, 0), [(0, img)],
                       base_source=f"the {img.chip}'s bootloader offset")
    return EspFile("app", APP_OFFSET, [(0, img)],
                   base_source="the first app partition of the default partition tables")


# ------------------------------------------------------------------ for images.load / images.analyse
# (images.py builds its Image and ImageInfo from these: this module knows nothing of them)

FORMATS = {"app": "esp-app", "bootloader": "esp-bootloader", "partition-table": "esp-partition-table",
           "merged": "esp-merged"}


def place(path: str, raw: bytes, address: int | None) -> EspFile | None:
    """An ESP file placed in flash (its parts' offsets are flash addresses); None when ``raw`` is
    none. ``address`` (``--address``) moves a lone image or table; a merged binary keeps its own."""
    found = detect(raw)
    if found is None:
        return None
    if found.kind == "merged":
        if address is not None and address != found.base:
            from .errors import UsageError
            raise UsageError(f"{path} is a merged binary: it carries its own layout from "
                             f"{found.base:#x}, so --address can't move it", hint="Leave out --address.")
    else:
        if address is not None:
            found.base, found.base_source = address, "--address"
        # A lone image or table: its parts' offsets were relative to the file; now in flash.
        found.images = [(o + found.base, i) for o, i in found.images]
        if found.table is not None:
            found.table = (found.base, found.table[1])
    return found


def modules_for_chip(chip_id: int | None, cat: Catalog | None = None) -> list[Module]:
    cat = cat or _catalog.load()
    return [m for m in cat.modules.values() if m.esp is not None and m.esp_fact("image_chip_id") == chip_id]


def not_esp_firmware(path: str, data: bytes, module: Module, known: str | None) -> NotFirmware:
    """A file that holds no ESP image, for an ESP module (``known``: what the file is, if told)."""
    why = (f"it is {known}" if known else
           f"it holds no ESP image (an ESP-IDF app or bootloader starts with the byte E9, a partition "
           f"table with AA 50, a merged binary has both at their offsets; it starts "
           f"{data[:4].hex(' ').upper()})")
    return NotFirmware(f"{short_path(path)} does not look like firmware for the {module.name}: {why}",
                       hint=f"Use the .bin built for the {module.name} ({module.mcu.name.split(' (')[0]}): "
                            f"the app .bin, or the merged binary of bootloader, partition table and app; "
                            f"'rakflash inspect FILE' says what a file holds.")


def target(esp: EspFile, path: str, module: Module | None, cat: Catalog | None = None) -> Module | None:
    """The module an ESP file is for: ``module``, checked against the image header's chip id
    (:class:`ImageTargetError` when built for another chip), else the catalog's first module
    with that chip."""
    chip_id = esp.chip_id
    if module is None:
        found = modules_for_chip(chip_id, cat) if chip_id is not None and chip_id >= 0 else []
        return found[0] if found else None
    if module.esp is None:
        raise ImageTargetError(
            f"{path} is an {esp.chip or 'ESP32'} image (its header's chip id), but the "
            f"{module.name} has an {module.mcu.name}",
            hint=f"Use the firmware built for the {module.name}.")
    if chip_id is not None and chip_id != module.esp_fact("image_chip_id"):
        raise ImageTargetError(
            f"{path} is built for the {esp.chip} (its image header says chip id "
            f"{chip_id}), but the {module.name} has an {CHIPS[module.esp_fact('image_chip_id')]}",
            hint=f"Use the firmware built for the {module.name} "
                 f"({CHIPS[module.esp_fact('image_chip_id')]}); an image for another chip does not "
                 f"start on it.", chip_id=chip_id)
    return module
