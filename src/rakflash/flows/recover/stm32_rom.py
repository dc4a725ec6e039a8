"""Recovery method ``stm32-rom``: a full image through the STM32 ROM bootloader (AN3155).

Needs only the USB-UART adapter and a jumper: BOOT0 held high at reset starts
the chip's own ROM bootloader, which can write any part of the flash, the RUI
bootloader included. The protocol is :mod:`rakflash.protocols.stm32_rom`; the
facts about each module (which pin is BOOT0, which pins carry the ROM's UART)
are catalog data (``rom_access``), the chip's (product ID, commands) too
(``mcu.*.rom``).

What it does, and why:

* **erase** only the pages the image touches, with whichever erase command
  the ROM offers (Get says; never assumed). Never a mass erase: the STM32L1/L0
  ROMs refuse it, and on every chip it would also wipe what lies outside the
  image — on the RAK3172 the owner's LoRaWAN keys above the application.
* **write** in 256-byte blocks aligned to 256, skipping blocks that hold only
  0xFF (the erase left them so) and trailing 0xFF of a block.
* **verify** with Get Checksum where the ROM offers it (one CRC per region:
  a few bytes on the line instead of the image again), else by Read Memory
  read-back of every byte of the image, erased gaps included. Both are
  sound: the checksum is the chip's own CRC-32 over the flash as it reads it,
  compared with the same CRC computed here over the image.
* **start** with Go at the flash base — the chip runs the RUI bootloader (which
  starts the application) without a reset, so BOOT0 may stay high until the
  person has time to release it; the next reset with BOOT0 still high would
  start the ROM again, which the result's warnings say.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable, TypeVar

from ...catalog import Module
from ...errors import (
    ConfirmationNeeded,
    ReadoutProtected,
    RecoveryUnavailable,
    RomGarbled,
    RomNack,
    RomNoHandshake,
    RomSilent,
    VerifyFailed,
    WrongChip,
)
from ...events import Countdown, Note, Phase, Progress, Prompt, Retry, Sink, nowhere
from ...images import ImageInfo
from ...link import Link
from ...protocols.stm32_rom import MAX_BLOCK, RomClient, stm32_crc, timeouts_for
from .base import RecoveryMethod, RecoveryOptions, RecoveryPlan, Session
from .stm32flash import stm32flash_command, stm32flash_note

if TYPE_CHECKING:
    from ..keys import Backup

LATENCY = 0.002     # a USB-UART bridge's turnaround, each way, for estimates
T = TypeVar("T")


ALREADY = 1.0      # seconds the ROM is given to show it already answers (answered: milliseconds)
RESYNC = 2.0       # seconds to sync again after the chip restarted mid-session
RESTARTS = 3       # restarts or lost answers mid-session survived in one step
READS = 5          # reads of one block at most, until two agree or one matches the image
BLOCK_TRIES = 3    # one block written at most this often before the whole write starts over
_LINE_HINT = ("Use a shorter cable or a lower --baud and run the same command again.")


class Stm32RomMethod(RecoveryMethod):
    name = "stm32-rom"
    again = ("Keep BOOT0 held high and run the same command again: the chip's ROM bootloader, "
             "which nothing here can harm, takes the whole image anew.")
    already = "ROM bootloader already answers (BOOT0 is held high)"
    removes_protection = True

    # -- plan ----------------------------------------------------------------------
    def plan(self, image: ImageInfo, module: Module, options: RecoveryOptions) -> RecoveryPlan:
        access = module.rom_access
        if module.mcu.rom is None or "boot0" not in access:
            why = access.get("none") or f"{module.name}'s chip has no STM32 ROM bootloader"
            raise RecoveryUnavailable(f"{why}", hint=f"Use an SWD probe: '{module.swd_command()}'.")
        blocks = write_blocks(image, module)
        pages = erase_pages(image, module)
        size = module.mcu.page_size
        runs = _runs(pages)
        erase = [(module.mcu.flash.start + a * size, module.mcu.flash.start + (b + 1) * size)
                 for a, b in runs]
        sent = sum(len(d) for _, d in blocks)
        img = image.image
        # What is sent is not the image byte for byte: runs of 0xFF at a block's end are not
        # sent (the erase leaves the flash so), and a block is padded to whole 4-byte words.
        covered = sum(max(0, min(s.end, a + len(d)) - max(s.start, a)) for a, d in blocks for s in img.segments)
        skipped, pad = img.size - covered, sent - covered
        how = "".join((
            f", less {_n(skipped)} of 0xFF at block ends (the erase leaves them so)" if skipped else "",
            f", plus {_n(pad)} of 0xFF that pad blocks to whole 4-byte words" if pad else ""))
        steps = [
            "you hold BOOT0 high and reset the module (rakflash waits for the ROM's answer)",
            f"handshake (0x7F) at {options.baud} baud 8E1; Get, Get ID: the chip must be "
            f"{module.mcu.name} (product ID 0x{module.mcu.rom.pid:03X}); check read-out protection",
            "read the bootloader version now on the chip",
            f"erase {len(pages)} page(s) of {size:,} bytes: "
            + ", ".join(f"{a:#010x}-{b:#010x}" for a, b in erase)
            + " (only what the image covers; nothing else is touched)",
            f"write {sent:,} bytes in {len(blocks)} blocks of up to {MAX_BLOCK} bytes: the image's "
            f"{img.size:,} bytes{how}",
            f"verify all {img.size:,} bytes of the image on the chip, the unsent 0xFF too "
            f"(Get Checksum where the ROM offers it, else read-back)",
            f"Go {module.mcu.flash.start:#010x}: {_starts(image)}",
            "identify the module again over its AT port (8N1) and report the versions",
        ]
        guide = rom_guide(module, options)
        est = minimum_seconds(module, blocks, pages, options.baud, LATENCY,
                              verify_bytes=img.size, checksum=False)
        notes = []
        if image.includes_bootloader:
            notes.append("this rewrites the RUI bootloader: an interrupted run leaves the module "
                         "needing this recovery again (the ROM bootloader itself can't be harmed)")
        if module.unconfirmed_note:
            notes.append(module.unconfirmed_note)
        return RecoveryPlan("stm32-rom", module, image, list(img.segments), erase, sent, steps,
                            guide, est, options.baud, notes,
                            details={"pages": len(pages), "blocks": len(blocks),
                                     "rom_pins": dict(access),
                                     "stm32flash": stm32flash_command(module, image, options),
                                     "stm32flash_note": stm32flash_note(module)})

    def port_commands(self, plan: RecoveryPlan, options: RecoveryOptions, port: str | None) -> None:
        """The port in the plan's stm32flash command, once the caller knows it."""
        if plan.details.get("stm32flash") and port:
            plan.details["stm32flash"] = stm32flash_command(plan.module, plan.image, options, port)

    # -- guide + handshake ---------------------------------------------------------
    def answers_now(self, session: Session) -> bool:
        """A chip whose ROM already answers (BOOT0 held since an earlier run) needs nothing from
        the person — asked to reset anyway, they would cut the session short (issue 17.9) — and
        has no firmware running to ask over the AT port. A few 0x7F and a Get: milliseconds when it
        answers, a second when it does not."""
        if "handshake" not in session.state:
            client = self._client(session)
            try:
                session.state["handshake"] = client.handshake(min(ALREADY, session.options.window))
            except RomNoHandshake:
                session.state["handshake"] = None
                session.serial_link.set_parity("N")   # the AT port's settings, to ask the firmware
                session.serial_link.baud = session.state["at_baud"]
        return session.state["handshake"] is not None

    def _client(self, session: Session) -> RomClient:
        link, opts, module = session.serial_link, session.options, session.plan.module
        session.state.setdefault("at_baud", link.baud)
        link.set_parity("E")
        if link.baud != opts.baud:
            link.baud = opts.baud
        if "client" not in session.state:
            session.state["client"] = RomClient(link, timeouts_for(module.mcu, link.baud))
        return session.state["client"]

    def reach(self, session: Session) -> None:
        link, opts, module = session.serial_link, session.options, session.plan.module
        client = self._client(session)
        wired = bool(opts.reset_with)
        message = " ".join(session.plan.guide)
        session.emit(Prompt("hold-boot0-and-reset", message, window=opts.window,
                            info={"pins": dict(module.rom_access), "reset_with": opts.reset_with,
                                  "boot0_with": opts.boot0_with}))
        if opts.reset_with or opts.boot0_with:
            from ..lines import enter_rom
            enter_rom(link, reset=opts.reset_with, boot0=opts.boot0_with)
        try:
            how = client.handshake(opts.window, tick=lambda left: session.emit(
                Countdown(round(left), action="hold-boot0-and-reset")))
        except RomNoHandshake as exc:
            seen = exc.details.get("seen")
            exc.hint = handshake_hint(module, seen if isinstance(seen, str) else "silent", wired)
            raise
        session.state["handshake"] = how

    def _again_after_restart(self, session: Session, phase: str, what: str, step: Callable[[], T]) -> T:
        """Run ``step``; when an answer does not come, comes damaged, or is a NACK (what the ROM
        says to a block damaged on its way), sync again and run the step anew — the end of the
        run only when the ROM no longer answers, or after ``RESTARTS`` tries.

        A fresh ROM ACKs the new handshake: the chip restarted (a reset press with BOOT0 still
        high starts its ROM afresh, which then ignores everything until a new 0x7F), the named
        warning ``chip-restarted``. A ROM still in its session NACKs it (AN3155: 0x7F is then a
        command byte; a byte lost on the line is made up by it): the answer was lost or damaged
        on the line, a ``retry``. Either way Get is asked again before the step, and a step
        redone is whole (an erase and write start over: a page half written can't be written
        again unerased)."""
        client: RomClient = session.state["client"]
        how: str | None
        for again in range(RESTARTS + 1):
            try:
                return step()
            except _Restarted as restart:           # found by the step itself (a block's retry)
                if again == RESTARTS:
                    raise restart.error from None
                how, reason = "ack", restart.error.message
            except (RomSilent, RomGarbled, RomNack) as exc:     # a NACK: a block damaged on its way
                how = None if again == RESTARTS else self._sync_again(client)
                if how is None:
                    raise
                reason = exc.message
            if how == "ack":
                session.warn("chip-restarted",
                             f"the chip restarted during {what} (a reset with BOOT0 still high): "
                             f"rakflash synced with its ROM bootloader again and does {what} again")
            else:
                session.state["resent"] = session.state.get("resent", 0) + 1
                session.emit(Retry(session.state["resent"], f"{reason}; synced with the ROM "
                                   f"bootloader again, {what} again", phase=phase))
        raise AssertionError("the last try raises what stopped it")

    @staticmethod
    def _sync_again(client: RomClient) -> str | None:
        """After silence or a damaged answer: ``"ack"`` (the ROM started afresh), ``"nack"``
        (it is still in its session, in step again), or None (it does not answer)."""
        try:
            return client.handshake(RESYNC)
        except RomNoHandshake:
            return None

    # -- connect -------------------------------------------------------------------
    def connect(self, session: Session) -> None:
        self._again_after_restart(session, "connect", "the identification", lambda: self._connect(session))

    def _connect(self, session: Session) -> None:
        client: RomClient = session.state["client"]
        module = session.plan.module
        info = client.get()
        pid = client.get_id()
        rom = module.mcu.rom
        assert rom is not None          # plan() refuses a chip without an STM32 ROM bootloader
        want = rom.pid
        if pid != want:
            # One reply damaged on its way back must not name another chip: ask again, and believe
            # a product ID that differs only when two answers agree.
            again = client.get_id()
            if again == want:
                pid = want
            elif again != pid:
                raise RomGarbled(f"two Get ID answers disagree (0x{pid:03X}, then 0x{again:03X}): "
                                 f"the line damages what the chip sends",
                                 hint="Use a shorter cable or another USB-UART adapter, check the "
                                      "ground wire, and run the same command again. Nothing was written.")
        if pid != want:
            from ... import catalog
            found = catalog.load().chip_name(pid)
            raise WrongChip(f"the ROM bootloader says this chip is {found} (product ID 0x{pid:03X}), "
                            f"not {module.mcu.name} (0x{want:03X}) as a {module.name} has",
                            pid=pid, expected=want)
        session.emit(Phase("connect", f"{module.mcu.name}, ROM bootloader protocol "
                           f"{info.version_text}", info={"rom": info.to_dict()}))
        probe = _version_address(module)
        if client.readout_protected(probe):
            self._remove_protection(session, client)
        session.bootloader_version_before = read_bootloader_version(client, module)

    def _remove_protection(self, session: Session, client: RomClient) -> None:
        module, opts = session.plan.module, session.options
        if not opts.remove_protection:
            raise ReadoutProtected(
                f"{module.name}'s chip has read-out protection on: its ROM bootloader refused to "
                f"read the flash each of 3 times it was asked. Nothing was changed.",
                hint="Removing it erases the whole chip, the owner's keys and settings included, and "
                     "rakflash can't read them first. If the application still answers, back them up "
                     "over AT first ('rakflash keys backup FILE --port PORT'); then run again with "
                     "--remove-readout-protection if that is what you want (rakflash asks once more).")
        keys = (f"; {session.keys_over_at}." if session.keys_over_at else
                ", and rakflash can't read them first (the chip refuses every read while protected): if "
                "the application still answers, say no and run 'rakflash keys backup FILE --port PORT' first.")
        if not opts.confirm(f"Remove read-out protection from {module.name}? This erases ALL of "
                            f"its flash, LoRaWAN keys and settings included{keys}"):
            raise ConfirmationNeeded("read-out protection not removed: the second confirmation was not given",
                                     hint="Run in a terminal and answer the question, or pass --yes "
                                          "together with --remove-readout-protection.")
        session.emit(Phase("erase", "removing read-out protection: the chip erases itself"))
        f = module.mcu.flash
        session.written.erase_sent([(f.start, f.end)])
        client.readout_unprotect()
        session.written.erase_acknowledged()
        session.erased_whole = "removing read-out protection erased the whole chip"
        # The chip resets; BOOT0 is still high, so its ROM starts again and waits for 0x7F.
        client.handshake(max(5.0, session.options.window))
        client.get()
        session.warn("protection-removed", f"read-out protection removed: {module.name}'s flash "
                     f"was erased whole")

    # -- write ---------------------------------------------------------------------
    def write(self, session: Session) -> None:
        # A restart mid-write leaves pages written that can't be written again unerased:
        # the erase and the whole write start over.
        self._again_after_restart(session, "write", "the erase and write", lambda: self._write(session))

    def _write(self, session: Session) -> None:
        client: RomClient = session.state["client"]
        plan = session.plan
        module = plan.module
        pages = erase_pages(plan.image, module)
        session.emit(Phase("erase", f"erasing {len(pages)} page(s)",
                           info={"ranges": [{"start": a, "end": b} for a, b in plan.erase]}))
        t0 = time.monotonic()
        written = session.written
        written.erase_sent(plan.erase)
        client.erase_pages(pages)
        written.erase_acknowledged()
        blocks = write_blocks(plan.image, module)
        session.emit(Phase("write", f"writing {plan.bytes:,} bytes", info={"bytes": plan.bytes}))
        done = 0
        for address, data in blocks:
            self._write_block(session, client, address, data)
            written.acknowledged(address, address + len(data))
            done += len(data)
            session.emit(Progress(done, plan.bytes, "write"))
        session.transfer_seconds = time.monotonic() - t0

    def _write_block(self, session: Session, client: RomClient, address: int, data: bytes) -> None:
        """Write Memory of one block; when its answer is lost, damaged, or a NACK (the block
        damaged on its way: the ROM writes nothing then), sync again and look at the block: it
        holds the data (the ACK was lost), it is still erased (written again, a ``retry``), or
        anything else — then the erase and the whole write start over (the caller's step)."""
        for tries in range(BLOCK_TRIES):
            try:
                client.write_memory(address, data)
                return
            except (RomSilent, RomGarbled, RomNack) as exc:
                how = self._sync_again(client)
                if how is None or tries == BLOCK_TRIES - 1:
                    raise
                if how == "ack":
                    raise _Restarted(exc) from None
                held = _agreed_read(client, address, len(data), data)
                if held == data:
                    return
                if held != b"\xff" * len(data):
                    raise
                session.state["resent"] = session.state.get("resent", 0) + 1
                session.emit(Retry(session.state["resent"], f"{exc.message}; the block is still "
                                   "erased: written again", phase="write"))

    # -- verify --------------------------------------------------------------------
    def verify(self, session: Session) -> None:
        self._again_after_restart(session, "verify", "the verification", lambda: self._verify(session))

    def _verify(self, session: Session) -> None:
        client: RomClient = session.state["client"]
        plan = session.plan
        t0 = time.monotonic()
        total = sum(s.size for s in plan.segments)
        done = 0
        if client.info and client.info.has_checksum:
            # One CRC per segment: the chip reads its flash, rakflash computes the same
            # CRC over the image; 4-byte alignment is met by including the erased
            # bytes around a segment (the image reads 0xFF there, as the flash does).
            session.verify = "checksum"
            for seg in plan.segments:
                lo, hi = seg.start & ~3, (seg.end + 3) & ~3
                crc = stm32_crc(plan.image.image.read(lo, hi - lo))
                chip_crc = client.checksum(lo, hi - lo)
                if chip_crc != crc:
                    raise VerifyFailed(f"the chip's checksum of {lo:#010x}-{hi:#010x} is {chip_crc:#010x}, "
                                       f"the image's {crc:#010x}: the flash does not hold the image",
                                       hint="Run the same command again (it erases and writes anew).")
                done += seg.size
                session.emit(Progress(done, total, "verify"))
        else:
            session.verify = "read-back"
            for seg in plan.segments:
                for addr in range(seg.start, seg.end, MAX_BLOCK):
                    n = min(MAX_BLOCK, seg.end - addr)
                    want = seg.data[addr - seg.start:addr - seg.start + n]
                    got = self._read_back(session, client, addr, n, want)
                    if got != want:
                        bad = next(i for i in range(n) if got[i] != want[i])
                        raise VerifyFailed(
                            f"the chip holds 0x{got[bad]:02X} at {addr + bad:#010x} where the image "
                            f"has 0x{want[bad]:02X}", address=addr + bad,
                            hint="Run the same command again (it erases and writes anew); if it "
                                 "fails at the same address twice, that flash page may be worn.")
                    done += n
                    session.emit(Progress(done, total, "verify"))
        session.verify_seconds = time.monotonic() - t0
        session.bootloader_version_after = version_after(client, plan)

    @staticmethod
    def _read_back(session: Session, client: RomClient, address: int, n: int, want: bytes) -> bytes:
        """The block at ``address`` as the chip holds it (see :func:`_agreed_read`); a read that
        matched only when read again is a ``retry`` (the line damaged the first)."""
        reads: list[bytes] = []
        got = _agreed_read(client, address, n, want, reads)
        if got is None:
            raise RomGarbled(f"{READS} reads of {address:#010x} all came back different: the line "
                             "damages what the chip sends", hint=_LINE_HINT, step="read-back")
        if got == want and len(reads) > 1:
            session.state["resent"] = session.state.get("resent", 0) + 1
            session.emit(Retry(session.state["resent"], f"the bytes read back at {address:#010x} "
                               "differed and then matched when read again (the line, not the "
                               "flash)", phase="verify"))
        return got

    # -- memory, for the owner's keys ----------------------------------------------
    def memory_access(self, plan: RecoveryPlan) -> str | None:
        return None             # Read Memory, and Erase + Write Memory

    def read_memory(self, session: Session, address: int, size: int, expect: bytes | None = None) -> bytes:
        """Read Memory, 256 bytes at a time, each block counted when two reads agree (or one
        matches ``expect``): it carries no checksum, and a byte damaged on the line must never
        become the copy of the owner's keys that is written back."""
        client: RomClient = session.state["client"]

        def read() -> bytes:
            out = bytearray()
            for a in range(address, address + size, MAX_BLOCK):
                n = min(MAX_BLOCK, address + size - a)
                want = expect[a - address:a - address + n] if expect is not None else None
                got = _agreed_read(client, a, n, want)
                if got is None:
                    raise RomGarbled(f"{READS} reads of {a:#010x} all came back different: the line "
                                     "damages what the chip sends", hint=_LINE_HINT, step="read-keys")
                out += got
            return bytes(out)
        return self._again_after_restart(session, "settings", "the reading of the keys", read)

    def write_memory(self, session: Session, address: int, data: bytes) -> None:
        """Erase the flash pages ``data`` covers (none in the data EEPROM, which Write Memory
        writes byte by byte) and write it in blocks, as the image is written."""
        client: RomClient = session.state["client"]
        mcu = session.plan.module.mcu

        in_flash = mcu.flash.start <= address < mcu.flash.end

        def write() -> None:
            if in_flash:
                first = (address - mcu.flash.start) // mcu.page_size
                last = (address + len(data) - 1 - mcu.flash.start) // mcu.page_size
                client.erase_pages(list(range(first, last + 1)))
            for at in range(0, len(data), MAX_BLOCK):
                block = data[at:at + MAX_BLOCK]
                if in_flash:                # the erase left 0xFF: runs of it need no writing
                    block = block.rstrip(b"\xff")
                if not block:
                    continue
                block += b"\xff" * (-len(block) % 4)
                self._write_block(session, client, address + at, block)
        self._again_after_restart(session, "settings-write", "the writing back of the keys", write)

    # -- start ---------------------------------------------------------------------
    def start(self, session: Session) -> None:
        client: RomClient = session.state["client"]
        module = session.plan.module
        link = session.serial_link
        client.go(module.mcu.flash.start)
        if session.options.boot0_with:
            from ..lines import leave_rom
            leave_rom(link, boot0=session.options.boot0_with)
        else:
            session.warn("release-boot0",
                         f"release BOOT0 ({module.rom_access['boot0']}) now: with it held high, the "
                         f"next reset starts the chip's ROM bootloader again instead of the firmware",
                         pin=module.rom_access["boot0"])
        link.set_parity("N")


