"""YMODEM-1K, both ends: the host's sender and the RUI bootloader's receiver (for the simulator).

Pure protocol logic over a :class:`~rakflash.link.ByteChannel`; no printing,
no sleeping except inside channel reads, and every read has a deadline.

Facts (Chuck Forsberg, "XMODEM/YMODEM PROTOCOL REFERENCE", 1988; receiver
behaviour from the RUI3 bootloader sources as summarised in DESIGN.md §2,
"RUI3 on STM32WLE5", and docs/protocols.md):

* SOH starts a 128-byte block, STX a 1024-byte block; then seq, 255-seq, the
  data and a CRC-16/XMODEM, big-endian. EOT ends the file, ACK/NAK answer,
  CAN CAN cancels, ``C`` asks the sender to start (or resend) in CRC mode.
* Block 0 carries ``name NUL size`` (size in decimal, optionally followed by
  space-separated fields); an all-NUL block 0 ends the batch.
* The RUI receiver (ST IAP style) reads with 500 ms timeouts, sends ``C`` on
  each timeout or bad packet, cancels (CAN CAN) after more than 5 errors once
  started, resets the MCU after ~60 idle ``C``s, erases the whole application
  region between block 0 and its ACK, and programs each block before its ACK.
  Its ``ReceivePacket`` reads a packet's first byte with that timeout, then all
  the rest (seq, complement, data, CRC) in one ``HAL_UART_Receive`` call with
  the same timeout, which counts from the start of the call (ST's IAP
  ``ymodem.c``; STM32 HAL ``HAL_UART_Receive``): a block whose rest takes longer
  on the wire never arrives whole. 1028 bytes take 1.07 s at 9600 baud and
  0.54 s at 19200, so there only 128-byte blocks (132 bytes) get through —
  :func:`block_size_for` picks the size.

Hand-written because the Python YMODEM packages on PyPI don't give per-read
deadlines, bounded retries mapped to named errors, or a device-side receiver
with the RUI bootloader's quirks.
"""

from __future__ import annotations

import binascii
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import DeviceRestarted, TooManyRetries, TransferCancelled, TransferTimeout
from ..link import ByteChannel, Deadline

# Control bytes (Forsberg 1988).
SOH, STX, EOT, ACK, NAK, CAN, CRC_REQUEST = 0x01, 0x02, 0x04, 0x06, 0x15, 0x18, 0x43
PAD = 0x1A          # CP/M EOF: the padding of the last data block (the vendor uploader's choice too)
ABORT = bytes([CAN]) * 5   # ends a session from either side (two CANs suffice; more survive a lost byte)

# What _read_answer reports besides ACK / NAK / CAN.
_SILENT = None       # nothing at all arrived by the deadline
_GARBLED = -1        # only bytes that mean nothing arrived
_POLL = -2           # a 'C' once our block could have arrived: the receiver wants it again

# Why something was sent again, by the answer to the attempt before (for on_retry).
_WHY = {NAK: "NAK", _POLL: "the bootloader asked for it again", _GARBLED: "damaged answer",
        _SILENT: "no answer"}

_RETRY_HINT = ("The line is noisy: use a shorter cable and check the GND wire, "
               "then run the same command again.")
_CANCEL_HINT = ("The bootloader gave up: too many damaged blocks (a noisy line: use a shorter "
                "cable and check the GND wire) or an image it won't take (check that it is built for "
                "this module and fits it). Then run the same command again.")
