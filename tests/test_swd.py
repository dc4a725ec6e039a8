"""SWD recovery through pyOCD, tested at pyOCD's API boundary (no probe is attached here).

The fake (tests/fake_pyocd.py) stands in for pyOCD's ConnectHelper and FlashLoader and
raises pyOCD's own exceptions; rakflash's adapter and flow run unchanged on top of it.
"""

from __future__ import annotations

import sys

import pytest
from pyocd.core import exceptions

from fake_pyocd import CMSISDAPProbe, Failures, FakePyOCD, FakeWorld, JLinkProbe
from rakflash import apollo3_info0, images, swd_link
from rakflash.errors import (
    ImageTargetError,
    PackMissing,
    ProbeBusy,
    ProbeError,
    ProbeNotFound,
    SwdUnavailable,
    TargetNotResponding,
    TouchesBootloader,
    TransferFault,
    VerifyFailed,
)
from rakflash.events import Phase, Progress, Recorder
from rakflash.sim import firmware

# With two RUI3 variants, which take their base's SWD target (the same chip).
MODULES = ["rak3172", "rak811", "rak4270", "rak11720", "rak4631-r", "rak3172-sip", "rak3401"]
TARGETS = {"rak3172": "stm32wle5ccux", "rak811": "stm32l151cbux", "rak4270": "stm32l071kbux",
           "rak11720": "ama3b1kk_kbr", "rak4631-r": "nrf52840", "rak3172-sip": "stm32wle5ccux",
           "rak3401": "nrf52840"}


def full_hex(tmp_path, cat, key):
    mod = cat.module(key)
    boot_v, app_v, _ = firmware.DEFAULT_VERSIONS[mod.key]
    path = tmp_path / f"{key}_full.hex"
    path.write_text(firmware.combined_hex(mod, boot_v, app_v, 16 * 1024))
    return images.load(path), mod


def world_for(mod, **kw):
    kw.setdefault("installed", {mod.swd_target})
    return FakeWorld(flash_base=mod.mcu.flash.start, flash_size=mod.mcu.flash.size, **kw)


@pytest.mark.parametrize("key", MODULES)
def test_dry_run_names_the_equivalent_pyocd_command(tmp_path, cat, key):
    image, mod = full_hex(tmp_path, cat, key)
    plan = swd_link.plan_swd(image, mod, probe="0700000100ab")
    reset = " -O reset_type=emulated" if key == "rak11720" else ""
    assert plan.pyocd_command() == (f"pyocd flash -t {TARGETS[key]} -e sector -O keep_unwritten=true"
                                    f"{reset} -u 0700000100ab {image.path}")
    assert plan.to_dict()["segments"] == [{"start": s.start, "end": s.end} for s in image.segments]


@pytest.mark.parametrize("key", MODULES)
def test_full_image_written_verified_and_reset(tmp_path, cat, key):
    image, mod = full_hex(tmp_path, cat, key)
    world = world_for(mod)
    events = Recorder()
    result = swd_link.run_swd(swd_link.plan_swd(image, mod), api=FakePyOCD(world), emit=events)
    # the target and session options pyOCD was given
    ((probe_id, target, options),) = world.opened
    assert (probe_id, target) == ("0700000100ab", TARGETS[key])
    assert options.get("reset_type") == ("emulated" if key == "rak11720" else None)
    # sector erase only, keeping what the image doesn't cover (the owner's keys)
    assert world.loader_args == {"chip_erase": "sector", "smart_flash": True, "keep_unwritten": True}
    assert world.written == [(s.start, s.end) for s in image.segments]
    for s in image.segments:
        off = s.start - mod.mcu.flash.start
        assert bytes(world.flash[off:off + s.size]) == s.data
    assert sum(size for _, size in world.reads) == image.size          # every byte read back
    assert world.resets == ["emulated" if key == "rak11720" else "default"]
    assert world.closed == 1
    assert [e.phase for e in events.of(Phase)] == ["connect", "erase", "write", "verify", "start"]
    final = [e for e in events.of(Progress) if e.phase == "write"][-1]
    assert (final.bytes, final.total) == (image.size, image.size)
    assert result.verified and result.bytes == image.size and result.probe.kind == "CMSIS-DAP"


