"""Apollo3 wired-update blobs: what the secure bootloader (SBL) takes over UART, as a file.

RAK's "Burn Bootloader" and Ambiq's tools prepare a firmware for the SBL's wired
update as a *blob* (``create_cust_wireupdate_blob.py``); rakflash loads one as an
image (:mod:`rakflash.images`), builds one from an image to recover a RAK11720
(:mod:`rakflash.flows.recover.apollo3_sbl`), sends its blocks
(:mod:`rakflash.protocols.apollo3_sbl`), and the virtual RAK11720 installs them
(:mod:`rakflash.sim.apollo3_sbl`).

Facts (RAKWireless/RAK-APOLLO3-RUI ``security/apollo3_scripts/create_cust_wireupdate_blob.py``,
``create_cust_image_blob.py``, ``am_defines.py``; summarised in docs/protocols.md):

* a blob block is a 96-byte header — word 0 the auth/encryption algorithms and
  key indexes, HMAC at 16, IV at 48, KEK at 64, image type at 80, options at 81
  (bit 0: install the image by OTA after the download), key at 84 (0x12344321
  for flash, the INFO0 key for INFO0), load address at 88, size at 92 — then the
  data, padded to a multiple of 4. A file may hold several blocks (the vendor
  tools split images at 0x70000 bytes).
* an OTA-installed image is an Ambiq image: a 128-byte header (word 0 magic in
  the top byte and the image length, word 1 the zlib CRC-32 of everything after
  it, word 28 the install address), then the code; 0xCB marks a non-secure image.

CRC-32 here is zlib's: ``binascii.crc32`` in the vendor's ``am_defines.py``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import ImageFormatError

FLASH_PAGE = 0x2000
MAX_SPLIT = 0x70000                    # the vendor tools' default block size (MAX_DOWNLOAD_SIZE)
WU_HEADER_SIZE = 96
FLASH_KEY = 0x12344321
INFO0_KEY = 0xD894E09E
OPTION_OTA = 0x1

IMAGE_TYPES = {0: "SBL", 1: "AM3P", 2: "patch", 3: "main", 4: "child", 5: "customer OTA",
               6: "non-secure", 7: "INFO0", 32: "INFO0 (no OTA)"}
IMAGETYPE_NONSECURE, IMAGETYPE_INFO0_NOOTA = 6, 32

AMBIQ_HEADER_SIZE = 128
MAGIC_NONSECURE = 0xCB
MAGICS = {0xA3: "SBL", 0x3A: "AM3P", 0xAF: "patch", 0xC0: "main", 0xCC: "child",
          0xCB: "non-secure", 0xCF: "INFO0"}


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass
class WiredHeader:
    """The 96-byte header of one wired-update block (``create_cust_wireupdate_blob.py``)."""

    image_type: int
    load_address: int
    size: int
    options: int = 0
    key: int = FLASH_KEY
    auth_algo: int = 0
    auth_key: int = 8
    enc_algo: int = 0
    enc_key: int = 8

    def pack(self) -> bytes:
        raw = bytearray(WU_HEADER_SIZE)
        struct.pack_into("<I", raw, 0, (self.auth_algo & 0xF) | ((self.auth_key & 0xF) << 8)
                         | ((self.enc_algo & 0xF) << 16) | ((self.enc_key & 0xF) << 24))
        raw[80], raw[81] = self.image_type, self.options
        struct.pack_into("<III", raw, 84, self.key, self.load_address, self.size)
        return bytes(raw)

    @classmethod
    def unpack(cls, raw: bytes) -> WiredHeader:
        w0 = struct.unpack_from("<I", raw, 0)[0]
        key, load, size = struct.unpack_from("<III", raw, 84)
        return cls(image_type=raw[80], options=raw[81], key=key, load_address=load, size=size,
                   auth_algo=w0 & 0xF, auth_key=(w0 >> 8) & 0xF, enc_algo=(w0 >> 16) & 0xF,
                   enc_key=(w0 >> 24) & 0xF)

    @property
    def ota(self) -> bool:
        return bool(self.options & OPTION_OTA)

    @property
    def type_name(self) -> str:
        return IMAGE_TYPES.get(self.image_type, f"type {self.image_type}")


@dataclass
class Block:
    """One UPDATE's worth: a wired header and its data (padded to 4 bytes)."""

    header: WiredHeader
    data: bytes

    @property
    def raw(self) -> bytes:
        return self.header.pack() + self.data

    @property
    def end(self) -> int:
        return self.header.load_address + self.header.size

    def describe(self) -> str:
        h = self.header
        how = "installed by OTA at reset" if h.ota else "written in place"
        return (f"{h.size:,} bytes at {h.load_address:#07x} ({h.type_name}, {how})")


