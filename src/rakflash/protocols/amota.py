"""Ambiq AMOTA packets over UART, as the RAK11720's RUI bootloader takes them after ``at+update``.

Facts (RAKWireless/RAK-APOLLO3-RUI ``security/apollo3_scripts/apollo3_uart_update_script.py``
and Ambiq's ``amotas`` in the bundled SDK; DESIGN.md §2):

* host → device: ``len:u16 LE`` (payload + 4), ``cmd:u8``, payload,
  ``crc32:u32 LE`` over the payload (zlib's CRC-32). VERIFY and RESET carry
  no payload, so their CRC is 0: ``04 00 03 00 00 00 00``.
* commands: 1 HEADER (the blob's 48-byte header), 2 DATA (≤ 512 bytes of
  application), 3 VERIFY, 4 RESET.
* device → host: ``len:u16 LE``, ``cmd``, ``status``, data, where ``len``
  counts the bytes after ``cmd``: HEADER/DATA replies have ``len`` 5 (status
  + a 4-byte little-endian count of image bytes received, 8 bytes in all),
  VERIFY/RESET replies ``len`` 1 (4 bytes in all). The vendor script checks
  exactly these lengths.
* status: 0 ok, 1 CRC error, 2 invalid header, 3 invalid packet length,
  4 insufficient buffer, 5 insufficient flash, 6 unknown, 7 flash write error.

The packets have no sequence number: a DATA packet sent twice after a lost
reply is written twice. So after a lost (or unreadable) DATA reply the sender
does not resend blindly: it asks the device where it stands with the same
HEADER. Ambiq's ``amotas_main.c`` (``amotas_packet_handler``,
``AMOTA_CMD_FW_HEADER``) resumes a transfer when a HEADER arrives while it is
still receiving an image with the same version and CRC: it keeps what it has
and replies with its offset (the bytes received so far); any other HEADER
erases and starts at 0. Either way the HEADER reply's count says where to go
on from — the next packet, the same one again, or the start. A count is taken
when two HEADER replies agree (a damaged count must not skip a packet), and
VERIFY (image CRC against the header) gates the new firmware in any case.
Error replies may carry no count (``amotas_reply_to_client(cmd, status, NULL, 0)``
in Ambiq's code): ``len`` 1.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Callable

from ..apollo3_ota import HEADER_SIZE, OtaHeader, crc32_apollo3
from ..errors import (
    DeviceRejected,
    DeviceRestarted,
    RakflashError,
    TooManyRetries,
    TransferError,
    TransferTimeout,
    VerifyFailed,
)
from ..link import ByteChannel, Deadline

HEADER, DATA, VERIFY, RESET = 1, 2, 3, 4
COMMAND_NAMES = {HEADER: "HEADER", DATA: "DATA", VERIFY: "VERIFY", RESET: "RESET"}
MAX_DATA = 512

OK, CRC_ERROR, INVALID_HEADER, INVALID_LENGTH, NO_BUFFER, NO_FLASH, UNKNOWN, WRITE_ERROR = range(8)
STATUS = {
    OK: ("ok", ""),
    CRC_ERROR: ("CRC error", "the packet was damaged on the line; it is sent again"),
    INVALID_HEADER: ("invalid header", "the OTA header is not one this bootloader takes: rebuild the "
                     "blob, or give the application (.bin/.hex) itself and let the blob be built from it"),
    INVALID_LENGTH: ("invalid packet length", "the packet size is wrong for this bootloader: report "
                     "it with a trace of the exchange"),
    NO_BUFFER: ("insufficient buffer", "the bootloader ran out of buffer: run the same command again"),
    NO_FLASH: ("insufficient flash", "the image does not fit the application region: use a smaller "
               "build, or check that it is for RAK11720"),
    UNKNOWN: ("unknown error", "run the same command again; the module stays in its bootloader"),
    WRITE_ERROR: ("flash write error", "the module could not write its flash: run the same command "
                  "again; if it persists, write the firmware over SWD with a probe"),
}


# Statuses a damaged packet can earn (a flipped bit in the payload, or in the
# length field): the packet was dropped, so sending it again is safe.
LINE_ERRORS = (CRC_ERROR, INVALID_LENGTH)


def encode_packet(cmd: int, payload: bytes = b"") -> bytes:
    """A host → device packet."""
    return struct.pack("<HB", len(payload) + 4, cmd) + payload + struct.pack("<I", zlib.crc32(payload))


def encode_reply(cmd: int, status: int, count: int | None = None) -> bytes:
    """A device → host reply: with a byte count for HEADER/DATA, without for VERIFY/RESET."""
    data = struct.pack("<I", count or 0) if cmd in (HEADER, DATA) else b""
    return struct.pack("<HBB", 1 + len(data), cmd, status) + data


def looks_like_reply(data: bytes) -> bool:
    """Whether ``data`` starts with an AMOTA reply: what a bootloader still in its
    packet loop sends back when it is spoken to with text (an invalid-length status)."""
    return len(data) >= 4 and _reply_head(data[:4])


ABORT = encode_packet(RESET)
"""What ends a packet session from the host side: RESET restarts the module, and
with no verified image its bootloader stays in charge (DESIGN.md §2)."""


@dataclass
class Reply:
    cmd: int
    status: int
    count: int | None


def status_error(cmd: int, status: int) -> RakflashError:
    """The named error for a status code in reply to ``cmd``."""
    what, hint = STATUS.get(status, (f"status {status}", "report it with a trace of the exchange"))
    name = COMMAND_NAMES.get(cmd, str(cmd))
    if cmd == VERIFY:
        return VerifyFailed(f"the bootloader's check of the received image failed ({what})",
                            hint="The image arrived damaged; the module keeps its bootloader: run "
                                 "the same command again.", status=status)
    return DeviceRejected(f"the bootloader refused {name}: {what}", hint=hint, status=status)


def read_reply(channel: ByteChannel, timeout: float) -> Reply | bytes:
    """One reply; or, if nothing well-formed came by the deadline, the bytes that did.

    Stray bytes before a reply (line noise) are skipped: the reply is found by
    its shape (length 1 or 5, a known command, a known status), so one noisy
    byte doesn't cost a resend — which, without sequence numbers, would cost
    the whole image.
    """
    deadline = Deadline(timeout)
    window = bytearray()
    skipped = bytearray()
    while not deadline.expired:
        got = channel.read(4 - len(window), deadline.remaining())
        if not got:
            break
        window += got
        while len(window) >= 4 and not _reply_head(window):
            skipped.append(window.pop(0))
        if len(window) < 4:
            continue
        length, cmd, status = struct.unpack("<HBB", window)
        rest = channel.read(length - 1, deadline.remaining()) if length > 1 else b""
        if len(rest) != length - 1:
            return bytes(skipped + window + rest)
        return Reply(cmd, status, struct.unpack("<I", rest)[0] if rest else None)
    return bytes(skipped + window)


def _reply_head(head: bytes | bytearray) -> bool:
    """Whether 4 bytes can start a reply: a known command and status, and a length that
    fits them (a HEADER/DATA success carries its count; VERIFY/RESET never carry one)."""
    length: int
    cmd: int
    status: int
    length, cmd, status = struct.unpack_from("<HBB", head)
    if cmd not in COMMAND_NAMES or status not in STATUS:
        return False
    if cmd in (HEADER, DATA):
        return length == 5 or (length == 1 and status != OK)
    return length == 1


# ------------------------------------------------------------------ host side

class AmotaSender:
    """Send an OTA blob: HEADER, DATA packets, VERIFY, RESET — every reply with a deadline.

    A packet the device reports damaged (CRC error, invalid length) or that
    gets no reply is sent again, at most ``retries`` times — except DATA: after
    a lost DATA reply (or a count that makes no sense) the device is asked
    where it stands with the HEADER again (see the module's docstring) and the
    transfer goes on from there; a device found to have taken more than was
    sent starts over (VERIFY, which ends its session, then HEADER), at most
    ``restarts`` times. Every other error status raises its named error.
    ``progress(sent, total)`` follows each acknowledged DATA packet;
    ``on_retry(reason)`` is called for every packet sent again or position asked;
    ``on_phase(name)`` as the transfer moves on: ``write`` once HEADER was taken (the
    device has erased by then), ``verify`` before VERIFY.
    """

    restarts = 2   # times the whole image may be started over (a packet was taken twice)

    def __init__(self, channel: ByteChannel, *, packet_size: int = MAX_DATA, retries: int = 5,
                 reply_timeout: float = 2.0, data_timeout: float | None = None,
                 verify_timeout: float = 10.0, restart_markers: tuple[bytes, ...] = (),
                 progress: Callable[[int, int], None] | None = None,
                 on_retry: Callable[[str], None] | None = None,
                 on_phase: Callable[[str], None] | None = None) -> None:
        self.ch = channel
        self.restart_markers = restart_markers
        self._noise = bytearray()
        self.packet_size = min(packet_size, MAX_DATA)
        self.retries = retries
        self.reply_timeout = reply_timeout
        self.data_timeout = data_timeout or reply_timeout
        self.verify_timeout = verify_timeout
        self.progress = progress
        self.on_retry = on_retry or (lambda reason: None)
        self.on_phase = on_phase or (lambda name: None)
        self.sent = 0           # image bytes the device has acknowledged
        self._refusal: tuple[int, int] | None = None   # the last refusal (command, status), unconfirmed
        self.resumed = 0        # times the transfer went on from the device's own count
        self.started_over = 0   # times the image was started from 0 again

    def send(self, blob: bytes) -> None:
        header, app = blob[:HEADER_SIZE], blob[HEADER_SIZE:]
        total = len(app)
        sent = self.sent = self._position(header, 0, first=True)
        self.on_phase("write")
        while sent < total:
            chunk = app[sent:sent + self.packet_size]
            reply = self._exchange(DATA, chunk, resend_lost=False, timeout=self.data_timeout)
            if reply is not None and reply.count == sent + len(chunk):
                sent = self.sent = sent + len(chunk)
                if self.progress:
                    self.progress(sent, total)
                continue
            why = ("the reply to DATA was lost or refused it" if reply is None else
                   f"the device counted {reply.count:,} bytes where {sent + len(chunk):,} were sent")
            self.on_retry(f"{why}: asking the bootloader where it stands")
            sent = self.sent = self._position(header, sent + len(chunk))
            if self.progress:
                self.progress(sent, total)
        self.on_phase("verify")
        self._exchange(VERIFY, b"", timeout=self.verify_timeout)
        # RESET restarts the module: a reply lost on its way is no failure (the
        # update flow confirms the new version), and it must not be sent again
        # to whatever runs after the restart.
        try:
            self._exchange(RESET, b"", resend_lost=False)
        except TransferTimeout:
            pass

    def _position(self, header: bytes, most: int, *, first: bool = False) -> int:
        """Where the device stands, from HEADER replies: the count two replies in a row
        agree on, if it is one the transfer can go on from (at most ``most`` bytes, a
        whole number of packets); else the image is started over."""
        total = OtaHeader.unpack(header).length
        answers: list[int] = []
        for _ in range(2 * self.retries + 2):
            reply = self._exchange(HEADER, header)
            assert reply is not None    # only a DATA, or a packet sent once, goes unanswered
            count = reply.count or 0
            if (first and count == 0) or (answers and answers[-1] == count):
                break     # a fresh start needs no second word: a wrong 0 shows at the first DATA
            answers.append(count)
        else:
            raise TooManyRetries("the bootloader's replies to HEADER kept changing",
                                 hint="Use a shorter cable and check the GND wire, then run the same "
                                      "command again.")
        usable = count <= min(most if not first else total, total) and \
            (count % self.packet_size == 0 or count == total)
        if usable:
            if count and not first:
                self.resumed += 1
            elif not first:
                self.started_over += 1
                self.on_retry("the bootloader started the image over (its HEADER reply says 0)")
            return count
        return self._start_over(header)

    def _start_over(self, header: bytes) -> int:
        """End the device's session (VERIFY of an incomplete image fails and ends it, in
        Ambiq's code as on the simulator) and start the image at 0 with a new HEADER."""
        if self.started_over >= self.restarts:
            raise TransferError("the bootloader took a packet twice, and starting the image over "
                                f"did not help ({self.restarts} times)",
                                hint="The module stays in its bootloader: run the same command "
                                     "again (a shorter cable and a good GND wire help).")
        self.started_over += 1
        self.on_retry("the bootloader took a packet twice: starting the image over")
        self._exchange(VERIFY, b"", timeout=self.verify_timeout, accept=(OK, CRC_ERROR))
        reply = self._exchange(HEADER, header)
        assert reply is not None        # only a DATA, or a packet sent once, goes unanswered
        if reply.count:
            raise TransferError(f"the bootloader would not start the image over (it counts "
                                f"{reply.count:,} bytes after a new HEADER)",
                                hint="Run the same command again: the module stays in its bootloader.")
        return 0

    def _exchange(self, cmd: int, payload: bytes, *, timeout: float | None = None,
                  resend_lost: bool = True, accept: tuple[int, ...] = (OK,)) -> Reply | None:
        """Send one packet until its reply has one of the ``accept`` statuses.

        Damaged on the line (a line-error status) it is sent again; so is one whose
        reply never came, if ``resend_lost`` — else None is returned for a lost reply.
        """
        packet = encode_packet(cmd, payload)
        name = COMMAND_NAMES[cmd]
        lost = 0
        refused = None      # the last status that made us resend
        line_errors = []    # every such status
        for attempt in range(self.retries + 1):
            if attempt:
                self.on_retry(f"{name} sent again ({'no reply' if refused is None else STATUS[refused][0]})")
            for _ in range(16):            # drop leftovers of a garbled reply (bounded: a
                stale = self.ch.read(4096, 0)  # flooding line can't keep us here)
                if not stale:
                    break
                self._check_restart(stale)
            self.ch.write(packet)
            reply = read_reply(self.ch, timeout or self.reply_timeout)
            if not isinstance(reply, Reply) or reply.cmd != cmd:
                if isinstance(reply, bytes):
                    self._check_restart(reply)
                if not resend_lost:
                    return None
                lost += 1
                refused = None
                continue
            if reply.status in accept:
                if self._refusal and self._refusal[0] == cmd:
                    self._refusal = None
                return reply
            if reply.status in LINE_ERRORS and cmd != VERIFY:
                refused = reply.status     # damaged on the line (the length field too): resend
                line_errors.append(refused)
                continue
            # A refusal counts when it comes twice in a row: one bit flipped on the way
            # back turns OK (0) into 'invalid header' (2) or 'insufficient buffer' (4).
            if self._refusal == (cmd, reply.status):
                raise status_error(cmd, reply.status)
            self._refusal = (cmd, reply.status)
            refused = reply.status
            if cmd == DATA:
                return None   # was it taken after all? Only the position tells (no blind resend)
        self._check_restart(self.ch.read(4096, 0.05))
        if line_errors and all(r == INVALID_LENGTH for r in line_errors):
            raise status_error(cmd, INVALID_LENGTH)   # the same refusal every time: not the line
        if lost == self.retries + 1:
            raise TransferTimeout(f"the bootloader did not answer {name}",
                                  hint="The module stays in its bootloader: press reset if needed "
                                       "and run the same command again.")
        raise TooManyRetries(f"{name} was damaged {self.retries + 1} times on the line",
                             hint="Use a shorter cable and check the GND wire, then run the same "
                                  "command again.")

    def _check_restart(self, data: bytes) -> None:
        """Text such as the bootloader's banner among the answers: the module restarted."""
        if not self.restart_markers or not data:
            return
        self._noise += data
        del self._noise[:-256]
        if any(m in self._noise for m in self.restart_markers):
            self._noise.clear()
            raise DeviceRestarted("the module restarted during the transfer"
                                  + (f", after {self.sent:,} bytes" if self.sent else ""))


# ------------------------------------------------------------------ device side (simulator)

@dataclass
class ServeResult:
    status: str            # "ok" (verified and reset), "reset" (reset without a verified image), "idle"
    received: int = 0
    header: OtaHeader | None = None


class AmotaReceiver:
    """The bootloader's packet loop after ``Start firmware upgrade...``.

    ``on_header(header)`` prepares flash (may raise :class:`NoFlash`);
    ``on_data(offset, data)`` programs; ``read_image(length)`` returns what
    was written, for VERIFY. ``resume``: a HEADER with the version and CRC of
    the image being received goes on from where it is, as Ambiq's
    ``amotas_packet_handler`` does (without it every HEADER starts over);
    VERIFY ends the image's session either way.
    """

    class NoFlash(Exception):
        """Raised by ``on_header`` when the image does not fit."""

    def __init__(self, channel: ByteChannel, *, load_address: int, max_size: int,
                 on_header: Callable[[OtaHeader], None], on_data: Callable[[int, bytes], None],
                 read_image: Callable[[int], bytes], idle_timeout: float = 60.0,
                 byte_time: float = 0.0, resume: bool = True) -> None:
        self.ch = channel
        self.load_address = load_address
        self.max_size = max_size
        self.on_header = on_header
        self.on_data = on_data
        self.read_image = read_image
        self.idle_timeout = idle_timeout
        self.byte_time = byte_time
        self.resume = resume
        self.receiving = False      # an image's session runs (from HEADER to VERIFY)

    def _packet(self) -> tuple[int, int, bytes] | None:
        """(status, cmd, payload) of the next packet; None when idle too long."""
        head = self.ch.read(3, self.idle_timeout)
        if len(head) < 3:
            return None
        length, cmd = struct.unpack("<HB", head)
        if length < 4 or length > MAX_DATA + 4:
            drain = Deadline(2.0)          # drop the rest of the bad packet, within reason
            while self.ch.read(4096, 0.05) and not drain.expired:
                pass
            return INVALID_LENGTH, cmd, b""
        body = self.ch.read(length, 0.5 + length * self.byte_time)
        if len(body) < length:
            return CRC_ERROR, cmd, b""
        payload, crc = body[:-4], struct.unpack("<I", body[-4:])[0]
        if zlib.crc32(payload) != crc:
            return CRC_ERROR, cmd, b""
        return OK, cmd, payload

    def serve(self) -> ServeResult:
        res = ServeResult("idle")
        verified = False
        while True:
            got = self._packet()
            if got is None:
                return res
            status, cmd, payload = got
            if status != OK:
                self.ch.write(encode_reply(cmd if cmd in COMMAND_NAMES else DATA, status, res.received))
                continue
            if cmd == HEADER:
                status = self._header(payload, res)
                verified = False
                self.ch.write(encode_reply(HEADER, status, res.received))
            elif cmd == DATA:
                status = self._data(payload, res)
                self.ch.write(encode_reply(DATA, status, res.received))
            elif cmd == VERIFY:
                ok = res.header is not None and res.received == res.header.length and \
                    crc32_apollo3(self.read_image(res.received)) == res.header.crc
                verified = ok
                self.receiving = False
                self.ch.write(encode_reply(VERIFY, OK if ok else CRC_ERROR))
            elif cmd == RESET:
                self.ch.write(encode_reply(RESET, OK))
                res.status = "ok" if verified else "reset"
                return res
            # Any other command byte (a bit flipped on the line) gets no reply:
            # the packet handler has no case for it, so the host's deadline resends.

    def _header(self, payload: bytes, res: ServeResult) -> int:
        if len(payload) != HEADER_SIZE:
            return INVALID_HEADER
        header = OtaHeader.unpack(payload)
        if header.encrypted or header.load_address != self.load_address:
            return INVALID_HEADER
        if self.resume and self.receiving and res.header is not None and \
                (header.version, header.crc) == (res.header.version, res.header.crc):
            return OK          # the same image again: go on from res.received
        if header.length > self.max_size or header.length == 0:
            return NO_FLASH
        try:
            self.on_header(header)
        except AmotaReceiver.NoFlash:
            return NO_FLASH
        res.header, res.received = header, 0
        self.receiving = True
        return OK

    def _data(self, payload: bytes, res: ServeResult) -> int:
        if res.header is None:
            return INVALID_HEADER
        if res.received + len(payload) > res.header.length:
            return INVALID_LENGTH
        try:
            self.on_data(res.received, payload)
        except Exception:
            return WRITE_ERROR
        res.received += len(payload)
        return OK
