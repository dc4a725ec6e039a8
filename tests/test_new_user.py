"""What a new user hit (issue 20): output that ignored a flag, didn't fit, or said too little."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import FAST_BAUD, SRC, cli_json, run_cli
from rakflash.sim import firmware


def cli_env(**extra: str) -> dict:
    return dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)


# ------------------------------------------------------------------ 20.4: -q for demo

@pytest.mark.parametrize("args", [("-q", "demo"), ("demo", "-q")])
def test_quiet_demo_says_only_the_result(args):
    proc = run_cli(*args, "--size", "2048", timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "done:" in proc.stdout and "RUI_4.0.6_RAK3172-E" in proc.stdout
    for chatter in ("plan:", "estimate", "serving on", "AT dialect", "writing…"):
        assert chatter not in proc.stdout + proc.stderr, (chatter, proc.stdout, proc.stderr)


# ------------------------------------------------------------------ 20.5: | head on a read-only command

def closed_early(*args: str, **kw) -> subprocess.CompletedProcess:
    """Run rakflash with a standard output whose reader has already gone (``| head`` done)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run([sys.executable, "-m", "rakflash", *args], stdout=w, stderr=subprocess.PIPE,
                              text=True, env=cli_env(), timeout=60, **kw)
    finally:
        os.close(w)


def test_read_only_commands_end_quietly_when_the_reader_goes(virtual, tmp_path, cat):
    app = tmp_path / "app.bin"
    app.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 4096))
    dev = virtual("rak3172")
    for args in (["modules"], ["inspect", str(app)], ["info", "--port", dev.port, "--baud", str(FAST_BAUD)],
                 ["flash", "--help"]):
        proc = closed_early(*args)
        # the exit status of a program ended by a closed pipe (128 + SIGPIPE), and not a word
        assert (proc.returncode, proc.stderr) == (141, ""), (args, proc.returncode, proc.stderr)


