"""The STM32 system-memory (ROM) bootloader over a UART (ST AN3155): rakflash's client.

:class:`RomClient`: the handshake, Get / Get Version / Get ID, Read Memory,
Write Memory, Erase or Extended Erase (whichever Get offers), Get Checksum where
offered, Go, and Readout Unprotect; and the protocol's codes and checksums,
which the ROM bootloader of the virtual modules (:mod:`rakflash.sim.stm32_rom`,
the device's side) shares. Pure protocol logic over a
:class:`~rakflash.link.ByteChannel`; no printing, and every read has a deadline.

Facts (ST AN3155 "USART protocol used in the STM32 bootloader"; what
stm32flash's ``stm32.c`` does is cited where it fills a gap the note leaves):

* The line is 8 data bits, even parity, 1 stop bit. After reset the ROM waits
  for 0x7F, measures the baud rate from it (autobaud) and answers ACK 0x79.
  NACK is 0x1F. Another 0x7F later is taken as the first byte of a command,
  so a second one after a finished handshake is answered NACK (stm32flash's
  ``stm32_send_init_seq`` relies on this to recognise a ROM already in sync).
* A command is its code and the code's complement (XOR 0xFF); the ROM answers
  ACK, or NACK for an unknown command, a bad complement or one that read-out
  protection forbids. Addresses are 4 bytes MSB first plus their XOR; byte
  counts are N = count - 1. Every block the host sends ends with the XOR of
  its bytes.
* Get (0x00): ACK, N, the protocol version, N command codes, ACK.
  Get Version (0x01): ACK, version, two option bytes (0 on the USART), ACK.
  Get ID (0x02): ACK, N (=1), PID MSB, PID LSB, ACK.
* Read Memory (0x11): ACK; address → ACK; N and its complement → ACK and N+1
  bytes (up to 256). With read-out protection active the command is NACKed.
* Go (0x21): ACK; address → ACK; the ROM then loads SP from the address and
  jumps to the reset vector after it.
* Write Memory (0x31): ACK; address → ACK; N, N+1 bytes (≤ 256), XOR of N and
  the bytes → ACK once written. stm32flash sends 4-byte-aligned addresses and
  pads the length to a multiple of 4 with 0xFF; so does rakflash.
* Erase (0x43): ACK; N and N+1 one-byte page numbers and their XOR, or 0xFF 0x00
  for a global erase → ACK. Extended Erase (0x44): ACK; N as two bytes MSB
  first, N+1 two-byte page numbers, XOR of all → ACK; 0xFFFF (mass),
  0xFFFE / 0xFFFD (bank 1 / 2) followed by their checksum. A chip offers one
  of the two erase commands, never both; Get says which.
* Readout Unprotect (0x92): ACK; the ROM mass-erases the flash, ACKs again and
  resets the chip. Readout Protect (0x82) and Write (Un)protect (0x63/0x73)
  also end in a system reset.
* Get Checksum (0xA1, newer bootloaders only — offered in Get): ACK; address →
  ACK; length (4 bytes + XOR) → ACK; then ACK and a CRC (4 bytes + XOR) over
  the region: the STM32 CRC unit's CRC-32 (polynomial 0x04C11DB7, initial
  value 0xFFFFFFFF, no reflection, no final XOR) over 32-bit little-endian
  words (stm32flash ``stm32_sw_crc``).
* Some ROMs send 0x00 before the ACK of the handshake (ARMinARM/stm32flash
  issue #3); the host skips 0x00 where it waits for an ACK.
* Waits used by stm32flash (``stm32.c``): mass erase 35 s, 5 s per erased
  page, 1 s per written block. rakflash derives its deadlines from the line
  rate and the MCU's datasheet flash times instead (see :class:`RomTimeouts`),
  with margins, so a dead line is reported in seconds, not minutes.

Hand-written because no maintained Python library speaks AN3155 with
per-read deadlines and named errors; stm32loader is an application with a
fixed 5 s read timeout and blocking prints (and is used as an independent
client in the interop tests).
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from ..errors import RomGarbled, RomNack, RomNoHandshake, RomSilent
from ..link import ByteChannel, Deadline

if TYPE_CHECKING:
    from ..catalog import Mcu

ACK, NACK, SYNC = 0x79, 0x1F, 0x7F

GET, GET_VERSION, GET_ID = 0x00, 0x01, 0x02
READ_MEMORY, GO, WRITE_MEMORY = 0x11, 0x21, 0x31
ERASE, EXTENDED_ERASE = 0x43, 0x44
WRITE_PROTECT, WRITE_UNPROTECT = 0x63, 0x73
READOUT_PROTECT, READOUT_UNPROTECT = 0x82, 0x92
GET_CHECKSUM = 0xA1

COMMAND_NAMES = {
    GET: "Get", GET_VERSION: "Get Version", GET_ID: "Get ID", READ_MEMORY: "Read Memory",
    GO: "Go", WRITE_MEMORY: "Write Memory", ERASE: "Erase", EXTENDED_ERASE: "Extended Erase",
    WRITE_PROTECT: "Write Protect", WRITE_UNPROTECT: "Write Unprotect",
    READOUT_PROTECT: "Readout Protect", READOUT_UNPROTECT: "Readout Unprotect",
    GET_CHECKSUM: "Get Checksum",
}

MASS_ERASE = 0xFFFF          # Extended Erase's special page count
MAX_BLOCK = 256              # Read / Write Memory move at most this many bytes
MAX_EXT_ERASE_PAGES = 512    # stm32flash: some parts (STM32L152) take no more per command

_NACK_HINT = ("The ROM bootloader refused this step. Press the module's reset button (BOOT0 still "
              "held high) and run the same command again; it starts over from the handshake.")
_SILENT_HINT = ("The ROM bootloader stopped answering (a loose wire, the module lost power or was "
                "reset). Check the wiring, press reset with BOOT0 held high and run the same "
                "command again.")
_GARBLED_HINT = ("The answer was neither ACK nor NACK: line noise, or the port is not at 8E1 "
                 "(even parity). Use a shorter cable or a lower --baud and run the same command again.")


def xor(data: Iterable[int], start: int = 0) -> int:
    """The XOR of all bytes: AN3155's checksum."""
    for b in data:
        start ^= b
    return start