# ------------------------------------------------------------------ helpers (pure)

def write_blocks(image: ImageInfo, module: Module) -> list[tuple[int, bytes]]:
    """(address, bytes) blocks to write: 256-byte aligned, all-0xFF blocks skipped,
    trailing 0xFF trimmed (the erase left the flash so), lengths rounded up to 4."""
    img = image.image
    starts = sorted({a - a % MAX_BLOCK for s in img.segments
                     for a in range(s.start - s.start % MAX_BLOCK, s.end, MAX_BLOCK)})
    blocks = []
    for a in starts:
        data = img.read(a, MAX_BLOCK).rstrip(b"\xff")
        if not data:
            continue
        data += b"\xff" * (-len(data) % 4)
        blocks.append((a, data))
    return blocks


def erase_pages(image: ImageInfo, module: Module) -> list[int]:
    """Page numbers (from the flash base) that the image's segments touch."""
    mcu = module.mcu
    pages: set[int] = set()
    for s in image.image.segments:
        first = (s.start - mcu.flash.start) // mcu.page_size
        last = (s.end - 1 - mcu.flash.start) // mcu.page_size
        pages.update(range(first, last + 1))
    return sorted(pages)


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for p in pages:
        if runs and runs[-1][1] == p - 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return runs


def _version_address(module: Module) -> int:
    name = "bootloader-version" if module.has_region("bootloader-version") else "bootloader"
    return module.region(name).start


