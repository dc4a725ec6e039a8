"""Synthetic ESP32 / ESP32-S3 firmware in Espressif's formats, for the virtual modules and tests.

Each file is well-formed as ESP-IDF writes it (see :mod:`rakflash.esp_image` for the layout and
docs/protocols.md for the sources): images with their header, extended header (chip id), segments,
XOR checksum and appended SHA-256, an app descriptor carrying the app's version and project name,
a bootloader descriptor with its ESP-IDF version; partition tables with their MD5 entry; merged
binaries with everything at its flash offset. ``esptool image-info`` reads them as it reads real
ones (the tests check). Their code bytes are deterministic filler, compressible about as much as
real firmware, so they run on the simulator only.
"""

from __future__ import annotations

import hashlib
import random
import struct

from ..esp_image import (
    APP_DESC_MAGIC,
    APP_OFFSET,
    BOOTLOADER_DESC_MAGIC,
    BOOTLOADER_OFFSETS,
    CHECKSUM_SEED,
    FLASH_MAPPED,
    IMAGE_MAGIC,
    PARTITION_MAGIC,
    PARTITION_MD5_MAGIC,
    PARTITION_TABLE_OFFSET,
)

ESP32, ESP32S3 = 0, 9
IDF_VERSION = "v5.1.4"
# (DRAM, IRAM) load addresses of an app's RAM segments and of the bootloader's, per chip (the
# chips' memory maps, esptool targets' MEMORY_MAP).
_RAM = {ESP32: (0x3FFB0000, 0x40080000), ESP32S3: (0x3FC88000, 0x40374000)}
_BOOT_RAM = {ESP32: (0x3FFF0030, 0x40078000), ESP32S3: (0x3FCE3810, 0x403C9700)}
DIO, FREQ_40M, FREQ_80M = 2, 0x0, 0xF
SIZE_NIBBLE = {4: 0x20, 8: 0x30, 16: 0x40}

DEFAULT_VERSIONS = {
    # module key: (project name, running app version, a newer app version)
    "rak11200": ("rak11200-sample", "1.0.0", "1.1.0"),
    "rak3112": ("rak3112-sample", "1.0.0", "1.1.0"),
    "rak3212": ("rak3112-sample", "1.0.0", "1.1.0"),
    "rak3312": ("rak3112-sample", "1.0.0", "1.1.0"),
}


def _filler(rng: random.Random, size: int) -> bytes:
    """Bytes that compress like firmware (zlib -9 leaves a bit over half): code-like random runs
    mixed with repeated literals and zeros."""
    out = bytearray()
    while len(out) < size:
        pick = rng.random()
        if pick < 0.55:
            out += rng.randbytes(rng.randrange(16, 96))
        elif pick < 0.8:
            out += bytes(rng.randrange(8, 64))
        else:
            out += (b"rak esp32 %d " % rng.randrange(1000)) * rng.randrange(1, 6)
    return bytes(out[:size])


def image(chip_id: int, segments: list[tuple[int, bytes]], entry: int, *, flash_mb: int = 4,
          freq: int = FREQ_40M, hash_appended: bool = True, min_rev_full: int = 0,
          max_rev_full: int = 0xFFFF) -> bytes:
    """An ESP image: header, extended header, segments, padding, checksum, SHA-256."""
    out = bytearray(struct.pack("<BBBBI", IMAGE_MAGIC, len(segments), DIO,
                                SIZE_NIBBLE.get(flash_mb, 0x20) | freq, entry))
    out += struct.pack("<BBBBHBHH4sB", 0xEE, 0, 0, 0, chip_id, min_rev_full // 100, min_rev_full,
                       max_rev_full, b"\0" * 4, 1 if hash_appended else 0)
    checksum = CHECKSUM_SEED
    for addr, data in segments:
        data = data + b"\0" * (-len(data) % 4)
        out += struct.pack("<II", addr, len(data)) + data
        for b in data:
            checksum ^= b
    out += b"\0" * (15 - len(out) % 16)
    out.append(checksum)
    if hash_appended:
        out += hashlib.sha256(out).digest()
    return bytes(out)


def app_desc(version: str, project: str, *, date: str = "Jan  1 2026", time: str = "12:00:00",
             idf: str = IDF_VERSION) -> bytes:
    """``esp_app_desc_t`` (256 bytes)."""
    body = struct.pack("<II8s32s32s16s16s32s32sHHB3s72s", APP_DESC_MAGIC, 0, b"",
                       version.encode()[:31], project.encode()[:31], time.encode(), date.encode(),
                       idf.encode(), hashlib.sha256(f"{project} {version}".encode()).digest(),
                       0, 0xFFFF, 16, b"", b"")
    assert len(body) == 256
    return body


