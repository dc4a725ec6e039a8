"""Bringing back a bricked virtual RAK11720 through its secure bootloader's wired update,
end to end through ptys: the framework's steps with the apollo3-sbl method, a person who
follows (or fails to follow) the prompts, and what rakflash says when it can't."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import pytest

from conftest import FAST_BAUD
from rakflash import apollo3_wired as wired
from rakflash import catalog, images
from rakflash.apollo3_info0 import rak11720_default
from rakflash.errors import BootEntryFailed, DeviceRejected, TouchesBootloader
from rakflash.events import Countdown, Note, Progress, Prompt, Recorder, Retry, Warning
from rakflash.flows.recover import RecoveryOptions, interrupted_hint, plan_recovery, recover
from rakflash.flows.recover.apollo3_sbl import build_blocks
from rakflash.link import Link
from rakflash.protocols import apollo3_sbl as sbl
from rakflash.sim import Mode, firmware
from rakflash.trace import TraceWriter, read_trace
from rakflash.written import Written

NEW_APP, NEW_BOOT = "RUI_4.0.6_RAK11720", "RUI_BOOT_0.4_RAK11720"


def info0_at(baud=FAST_BAUD, **changes) -> bytes:
    return rak11720_default().replace(uart_baud=baud, **changes).raw


def rak11720():
    return catalog.load().module("rak11720")


def full_hex(tmp_path: Path, boot=NEW_BOOT, app=NEW_APP, size=24 * 1024, **kw) -> Path:
    p = tmp_path / f"RAK11720-{boot}+{app}.hex"
    p.write_text(firmware.combined_hex(rak11720(), boot, app, size, **kw))
    return p


class Person:
    """Does what the prompts say — BOOT high, reset; release BOOT — optionally late, or never."""

    def __init__(self, dev, *, delay: float = 0.0, hold_boot: bool = True, act: bool = True,
                 interrupt_at_write: int | None = None) -> None:
        self.dev, self.delay, self.hold_boot, self.act = dev, delay, hold_boot, act
        self.interrupt_at_write = interrupt_at_write
        self.events = Recorder()
        self.timers: list[threading.Timer] = []

    def _press(self) -> None:
        self.dev.set_boot_pin(self.hold_boot)
        self.dev.press_reset()

    def __call__(self, event) -> None:
        self.events(event)
        if isinstance(event, Prompt):
            if event.action == "hold-boot-and-reset" and self.act:
                if self.delay:
                    t = threading.Timer(self.delay, self._press)
                    self.timers.append(t)
                    t.start()
                else:
                    self._press()
            elif event.action == "release-boot":
                self.dev.set_boot_pin(False)
            elif event.action == "release-boot-and-reset":
                self.dev.set_boot_pin(False)
                self.dev.press_reset()
        if isinstance(event, Progress) and event.phase == "write" and self.interrupt_at_write \
                and event.bytes >= self.interrupt_at_write:
            self.interrupt_at_write = None
            raise KeyboardInterrupt

    def cancel(self) -> None:
        for t in self.timers:
            t.cancel()


def options(**kw) -> RecoveryOptions:
    kw.setdefault("baud", FAST_BAUD)
    kw.setdefault("window", 5.0)
    kw.setdefault("release_wait", 0.1)
    return RecoveryOptions(**kw)


def run(dev, path, *, person=None, opts=None, trace=None, written=None):
    opts = opts or options()
    plan = plan_recovery(images.load(path), rak11720(), options=opts)
    person = person or Person(dev)
    try:
        with Link(dev.port, FAST_BAUD, trace=trace) as link:
            return recover(link, plan, opts, emit=person, written=written), person.events
    finally:
        person.cancel()


def brick(dev, *, app=True, bootloader=False):
    if app:
        dev.flash.load(0x14000, b"\xff" * 0x60000)
    if bootloader:
        dev.flash.load(0xC000, b"\xff" * 0x8000)
    dev.press_reset()


# ------------------------------------------------------------------ brought back

def test_no_valid_application_brought_back(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at())
    brick(dev)
    assert dev.wait_mode(Mode.BOOTLOADER)
    path = full_hex(tmp_path)
    result, events = run(dev, path)
    assert result.result == "ok" and result.method == "apollo3-sbl" and result.verify == "sbl-crc"
    assert (result.bootloader_version_before, result.bootloader_version_after) == \
        ("RUI_BOOT_0.3_RAK11720", NEW_BOOT)
    assert (result.app_version_before, result.app_version_after, result.mode_after) == (None, NEW_APP, "app")
    assert dev.app_version == NEW_APP and dev.bootloader_version == NEW_BOOT and dev.boot_pin is False
    image = images.load(path)
    for s in image.segments:
        assert dev.flash.read(s.start, s.size) == s.data
    writes = [e for e in events.of(Progress) if e.phase == "write"]
    assert writes[-1].bytes == writes[-1].total == result.bytes
    assert any(isinstance(e, Countdown) for e in events.events)


def test_one_damaged_version_answer_after_the_recovery_is_no_verify_failure(virtual, tmp_path):
    """The new application's version damaged once on its way back ('4.0.6' read as '4.0.7'):
    asked again, the two answers disagree with each other, not with the image — the recovery
    stands, confirmed by the answer that repeats."""
    from rakflash.sim import Faults, Rewrite
    damage = Rewrite(NEW_APP.encode(), b"RUI_4.0.7_RAK11720")
    dev = virtual("rak11720", info0=info0_at(), faults=Faults(rewrite_to_host=[damage]))
    brick(dev)
    assert dev.wait_mode(Mode.BOOTLOADER)
    result, _ = run(dev, full_hex(tmp_path))
    assert damage.times == 0                                    # the damage did happen
    assert result.result == "ok" and result.app_version_after == NEW_APP and result.version_confirmed


def test_flooding_application_replaced(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at(), sketch="flooding", flood_after=0.2)
    time.sleep(0.5)                                                 # the sketch floods by now
    result, _ = run(dev, full_hex(tmp_path, boot="RUI_BOOT_0.3_RAK11720"))
    assert result.app_version_before is None                       # the flood hid it
    assert (result.app_version_after, result.mode_after) == (NEW_APP, "app")
    assert dev.mode is Mode.APP and dev.app_version == NEW_APP


def test_module_with_no_firmware_at_all(virtual, tmp_path):
    """RUI's bootloader gone too: nothing answers, only the secure bootloader can help."""
    dev = virtual("rak11720", info0=info0_at())
    brick(dev, bootloader=True)
    result, events = run(dev, full_hex(tmp_path))
    assert (result.bootloader_version_after, result.app_version_after) == (NEW_BOOT, NEW_APP)
    assert any(isinstance(e, Note) and "does not answer" in e.message for e in events.events)