def version_after(client: RomClient, plan: RecoveryPlan) -> str | None:
    """The bootloader's version on the chip after the verify: where the image covers its version
    region, the image's — the verify just compared every byte of it with the chip's — else read."""
    module = plan.module
    if not module.has_region("bootloader-version"):
        return None
    r = module.region("bootloader-version")
    n = min(MAX_BLOCK, r.size)
    if any(s.start <= r.start and r.start + n <= s.end for s in plan.segments):
        return module.find_bootloader_version(plan.image.image.read(r.start, n))
    return read_bootloader_version(client, module)


class _Restarted(Exception):
    """A step found the chip restarted (its ROM ACKed a new handshake): the step starts over."""

    def __init__(self, error: RomSilent | RomGarbled | RomNack) -> None:
        super().__init__(str(error))
        self.error = error


def _agreed_read(client: RomClient, address: int, n: int, want: bytes | None,
                 reads: list[bytes] | None = None) -> bytes | None:
    """What the chip holds at ``address``: Read Memory carries no checksum, and a byte damaged
    on its way to the host reads as a difference the flash does not have — so a read counts
    when it matches ``want`` or when two reads agree (damage on the line is never the same
    twice). None after ``READS`` reads that all differ."""
    reads = [] if reads is None else reads
    for _ in range(READS):
        got = client.read_memory(address, n)
        agreed = got == want or got in reads
        reads.append(got)
        if agreed:
            return got
    return None


