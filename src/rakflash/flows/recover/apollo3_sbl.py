"""Recovery method ``apollo3-sbl``: a full image through the Apollo3 secure bootloader's wired update.

The RAK11720's way back without a probe. Ambiq's secure bootloader (SBL) lives
below RUI's bootloader and can't be harmed by anything written over the UART;
when INFO0's override pin — the module's BOOT pin — is held at reset, it takes
a *wired update* on the AT port (:mod:`rakflash.protocols.apollo3_sbl`).

What it does, and why:

* **plan**: the image's bytes become wired-update blocks, one per stretch of
  flash (RUI bootloader at 0xC000, application at 0x14000, the bootloader's
  version page …), each written *in place* at its own address (options 0: no
  OTA), split where the vendor tools split (0x70000 bytes). A prepared blob
  (``create_cust_wireupdate_blob.py``, e.g. RAK's ``bootloader_apollo3_ota.bin``)
  is checked and sent as it is, its OTA install registered at 0xF8000 as RAK's
  "Burn Bootloader" does (the vendor script's default, 0xFE000, is RUI's
  boot-flag page). The SBL's own region below 0xC000 is never written.
* **guide**: the person holds BOOT and resets the module; rakflash sends HELLO
  every quarter second through the whole countdown — a reset that comes after
  the first HELLO (the vendor script sends one, 2 s after it starts) still lands.
  Whatever answers instead is recognised and named: RUI's bootloader
  (``<BOOT MODE>``), the application (AT answers, or a flood), nothing, garbage.
* **write**: UPDATE + DATA per block with a deadline per message (the last one
  waits for the SBL's flash write too), CRC errors and lost ACKs resent (DATA
  carries its offset, so nothing is written twice); a failure or Ctrl-C sends
  ABORT, so the SBL drops the half-received block and the re-run starts clean.
* **verify**: the SBL checks every block's CRC-32 before it writes it, and
  ACKs only what it wrote; the wired update has no read command, so that is the
  verification (``verify`` = ``sbl-crc``). The framework then asks the new firmware.
* **start**: BOOT released (the person, or ``--boot0-with``), RESET (POI). If
  BOOT is still held the SBL answers again and the person is told; if RUI's
  bootloader keeps the module (its boot-request flag was set) and an
  application was written, ``at+run`` starts it.
"""

from __future__ import annotations

import time

from ... import apollo3_wired
from ...at import looks_like_text
from ...catalog import Module
from ...errors import BootEntryFailed, DeviceRejected, RakflashError, TouchesBootloader
from ...events import Countdown, Note, Phase, Progress, Prompt, Retry
from ...images import ImageInfo, Segment
from ...link import Deadline, Link
from ...protocols import apollo3_sbl as sbl
from .base import RecoveryMethod, RecoveryOptions, RecoveryPlan, Session

HELLO_EVERY = 0.25        # seconds between HELLOs while waiting for the person's reset
ALREADY = 1.0             # seconds a secure bootloader that already listens gets to answer one HELLO
OTA_DESCRIPTOR = 0xF8000  # where RAK's Burn Bootloader puts it (platform.txt: -o 0xF8000)
LATENCY = 0.002           # a USB-UART bridge's turnaround, each way, for estimates


