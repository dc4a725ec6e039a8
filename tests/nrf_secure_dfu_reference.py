"""An independent Nordic Secure DFU serial client, for interoperability tests only.

Why it exists: ``nrfutil`` 6.x (Nordic's own client) requires Python < 3.11 and
does not install on CI's Python; 5.2.0 installs but its serial transport is
Python 2 code and fails on its first request. So the simulator's Secure DFU
bootloader is checked against this client instead, written separately from
rakflash's (it imports nothing from rakflash) from Nordic's documented serial
transport — the nRF5 SDK "DFU protocol" pages and pc-nrfutil's
``dfu_transport_serial.py`` behaviour: Ping, Set PRN, Get MTU, then for the
init packet and each 4 KiB firmware object Select / Create / Write… / CRC /
Execute, and the same "recover from the device's offset and CRC" steps nrfutil
runs when a transfer was interrupted. It is deliberately plain: blocking
pyserial reads with one fixed timeout, as nrfutil does.

Usage: ``python tests/nrf_secure_dfu_reference.py PORT PACKAGE.zip [--prn N]``;
exit status 0 on success, 1 with the reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import zipfile
import zlib

import serial


class DfuFailed(Exception):
    pass


def slip_frame(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b == 0xC0:
            out += b"\xdb\xdc"
        elif b == 0xDB:
            out += b"\xdb\xdd"
        else:
            out.append(b)
    out.append(0xC0)
    return bytes(out)


class Client:
    def __init__(self, port: str, prn: int = 0, timeout: float = 3.0) -> None:
        self.ser = serial.Serial(port, 115200, timeout=timeout)
        self.prn = prn
        self.mtu = 0

    def close(self) -> None:
        self.ser.close()

    def read_frame(self) -> bytes:
        buf = bytearray()
        escape = False
        while True:
            c = self.ser.read(1)
            if not c:
                raise DfuFailed("no response (timeout)")
            b = c[0]
            if b == 0xC0:
                if buf:
                    return bytes(buf)
                continue
            if escape:
                buf.append({0xDC: 0xC0, 0xDD: 0xDB}.get(b, b))
                escape = False
            elif b == 0xDB:
                escape = True
            else:
                buf.append(b)

    def command(self, op: int, payload: bytes = b"") -> bytes:
        self.ser.write(slip_frame(bytes([op]) + payload))
        return self.response(op)

    def response(self, op: int) -> bytes:
        frame = self.read_frame()
        if frame[0] != 0x60 or frame[1] != op:
            raise DfuFailed(f"unexpected response {frame.hex()} to opcode {op:#x}")
        if frame[2] != 0x01:
            extra = f", extended error {frame[3]:#04x}" if frame[2] == 0x0B and len(frame) > 3 else ""
            raise DfuFailed(f"opcode {op:#x} failed with result {frame[2]:#04x}{extra}")
        return frame[3:]

    def open(self) -> None:
        for ping_id in range(1, 20):
            self.ser.write(slip_frame(bytes([0x09, ping_id])))
            try:
                frame = self.read_frame()
            except DfuFailed:
                continue
            if frame[:2] == b"\x60\x09":
                break
        else:
            raise DfuFailed("no ping response")
        self.command(0x02, struct.pack("<H", self.prn))
        self.mtu = struct.unpack("<H", self.command(0x07))[0]

    def select(self, obj: int) -> tuple[int, int, int]:
        return struct.unpack("<III", self.command(0x06, bytes([obj])))

    def crc(self) -> tuple[int, int]:
        return struct.unpack("<II", self.command(0x03))

    def stream(self, data: bytes, offset: int, crc: int) -> int:
        step = (self.mtu - 1) // 2 - 1
        count = 0
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            self.ser.write(slip_frame(b"\x08" + piece))
            crc = zlib.crc32(piece, crc) & 0xFFFFFFFF
            offset += len(piece)
            count += 1
            if self.prn and count == self.prn:
                count = 0
                got = struct.unpack("<II", self.response(0x03))
                if got != (offset, crc):
                    raise DfuFailed(f"PRN check failed: {got} != {(offset, crc)}")
        if self.crc() != (offset, crc):
            raise DfuFailed("CRC check after the object failed")
        return crc

    def send_init(self, init: bytes) -> None:
        max_size, offset, crc = self.select(0x01)
        if len(init) > max_size:
            raise DfuFailed("init packet too long")
        if 0 < offset <= len(init) and crc == zlib.crc32(init[:offset]) & 0xFFFFFFFF:
            if offset < len(init):
                self.stream(init[offset:], offset, crc)
            self.command(0x04)
            return
        self.command(0x01, struct.pack("<BI", 0x01, len(init)))
        self.stream(init, 0, 0)
        self.command(0x04)

    def send_firmware(self, fw: bytes) -> int:
        max_size, offset, crc = self.select(0x02)
        resumed = offset
        if offset:
            if crc != zlib.crc32(fw[:offset]) & 0xFFFFFFFF:
                offset -= offset % max_size or max_size
            elif offset % max_size and offset != len(fw):
                end = offset - offset % max_size + max_size
                self.stream(fw[offset:end], offset, crc)
                self.command(0x04)
                offset = end
            elif offset % max_size == 0 and offset:
                pass
        for start in range(offset, len(fw), max_size):
            piece = fw[start:start + max_size]
            self.command(0x01, struct.pack("<BI", 0x02, len(piece)))
            self.stream(piece, start, zlib.crc32(fw[:start]) & 0xFFFFFFFF)
            self.command(0x04)
        return resumed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("port")
    ap.add_argument("package")
    ap.add_argument("--prn", type=int, default=0)
    args = ap.parse_args(argv)
    with zipfile.ZipFile(args.package) as z:
        manifest = json.loads(z.read("manifest.json"))["manifest"]
        app = manifest["application"]
        init, fw = z.read(app["dat_file"]), z.read(app["bin_file"])
    client = Client(args.port, prn=args.prn)
    try:
        client.open()
        client.send_init(init)
        resumed = client.send_firmware(fw)
    except DfuFailed as exc:
        print(f"DFU failed: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"done: mtu {client.mtu}, resumed from {resumed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