def read_bootloader_version(client: RomClient, module: Module) -> str | None:
    """The RUI bootloader's version string as the flash holds it (None if there is none)."""
    if not module.has_region("bootloader-version"):
        return None
    r = module.region("bootloader-version")
    raw = client.read_memory(r.start, min(MAX_BLOCK, r.size))
    return module.find_bootloader_version(raw)


def minimum_seconds(module: Module, blocks: list[tuple[int, bytes]], pages: list[int], baud: int,
                    latency: float, *, verify_bytes: int, checksum: bool = False,
                    segments: int = 1) -> float:
    """The least time this recovery can take on a line of ``baud`` at 8E1 (11 bits a byte).

    Counts every byte both ways, one turnaround ``latency`` in each direction
    per acknowledged step (AN3155 answers every step before the next may be
    sent), the datasheet's page-erase and programming times, and the
    handshake, Get, Get ID, the protection probe, the version reads and Go.
    """
    bt = 11 / baud
    rt = 2 * latency
    mcu = module.mcu
    assert mcu.rom is not None      # plan() refuses a chip without an STM32 ROM bootloader
    t = 0.0
    # handshake, Get (13 back), Get ID (5 back), protection probe (1 byte read), two version reads
    t += (1 + 1) * bt + rt
    t += (2 + 1 + 1 + 1 + len(mcu.rom.commands) + 1) * bt + rt
    t += (2 + 5) * bt + rt
    t += 3 * ((2 + 5 + 2) * bt + 3 * bt + 3 * rt)
    t += 2 * MAX_BLOCK * bt
    # erase commands (512 pages each at most), then the pages' erase time
    for i in range(0, len(pages), 512):
        n = len(pages[i:i + 512])
        t += (2 + 2 + 2 * n + 1) * bt + 2 * bt + 2 * rt
    t += mcu.erase_seconds(len(pages) * mcu.page_size)
    # writes: command, address, N + data + checksum; three ACKs and round trips each
    for _, data in blocks:
        t += (2 + 5 + 1 + len(data) + 1) * bt + 3 * bt + 3 * rt + mcu.program_seconds(len(data))
    # verify
    if checksum:
        t += segments * ((2 + 5 + 5) * bt + (4 + 5) * bt + 4 * rt)
    else:
        reads = math.ceil(verify_bytes / MAX_BLOCK)
        t += reads * ((2 + 5 + 2) * bt + 3 * bt + 3 * rt) + verify_bytes * bt
    # Go
    t += (2 + 5) * bt + 2 * bt + 2 * rt
    return t