_SILENT_HINT = ("The module stays in its bootloader: press its reset button "
                "and run the same command again.")


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0): check value 0x31C3 over b"123456789"."""
    return binascii.crc_hqx(data, 0)


def make_block(seq: int, payload: bytes, *, size: int | None = None, pad: int = PAD) -> bytes:
    """One framed block: SOH/STX, seq, 255-seq, payload padded to ``size`` (128 or 1024), CRC.

    Without ``size`` a payload of up to 128 bytes gets a 128-byte block, else 1024.
    """
    size = size or (128 if len(payload) <= 128 else 1024)
    if size not in (128, 1024) or len(payload) > size:
        raise ValueError(f"a YMODEM block holds 128 or 1024 bytes, not {len(payload)} in {size}")
    body = payload.ljust(size, bytes([pad]))
    seq &= 0xFF
    return bytes([SOH if size == 128 else STX, seq, 0xFF - seq]) + body + crc16(body).to_bytes(2, "big")


def block_line_seconds(size: int, baud: int) -> float:
    """Seconds the rest of a block (after its first byte: seq, complement, data, CRC) takes on the wire."""
    return (size + 4) * 10 / baud


def block_size_for(baud: int, receiver_timeout: float | None, *, margin: float = 0.7) -> int | None:
    """The block size that reaches a receiver which must get a block's rest within
    ``receiver_timeout`` seconds: 1024 where it crosses the line in ``margin`` of that
    time, else 128; None when not even a 128-byte block can (no timeout: 1024)."""
    if receiver_timeout is None:
        return 1024
    for size in (1024, 128):
        if block_line_seconds(size, baud) <= margin * receiver_timeout:
            return size
    return None


def header_block(name: str, size: int) -> bytes:
    """Block 0: ``name NUL size NUL`` padded with NUL (the name is cut to fit 128 bytes)."""
    size_field = str(size).encode("ascii")
    room = 128 - len(size_field) - 2
    raw = name.encode("utf-8", "replace")[:room]
    return make_block(0, raw + b"\0" + size_field + b"\0", size=128, pad=0)


def closing_block() -> bytes:
    """The empty block 0 that ends a YMODEM batch."""
    return make_block(0, b"", size=128, pad=0)


# ------------------------------------------------------------------ sender

class YmodemSender:
    """Send one file to a YMODEM receiver (YMODEM-1K batch of one), with deadlines and bounded retries.

    * ``start_timeout``: how long to wait for the receiver's first ``C``.
    * ``erase_timeout``: how long each attempt at block 0 waits for its ACK (the
      RUI receiver erases the whole application region first).
    * ``ack_timeout``: how long every other answer may take.
    * ``retries``: a block is resent at most this many times (NAK, ``C``, garbled
      answer or silence), then :class:`~rakflash.errors.TooManyRetries`.
    * ``max_silent``: attempts in a row with no answer at all after which the
      receiver is taken for dead (:class:`~rakflash.errors.TransferTimeout`)
      without using up every retry; ``None`` allows ``retries + 1``.
    * ``restart_markers``: byte strings only a restarted device prints (its
      bootloader banner); seen among the answers they end the transfer with
      :class:`~rakflash.errors.DeviceRestarted`.
    * ``byte_time``: seconds per byte on the line, to tell a stale ``C`` (sent
      before our block could have arrived) from a real request to resend.
    * ``st_iap``: the receiver is ST IAP style (the RUI bootloaders): it NAKs
      only a wrong sequence number, so a NAK to a block resent after a lost ACK
      means the block was taken. Generic receivers (lrzsz) NAK on timeouts
      too, so this is off by default.
    * ``progress(sent, total)`` is called after each acknowledged data block.
    * ``on_retry(reason)`` is called each time something is sent again, with why.
    * ``on_started()`` is called once the receiver acknowledged block 0 (the RUI
      receiver has erased the application region by then: data blocks follow).

    ``offset`` holds the byte offset of the block being sent (for error reports).
    """

    def __init__(self, channel: ByteChannel, *, block_size: int = 1024, retries: int = 10,
                 start_timeout: float = 10.0, ack_timeout: float = 5.0, erase_timeout: float = 30.0,
                 max_silent: int | None = 3, restart_markers: tuple[bytes, ...] = (),
                 byte_time: float = 10 / 115200, st_iap: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 on_retry: Callable[[str], None] | None = None,
                 on_started: Callable[[], None] | None = None) -> None:
        if block_size not in (128, 1024):
            raise ValueError("block_size must be 128 or 1024")
        self.ch = channel
        self.block_size = block_size
        self.retries = retries
        self.start_timeout = start_timeout
        self.ack_timeout = ack_timeout
        self.erase_timeout = erase_timeout
        self.max_silent = max_silent
        self.restart_markers = restart_markers
        self.byte_time = byte_time
        self.st_iap = st_iap
        self.progress = progress
        self.on_retry = on_retry or (lambda reason: None)
        self.on_started = on_started or (lambda: None)
        self.offset = 0
        self.closing_unanswered = False   # the end-of-batch block got no answer (see send)
        self._noise = bytearray()

    # -- the session ----------------------------------------------------------
    def send(self, name: str, data: bytes, *, started: bool = False) -> None:
        """Send ``data`` as file ``name``; return once the receiver acknowledged the end of the batch.

        ``started``: the caller already saw the receiver's first ``C`` (don't wait for another).
        """
        total = len(data)
        self.offset = 0
        if not started and not self._await_c(self.start_timeout):
            raise TransferTimeout("the bootloader never asked for the file (no 'C' received)",
                                  hint="Run the same command again; the module stays in its bootloader.",
                                  offset=0)
        # Block 0's ACK comes only after the receiver erased the application region.
        self._send_block(header_block(name, total), "the file header, block 0",
                         timeout=self.erase_timeout, then_c=True)
        self.on_started()
        seq = 1
        while self.offset < total:
            chunk = data[self.offset:self.offset + self.block_size]
            size = 128 if len(chunk) <= 128 else self.block_size
            self._send_block(make_block(seq, chunk, size=size), f"data block {seq}")
            self.offset += len(chunk)
            seq += 1
            if self.progress:
                self.progress(self.offset, total)
        self._send_eot()
        # The receiver asks for the next file with 'C'; some never do, so wait
        # only briefly (the RUI receiver's 500 ms poll fits) and send anyway.
        self._await_c(min(self.ack_timeout, 1.0))
        try:
            self._send_block(closing_block(), "the closing block", retries=min(self.retries, 2))
        except (TransferTimeout, TooManyRetries):
            # The closing block carries no data and the file was acknowledged
            # with its EOT. A receiver that then stays silent (lrzsz's rb does,
            # now and then, on a pty; a RUI bootloader that already started the
            # application — also when its ACK was damaged on the way back, after
            # which the application answers the repeats) has the file: note it,
            # don't fail. Whoever needs more (the update flow) checks the result
            # itself: the new version answering.
            self.closing_unanswered = True

    # -- steps ------------------------------------------------------------------
    def _await_c(self, timeout: float) -> bool:
        """Wait for a ``C``, skipping noise; CAN CAN cancels. False at the deadline."""
        deadline = Deadline(timeout)
        last = None
        while not deadline.expired:
            got = self.ch.read(1, deadline.remaining())
            if not got:
                return False
            c = got[0]
            if c == CRC_REQUEST:
                return True
            if c == CAN and last == CAN:
                raise TransferCancelled(f"the bootloader cancelled the transfer at byte offset {self.offset}",
                                        hint=_CANCEL_HINT, offset=self.offset)
            if c not in (ACK, NAK, CAN):
                self._note_noise(c)
            last = c
        return False

    def _send_block(self, block: bytes, what: str, *, timeout: float | None = None,
                    then_c: bool = False, retries: int | None = None) -> None:
        """Write ``block`` until it is ACKed; ``then_c``: also wait for the ``C`` that follows."""
        retries = self.retries if retries is None else retries
        line_time = len(block) * self.byte_time
        silent = 0          # attempts in a row without any answer
        answer: int | None = None
        for attempt in range(retries + 1):
            late_ack = self._drop_stale_input()
            if attempt and late_ack:
                # The previous attempt's ACK came just after we stopped waiting:
                # the block arrived; sending it again would only make a duplicate.
                answer = ACK
            else:
                if attempt:
                    self.on_retry(f"{what} sent again ({_WHY.get(answer, 'no answer')})")
                # A 'C' cannot answer this block before the block crossed the line.
                not_before = time.monotonic() + 0.9 * line_time
                self.ch.write(block)
                answer = self._read_answer(timeout or self.ack_timeout, not_before=not_before)
            if self.st_iap and answer == NAK and attempt:
                # An ST IAP receiver asks for a damaged block with 'C' and NAKs only a
                # wrong sequence number (DESIGN.md §2): a NAK to a block sent again
                # means it already took that block — its ACK was lost or damaged on
                # the way back (then the receiver's idle 'C' may have come first and
                # looked like a request to resend). Move on.
                answer = ACK
            if answer == ACK:
                saw_c = False
                if attempt:
                    # Both copies may have arrived and both be ACKed: swallow the
                    # second ACK so it is not taken for the next block's.
                    saw_c = self._linger(1.5 * line_time + 0.05)
                if then_c and not saw_c:
                    self._await_c(self.ack_timeout)
                return
            if answer == CAN:
                raise TransferCancelled(f"the bootloader cancelled the transfer at {what}, "
                                        f"byte offset {self.offset}", hint=_CANCEL_HINT, offset=self.offset)
            silent = silent + 1 if answer is _SILENT else 0
            if self.max_silent and silent >= self.max_silent:
                break
        if silent:
            raise TransferTimeout(f"the device stopped answering at {what}, byte offset {self.offset}",
                                  hint=_SILENT_HINT, offset=self.offset)
        raise TooManyRetries(f"{what}, byte offset {self.offset}, was refused {retries + 1} times "
                             f"(NAK or damaged answers)", hint=_RETRY_HINT, offset=self.offset)

    def _send_eot(self) -> None:
        """EOT until ACKed (some receivers NAK the first EOT to be sure it was no line noise)."""
        silent = 0
        answer = None
        for attempt in range(self.retries + 1):
            self._drop_stale_input()
            if attempt:
                self.on_retry(f"the end of the file (EOT) sent again ({_WHY.get(answer, 'no answer')})")
            self.ch.write(bytes([EOT]))
            answer = self._read_answer(self.ack_timeout)
            if answer == ACK:
                return
            if answer == CAN:
                raise TransferCancelled("the bootloader cancelled the transfer at the end of the file",
                                        hint=_CANCEL_HINT, offset=self.offset)
            silent = silent + 1 if answer is _SILENT else 0
            if self.max_silent and silent >= self.max_silent:
                break
        if silent:
            raise TransferTimeout(f"the device stopped answering at the end of the file, byte offset "
                                  f"{self.offset}", hint=_SILENT_HINT, offset=self.offset)
        raise TooManyRetries("the bootloader did not acknowledge the end of the file",
                             hint=_RETRY_HINT, offset=self.offset)

    def _read_answer(self, timeout: float, not_before: float = 0.0) -> int | None:
        """ACK, NAK, CAN (two in a row), ``_POLL`` for a ``C`` after ``not_before``; at the
        deadline ``_GARBLED`` if only meaningless bytes came, else ``_SILENT``.

        A ``C`` before ``not_before`` is the receiver's idle poll, sent before our
        block reached it; taking it for a NAK would duplicate the block.
        Garbled bytes don't end the wait early: the real answer may still follow.
        """
        deadline = Deadline(timeout)
        last = None
        got_any = False
        while not deadline.expired:
            got = self.ch.read(1, deadline.remaining())
            if not got:
                break
            got_any = True
            c = got[0]
            if c in (ACK, NAK):
                return c
            if c == CAN:
                if last == CAN:
                    return CAN
            elif c == CRC_REQUEST:
                if time.monotonic() >= not_before:
                    return _POLL
            else:
                self._note_noise(c)
            last = c
        return _GARBLED if got_any else _SILENT

    def _linger(self, seconds: float) -> bool:
        """Swallow duplicate ACKs and ``C``s for a moment; True if a ``C`` came."""
        deadline = Deadline(seconds)
        saw_c = False
        last = None
        while not deadline.expired:
            got = self.ch.read(64, deadline.remaining())
            if not got:
                break
            for c in got:
                if c == CRC_REQUEST:
                    saw_c = True
                elif c == CAN and last == CAN:
                    raise TransferCancelled(f"the bootloader cancelled the transfer at byte offset "
                                            f"{self.offset}", hint=_CANCEL_HINT, offset=self.offset)
                elif c not in (ACK, CAN):
                    self._note_noise(c)
                last = c
        return saw_c

    def _drop_stale_input(self) -> bool:
        """Drop what arrived since the last answer; True if it held an ACK.

        Bounded: a device that floods the line can't keep us here. CAN CAN in
        the stale bytes still cancels.
        """
        saw_ack = False
        last = None
        for _ in range(16):
            stale = self.ch.read(4096, 0)
            if not stale:
                break
            for c in stale:
                if c == ACK:
                    saw_ack = True
                elif c == CAN and last == CAN:
                    raise TransferCancelled(f"the bootloader cancelled the transfer at byte offset "
                                            f"{self.offset}", hint=_CANCEL_HINT, offset=self.offset)
                elif c not in (CRC_REQUEST, NAK, CAN):
                    self._note_noise(c)
                last = c
        return saw_ack

    def _note_noise(self, c: int) -> None:
        """Keep a tail of non-protocol bytes and look for a restart marker in it."""
        if not self.restart_markers:
            return
        self._noise.append(c)
        del self._noise[:-128]
        for marker in self.restart_markers:
            if marker in self._noise:
                self._noise.clear()
                raise DeviceRestarted(f"the module restarted during the transfer, after "
                                      f"{self.offset:,} bytes", offset=self.offset)


# ------------------------------------------------------------------ receiver (device side)

@dataclass
class ReceiveResult:
    """How a receive session ended.

    ``status``: ``ok``, ``cancelled`` (too many errors), ``too-large``,
    ``idle-reset`` (no sender came), ``aborted`` (the sender cancelled).
    """

    status: str
    name: str = ""
    size: int = 0
    received: int = 0


class YmodemReceiver:
    """The RUI bootloader's YMODEM receiver (ST IAP style, DESIGN.md §2), for the simulator.

    ``on_start(name, size)`` runs after a valid block 0, before its ACK (the
    bootloader erases there, which may take a while); ``on_block(offset,
    data)`` programs each data block whole (its padding too, as ST IAP does),
    before its ACK. ``received`` counts the image bytes, up to the announced size.
    """

    def __init__(self, channel: ByteChannel, *, max_size: int, read_timeout: float = 0.5,
                 max_errors: int = 5, idle_c_limit: int = 60,
                 on_start: Callable[[str, int], None] | None = None,
                 on_block: Callable[[int, bytes], None] | None = None) -> None:
        self.ch = channel
        self.max_size = max_size
        self.read_timeout = read_timeout
        self.max_errors = max_errors
        self.idle_c_limit = idle_c_limit
        self.on_start = on_start or (lambda name, size: None)
        self.on_block = on_block or (lambda offset, data: None)

    def receive(self) -> ReceiveResult:
        """Serve one session: poll with ``C`` until a sender comes, take the file, end on the empty block 0."""
        res = ReceiveResult("idle-reset")
        started = False      # a valid block 0 was accepted
        errors = 0           # consecutive timeouts / bad packets since then
        polls = 0            # 'C's sent while no session runs
        expected = 1         # next data block's seq
        written = 0          # bytes programmed, padding included
        self._send(CRC_REQUEST)
        polls += 1
        while True:
            kind, seq, data = self._packet()
            if kind in ("timeout", "bad"):
                if kind == "bad":
                    self._drain()
                if started:
                    errors += 1
                    if errors > self.max_errors:
                        self._send(CAN, CAN)
                        res.status = "cancelled"
                        return res
                elif polls >= self.idle_c_limit:
                    return res                      # the real MCU resets here
                else:
                    polls += 1
                self._send(CRC_REQUEST)
                continue
            errors = 0
            if kind == "can":
                res.status = "aborted"
                return res
            if kind == "eot":
                self._send(ACK, CRC_REQUEST)        # ACK, then ask for the next file
                expected = 0                        # the next block is a block 0
                continue
            if seq == 0 and (not started or expected == 0):
                name, _, rest = data.partition(b"\0")
                if not name:                        # the empty block 0: end of the batch
                    self._send(ACK)
                    res.status = "ok" if started else "aborted"
                    return res
                size = _parse_size(rest)
                if size is None or size > self.max_size:
                    self._send(CAN, CAN)
                    res.status, res.name, res.size = "too-large", name.decode("utf-8", "replace"), size or 0
                    return res
                res.name, res.size, res.received = name.decode("utf-8", "replace"), size, 0
                written = 0
                self.on_start(res.name, size)
                started, expected = True, 1
                self._send(ACK, CRC_REQUEST)
                continue
            if not started:
                # A data block before any header: keep asking for block 0.
                if polls >= self.idle_c_limit:
                    return res
                polls += 1
                self._send(CRC_REQUEST)
                continue
            if seq != expected & 0xFF:
                # Any other sequence number, a repeat of the last block included,
                # is NAKed and not written (ST IAP; DESIGN.md §2).
                self._send(NAK)
                continue
            # Blocks are written whole, padding included (ST IAP), within the
            # space announced for the image's region.
            whole = data[:max(0, self.max_size - written)]
            if whole:
                self.on_block(written, whole)
            written += len(data)
            res.received += max(0, min(len(data), res.size - res.received))
            expected += 1
            self._send(ACK)

    # -- helpers ------------------------------------------------------------------
    def _send(self, *codes: int) -> None:
        self.ch.write(bytes(codes))

    def _packet(self) -> tuple[str, int, bytes]:
        """Read one packet: ("block", seq, data) or ("eot" | "can" | "timeout" | "bad", 0, b"")."""
        head = self.ch.read(1, self.read_timeout)
        if not head:
            return "timeout", 0, b""
        h = head[0]
        if h == EOT:
            return "eot", 0, b""
        if h == CAN:
            nxt = self.ch.read(1, self.read_timeout)
            return ("can", 0, b"") if nxt == bytes([CAN]) else ("bad", 0, b"")
        if h not in (SOH, STX):
            return "bad", 0, b""
        size = 128 if h == SOH else 1024
        # The rest of the packet in one read with the same timeout, as ST IAP's
        # ReceivePacket does (HAL_UART_Receive's timeout covers the whole call).
        rest = self.ch.read(size + 4, self.read_timeout)
        if len(rest) < size + 4 or rest[0] != 0xFF - rest[1]:
            return "bad", 0, b""
        data = rest[2:2 + size]
        if crc16(data) != int.from_bytes(rest[2 + size:], "big"):
            return "bad", 0, b""
        return "block", rest[0], data

    def _drain(self) -> None:
        """After a bad packet, skip what is still arriving of it (bounded, even under a flood)."""
        deadline = Deadline(max(2 * self.read_timeout, 0.2))
        while not deadline.expired and self.ch.read(1100, 0.01):
            pass


def _parse_size(fields: bytes) -> int | None:
    """The decimal size at the start of block 0's second field (more fields may follow after a space)."""
    text = fields.split(b"\0", 1)[0].split(b" ", 1)[0]
    if not text:
        return 0
    try:
        size = int(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return size if size >= 0 else None
