"""The Apollo3 secure bootloader's (SBL) wired update over UART: framing and rakflash's client.

The SBL is Ambiq's ROM-level bootloader. When INFO0's override pin is held at
its active level at reset, it listens on the UART (INFO0's baud rate, for
INFO0's wired timeout) for a *wired update*. RAK's "Burn Bootloader" uses it
(``uart_wired_update.py``, ``-i 6 -o 0xF8000``), and it is the probe-less way
back for a RAK11720 whose RUI bootloader or application is gone.

Facts (RAKWireless/RAK-APOLLO3-RUI ``security/apollo3_scripts/uart_wired_update.py``,
``am_defines.py``; ``am_hal_secure_ota.h`` in the bundled AmbiqSuite; summarised in
docs/protocols.md):

* a message is ``crc32:u32 LE`` (zlib CRC-32 of everything after it), then a
  word ``(length << 16) | type`` where ``length`` counts the whole message, CRC
  included, then the type's words and data. At most 8192 bytes (the SBL's buffer).
* types: 0 HELLO, 1 STATUS, 2 OTADESC, 3 UPDATE, 4 ABORT, 5 RECOVER, 6 RESET,
  7 ACK, 8 DATA. HELLO (8 bytes) is answered by STATUS (88 bytes: version, max
  storage, status, state, 16 AMInfo words); every other command by an ACK
  (20 bytes: the acknowledged type, a status, a sequence number).
* UPDATE announces a block (its size, its zlib CRC-32, a piggy-back size of 0);
  DATA messages carry it in chunks of at most 8180 bytes, each with its byte
  offset in the block as sequence number. OTADESC names the OTA descriptor page;
  RESET restarts the chip (1 = POI, 2 = POR); ABORT (0 abort, 1 abort and quit).
* ACK statuses: 0 success, 1 failure, 2 invalid INFO0, 3 CRC, 4 security, 5 message
  too big, 6 unknown message type, 7 invalid address, 8 invalid operation,
  9 invalid parameter, 10 sequence, 11 too much data.
* what an UPDATE carries is a block of a *wired blob* (:mod:`rakflash.apollo3_wired`:
  its header, its data, and the Ambiq image an OTA installs); the vendor uploader
  sends a blob's blocks last first.

CRC-32 here is zlib's: ``binascii.crc32`` in the vendor's ``am_defines.py``.
The framing is written by hand: no library speaks it. The SBL's side, which the
virtual RAK11720 serves, is :mod:`rakflash.sim.apollo3_sbl`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, Callable

# The wired blob's format is rakflash.apollo3_wired's: Block is what send_block takes.
from ..apollo3_wired import FLASH_PAGE, Block
from ..errors import DeviceRejected, RakflashError, TooManyRetries, TransferTimeout
from ..link import ByteChannel, Deadline

HELLO, STATUS, OTADESC, UPDATE, ABORT, RECOVER, RESET, ACK, DATA = range(9)
MESSAGE_NAMES = {HELLO: "HELLO", STATUS: "STATUS", OTADESC: "OTADESC", UPDATE: "UPDATE",
                 ABORT: "ABORT", RECOVER: "RECOVER", RESET: "RESET", ACK: "ACK", DATA: "DATA"}
MAX_MESSAGE = 8192                     # the SBL's UART buffer (AM_MAX_UART_MSG_SIZE)
MAX_CHUNK = MAX_MESSAGE - 12           # CRC, word and sequence number come first
STATUS_SIZE, ACK_SIZE = 88, 20
RESET_POI, RESET_POR = 1, 2
ABORT_ONLY, ABORT_AND_QUIT = 0, 1

(SUCCESS, FAILURE, INVALID_INFO0, CRC_ERROR, SECURITY, TOO_BIG, UNKNOWN_TYPE, INVALID_ADDRESS,
 INVALID_OPERATION, INVALID_PARAMETER, SEQUENCE, TOO_MUCH_DATA) = range(12)

ACK_STATUS = {
    SUCCESS: ("success", ""),
    FAILURE: ("failure", "The secure bootloader could not finish the operation (a flash write, "
              "or an OTA it could not install): run the same command again; if it persists, write "
              "the firmware over SWD ('rakflash recover FILE --via swd')."),
    INVALID_INFO0: ("invalid INFO0", "The chip's INFO0 is not valid for this operation: look at it "
                    "with 'rakflash info0 show --probe ID' (needs an SWD probe)."),
    CRC_ERROR: ("CRC error", "The message was damaged on the line; it is sent again."),
    SECURITY: ("security check failed", "This chip's INFO0 asks for signed or encrypted images, "
               "and rakflash's wired blobs are neither: write the firmware over SWD instead "
               "('rakflash recover FILE --via swd')."),
    TOO_BIG: ("message too big", "Report it with a --trace file: rakflash sends at most "
              f"{MAX_MESSAGE} bytes a message."),
    UNKNOWN_TYPE: ("unknown message type", "This secure bootloader does not know the message: "
                   "report it with a --trace file."),
    INVALID_ADDRESS: ("invalid address", "The image covers flash the secure bootloader may not "
                      "write (its own region below 0xC000, a write-protected range, or beyond "
                      "the flash): use the RAK11720 firmware .hex as RAK publishes it."),
    INVALID_OPERATION: ("invalid operation", "The secure bootloader lost track of the block "
                        "(a message out of order): run the same command again."),
    INVALID_PARAMETER: ("invalid parameter", "The secure bootloader refused the block's size or "
                        "options (too large for its storage?): report it with a --trace file."),
    SEQUENCE: ("sequence error", "A message was lost on the line: run the same command again."),
    TOO_MUCH_DATA: ("too much data", "More data than the block announced: report it with a "
                    "--trace file."),
}


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


# ------------------------------------------------------------------ messages

def encode(msg_type: int, payload: bytes = b"") -> bytes:
    """One message: CRC, ``(length << 16) | type``, payload."""
    length = len(payload) + 8
    if length > MAX_MESSAGE:
        raise ValueError(f"a wired-update message holds at most {MAX_MESSAGE} bytes")
    body = struct.pack("<I", (length << 16) | msg_type) + payload
    return struct.pack("<I", crc32(body)) + body


def hello() -> bytes:
    return encode(HELLO)


def encode_words(msg_type: int, *words: int, data: bytes = b"") -> bytes:
    return encode(msg_type, struct.pack(f"<{len(words)}I", *words) + data)


@dataclass
class Status:
    """The SBL's answer to HELLO."""

    version: int
    max_storage: int
    status: int
    state: int
    am_info: tuple[int, ...] = (0,) * 16

    def encode(self) -> bytes:
        return encode_words(STATUS, self.version, self.max_storage, self.status, self.state,
                            *self.am_info)

    @classmethod
    def decode(cls, payload: bytes) -> Status:
        w = struct.unpack_from("<20I", payload)
        return cls(w[0], w[1], w[2], w[3], tuple(w[4:20]))

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "max_storage": self.max_storage, "status": self.status,
                "state": self.state}


