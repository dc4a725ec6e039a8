"""SWD on real hardware. These run only when a debug probe is attached, and write a module only
when told which one and with which image; otherwise they skip and say why (pytest -ra shows it)."""

from __future__ import annotations

import os

import pytest

from rakflash import apollo3_info0, catalog, images, swd_link


@pytest.fixture(scope="module")
def probe():
    found = swd_link.list_probes()
    if not found:
        pytest.skip("no SWD probe attached: plug in a RAKDAP1 (CMSIS-DAP) or a J-Link to run the "
                    "hardware tests")
    return found[0]


@pytest.fixture(scope="module")
def module():
    key = os.environ.get("RAKFLASH_SWD_MODULE")
    if not key:
        pytest.skip("set RAKFLASH_SWD_MODULE (e.g. rak11720) to test against the module wired to the probe")
    return catalog.load().module(key)


def test_the_attached_probe_is_listed(probe):
    assert probe.unique_id and probe.kind


def test_write_and_verify_the_wired_module(probe, module):
    path = os.environ.get("RAKFLASH_SWD_IMAGE")
    if not path:
        pytest.skip("set RAKFLASH_SWD_IMAGE=FULL.hex (this overwrites the module's firmware)")
    plan = swd_link.plan_swd(images.load(path, module=module), module, probe=probe.unique_id)
    result = swd_link.run_swd(plan)
    assert result.verified and result.bytes == plan.bytes


def test_read_info0_of_the_wired_apollo3(probe, module):
    if module.mcu.key != "apollo3":
        pytest.skip(f"{module.name} has no Apollo3 INFO0")
    api = swd_link.pyocd_api()
    raw = swd_link.read_info0(api, probe, module)
    assert len(raw) == apollo3_info0.SIZE and swd_link.read_info0(api, probe, module) == raw
    apollo3_info0.Info0.parse(raw).findings()         # decodes without error