def plausible_get(info: RomInfo) -> bool:
    """Whether a Get reply is one a ROM bootloader gives: every command code known (AN3155),
    Get, Get ID and Read Memory among them, none twice. Text from a firmware that floods
    the line does not pass (its 0x79 'y' is no ACK)."""
    cmds = info.commands
    return (len(set(cmds)) == len(cmds) and all(c in COMMAND_NAMES for c in cmds)
            and {GET, GET_ID, READ_MEMORY} <= set(cmds))


def address_frame(address: int) -> bytes:
    """A 4-byte address, MSB first, and its XOR."""
    raw = struct.pack(">I", address)
    return raw + bytes([xor(raw)])


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def stm32_crc(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """The STM32 CRC unit's CRC-32 over 32-bit little-endian words (Get Checksum's value).

    Polynomial 0x04C11DB7, MSB first, init 0xFFFFFFFF, no final XOR; each word
    enters most significant byte first, i.e. the bytes of every 4 are fed in
    reverse order. ``len(data)`` must be a multiple of 4.
    """
    if len(data) % 4:
        raise ValueError("the STM32 CRC works on whole 32-bit words")
    for i in range(0, len(data), 4):
        for b in (data[i + 3], data[i + 2], data[i + 1], data[i]):
            crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ b) & 0xFF]
    return crc


# ------------------------------------------------------------------ host

