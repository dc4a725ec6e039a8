"""Every third-party command rakflash prints for a person to run does what rakflash would do.

Each command is taken from rakflash's own output (``--json``, ``--dry-run``) and run as
printed against the virtual module; then the virtual chip's flash is compared with what
rakflash's plan says it writes and erases, and the module must run. The only substitutions
are the ones a person makes: a placeholder (``FULL.hex``, ``PORT``) where rakflash can't know
the file or the port.

Parity: stm32flash talks 8E1 by default, and a Linux pty can't carry parity (stm32flash reads
its settings back and fails, "Failed to set terminal flags"). rakflash opens a pty without
parity itself (rakflash.link), and where it knows the port is a pty it prints ``-m 8n1`` in
the command too — so the recovery plan's command runs here exactly as printed. ``modules``
knows no port (``PORT``): there the test adds ``-m 8n1``, the person's second substitution
for a virtual module (a real adapter needs nothing).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess

import pytest

from conftest import cli_json, run_cli
from rakflash.sim import Mode, firmware

REQUIRE = bool(os.environ.get("RAKFLASH_REQUIRE_PEERS"))
need_stm32flash = pytest.mark.skipif(not shutil.which("stm32flash") and not REQUIRE,
                                     reason="stm32flash (Debian package) is not installed")


def plan_of(*args: str) -> dict:
    """The plan event of `rakflash recover … --dry-run --json`."""
    proc = run_cli("recover", *args, "--dry-run", "--json")
    events = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return next(e for e in events if e.get("event") == "plan")


def run_printed(command: str, cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    """A printed command line, run by a shell as a person pastes it."""
    return subprocess.run(command, shell=True, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def flash_of(dev) -> bytes:
    f = dev.module.mcu.flash
    return dev.flash.read(f.start, f.end - f.start)


def assert_wrote_what_rakflash_plans(dev, plan: dict, before: bytes, image_segments: dict[int, bytes]):
    """The image's bytes at the image's addresses; nothing changed outside the pages the plan erases."""
    base = dev.module.mcu.flash.start
    after = flash_of(dev)
    for addr, data in image_segments.items():
        assert after[addr - base:addr - base + len(data)] == data, f"image bytes differ at {addr:#x}"
    erased = [(e["start"] - base, e["end"] - base) for e in plan["erase"]]
    changed = [i for i in range(len(after)) if after[i] != before[i]
               and not any(a <= i < b for a, b in erased)]
    assert not changed, (f"{len(changed)} bytes changed outside the plan's erase ranges, first at "
                         f"{base + changed[0]:#010x}")


def rak811_files(cat, tmp_path, kind: str) -> tuple[list[str], dict[int, bytes], str, str | None]:
    """(recover's FILE arguments, the bytes they write by address, the app version, the bootloader's)."""
    m = cat.module("rak811")
    app = firmware.app_image(m, "V3.0.0.99.H", 6000)
    boot = firmware.bootloader_image(m, "V3.0.7")
    if kind == "full.hex":
        (tmp_path / "FULL.hex").write_text(firmware.to_hex({**boot, m.app.start: app}))
        return ["FULL.hex"], {**boot, m.app.start: app}, "V3.0.0.99.H", "V3.0.7"
    if kind == "app.hex":
        (tmp_path / "APP.hex").write_text(firmware.to_hex({m.app.start: app}))
        return ["APP.hex"], {m.app.start: app}, "V3.0.0.99.H", None
    (tmp_path / "APP.bin").write_bytes(app)
    if kind == "app.bin":
        return ["APP.bin"], {m.app.start: app}, "V3.0.0.99.H", None
    # a bootloader .bin with --app: the bootloader's code and version string as one .bin
    code_start = m.region("bootloader").start
    end = max(a + len(d) for a, d in boot.items())
    raw = bytearray(b"\xff" * (end - code_start))
    for a, d in boot.items():
        raw[a - code_start:a - code_start + len(d)] = d
    (tmp_path / "BOOT.bin").write_bytes(bytes(raw))
    return (["BOOT.bin", "--app", "APP.bin"], {code_start: bytes(raw), m.app.start: app},
            "V3.0.0.99.H", "V3.0.7")


@need_stm32flash
@pytest.mark.parametrize("kind", ["app.bin", "app.hex", "full.hex", "boot.bin+app"])
def test_recover_plans_stm32flash_command_writes_what_rakflash_would(virtual, cat, tmp_path, monkeypatch, kind):
    """The plan's 'same with stm32flash' for an application .bin or .hex, a full .hex, and a
    bootloader .bin with --app: run as printed, it writes the same bytes at the same addresses (an
    application .bin must not land on the bootloader at 0x08000000), touches nothing outside
    the plan's erased pages, and the module runs the image — also after a reset."""
    monkeypatch.chdir(tmp_path)
    files, segments, app_version, boot_version = rak811_files(cat, tmp_path, kind)
    dev = virtual("rak811", boot_pin=True)
    assert dev.wait_mode(Mode.ROM)
    boot_before = dev.bootloader_version
    plan = plan_of(*files, "--port", dev.port, "--module", "rak811")
    command = plan["stm32flash"]
    assert dev.port in command and "PORT" not in command            # rakflash knows the port
    before = flash_of(dev)
    done = run_printed(command, tmp_path)
    assert done.returncode == 0, command + "\n" + done.stdout[-2000:] + done.stderr
    assert_wrote_what_rakflash_plans(dev, plan, before, segments)
    assert dev.wait_mode(Mode.APP) and dev.app_version == app_version     # Go started it
    dev.set_boot_pin(False)
    dev.press_reset()
    assert dev.wait_mode(Mode.APP) and dev.app_version == app_version
    assert dev.bootloader_version == (boot_version or boot_before)