def test_a_write_still_goes_on_and_reports_on_standard_error(virtual, tmp_path, cat):
    app = tmp_path / "app.bin"
    app.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 4096))
    dev = virtual("rak3172")
    proc = closed_early("flash", str(app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0 and "standard output was closed early" in proc.stderr
    assert "done:" in proc.stderr and dev.app_version == "RUI_4.0.6_RAK3172-E"


# ------------------------------------------------------------------ 20.6: names in `modules` at 80 and 60 columns

@pytest.mark.parametrize("columns", [80, 60])
def test_module_names_and_swd_targets_are_never_cut_or_folded(columns, cat):
    proc = subprocess.run([sys.executable, "-m", "rakflash", "modules"], capture_output=True, text=True,
                          env=cli_env(COLUMNS=str(columns)), timeout=60)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.split("\n\n")[0].splitlines()
    assert all(len(line.rstrip()) <= columns for line in table), table
    assert "…" not in "\n".join(table)
    starts = [line.split()[0] for line in table if line[:1].strip() and not line.startswith("module ")]
    assert starts == [m.key for m in cat.modules.values()], starts       # each name whole on its row
    for m in cat.modules.values():
        row = next(line for line in table if line.startswith(m.key + " "))
        assert row.split()[-1] == (m.swd_target or "-"), row


# ------------------------------------------------------------------ 20.7: a path that is not a serial port

@pytest.mark.parametrize("port, what", [("/etc/passwd", "a regular file"), ("/etc", "a folder"),
                                        ("/dev/null", "a device that is not a terminal")])
def test_a_path_that_is_not_a_serial_port_is_said_in_words(port, what):
    proc = run_cli("info", "--port", port)
    assert proc.returncode == 4
    assert f"error: {port} is not a serial port: it is {what}" in proc.stderr, proc.stderr
    assert "(25," not in proc.stderr and "rakflash ports" in proc.stderr
    code, out = cli_json("info", "--port", port)
    assert (code, out["error"]) == (4, "not-a-serial-port")


def test_the_readme_lists_every_port_error_by_name():
    readme = (open(os.path.join(SRC, "..", "README.md")).read())
    row = next(line for line in readme.splitlines() if line.startswith("| 4 |"))
    for name in ("port-error", "not-a-serial-port", "port-not-found", "port-busy"):
        assert f"`{name}`" in row, name


# ------------------------------------------------------------------ 20.8: -v shows every AT command

@pytest.mark.parametrize("module, update_answer", [("rak3172", "at+update → 'C'"),
                                                  ("rak11720", "at+update → 'Start firmware upgrade...'")])
def test_verbose_flash_shows_the_boot_and_update_commands_once_each_phase(virtual, tmp_path, cat,
                                                                          module, update_answer):
    dev = virtual(module)
    new = firmware.DEFAULT_VERSIONS[module][2]
    app = tmp_path / "app.bin"
    app.write_bytes(firmware.app_image(cat.module(module), new, 4096))
    proc = run_cli("flash", str(app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "-v", timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "AT+BOOT → <BOOT MODE>" in proc.stderr, proc.stderr
    assert update_answer in proc.stderr, proc.stderr
    assert "erasing: erasing" not in proc.stderr and "writing: writing" not in proc.stderr


# ------------------------------------------------------------------ 20.11: the README's Python API example

def test_the_readmes_python_api_example_is_one_piece_of_python_that_imports():
    import re
    readme = open(os.path.join(SRC, "..", "README.md")).read()
    section = readme[readme.index("\n## Python API\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    compile(code, "README.md (Python API)", "exec")          # no stray paragraph inside it
    imports = "\n".join(line for line in code.splitlines() if line.startswith(("from ", "import ")))
    exec(imports, {})                                         # and what it imports exists


# ------------------------------------------------------------------ 20.10: one name, one story

def test_a_refused_dfu_package_has_one_name_for_result_and_error(virtual, tmp_path, cat):
    from rakflash import dfu_package as dp
    from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD
    dev = virtual("rak4631", baud=USB_FULL_SPEED_BAUD, dfu_key=dp.new_signing_key())
    pkg = tmp_path / "other-key.zip"         # signed with a key its bootloader does not trust
    pkg.write_bytes(dp.secure_package(firmware.app_image(cat.module("rak4631-r"), "RUI_4.0.6_RAK4631", 8000),
                                      key_pem=dp.new_signing_key(), fw_version=2))
    code, out = cli_json("flash", str(pkg), "--port", dev.port, "--yes", timeout=90)
    assert code == 7 and out["result"] == out["error"] == "dfu-rejected", out
    assert out["dfu_result"] == "extended-error" and out["reason"] == "verification-failed", out


def test_info0_show_of_a_locked_dump_says_what_is_on_in_the_same_words(tmp_path):
    from rakflash.apollo3_info0 import rak11720_default
    locked = tmp_path / "locked.bin"
    locked.write_bytes(rak11720_default().replace(secure_boot=True).raw)
    proc = run_cli("info0", "show", str(locked))
    assert "security policy     none" in proc.stdout, proc.stdout
    assert "asks for" not in proc.stdout and "policy 0x0" not in proc.stdout, proc.stdout
    assert "secure boot is on" in proc.stdout
    signed = tmp_path / "signed.bin"
    signed.write_bytes(rak11720_default().replace(security_policy=1).raw)
    proc = run_cli("info0", "show", str(signed))
    assert "security policy     authentication" in proc.stdout
    assert "the security policy asks for authenticated images (policy 0x1: authentication)" in proc.stdout, \
        proc.stdout


def test_doctor_for_a_downgrade_says_it_is_one_as_flash_does(virtual, tmp_path, cat):
    dev = virtual("rak3172", app_version="RUI_4.0.7_RAK3172-E")
    older = tmp_path / "older.bin"
    older.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 4096))
    code, out = cli_json("doctor", "--port", dev.port, "--baud", str(FAST_BAUD), "--for", str(older))
    fits = next(f for f in out["findings"] if f["code"] == "image-fits")
    assert "downgrade: RUI_4.0.7_RAK3172-E → RUI_4.0.6_RAK3172-E" in fits["finding"], fits
    assert fits["level"] == "note" and code == 0


def test_a_pack_that_is_not_a_cmsis_pack_is_refused_at_once(tmp_path, cat):
    photo = tmp_path / "photo.bin"
    photo.write_bytes(bytes(range(256)))
    full = tmp_path / "full.hex"
    full.write_text(firmware.combined_hex(cat.module("rak3172"), "RUI_BOOT_0.8_STM32WLE5CC",
                                          "RUI_4.0.6_RAK3172-E", 4096))
    proc = run_cli("recover", str(full), "--via", "swd", "--module", "rak3172", "--pack", str(photo), "--dry-run")
    assert proc.returncode == 2 and "photo.bin is not a CMSIS device pack" in proc.stderr, proc.stderr


def test_a_flooding_module_in_a_fleet_report_is_named_as_its_message_names_it(virtual, tmp_path, cat):
    import json
    import time
    quiet, flooding = virtual("rak3172"), virtual("rak3172", sketch="flooding", flood_after=0.2)
    time.sleep(0.4)
    app = tmp_path / "app.bin"
    app.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 4096))
    report = tmp_path / "r.jsonl"
    proc = run_cli("flash", str(app), "--port", quiet.port, "--port", flooding.port, "--baud", str(FAST_BAUD),
                   "--yes", "--reset-window", "1", "--report", str(report), timeout=90)
    assert proc.returncode == 11, proc.stderr
    rows = {r["port"]: r for r in map(json.loads, report.read_text().splitlines())}
    row = rows[flooding.port]
    assert row["result"] == "boot-entry-failed" and "RAK3172" in row["message"], row
    assert row["module"] == "RAK3172", row


def test_one_module_is_one_module_and_all_with_port_is_refused(virtual, tmp_path, cat, monkeypatch):
    from click.testing import CliRunner

    from conftest import fake_usb_port
    from rakflash import cli, ports
    dev = virtual("rak3172")
    app = tmp_path / "app.bin"
    app.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 4096))
    monkeypatch.setattr(ports.list_ports, "comports", lambda: [fake_usb_port(dev.port, 0x1A86, 0x7523, "USB Serial")])
    result = CliRunner().invoke(cli.main, ["flash", str(app), "--all", "--baud", str(FAST_BAUD), "--yes"])
    said = result.output + (getattr(result, "stderr", "") or "")
    assert result.exit_code == 0, said
    assert "updating 1 module:" in said and "1 of 1 module done" in said and "1 modules" not in said, said
    proc = run_cli("flash", str(app), "--all", "--port", dev.port, "--yes")
    assert proc.returncode == 2 and "--all" in proc.stderr and "give one or the other" in proc.stderr
    assert dev.updates == 1


