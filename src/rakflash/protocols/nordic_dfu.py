"""Nordic Secure DFU over a serial port (SLIP): rakflash's client, and the protocol's codes.

What the RAK4631-R's RUI3 bootloader (nRF5 SDK 17.0.2 secure DFU, serial over USB
CDC) speaks after ``AT+BOOT``. Facts (docs/protocols.md, "Nordic Secure DFU"):
NordicSemiconductor/pc-nrfutil ``nordicsemi/dfu/dfu_transport_serial.py`` and
``dfu_transport.py``; the nRF5 SDK's ``nrf_dfu_req_handler`` / ``nrf_dfu_serial``
as bundled in RAKWireless/RAK-nRF52-RUI.

* Every request is one SLIP frame: an opcode and its parameters (little-endian).
  Every answer is ``0x60 opcode result [data]``; result 0x01 is success, 0x0B
  an extended error whose code follows.
* 0x09 Ping(id) → id; 0x02 Set PRN(u16); 0x07 Get MTU → u16; 0x06 Select(type)
  → max size, offset, CRC (u32 each); 0x01 Create(type, u32 size); 0x08 Write
  (data, no answer unless the PRN count is reached — then a CRC answer);
  0x03 Calc checksum → offset, CRC-32 (zlib); 0x04 Execute.
* Objects: type 1 the command (the init packet), type 2 data (the firmware, in
  objects of at most the Select's max size, 4 KiB). The CRC covers everything
  of that type sent so far, so the client checks it after every object and,
  after an interruption, resumes from the offset and CRC the device reports.
* A Write carries at most (MTU − 1) // 2 − 1 bytes: SLIP may double each byte.

Pure protocol logic over a :class:`~rakflash.link.ByteChannel`: no printing, a
deadline on every read. Hand-written: pc-nrfutil's client is not a library
(it opens its own port, sleeps, and raises one exception type for everything).
The bootloader's side, which the virtual RAK4631-R serves, is
:mod:`rakflash.sim.nordic_dfu`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Callable

from ..errors import DfuRejected, TooManyRetries, TransferError, TransferTimeout
from ..link import ByteChannel, Deadline
from . import slip
from .slip import read_some

# Opcodes (pc-nrfutil dfu_transport_serial.py OP_CODE; SDK nrf_dfu_req_handler.h)
OP_PROTOCOL_VERSION = 0x00
OP_CREATE = 0x01
OP_SET_PRN = 0x02
OP_CRC = 0x03
OP_EXECUTE = 0x04
OP_SELECT = 0x06
OP_MTU = 0x07
OP_WRITE = 0x08
OP_PING = 0x09
OP_ABORT = 0x0C
OP_RESPONSE = 0x60
OP_NAMES = {OP_CREATE: "Create", OP_SET_PRN: "Set PRN", OP_CRC: "Calc checksum",
            OP_EXECUTE: "Execute", OP_SELECT: "Select", OP_MTU: "Get MTU", OP_WRITE: "Write",
            OP_PING: "Ping", OP_ABORT: "Abort", OP_PROTOCOL_VERSION: "Protocol version"}

OBJ_COMMAND, OBJ_DATA = 1, 2
OBJECT_NAMES = {OBJ_COMMAND: "init packet", OBJ_DATA: "firmware"}

# Result codes (pc-nrfutil dfu_transport.py RES_CODE)
RES_INVALID, RES_SUCCESS, RES_NOT_SUPPORTED, RES_INVALID_PARAMETER = 0x00, 0x01, 0x02, 0x03
RES_INSUFFICIENT_RESOURCES, RES_INVALID_OBJECT, RES_UNSUPPORTED_TYPE = 0x04, 0x05, 0x07
RES_NOT_PERMITTED, RES_OPERATION_FAILED, RES_EXT_ERROR = 0x08, 0x0A, 0x0B

_RERUN = "Run the same command again: it resumes where the bootloader stopped."
RESULTS: dict[int, tuple[str, str, str]] = {
    # code: (slug, what it means, what to do)
    RES_INVALID: ("invalid-code", "the request was not understood",
                  "Report it with a --trace file; then " + _RERUN[0].lower() + _RERUN[1:]),
    RES_NOT_SUPPORTED: ("not-supported", "this bootloader does not support the request",
                        "The bootloader is not a Nordic Secure DFU one: check the module with "
                        "'rakflash info --port PORT'."),
    RES_INVALID_PARAMETER: ("invalid-parameter", "a request had a parameter the bootloader refused",
                            _RERUN),
    RES_INSUFFICIENT_RESOURCES: ("insufficient-resources",
                                 "the object is larger than the bootloader can take",
                                 "The package is too large for this module: use the firmware "
                                 "built for RAK4631-R."),
    RES_INVALID_OBJECT: ("invalid-object", "the bootloader found the object invalid (wrong size, "
                         "or an init packet that does not parse)",
                         "Make the package again with 'nrfutil pkg generate', or download it again."),
    RES_UNSUPPORTED_TYPE: ("unsupported-type", "the bootloader does not know that object type",
                           "Report it with a --trace file."),
    RES_NOT_PERMITTED: ("not-permitted", "the request came out of order for the bootloader",
                        _RERUN),
    RES_OPERATION_FAILED: ("operation-failed", "the bootloader could not carry out the request",
                           _RERUN + " If it fails again, power-cycle the module first."),
}

# Extended error codes (pc-nrfutil dfu_transport.py EXT_ERROR_CODE; SDK nrf_dfu_types.h)
EXT_ERRORS: dict[int, tuple[str, str, str]] = {
    0x00: ("no-error", "an error without an extended code (a bootloader bug)", "Report it with a --trace file."),
    0x01: ("invalid-error-code", "an invalid extended error code (a bootloader bug)", "Report it with a --trace file."),
    0x02: ("wrong-command-format", "the command was malformed", _RERUN),
    0x03: ("unknown-command", "the command is unknown to this bootloader", "Report it with a --trace file."),
    0x04: ("init-command-invalid", "the init packet is invalid or lacks fields its update type needs",
           "Make the package again with 'nrfutil pkg generate' (it must be a Secure DFU package, "
           "not an Arduino/Adafruit one)."),
    0x05: ("fw-version", "the firmware version in the package is lower than the one installed "
           "(the bootloader refuses downgrades)",
           "Use a newer firmware, or make the package with a higher --application-version."),
    0x06: ("hw-version", "the package is for other hardware (its hw_version does not match)",
           "Use the package made for RAK4631-R (hw_version 52)."),
    0x07: ("sd-version", "the package does not list the SoftDevice this module has (sd_req): it was "
           "made for another bootloader or SoftDevice",
           "Use the RUI3 package for RAK4631-R (sd_req 0x0100, S140 7.x); an Arduino build needs the "
           "Arduino (Adafruit) bootloader instead."),
    0x08: ("signature-missing", "the package is not signed, and this bootloader takes only signed ones",
           "Use RAK's signed RUI3 package, or sign yours with 'nrfutil pkg generate --key-file'."),
    0x09: ("wrong-hash-type", "the init packet names a hash type this bootloader does not support",
           "Make the package again with nrfutil's defaults (SHA-256)."),
    0x0A: ("hash-failed", "the bootloader could not compute the firmware's hash", _RERUN),
    0x0B: ("wrong-signature-type", "the signature type is not one this bootloader supports",
           "Sign with ECDSA P-256 (nrfutil's only choice)."),
    0x0C: ("verification-failed", "the received firmware does not match the package's hash or signature "
           "(signed with another key, or damaged)",
           "RAK4631-R bootloaders accept only packages signed with RAK's key: use RAK's RUI3 package "
           "for this module (or the one signed with the key your bootloader was built with)."),
    0x0D: ("insufficient-space", "the firmware does not fit in the module's free flash",
           "Use the firmware built for RAK4631-R."),
    0x0E: ("fw-already-present", "the bootloader already has this firmware", "Nothing to do."),
}

SERIAL_HEADROOM = 1     # the opcode byte in every Write


def write_size(mtu: int) -> int:
    """Bytes of firmware per Write for ``mtu``: SLIP may double every byte, and the opcode takes one."""
    return max(1, (mtu - SERIAL_HEADROOM) // 2 - 1)


def choose_prn(mtu: int) -> int:
    """Packet receipt notifications for ``mtu``.

    A large MTU means USB CDC (the RAK4631-R's port): the link is flow-controlled
    and lossless, so the CRC check after every object is enough and a PRN would
    only add a turnaround per few writes (0 = none). A small MTU means a UART
    transport with small receive buffers: ask for a CRC about every 1 KiB so an
    overrun is caught early.
    """
    size = write_size(mtu)
    if size >= 512:
        return 0
    return max(1, 1024 // size)


def crc32(data: bytes, crc: int = 0) -> int:
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def rejection(op: int, result: int, ext: int | None = None, *, offset: int | None = None) -> DfuRejected:
    """The named error for an error answer to ``op``."""
    what = OP_NAMES.get(op, f"opcode {op:#04x}")
    if result == RES_EXT_ERROR:
        slug, text, hint = EXT_ERRORS.get(ext if ext is not None else -1,
                                          (f"extended-{ext}", f"extended error {ext}", "Report it with a --trace file."))
        return DfuRejected(f"the bootloader refused {what}: {text} (extended error {ext:#04x})",
                           hint=hint, dfu_result="extended-error", reason=slug, code=ext, offset=offset)
    slug, text, hint = RESULTS.get(result, (f"result-{result}", f"result code {result}",
                                            "Report it with a --trace file."))
    return DfuRejected(f"the bootloader refused {what}: {text} (result {result:#04x})",
                       hint=hint, dfu_result=slug, reason=slug, code=result, offset=offset)


# ------------------------------------------------------------------ frames


class FrameReader:
    """SLIP frames from a channel, each read with a deadline."""

    def __init__(self, channel: ByteChannel) -> None:
        self.ch = channel
        self.decoder = slip.Decoder()
        self._frames: list[bytes] = []

    def read(self, timeout: float) -> bytes | None:
        """The next frame, or None at the deadline."""
        deadline = Deadline(timeout)
        while not self._frames:
            got = read_some(self.ch, deadline.remaining())
            if got:
                self._frames += self.decoder.feed(got)
            elif deadline.expired:
                return None
        return self._frames.pop(0)

    def drop_pending(self) -> None:
        self._frames.clear()
        self.decoder.reset()
        for _ in range(16):          # bounded: a flooding line can't keep us here
            if not self.ch.read(4096, 0):
                break


# ------------------------------------------------------------------ host side

class _Damaged(Exception):
    """An answer damaged on the line (SLIP carries no checksum): too short for the values it
    must carry, or with a result code no Nordic bootloader sends (a flipped bit)."""


# Requests that may be sent again when their answer arrived damaged: the queries, and the ones
# that only set something up (a Create sent again starts the same object over). Not Execute:
# a second one, after the first took effect, is out of order for the bootloader.
_ASK_AGAIN = frozenset({OP_MTU, OP_SELECT, OP_CRC, OP_SET_PRN, OP_PING, OP_CREATE})

@dataclass
class Timeouts:
    """How long each answer may take (seconds)."""

    reply: float = 1.0           # Ping, Select, Set PRN, MTU, Calc checksum
    create: float = 2.0          # Create (the bootloader may erase a page first)
    execute: float = 5.0         # Execute of one object (flash write completes)
    last_execute: float = 15.0   # Execute of the last object: hash and signature checks, activation
    ping: float = 5.0            # the whole ping phase after the port opened


@dataclass
class DfuReport:
    """What a transfer did."""

    mtu: int = 0
    prn: int = 0
    write_size: int = 0
    init_resumed: bool = False
    resumed_from: int = 0        # firmware bytes the device already had
    objects: int = 0             # data objects sent (Created) in this run
    retries: int = 0             # objects sent again after a CRC mismatch


class SecureDfuClient:
    """rakflash's Secure DFU client: :meth:`connect`, then :meth:`send`.

    ``progress(done, total)`` follows the firmware bytes the device confirmed
    (by CRC) — it starts at the resumed offset. ``retries``: times one object is
    sent again after its CRC came back wrong, then :class:`TooManyRetries`.
    """

    def __init__(self, channel: ByteChannel, *, timeouts: Timeouts | None = None,
                 prn: int | None = None, retries: int = 3,
                 progress: Callable[[int, int], None] | None = None,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.ch = channel
        self.frames = FrameReader(channel)
        self.t = timeouts or Timeouts()
        self.prn_wanted = prn
        self.retries = retries
        self.progress = progress
        self.on_retry = on_retry
        self.report = DfuReport()
        self._ping_id = 0

    # -- requests -----------------------------------------------------------
    def _send(self, op: int, payload: bytes = b"") -> None:
        self.ch.write(slip.encode(bytes([op]) + payload))

    def _answer(self, op: int, timeout: float, *, offset: int | None = None, size: int = 0) -> bytes:
        """The data of the answer to ``op``; other frames (late answers to earlier requests) are skipped.

        A success answer with fewer than ``size`` bytes of data lost bytes on the way (SLIP
        carries no checksum): :class:`_Damaged`, for the caller to ask again.
        """
        deadline = Deadline(timeout)
        while True:
            frame = self.frames.read(deadline.remaining())
            if frame is None:
                raise TransferTimeout(
                    f"the bootloader did not answer {OP_NAMES.get(op, hex(op))} within {timeout:.1f} s"
                    + (f" (firmware byte {offset:,})" if offset else ""),
                    hint="The module stays in its bootloader: run the same command again (it resumes); "
                         "if nothing answers, unplug and re-plug the module first.", offset=offset)
            if len(frame) < 3 or frame[0] != OP_RESPONSE or frame[1] != op:
                continue
            if frame[2] == RES_SUCCESS:
                if len(frame) - 3 < size:
                    raise _Damaged(op)
                return frame[3:]
            ext = frame[3] if len(frame) > 3 else None
            if frame[2] not in RESULTS and not (frame[2] == RES_EXT_ERROR and ext in EXT_ERRORS):
                raise _Damaged(op)
            raise rejection(op, frame[2], ext, offset=offset)

    def request(self, op: int, payload: bytes = b"", *, timeout: float | None = None,
                offset: int | None = None, size: int = 0) -> bytes:
        """Send ``op`` and return its answer's data. ``size``: the bytes of data the answer
        must carry (MTU, Select, Calc checksum). An answer damaged on the line is asked for
        again where that is safe (:data:`_ASK_AGAIN`); otherwise it is a named error."""
        what = OP_NAMES.get(op, hex(op))
        for _attempt in range(self.retries + 1):
            self._send(op, payload)
            try:
                return self._answer(op, self.t.reply if timeout is None else timeout, offset=offset,
                                    size=size)
            except _Damaged:
                if op not in _ASK_AGAIN:
                    raise TransferError(f"the bootloader's answer to {what} arrived damaged (a byte "
                                        f"lost or changed on the line)",
                                        hint="Run the same command again: it asks the bootloader where "
                                             "it stands and resumes.", offset=offset) from None
                self._retried(f"the answer to {what} arrived damaged")
        raise TooManyRetries(f"the bootloader's answer to {what} arrived damaged {self.retries + 1} times",
                             hint="Use a shorter cable or another USB port, then run the same command "
                                  "again (it resumes).", offset=offset)

    # -- session --------------------------------------------------------------
    def connect(self) -> None:
        """Ping until the bootloader answers, then agree on MTU, write size and PRN."""
        deadline = Deadline(self.t.ping)
        while True:
            self._ping_id = (self._ping_id + 1) & 0xFF
            self._send(OP_PING, bytes([self._ping_id]))
            frame = self.frames.read(min(0.5, max(0.05, deadline.remaining())))
            while frame is not None and not (len(frame) >= 3 and frame[:2] == bytes([OP_RESPONSE, OP_PING])):
                frame = self.frames.read(0.05)
            if frame is not None:
                if frame[2] != RES_SUCCESS or frame[3:4] == bytes([self._ping_id]):
                    break        # an error answer still proves a DFU bootloader listens
            if deadline.expired:
                raise TransferTimeout(
                    f"no DFU bootloader answers Ping on this port (waited {self.t.ping:.0f} s)",
                    hint="Check that the module is in its bootloader ('rakflash info --port PORT'); "
                         "unplug and re-plug it, then run the same command again.")
        self.frames.drop_pending()
        mtu = struct.unpack("<H", self.request(OP_MTU, size=2)[:2])[0]
        prn = choose_prn(mtu) if self.prn_wanted is None else self.prn_wanted
        self.request(OP_SET_PRN, struct.pack("<H", prn))
        self.report.mtu, self.report.prn, self.report.write_size = mtu, prn, write_size(mtu)

    def select(self, obj: int) -> tuple[int, int, int]:
        """(max size, offset, CRC) of the device's current object of type ``obj``."""
        data = self.request(OP_SELECT, bytes([obj]), size=12)
        return struct.unpack("<III", data[:12])

    def checksum(self, offset: int | None = None) -> tuple[int, int]:
        data = self.request(OP_CRC, offset=offset, size=8)
        return struct.unpack("<II", data[:8])

    def send(self, init_packet: bytes, firmware: bytes) -> DfuReport:
        """The init packet, then the firmware; resumes what an earlier, interrupted run left."""
        if not self.report.mtu:
            self.connect()
        if self.resume_init(init_packet):
            _, offset, crc = self.select(OBJ_DATA)
            if offset <= len(firmware) and crc == crc32(firmware[:offset]):
                self.report.init_resumed = True
                self.send_firmware(firmware, offset)
                return self.report
            # What the device holds is not the start of this firmware: start over.
        self.send_init(init_packet)
        self.send_firmware(firmware, 0)
        return self.report

    def resume_init(self, init: bytes) -> bool:
        """True when the device already has this init packet (or its start), now finished and executed."""
        max_size, offset, crc = self.select(OBJ_COMMAND)
        if len(init) > max_size:
            raise TransferError(f"the init packet has {len(init)} bytes; this bootloader takes at most {max_size}",
                                hint="This package is not for this bootloader: use the RUI3 package for RAK4631-R.")
        if not (0 < offset <= len(init) and crc == crc32(init[:offset])):
            return False
        # Executing the same init packet again keeps the firmware the device already has.
        if offset < len(init) and not self._stream(init[offset:], offset, crc, OBJ_COMMAND):
            return False
        self.request(OP_EXECUTE, timeout=self.t.execute)
        return True

    def send_init(self, init: bytes) -> None:
        """A new init packet: Create, Write, check the CRC, Execute (the device drops older progress)."""
        for _attempt in range(self.retries + 1):
            self.request(OP_CREATE, struct.pack("<BI", OBJ_COMMAND, len(init)), timeout=self.t.create)
            if self._stream(init, 0, 0, OBJ_COMMAND):
                self.request(OP_EXECUTE, timeout=self.t.execute)
                return
            self._retried("the init packet's CRC came back wrong")
        raise TooManyRetries(f"the init packet arrived damaged {self.retries + 1} times",
                             hint="Use a shorter cable or another USB port, then run the same command again.")

    def send_firmware(self, fw: bytes, offset: int = 0) -> None:
        """Data objects from ``offset`` (which the device confirmed by CRC) to the end."""
        total = len(fw)
        max_size = self.select(OBJ_DATA)[0]
        self.report.resumed_from = offset
        if self.progress:
            self.progress(offset, total)
        if offset % max_size and offset < total:
            # Finish the object an interruption cut short (the device still holds its start).
            end = min(total, offset - offset % max_size + max_size)
            if self._stream(fw[offset:end], offset, crc32(fw[:offset]), OBJ_DATA):
                self._execute(end, total)
                offset = end
            else:
                offset -= offset % max_size    # Create sends the whole object again
                self._retried(f"the object at {offset:,} came back with a wrong CRC")
        elif offset == total and total:
            # All of it arrived; the last Execute did not (or its answer was lost).
            self._execute(total, total)
            return
        elif offset:
            # A whole object may have arrived without its Execute (the checksum answer before it
            # was lost): the device would start the next Create at the last *executed* offset.
            # Execute it, as pc-nrfutil's resume does; a device that executed it already refuses.
            try:
                self._execute(offset, total)
            except DfuRejected as exc:
                if exc.details.get("code") != RES_NOT_PERMITTED:
                    raise
        while offset < total:
            end = min(total, offset + max_size)
            for _attempt in range(self.retries + 1):
                self.request(OP_CREATE, struct.pack("<BI", OBJ_DATA, end - offset),
                             timeout=self.t.create, offset=offset)
                self.report.objects += 1
                if self._stream(fw[offset:end], offset, crc32(fw[:offset]), OBJ_DATA):
                    break
                self._retried(f"the object at {offset:,} came back with a wrong CRC")
            else:
                raise TooManyRetries(f"the firmware object at byte {offset:,} arrived damaged "
                                     f"{self.retries + 1} times",
                                     hint="Use a shorter cable or another USB port, then run the same "
                                          "command again (it resumes).", offset=offset)
            self._execute(end, total)
            offset = end

    def _execute(self, end: int, total: int) -> None:
        last = end == total
        self.request(OP_EXECUTE, timeout=self.t.last_execute if last else self.t.execute, offset=end)
        if self.progress:
            self.progress(end, total)

    def _retried(self, why: str) -> None:
        self.report.retries += 1
        if self.on_retry:
            self.on_retry(why)

    def _stream(self, data: bytes, offset: int, crc: int, obj: int) -> bool:
        """Write ``data`` at ``offset``; True when the device's offset and CRC then match ours."""
        size = self.report.write_size or write_size(self.report.mtu or 131)
        prn = self.report.prn
        count = 0
        for i in range(0, len(data), size):
            chunk = data[i:i + size]
            self._send(OP_WRITE, chunk)
            crc = crc32(chunk, crc)
            offset += len(chunk)
            count += 1
            if prn and count == prn:
                count = 0
                try:
                    got = struct.unpack("<II", self._answer(OP_CRC, self.t.reply, offset=offset, size=8)[:8])
                except _Damaged:        # the notification arrived short: ask for the checksum
                    got = self.checksum(offset)
                if got != (offset, crc):
                    return False
        got_offset, got_crc = self.checksum(offset)
        return (got_offset, got_crc) == (offset, crc)

    def abort(self) -> None:
        """Best effort: tell the bootloader to drop the current object (Abort, SDK 15+)."""
        try:
            self._send(OP_ABORT)
        except Exception:   # the port may be gone: nothing to tell then
            pass
