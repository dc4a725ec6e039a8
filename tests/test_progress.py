"""What a person sees while it works, as esptool and stm32flash users expect: the phase (erasing,
writing, verifying, starting), retries as they happen, one unit for rates, -v/-q, the port picked
when there is only one, a `done:` line that says what happened, the same keys on every result line,
and shell completion."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time

import pytest

from conftest import FAST_BAUD, SRC, cli_json, fake_usb_port, run_cli
from rakflash.sim import firmware

NEW = "RUI_4.0.7_RAK3172-E"
OLD = "RUI_4.0.5_RAK3172-E"
ENV = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture
def new_app(tmp_path, cat):
    p = tmp_path / "new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 40 * 1024))
    return p


def noisy(virtual, module="rak3172", **options):
    """A module on a line that damages about one byte in 4,000 the host sends: some blocks go again."""
    dev = virtual(module, **options)
    dev.uart.faults.bit_error_rate = 2.5e-4
    return dev


def on_a_terminal(*args: str) -> tuple[int, str]:
    """`rakflash …` with its output on a terminal (a pty), as a person runs it; the screen's text."""
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=dict(ENV, COLUMNS="120", TERM="xterm"))
    os.close(slave)
    screen = b""
    end = time.monotonic() + 120
    while time.monotonic() < end:
        if select.select([master], [], [], 0.2)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:           # the other side is closed: the command ended
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    proc.wait(10)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", screen).decode("utf-8", "replace")
    return proc.returncode, text


def json_events(proc) -> list[dict]:
    return [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]


# ------------------------------------------------------------------ phases and retries

def test_the_progress_bar_names_its_phase_and_counts_what_was_sent_again(virtual, new_app):
    # At a real line rate and flash timing each phase lasts long enough for the bar to show it.
    dev = noisy(virtual, baud=115200, flash_scale=0.5)
    code, screen = on_a_terminal("flash", str(new_app), "--port", dev.port, "--baud", "115200", "--yes")
    assert code == 0, screen
    assert "erasing" in screen and "writing" in screen and "starting new firmware" in screen, screen
    assert re.search(r"(erasing|writing) · \d+ sent again", screen), screen
    assert "KiB/s" in screen and "kB/s" not in screen and " kB" not in screen
    done = next(ln for ln in screen.splitlines() if ln.startswith("done: "))
    assert re.search(r"\d+ sent again", done), done


def test_json_has_phases_in_order_and_each_retry_with_a_count(virtual, new_app):
    dev = noisy(virtual)
    proc = run_cli("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "--json")
    events = json_events(proc)
    assert proc.returncode == 0, events[-1]
    phases = [e["phase"] for e in events if e.get("event") == "phase"]
    assert phases[phases.index("erase"):] == ["erase", "write", "start", "settings-check"], phases
    retries = [e for e in events if e.get("event") == "retry"]
    assert retries and [r["retries"] for r in retries] == list(range(1, len(retries) + 1))
    assert all(r["phase"] in ("erase", "write") and "sent again" in r["reason"] for r in retries)
    assert events[-1]["retries"] == len(retries)


def test_amota_says_when_it_verifies(virtual, tmp_path, cat):
    dev = virtual("rak11720")
    p = tmp_path / "new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak11720"), "RUI_4.0.7_RAK11720", 8 * 1024))
    proc = run_cli("flash", str(p), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "--json")
    assert proc.returncode == 0, proc.stdout
    phases = [e["phase"] for e in json_events(proc) if e.get("event") == "phase"]
    assert phases[phases.index("erase"):][:4] == ["erase", "write", "verify", "start"], phases


