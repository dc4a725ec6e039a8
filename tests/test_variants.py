"""The RUI3 variants (issue 24): the RAK3172's boards (SiP, LP-SiP, -T, -F), the RAK11160 with its
ESP8684, and the RAK3401 beside the RAK4631-R: in the catalog with their sources, told apart the way
RUI3 itself tells them (AT+HWMODEL=?, the image's "RUI_<version>_<board>"), and another board's
image refused where RUI3 builds it for other hardware."""

from __future__ import annotations

import json

import pytest

from conftest import FAST_BAUD, cli_json, run_cli
from rakflash import images
from rakflash.flows.doctor import diagnose
from rakflash.sim import Mode, firmware
from web_support import web  # noqa: F401  (a fixture)

STM32WL = ["rak3172", "rak3172-sip", "rak3172lp-sip", "rak3172-t", "rak3172-f", "rak11160"]
# What the real firmware answers (RAK-STM32-RUI / RAK-nRF52-RUI variants/*/version.c: MODEL_ID,
# and FW_REVISION's board part).
RUI3_SAYS = {"rak3172": ("rak3172", "RAK3172-E"), "rak3172-sip": ("rak3172-sip", "RAK3272-SiP"),
             "rak3172lp-sip": ("rak3172lp-sip", "RAK3272LP-SiP"), "rak3172-t": ("rak3172T", "RAK3172-T"),
             "rak3172-f": ("rak3172F", "RAK3172-F"), "rak11160": ("rak11160", "RAK11160"),
             "rak4631-r": ("rak4630", "RAK4631"), "rak3401": ("rak3400", "RAK3401")}


def image(tmp_path, cat, key, version, size=8 * 1024):
    p = tmp_path / f"{version}.bin"
    p.write_bytes(firmware.app_image(cat.module(key), version, size))
    return p