def test_the_sbl_region_is_never_written(tmp_path, cat):
    mod = cat.module("rak11720")
    path = tmp_path / "with_sbl.hex"
    path.write_text(firmware.to_hex({0x0: b"\x00" * 64, 0xC000: b"\x01" * 64}))
    with pytest.raises(TouchesBootloader, match="secure bootloader"):
        swd_link.plan_swd(images.load(path), mod)


def test_data_outside_flash_is_refused(tmp_path, cat):
    mod = cat.module("rak3172")
    path = tmp_path / "ram.hex"
    path.write_text(firmware.to_hex({0x20000000: b"\x00" * 64}))
    with pytest.raises(ImageTargetError, match="outside RAK3172's flash"):
        swd_link.plan_swd(images.load(path), mod)


# ------------------------------------------------------------------ the ways pyOCD fails

def run(tmp_path, cat, key="rak11720", **world_kw):
    image, mod = full_hex(tmp_path, cat, key)
    plan_kw = {k: world_kw.pop(k) for k in ("probe", "pack") if k in world_kw}
    world = world_for(mod, **world_kw)
    try:
        swd_link.run_swd(swd_link.plan_swd(image, mod, **plan_kw), api=FakePyOCD(world))
    finally:
        assert all(not s.is_open for s in world.sessions)     # closed, whatever happened
    return world


def test_no_probe(tmp_path, cat):
    with pytest.raises(ProbeNotFound, match="no debug probe found") as e:
        run(tmp_path, cat, probes=[])
    assert e.value.exit_code == 4 and "RAKDAP1" in str(e.value)


def test_probe_busy(tmp_path, cat):
    busy = exceptions.ProbeError("Unable to claim interface for probe 0700000100ab")
    with pytest.raises(ProbeBusy) as e:
        run(tmp_path, cat, failures=Failures(open=busy))
    assert "another program" in e.value.message and "Close the other program" in e.value.hint


def test_probe_busy_from_the_usb_stack(tmp_path, cat):
    with pytest.raises(ProbeBusy, match="Resource busy"):
        run(tmp_path, cat, failures=Failures(open=OSError(16, "Resource busy")))


def test_target_not_responding(tmp_path, cat):
    with pytest.raises(TargetNotResponding) as e:
        run(tmp_path, cat, failures=Failures(open=exceptions.TransferError("No ACK received")))
    assert e.value.exit_code == 5 and "SWDIO" in e.value.hint


def test_transfer_fault_while_writing(tmp_path, cat):
    fault = exceptions.TransferFaultError("Memory transfer fault @ 0x0000c000-0x0000c003")
    with pytest.raises(TransferFault, match="faulted while writing") as e:
        run(tmp_path, cat, failures=Failures(commit=fault))
    assert e.value.exit_code == 7 and "protected" in e.value.hint


def test_flash_algorithm_failure(tmp_path, cat):
    with pytest.raises(TransferFault, match="flash algorithm failed"):
        run(tmp_path, cat, failures=Failures(commit=exceptions.FlashProgramFailure("program failed")))


@pytest.mark.parametrize("key", ["rak3172", "rak811", "rak4270"])
def test_missing_pack_names_the_install_command_and_the_offline_way(tmp_path, cat, key):
    with pytest.raises(PackMissing) as e:
        run(tmp_path, cat, key, installed=set())
    assert f"'pyocd pack install {TARGETS[key]}'" in e.value.hint
    assert "needs the internet" in e.value.hint and "--pack FILE" in e.value.hint
    assert e.value.exit_code == 4


def test_missing_pack_is_named_before_probes_are_looked_for(tmp_path, cat):
    """No probe attached yet: the missing pack is still what is named (it must be installed
    anyway), not 'no debug probe found'."""
    with pytest.raises(PackMissing, match="stm32wle5ccux"):
        run(tmp_path, cat, "rak3172", installed=set(), probes=[])