def test_the_plan_says_what_go_starts(cat, tmp_path):
    """Step 7 names the bootloader the chip starts: the written one only when the image has one."""
    files, *_ = rak811_files(cat, tmp_path, "app.bin")
    plan = plan_of(str(tmp_path / files[0]), "--port", "/dev/null", "--module", "rak811")
    go = next(s for s in plan["steps"] if s.startswith("Go "))
    assert "written bootloader" not in go and "already on it" in go and "written application" in go
    assert "-S 0x08003000" in plan["stm32flash"]
    files, *_ = rak811_files(cat, tmp_path, "full.hex")
    plan = plan_of(str(tmp_path / files[0]), "--port", "/dev/null", "--module", "rak811")
    go = next(s for s in plan["steps"] if s.startswith("Go "))
    assert "written bootloader" in go and "written application" in go
    assert "-m 8n1" not in plan["stm32flash"]          # not a pty: stm32flash's own 8E1


@need_stm32flash
def test_rak3172_stm32flash_command_says_which_stm32flash_it_needs(virtual, cat, tmp_path, monkeypatch):
    """stm32flash 0.7 does not know the STM32WL (0x497): the plan says so next to the command;
    run as printed, either that stm32flash refuses without writing, or a newer one writes the
    application where rakflash would (not over the bootloader) and the module runs it."""
    monkeypatch.chdir(tmp_path)
    m = cat.module("rak3172")
    app = firmware.app_image(m, "RUI_4.0.9_RAK3172-E", 8192)
    (tmp_path / "APP.bin").write_bytes(app)
    dev = virtual("rak3172", boot_pin=True)
    assert dev.wait_mode(Mode.ROM)
    plan = plan_of("APP.bin", "--port", dev.port, "--module", "rak3172")
    assert "0.7" in plan["stm32flash_note"] and "0x497" in plan["stm32flash_note"]
    assert "-S 0x08006000" in plan["stm32flash"]
    before = flash_of(dev)
    done = run_printed(plan["stm32flash"], tmp_path)
    if "Unknown/unsupported device (Device ID: 0x497)" in done.stdout + done.stderr:
        assert done.returncode != 0 and flash_of(dev) == before
        return
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert_wrote_what_rakflash_plans(dev, plan, before, {m.app.start: app})
    assert dev.wait_mode(Mode.APP) and dev.app_version == "RUI_4.0.9_RAK3172-E"


@need_stm32flash
@pytest.mark.parametrize("key,boot,app", [("rak811", "V3.0.7", "V3.0.0.99.H"),
                                          ("rak3172", "RUI_BOOT_0.9_STM32WLE5CC", "RUI_4.0.9_RAK3172-E")])