def flash(path, dev, *extra):
    return cli_json("flash", str(path), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", *extra)


def test_every_variant_is_in_modules_with_what_rui3_calls_it_and_its_sources():
    code, out = cli_json("modules")
    assert code == 0, out
    rows = {r["key"]: r for r in out["modules"]}
    for key, (model, image_name) in RUI3_SAYS.items():
        r = rows[key]
        assert (r["hardware_models"], r["image_names"]) == ([model], [image_name]), r
        assert r["sources"] and any("RUI" in s for s in r["sources"]), r
    for key in STM32WL:            # the same chip, flash map, update and recovery as the RAK3172
        assert (rows[key]["mcu"], rows[key]["app_base"], rows[key]["app_size"], rows[key]["protocol"]) == \
            ("STM32WLE5CC", 0x08006000, 200704, "ymodem")
        assert rows[key]["recover_command"].endswith(f"--module {key}")
    assert rows["rak3401"]["protocol"] == "nordic-dfu" and rows["rak3401"]["variant_of"] == "rak4631-r"
    # What is not confirmed from public sources is marked, and the RAK3172-F's flash map is one.
    assert any("flash map" in i for i in rows["rak3172-f"]["inferred"])
    assert rows["rak11160"]["companion"]["chip"] == "ESP8684"
    assert "rak4630" in rows["rak4631-r"]["aliases"]   # one RUI3 image for the stamp and the core


@pytest.mark.parametrize("key", STM32WL)
def test_info_tells_each_variant_apart_by_what_its_firmware_says(virtual, key):
    dev = virtual(key)
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert code == 0, out
    model, image_name = RUI3_SAYS[key]
    assert (out["module_key"], out["module_certain"], out["hardware_model"]) == (key, True, model), out
    assert out["app_version"].endswith("_" + image_name)


@pytest.mark.parametrize("key, image_of", [("rak3172", "rak3172-sip"), ("rak3172-t", "rak3172"),
                                           ("rak3172", "rak3172-f"), ("rak3172-sip", "rak3172lp-sip"),
                                           ("rak11160", "rak3172")])
def test_another_boards_image_is_refused_before_anything_is_written_unless_forced(
        virtual, tmp_path, cat, key, image_of):
    dev = virtual(key)
    before = dev.app_version
    version = firmware.DEFAULT_VERSIONS[image_of][2]
    p = image(tmp_path, cat, image_of, version)
    code, out = flash(p, dev)
    assert (code, out["error"]) == (6, "wrong-target"), out
    assert f"built for the {cat.module(image_of).name}" in out["message"]
    assert f"the module is a {cat.module(key).name}" in out["message"]
    assert "Nothing was written" in out["hint"] and "--force" in out["hint"]
    assert dev.updates == 0 and dev.app_version == before
    code, out = flash(p, dev, "--force")
    assert code == 0 and dev.app_version == version, out


def test_the_lp_sip_takes_the_sip_image_as_rui3_builds_it(virtual, tmp_path, cat):
    """RAK's Arduino BSP builds its RAK3272LP-SiP board from the SiP's variant (boards.txt)."""
    dev = virtual("rak3172lp-sip")
    version = firmware.DEFAULT_VERSIONS["rak3172-sip"][2]
    code, out = flash(image(tmp_path, cat, "rak3172-sip", version), dev)
    assert code == 0 and out["result"] == "ok" and dev.app_version == version, out
    code, info = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert info["module_key"] == "rak3172lp-sip"
    assert any("RUI3 itself builds that image for this board too" in n for n in info["notes"]), info


def test_a_board_running_another_boards_image_is_said_by_info_and_doctor(virtual):
    """AT+HWMODEL=? is stored once and kept across updates; AT+VER=? is the running image."""
    dev = virtual("rak3172", app_version="RUI_4.0.5_RAK3272-SiP")
    code, info = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (info["module_key"], info["hardware_model"]) == ("rak3172", "rak3172")
    assert any("an image built for the RAK3172-SiP, on a RAK3172" in n for n in info["notes"]), info
    found = {f.code: f for f in diagnose(dev.port, baud=FAST_BAUD).findings}
    f = found["another-boards-image"]
    assert f.level == "note" and "RAK3172-SiP" in f.finding and f.command.startswith("rakflash flash")


def test_in_the_bootloader_the_variants_cannot_be_told_apart_and_the_image_says_which(virtual, tmp_path, cat):
    """One RUI3 bootloader serves every STM32WLE5 board: info says it can't tell; an update finishes
    with the image's board (same flash map, same bootloader), and the board's answer after it decides."""
    dev = virtual("rak3172-sip", state="bootloader")
    code, info = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert code == 0 and info["mode"] == "bootloader" and info["module_certain"] is False, info
    assert set(info["candidates"]) == {cat.module(k).name for k in STM32WL}
    found = {f.code: f for f in diagnose(dev.port, baud=FAST_BAUD).findings}
    assert "one of its RUI3 variants" in found["in-bootloader"].finding
    said = found["module-uncertain"]
    assert "one RUI3 bootloader serves them all" in said.finding and "flash map" in said.why
    assert "differ in flash size" not in said.why
    version = firmware.DEFAULT_VERSIONS["rak3172-sip"][2]
    code, out = flash(image(tmp_path, cat, "rak3172-sip", version), dev)
    assert code == 0 and out["result"] == "ok" and dev.app_version == version, out
    assert dev.mode == Mode.APP


def test_in_the_bootloader_an_image_naming_no_board_is_not_written_on_a_guess(virtual, tmp_path, cat):
    dev = virtual("rak3172-t", state="bootloader")
    code, out = flash(image(tmp_path, cat, "rak3172-t", "VERSIONLESS"), dev)
    assert (code, out["error"]) == (6, "module-uncertain"), out
    assert dev.updates == 0


def test_inspect_names_the_board_an_image_is_built_for(tmp_path, cat):
    for key in [*STM32WL, "rak3401", "rak4631-r"]:
        version = firmware.DEFAULT_VERSIONS[key][2]
        info = images.analyse(images.load(image(tmp_path, cat, key, version)))
        assert info.module.key == key and info.app_version == version


def test_the_rak11160s_esp8684_is_named_with_what_rakflash_can_and_cannot_do(virtual):
    dev = virtual("rak11160")
    code, info = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert code == 0 and info["companion"]["chip"] == "ESP8684", info
    assert any("ESP8684" in n and "AT+ESP=1" in n and "can't update" in n for n in info["notes"])
    f = {f.code: f for f in diagnose(dev.port, baud=FAST_BAUD).findings}["second-chip"]
    assert f.level == "note" and "ESP8684" in f.finding and "ESP-AT" in f.finding
    assert "can't update" in f.why and "AT+ESP=1" in f.next and "never switches" in f.next


def test_the_page_lists_the_variants_and_names_the_rak11160s_second_chip(virtual, web):
    from web_support import need
    httpx = need("httpx", "the web tests' HTTP client")
    dev = virtual("rak11160")
    server = web()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        keys = [m["key"] for m in c.get("api/modules").json()["modules"]]
        assert set(STM32WL) | {"rak3401"} <= set(keys)
        said = c.post("api/identify", json={"port": dev.port, "baud": FAST_BAUD}).json()
    assert (said["module"], said["hardware_model"]) == ("RAK11160", "rak11160"), said
    assert said["companion"]["chip"] == "ESP8684" and any("AT+ESP=1" in n for n in said["notes"])


def test_the_plans_say_what_is_not_confirmed_for_a_variant(virtual, tmp_path, cat):
    """The catalog marks what public sources don't confirm (the RAK3172-F's internal flash map), and
    the update's and the recovery's plans say it before anything is written."""
    dev = virtual("rak3172-f")
    p = image(tmp_path, cat, "rak3172-f", firmware.DEFAULT_VERSIONS["rak3172-f"][2])
    plan = the_plan(run_cli("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--dry-run", "--json"))
    said = [n for n in plan["notes"] if n.startswith("not confirmed from public sources for the RAK3172-F")]
    assert said and "internal flash map" in said[0], plan
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak3172-sip"), "RUI_BOOT_0.9_STM32WLE5CC",
                                         firmware.DEFAULT_VERSIONS["rak3172-sip"][2], 8192))
    plan = the_plan(run_cli("recover", str(full), "--port", dev.port, "--module", "rak3172-sip", "--dry-run",
                            "--json"))
    assert any("BOOT0 pad's number" in n for n in plan["notes"]), plan
    assert dev.updates == 0


def the_plan(proc) -> dict:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return next(e for e in events if e.get("event") == "plan")


def test_a_port_with_the_bootloader_id_two_boards_share_is_said_to_be_either(cat):
    """The RAK3401's RUI3 bootloader enumerates as the RAK4631-R's (1915:521F "Open DFU Bootloader");
    their applications' product strings differ."""
    boot = cat.usb(0x1915, 0x521F, "Open DFU Bootloader")
    assert boot.probably == "RAK4631-R or RAK3401, bootloader mode" and boot.mode == "bootloader"
    app = cat.usb(0x1915, 0x521F, "Rak3401 Serial COM")
    assert (app.module, app.mode) == ("rak3401", "app")
    assert cat.usb(0x1915, 0x521F, "Rak4631 Serial COM").module == "rak4631-r"
