"""YMODEM-1K, both ends: the host's sender and the RUI bootloader's receiver (for the simulator).

Pure protocol logic over a :class:`~rakflash.link.ByteChannel`; no printing,
no sleeping except inside channel reads with a deadline.

Facts (Chuck Forsberg, "XMODEM/YMODEM PROTOCOL REFERENCE", 1988; receiver
behaviour from the RUI3 bootloader sources, DESIGN.md §2):

* SOH starts a 128-byte block, STX a 1024-byte block; then seq, 255-seq, the
  data and a CRC-16/XMODEM, big-endian. EOT ends the file, ACK/NAK answer,
  CAN CAN cancels, ``C`` asks the sender to start in CRC mode.
* Block 0 carries ``name NUL size`` (decimal); an all-NUL block 0 ends the batch.
* The RUI receiver reads with 500 ms timeouts, sends ``C`` on each timeout
  or bad packet, cancels (CAN CAN) after more than 5 errors once started,
  resets the MCU after ~60 idle ``C``s, erases the whole application region
  between block 0 and its ACK, and programs each block before its ACK.

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

SOH, STX, EOT, ACK, NAK, CAN, CRC_REQUEST = 0x01, 0x02, 0x04, 0x06, 0x15, 0x18, 0x43
PAD = 0x1A


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0): check value 0x31C3 over b"123456789"."""
    return binascii.crc_hqx(data, 0)


def make_block(seq: int, payload: bytes, *, size: int | None = None, pad: int = PAD) -> bytes:
    """One framed block: header, seq, ~seq, payload padded to 128 or 1024 bytes, CRC."""
    size = size or (128 if len(payload) <= 128 else 1024)
    body = payload.ljust(size, bytes([pad]))
    return bytes([SOH if size == 128 else STX, seq & 0xFF, 0xFF - (seq & 0xFF)]) + body + \
        crc16(body).to_bytes(2, "big")


def header_block(name: str, size: int) -> bytes:
    """Block 0: ``name NUL size`` padded with NUL."""
    info = name.encode("utf-8", "replace") + b"\0" + str(size).encode() + b"\0"
    if len(info) > 128:
        info = name.encode()[:128 - len(str(size)) - 2] + b"\0" + str(size).encode() + b"\0"
    return make_block(0, info, size=128, pad=0)


# ------------------------------------------------------------------ sender