def test_modules_stm32flash_command_restores_a_full_image(virtual, cat, tmp_path, monkeypatch, key, boot, app):
    """`rakflash modules`' stm32flash equivalent, with the person's FULL.hex and PORT (and -m 8n1
    for the pty, see the module docstring), writes the full image where `recover` would — or, for
    the RAK3172, stm32flash 0.7 refuses its chip as `modules` says it will."""
    monkeypatch.chdir(tmp_path)
    m = cat.module(key)
    code, out = cli_json("modules")
    row = next(r for r in out["modules"] if r["key"] == key)
    command = row["stm32flash_command"]
    segments = {**firmware.bootloader_image(m, boot), m.app.start: firmware.app_image(m, app, 6000)}
    (tmp_path / "FULL.hex").write_text(firmware.to_hex(segments))
    dev = virtual(key, boot_pin=True)
    assert dev.wait_mode(Mode.ROM)
    plan = plan_of("FULL.hex", "--port", dev.port, "--module", key)
    words = shlex.split(command)
    assert words[0] == "stm32flash" and words[-1] == "PORT" and "FULL.hex" in words
    person = shlex.join(["stm32flash", "-m", "8n1", *words[1:-1], dev.port])
    before = flash_of(dev)
    done = run_printed(person, tmp_path)
    if "Unknown/unsupported device (Device ID: 0x497)" in done.stdout + done.stderr:
        assert "0.7" in row["stm32flash_note"] and "0.7" in row["recovery"]
        assert done.returncode != 0 and flash_of(dev) == before
        return
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert_wrote_what_rakflash_plans(dev, plan, before, segments)
    assert dev.wait_mode(Mode.APP) and dev.app_version == app
    assert dev.bootloader_version == boot


def test_readme_recovery_table_shows_the_commands_modules_prints():
    """The README's recovery table repeats `rakflash modules`' pyOCD and stm32flash commands, word for word."""
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    code, out = cli_json("modules")
    printed = {c for r in out["modules"] for c in (r["swd_command"], r["stm32flash_command"]) if c}
    shown = {re.sub(r"\s+", " ", c) for c in re.findall(r"`((?:pyocd flash|stm32flash) [^`]*FULL\.hex[^`]*)`", readme)}
    assert shown, "no recovery commands found in README.md"
    assert shown <= printed, shown - printed


# ------------------------------------------------------------------ pyOCD: no probe here, so the syntax

def pyocd_accepts(command: str) -> None:
    """pyOCD's own command-line parser takes ``command`` (a wrong option or subcommand fails), and
    every ``-O`` session option is one pyOCD knows, with a value it can convert."""
    pytest.importorskip("pyocd", reason="pyOCD is not installed (pip install -e '.[test]' installs it)")
    import contextlib
    import io

    from pyocd.__main__ import PyOCDTool
    from pyocd.core.options import OPTIONS_INFO
    from pyocd.utility.cmdline import convert_one_session_option, convert_reset_type

    words = shlex.split(command)
    assert words[0] == "pyocd", command
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = PyOCDTool().build_parser().parse_args(words[1:])
    except SystemExit:
        pytest.fail(f"pyOCD refuses {command!r}: {said.getvalue().strip()}")
    for option in getattr(args, "options", None) or []:
        name, _, value = option.partition("=")
        name, converted = convert_one_session_option(name.strip().lower(), value.strip() or None)
        assert name in OPTIONS_INFO, f"pyOCD has no session option {name!r} ({command!r})"
        assert converted is not None, f"pyOCD can't take {option!r} ({command!r})"
        if name == "reset_type":
            convert_reset_type(converted)      # raises on a reset type pyOCD doesn't have
    target = getattr(args, "target_override", None)
    if target and not target.startswith("stm32"):
        # the STM32 targets come from CMSIS packs (pyocd pack install): not checkable offline
        from pyocd.target import TARGET
        assert target in TARGET, f"pyOCD has no built-in target {target!r} ({command!r})"


def quoted_pyocd(text: str) -> list[str]:
    return re.findall(r"'(pyocd [^']+)'", text) + re.findall(r"`(pyocd [^`]+)`", text)


