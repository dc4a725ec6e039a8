"""Adafruit's legacy serial DFU (nRF5 SDK 11 style), both ends: rakflash's client and the bootloader.

What the Arduino RAK4631's Adafruit nRF52 bootloader speaks on its CDC port
(239A:0029 / 239A:002A). Facts (docs/protocols.md, "Adafruit legacy DFU"):
adafruit/Adafruit_nRF52_nrfutil ``nordicsemi/dfu/dfu_transport_serial.py``,
``util.py`` (``slip_parts_to_four_bytes``), ``crc16.py``, ``dfu.py``.

* Each packet is a SLIP frame with an END on both sides around: a 4-byte header,
  the payload, and a CRC-16/CCITT (init 0xFFFF) of header + payload, low byte first.
* Header: byte 0 = seq | ack << 3 | integrity-check << 6 | reliable << 7 (seq
  1..7 then 0, ack = seq + 1 mod 8); byte 1 = packet type 14 | (length & 0xF) << 4;
  byte 2 = length >> 4; byte 3 = the two's complement of the sum of bytes 0–2.
* The bootloader answers every packet with an acknowledgement frame: a bare
  header whose ack field (bits 3–5 of byte 0) names the next sequence number it
  expects. A packet sent again after a lost acknowledgement has the old sequence
  number and is acknowledged again, not processed twice.
* Payloads start with a u32 type: 3 START (u32 mode: 1 SoftDevice, 2 bootloader,
  4 application; then u32 SoftDevice, bootloader and application sizes), 1 INIT
  (the init packet, then two zero bytes), 4 DATA (≤ 512 bytes of image), 5 STOP.
* After START's acknowledgement the bootloader erases what the image needs (up to
  ~90 ms a 4 KiB page on nRF52840); after STOP it checks the image CRC, activates
  it and resets into it.
* A session outlives its host (adafruit/Adafruit_nRF52_Bootloader
  ``lib/sdk/components/libraries/hci/hci_transport.c``, ``lib/sdk11/…/dfu_single_bank.c``,
  ``dfu_transport_serial.c``, ``src/main.c``): the transport expects sequence
  number 1 when the bootloader starts and then the next one of its session, and
  answers a packet with any other number by an acknowledgement naming the one it
  expects, without processing it; and a START while a session is under way is an
  error (``dfu_start_pkt_handle``: ``NRF_ERROR_INVALID_STATE``) whose handler
  (``app_error_fault_handler``) resets the chip. So a re-run after an interrupted
  session sees its START answered with another number (:class:`EarlierSession`),
  and a START with that number restarts the bootloader: with its sketch partly
  erased it comes back in its bootloader, session-free, on a new USB port.

Hand-written: adafruit-nrfutil is a command, not a library (it opens its own
port, sleeps fixed times, and its send never retries — the "No data received on
serial port" people report); nothing serves the bootloader's side.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Protocol

from ..dfu_package import crc16_ccitt
from ..errors import TooManyRetries, TransferError, TransferTimeout
from ..link import ByteChannel, Deadline
from . import slip
from .slip import read_some

PACKET_TYPE = 14
INIT, START, DATA, STOP = 1, 3, 4, 5
TYPE_NAMES = {INIT: "INIT", START: "START", DATA: "DATA", STOP: "STOP"}
MODE_SOFTDEVICE, MODE_BOOTLOADER, MODE_SD_BL, MODE_APPLICATION = 1, 2, 3, 4
MODES = {"SOFTDEVICE": MODE_SOFTDEVICE, "BOOTLOADER": MODE_BOOTLOADER,
         "SOFTDEVICE_BOOTLOADER": MODE_SD_BL, "APPLICATION": MODE_APPLICATION}
MAX_DATA = 512


def header(seq: int, length: int, *, reliable: bool = True, integrity: bool = True,
           ptype: int = PACKET_TYPE, ack: int | None = None) -> bytes:
    """The 4-byte packet header (the third byte of a length above 4095 can't be told)."""
    ack = (seq + 1) % 8 if ack is None else ack
    b0 = (seq & 7) | (ack & 7) << 3 | int(integrity) << 6 | int(reliable) << 7
    b1 = ptype & 0xF | (length & 0xF) << 4
    b2 = (length >> 4) & 0xFF
    return bytes([b0, b1, b2, (-(b0 + b1 + b2)) & 0xFF])


def encode_packet(seq: int, payload: bytes) -> bytes:
    """A reliable packet as the host sends it, SLIP-framed."""
    body = header(seq, len(payload)) + payload
    return slip.encode(body + struct.pack("<H", crc16_ccitt(body)), leading_end=True)


def encode_ack(ack: int) -> bytes:
    """The bootloader's acknowledgement: a bare header naming the next sequence number it expects."""
    return slip.encode(header(0, 0, reliable=False, integrity=False, ptype=0, ack=ack), leading_end=True)


@dataclass
class Frame:
    seq: int
    ack: int
    reliable: bool
    integrity: bool
    ptype: int
    payload: bytes


def decode_frame(body: bytes) -> Frame | None:
    """A decoded SLIP frame's packet; None when its header or CRC is damaged."""
    if len(body) < 4 or (sum(body[:4]) & 0xFF) != 0:
        return None
    b0, b1, b2 = body[0], body[1], body[2]
    length = (b1 >> 4) | (b2 << 4)
    integrity = bool(b0 & 0x40)
    end = 4 + length + (2 if integrity else 0)
    if len(body) != end:
        return None
    if integrity and struct.unpack_from("<H", body, 4 + length)[0] != crc16_ccitt(body[:4 + length]):
        return None
    return Frame(b0 & 7, (b0 >> 3) & 7, bool(b0 & 0x80), integrity, b1 & 0xF, body[4:4 + length])


def start_payload(mode: int, sd_size: int = 0, bl_size: int = 0, app_size: int = 0) -> bytes:
    return struct.pack("<IIIII", START, mode, sd_size, bl_size, app_size)


def init_payload(init_packet: bytes) -> bytes:
    return struct.pack("<I", INIT) + init_packet + b"\0\0"


def data_payload(chunk: bytes) -> bytes:
    return struct.pack("<I", DATA) + chunk


STOP_PAYLOAD = struct.pack("<I", STOP)


def erase_seconds(size: int, page: int = 4096, page_erase: float = 0.0897) -> float:
    """How long the bootloader may erase after START (adafruit-nrfutil's estimate: (pages + 1) × 89.7 ms)."""
    return max(0.5, (size // page + 1) * page_erase)


# ------------------------------------------------------------------ host side

class EarlierSession(TransferError):
    """The bootloader still holds an earlier, interrupted session: it answered this session's
    first packet by naming packet ``expected`` of that one."""

    name = "dfu-session-in-progress"
    hint = ("Press the module's reset button once: it restarts in its bootloader (its sketch was "
            "partly erased) on a new port — or runs its sketch, if that was left whole; run "
            "'rakflash ports' to see which port it is on now, and run the same command again with "
            "--port set to it.")

    def __init__(self, expected: int, *, restarted: bool = False) -> None:
        super().__init__(f"the bootloader still held an earlier, interrupted update (it waited for "
                         f"packet {expected} of that session and took no new one), and it did not come "
                         f"back after rakflash restarted it" if restarted else
                         f"the bootloader still holds an earlier, interrupted update: it waits for "
                         f"packet {expected} of that session and takes no new one", expected=expected)
        self.expected = expected


class LegacyDfuClient:
    """rakflash's legacy DFU client: START, INIT, DATA…, STOP, each acknowledged.

    Unlike adafruit-nrfutil it waits for the acknowledgement it expects and
    sends a packet again (same sequence number) when it is lost or damaged, at
    most ``retries`` times. No fixed sleeps: INIT is sent at once and its
    acknowledgement may take the erase time.
    """

    def __init__(self, channel: ByteChannel, *, ack_timeout: float = 1.0, retries: int = 4,
                 page_erase: float = 0.0897, page_write: float = 0.1,
                 progress: Callable[[int, int], None] | None = None,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.ch = channel
        self.decoder = slip.Decoder()
        self.ack_timeout = ack_timeout
        self.retries = retries
        self.page_erase = page_erase
        self.page_write = page_write
        self.progress = progress
        self.on_retry = on_retry
        self.seq = 0
        self.retried = 0
        self.acknowledged: list[str] = []     # what the bootloader acknowledged, in order
        self._frames: list[bytes] = []

    def send(self, init_packet: bytes, firmware: bytes, *, mode: int = MODE_APPLICATION,
             sd_size: int = 0, bl_size: int = 0) -> None:
        app_size = len(firmware) if mode == MODE_APPLICATION else 0
        if mode == MODE_SOFTDEVICE:
            sd_size = len(firmware)
        elif mode == MODE_BOOTLOADER:
            bl_size = len(firmware)
        total = len(firmware)
        self.packet(start_payload(mode, sd_size, bl_size, app_size), "START")
        erase = erase_seconds(sd_size + bl_size + app_size, page_erase=self.page_erase)
        self.packet(init_payload(init_packet), "INIT", timeout=self.ack_timeout + 1.5 * erase)
        sent = 0
        if self.progress:
            self.progress(0, total)
        while sent < total:
            chunk = firmware[sent:sent + MAX_DATA]
            self.packet(data_payload(chunk), f"DATA at byte {sent:,}", offset=sent,
                        timeout=self.ack_timeout + self.page_write)
            sent += len(chunk)
            if self.progress:
                self.progress(sent, total)
        self.packet(STOP_PAYLOAD, "STOP", timeout=self.ack_timeout + self.page_write)

    def packet(self, payload: bytes, what: str, *, timeout: float | None = None,
               offset: int | None = None) -> None:
        """Send one packet until the bootloader acknowledges it.

        The session's first packet answered every time by one other number (never a
        damaged one) is :class:`EarlierSession`: the bootloader waits for that packet
        of an interrupted session.
        """
        first = self.seq == 0
        self.seq = (self.seq + 1) % 8
        want = (self.seq + 1) % 8
        frame = encode_packet(self.seq, payload)
        acks: list[int | None] = []
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                if self.on_retry:
                    self.on_retry(f"{what} sent again")
            self.ch.write(frame)
            ack = self._await_ack(self.ack_timeout if timeout is None else timeout, want)
            if ack == want:
                self.acknowledged.append(what)
                return
            acks.append(ack)
            # (the number of this packet itself is a fresh bootloader's answer to a damaged one)
            if first and len(acks) >= 2 and acks[-1] not in (None, self.seq) and acks[-1] == acks[-2]:
                raise EarlierSession(acks[-1])
        answered = any(a is not None for a in acks)
        if not answered:
            raise TransferTimeout(
                f"the bootloader did not acknowledge {what}",
                hint="The module stays in its bootloader: run the same command again (the "
                     "bootloader starts over from START). If nothing answers, double-press reset.",
                offset=offset)
        raise TooManyRetries(f"{what} was not acknowledged after {self.retries + 1} tries",
                             hint="Use a shorter cable or another USB port, then run the same command again.",
                             offset=offset)

    def restart_bootloader(self, expected: int, *, timeout: float = 1.0) -> None:
        """End an earlier session the only way the bootloader offers: a START numbered as it
        expects, which it acknowledges and then takes as an error that resets the chip (see the
        module's notes). The acknowledgement may be lost in the reset, and the port goes away:
        the caller follows the module to its new port."""
        from ..errors import RakflashError
        self.seq = expected % 8
        try:
            self.ch.write(encode_packet(self.seq, start_payload(MODE_APPLICATION, app_size=4)))
            self._await_ack(timeout, (self.seq + 1) % 8)
        except RakflashError:
            pass              # the port went away under the read: the reset it was meant to cause

    def _await_ack(self, timeout: float, want: int) -> int | None:
        """The ack number of the next acknowledgement frame; the wanted one ends the wait early."""
        deadline = Deadline(timeout)
        seen = None
        while True:
            while self._frames:
                f = decode_frame(self._frames.pop(0))
                if f is not None and not f.reliable:
                    seen = f.ack
                    if seen == want:
                        return seen
            if deadline.expired:
                return seen
            got = read_some(self.ch, deadline.remaining() if seen is None else min(0.05, deadline.remaining()))
            if got:
                self._frames += self.decoder.feed(got)
            elif seen is not None and not self._frames:
                return seen     # a wrong ack and nothing more: resend now


# ------------------------------------------------------------------ device side (simulator)

class LegacyBackend(Protocol):
    def start(self, mode: int, sd_size: int, bl_size: int, app_size: int) -> bool:
        """Accept (and erase for) an update; False refuses it."""

    def init(self, init_packet: bytes) -> bool:
        """Check the init packet; False refuses the update."""

    def data(self, offset: int, chunk: bytes) -> None:
        """Image bytes at ``offset``."""

    def stop(self, size: int) -> bool:
        """The image is complete: check it and activate it; False when it is refused."""


class LegacyDfuTarget:
    """The bootloader's side: acknowledges every good packet, drives the backend.

    ``serve()`` returns ``"activated"`` after a STOP whose image was accepted,
    ``"refused"`` after a STOP for an update the backend refused, ``"reset"`` after a
    START while a session was under way (the bootloader's error handler resets the
    chip), or ``"idle"``.
    """

    def __init__(self, channel: ByteChannel, backend: LegacyBackend, *, idle_timeout: float = 3600.0,
                 on_text: Callable[[bytes], None] | None = None) -> None:
        self.ch = channel
        self.backend = backend
        self.idle_timeout = idle_timeout
        self.decoder = slip.Decoder(max_frame=4 + 4095 + 2)
        self.expected: int = 1               # the next sequence number (the transport starts at 1)
        self.accepted = True
        self.received = 0
        self.started = False
        self.init_done = False

    def serve(self) -> str:
        idle = Deadline(self.idle_timeout)
        while not idle.expired:
            got = read_some(self.ch, min(0.5, idle.remaining()))
            if not got:
                continue
            idle = Deadline(self.idle_timeout)
            for body in self.decoder.feed(got):
                outcome = self.handle(body)
                if outcome:
                    return outcome
        return "idle"

    def handle(self, body: bytes) -> str | None:
        f = decode_frame(body)
        if f is None or not f.reliable or f.ptype != PACKET_TYPE:
            if self.expected is not None:
                self.ch.write(encode_ack(self.expected))   # "still waiting for this one"
            return None
        if self.expected is not None and f.seq != self.expected:
            self.ch.write(encode_ack(self.expected))       # a repeat (or a gap): not processed
            return None
        self.expected = (f.seq + 1) % 8
        self.ch.write(encode_ack(self.expected))
        return self._process(f.payload)

    def _process(self, payload: bytes) -> str | None:
        if len(payload) < 4:
            return None
        kind = struct.unpack_from("<I", payload)[0]
        body = payload[4:]
        if kind == START and len(body) >= 16:
            if self.started:
                return "reset"          # NRF_ERROR_INVALID_STATE → app_error_fault_handler → reset
            mode, sd, bl, app = struct.unpack_from("<IIII", body)
            self.received, self.started, self.init_done = 0, True, False
            self.accepted = self.backend.start(mode, sd, bl, app)
        elif kind == INIT:
            # dfu_init_pkt_complete() outside the state after START (no session, or one already
            # past its init packet) is NRF_ERROR_INVALID_STATE: the error handler resets the chip.
            if not self.started or self.init_done:
                return "reset"
            self.init_done = True
            init = body[:-2] if body.endswith(b"\0\0") else body
            self.accepted = self.accepted and self.backend.init(init)
        elif kind == DATA and self.started:
            if self.accepted:
                self.backend.data(self.received, body)
            self.received += len(body)
        elif kind == STOP and self.started:
            self.started = self.init_done = False
            if self.accepted and self.backend.stop(self.received):
                return "activated"
            return "refused"
        return None
