"""The Secure DFU bootloader's request handler: the device's side of :mod:`rakflash.protocols.nordic_dfu`.

What the RAK4631-R's RUI3 bootloader (nRF5 SDK 17.0.2 ``nrf_dfu_req_handler`` /
``nrf_dfu_serial``) does with the requests rakflash's client sends; the virtual
RAK4631-R (:mod:`rakflash.sim.nrf52`) serves it on its USB CDC port and keeps the
settings page (:class:`DfuState`) across resets. No Python package serves this side.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Protocol

from ..link import ByteChannel, Deadline
from ..protocols import slip
from ..protocols.nordic_dfu import (
    OBJ_COMMAND,
    OBJ_DATA,
    OP_ABORT,
    OP_CRC,
    OP_CREATE,
    OP_EXECUTE,
    OP_MTU,
    OP_PING,
    OP_PROTOCOL_VERSION,
    OP_RESPONSE,
    OP_SELECT,
    OP_SET_PRN,
    OP_WRITE,
    RES_EXT_ERROR,
    RES_INSUFFICIENT_RESOURCES,
    RES_INVALID_PARAMETER,
    RES_NOT_PERMITTED,
    RES_NOT_SUPPORTED,
    RES_OPERATION_FAILED,
    RES_SUCCESS,
    RES_UNSUPPORTED_TYPE,
    crc32,
)
from ..protocols.slip import read_some


class DfuBackend(Protocol):
    """What the bootloader's request handler needs from the rest of the bootloader."""

    def check_init(self, init: bytes) -> InitVerdict:
        """Validate a complete init packet (signature, versions, sizes)."""

    def begin_object(self, offset: int, size: int) -> None:
        """Prepare flash for a data object at firmware ``offset`` (erase its pages)."""

    def write(self, offset: int, data: bytes) -> None:
        """Program firmware bytes at ``offset``."""

    def check_firmware(self, size: int) -> int | None:
        """After the last object: the extended error if the firmware is not what the init packet says."""

    def activate(self) -> None:
        """The update is complete and valid: mark it so the bootloader starts it."""


@dataclass
class InitVerdict:
    ext_error: int | None = None         # an extended error code, or None when valid
    result: int | None = None            # a plain result code instead (e.g. RES_INVALID_OBJECT)
    firmware_size: int = 0               # bytes of firmware the init packet announces


@dataclass
class DfuState:
    """The bootloader's settings page: what survives a reset between two runs.

    The init packet and the firmware up to the last executed object survive; a
    partly written object does not (SDK: progress is saved on Execute).
    """

    command: bytes = b""                 # the last complete, executed (valid) init packet
    firmware_size: int = 0
    offset_last: int = 0                 # firmware bytes in executed objects
    crc_last: int = 0


@dataclass
class _Session:
    """Request-handler state that a reset loses."""

    prn: int = 0
    writes: int = 0
    command: bytearray = field(default_factory=bytearray)
    command_size: int = 0
    command_valid: bool = False
    obj: int | None = None                # the object type of the last Create/Select
    offset: int = 0
    crc: int = 0
    object_start: int = 0
    object_size: int = 0