def app_image(chip_id: int, version: str, size: int = 192 * 1024, *, project: str = "rak-esp32-sample",
              flash_mb: int = 4, seed: int = 0, min_rev_full: int = 0, max_rev_full: int = 0xFFFF) -> bytes:
    """An app ``.bin`` of about ``size`` bytes: DROM (app descriptor + rodata), DRAM, IRAM, IROM."""
    rng = random.Random(f"app:{chip_id}:{project}:{version}:{seed}")
    dram, iram = _RAM[chip_id]
    (drom, _, _), (irom, _, _) = FLASH_MAPPED[chip_id]
    body = max(size - 0x200, 0x1000)
    rodata = body // 4
    code = body - rodata - 0x1800
    segments = [(drom + 0x20, app_desc(version, project) + _filler(rng, rodata)),
                (dram, _filler(rng, 0x800)),
                (iram, _filler(rng, 0x1000)),
                (irom + 0x20, _filler(rng, code))]
    return image(chip_id, segments, iram + 0x400, flash_mb=flash_mb,
                 freq=FREQ_80M if chip_id == ESP32S3 else FREQ_40M,
                 min_rev_full=min_rev_full, max_rev_full=max_rev_full)


def bootloader_image(chip_id: int, *, idf: str = IDF_VERSION, flash_mb: int = 4) -> bytes:
    """A second-stage bootloader ``.bin`` (RAM segments only, bootloader descriptor first)."""
    rng = random.Random(f"bootloader:{chip_id}:{idf}")
    dram, iram = _BOOT_RAM[chip_id]
    desc = struct.pack("<B3sI32s24s16s", BOOTLOADER_DESC_MAGIC, b"", 1, idf.encode(),
                       b"Jan  1 2026 12:00:00", b"")
    segments = [(dram, desc + _filler(rng, 0x1200)), (iram, _filler(rng, 0x3000)),
                (iram + 0x3400, _filler(rng, 0x1800))]
    return image(chip_id, segments, iram + 0x60, flash_mb=flash_mb,
                 freq=FREQ_80M if chip_id == ESP32S3 else FREQ_40M)


def partition_table(entries: list[tuple[str, int, int, int, int]], *, md5: bool = True) -> bytes:
    """A partition table of ``(label, type, subtype, offset, size)`` entries, 0xC00 bytes."""
    out = bytearray()
    for label, ptype, subtype, offset, size in entries:
        out += PARTITION_MAGIC + struct.pack("<BBII16sI", ptype, subtype, offset, size,
                                             label.encode()[:15], 0)
    if md5:
        out += PARTITION_MD5_MAGIC + b"\xff" * 14 + hashlib.md5(bytes(out)).digest()
    return bytes(out).ljust(0xC00, b"\xff")


def default_table(app_size: int = 0x100000) -> bytes:
    """ESP-IDF's "single factory app, no OTA" table: nvs, phy_init, factory at 0x10000."""
    return partition_table([("nvs", 1, 0x02, 0x9000, 0x6000), ("phy_init", 1, 0x01, 0xF000, 0x1000),
                            ("factory", 0, 0x00, APP_OFFSET, app_size)])


def merged(chip_id: int, app: bytes, *, bootloader: bytes | None = None, table: bytes | None = None,
           start: int = 0) -> bytes:
    """A merged binary from flash ``start``: bootloader, partition table, app at 0x10000."""
    boot_at = BOOTLOADER_OFFSETS.get(chip_id, 0)
    parts = [(boot_at, bootloader or bootloader_image(chip_id)),
             (PARTITION_TABLE_OFFSET, table or default_table()), (APP_OFFSET, app)]
    end = max(o + len(d) for o, d in parts)
    out = bytearray(b"\xff" * (end - start))
    for offset, data in parts:
        out[offset - start:offset - start + len(data)] = data
    return bytes(out)


def factory_flash(chip_id: int, version: str, project: str, *, app_size: int = 192 * 1024,
                  flash_mb: int = 4) -> list[tuple[int, bytes]]:
    """What a module leaves the factory with (or after its first upload): bootloader, table, app."""
    return [(BOOTLOADER_OFFSETS.get(chip_id, 0), bootloader_image(chip_id, flash_mb=flash_mb)),
            (PARTITION_TABLE_OFFSET, default_table()),
            (APP_OFFSET, app_image(chip_id, version, app_size, project=project, flash_mb=flash_mb))]