@dataclass(frozen=True)
class RomTimeouts:
    """Deadlines for the ROM's answers, in seconds.

    ``answer``: an ACK that needs no flash work (a command, an address, a
    read's data); ``write``: a Write Memory block's ACK (its line time plus
    programming); ``erase_page`` / ``mass_erase``: an erase's ACK per page /
    for the whole flash. :func:`timeouts_for` derives them from the line rate
    and the MCU's datasheet flash times.
    """

    answer: float = 0.5
    write: float = 1.0
    erase_page: float = 0.1
    erase_base: float = 1.0
    mass_erase: float = 35.0


def timeouts_for(mcu: Mcu, baud: int, *, slack: float = 1.5) -> RomTimeouts:
    """Deadlines from the line (11 bits a byte at 8E1) and ``mcu``'s datasheet flash timing.

    Three times the datasheet value plus ``slack`` for USB turnarounds and
    scheduling (a busy host can leave a reply unread for a good part of a
    second, so the slack is not cut finer than stm32flash's 1 s per block): a
    healthy chip answers well inside them, a dead line is reported within a
    few seconds.
    """
    bt = 11 / baud
    block_line = (MAX_BLOCK + 8) * bt
    return RomTimeouts(
        answer=slack + MAX_BLOCK * bt * 2,
        write=slack + block_line + 3 * mcu.program_seconds(MAX_BLOCK),
        erase_page=3 * mcu.page_erase_ms / 1000,
        erase_base=1.0 + slack,
        mass_erase=1.0 + slack + 3 * mcu.erase_seconds(mcu.flash.size),
    )


@dataclass
class RomInfo:
    """What the ROM said about itself: Get's version and commands, Get ID's PID."""

    version: int
    commands: tuple[int, ...]
    pid: int | None = None
    option_bytes: tuple[int, int] | None = None

    @property
    def erase_command(self) -> int | None:
        """Erase (0x43) or Extended Erase (0x44), whichever the ROM offers."""
        for c in (EXTENDED_ERASE, ERASE):
            if c in self.commands:
                return c
        return None

    @property
    def has_checksum(self) -> bool:
        return GET_CHECKSUM in self.commands

    @property
    def version_text(self) -> str:
        return f"{self.version >> 4}.{self.version & 0xF}"

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "version_text": self.version_text,
                "commands": [f"0x{c:02X}" for c in self.commands],
                "pid": self.pid, "erase_command": self.erase_command,
                "checksum": self.has_checksum}