def test_a_log_gets_a_whole_line_per_phase_and_per_retry(virtual, new_app):
    dev = noisy(virtual)
    proc = run_cli("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "erasing…" in lines and "writing…" in lines and "\r" not in proc.stderr
    assert any(re.match(r"  writing: \d+ sent again so far \(data block \d+ sent again", ln) for ln in lines)


def test_quiet_and_verbose(virtual, new_app):
    dev = noisy(virtual)
    quiet = run_cli("-q", "flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.startswith("done: ") and "plan:" not in quiet.stdout
    assert "writing" not in quiet.stderr
    verbose = run_cli("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes",
                      "--force", "-v")
    assert verbose.returncode == 0, verbose.stderr
    assert re.search(r"^\[ *\d+\.\d\d s\] identifying", verbose.stderr, re.M)
    assert re.search(r"^\[ *\d+\.\d\d s\] sent again \(1 so far\): ", verbose.stderr, re.M)
    assert "plan:" in verbose.stdout
    both = run_cli("-q", "flash", str(new_app), "--port", dev.port, "-v")
    assert both.returncode == 2 and "contradict" in both.stderr


def test_verbose_shows_every_at_exchange_but_never_a_key(virtual, new_app):
    """`flash -v`, as `info -v`: each AT command with its answer, timed — but the owner's keys
    and settings by name only, whether read or written back."""
    dev = virtual("rak3172")
    args = ("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    verbose = run_cli(*args, "-v")
    assert verbose.returncode == 0, verbose.stderr
    assert re.search(r"^\[ *\d+\.\d\d s\]   AT\+VER=\? → OK 'RUI_4\.0\.5_RAK3172-E'", verbose.stderr, re.M)
    assert "AT+APPKEY=? → OK (value not shown)" in verbose.stderr
    assert "AC1F09FF" not in verbose.stderr and not re.search(r"[0-9A-F]{16}", verbose.stderr)
    assert "AT+VER=?" not in run_cli(*args, "--force").stderr          # without -v: no AT lines


# ------------------------------------------------------------------ the done line

def test_done_says_a_reset_was_waited_for_when_a_flood_was_caught(virtual, tmp_path, cat):
    dev = virtual("rak3172", sketch="flooding", flood_after=0.3, baud=115200)
    time.sleep(0.5)
    p = tmp_path / "fixed.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 8 * 1024))
    env = dict(ENV)
    # --no-keep-settings: no second start-up window to read the keys in (another test's subject).
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "flash", str(p), "--port", dev.port, "--yes",
                             "--no-keep-settings"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:                 # a person presses reset when asked
        if "Press the module's reset button now." in line:
            time.sleep(1.0)
            dev.press_reset()
            break
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    done = next(ln for ln in out.splitlines() if ln.startswith("done: "))
    assert "(a firmware that floods the port; its version unknown) → " + NEW in done, done
    m = re.search(r"caught in its bootloader after a reset, (\d+\.\d) s after asking for it", done)
    assert m and float(m.group(1)) >= 0.9, done
    assert "bootloader entered in" not in done


def test_done_says_bootloader_only_when_a_bootloader_ran(virtual, tmp_path, cat, new_app):
    waiting = virtual("rak3172", state="bootloader")
    proc = run_cli("flash", str(new_app), "--port", waiting.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert f"done: RAK3172 (bootloader) → {NEW};" in proc.stdout
    assert "it was already in its bootloader" in proc.stdout
    running = virtual("rak3172")
    proc = run_cli("flash", str(new_app), "--port", running.port, "--baud", str(FAST_BAUD), "--yes")
    assert f"done: RAK3172 {OLD} → {NEW};" in proc.stdout and "bootloader entered in" in proc.stdout


# ------------------------------------------------------------------ one shape for every result line

@pytest.mark.parametrize("ending", ["ok", "dry-run", "refused", "up-to-date"])
def test_every_result_line_has_the_same_keys(virtual, tmp_path, cat, new_app, ending):
    dev = virtual("rak3172")
    args = ["flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes"]
    if ending == "dry-run":
        args.append("--dry-run")
    elif ending == "refused":
        big = tmp_path / "big.bin"
        big.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 250 * 1024))
        args[1] = str(big)
    elif ending == "up-to-date":
        same = tmp_path / "same.bin"
        same.write_bytes(firmware.app_image(cat.module("rak3172"), OLD, 8 * 1024))
        args[1] = str(same)
    code, out = cli_json(*args)
    keys = {"result", "module", "port", "app_version_before", "app_version_after", "bytes", "seconds", "error",
            "written"}
    assert keys <= set(out), keys - set(out)
    assert out["port"] == dev.port and out["module"] == "RAK3172"
    # one field, three values, as recover and the page say it (issue 17.4)
    assert out["written"] == ("all" if ending == "ok" else "nothing")
    if ending == "refused":
        assert (code, out["error"]) == (6, "image-too-large")
    else:
        assert code == 0 and out["error"] is None, out


# ------------------------------------------------------------------ --port when there is only one

def test_the_only_module_port_is_picked_and_said(virtual, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from rakflash import cli, ports
    dev = virtual("rak3172")
    monkeypatch.setenv("RAKFLASH_VIRTUAL_PORTS", str(tmp_path / "none"))
    monkeypatch.setattr(ports.list_ports, "comports", lambda: [
        fake_usb_port(dev.port, 0x10C4, 0xEA60, "CP2102 USB to UART"),
        fake_usb_port("/dev/ttyS0", None, None, "built-in serial port"),
        fake_usb_port("/dev/ttyACM9", 0x0D28, 0x0204, "DAPLink CMSIS-DAP")])       # a probe's COM port
    result = CliRunner().invoke(cli.main, ["info", "--baud", str(FAST_BAUD), "--json"])
    assert result.exit_code == 0, result.output
    assert f"port: {dev.port} (" in result.output and "the only port that looks like a module's" in result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    assert out["module"] == "RAK3172" and out["port"] == dev.port


@pytest.mark.parametrize("listed", [0, 2])
def test_no_port_and_not_exactly_one_candidate_is_a_usage_error(monkeypatch, tmp_path, listed):
    from click.testing import CliRunner

    from rakflash import cli, ports
    monkeypatch.setenv("RAKFLASH_VIRTUAL_PORTS", str(tmp_path / "none"))
    fakes = [fake_usb_port(f"/dev/ttyUSB{i}", 0x1A86, 0x7523, "CH340") for i in range(listed)]
    monkeypatch.setattr(ports.list_ports, "comports", lambda: fakes)
    result = CliRunner().invoke(cli.main, ["info"])
    assert result.exit_code == 2, result.output
    assert "no --port given" in result.output and "rakflash ports" in result.output
    if listed:
        assert "/dev/ttyUSB0, /dev/ttyUSB1" in result.output


# ------------------------------------------------------------------ shell completion

def complete(words: str) -> list[str]:
    """What bash completion offers for ``words`` (the way click's completion script asks)."""
    env = dict(ENV, _RAKFLASH_COMPLETE="bash_complete", COMP_WORDS=words,
               COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)))
    proc = subprocess.run([sys.executable, "-c", "from rakflash.cli import main; main(prog_name='rakflash')"],
                          capture_output=True, text=True, env=env, timeout=30)
    return [ln.split(",", 1)[1] for ln in proc.stdout.splitlines() if "," in ln]


def test_shell_completion_offers_commands_options_and_module_names(cat):
    assert "flash" in complete("rakflash fl")
    assert {"--dry-run", "--module"} <= set(complete("rakflash flash x.bin --"))
    assert complete("rakflash flash x.bin --module rak4") == [k for k in cat.modules if k.startswith("rak4")]
    assert "rak4270" in complete("rakflash flash x.bin --module rak4")
    script = subprocess.run([sys.executable, "-c", "from rakflash.cli import main; main(prog_name='rakflash')"],
                            capture_output=True, text=True, timeout=30,
                            env=dict(ENV, _RAKFLASH_COMPLETE="bash_source")).stdout
    assert "_rakflash_completion" in script           # what the README's eval line installs