@dataclass
class Ack:
    acked: int
    status: int
    seq: int = 0

    def encode(self) -> bytes:
        return encode_words(ACK, self.acked, self.status, self.seq)

    @classmethod
    def decode(cls, payload: bytes) -> Ack:
        return cls(*struct.unpack_from("<3I", payload))


@dataclass
class Message:
    type: int
    payload: bytes


def _head_ok(head: bytes | bytearray, types: dict[int, int]) -> bool:
    word = struct.unpack_from("<I", head, 4)[0]
    return (word & 0xFFFF) in types and word >> 16 == types[word & 0xFFFF]


def read_reply(channel: ByteChannel, timeout: float,
               expect: tuple[int, ...] = (STATUS, ACK)) -> Message | bytes:
    """The next reply of a type in ``expect``, found by its shape (type and its fixed
    length, then the CRC), so stray bytes before it are skipped; else, at the
    deadline, the bytes that came (for the caller to say what answered instead)."""
    sizes = {STATUS: STATUS_SIZE, ACK: ACK_SIZE}
    types = {t: sizes[t] for t in expect}
    deadline = Deadline(timeout)
    window = bytearray()
    seen = bytearray()
    while True:
        got = channel.read(8 - len(window), deadline.remaining())
        if not got:
            return bytes(seen + window)
        window += got
        while len(window) >= 8 and not _head_ok(window, types):
            seen.append(window.pop(0))
        if len(window) < 8:
            if deadline.expired:
                return bytes(seen + window)
            continue
        word = struct.unpack_from("<I", window, 4)[0]
        rest = channel.read((word >> 16) - 8, max(deadline.remaining(), 0.05))
        whole = bytes(window) + rest
        if len(whole) == word >> 16 and crc32(whole[4:]) == struct.unpack_from("<I", whole)[0]:
            return Message(word & 0xFFFF, whole[8:])
        seen += whole[:1]            # not a reply after all: look further along
        window = bytearray(whole[1:])
        if deadline.expired:
            return bytes(seen + window)


def find_reply(data: bytes) -> Message | None:
    """A well-formed STATUS or ACK anywhere in ``data`` (a buffer read in one go)."""
    sizes = {STATUS: STATUS_SIZE, ACK: ACK_SIZE}
    for i in range(0, max(0, len(data) - 7)):
        if _head_ok(data[i:i + 8], sizes):
            word = struct.unpack_from("<I", data, i + 4)[0]
            whole = data[i:i + (word >> 16)]
            if len(whole) == word >> 16 and crc32(whole[4:]) == struct.unpack_from("<I", whole)[0]:
                return Message(word & 0xFFFF, whole[8:])
    return None


def status_error(acked: int, status: int, *, where: str = "") -> RakflashError:
    what, hint = ACK_STATUS.get(status, (f"status {status}", "Report it with a --trace file."))
    name = MESSAGE_NAMES.get(acked, str(acked))
    return DeviceRejected(f"the secure bootloader refused {name}{where}: {what}", hint=hint,
                          status=status)