class SecureDfuTarget:
    """The bootloader's request handler, serving one power-up of the device.

    ``serve()`` returns ``"activated"`` after a valid update was executed (the
    device then resets into it), ``"idle"`` after ``idle_timeout`` without a
    request, or ``"text"`` when ``on_text`` asked to stop. Text lines outside
    SLIP frames (``at+…`` and a line end) go to ``on_text(line)``, so a console
    can share the port; opcodes never look like ``a``.
    """

    COMMAND_MAX = 512
    DATA_MAX = 4096

    def __init__(self, channel: ByteChannel, backend: DfuBackend, state: DfuState, *,
                 mtu: int = 2051, idle_timeout: float = 3600.0,
                 on_text: Callable[[str], bool] | None = None) -> None:
        self.ch = channel
        self.backend = backend
        self.state = state
        self.mtu = mtu
        self.idle_timeout = idle_timeout
        self.on_text = on_text
        self.decoder = slip.Decoder(max_frame=mtu)
        self.s = _Session(offset=state.offset_last, crc=state.crc_last,
                          command=bytearray(state.command), command_size=len(state.command),
                          command_valid=bool(state.command))
        self._text = bytearray()

    def _reply(self, op: int, result: int = RES_SUCCESS, data: bytes = b"", ext: int | None = None) -> None:
        if result == RES_EXT_ERROR:
            assert ext is not None, "an extended error says which"
            data = bytes([ext])
        body = bytes([OP_RESPONSE, op, result]) + data
        self.ch.write(slip.encode(body))

    def serve(self) -> str:
        idle = Deadline(self.idle_timeout)
        while not idle.expired:
            got = read_some(self.ch, min(0.5, idle.remaining()))
            if not got:
                continue
            idle = Deadline(self.idle_timeout)
            for frame in self._frames(got):
                outcome = self.handle(frame)
                if outcome:
                    return outcome
        return "idle"

    def _frames(self, data: bytes) -> list[bytes | str]:
        """SLIP frames, and console lines typed outside any frame."""
        out: list[bytes | str] = []
        i = 0
        while i < len(data):
            b = data[i]
            if not self._text and self.decoder.between_frames and b in b"\r\n":
                i += 1              # line ends between frames (a console's empty line): nothing
                continue
            if self._text or (self.decoder.between_frames and b in b"aA"):
                if b in b"\r\n":
                    out.append(self._text.decode("latin-1"))
                    self._text.clear()
                elif b == slip.END:
                    self._text.clear()
                elif len(self._text) < 64:
                    self._text.append(b)
                i += 1
                continue
            j = data.find(slip.END, i)
            stop = len(data) if j < 0 else j + 1
            out += self.decoder.feed(data[i:stop])
            i = stop
        return out

    def handle(self, frame: bytes | str) -> str | None:
        if isinstance(frame, str):
            if self.on_text and frame.strip() and self.on_text(frame.strip()):
                return "text"
            return None
        op, p = frame[0], frame[1:]
        s = self.s
        if op == OP_PING:
            self._reply(op, data=p[:1])
        elif op == OP_SET_PRN:
            if len(p) < 2:
                self._reply(op, RES_INVALID_PARAMETER)
                return None
            s.prn, s.writes = struct.unpack("<H", p[:2])[0], 0
            self._reply(op)
        elif op == OP_MTU:
            self._reply(op, data=struct.pack("<H", self.mtu))
        elif op == OP_SELECT:
            self._select(p)
        elif op == OP_CREATE:
            self._create(p)
        elif op == OP_WRITE:
            self._write(p)
        elif op == OP_CRC:
            self._reply(op, data=struct.pack("<II", *self._position()))
        elif op == OP_EXECUTE:
            return self._execute()
        elif op == OP_ABORT:
            s.obj = None
            s.offset, s.crc = self.state.offset_last, self.state.crc_last
            self._reply(op)
        elif op == OP_PROTOCOL_VERSION:
            self._reply(op, data=bytes([1]))
        else:
            self._reply(op, RES_NOT_SUPPORTED)
        return None

    def _position(self) -> tuple[int, int]:
        s = self.s
        if s.obj == OBJ_COMMAND:
            return len(s.command), crc32(bytes(s.command))
        return s.offset, s.crc

    def _select(self, p: bytes) -> None:
        s = self.s
        if not p or p[0] not in (OBJ_COMMAND, OBJ_DATA):
            return self._reply(OP_SELECT, RES_UNSUPPORTED_TYPE)
        s.obj = p[0]
        s.writes = 0          # receipt notifications count the writes of this object from here
        if s.obj == OBJ_COMMAND:
            data = struct.pack("<III", self.COMMAND_MAX, len(s.command), crc32(bytes(s.command)))
        else:
            data = struct.pack("<III", self.DATA_MAX, s.offset, s.crc)
        self._reply(OP_SELECT, data=data)

    def _create(self, p: bytes) -> None:
        s = self.s
        if len(p) < 5:
            return self._reply(OP_CREATE, RES_INVALID_PARAMETER)
        obj, size = struct.unpack("<BI", p[:5])
        if obj not in (OBJ_COMMAND, OBJ_DATA):
            return self._reply(OP_CREATE, RES_UNSUPPORTED_TYPE)
        s.writes = 0          # receipt notifications count each object's writes afresh
        if size == 0:
            return self._reply(OP_CREATE, RES_INVALID_PARAMETER)
        if obj == OBJ_COMMAND:
            if size > self.COMMAND_MAX:
                return self._reply(OP_CREATE, RES_INSUFFICIENT_RESOURCES)
            # A new init packet: the old one and any firmware progress are gone.
            s.obj, s.command, s.command_size, s.command_valid = OBJ_COMMAND, bytearray(), size, False
            s.offset = s.crc = 0
            self.state.command, self.state.offset_last, self.state.crc_last = b"", 0, 0
            return self._reply(OP_CREATE)
        if not s.command_valid:
            return self._reply(OP_CREATE, RES_NOT_PERMITTED)
        if size > self.DATA_MAX:
            return self._reply(OP_CREATE, RES_INSUFFICIENT_RESOURCES)
        # A new data object starts at the end of the last executed one.
        start = self.state.offset_last
        if start + size > self.state.firmware_size:
            return self._reply(OP_CREATE, RES_INSUFFICIENT_RESOURCES)
        s.obj, s.object_start, s.object_size = OBJ_DATA, start, size
        s.offset, s.crc = start, self.state.crc_last
        try:
            self.backend.begin_object(start, size)
        except Exception:
            return self._reply(OP_CREATE, RES_OPERATION_FAILED)
        self._reply(OP_CREATE)

    def _write(self, p: bytes) -> None:
        s = self.s
        if s.obj == OBJ_COMMAND:
            if len(s.command) + len(p) > s.command_size:
                return self._reply(OP_WRITE, RES_INVALID_PARAMETER)
            s.command += p
        elif s.obj == OBJ_DATA and s.object_size:
            if s.offset + len(p) > s.object_start + s.object_size:
                return self._reply(OP_WRITE, RES_INVALID_PARAMETER)
            try:
                self.backend.write(s.offset, p)
            except Exception:
                return self._reply(OP_WRITE, RES_OPERATION_FAILED)
            s.offset += len(p)
            s.crc = crc32(p, s.crc)
        else:
            return self._reply(OP_WRITE, RES_NOT_PERMITTED)
        s.writes += 1
        if s.prn and s.writes >= s.prn:
            s.writes = 0
            self._reply(OP_CRC, data=struct.pack("<II", *self._position()))

    def _execute(self) -> str | None:
        s = self.s
        if s.obj == OBJ_COMMAND:
            if not s.command_size or len(s.command) != s.command_size:
                self._reply(OP_EXECUTE, RES_NOT_PERMITTED)
                return None
            same = bytes(s.command) == self.state.command
            verdict = self.backend.check_init(bytes(s.command))
            if verdict.result is not None or verdict.ext_error is not None:
                s.command_valid = False
                if verdict.result is not None:
                    self._reply(OP_EXECUTE, verdict.result)
                    return None
                self._reply(OP_EXECUTE, RES_EXT_ERROR, ext=verdict.ext_error)
                return None
            s.command_valid = True
            if not same:
                self.state.offset_last = self.state.crc_last = 0
                s.offset = s.crc = 0
            self.state.command = bytes(s.command)
            self.state.firmware_size = verdict.firmware_size
            self._reply(OP_EXECUTE)
            return None
        if s.obj == OBJ_DATA and s.object_size:
            if s.offset != s.object_start + s.object_size:
                self._reply(OP_EXECUTE, RES_NOT_PERMITTED)
                return None
            self.state.offset_last, self.state.crc_last = s.offset, s.crc
            s.object_size = 0
            if s.offset < self.state.firmware_size:
                self._reply(OP_EXECUTE)
                return None
            ext = self.backend.check_firmware(s.offset)
            if ext is not None:
                # The whole image is refused: the next run starts over.
                self.state.offset_last = self.state.crc_last = 0
                self.state.command = b""
                s.command_valid = False
                s.offset = s.crc = 0
                self._reply(OP_EXECUTE, RES_EXT_ERROR, ext=ext)
                return None
            self._reply(OP_EXECUTE)
            self.state.command, self.state.offset_last, self.state.crc_last = b"", 0, 0
            self.backend.activate()
            return "activated"
        self._reply(OP_EXECUTE, RES_NOT_PERMITTED)
        return None