class YmodemSender:
    """Send one file to a YMODEM receiver, with deadlines and bounded retries.

    ``erase_timeout`` bounds the wait for block 0's ACK (the receiver erases
    the application region first); ``ack_timeout`` every other answer. A block
    is sent at most ``retries + 1`` times; ``max_silent`` attempts in a row
    without any answer end the transfer early as a timeout (a stalled receiver).
    ``restart_markers`` are byte strings the device prints only when it has
    restarted (a bootloader banner): seen among the answers, they end the
    transfer with :class:`~rakflash.errors.DeviceRestarted`. ``byte_time`` (seconds
    per byte on the line) tells a stale ``C`` from a real answer.
    ``progress(sent, total)`` is called after each acknowledged data block.
    """

    def __init__(self, channel: ByteChannel, *, block_size: int = 1024, retries: int = 10,
                 start_timeout: float = 10.0, ack_timeout: float = 5.0, erase_timeout: float = 30.0,
                 max_silent: int = 3, restart_markers: tuple[bytes, ...] = (),
                 byte_time: float = 10 / 115200,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.ch = channel
        self.block_size = block_size
        self.retries = retries
        self.start_timeout = start_timeout
        self.ack_timeout = ack_timeout
        self.erase_timeout = erase_timeout
        self.max_silent = max_silent
        self.byte_time = byte_time
        self.restart_markers = restart_markers
        self._noise = bytearray()
        self.progress = progress
        self.offset = 0

    def send(self, name: str, data: bytes) -> None:
        total = len(data)
        self._wait_for_c(self.start_timeout, "the bootloader never asked for the file (no 'C')")
        self._send_block(header_block(name, total), "block 0", first_timeout=self.erase_timeout,
                         want_c=True)
        seq = 1
        self.offset = 0
        while self.offset < total:
            chunk = data[self.offset:self.offset + self.block_size]
            size = 128 if len(chunk) <= 128 else self.block_size
            self._send_block(make_block(seq, chunk, size=size), f"block {seq} (byte {self.offset:,})")
            self.offset += len(chunk)
            seq += 1
            if self.progress:
                self.progress(self.offset, total)
        self._send_eot()
        # The receiver asks for the next file with 'C'; an empty block 0 ends the batch.
        self._wait_for_c(self.ack_timeout, None)
        self._send_block(make_block(0, b"", size=128, pad=0), "the closing block")

    # -- steps ------------------------------------------------------------
    def _wait_for_c(self, timeout: float, error: str | None) -> None:
        deadline = Deadline(timeout)
        last = 0
        while not deadline.expired:
            b = self.ch.read(1, deadline.remaining())
            if not b:
                break
            if b[0] == CRC_REQUEST:
                return
            if b[0] == CAN and last == CAN:
                raise TransferCancelled("the bootloader cancelled the transfer before it started")
            last = b[0]
        if error:
            raise TransferTimeout(error, hint="Run the same command again; the module stays in "
                                              "its bootloader.")

    def _send_block(self, block: bytes, what: str, *, first_timeout: float | None = None,
                    want_c: bool = False) -> None:
        silent = 0     # attempts in a row that got no answer at all
        line_time = len(block) * self.byte_time
        for attempt in range(self.retries + 1):
            self._drop_stale_input()
            self.ch.write(block)
            timeout = first_timeout if (attempt == 0 and first_timeout) else self.ack_timeout
            answer = self._read_answer(timeout, not_before=time.monotonic() + line_time / 2)
            if answer == ACK:
                if attempt:
                    # A resent block may be acknowledged twice (the first copy was
                    # fine after all); swallow the second ACK so it can't be taken
                    # for the next block's.
                    self._linger(line_time * 1.5 + 0.05)
                if want_c:
                    self._wait_for_c(self.ack_timeout, None)
                return
            if answer == CAN:
                raise TransferCancelled(
                    f"the bootloader cancelled the transfer at {what}",
                    hint="The bootloader refused the data (too large, or too many errors). "
                         "Check the image with 'rakflash inspect', then run the same command again.")
            silent = silent + 1 if answer is None else 0
            if silent >= self.max_silent:
                break      # a receiver that stays silent this long has stalled
        if silent:
            raise TransferTimeout(f"the bootloader stopped answering at {what}",
                                  hint="The module stays in its bootloader: press its reset button "
                                       "and run the same command again.", offset=self.offset)
        raise TooManyRetries(f"{what} was refused {self.retries + 1} times (NAK or damaged answers)",
                             hint="The line is noisy: use a shorter cable or a lower baud rate, "
                                  "then run the same command again.", offset=self.offset)

    def _read_answer(self, timeout: float, not_before: float = 0.0) -> int | None:
        """ACK, NAK, CAN (two in a row), or None for silence / other bytes until the deadline.

        A ``C`` means "bad packet, send again" — unless it arrives before
        ``not_before``, earlier than the block could even have crossed the
        line: then the receiver sent it before our block arrived (its 500 ms
        poll), and taking it as a NAK would duplicate the block.
        """
        deadline = Deadline(timeout)
        last = None
        got_any = False
        while not deadline.expired:
            b = self.ch.read(1, deadline.remaining())
            if not b:
                break
            got_any = True
            c = b[0]
            if c == ACK:
                return ACK
            if c == NAK:
                return NAK
            if c == CAN:
                if last == CAN:
                    return CAN
            elif c == CRC_REQUEST:
                if time.monotonic() >= not_before:
                    return NAK     # the receiver saw a bad packet, or timed out waiting
                continue           # a stale poll from before our block arrived
            else:
                self._note_noise(c)
            last = c
        return NAK if got_any else None

    def _linger(self, seconds: float) -> None:
        deadline = Deadline(seconds)
        while not deadline.expired:
            for c in self.ch.read(64, deadline.remaining()):
                if c not in (ACK, CRC_REQUEST):
                    self._note_noise(c)

    def _drop_stale_input(self) -> None:
        while True:
            stale = self.ch.read(256, 0)
            if not stale:
                return
            for c in stale:
                self._note_noise(c)

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

    def _send_eot(self) -> None:
        for _ in range(self.retries + 1):
            self.ch.write(bytes([EOT]))
            answer = self._read_answer(self.ack_timeout)
            if answer == ACK:
                return
            if answer == CAN:
                raise TransferCancelled("the bootloader cancelled the transfer at the end of the file")
        raise TransferTimeout("the bootloader did not acknowledge the end of the file")

    def abort(self) -> None:
        """Tell the receiver to give up (CAN CAN …)."""
        self.ch.write(bytes([CAN] * 5))


# ------------------------------------------------------------------ receiver (device side)

@dataclass
class ReceiveResult:
    status: str            # ok, cancelled, too-large, idle-reset, aborted
    name: str = ""
    size: int = 0
    received: int = 0


class YmodemReceiver:
    """The RUI bootloader's YMODEM receiver (ST IAP style), for the simulator.

    ``on_start(name, size)`` runs after a valid block 0 (the bootloader erases
    here); ``on_block(offset, data)`` programs each block (trimmed to the
    announced size).
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

    def _packet(self) -> tuple[str, int, bytes]:
        """("block", seq, data) | ("eot"|"can"|"timeout"|"bad", 0, b"")."""
        head = self.ch.read(1, self.read_timeout)
        if not head:
            return "timeout", 0, b""
        h = head[0]
        if h == EOT:
            return "eot", 0, b""
        if h == CAN:
            nxt = self.ch.read(1, self.read_timeout)
            return ("can", 0, b"") if nxt[:1] == bytes([CAN]) else ("bad", 0, b"")
        if h not in (SOH, STX):
            return "bad", 0, b""
        size = 128 if h == SOH else 1024
        rest = self.ch.read(size + 4, self.read_timeout + (size + 4) * 0.0002)
        if len(rest) < size + 4 or rest[0] != 0xFF - rest[1]:
            return "bad", 0, b""
        data = rest[2:2 + size]
        if crc16(data) != int.from_bytes(rest[2 + size:], "big"):
            return "bad", 0, b""
        return "block", rest[0], data

    def receive(self) -> ReceiveResult:
        res = ReceiveResult("idle-reset")
        started = False
        errors = 0
        idle = 0
        expected = 1
        after_eot = False
        self.ch.write(bytes([CRC_REQUEST]))
        while True:
            kind, seq, data = self._packet()
            if kind in ("timeout", "bad"):
                if not started:
                    idle += 1
                    if idle >= self.idle_c_limit:
                        return res
                else:
                    errors += 1
                    if errors > self.max_errors:
                        self.ch.write(bytes([CAN, CAN]))
                        res.status = "cancelled"
                        return res
                if kind == "bad":
                    self._drain()
                self.ch.write(bytes([CRC_REQUEST]))
                continue
            if kind == "can":
                res.status = "aborted"
                return res
            if kind == "eot":
                self.ch.write(bytes([ACK]))
                self.ch.write(bytes([CRC_REQUEST]))
                after_eot = True
                continue
            if seq == 0 and (not started or after_eot):
                name, _, rest = data.partition(b"\0")
                if not name:                                   # the closing empty block
                    self.ch.write(bytes([ACK]))
                    res.status = "ok" if started else "aborted"
                    return res
                try:
                    size = int(rest.split(b"\0", 1)[0].split(b" ", 1)[0] or b"0")
                except ValueError:
                    size = -1
                if size < 0 or size > self.max_size:
                    self.ch.write(bytes([CAN, CAN]))
                    res.status = "too-large"
                    res.size = size
                    return res
                res.name, res.size = name.decode("utf-8", "replace"), size
                self.on_start(res.name, size)
                started = True
                expected = 1
                self.ch.write(bytes([ACK, CRC_REQUEST]))
                continue
            if not started:
                self.ch.write(bytes([CRC_REQUEST]))
                continue
            if seq == (expected - 1) & 0xFF:
                self.ch.write(bytes([ACK]))                 # a repeat of the last block
                continue
            if seq != expected & 0xFF:
                errors += 1
                self.ch.write(bytes([NAK]))
                continue
            keep = max(0, min(len(data), res.size - res.received))
            if keep:
                self.on_block(res.received, data[:keep])
            res.received += keep
            expected += 1
            errors = 0
            self.ch.write(bytes([ACK]))

    def _drain(self) -> None:
        """After a bad packet, skip what is still arriving of it."""
        while self.ch.read(1024, 0.01):
            pass
