"""`rakflash recover` from the command line, and the seed case end to end through ptys: a RAK811
whose bootloader 3.0.2 can't take firmware 3.0.0.14 is refused by `flash`, recovered with the
exact command the refusal names, and then takes serial updates again."""

from __future__ import annotations

from conftest import FAST_BAUD, cli_json, run_as_a_person, run_cli
from rakflash.sim import Mode, firmware


def recover_holding_boot0(dev, *args: str, timeout: float = 90) -> tuple[int, list[dict]]:
    """Run `rakflash recover … --json` and do what a person does: on the prompt, hold BOOT0
    high and press reset; when told, release BOOT0."""
    def person(event: dict) -> None:
        if event.get("event") == "prompt":
            dev.set_boot_pin(True)
            dev.press_reset()
        if event.get("event") == "warning" and event.get("code") == "release-boot0":
            dev.set_boot_pin(False)
    return run_as_a_person("recover", *args, on_event=person, timeout=timeout)


def test_seed_case_refused_recovered_then_serial_updates_work(virtual, cat, tmp_path):
    rak811 = cat.module("rak811")
    dev = virtual("rak811", bootloader_version="3.0.2", app_version="V3.0.0.13.H")
    port = ["--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak811"]
    fw14 = tmp_path / "RAK811_v3.0.0.14.bin"
    fw14.write_bytes(firmware.app_image(rak811, "V3.0.0.14.H", 40 * 1024))
    code, out = cli_json("flash", str(fw14), *port, "--yes")
    assert (code, out["error"]) == (6, "bootloader-too-old") and "3.0.5" in out["message"]
    command = f"rakflash recover FULL.hex --port {dev.port} --module rak811"
    assert command in out["hint"] and dev.updates == 0

    full = tmp_path / "FULL-3.0.5+3.0.0.14.hex"
    full.write_text(firmware.combined_hex(rak811, "V3.0.5", "V3.0.0.14.H", 40 * 1024))
    code, events = recover_holding_boot0(dev, str(full), *port, "--yes")
    result = events[-1]
    assert code == 0, events[-3:]
    assert (result["bootloader_version_before"], result["bootloader_version_after"]) == ("V3.0.2", "V3.0.5")
    assert (result["app_version_before"], result["app_version_after"]) == ("V3.0.0.13.H", "V3.0.0.14.H")
    # flash's keys, with what is true of a recovery (issues 7 and 13)
    assert (result["port"], result["error"], result["version_confirmed"]) == (dev.port, None, True)
    assert (result["settings"], result["retries"]) == (None, 0)
    # RUI v3: the data EEPROM was kept raw before the write and read back the same after it
    assert (result["keys"], result["settings_kept"]) == ("kept", True)
    assert "data EEPROM at 0x08080000" in result["keys_reason"] and "unchanged" in result["keys_reason"]
    assert result["reset_wait_seconds"] is not None and result["boot_seconds"] == result["reset_wait_seconds"]
    assert {"code": "release-boot0"} .items() <= result["warnings"][0].items()
    kinds = [e["event"] for e in events[:-1]]
    assert kinds[0] == "plan" and "prompt" in kinds and "countdown" in kinds
    prompt = next(e for e in events if e["event"] == "prompt")
    assert "pin 17" in prompt["message"] and "pins 6 and 7" in prompt["message"]
    assert dev.boot_pin is False and dev.wait_mode(Mode.APP)

    code, info = cli_json("info", *port, "--ask-bootloader")
    assert code == 0 and info["app_version"] == "V3.0.0.14.H" and info["mode"] == "app"
    assert info["bootloader_version"] == "V3.0.5"            # read in the bootloader itself
    assert dev.wait_mode(Mode.APP)                            # …and the application runs again

    fw15 = tmp_path / "RAK811_v3.0.0.15.bin"
    fw15.write_bytes(firmware.app_image(rak811, "V3.0.0.15.H", 40 * 1024))
    code, out = cli_json("flash", str(fw15), *port, "--yes", timeout=120)
    assert code == 0 and out["app_version_after"] == "V3.0.0.15.H", out
    assert dev.bootloader_version == "V3.0.5" and dev.updates == 1
    assert set(out) <= set(result), set(out) - set(result)     # every key flash's success line has