def test_pyocd_rejects_a_wrong_option_so_the_check_can_fail():
    with pytest.raises(pytest.fail.Exception):
        pyocd_accepts("pyocd flash -t nrf52840 --erase everything FULL.hex")
    with pytest.raises(AssertionError):
        pyocd_accepts("pyocd flash -t nrf52840 -O reset_kind=emulated FULL.hex")


def test_every_printed_pyocd_command_parses_and_matches_rakflash_swd(cat, tmp_path, monkeypatch):
    """`modules`' pyOCD command, the README's, the SWD recovery plan's and its hints parse with
    pyOCD's own parser; `modules`' command is the SWD recovery's, word for word (same erase, same
    kept bytes, same reset type)."""
    from pathlib import Path
    monkeypatch.chdir(tmp_path)
    code, out = cli_json("modules")
    commands = []
    for row in out["modules"]:
        if row["swd_command"] is None:      # an ESP32 module: its ROM, not SWD (the esptool test below)
            assert row["esptool_command"] and not row["swd_target"], row["key"]
            continue
        commands.append(row["swd_command"])
        commands += quoted_pyocd(row["recovery"])
        key = row["key"]
        versions = firmware.DEFAULT_VERSIONS[key]
        (tmp_path / "FULL.hex").write_text(
            firmware.combined_hex(cat.module(key), versions[0], versions[2], 8 * 1024))
        proc = run_cli("recover", "FULL.hex", "--via", "swd", "--module", key, "--dry-run", "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        plan = next(json.loads(ln) for ln in proc.stdout.splitlines() if '"event": "plan"' in ln)
        assert plan["pyocd_command"] == row["swd_command"], key
        commands += quoted_pyocd(proc.stdout)             # e.g. a missing pack's 'pyocd pack install …'
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    commands += [re.sub(r"\s+", " ", c) for c in quoted_pyocd(readme) if "…" not in c and "TARGET" not in c]
    assert len(commands) > 12
    for command in sorted(set(commands)):
        pyocd_accepts(command)


# ------------------------------------------------------------------ esptool: the ESP32 modules' commands

def esptool_accepts(command: str) -> dict:
    """esptool's own command-line parser (click) takes ``command``: its global options, a command
    it has and that command's arguments (files named must exist). Nothing is run. Returns the
    parsed global options."""
    import click
    from esptool import cli

    words = shlex.split(command)
    assert words[0] == "esptool", command
    cli._esp = None                         # what esptool's own __call__ sets before parsing
    try:
        ctx = cli.make_context("esptool", words[1:])
        name, cmd, rest = cli.resolve_command(ctx, list(getattr(ctx, "_protected_args", [])) + ctx.args)
        cmd.make_context(name, rest, parent=ctx)
    except click.exceptions.ClickException as e:
        pytest.fail(f"esptool refuses {command!r}: {e.format_message()}")
    return ctx.params


def test_esptool_rejects_a_wrong_option_so_the_check_can_fail(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FULL.bin").write_bytes(bytes(4096))
    assert esptool_accepts("esptool --chip esp32 --port PORT write-flash 0x0 FULL.bin")["chip"] == "esp32"
    for wrong in ("esptool --chip esp32s9 --port PORT write-flash 0x0 FULL.bin",
                  "esptool --port PORT write-flash --erase-everything 0x0 FULL.bin",
                  "esptool --port PORT write_flsh 0x0 FULL.bin",
                  "esptool --port PORT write-flash 0x0 MISSING.bin"):
        with pytest.raises(pytest.fail.Exception):
            esptool_accepts(wrong)


def test_every_printed_esptool_command_parses_and_names_the_modules_chip(cat, tmp_path, monkeypatch):
    """`modules`' esptool command, the one in each ESP module's recovery advice and the README's
    parse with esptool's own parser; `modules`' names the chip the catalog gives the module."""
    from pathlib import Path
    monkeypatch.chdir(tmp_path)
    for name in ("FULL.bin", "firmware.bin"):
        (tmp_path / name).write_bytes(bytes(4096))
    code, out = cli_json("modules")
    commands = []
    esp_rows = [row for row in out["modules"] if row["esptool_command"]]
    assert {row["key"] for row in esp_rows} >= {"rak3112", "rak3212", "rak3312", "rak11200"}
    for row in esp_rows:
        assert esptool_accepts(row["esptool_command"])["chip"] == cat.module(row["key"]).esp["chip"]
        quoted_here = re.findall(r"'(esptool [^']+)'", row["recovery"])
        assert row["esptool_command"] in quoted_here, row["recovery"]
        commands += quoted_here
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    in_readme = [ln.strip() for ln in readme.splitlines() if ln.startswith("esptool ")]
    assert len(in_readme) >= 4
    for command in sorted(set(commands + in_readme)):
        esptool_accepts(command)


# ------------------------------------------------------------------ nRF52: nrfutil and adafruit-nrfutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def nordic_nrfutil() -> str | None:
    """Nordic's nrfutil 6 (pc-nrfutil, Python < 3.11): $RAKFLASH_NRFUTIL, .ci/run's
    .ci/nrfutil-venv, or an nrfutil 6 on PATH (the newer nrfutil 7 is another program)."""
    for candidate in (os.environ.get("RAKFLASH_NRFUTIL"),
                      os.path.join(ROOT, ".ci", "nrfutil-venv", "bin", "nrfutil"), shutil.which("nrfutil")):
        if candidate and os.access(candidate, os.X_OK):
            try:
                said = subprocess.run([candidate, "version"], capture_output=True, text=True, timeout=60).stdout
            except (OSError, subprocess.TimeoutExpired):
                continue
            if said.startswith("nrfutil version 6."):
                return candidate
    return None


NRFUTIL = nordic_nrfutil()
need_nrfutil = pytest.mark.skipif(
    NRFUTIL is None and not REQUIRE,
    reason="Nordic's nrfutil 6 is not installed: it needs Python 3.10 or older (nrfutil 6.1.7 declares "
           "<3.11); .ci/run installs it into .ci/nrfutil-venv, or point RAKFLASH_NRFUTIL at one")
need_adafruit = pytest.mark.skipif(
    shutil.which("adafruit-nrfutil") is None and not REQUIRE,
    reason="adafruit-nrfutil is not installed (pip install -e '.[test]' installs it)")


def person_runs(command: str, cwd, tool_dir: str | None = None, timeout: float = 150):
    """A printed command as a person runs it, with the tool on PATH."""
    env = dict(os.environ)
    if tool_dir:
        env["PATH"] = tool_dir + os.pathsep + env.get("PATH", "")
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def quoted(text: str, starts: str) -> str:
    found = re.findall(r"'(" + re.escape(starts) + r"[^']*)'", text)
    assert found, f"no '{starts}…' command in: {text}"
    return found[0]


@need_nrfutil
def test_nrfutil_makes_the_package_rakflash_asks_for_and_writes_it_to_the_virtual_rak4631r(virtual, tmp_path):
    """A plain .hex for a RAK4631-R is refused with the `nrfutil pkg generate …` command that makes its
    package. That command, run with Nordic's nrfutil 6.1.7 (the person's file, key and package
    names for FILE.hex, KEY.pem, PKG.zip), makes a package that rakflash writes, and that
    `nrfutil dfu usb-serial -pkg PKG.zip -p PORT` — nrfutil's own DFU client, unchanged — writes
    to the virtual module's bootloader too (README: RAK's documented way).

    nrfutil first looks for the port among the USB devices pyserial lists, for up to its
    timeout (30 s), to trigger DFU mode; a pty is not among them, so each run waits that out."""
    from rakflash import dfu_package as dp
    from rakflash import ports
    from rakflash.link import Link
    from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD

    assert NRFUTIL, "RAKFLASH_REQUIRE_PEERS is set and nrfutil 6 is missing"
    key = dp.new_signing_key()
    (tmp_path / "key.pem").write_bytes(key)
    dev = virtual("rak4631", baud=USB_FULL_SPEED_BAUD, dfu_key=key)
    m = dev.module
    new = firmware.app_image(m, "RUI_4.0.6_RAK4631", 20_000)
    (tmp_path / "rui3_app.hex").write_text(firmware.to_hex({m.app.start: new}))
    code, out = cli_json("flash", str(tmp_path / "rui3_app.hex"), "--port", dev.port, "--module", "rak4631-r",
                         "--yes")
    assert code != 0 and out["error"] == "package-mismatch" and dev.updates == 0, out
    generate = quoted(out["hint"], "nrfutil pkg generate")
    made = person_runs(generate.replace("FILE.hex", "rui3_app.hex").replace("KEY.pem", "key.pem")
                       .replace("PKG.zip", "rui3_app.zip"), tmp_path, os.path.dirname(NRFUTIL))
    assert made.returncode == 0, made.stdout + made.stderr

    code, out = cli_json("flash", str(tmp_path / "rui3_app.zip"), "--port", dev.port, "--yes", timeout=120)
    assert code == 0 and out["app_version_after"] == "RUI_4.0.6_RAK4631", out
    app = m.app
    assert dev.flash.read(app.start, len(new)) == new and dev.updates == 1

    newer = firmware.app_image(m, "RUI_4.0.7_RAK4631", 24_000)
    (tmp_path / "rui3_next.hex").write_text(firmware.to_hex({m.app.start: newer}))
    made = person_runs(generate.replace("FILE.hex", "rui3_next.hex").replace("KEY.pem", "key.pem")
                       .replace("PKG.zip", "rui3_next.zip"), tmp_path, os.path.dirname(NRFUTIL))
    assert made.returncode == 0, made.stdout + made.stderr
    app_port = ports.wait_for_port("rak4631-r", "app", serial_number=dev.opts.serial_number, timeout=10)
    with Link(app_port.device) as link:                  # the person's AT+BOOT, in a terminal
        link.write(b"AT+BOOT\r\n")
    boot = ports.wait_for_port("rak4631-r", "bootloader", serial_number=dev.opts.serial_number, timeout=10)
    sent = person_runs(f"nrfutil dfu usb-serial -pkg rui3_next.zip -p {boot.device}", tmp_path,
                       os.path.dirname(NRFUTIL), timeout=180)
    assert sent.returncode == 0 and "Device programmed" in sent.stdout, sent.stdout + sent.stderr
    assert ports.wait_for_port("rak4631-r", "app", serial_number=dev.opts.serial_number, timeout=10)
    assert dev.app_version == "RUI_4.0.7_RAK4631" and dev.flash.read(app.start, len(newer)) == newer
    assert dev.updates == 2


@need_adafruit
def test_adafruit_genpkg_command_in_the_hint_makes_a_package_the_arduino_rak4631_takes(virtual, tmp_path):
    """A legacy package for another device type is refused with the `adafruit-nrfutil dfu genpkg …`
    command that makes the right one; run with the person's sketch for SKETCH.hex, its package
    is written by rakflash and the module runs the sketch."""
    from rakflash import dfu_package as dp
    from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD

    dev = virtual("rak4631-arduino", baud=USB_FULL_SPEED_BAUD)
    m = dev.module
    sketch = firmware.app_image(m, "ARDUINO_SKETCH_1.1", 12_000)
    (tmp_path / "other.zip").write_bytes(dp.legacy_package(sketch, device_type=0x1234))
    code, out = cli_json("flash", str(tmp_path / "other.zip"), "--port", dev.port, "--yes")
    assert code != 0 and out["error"] == "package-mismatch" and dev.updates == 0, out
    genpkg = quoted(out["hint"], "adafruit-nrfutil dfu genpkg")
    (tmp_path / "blink.hex").write_text(firmware.to_hex({m.app.start: sketch}))
    made = person_runs(genpkg.replace("SKETCH.hex", "blink.hex").replace("SKETCH.zip", "blink.zip"), tmp_path)
    assert made.returncode == 0 and (tmp_path / "blink.zip").exists(), made.stdout + made.stderr
    code, out = cli_json("flash", str(tmp_path / "blink.zip"), "--port", dev.port, "--yes", timeout=120)
    assert code == 0 and dev.updates == 1, out
    assert dev.app_version == "ARDUINO_SKETCH_1.1" and dev.flash.read(m.app.start, len(sketch)) == sketch