def test_a_pack_file_is_handed_to_pyocd(tmp_path, cat):
    world = run(tmp_path, cat, "rak3172", installed=set(), pack="/packs/Keil.STM32WLxx_DFP.pack")
    assert world.opened[0][2]["pack"] == "/packs/Keil.STM32WLxx_DFP.pack"


def test_target_unknown_to_pyocd_at_connect(tmp_path, cat):
    unknown = exceptions.TargetSupportError("Target type stm32wle5ccux not recognized.")
    with pytest.raises(PackMissing, match="stm32wle5ccux"):
        run(tmp_path, cat, "rak3172", failures=Failures(open=unknown))


def test_a_byte_the_flash_did_not_take_fails_verify(tmp_path, cat):
    with pytest.raises(VerifyFailed, match="0x00014123"):
        run(tmp_path, cat, failures=Failures(lose_byte_at=0x14123))


def test_several_probes_need_a_choice(tmp_path, cat):
    probes = [CMSISDAPProbe("0700000100ab"), JLinkProbe("000801234567")]
    with pytest.raises(ProbeError, match="2 probes are attached") as e:
        run(tmp_path, cat, probes=probes)
    assert "--probe" in e.value.hint
    world = run(tmp_path, cat, probes=probes, probe="8012")          # a partial id is enough
    assert world.opened[0][0] == "000801234567"
    with pytest.raises(ProbeNotFound, match="no probe matches 'ffff'"):
        run(tmp_path, cat, probes=probes, probe="ffff")


def test_probe_gone_before_opening(tmp_path, cat):
    with pytest.raises(ProbeNotFound, match="went away"):
        run(tmp_path, cat, failures=Failures(session_none=True))


def test_probe_listing_names_kinds():
    world = FakeWorld(probes=[CMSISDAPProbe("0700000100ab"), JLinkProbe("000801234567")])
    got = swd_link.list_probes(FakePyOCD(world))
    assert [(p.unique_id, p.kind) for p in got] == [("0700000100ab", "CMSIS-DAP"), ("000801234567", "J-Link")]


def test_real_pyocd_has_the_apollo3_built_in():
    api = swd_link.pyocd_api()
    assert api.knows_target("ama3b1kk_kbr") and not api.knows_target("no_such_chip_42")


def test_without_pyocd_one_line_says_how_to_get_it(monkeypatch):
    for name in [m for m in sys.modules if m == "pyocd" or m.startswith("pyocd.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyocd", None)
    with pytest.raises(SwdUnavailable) as e:
        swd_link.pyocd_api()
    assert e.value.hint == "Install it with: pip install 'rakflash[swd]'"


# ------------------------------------------------------------------ Apollo3 INFO0 over SWD

def test_info0_read(cat):
    mod = cat.module("rak11720")
    world = world_for(mod)
    api = FakePyOCD(world)
    raw = swd_link.read_info0(api, swd_link.choose_probe(api, None), mod)
    assert raw == bytes(world.info0) and world.reads == [(apollo3_info0.BASE, 8192)]
    assert world.opened[0][2]["reset_type"] == "emulated"


def test_info0_write_calls_the_rom_helpers_and_reads_back(cat):
    mod = cat.module("rak11720")
    world = world_for(mod)
    world.info0[:] = apollo3_info0.rak11720_default().replace(override_gpio=0x7F).raw
    api = FakePyOCD(world)
    new = apollo3_info0.rak11720_default().raw
    events = Recorder()
    swd_link.write_info0(api, swd_link.choose_probe(api, None), mod, new, emit=events)
    assert world.rom_calls == [0x08000084, 0x08000060]          # erase, then program from SRAM
    assert bytes(world.info0) == new
    assert [e.phase for e in events.of(Phase)] == ["erase", "write", "verify", "start"]


def test_info0_helper_refusal_is_named(cat, monkeypatch):
    mod = cat.module("rak11720")
    world = world_for(mod)
    monkeypatch.setattr(apollo3_info0, "PROGRAM_KEY", 0x12345678)   # a wrong key: the ROM says no
    api = FakePyOCD(world)
    with pytest.raises(TransferFault, match="erasing INFO0"):
        swd_link.write_info0(api, swd_link.choose_probe(api, None), mod, b"\xff" * 8192)
