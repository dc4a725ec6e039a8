"""What a new user hit (issue 20): output that ignored a flag, didn't fit, or said too little."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rakflash.sim import firmware

from conftest import FAST_BAUD, SRC, cli_json, run_cli


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
