"""Recovery through the STM32 ROM bootloader, end to end on virtual modules through ptys:
the framework's shared steps, the stm32-rom method, and what the person is told."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import FAST_BAUD
from rakflash import images
from rakflash.errors import (
    ConfirmationNeeded,
    ReadoutProtected,
    RecoveryUnavailable,
    RomNoHandshake,
    WrongChip,
    WrongTarget,
)
from rakflash.events import Countdown, Note, Progress, Prompt, Recorder, Warning
from rakflash.flows.recover import RecoveryOptions, plan_recovery, recover
from rakflash.flows.recover.stm32_rom import erase_pages, write_blocks
from rakflash.link import Link
from rakflash.sim import Mode, firmware
from rakflash.trace import TraceWriter


def full_hex(tmp_path: Path, cat, key: str, boot: str, app: str, size: int = 24 * 1024) -> Path:
    p = tmp_path / f"FULL-{boot}+{app}.hex"
    p.write_text(firmware.combined_hex(cat.module(key), boot, app, size))
    return p


class Person:
    """An event sink that does what the prompt says: BOOT0 high, then reset (once)."""

    def __init__(self, dev, *, act: bool = True) -> None:
        self.dev, self.act = dev, act
        self.events = Recorder()

    def __call__(self, event) -> None:
        self.events(event)
        if isinstance(event, Prompt) and self.act:
            self.dev.set_boot_pin(True)
            self.dev.press_reset()
        if isinstance(event, Warning) and event.code == "release-boot0":
            self.dev.set_boot_pin(False)


def fast(**kw) -> RecoveryOptions:
    kw.setdefault("baud", FAST_BAUD)
    kw.setdefault("window", 20.0)          # generous: the suite runs in parallel on 2 cores
    kw.setdefault("after_timeout", 20.0)
    return RecoveryOptions(**kw)


def run(dev, path, module="rak811", options=None, trace=None):
    options = options or fast()
    plan = plan_recovery(images.load(path), _mod(module), options=options)
    person = Person(dev)
    with Link(dev.port, FAST_BAUD, trace=trace) as link:
        result = recover(link, plan, options, emit=person)
    return result, person.events


def _mod(key):
    from rakflash import catalog
    return catalog.load().module(key)


def test_rak811_seed_recovery_replaces_bootloader_and_application(virtual, cat, tmp_path):
    dev = virtual("rak811", bootloader_version="3.0.2", app_version="V3.0.0.13.H")
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    result, events = run(dev, path)
    assert (result.bootloader_version_before, result.bootloader_version_after) == ("V3.0.2", "V3.0.5")
    assert (result.app_version_before, result.app_version_after) == ("V3.0.0.13.H", "V3.0.0.14.H")
    assert result.mode_after == "app" and result.verify == "read-back"
    # the chip runs what was written, and the boot pin was released when told
    assert dev.bootloader_version == "V3.0.5" and dev.app_version == "V3.0.0.14.H"
    assert dev.mode is Mode.APP and dev.boot_pin is False
    writes = [e for e in events.of(Progress) if e.phase == "write"]
    assert writes[-1].bytes == writes[-1].total == result.bytes
    assert any(isinstance(e, Countdown) for e in events.events)


@pytest.mark.parametrize("name", ["rak3172", "rak3172-sip", "rak3172lp-sip", "rak3172-t", "rak3172-f",
                                  "rak11160"])
def test_rak3172_recovery_keeps_the_owners_keys(virtual, cat, tmp_path, name):
    """The RAK3172 and its RUI3 variants: the same chip, ROM and flash map, each its own FULL.hex."""
    _, old, new = firmware.DEFAULT_VERSIONS[name]
    dev = virtual(name)
    dev.settings["APPKEY"] = "0123456789ABCDEF0123456789ABCDEF"
    dev.save_settings()
    path = full_hex(tmp_path, cat, name, "RUI_BOOT_0.9_STM32WLE5CC", new)
    result, _ = run(dev, path, name)
    assert result.bootloader_version_after == "RUI_BOOT_0.9_STM32WLE5CC"
    assert result.app_version_after == new
    assert result.app_version_before == old
    assert dev.load_settings()["APPKEY"] == "0123456789ABCDEF0123456789ABCDEF"


def test_another_boards_full_image_is_refused_before_anything(virtual, cat, tmp_path):
    """A RAK3172's FULL.hex on a RAK3172-T: refused as flash refuses it; naming the board the image is
    for is the way to write it anyway (the chip and flash map are the same)."""
    path = full_hex(tmp_path, cat, "rak3172", "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.6_RAK3172-E")
    with pytest.raises(WrongTarget) as refused:
        plan_recovery(images.load(path), _mod("rak3172-t"), options=fast())
    assert "built for the RAK3172 " in refused.value.message and "is a RAK3172-T" in refused.value.message
    assert "--module rak3172" in refused.value.hint and "Nothing was written" in refused.value.hint
    assert plan_recovery(images.load(path), _mod("rak3172"), options=fast()).module.key == "rak3172"


def test_plan_erases_only_the_pages_the_image_covers(cat, tmp_path):
    path = full_hex(tmp_path, cat, "rak3172", "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.6_RAK3172-E", 10_000)
    plan = plan_recovery(images.load(path), cat.module("rak3172"), options=fast())
    user = cat.module("rak3172").region("user-data")       # RUI3's data pages start there
    assert all(end <= user.start for _, end in plan.erase)
    info = plan.image
    pages = erase_pages(info, cat.module("rak3172"))
    # every written byte lies in an erased page, and no block is all 0xFF
    for addr, data in write_blocks(info, cat.module("rak3172")):
        assert (addr - 0x08000000) // 2048 in pages and data.strip(b"\xff")
    assert plan.estimate_seconds > 0 and "pin 21" in " ".join(plan.guide)


def test_rak4270_has_no_boot0_pin_and_is_sent_to_swd(cat, tmp_path):
    path = full_hex(tmp_path, cat, "rak4270", "V3.0.5", "V3.0.0.14.H")
    plan = plan_recovery(images.load(path), cat.module("rak4270"), options=fast())
    assert plan.method == "swd"                        # its only way: the default
    assert plan.details["pyocd_command"].startswith("pyocd flash -t stm32l071kbux ")
    with pytest.raises(RecoveryUnavailable) as exc:
        plan_recovery(images.load(path), cat.module("rak4270"), method="stm32-rom", options=fast())
    assert "pyocd flash -t stm32l071kbux" in exc.value.hint


def test_image_for_another_chip_is_refused_before_anything(cat, tmp_path):
    path = full_hex(tmp_path, cat, "rak3172", "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.6_RAK3172-E")
    with pytest.raises(WrongTarget):
        plan_recovery(images.load(path), cat.module("rak811"), options=fast())


def test_no_handshake_says_the_firmware_runs(virtual, cat, tmp_path):
    dev = virtual("rak811")
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    options = fast(window=1.5, identify_before=False)
    plan = plan_recovery(images.load(path), cat.module("rak811"), options=options)
    with Link(dev.port, FAST_BAUD) as link, pytest.raises(RomNoHandshake) as exc:
        recover(link, plan, options, emit=Person(dev, act=False))
    assert "pin 17" in exc.value.hint
    assert dev.bootloader_version == "V3.0.5"      # nothing written


def test_wrong_chip_is_named(virtual, cat, tmp_path):
    dev = virtual("rak4270", boot_pin=True)          # a bare STM32L071 on the line
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    options = fast(identify_before=False)
    plan = plan_recovery(images.load(path), cat.module("rak811"), options=options)
    with Link(dev.port, FAST_BAUD) as link, pytest.raises(WrongChip) as exc:
        recover(link, plan, options, emit=Person(dev))
    assert "STM32L07" in exc.value.message and "0x447" in exc.value.message


def test_one_damaged_get_id_answer_names_no_other_chip(virtual, cat, tmp_path):
    """A product ID damaged on its way back (0x497 read as 0x447) is asked again: 'wrong-chip'
    stands only on two answers that agree, and the recovery goes on when the second is right."""
    from rakflash.sim import Faults, Rewrite
    damage = Rewrite(b"\x01\x04\x97", b"\x01\x04\x47")
    dev = virtual("rak3172", faults=Faults(rewrite_to_host=[damage]))
    path = full_hex(tmp_path, cat, "rak3172", "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.6_RAK3172-E")
    result, _ = run(dev, path, "rak3172")
    assert damage.times == 0                                       # the damage did happen
    assert result.app_version_after == "RUI_4.0.6_RAK3172-E"


def test_readout_protection_is_reported_and_removed_only_when_confirmed_twice(virtual, cat, tmp_path):
    dev = virtual("rak811", readout_protected=True)
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    with pytest.raises(ReadoutProtected):
        run(dev, path)
    assert dev.readout_protected and dev.app_version == "V3.0.0.13.H"   # untouched
    with pytest.raises(ConfirmationNeeded):
        run(dev, path, options=fast(remove_protection=True, confirm=lambda q: False))
    assert dev.readout_protected
    result, events = run(dev, path, options=fast(remove_protection=True, confirm=lambda q: True))
    assert not dev.readout_protected and result.app_version_after == "V3.0.0.14.H"
    assert any(isinstance(e, Warning) and e.code == "protection-removed" for e in events.events)


def test_the_trace_shows_the_rom_talked_8e1(virtual, cat, tmp_path):
    dev = virtual("rak811")
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H", 2048)
    trace_file = tmp_path / "t.jsonl"
    trace = TraceWriter(str(trace_file))
    try:
        run(dev, path, trace=trace)
    finally:
        trace.close()
    import json
    lines = [json.loads(x) for x in trace_file.read_text().splitlines()[1:]]
    parities = [x["parity"] for x in lines if x["ev"] in ("open", "parity")]
    collapsed = [p for i, p in enumerate(parities) if i == 0 or parities[i - 1] != p]
    # a look for a ROM that answers already (8E1), identify at 8N1, the ROM at 8E1, identify again
    assert collapsed == ["N", "E", "N", "E", "N"]


def in_time(seconds: float, fn):
    """``fn()``'s result or exception, or a failure when it has not ended within ``seconds`` (a hang)."""
    import threading
    out: list = []

    def run_it():
        try:
            out.append(fn())
        except BaseException as exc:          # handed to the test
            out.append(exc)

    t = threading.Thread(target=run_it, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s"
    return out[0]


class LatePerson(Person):
    """Holds BOOT0 and presses reset ``delay`` seconds after the prompt, as people do."""

    def __init__(self, dev, delay: float) -> None:
        super().__init__(dev, act=False)
        self.delay = delay

    def __call__(self, event) -> None:
        super().__call__(event)
        if isinstance(event, Prompt):
            import threading

            def press():
                self.dev.set_boot_pin(True)
                self.dev.press_reset()
            threading.Timer(self.delay, press).start()


def recover_with(dev, path, person, module="rak3172", options=None):
    options = options or fast()
    plan = plan_recovery(images.load(path), _mod(module), options=options)
    with Link(dev.port, FAST_BAUD) as link:
        return recover(link, plan, options, emit=person)


def test_a_flooding_sketch_is_recovered_when_the_reset_comes(virtual, cat, tmp_path):
    # 'y' in "humidity" is 0x79, the ROM's ACK (issue 17.10): it was taken for the handshake.
    dev = virtual("rak3172", sketch="flooding", flood_after=0.0)
    path = full_hex(tmp_path, cat, "rak3172", "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.6_RAK3172-E")
    person = LatePerson(dev, 1.0)
    result = in_time(60, lambda: recover_with(dev, path, person))
    assert not isinstance(result, BaseException), result
    assert result.app_version_after == "RUI_4.0.6_RAK3172-E" and dev.rom_sessions == 1


def test_a_flooding_sketch_without_a_reset_ends_by_the_window(virtual, cat, tmp_path):
    dev = virtual("rak3172", sketch="flooding", flood_after=0.0)
    path = full_hex(tmp_path, cat, "rak3172", "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.6_RAK3172-E")
    outcome = in_time(30, lambda: recover_with(dev, path, Person(dev, act=False),
                                               options=fast(window=3.0, identify_before=False)))
    # The 8N1 flood heard at the ROM's 8E1: a pty carries no parity, so it reads as the text it is;
    # over TCP (RFC 2217 carries parity) the simulated line garbles a framing mismatch, as a real
    # one may. Either way the window ends it, nothing is written, and the hint says to hold BOOT0.
    over_tcp = os.environ.get("RAKFLASH_SIM_TRANSPORT", "").strip().lower() == "tcp"
    assert isinstance(outcome, RomNoHandshake)
    assert outcome.details["seen"] == ("garbage" if over_tcp else "text"), outcome.details
    assert ("BOOT0" in outcome.hint and "reset" in outcome.hint) and outcome.details["written"] == "nothing"
    assert over_tcp or "firmware runs" in outcome.hint


def test_a_rom_that_already_answers_asks_nothing_of_the_person(virtual, cat, tmp_path):
    # The re-run after a ROM error (issue 17.9): the ROM waits already; a person told to
    # "hold BOOT0 and reset" resets the chip mid-session.
    dev = virtual("rak811", boot_pin=True)
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    person = LatePerson(dev, 0.3)
    result = in_time(60, lambda: recover_with(dev, path, person, "rak811"))
    assert not isinstance(result, BaseException), result
    assert not person.events.of(Prompt) and result.reset_wait is None
    assert any("already answers" in n.message for n in person.events.of(Note))
    assert dev.bootloader_version == "V3.0.5"


def test_a_reset_mid_session_is_synced_again_and_the_write_finishes(virtual, cat, tmp_path):
    dev = virtual("rak811")
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    pressed = []

    class PressesTwice(Person):
        def __call__(self, event) -> None:
            super().__call__(event)
            if isinstance(event, Progress) and event.phase == "write" and not pressed:
                pressed.append(True)
                self.dev.press_reset()        # BOOT0 still high: the ROM starts afresh
    person = PressesTwice(dev)
    result = in_time(90, lambda: recover_with(dev, path, person, "rak811"))
    assert not isinstance(result, BaseException), result
    assert [w.code for w in person.events.of(Warning)][:1] == ["chip-restarted"]
    assert dev.bootloader_version == "V3.0.5" and dev.app_version == "V3.0.0.14.H"


def test_one_damaged_byte_does_not_claim_readout_protection(virtual, cat, tmp_path):
    # Issue 17.11: a single NACK to the protection probe pointed to --remove-readout-protection.
    from rakflash.sim import Faults, Rewrite
    dev = virtual("rak3172", faults=Faults(rewrite_to_module=[Rewrite(b"\x11\xee", b"\x11\xef")]))
    path = full_hex(tmp_path, cat, "rak3172", "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.6_RAK3172-E")
    result, _ = run(dev, path, "rak3172")
    assert result.app_version_after == "RUI_4.0.6_RAK3172-E"
    assert dev.uart.faults.rewrite_to_module[0].times == 0        # the damage did happen


def test_a_damaged_answer_mid_session_is_synced_again_not_the_end(virtual, cat, tmp_path):
    # The end of Get ID's reply damaged on its way to the host: the ROM is still in its session,
    # so the next 0x7F is NACKed, Get answers, and the identification is asked again (a retry).
    from rakflash.events import Retry
    from rakflash.sim import Faults, Rewrite
    dev = virtual("rak811", faults=Faults(rewrite_to_host=[Rewrite(b"\x79\x01\x04\x29\x79",
                                                                   b"\x79\x01\x04\x29\x42")]))
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    result, events = run(dev, path)
    assert dev.uart.faults.rewrite_to_host[0].times == 0          # the damage did happen
    retries = events.of(Retry)
    assert len(retries) == 1 and retries[0].phase == "connect" and result.retries == 1
    assert not [w for w in events.of(Warning) if w.code == "chip-restarted"]
    assert dev.bootloader_version == "V3.0.5" and result.app_version_after == "V3.0.0.14.H"


def test_a_block_damaged_on_its_way_to_the_chip_is_written_again(virtual, cat, tmp_path):
    # The ROM NACKs a block whose checksum does not match: one damaged byte toward the chip.
    from rakflash.events import Retry
    from rakflash.sim import Faults, Rewrite
    dev = virtual("rak811", faults=Faults(rewrite_to_module=[Rewrite(b"V3.0.0.14.H", b"V3.0.0.14.X")]))
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    result, events = run(dev, path)
    assert dev.uart.faults.rewrite_to_module[0].times == 0
    assert [r.phase for r in events.of(Retry)] == ["write"] and result.verify == "read-back"
    assert dev.app_version == result.app_version_after == "V3.0.0.14.H"


def test_a_byte_damaged_on_its_way_back_is_no_verify_failure(virtual, cat, tmp_path):
    # Read Memory has no checksum: a read-back damaged on the line looked like the flash's fault
    # ("the chip holds 0xFD at … where the image has 0xF9") though the chip held the image.
    from rakflash.events import Retry
    from rakflash.sim import Faults, Rewrite
    dev = virtual("rak811", faults=Faults(rewrite_to_host=[Rewrite(b"V3.0.0.14.H", b"V3.0.0.14.X")]))
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    result, events = run(dev, path)
    assert dev.uart.faults.rewrite_to_host[0].times == 0
    assert [r.phase for r in events.of(Retry)] == ["verify"] and result.verify == "read-back"
    assert dev.app_version == result.app_version_after == "V3.0.0.14.H"


def test_a_read_back_damaged_at_another_byte_each_time_is_no_claim_about_the_flash(virtual, cat, tmp_path):
    # The soak (benchmarks/soak.py --kind rom, bit errors toward the host) found 'the chip holds
    # 0x4E at 0x080017a9 where the image has 0xCE' while the chip held 0xCE: three reads of the
    # block were each damaged, at different bytes. A byte is the flash's only when two reads agree.
    from rakflash.events import Retry
    from rakflash.sim import Faults, Rewrite
    damage = [Rewrite(b"V3.0.0.14.H", b"V3.0.0.14.X"), Rewrite(b"V3.0.0.14.H", b"V3.0.0.1X.H"),
              Rewrite(b"V3.0.0.14.H", b"V3.0.X.14.H")]
    dev = virtual("rak811", faults=Faults(rewrite_to_host=damage))
    path = full_hex(tmp_path, cat, "rak811", "V3.0.5", "V3.0.0.14.H")
    result, events = run(dev, path)
    assert [r.times for r in dev.uart.faults.rewrite_to_host] == [0, 0, 0]
    assert result.verify == "read-back" and {r.phase for r in events.of(Retry)} == {"verify"}
    assert dev.app_version == result.app_version_after == "V3.0.0.14.H"
