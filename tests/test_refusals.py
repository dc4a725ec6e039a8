"""rakflash never writes what it cannot vouch for: firmware for another module, a guess at which
module it is, an image built for the bootloader's address — and an uncertain identity never
weakens a refusal. Every test runs the real CLI against virtual modules through real ptys."""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import sys
import time

import pytest

from conftest import FAST_BAUD, SRC, cli_json, flash_pressing_reset, run_cli
from fakes import FakePort, echo, yes_man
from rakflash.sim import Mode, firmware


def write(tmp_path, name: str, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def flash(path, dev, *extra, **kw):
    return cli_json("flash", str(path), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", *extra, **kw)


def json_lines(proc) -> list[dict]:
    return [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]


def rak811_image_that_also_fits_a_rak4270(cat, version="V3.0.0.14.H", size=20 * 1024) -> bytes:
    """A RAK811 build whose initial stack pointer lies in the RAM of both STM32L151CB-A and STM32L071KB."""
    body = bytearray(firmware.app_image(cat.module("rak811"), version, size))
    struct.pack_into("<I", body, 0, 0x20004000)
    return bytes(body)


# ------------------------------------------------------------------ 1. which module it is

def test_rak811_firmware_is_not_written_to_a_rak4270(virtual, tmp_path, cat):
    """The issue's case: RUI v3 firmware that answers at+get_config=device:status says it is a RAK4270."""
    dev = virtual("rak4270")
    r811 = write(tmp_path, "rak811_fw.bin", firmware.app_image(cat.module("rak811"), "V3.0.0.15.H", 20 * 1024))
    code, out = flash(r811, dev)
    assert (code, out["error"]) == (6, "wrong-target"), out
    assert "STM32L151" in out["message"] and "RAK4270" in out["message"]
    assert dev.updates == 0 and dev.app_version == "V3.0.0.13.H"
    code, info = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (info["module"], info["module_certain"], info["hardware_model"]) == ("RAK4270", True, "RAK4270")
    own = write(tmp_path, "rak4270_fw.bin", firmware.app_image(cat.module("rak4270"), "V3.0.0.15.L", 20 * 1024))
    code, out = flash(own, dev)
    assert code == 0 and dev.app_version == "V3.0.0.15.L", out


@pytest.mark.parametrize("image_for", ["rak811", "rak4270"])
def test_a_device_that_cannot_say_which_module_it_is_gets_no_guess(virtual, tmp_path, cat, image_for):
    """Firmware that doesn't name its board: RAK811 and RAK4270 look alike, so the image's
    chip can't decide. Under --yes that is a refusal naming --module; --module settles it."""
    dev = virtual("rak4270", board_status=False)
    img = write(tmp_path, f"{image_for}.bin", firmware.app_image(cat.module(image_for), "V3.0.0.15.H", 20 * 1024))
    code, out = flash(img, dev)
    assert (code, out["error"]) == (6, "module-uncertain"), out
    assert "does not say whether it is a RAK811 or a RAK4270" in out["message"]
    assert f"--module {image_for}" in out["hint"] and out["candidates"] == ["RAK811", "RAK4270"]
    assert dev.updates == 0 and dev.wait_mode(Mode.APP)
    code, out = flash(img, dev, "--module", "rak4270")
    if image_for == "rak4270":
        assert code == 0 and dev.app_version == "V3.0.0.15.H", out
    else:
        assert (code, out["error"]) == (6, "wrong-target") and dev.updates == 0, out


def test_info_says_which_modules_it_could_be(virtual):
    dev = virtual("rak811", board_status=False)
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert code == 0 and out["module_certain"] is False, out
    assert out["candidates"] == ["RAK811", "RAK4270"]
    proc = run_cli("info", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert "module        RAK811 or RAK4270" in proc.stdout and "--module" in proc.stdout


def _run_on_a_terminal(args: list[str], answers: list[tuple[bytes, bytes]], timeout: float = 60):
    """`rakflash …` with a terminal on standard input, typing each answer after its question."""
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", *args], stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    seen, everything = b"", b""
    try:
        for question, answer in answers:
            end = time.monotonic() + timeout
            while question not in seen and time.monotonic() < end:
                if select.select([proc.stdout], [], [], 0.2)[0]:
                    chunk = os.read(proc.stdout.fileno(), 4096) or b""
                    seen, everything = seen + chunk, everything + chunk
            assert question in seen, seen
            seen = seen[seen.index(question) + len(question):]
            os.write(master, answer)
        out, err = proc.communicate(timeout=timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, everything + out, err


def test_on_a_terminal_the_person_is_asked_which_module_it_is(virtual, tmp_path, cat):
    dev = virtual("rak4270", board_status=False)
    img = write(tmp_path, "rak4270.bin", firmware.app_image(cat.module("rak4270"), "V3.0.0.15.L", 8 * 1024))
    code, out, err = _run_on_a_terminal(
        ["flash", str(img), "--port", dev.port, "--baud", str(FAST_BAUD)],
        [(b"Which module is it?", b"rak4270\n"), (b"[y/N]: ", b"y\n")])
    assert code == 0, err
    assert b"the module is a RAK4270, as you said" in out
    assert dev.app_version == "V3.0.0.15.L"


# ------------------------------------------------------------------ issue 7: uncertain never weakens a refusal

def test_old_rak811_bootloader_refuses_an_image_that_also_fits_a_rak4270(virtual, tmp_path, cat):
    """`rakflash sim rak811 --bootloader-version 3.0.2` and a V3.0.0.14 image whose stack pointer
    fits both chips: the RAK811 rule applies, found in the bootloader before writing."""
    dev = virtual("rak811", bootloader_version="V3.0.2")
    img = write(tmp_path, "RAK811_v3.0.0.14.bin", rak811_image_that_also_fits_a_rak4270(cat))
    code, out = flash(img, dev)
    assert (code, out["error"]) == (6, "bootloader-too-old"), out
    assert "needs bootloader 3.0.5 or later; this one has V3.0.2" in out["message"]
    assert dev.updates == 0 and dev.wait_mode(Mode.APP) and dev.app_version == "V3.0.0.13.H"


def test_the_rules_of_every_module_it_could_be_apply(virtual, tmp_path, cat):
    """In its bootloader a RUI v3 module can't say whether it is a RAK811 or a RAK4270: the
    RAK811's rule still refuses, and the message says on which assumption."""
    dev = virtual("rak811", bootloader_version="V3.0.2", state="bootloader")
    img = write(tmp_path, "RAK811_v3.0.0.14.bin", rak811_image_that_also_fits_a_rak4270(cat))
    code, out = flash(img, dev)
    assert (code, out["error"]) == (6, "bootloader-too-old"), out
    assert out["message"].startswith("If this is a RAK811 (the device does not say whether it is a "
                                     "RAK811 or a RAK4270), its firmware V3.0.0.14.H needs bootloader 3.0.5")
    assert "pyocd flash -t stm32l151cbux" in out["hint"]
    assert dev.updates == 0 and dev.mode == Mode.BOOTLOADER


def test_firmware_that_names_no_board_and_an_old_bootloader_is_never_written(virtual, tmp_path, cat):
    dev = virtual("rak811", bootloader_version="V3.0.2", board_status=False)
    img = write(tmp_path, "RAK811_v3.0.0.14.bin", rak811_image_that_also_fits_a_rak4270(cat))
    code, out = flash(img, dev)
    assert (code, out["error"]) == (6, "module-uncertain"), out
    assert "RAK811 firmware from 3.0.0.14 on needs bootloader 3.0.5 or later" in out["hint"]
    code, out = flash(img, dev, "--module", "rak811")
    assert (code, out["error"]) == (6, "bootloader-too-old"), out
    assert dev.updates == 0 and dev.wait_mode(Mode.APP)


def test_a_module_caught_after_a_flood_is_not_taken_for_what_the_image_is_built_for(virtual, tmp_path, cat):
    """The flood hides the application; the caught bootloader can't say RAK811 from RAK4270, and
    the image's chip (it also fits a RAK4270) is no word on it: the RAK811 rule still refuses."""
    dev = virtual("rak811", bootloader_version="V3.0.2", sketch="flooding", flood_after=0.5, baud=115200)
    time.sleep(0.7)                  # the sketch is flooding now
    img = write(tmp_path, "RAK811_v3.0.0.14.bin", rak811_image_that_also_fits_a_rak4270(cat))
    code, events = flash_pressing_reset(dev, str(img), "--port", dev.port, "--baud", "115200", "--yes",
                                        "--reset-window", "20")
    assert (code, events[-1]["error"]) == (6, "bootloader-too-old"), events[-1]
    assert "If this is a RAK811" in events[-1]["message"]
    assert dev.updates == 0


# ------------------------------------------------------------------ 2. a version string naming another module

def test_a_version_string_naming_another_module_is_refused_unless_forced(virtual, tmp_path, cat):
    dev = virtual("rak3172")
    img = write(tmp_path, "app.bin", firmware.app_image(cat.module("rak3172"), "RUI_4.0.12_RAK11720", 8 * 1024))
    code, out = flash(img, dev)
    assert (code, out["error"]) == (6, "wrong-target"), out
    assert "RUI_4.0.12_RAK11720, which names RAK11720, but the module is a RAK3172" in out["message"]
    assert "--force" in out["hint"] and dev.updates == 0
    proc = run_cli("flash", str(img), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "--force", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = next(e for e in json_lines(proc) if e.get("event") == "plan")
    assert any("names RAK11720, not RAK3172" in w for w in plan["warnings"])
    assert dev.app_version == "RUI_4.0.12_RAK11720"


def test_aliases_of_the_module_are_its_own(virtual, tmp_path, cat):
    """RUI3 names the RAK3172's image after its evaluation board (RAK3172-E): the module's own.
    (A RAK3272-SiP image is another board's: tests/test_variants.py.)"""
    dev = virtual("rak3172")
    img = write(tmp_path, "app.bin", firmware.app_image(cat.module("rak3172-e"), "RUI_4.0.7_RAK3172-E", 8 * 1024))
    code, out = flash(img, dev, "--module", "rak3272")
    assert code == 0, out


# ------------------------------------------------------------------ 3. an image with no version string

@pytest.mark.parametrize("module", ["rak3172", "rak811"])
def test_an_image_without_a_version_is_warned_about_and_reported_honestly(virtual, tmp_path, cat, module):
    dev = virtual(module)
    data = bytearray(firmware.app_image(cat.module(module), "VERSIONLESS", 8 * 1024))
    img = write(tmp_path, "noversion.bin", bytes(data))
    args = ["flash", str(img), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes"]
    if module == "rak811":
        args += ["--module", "rak811"]
    proc = run_cli(*args, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = json_lines(proc)
    kinds = [e.get("event") for e in events]
    plan = events[kinds.index("plan")]
    assert any("carries no version string" in w for w in plan["warnings"])
    assert kinds.index("plan") < kinds.index("progress")          # said before anything was written
    warning = next(e for e in events if e.get("event") == "warning" and e["code"] == "version-unconfirmed")
    assert "can't confirm which firmware runs now; the new firmware answers" in warning["message"]
    result = events[-1]
    assert (result["result"], result["bytes"], result["version_confirmed"]) == ("ok", 8 * 1024, False)
    assert result["app_version_after"] is None
    code, info = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD),
                          *(["--module", "rak811"] if module == "rak811" else []))
    assert code == 0 and info["mode"] == "app"
    text = run_cli(*args).stderr
    assert "carries no version string" in text and "None" not in text


# ------------------------------------------------------------------ 4. built for the bootloader's address

def bootloader_bin(cat) -> bytes:
    m = cat.module("rak3172")
    code = bytearray(firmware.bootloader_image(m, "RUI_BOOT_0.9_STM32WLE5CC")[m.region("bootloader").start])
    return bytes(code) + b"\xff" * 4096


def test_inspect_says_a_bin_is_built_for_the_bootloaders_address(tmp_path, cat):
    p = write(tmp_path, "boot.bin", bootloader_bin(cat))
    proc = run_cli("inspect", str(p))
    assert proc.returncode == 0, proc.stderr
    base = next(ln for ln in proc.stdout.splitlines() if ln.startswith("base"))
    assert "0x08000000 (built for the bootloader's address: its reset vector 0x08000100 lies in " \
           "RAK3172's bootloader region 0x08000000-0x08004000" in base
    assert "won't send it" in base and "application base (catalog)" not in proc.stdout
    code, out = cli_json("inspect", str(p))
    assert out["base_source"] == "bootloader"


def test_flash_says_why_it_wont_send_a_bootloader_bin(virtual, tmp_path, cat):
    dev = virtual("rak3172")
    p = write(tmp_path, "boot.bin", bootloader_bin(cat))
    code, out = flash(p, dev)
    assert (code, out["error"]) == (6, "touches-bootloader"), out
    assert "is built for the bootloader's address: its reset vector 0x08000100 lies in RAK3172's " \
           "bootloader region" in out["message"]
    assert "pyocd flash" in out["hint"] and dev.updates == 0


# ------------------------------------------------------------------ 5. not a module at all

def test_a_device_answering_ok_to_everything_is_an_unknown_device(tmp_path, cat):
    app = tmp_path / "RAK3172_app.bin"      # real firmware: a file that is not is refused before the port
    app.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 8192))
    with yes_man() as port:
        code, out = cli_json("info", "--port", port.port, "--baud", "115200")
        assert (code, out["error"]) == (5, "unknown-device"), out
        assert "answers OK to every line" in out["message"]
        proc = run_cli("info", "--port", port.port, "--baud", "115200")
        assert proc.returncode == 5 and "None" not in proc.stdout + proc.stderr
        code, out = cli_json("flash", str(app), "--port", port.port, "--baud", "115200", "--yes",
                             "--module", "rak3172")
        assert (code, out["error"]) == (5, "unknown-device"), out


def test_an_at_modem_is_an_unknown_device_not_a_module_of_unknown_model():
    modem = FakePort(lambda line: b"OK\r\n" if line.strip().upper() == b"AT" else b"ERROR\r\n", by_line=True)
    with modem:
        code, out = cli_json("info", "--port", modem.port, "--baud", "115200")
    assert (code, out["error"]) == (5, "unknown-device"), out
    assert "answers AT with OK, but none of RUI3's questions" in out["message"]


def test_a_port_that_echoes_is_its_own_finding():
    with echo() as port:
        code, out = cli_json("info", "--port", port.port)
        assert (code, out["error"]) == (5, "echoing-port"), out
        assert "TX and RX" in out["hint"]


def test_info_says_when_module_contradicts_a_bootloader(virtual):
    dev = virtual("rak811", state="bootloader")
    code, out = cli_json("info", "--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak3172")
    assert code == 0 and out["module"] == "RAK811" and out["candidates"] == ["RAK811", "RAK4270"], out
    assert any("--module says RAK3172, but this bootloader (V3.0.5) is a RAK811 or a RAK4270's" in n
               for n in out["notes"])