def test_a_missing_optional_part_is_exit_4_for_web_as_for_swd(tmp_path):
    shadow = tmp_path / "no_web"
    (shadow / "starlette").mkdir(parents=True)
    (shadow / "starlette" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'starlette'\", name='starlette')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shadow), SRC]))
    proc = subprocess.run([sys.executable, "-m", "rakflash", "web", "--no-browser"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.splitlines() == ["error: 'rakflash web' needs the web extra (starlette is not installed)",
                                        "hint: Install it with: pip install 'rakflash[web]'"]


def test_verbose_flood_catch_shows_the_boot_burst_in_one_line(virtual, tmp_path, cat):
    import time
    dev = virtual("rak3172", sketch="flooding", flood_after=0.2)
    time.sleep(0.4)
    app = tmp_path / "app.bin"
    app.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 4096))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "flash", str(app), "--port", dev.port, "--baud",
                             str(FAST_BAUD), "--yes", "-v", "--reset-window", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=cli_env())
    said = []
    try:
        for line in proc.stdout:
            said.append(line)
            if "Press the module's reset button now" in line:
                dev.press_reset()          # as a person does when told
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(said)
    assert proc.returncode == 0, text
    bursts = [ln for ln in said if "AT+BOOT × " in ln]
    assert bursts and "(a burst) → <BOOT MODE> after" in bursts[0], text