def test_dry_run_prints_plan_pins_and_time_without_touching_the_port(cat, tmp_path):
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak3172"), "RUI_BOOT_0.9_STM32WLE5CC",
                                          "RUI_4.0.6_RAK3172-E", 64 * 1024))
    proc = run_cli("recover", str(full), "--port", "/dev/does-not-exist", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "pin 21" in proc.stdout and "pins 1 and 2" in proc.stdout and "estimate" in proc.stdout
    assert "stm32flash -b 115200 -w" in proc.stdout
    code, out = cli_json("recover", str(full), "--port", "/dev/does-not-exist", "--dry-run")
    assert code == 0 and out["dry_run"] and out["estimated_seconds"] > 6
    assert out["module"] == "RAK3172" and out["bootloader_version_new"] == "RUI_BOOT_0.9_STM32WLE5CC"


def _numbers(text: str) -> list[int]:
    import re
    return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\d|\d", text)]


def test_dry_run_numbers_agree_and_pins_are_named_once(cat, tmp_path):
    """The bytes written are the image's bytes, less 0xFF runs not sent, plus padding — said so,
    and the bytes verified are the image's; no pin or way to reset is said twice."""
    for key, boot, app in (("rak811", "V3.0.5", "V3.0.0.14.H"),
                           ("rak3172", "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.6_RAK3172-E")):
        full = tmp_path / f"{key}.hex"
        full.write_text(firmware.combined_hex(cat.module(key), boot, app, 80 * 1024))
        proc = run_cli("recover", str(full), "--port", "/dev/null", "--module", key, "--dry-run")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        image = next(ln for ln in lines if ln.startswith("image"))
        write = next(ln for ln in lines if ln.strip().startswith("5. write"))
        verify = next(ln for ln in lines if ln.strip().startswith("6. verify"))
        sent, blocks, size, size_img, *parts = _numbers(write.split("5.", 1)[1].replace("0xFF", "")
                                                        .replace("4-byte", ""))
        assert f"{sent:,} bytes to write" in image
        less = _numbers(write.split("less ")[1])[0] if "less " in write else 0
        plus = _numbers(write.split("plus ")[1])[0] if "plus " in write else 0
        assert sent == size_img - less + plus
        assert f"verify all {size_img:,} bytes of the image" in verify
        text = proc.stdout
        assert "(UART1) (UART1" not in text and ") (UART2," not in text and " — the same pins" in text
        assert text.count("power it off and on") == 1 and "BOOT0 (pin" not in text


def test_rak4270_is_sent_to_swd_and_nothing_is_asked(cat, tmp_path):
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak4270"), "V3.0.5", "V3.0.0.14.H", 8 * 1024))
    code, out = cli_json("recover", str(full), "--module", "rak4270", "--dry-run")
    assert (code, out["method"], out["dry_run"]) == (0, "swd", True)   # its only way, no BOOT0 asked
    code, out = cli_json("recover", str(full), "--port", "/dev/null", "--module", "rak4270",
                         "--method", "stm32-rom")
    assert (code, out["error"]) == (6, "recovery-unavailable")
    assert "pyocd flash -t stm32l071kbux" in out["hint"]


def test_without_a_terminal_and_without_yes_nothing_is_written(virtual, cat, tmp_path):
    dev = virtual("rak811")
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak811"), "V3.0.5", "V3.0.0.14.H", 8 * 1024))
    code, out = cli_json("recover", str(full), "--port", dev.port, "--baud", str(FAST_BAUD), input="")
    assert (code, out["error"]) == (10, "confirmation-needed")
    assert dev.app_version == "V3.0.0.13.H"


def test_bad_line_names_are_usage_errors(cat, tmp_path):
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak811"), "V3.0.5", "V3.0.0.14.H", 8 * 1024))
    code, out = cli_json("recover", str(full), "--port", "/dev/null", "--reset-with", "cts")
    assert code == 2 and "rts, dtr, -rts or -dtr" in out["message"]


def test_modules_lists_recover_and_the_stm32flash_equivalent():
    code, out = cli_json("modules")
    by_key = {m["key"]: m for m in out["modules"]}
    assert by_key["rak811"]["recover_command"] == "rakflash recover FULL.hex --port PORT --module rak811"
    assert "stm32flash -w FULL.hex -v -g 0x08000000 PORT" in by_key["rak811"]["recovery"]
    assert by_key["rak4270"]["recover_command"] is None and "no BOOT0" in by_key["rak4270"]["recovery"]


def test_ctrl_c_while_writing_says_what_the_chip_holds_and_the_rerun_finishes(virtual, cat, tmp_path):
    # Issue 17.4: Ctrl-C mid-write said "Nothing was written to the module." with "bytes": null,
    # though the bootloader had been erased and partly rewritten.
    import json
    import os
    import signal
    import subprocess
    import sys

    from conftest import SRC
    dev = virtual("rak3172")
    full = tmp_path / "RAK3172_FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak3172"), "RUI_BOOT_0.9_STM32WLE5CC",
                                          "RUI_4.0.6_RAK3172-E", 64 * 1024))
    args = [str(full), "--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak3172", "--yes"]
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "recover", *args, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(json.loads(line))
            e = lines[-1]
            if e.get("event") == "prompt":
                dev.set_boot_pin(True)
                dev.press_reset()
            if e.get("event") == "progress" and e.get("phase") == "write" and e["bytes"] >= 2048:
                proc.send_signal(signal.SIGINT)
                break
        lines += [json.loads(ln) for ln in proc.stdout.read().splitlines()]
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = lines[-1]
    assert (proc.returncode, last["error"], last["written"]) == (130, "interrupted", "part"), last
    assert last["bytes"] >= 2048 and "Nothing was written" not in last["hint"]
    assert last["hint"].startswith("Part of the image was written: RAK3172 holds the new image's "
                                   "bytes at 0x08000000-")
    assert "Keep BOOT0 held high and run the same command again" in last["hint"]
    # the keys read before the write: where the copy is, on the line and in the hint
    copy = last["keys_kept_in"]
    assert copy and os.path.isfile(copy) and f"The keys read before the write are kept in {copy}." in last["hint"]
    assert json.loads(open(copy).read())["dev_eui"] == dev.opts.dev_eui.upper()
    # …and that is what finishes it: BOOT0 still held, no reset pressed.
    code, events = run_as_a_person("recover", *args, on_event=lambda e: None)
    assert code == 0 and events[-1]["written"] == "all", events[-3:]
    assert events[-1]["keys"] == "kept"
    assert events[-1]["bootloader_version_after"] == "RUI_BOOT_0.9_STM32WLE5CC"


