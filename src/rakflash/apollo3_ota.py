"""The Apollo3 OTA blob the RAK11720's bootloader takes: a 48-byte header, then the application.

Facts (RAKWireless/RAK-APOLLO3-RUI ``security/apollo3_scripts/ota_binary_converter.py``
and Ambiq's ``amotas`` in the bundled SDK, summarised in DESIGN.md §2):

* header: twelve little-endian 32-bit words — encrypted (0), load address
  (0x14000 for the RUI application), application length, image CRC,
  security-info length (0), three reserved words 0xFFFFFFFF, version, binary
  type, storage type, one reserved 0xFFFFFFFF;
* image CRC: CRC-32 with polynomial 0x1EDC6F41, MSB first, init 0, no
  reflection, no final XOR (check value 0xC052A8C8 over ``123456789``).

The CRC is not one of the standard reflected CRC-32 variants zlib or
binascii provide, so it is computed here with a 256-entry table.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ImageFormatError

HEADER_SIZE = 48
DEFAULT_LOAD_ADDRESS = 0x14000
RFU = 0xFFFFFFFF
# Binary and storage types as the vendor converter writes them for an
# application image kept in internal flash (inferred; see docs/protocols.md).
BINARY_TYPE_APP = 0
STORAGE_INTERNAL = 0


def _table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x1EDC6F41) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_TABLE = _table()


def crc32_apollo3(data: bytes, crc: int = 0) -> int:
    """CRC-32/0x1EDC6F41, MSB first, init 0, no reflection, no final XOR."""
    table = _TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ b]
    return crc


@dataclass
class OtaHeader:
    load_address: int
    length: int
    crc: int
    version: int = 0
    binary_type: int = BINARY_TYPE_APP
    storage_type: int = STORAGE_INTERNAL
    encrypted: int = 0
    security_length: int = 0

    def pack(self) -> bytes:
        return struct.pack("<12I", self.encrypted, self.load_address, self.length, self.crc,
                           self.security_length, RFU, RFU, RFU, self.version, self.binary_type,
                           self.storage_type, RFU)

    @classmethod
    def unpack(cls, data: bytes) -> OtaHeader:
        if len(data) < HEADER_SIZE:
            raise ImageFormatError(f"an OTA header is {HEADER_SIZE} bytes; got {len(data)}")
        w = struct.unpack_from("<12I", data)
        return cls(load_address=w[1], length=w[2], crc=w[3], version=w[8], binary_type=w[9],
                   storage_type=w[10], encrypted=w[0], security_length=w[4])


def build_blob(app: bytes, *, load_address: int = DEFAULT_LOAD_ADDRESS, version: int = 0) -> bytes:
    """Header + application, as the vendor converter builds it."""
    header = OtaHeader(load_address, len(app), crc32_apollo3(app), version)
    return header.pack() + app


def looks_like_blob(data: bytes) -> bool:
    """A cheap test on the header alone: reserved words set, not encrypted, plausible
    address and length. The length is not compared with the file here, so that
    :func:`parse_blob` can name a truncated blob as such."""
    if len(data) < HEADER_SIZE:
        return False
    w = struct.unpack_from("<12I", data)
    return (w[0] == 0 and w[5] == w[6] == w[7] == w[11] == RFU and w[1] < 0x100000
            and 0 < w[2] <= 0x100000)


def parse_blob(blob: bytes) -> tuple[OtaHeader, bytes]:
    """Split a blob and check its length and CRC."""
    header = OtaHeader.unpack(blob)
    app = blob[HEADER_SIZE:]
    if header.length != len(app):
        raise ImageFormatError(f"the OTA header says {header.length:,} bytes of application, "
                               f"the file has {len(app):,}: it is truncated or damaged")
    crc = crc32_apollo3(app)
    if crc != header.crc:
        raise ImageFormatError(f"the OTA blob's CRC is {crc:#010x}, its header says "
                               f"{header.crc:#010x}: the file is damaged")
    return header, app