def rom_guide(module: Module, options: RecoveryOptions) -> list[str]:
    """What the person does to start the ROM bootloader on this module, pin by pin."""
    a = module.rom_access
    at_port = ("the same pins as its AT port" if a.get("at_port")
               else "not the AT port: move the adapter's wires")
    uart = "" if a["uart"] in a["uart_pins"] else f" ({a['uart']})"      # named once
    steps = [f"Connect the USB-UART adapter to {module.name} {a['uart_pins']}{uart} — {at_port} "
             f"(TX to RX, RX to TX, and GND)."]
    if a.get("not_on"):
        steps.append(f"Not {a['not_on']}.")
    if options.boot0_with:
        steps.append(f"rakflash drives {_boot0(a)} with {options.boot0_with.upper()}.")
    else:
        steps.append(f"Hold {_boot0(a)} high: connect it to 3.3 V.")
    if options.reset_with:
        steps.append(f"rakflash pulses RESET ({a['reset']}) with {options.reset_with.upper()}.")
    else:
        power = "" if "power it off" in a["reset"] else ", or power it off and on"
        steps.append(f"Then reset the module: {a['reset']} to GND for a moment{power}.")
    steps.append(f"rakflash waits up to {options.window:.0f} s for the ROM bootloader's answer.")
    return steps