class Apollo3SblMethod(RecoveryMethod):
    name = "apollo3-sbl"
    again = ("Keep BOOT held and run the same command again: the chip's secure bootloader, which "
             "nothing here can harm, takes the whole image anew.")
    already = "secure bootloader already answers (BOOT is held)"

    # -- plan ----------------------------------------------------------------------
    def plan(self, image: ImageInfo, module: Module, options: RecoveryOptions) -> RecoveryPlan:
        img = image.image
        sbl_end = module.region("secure-bootloader").end if module.has_region("secure-bootloader") else 0
        low = [s for s in img.segments if s.start < sbl_end]
        if low:
            raise TouchesBootloader(
                f"{img.path} has bytes at {low[0].start:#x}-{min(low[0].end, sbl_end):#x}, inside the "
                f"chip's own secure bootloader (below {sbl_end:#x}), which its wired update can't "
                f"write and rakflash never does",
                hint=f"Use RAK's {module.name} firmware .hex: it starts at {sbl_end:#x}.")
        prepared = bool(img.wired_blocks)
        blocks = list(reversed(img.wired_blocks)) if img.wired_blocks else build_blocks(img.segments, module)
        ota = any(b.header.ota for b in blocks)
        sent = sum(len(b.raw) for b in blocks)
        data = sum(b.header.size for b in blocks)
        pad = sent - data - apollo3_wired.WU_HEADER_SIZE * len(blocks)
        sent_said = (f"{sent:,} bytes to send: the image's {data:,} bytes in {len(blocks)} "
                     f"block{'s' if len(blocks) != 1 else ''}, each with its {apollo3_wired.WU_HEADER_SIZE}-byte "
                     f"wired-update header" + (f", and {pad:,} bytes padding them to whole 4-byte words"
                                               if pad else ""))
        a = module.rom_access
        steps = [
            "you hold BOOT and reset the module; rakflash sends HELLO every "
            f"{HELLO_EVERY:g} s at {options.baud} baud until the secure bootloader answers with "
            "its STATUS (version, max storage, state)",
        ]
        if ota:
            steps.append(f"OTADESC {OTA_DESCRIPTOR:#x}: where the secure bootloader records the OTA "
                         "install (as RAK's Burn Bootloader does)")
        for b in blocks:
            steps.append(f"UPDATE + DATA: {b.describe()}, CRC-32 checked by the secure bootloader "
                         "before it writes")
        steps += ["you release BOOT; RESET (POI): the chip starts the written firmware"
                  + (", after the secure bootloader installs the OTA image" if ota else ""),
                  "identify the module again over its AT port and report the versions"]
        guide = sbl_guide(module, options)
        notes = []
        if image.includes_bootloader:
            notes.append("this rewrites RUI's bootloader; the secure bootloader below it can't be "
                         "touched, so an interrupted run is simply run again")
        if prepared:
            notes.append(f"{img.path} is a prepared wired-update blob: sent as it is, last block "
                         "first, as RAK's uart_wired_update.py sends it")
        if module.inferred:
            notes.append(f"not confirmed on hardware: {'; '.join(module.inferred)}")
        est = minimum_seconds(module, blocks, options.baud, LATENCY, ota=ota)
        return RecoveryPlan(
            "apollo3-sbl", module, image, list(img.segments), erase_ranges(blocks, module), sent,
            steps, guide, est, options.baud, notes,
            details={"blocks": [{"load_address": b.header.load_address, "size": b.header.size,
                                 "image_type": b.header.type_name, "ota": b.header.ota}
                                for b in blocks],
                     "ota_descriptor": OTA_DESCRIPTOR if ota else None,
                     "boot_pin": dict(a), "bytes_said": sent_said})

    # -- guide: hold BOOT, reset, HELLO until STATUS --------------------------------
    def answers_now(self, session: Session) -> bool:
        """The secure bootloader already listening (BOOT held since an earlier run): one HELLO
        tells. Then nothing is asked of the person — a reset they were told to press would
        land mid-update (as issue 17.9 found on the STM32 ROM)."""
        if "status" not in session.state:
            link, opts = session.serial_link, session.options
            session.state.setdefault("at_baud", link.baud)
            link.set_parity("N")
            if link.baud != opts.baud:
                link.baud = opts.baud
            link.discard_input()
            got = sbl.say_hello(link, min(ALREADY, opts.window))
            session.state["status"] = got if isinstance(got, sbl.Status) else None
            if session.state["status"] is None:
                link.baud = session.state["at_baud"]
        return session.state["status"] is not None

    def reach(self, session: Session) -> None:
        link, opts, module = session.serial_link, session.options, session.plan.module
        link.set_parity("N")
        if link.baud != opts.baud:
            link.baud = opts.baud
        session.emit(Prompt("hold-boot-and-reset", " ".join(session.plan.guide), window=opts.window,
                            info={"pins": dict(module.rom_access), "reset_with": opts.reset_with,
                                  "boot0_with": opts.boot0_with}))
        if opts.reset_with or opts.boot0_with:
            from ..lines import enter_rom
            enter_rom(link, reset=opts.reset_with, boot0=opts.boot0_with)
        watch = Watcher(module)
        status = wait_for_sbl(link, opts.window, watch,
                              tick=lambda left: session.emit(Countdown(round(left), "hold-boot-and-reset")),
                              warn=session.warn)
        if status is None:
            raise entry_failure(link, module, watch, opts, session.state["at_baud"])
        session.state["status"] = status

    # -- connect ---------------------------------------------------------------------
    def connect(self, session: Session) -> None:
        status: sbl.Status = session.state["status"]
        link = session.serial_link
        blocks = self._blocks(session)
        said = (f"secure bootloader version {status.version:#x}, max storage {status.max_storage:,} "
                f"bytes, state {status.state:#x}")
        session.emit(Phase("connect", said, info={"sbl": status.to_dict()}))
        session.emit(Note(f"the {said} answered"))
        biggest = max(len(b.raw) for b in blocks)
        if status.max_storage and biggest > status.max_storage:
            raise DeviceRejected(f"the secure bootloader takes at most {status.max_storage:,} bytes a "
                                 f"block; the largest block is {biggest:,}",
                                 hint="Report it with a --trace file: rakflash splits blocks at "
                                      f"{apollo3_wired.MAX_SPLIT:#x} bytes as RAK's tools do.")
        client = sbl.SblClient(link, timing=sbl.Timing(byte_time=10 / link.baud),
                               on_retry=lambda why: session.emit(Retry(client.retried, why)))
        session.state["client"] = client
        if any(b.header.ota for b in blocks):
            client.otadesc(OTA_DESCRIPTOR)

    # -- write -----------------------------------------------------------------------
    def write(self, session: Session) -> None:
        client: sbl.SblClient = session.state["client"]
        plan = session.plan
        blocks = self._blocks(session)
        session.emit(Phase("write", f"sending {plan.bytes:,} bytes in {len(blocks)} block(s)",
                           info={"bytes": plan.bytes}))
        written = session.written
        t0 = time.monotonic()
        done = 0
        erase = iter(plan.erase)         # one range per block, in the blocks' order
        try:
            for block in blocks:
                # The SBL erases and writes a block's flash once its last DATA message has come
                # (until then an ABORT drops it untouched): that message is the first that writes,
                # and its ACK says the block is written.
                pages = next(erase)
                size = len(block.raw)
                last = (size - 1) // client.chunk * client.chunk
                start = done

                def progress(d: int, total: int, start=start, last=last, size=size, pages=pages,
                             header=block.header) -> None:
                    if d - start == size:
                        written.acknowledged(header.load_address, header.load_address + header.size)
                    session.emit(Progress(d, total, "write"))
                    if d - start == last:            # the block's last DATA goes out next
                        written.erase_sent([pages])
                client.progress = progress
                if last == 0:
                    written.erase_sent([pages])
                client.send_block(block, done=done, total=plan.bytes)
                done += size
        except BaseException:            # a failure or Ctrl-C: the SBL drops the half block
            client.abort()
            raise
        session.transfer_seconds = time.monotonic() - t0

    # -- verify ----------------------------------------------------------------------
    def verify(self, session: Session) -> None:
        # Every block's CRC-32 was checked by the SBL before it wrote the block, and only a
        # written block is ACKed; the wired update has no way to read the flash back.
        session.verify = "sbl-crc"
        session.emit(Progress(session.plan.bytes, session.plan.bytes, "verify"))

    # -- start -----------------------------------------------------------------------
    def start(self, session: Session) -> None:
        client: sbl.SblClient = session.state["client"]
        link, opts, module = session.serial_link, session.options, session.plan.module
        boot = module.rom_access.get("boot0", "BOOT")
        if opts.boot0_with:
            from ..lines import leave_rom
            leave_rom(link, boot0=opts.boot0_with)
        else:
            wait = max(0.0, opts.release_wait)
            session.emit(Prompt("release-boot", f"Release {boot} now (disconnect it from 3.3 V): "
                                f"rakflash restarts the module in {wait:.0f} s", window=wait,
                                info={"pin": boot}))
            _count_down(session, wait, "release-boot")
        client.reset(sbl.RESET_POI)
        if self._sbl_still_answers(link):
            session.emit(Prompt("release-boot-and-reset", f"{boot} is still held: the secure "
                                "bootloader started again. Release it and press reset.",
                                window=opts.window, info={"pin": boot}))
            deadline = Deadline(opts.window)
            while not deadline.expired and self._sbl_still_answers(link):
                session.emit(Countdown(round(deadline.remaining()), "release-boot-and-reset"))
                time.sleep(0.5)
            if deadline.expired:
                session.warn("boot-still-held", f"the secure bootloader still answers: release "
                             f"{boot} and press reset", pin=boot)
        link.baud = session.state.get("at_baud", link.baud)
        if session.plan.image.includes_app:
            self._leave_rui_bootloader(session)

    def _sbl_still_answers(self, link: Link) -> bool:
        for _ in range(2):
            link.discard_input()
            got = sbl.say_hello(link, 0.4)
            if isinstance(got, sbl.Status):
                return True
        return False

    def _leave_rui_bootloader(self, session: Session) -> None:
        """RUI's bootloader keeps the module when its boot-request flag is set (an earlier
        AT+BOOT): the application was written, so start it (``at+run``)."""
        from ..boot import confirm_boot_mode, leave_bootloader
        link, module = session.serial_link, session.plan.module
        for _ in range(3):
            # End whatever partial line the HELLOs left in the console, then ask.
            link.write(b"\r\n")
            link.read(4096, 0.1)
            link.discard_input()
            if confirm_boot_mode(link, module, 0.5):
                if leave_bootloader(link, module):
                    session.emit(Note("RUI's bootloader kept the module (its boot-request flag was "
                                      "set): rakflash started the written application (at+run)"))
                return

    # -- memory, for the owner's keys ----------------------------------------------
    def memory_access(self, plan: RecoveryPlan) -> str | None:
        return "the secure bootloader's wired update has no read command"

    def touches(self, plan: RecoveryPlan) -> list[tuple[int, int]]:
        """The pages the wired update erases: each block's own (written in place, or where an
        OTA block is staged), and for an OTA its descriptor's page and the pages the install
        writes (read from the staged Ambiq image's header; all flash above the secure
        bootloader when that header can't be read)."""
        img, module = plan.image.image, plan.module
        blocks = list(reversed(img.wired_blocks)) if img.wired_blocks else build_blocks(img.segments, module)
        ranges = erase_ranges(blocks, module)
        if not any(b.header.ota for b in blocks):
            return ranges
        page = module.mcu.page_size
        ranges.append((OTA_DESCRIPTOR, OTA_DESCRIPTOR + page))
        staged = sorted((b.header.load_address, b.data) for b in blocks)
        for b in blocks:
            if not b.header.ota:
                continue
            raw, at = bytearray(), b.header.load_address
            for address, data in staged:       # the blob, across the blocks it was split into
                if address == at + len(raw):
                    raw += data
            ambiq = apollo3_wired.parse_image(bytes(raw))
            if ambiq is None:
                sbl_end = module.region("secure-bootloader").end if module.has_region("secure-bootloader") else 0
                ranges.append((sbl_end, module.mcu.flash.end))
            else:
                end = ambiq.install_address + len(ambiq.code)
                ranges.append((ambiq.install_address - ambiq.install_address % page, -(-end // page) * page))
        return ranges

    def _blocks(self, session: Session) -> list[apollo3_wired.Block]:
        blocks = session.state.get("blocks")
        if blocks is None:
            img = session.plan.image.image
            blocks = list(reversed(img.wired_blocks)) if img.wired_blocks else \
                build_blocks(img.segments, session.plan.module)
            session.state["blocks"] = blocks
        return blocks


# ------------------------------------------------------------------ entry: waiting for the SBL

class Watcher:
    """What answered while rakflash waited for the secure bootloader, from the bytes seen."""

    def __init__(self, module: Module) -> None:
        d = module.boot_dialect
        self.banner = d["banner"].encode()
        self.unsupported = d["unsupported"].encode()
        self.at_words = [w.encode() for w in module.dialect.get("errors", [])] + [b"\r\nOK\r\n"]
        self.tail = bytearray()
        self.text = 0
        self.garbage = 0
        self.seen: set[str] = set()

    def feed(self, data: bytes) -> set[str]:
        """Add bytes; returns what is newly recognised."""
        if not data:
            return set()
        self.tail += data
        del self.tail[:-4096]
        if looks_like_text(data):
            self.text += len(data)
        else:
            self.garbage += len(data)
        found = set()
        if self.banner in self.tail or self.unsupported in self.tail:
            found.add("rui-bootloader")
        if any(w in self.tail for w in self.at_words):
            found.add("application")
        if self.text >= 512:
            found.add("flooding")
        new = found - self.seen
        self.seen |= found
        return new

    @property
    def verdict(self) -> str:
        for what in ("rui-bootloader", "flooding", "application"):
            if what in self.seen:
                return what
        return "garbage" if self.garbage >= 16 else "nothing"


def wait_for_sbl(link: Link, window: float, watch: Watcher, *, tick=None, warn=None) -> sbl.Status | None:
    """HELLO every quarter second until a STATUS comes or ``window`` passes."""
    deadline = Deadline(window)
    next_tick = 0.0
    while not deadline.expired:
        if tick and time.monotonic() >= next_tick:
            tick(deadline.remaining())
            next_tick = time.monotonic() + 1.0
        link.write(sbl.hello())
        got = sbl.read_reply(link, min(HELLO_EVERY, deadline.remaining()), (sbl.STATUS, sbl.ACK))
        if isinstance(got, sbl.Message):
            if got.type == sbl.STATUS:
                return sbl.Status.decode(got.payload)
            continue             # an ACK: the SBL heard a partial HELLO; the next one is whole
        for what in watch.feed(got):
            if warn and what == "rui-bootloader":
                warn("rui-bootloader-answered",
                     "the module restarted into RUI's bootloader, not the secure bootloader: BOOT "
                     "was not held at that reset. Hold BOOT and press reset again.")
    return None


def entry_failure(link: Link, module: Module, watch: Watcher, options: RecoveryOptions,
                  at_baud: int) -> BootEntryFailed:
    """The named error when the secure bootloader never answered, by what did."""
    verdict = watch.verdict
    if verdict == "nothing":
        verdict = _probe_at(link, module, at_baud) or verdict
    boot = module.rom_access.get("boot0", "BOOT")
    level = module.rom_access.get("boot0_level", "high (to 3.3 V)")
    window = options.window
    info0 = ("or this module's INFO0 sets the secure bootloader's override pin otherwise (another "
             "pin, the other level, or none — 'rakflash info0 show --probe ID' reads it with an SWD "
             "probe)")
    swd = "'rakflash recover FILE --via swd' writes the image with a probe instead."
    if verdict == "rui-bootloader":
        return BootEntryFailed(
            f"{module.name}'s RUI bootloader answered (<BOOT MODE>), not its secure bootloader: "
            f"{boot} was not held {level} when the module reset, {info0}",
            hint=f"RUI's bootloader works, so 'rakflash flash FILE --port {link.port_name}' can "
                 f"write the application without BOOT. To reach the secure bootloader: hold {boot} "
                 f"{level}, press reset during the countdown, and run the same command again. "
                 + swd, cause="rui-bootloader")
    if verdict in ("application", "flooding"):
        what = "its application answered AT" if verdict == "application" else \
            "its application prints without pause"
        return BootEntryFailed(
            f"the secure bootloader did not answer within {window:.0f} s; {what} (RAK's script "
            f"says 'Received Unknown Message' here): {boot} was not held {level} at a reset during "
            f"the countdown, {info0}",
            hint=f"Hold {boot} {level}, then press reset while rakflash counts down (a reset before "
                 f"or after the countdown is missed; --window waits longer). " + swd, cause=verdict)
    if verdict == "garbage":
        return BootEntryFailed(
            f"unreadable bytes answered within {window:.0f} s, and no secure bootloader STATUS: "
            f"the secure bootloader may listen at another baud rate than {link.baud} (INFO0 sets it)",
            hint="'rakflash info0 show --probe ID' tells the rate; pass it with --baud. Or check "
                 "the wiring for noise.", cause="garbage")
    return BootEntryFailed(
        f"nothing answered within {window:.0f} s: no reset with {boot} held was seen",
        hint=f"Check the wiring ({module.rom_access.get('uart_pins', 'the AT port')}: TX to RX, RX "
             f"to TX, GND), hold {boot} {level}, reset the module during the countdown (--window "
             f"waits longer), and run the same command again. " + swd, cause="nothing")


def _probe_at(link: Link, module: Module, at_baud: int) -> str | None:
    """After a silent window: does the firmware answer AT at least? (names the failure)."""
    from ...errors import Flooding
    from ..identify import identify
    if link.baud != at_baud:
        link.baud = at_baud
    try:
        info = identify(link, module=module, baud=at_baud, scan=False)
    except Flooding:
        return "flooding"
    except RakflashError:
        return None
    return "rui-bootloader" if info.mode == "bootloader" else "application"


# ------------------------------------------------------------------ plan helpers (pure)

def build_blocks(segments: list[Segment], module: Module, *, split: int = apollo3_wired.MAX_SPLIT) -> list[apollo3_wired.Block]:
    """In-place wired blocks for the segments: one per run of flash pages the segments
    cover (gaps inside a run filled with 0xFF, as erased flash reads), each starting at
    its first page."""
    page = module.mcu.page_size
    runs: list[list[Segment]] = []
    for seg in sorted(segments, key=lambda s: s.start):
        if runs and seg.start // page <= (runs[-1][-1].end - 1) // page + 1:
            runs[-1].append(seg)
        else:
            runs.append([seg])
    blocks = []
    for run in runs:
        start = run[0].start - run[0].start % page
        end = max(s.end for s in run)
        data = bytearray(b"\xff" * (end - start))
        for s in run:
            data[s.start - start:s.end - start] = s.data
        blocks += apollo3_wired.build_blocks(bytes(data), start, split=split)
    return blocks


def erase_ranges(blocks: list[apollo3_wired.Block], module: Module) -> list[tuple[int, int]]:
    """The pages the secure bootloader erases: every page a block writes (for an OTA
    block, where it is staged; the install erases the image's own pages later)."""
    page = module.mcu.page_size
    return [(b.header.load_address - b.header.load_address % page,
             -(-(b.header.load_address + len(b.data)) // page) * page) for b in blocks]


def minimum_seconds(module: Module, blocks: list[apollo3_wired.Block], baud: int, latency: float, *,
                    ota: bool = False) -> float:
    """The least time the wired update can take: every byte both ways at ``baud`` (8N1),
    one turnaround each way per message (each is ACKed before the next), and the
    datasheet's erase and program time for every block."""
    bt = 10 / baud
    rt = 2 * latency
    mcu = module.mcu
    t = (8 + sbl.STATUS_SIZE) * bt + rt                         # HELLO → STATUS
    if ota:
        t += (12 + sbl.ACK_SIZE) * bt + rt                      # OTADESC
    for b in blocks:
        size = len(b.raw)
        t += (20 + sbl.ACK_SIZE) * bt + rt                      # UPDATE
        n = -(-size // sbl.MAX_CHUNK)
        t += (size + n * (12 + sbl.ACK_SIZE)) * bt + n * rt     # DATA
        t += mcu.erase_seconds(len(b.data)) + mcu.program_seconds(len(b.data))
    t += (12 + sbl.ACK_SIZE) * bt + rt                          # RESET
    return t


def sbl_guide(module: Module, options: RecoveryOptions) -> list[str]:
    """What the person does to start the secure bootloader's wired update, pin by pin."""
    a = module.rom_access
    boot = a.get("boot0", "BOOT")
    level = a.get("boot0_level", "high (to 3.3 V)")
    steps = [f"Connect the USB-UART adapter to {module.name}'s {a.get('uart_pins', 'AT port')} "
             "as for AT commands (TX to RX, RX to TX, and GND)."]
    if options.boot0_with:
        steps.append(f"rakflash drives {boot} with {options.boot0_with.upper()}.")
    else:
        steps.append(f"Hold {boot} {level} and keep it there.")
    if options.reset_with:
        steps.append(f"rakflash pulses RESET ({a.get('reset', 'RST')}) with {options.reset_with.upper()}.")
    else:
        steps.append(f"Then reset the module: {a.get('reset', 'RST to GND for a moment')} — any "
                     f"time during the countdown.")
    steps.append(f"rakflash sends HELLO every {HELLO_EVERY:g} s for up to {options.window:.0f} s; the "
                 "secure bootloader answers at once. Release BOOT when rakflash says so.")
    return steps


def _count_down(session: Session, seconds: float, action: str) -> None:
    deadline = Deadline(seconds)
    while not deadline.expired:
        session.emit(Countdown(round(deadline.remaining()), action))
        time.sleep(min(1.0, deadline.remaining()))


__all__ = ["Apollo3SblMethod", "build_blocks", "minimum_seconds", "sbl_guide", "wait_for_sbl",
           "Watcher", "OTA_DESCRIPTOR"]