# ------------------------------------------------------------------ host side

@dataclass
class Timing:
    """How long the host waits (seconds). ``page_write`` is the vendor script's worst
    case for the SBL's flash writes (about 100 ms a page, uart_wired_update.py)."""

    reply: float = 1.0
    page_write: float = 0.1
    byte_time: float = 10 / 115200


class SblClient:
    """Talk to the SBL once it answered HELLO: OTADESC, UPDATE + DATA, ABORT, RESET.

    Every reply has a deadline. A CRC status or a lost/garbled ACK sends the
    message again, at most ``retries`` times; a DATA sent again after its ACK was
    lost is answered with a sequence error, which means "already taken". Every
    other status is a named error. ``progress(done, total)`` follows each ACKed DATA.
    """

    def __init__(self, channel: ByteChannel, *, timing: Timing | None = None, retries: int = 4,
                 chunk: int = MAX_CHUNK, progress: Callable[[int, int], None] | None = None,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.ch = channel
        self.timing = timing or Timing()
        self.retries = retries
        self.chunk = min(chunk, MAX_CHUNK)
        self.progress = progress
        self.on_retry = on_retry
        self.retried = 0

    # -- one exchange -------------------------------------------------------
    def _drain(self) -> None:
        for _ in range(16):                     # bounded: a flooding line can't keep us here
            if not self.ch.read(4096, 0):
                return

    def _wait(self, size: int) -> float:
        return self.timing.reply + 2 * size * self.timing.byte_time

    def exchange(self, message: bytes, *, timeout: float | None = None, what: str = "") -> Ack:
        """Send ``message`` until it is ACKed with success (or a named error)."""
        msg_type = struct.unpack_from("<I", message, 4)[0] & 0xFFFF
        name = MESSAGE_NAMES[msg_type] + what
        lost = damaged = 0
        for attempt in range(self.retries + 1):
            self._drain()
            self.ch.write(message)
            reply = read_reply(self.ch, timeout or self._wait(len(message)), (ACK,))
            if isinstance(reply, bytes):
                lost += 1
                self._retry(f"no answer to {name}")
                continue
            ack = Ack.decode(reply.payload)
            if ack.acked != msg_type:
                lost += 1
                self._retry(f"an answer to another message than {name}")
                continue
            if ack.status == SUCCESS:
                return ack
            if ack.status == CRC_ERROR:
                damaged += 1
                self._retry(f"{name} was damaged on the line")
                continue
            if ack.status == SEQUENCE and attempt > 0 and msg_type == DATA:
                return ack               # the first send got through; its ACK was lost
            raise status_error(msg_type, ack.status, where=what)
        if lost == self.retries + 1:
            raise TransferTimeout(f"the secure bootloader did not answer {name}",
                                  hint="Keep BOOT held, press reset, and run the same command "
                                       "again: the secure bootloader waits for a new HELLO.")
        raise TooManyRetries(f"{name} failed {self.retries + 1} times on the line",
                             hint="Use a shorter cable or a USB-UART adapter on its own, then "
                                  "run the same command again.")

    def _retry(self, why: str) -> None:
        self.retried += 1
        if self.on_retry:
            self.on_retry(why)

    # -- commands -----------------------------------------------------------
    def otadesc(self, address: int) -> None:
        self.exchange(encode_words(OTADESC, address))

    def send_block(self, block: Block, *, done: int = 0, total: int | None = None) -> None:
        """UPDATE, then the block's DATA messages. The last ACK comes after the SBL
        has written the flash, so it gets the flash time on top."""
        raw = block.raw
        total = total if total is not None else len(raw)
        self.exchange(encode_words(UPDATE, len(raw), crc32(raw), 0),
                      what=f" ({block.describe()})")
        pages = -(-len(raw) // FLASH_PAGE) + 1
        for off in range(0, len(raw), self.chunk):
            piece = raw[off:off + self.chunk]
            last = off + len(piece) >= len(raw)
            timeout = self._wait(len(piece) + 12) + self.timing.page_write * (pages if last else 2)
            self.exchange(encode_words(DATA, off, data=piece), timeout=timeout,
                          what=f" at block byte {off:,}")
            if self.progress:
                self.progress(done + off + len(piece), total)

    def reset(self, option: int = RESET_POI) -> None:
        self.exchange(encode_words(RESET, option))

    def abort(self, value: int = ABORT_ONLY, *, timeout: float = 0.5) -> bool:
        """End an unfinished update (best effort, one try): True when it was ACKed."""
        try:
            self._drain()
            self.ch.write(encode_words(ABORT, value))
            reply = read_reply(self.ch, timeout, (ACK,))
        except RakflashError:
            return False
        return isinstance(reply, Message) and Ack.decode(reply.payload).acked == ABORT


def say_hello(channel: ByteChannel, timeout: float) -> Status | bytes:
    """One HELLO; the STATUS, or the bytes that came instead."""
    channel.write(hello())
    reply = read_reply(channel, timeout, (STATUS,))
    return Status.decode(reply.payload) if isinstance(reply, Message) else reply