def _starts(image: ImageInfo) -> str:
    """What Go at the flash base starts, by what the image rewrites (step 7 of the plan)."""
    if image.includes_bootloader and image.includes_app:
        return "the chip starts the written bootloader, which starts the written application"
    if image.includes_bootloader:
        return ("the chip starts the written bootloader, which starts the application already on "
                "the chip if it finds a valid one, else waits in boot mode")
    return ("the chip starts the RUI bootloader already on it (this image has none, and it is not "
            "touched), which starts the written application")


def _n(count: int) -> str:
    return f"{count:,} byte" + ("" if count == 1 else "s")


def _boot0(a: dict) -> str:
    """The BOOT0 pin, named once ('pin 21 (BOOT0)', not 'BOOT0 (pin 21 (BOOT0))')."""
    return a["boot0"] if "BOOT0" in a["boot0"] else f"BOOT0 ({a['boot0']})"


def handshake_hint(module: Module, seen: str, wired: bool) -> str:
    """The next step when the ROM never answered, by what the line did meanwhile."""
    a = module.rom_access
    if seen == "text":
        return (f"The module answered with text: its firmware runs, so BOOT0 was not high when it "
                f"started. Hold BOOT0 ({a['boot0']}) at 3.3 V, then reset it ({a['reset']}) and run "
                f"the same command again.")
    if seen == "garbage":
        return ("Bytes came back that mean nothing: the firmware runs at another baud rate (BOOT0 not "
                f"high at reset: hold {a['boot0']} at 3.3 V and reset), or the line is noisy.")
    elsewhere = f" (not {a['not_on'].split(',')[0]})" if a.get("not_on") else ""
    if wired:
        return (f"Nothing came back: check that the adapter's lines really reach RESET and BOOT0 "
                f"({a['reset']}, {a['boot0']}) and that TX/RX go to {a['uart_pins']}.")
    return (f"Nothing came back: check the wiring ({a['uart_pins']}{elsewhere}: TX to RX, RX to TX, GND), hold "
            f"BOOT0 ({a['boot0']}) at 3.3 V, reset the module ({a['reset']}) and run the same command "
            f"again within the countdown.")