def _pad4(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def build_blocks(data: bytes, load_address: int, *, image_type: int = IMAGETYPE_NONSECURE,
                 ota: bool = False, split: int = MAX_SPLIT) -> list[Block]:
    """The wired-update blocks that put ``data`` at ``load_address``: one per
    ``split`` bytes, each its own load address, as the vendor's blob tool cuts them
    (only the first carries the OTA option)."""
    if split % FLASH_PAGE:
        raise ValueError("the block size must be a multiple of the 8 KiB flash page")
    blocks = []
    for start in range(0, len(data), split):
        chunk = data[start:start + split]
        header = WiredHeader(image_type, load_address + start, len(chunk),
                             options=OPTION_OTA if ota and start == 0 else 0)
        blocks.append(Block(header, _pad4(chunk)))
    return blocks


def parse_blocks(raw: bytes, *, source: str = "the blob") -> list[Block]:
    """The blocks of a prepared wired-update file, each checked for a sane header and
    its full length; a truncated or foreign file is an :class:`ImageFormatError`."""
    blocks: list[Block] = []
    at = 0
    while at < len(raw):
        if len(raw) - at < WU_HEADER_SIZE:
            raise ImageFormatError(f"{source} is truncated: {len(raw) - at} bytes after block "
                                   f"{len(blocks)} are too few for a wired-update header")
        header = WiredHeader.unpack(raw[at:at + WU_HEADER_SIZE])
        if header.image_type not in IMAGE_TYPES or header.size == 0 \
                or header.key not in (FLASH_KEY, INFO0_KEY) or any(raw[at + 4:at + 16]):
            raise ImageFormatError(f"{source} is not an Apollo3 wired-update blob (block "
                                   f"{len(blocks) + 1} has no valid header)",
                                   hint="Give the firmware .hex/.bin itself, or a blob made by "
                                        "RAK's/Ambiq's create_cust_wireupdate_blob.py.")
        padded = header.size + (-header.size % 4)
        data = raw[at + WU_HEADER_SIZE:at + WU_HEADER_SIZE + padded]
        if len(data) < padded:
            raise ImageFormatError(f"{source} is truncated: block {len(blocks) + 1} announces "
                                   f"{header.size:,} bytes, the file holds {len(data):,}",
                                   hint="The download was cut short: get the file again.")
        blocks.append(Block(header, data))
        at += WU_HEADER_SIZE + padded
    if not blocks:
        raise ImageFormatError(f"{source} is empty")
    return blocks


def looks_like_blob(raw: bytes) -> bool:
    """A cheap test: the first 96 bytes are a plausible wired-update header."""
    if len(raw) < WU_HEADER_SIZE + 4:
        return False
    h = WiredHeader.unpack(raw[:WU_HEADER_SIZE])
    return (h.image_type in IMAGE_TYPES and h.key in (FLASH_KEY, INFO0_KEY) and 0 < h.size
            and not any(raw[4:16]))


@dataclass
class AmbiqImage:
    """An image in Ambiq's format, as the SBL's OTA installs it."""

    magic: int
    length: int          # header + code
    crc: int
    install_address: int
    code: bytes
    crc_ok: bool

    @property
    def kind(self) -> str:
        return MAGICS.get(self.magic, f"magic {self.magic:#04x}")


def build_image(code: bytes, install_address: int, *, magic: int = MAGIC_NONSECURE) -> bytes:
    """A non-secure Ambiq image (``create_cust_image_blob.py`` with the CRC check on install)."""
    code = _pad4(code)
    header = bytearray(AMBIQ_HEADER_SIZE)
    struct.pack_into("<I", header, 0, (magic << 24) | (AMBIQ_HEADER_SIZE + len(code)))
    struct.pack_into("<I", header, 8, 0x10 << 24)       # CRC check at install
    struct.pack_into("<III", header, 0x70, install_address, 0, 0xFFFFFFFF)
    struct.pack_into("<I", header, 0x7C, 0xFFFFFFFF)
    struct.pack_into("<I", header, 4, crc32(bytes(header[8:]) + code))
    return bytes(header) + code


def parse_image(raw: bytes) -> AmbiqImage | None:
    """The Ambiq image at the start of ``raw``, or None if there is none (no known magic,
    or a length that does not fit)."""
    if len(raw) < AMBIQ_HEADER_SIZE:
        return None
    w0, crc = struct.unpack_from("<II", raw, 0)
    magic, length = w0 >> 24, w0 & 0xFFFFF
    if magic not in MAGICS or not AMBIQ_HEADER_SIZE <= length <= len(raw):
        return None
    install = struct.unpack_from("<I", raw, 0x70)[0] & ~0x3
    return AmbiqImage(magic, length, crc, install, raw[AMBIQ_HEADER_SIZE:length],
                      crc32(raw[8:length]) == crc)