def test_a_reset_that_comes_late_still_lands(virtual, tmp_path):
    """The vendor script sends one HELLO 2 s after it starts; a reset after it is lost
    ("Received Unknown Message"). rakflash keeps sending HELLO through the countdown."""
    dev = virtual("rak11720", info0=info0_at())
    brick(dev)
    person = Person(dev, delay=1.6)
    result, events = run(dev, full_hex(tmp_path), person=person)
    assert result.app_version_after == NEW_APP
    ticks = [e.seconds_left for e in events.of(Countdown) if e.action == "hold-boot-and-reset"]
    assert len(ticks) >= 2                                        # it waited through seconds


def test_rui_boot_flag_set_then_application_started(virtual, tmp_path, cat):
    """AT+BOOT left 0xAA in RUI's flag page: after the wired update RUI's bootloader keeps the
    module, and rakflash starts the written application with at+run."""
    dev = virtual("rak11720", info0=info0_at(), state="bootloader")
    assert dev.wait_mode(Mode.BOOTLOADER) and dev.flash.read(0xFE000, 1) == b"\xaa"
    app = tmp_path / "app.bin"
    app.write_bytes(firmware.app_image(cat.module("rak11720"), NEW_APP, 20000))
    result, events = run(dev, app)
    assert (result.app_version_after, result.mode_after) == (NEW_APP, "app")
    assert any(isinstance(e, Note) and "at+run" in e.message for e in events.events)