def test_the_port_is_checked_before_the_plan_is_printed(virtual, cat, tmp_path):
    # Issue 20.9: 25 lines of plan, then "port does not exist" / "port-busy".
    from rakflash.link import Link
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak811"), "V3.0.5", "V3.0.0.14.H", 4096))
    proc = run_cli("recover", str(full), "--port", "/dev/does-not-exist", "--module", "rak811", "--yes")
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    assert "plan:" not in proc.stdout and "you:" not in proc.stdout, proc.stdout
    code, out = cli_json("recover", str(full), "--port", "/dev/does-not-exist", "--module", "rak811", "--yes")
    assert (out["error"], out["written"]) == ("port-not-found", "nothing"), out
    dev = virtual("rak811")
    with Link(dev.port, FAST_BAUD):                     # another program holds the port
        proc = run_cli("recover", str(full), "--port", dev.port, "--module", "rak811", "--yes")
    assert "in use by another program" in proc.stderr and "plan:" not in proc.stdout, proc.stdout


def test_a_log_names_each_phase_once_in_words(virtual, cat, tmp_path):
    # Issue 20.9: "connecting…" twice, a raw "identify-after…", and "application ? → …".
    dev = virtual("rak811", boot_pin=True)            # its ROM answers already: nothing to press
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak811"), "V3.0.5", "V3.0.0.14.H", 4096))
    proc = run_cli("recover", str(full), "--port", dev.port, "--baud", str(FAST_BAUD), "--module",
                   "rak811", "--yes")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines.count("connecting…") == 1 and "identifying again…" in lines, lines
    assert "identify-after" not in proc.stderr and "?" not in proc.stdout.splitlines()[-1]
    assert "application unknown → V3.0.0.14.H" in proc.stdout


def test_the_rerun_after_a_rom_error_asks_nothing_and_finishes(virtual, cat, tmp_path):
    # Issue 17.9: after a ROM error the ROM waits already; the re-run prompted "hold BOOT0 and
    # reset" anyway, and a person pressing reset a moment after the prompt cut the session short.
    import threading
    dev = virtual("rak811", boot_pin=True)
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak811"), "V3.0.5", "V3.0.0.14.H", 8192))

    def person(event: dict) -> None:
        if event.get("event") == "prompt":
            threading.Timer(0.3, dev.press_reset).start()      # BOOT0 is held already
    code, events = run_as_a_person("recover", str(full), "--port", dev.port, "--baud", str(FAST_BAUD),
                                   "--module", "rak811", "--yes", on_event=person)
    assert code == 0 and events[-1]["written"] == "all", events[-3:]
    assert "prompt" not in [e.get("event") for e in events]
    assert any("already answers" in e.get("message", "") for e in events if e.get("event") == "note")