class RomClient:
    """Talk to an STM32 ROM bootloader over ``channel`` (opened at 8E1).

    Every failure is a named error that says at which step it happened:
    :class:`~rakflash.errors.RomNack` (a refusal), :class:`~rakflash.errors.RomSilent`
    (no answer by the deadline), :class:`~rakflash.errors.RomGarbled` (a byte
    that is neither ACK nor NACK).
    """

    def __init__(self, channel: ByteChannel, timeouts: RomTimeouts | None = None) -> None:
        self.ch = channel
        self.t = timeouts or RomTimeouts()
        self.info: RomInfo | None = None

    # -- the handshake ---------------------------------------------------------
    def handshake(self, window: float, *, interval: float = 0.25,
                  tick: Callable[[float], None] | None = None) -> str:
        """Send 0x7F until the ROM answers; returns ``"ack"`` (a fresh handshake)
        or ``"nack"`` (the ROM was already in sync: an earlier session).

        A sync is a 0x7F answered by ACK or NACK *and then* a well-formed Get
        reply (:meth:`get`, checked by :func:`plausible_get`): a firmware that
        prints without pause sends 0x79 ('y') and 0x1F among its text, and
        those bytes alone prove nothing. Every wait here ends by ``window``.

        ``tick(seconds_left)`` is called about once a second. At the end of
        ``window`` raises :class:`~rakflash.errors.RomNoHandshake` saying what
        the line did meanwhile (``seen``: ``silent``, ``text`` or ``garbage``).
        """
        deadline = Deadline(window)
        heard = bytearray()
        next_tick = 0.0
        sent = 0
        while True:
            if tick and time.monotonic() >= next_tick:
                tick(deadline.remaining())
                next_tick = time.monotonic() + 1.0
            self.ch.write(bytes([SYNC]))
            sent += 1
            wait = Deadline(min(interval, max(deadline.remaining(), 0.01)))
            answer = None
            while not wait.expired:
                got = self.ch.read(1, wait.remaining())
                if not got:
                    break
                if got[0] in (ACK, NACK):
                    answer = "ack" if got[0] == ACK else "nack"
                    break
                if got[0] != 0x00:
                    heard += got
            if answer is not None:
                # Answers to earlier 0x7Fs may still be on their way: only the first has none.
                if self._confirm_sync(deadline, settle=sent > 1 or bool(heard)):
                    return answer
            if deadline.expired:
                break
        from ..at import looks_like_text
        seen = "silent" if not heard else ("text" if looks_like_text(bytes(heard)) else "garbage")
        raise RomNoHandshake(f"no answer to the ROM bootloader's handshake (0x7F) within {window:.0f} s",
                             seen=seen, heard=bytes(heard[-64:]).decode("latin-1"))

    def _confirm_sync(self, deadline: Deadline, *, settle: bool = True) -> bool:
        """After an ACK or NACK to 0x7F: is a ROM bootloader really there? It is when Get gets a
        well-formed reply."""
        if settle:
            self._settle(deadline)
        if deadline.expired:
            return False
        saved, self.info = self.info, None
        try:
            # A ROM answers Get in milliseconds; a flood cut short by a reset falls silent here.
            info = self.get(timeout=min(0.5, self.t.answer, max(deadline.remaining(), 0.05)))
        except (RomNack, RomSilent, RomGarbled):
            self.info = saved
            return False
        if plausible_get(info):
            return True
        self.info = saved
        return False

    def _settle(self, deadline: Deadline | None = None) -> None:
        """Drop answers to 0x7Fs still on their way (each gets a NACK or nothing): read until
        the line is quiet for a moment, and never past ``deadline`` nor half a second (a
        firmware that floods the line is never quiet)."""
        quiet = 0.05          # a late answer follows its 0x7F within a turnaround or two
        limit = Deadline(min(0.5, deadline.remaining()) if deadline else 0.5)
        while not limit.expired and self.ch.read(64, min(quiet, max(limit.remaining(), 0.001))):
            pass

    # -- low-level steps -------------------------------------------------------
    def _ack(self, step: str, timeout: float | None = None) -> None:
        deadline = Deadline(self.t.answer if timeout is None else timeout)
        while True:
            got = self.ch.read(1, deadline.remaining())
            if not got:
                raise RomSilent(f"the ROM bootloader did not answer {step} within "
                                f"{deadline.seconds:.1f} s", hint=_SILENT_HINT, step=step)
            b = got[0]
            if b == ACK:
                return
            if b == NACK:
                raise RomNack(f"the ROM bootloader refused {step} (NACK)", hint=_NACK_HINT, step=step)
            if b == 0x00:
                continue        # some ROMs send 0x00 before an ACK (see the module docstring)
            raise RomGarbled(f"the ROM bootloader answered {step} with 0x{b:02X}, neither ACK nor NACK",
                             hint=_GARBLED_HINT, step=step, byte=b)

    def _read(self, n: int, step: str, timeout: float | None = None) -> bytes:
        data = self.ch.read(n, self.t.answer if timeout is None else timeout)
        if len(data) < n:
            raise RomSilent(f"the ROM bootloader sent {len(data)} of {n} bytes for {step}",
                            hint=_SILENT_HINT, step=step)
        return data

    def command(self, code: int) -> None:
        """Send a command code and its complement; wait for the ACK."""
        if self.info is not None and code not in self.info.commands:
            raise RomNack(f"this ROM bootloader does not offer {COMMAND_NAMES.get(code, hex(code))} "
                          f"(0x{code:02X})", hint="Nothing was changed by this step.", step="command")
        self.ch.write(bytes([code, code ^ 0xFF]))
        self._ack(f"the {COMMAND_NAMES.get(code, f'0x{code:02X}')} command")

    # -- information -----------------------------------------------------------
    def get(self, timeout: float | None = None) -> RomInfo:
        """Get: the protocol version and the commands this ROM offers."""
        self.ch.write(bytes([GET, GET ^ 0xFF]))
        self._ack("the Get command", timeout)
        n = self._read(1, "Get's length", timeout)[0]
        if not 1 <= n <= len(COMMAND_NAMES):
            raise RomGarbled(f"Get's reply says {n + 1} bytes follow: no ROM bootloader offers that many "
                             "commands", hint=_GARBLED_HINT, step="Get", byte=n)
        body = self._read(n + 1, "Get's reply", timeout)
        self._ack("the end of Get's reply", timeout)
        self.info = RomInfo(version=body[0], commands=tuple(body[1:]))
        return self.info

    def get_version(self) -> tuple[int, int, int]:
        """Get Version: (version, option byte 1, option byte 2)."""
        self.command(GET_VERSION)
        v, o1, o2 = self._read(3, "Get Version's reply")
        self._ack("the end of Get Version's reply")
        if self.info is not None:
            self.info.option_bytes = (o1, o2)
        return v, o1, o2

    def get_id(self) -> int:
        """Get ID: the chip's product ID (e.g. 0x429)."""
        self.command(GET_ID)
        n = self._read(1, "Get ID's length")[0]
        raw = self._read(n + 1, "Get ID's reply")
        self._ack("the end of Get ID's reply")
        pid = int.from_bytes(raw[:2], "big")
        if self.info is not None:
            self.info.pid = pid
        return pid

    # -- memory ----------------------------------------------------------------
    def read_memory(self, address: int, size: int) -> bytes:
        """Read Memory: ``size`` (1..256) bytes from ``address``."""
        if not 1 <= size <= MAX_BLOCK:
            raise ValueError("Read Memory moves 1 to 256 bytes")
        self.command(READ_MEMORY)
        self.ch.write(address_frame(address))
        self._ack(f"the read address 0x{address:08X}")
        n = size - 1
        self.ch.write(bytes([n, n ^ 0xFF]))
        self._ack(f"the read length at 0x{address:08X}")
        return self._read(size, f"the data read at 0x{address:08X}",
                          self.t.answer + size * 0.0002)

    def write_memory(self, address: int, data: bytes) -> None:
        """Write Memory: up to 256 bytes at a 4-byte-aligned ``address`` (padded to 4 with 0xFF)."""
        if not 1 <= len(data) <= MAX_BLOCK or address % 4:
            raise ValueError("Write Memory writes 1 to 256 bytes at a 4-byte-aligned address")
        data = data + b"\xff" * (-len(data) % 4)
        self.command(WRITE_MEMORY)
        self.ch.write(address_frame(address))
        self._ack(f"the write address 0x{address:08X}")
        n = len(data) - 1
        self.ch.write(bytes([n]) + data + bytes([xor(data, n)]))
        self._ack(f"the block written at 0x{address:08X}", self.t.write)

    def erase_pages(self, pages: list[int]) -> None:
        """Erase these flash pages with whichever erase command the ROM offers."""
        if not pages:
            return
        cmd = self._erase_command()
        if cmd == ERASE:
            if max(pages) > 0xFF:
                raise ValueError("Erase (0x43) addresses pages 0-255 only")
            for i in range(0, len(pages), 255):
                part = pages[i:i + 255]
                self.command(ERASE)
                n = len(part) - 1
                self.ch.write(bytes([n, *part, xor(part, n)]))
                self._ack(f"the erase of pages {part[0]}-{part[-1]}", self._erase_wait(len(part)))
            return
        for i in range(0, len(pages), MAX_EXT_ERASE_PAGES):
            part = pages[i:i + MAX_EXT_ERASE_PAGES]
            self.command(EXTENDED_ERASE)
            body = struct.pack(">H", len(part) - 1) + b"".join(struct.pack(">H", p) for p in part)
            self.ch.write(body + bytes([xor(body)]))
            self._ack(f"the erase of pages {part[0]}-{part[-1]}", self._erase_wait(len(part)))

    def mass_erase(self) -> None:
        """Erase the whole flash (NACKed by chips without a mass erase, e.g. STM32L1/L0)."""
        cmd = self._erase_command()
        self.command(cmd)
        self.ch.write(b"\xff\xff\x00" if cmd == EXTENDED_ERASE else b"\xff\x00")
        self._ack("the mass erase", self.t.mass_erase)

    def _erase_command(self) -> int:
        info = self.info or self.get()
        cmd = info.erase_command
        if cmd is None:
            raise RomNack("this ROM bootloader offers no erase command", hint=_NACK_HINT, step="erase")
        return cmd

    def _erase_wait(self, pages: int) -> float:
        return self.t.erase_base + pages * self.t.erase_page

    def checksum(self, address: int, size: int) -> int:
        """Get Checksum: the STM32 CRC (see :func:`stm32_crc`) of ``size`` bytes at ``address``."""
        if address % 4 or size % 4:
            raise ValueError("Get Checksum works on whole 32-bit words")
        self.command(GET_CHECKSUM)
        self.ch.write(address_frame(address))
        self._ack(f"the checksum address 0x{address:08X}")
        self.ch.write(address_frame(size))
        self._ack(f"the checksum length {size}")
        # The ROM reads the whole region before it answers: allow its read time generously.
        self._ack("the checksum computation", self.t.answer + size * 1e-6)
        raw = self._read(5, "the checksum")
        if xor(raw) != 0:
            raise RomGarbled("the checksum the ROM bootloader sent does not match its own XOR",
                             hint=_GARBLED_HINT, step="checksum")
        return int.from_bytes(raw[:4], "big")

    def go(self, address: int) -> None:
        """Go: start the code whose vector table is at ``address``."""
        self.command(GO)
        self.ch.write(address_frame(address))
        self._ack(f"the Go address 0x{address:08X}")

    def readout_unprotect(self, timeout: float | None = None) -> None:
        """Readout Unprotect: the chip mass-erases itself, ACKs, and resets (a new handshake follows)."""
        self.command(READOUT_UNPROTECT)
        self._ack("the read-out protection removal (the chip erases itself)",
                  self.t.mass_erase if timeout is None else timeout)
        self.info = None

    def readout_protected(self, address: int, *, tries: int = 3) -> bool:
        """Whether read-out protection is active: a Read Memory command is then NACKed.

        Read-out protection leaves only Get, Get Version, Get ID and the
        unprotect command allowed (AN3155). The probe reads one byte at
        ``address`` and changes nothing. One NACK proves nothing — the ROM
        NACKs a command whose complement was damaged on the line just the same
        — and the claim leads toward removing the protection, which erases the
        whole chip: so the command is asked ``tries`` times, and protection is
        claimed only when every one is refused; one byte read says there is none.
        """
        refused = 0
        last: RomNack | None = None
        for _ in range(tries):
            self.ch.write(bytes([READ_MEMORY, READ_MEMORY ^ 0xFF]))
            try:
                self._ack("the Read Memory command")
            except RomNack:
                refused += 1
                continue
            try:
                self.ch.write(address_frame(address))
                self._ack(f"the read address 0x{address:08X}")
                self.ch.write(bytes([0, 0xFF]))
                self._ack("the read length")
            except RomNack as exc:      # a damaged address or length: the ROM waits for a command again
                last = exc
                continue
            self._read(1, "the probe byte")
            return False
        if refused == tries:
            return True
        raise last or RomNack("the ROM bootloader refused the read-out protection probe",
                              hint=_NACK_HINT, step="probe")