def test_rak_style_prepared_blob_installs_the_bootloader_by_ota(virtual, tmp_path):
    """A blob as RAK ships bootloader_apollo3_ota.bin: staged at 0x14000, installed at 0xC000."""
    dev = virtual("rak11720", info0=info0_at())
    brick(dev, bootloader=True)
    segs = firmware.bootloader_image(rak11720(), NEW_BOOT)
    code = segs[0xC000]
    blob = tmp_path / "bootloader_apollo3_ota.bin"
    blob.write_bytes(b"".join(b.raw for b in wired.build_blocks(wired.build_image(code, 0xC000), 0x14000, ota=True)))
    result, _ = run(dev, blob)
    assert dev.flash.read(0xC000, len(code)) == code
    assert result.mode_after == "bootloader"           # the application page held the staging copy
    assert dev.flash.read(0xF8000, 4) == (0x14000).to_bytes(4, "little")   # OTA done, success


# ------------------------------------------------------------------ when it can't, it says why

def test_reset_after_the_countdown_is_named(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at())
    before = dev.app_version
    person = Person(dev, act=False)
    with pytest.raises(BootEntryFailed) as e:
        run(dev, full_hex(tmp_path), person=person, opts=options(window=1.5))
    err = e.value
    assert err.details["cause"] == "application"
    assert "did not answer within 2 s" in err.message and "Received Unknown Message" in err.message
    assert "press reset while rakflash counts down" in err.hint and "--via swd" in err.hint
    assert dev.app_version == before and dev.mode is Mode.APP       # nothing was written


def test_info0_without_override_pin_is_named(virtual, tmp_path):
    """The seed thread's dead end: BOOT held, reset in time, and still no secure bootloader."""
    dev = virtual("rak11720", info0=info0_at(override_gpio=0x7F))
    with pytest.raises(BootEntryFailed) as e:
        run(dev, full_hex(tmp_path), opts=options(window=1.5))
    assert e.value.details["cause"] == "application"
    assert "INFO0 sets the secure bootloader's override pin otherwise" in e.value.message
    assert "rakflash info0 show --probe ID" in e.value.message


def test_rui_bootloader_answering_instead_says_flash_works(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at(override_gpio=0x7F))
    brick(dev)
    assert dev.wait_mode(Mode.BOOTLOADER)
    person = Person(dev)
    with pytest.raises(BootEntryFailed) as e:
        run(dev, full_hex(tmp_path), person=person, opts=options(window=1.5))
    assert e.value.details["cause"] == "rui-bootloader"
    assert "rakflash flash FILE --port" in e.value.hint
    warned = [w for w in person.events.of(Warning) if w.code == "rui-bootloader-answered"]
    assert warned, "the person is told at once that the reset missed BOOT"


def test_reset_without_boot_held_is_named(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at())
    with pytest.raises(BootEntryFailed, match="not held high"):
        run(dev, full_hex(tmp_path), person=Person(dev, hold_boot=False), opts=options(window=1.5))


def test_sbl_at_another_baud_is_named(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at(baud=115200))
    with pytest.raises(BootEntryFailed) as e:
        run(dev, full_hex(tmp_path), opts=options(window=1.5))
    assert e.value.details["cause"] == "garbage" and "--baud" in e.value.hint


def test_ctrl_c_aborts_the_block_and_the_rerun_finishes(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at())
    brick(dev)
    path = full_hex(tmp_path, size=40 * 1024)
    trace = TraceWriter(tmp_path / "trace.jsonl")
    written = Written()
    with pytest.raises(KeyboardInterrupt):
        run(dev, path, person=Person(dev, interrupt_at_write=8000), trace=trace, written=written)
    trace.close()
    # What the chip holds is said from what the secure bootloader acknowledged (issue 17.4): the
    # first block's last DATA never went out, so the SBL wrote nothing…
    assert written.state == "nothing"
    assert interrupted_hint(written, "RAK11720", "apollo3-sbl") == "Nothing was written to the module."
    written = Written()
    with pytest.raises(KeyboardInterrupt):
        run(dev, path, person=Person(dev, act=False, interrupt_at_write=20000), written=written)
    # …and once it had written the first block (the bootloader at 0xC000), that is said.
    hint = interrupted_hint(written, "RAK11720", "apollo3-sbl")
    assert written.state == "part" and hint.startswith(
        "Part of the image was written: RAK11720 holds the new image's bytes at 0x0000c000-0x0000e000.")
    assert hint.endswith("Keep BOOT held and run the same command again: the chip's secure bootloader, "
                         "which nothing here can harm, takes the whole image anew.")
    sent = b"".join(bytes.fromhex(e["hex"]) for e in read_trace(tmp_path / "trace.jsonl")
                    if e.get("ev") == "tx")
    assert sent.endswith(sbl.encode_words(sbl.ABORT, sbl.ABORT_ONLY))     # the half block dropped
    assert dev.mode is Mode.ROM and dev.app_version is None
    # BOOT is still held; the secure bootloader still listens: the re-run needs no reset at all
    result, _ = run(dev, path, person=Person(dev, act=False))
    assert result.app_version_after == NEW_APP