# ------------------------------------------------------------------ the owner's keys, read through the ROM
# (`rakflash keys show|backup --via stm32-rom`: the ROM guide and handshake of this method, then
# Read Memory of where the firmware keeps them; flows.keys decodes what is read.)

def rom_options(window: float) -> RecoveryOptions:
    """The recovery options the ROM guide reads (no lines wired to RESET/BOOT0 here)."""
    return RecoveryOptions(window=window, reset_with=None, boot0_with=None)


def read_over_rom(link: Link, module: Module, *, window: float = 30.0, emit: Sink = nowhere) -> Backup:
    """The keys of a module whose application may be gone, read through the chip's STM32 ROM
    bootloader: the person holds BOOT0 and resets (a prompt with the pins, and a countdown);
    Get and Get ID check the chip; read-out protection is named; then Read Memory of the config
    block (RUI3) or the data EEPROM (RUI v3), and Go starts the firmware again."""
    from ... import catalog as _catalog
    from ..keys import read_from_memory
    access = module.rom_access
    if module.mcu.rom is None or "boot0" not in access:
        why = access.get("none") or f"{module.name}'s chip has no STM32 ROM bootloader"
        raise RecoveryUnavailable(f"{why}, so its keys can't be read that way",
                                  hint="Read them over AT while its application answers (--via at).")
    at_baud = link.baud
    link.set_parity("E")
    try:
        client = RomClient(link, timeouts_for(module.mcu, link.baud))
        try:
            client.handshake(0.6)                        # BOOT0 already held since an earlier run
            emit(Note(f"{module.name}'s ROM bootloader already answers (BOOT0 is held high)"))
        except RomNoHandshake:
            guide = " ".join(rom_guide(module, rom_options(window)))
            emit(Prompt("hold-boot0-and-reset", guide, window=window, info={"pins": dict(access)}))
            try:
                client.handshake(window, tick=lambda left: emit(
                    Countdown(round(left), action="hold-boot0-and-reset")))
            except RomNoHandshake as exc:
                exc.hint = handshake_hint(module, str(exc.details.get("seen", "silent")), False)
                raise
        client.get()
        pid = client.get_id()
        if pid != module.mcu.rom.pid:
            raise WrongChip(f"the ROM bootloader says this chip is {_catalog.load().chip_name(pid)} (product "
                            f"ID 0x{pid:03X}), not {module.mcu.name} (0x{module.mcu.rom.pid:03X}) as a "
                            f"{module.name} has", pid=pid, expected=module.mcu.rom.pid)
        emit(Phase("connect", f"{module.mcu.name}, ROM bootloader: reading {module.name}'s settings"))
        first = module.region("config").start if module.config_layout else module.mcu.flash.start
        if client.readout_protected(first):
            raise ReadoutProtected(
                f"{module.name}'s chip has read-out protection on: its ROM bootloader refuses to read "
                f"the flash, so the keys in it can't be read. Nothing was changed.",
                hint="Removing the protection erases the whole chip, keys included: there is no way to "
                     "read them first. If the application still answers, read them over AT (--via at).")
        backup = read_from_memory(lambda a, n: rom_read(client, a, n), module, "stm32-rom",
                                  port=link.port_name)
        client.go(module.mcu.flash.start)
        emit(Note(f"release BOOT0 ({access['boot0']}) before the module's next reset: with it held, the "
                  f"chip starts its ROM bootloader again instead of its firmware"))
        return backup
    finally:
        link.discard_input()
        link.set_parity("N")
        if link.baud != at_baud:
            link.baud = at_baud


def rom_read(client, address: int, size: int) -> bytes:
    """Read Memory over a synced :class:`~rakflash.protocols.stm32_rom.RomClient`, in blocks of
    256 bytes (AN3155's most)."""
    return b"".join(client.read_memory(a, min(256, address + size - a))
                    for a in range(address, address + size, 256))


def link_for(port: str, baud: int, trace=None) -> Link:
    """The port at the module's AT settings (8N1); the method switches to 8E1 for the ROM."""
    return Link(port, baud, trace=trace)


__all__ = ["Stm32RomMethod", "write_blocks", "erase_pages", "minimum_seconds", "rom_guide",
           "RomNack"]