def test_a_flash_failure_in_the_sbl_is_named(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at())
    program = dev.flash.program

    def worn(addr, data):
        if addr == 0x14000:
            raise OSError("program failed")
        program(addr, data)
    dev.flash.program = worn
    with pytest.raises(DeviceRejected, match="refused DATA.*failure") as e:
        run(dev, full_hex(tmp_path))
    assert "--via swd" in e.value.hint


def test_line_noise_is_resent(virtual, tmp_path):
    dev = virtual("rak11720", info0=info0_at())
    brick(dev)
    dev.uart.faults.bit_error_rate = 1e-4
    result, events = run(dev, full_hex(tmp_path, size=60 * 1024))
    assert result.app_version_after == NEW_APP and dev.app_version == NEW_APP
    assert events.of(Retry), "some messages were damaged and sent again"


# ------------------------------------------------------------------ plans

def test_plan_writes_each_stretch_in_place(tmp_path):
    plan = plan_recovery(images.load(full_hex(tmp_path)), rak11720(), options=options())
    loads = [(b["load_address"], b["ota"]) for b in plan.details["blocks"]]
    # RUI's bootloader, the application, and the version page with the flag page after it
    assert loads == [(0xC000, False), (0x14000, False), (0xFC000, False)]
    assert plan.details["blocks"][2]["size"] == 0x2000 + 16
    assert plan.details["ota_descriptor"] is None and plan.estimate_seconds > 0
    assert any("Hold BOOT (Apollo3 GPIO41, shared with SWO) high" in g for g in plan.guide)


def test_plan_refuses_the_secure_bootloaders_region(tmp_path):
    p = tmp_path / "with_sbl.hex"
    # A dump of the whole chip: Ambiq's secure bootloader from 0x0, its vector table first
    # (bytes that are no firmware at all are refused earlier, as not firmware).
    sbl_code = struct.pack("<II", 0x10060000, 0x1C1) + b"\x00" * 56
    p.write_text(firmware.to_hex({0x0: sbl_code, **firmware.bootloader_image(rak11720(), NEW_BOOT)}))
    with pytest.raises(TouchesBootloader, match="secure bootloader"):
        plan_recovery(images.load(p), rak11720(), options=options())


def test_blocks_split_runs_and_fill_gaps():
    from rakflash.images import Segment
    segs = [Segment(0x14000, b"a" * 100), Segment(0x14100, b"b" * 10), Segment(0x40000, b"c" * 5)]
    blocks = build_blocks(segs, rak11720())
    assert [(b.header.load_address, b.header.size) for b in blocks] == [(0x14000, 0x10A), (0x40000, 5)]
    assert blocks[0].data[100:0x100] == b"\xff" * 156


def test_a_secure_bootloader_that_already_answers_asks_nothing_of_the_person(virtual, tmp_path):
    # As issue 17.9 found on the STM32 ROM: the re-run finds the secure bootloader waiting (BOOT
    # still held); told to "hold BOOT and reset", a person resets it in the middle of the update.
    dev = virtual("rak11720", info0=info0_at(), boot_pin=True)
    assert dev.wait_mode(Mode.ROM)
    person = Person(dev, delay=0.3)
    result, events = run(dev, full_hex(tmp_path), person=person)
    assert not [e for e in events.of(Prompt) if e.action == "hold-boot-and-reset"]
    assert any("already answers" in n.message for n in events.of(Note))
    assert result.app_version_after == NEW_APP and result.reset_wait is None
