"""Bad input ends as a named error, never `internal-error` and never a hang.

Files that are not regular files, files too large to be firmware, names too
long for the OS, a --trace that would overwrite the firmware or block on a
FIFO, terminals that can't show non-ASCII, standard output closed early, and
SIGTERM/SIGHUP — all through the real command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import FAST_BAUD, SRC, cli_json, signal_when
from rakflash.sim import Mode, firmware

NEW = "RUI_4.0.6_RAK3172-E"


@pytest.fixture
def new_app(tmp_path, cat):
    p = tmp_path / "new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 16 * 1024))
    return p


def env_with(**extra) -> dict:
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    return env


# ------------------------------------------------------------------ what is not a firmware file

@pytest.mark.parametrize("command", ["inspect", "flash"])
@pytest.mark.parametrize("what", ["fifo", "/dev/zero", "/dev/urandom"])
def test_what_is_not_a_regular_file_is_refused_at_once(tmp_path, command, what):
    if what == "fifo":
        path = tmp_path / "firmware.bin"
        os.mkfifo(path)
    else:
        path = what
    args = [command, str(path)] + (["--port", "/dev/null", "--yes"] if command == "flash" else [])
    t0 = time.monotonic()
    code, out = cli_json(*args, timeout=30)            # a hang fails here
    assert (code, out["error"]) == (3, "image-not-a-file"), out
    assert "not a regular file" in out["message"]
    assert time.monotonic() - t0 < 20


def test_a_huge_sparse_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.bin"
    with open(path, "wb") as f:
        f.truncate(1 << 30)                            # 1 GiB, no blocks on disk
    t0 = time.monotonic()
    code, out = cli_json("inspect", str(path), timeout=30)
    assert (code, out["error"]) == (3, "image-format"), out
    assert "1,073,741,824 bytes" in out["message"] and "larger than" in out["message"]
    assert time.monotonic() - t0 < 20


def test_the_size_limit_is_the_largest_flash_with_room_for_hex_text(tmp_path, cat):
    """A .hex of the largest flash in the catalog is still read (an ESP32's firmware comes as a
    binary of at most its flash); what exceeds the limit is not."""
    from rakflash import images
    from rakflash.firmware_file import max_file_size
    largest = max(m.flash.size for m in cat.mcus.values() if not m.core.startswith("xtensa"))
    assert max_file_size(cat) >= 3 * largest
    assert max_file_size(cat) >= max(m.flash.size for m in cat.mcus.values())
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(max_file_size(cat) + 1)
    with pytest.raises(images.ImageFormatError, match="larger than"):
        images.load(path)


@pytest.mark.parametrize("name", ["x" * 300 + ".bin", "/".join(["d" * 200] * 25) + "/fw.bin"],
                         ids=["300-character name", "5000-character path"])
def test_a_name_too_long_for_the_os_is_a_named_error(tmp_path, name):
    code, out = cli_json("inspect", f"{tmp_path}/{name}")
    assert (code, out["error"]) == (3, "image-not-found"), out
    assert "too long" in out["message"]
    assert len(out["message"]) < 400                   # the name is shortened in the message


def test_a_non_ascii_file_name_on_an_ascii_terminal(tmp_path, cat):
    p = tmp_path / "firmware-ñ-é.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 4096))
    for args in (["inspect", str(p)], ["inspect", str(tmp_path / "missing-é.bin")]):
        proc = subprocess.run([sys.executable, "-m", "rakflash", *args], capture_output=True,
                              env=env_with(PYTHONIOENCODING="ascii"), timeout=60)
        assert proc.returncode in (0, 3), proc.stderr
        assert b"internal error" not in proc.stderr and b"Traceback" not in proc.stderr
        assert b"firmware-" in proc.stdout + proc.stderr or b"missing-" in proc.stderr


# ------------------------------------------------------------------ --trace

def test_trace_naming_the_firmware_is_refused_and_the_firmware_kept(virtual, new_app):
    dev = virtual("rak3172")
    before = new_app.read_bytes()
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes",
                         "--trace", str(new_app))
    assert (code, out["error"]) == (2, "usage"), out
    assert "firmware" in out["message"]
    assert new_app.read_bytes() == before
    assert dev.updates == 0


def test_trace_to_a_fifo_nobody_reads_does_not_hang(tmp_path):
    fifo = tmp_path / "trace.fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    code, out = cli_json("info", "--port", "/dev/null", "--trace", str(fifo), timeout=30)
    assert (code, out["error"]) == (2, "usage"), out
    assert "nothing reads" in out["message"]
    assert time.monotonic() - t0 < 20


# ------------------------------------------------------------------ how the process ends

def start_flash(dev, image, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rakflash", "flash", str(image), "--port", dev.port,
                             "--yes", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env_with())


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_stdout_closed_early_the_update_goes_on_and_reports_on_stderr(virtual, cat, tmp_path, as_json):
    """`rakflash flash … --json | head -c 300`: the reader goes away during the update."""
    dev = virtual("rak3172", baud=115200)
    image = tmp_path / "new.bin"
    image.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 24 * 1024))
    proc = start_flash(dev, image, *(["--json"] if as_json else []))
    head = proc.stdout.read(300)                       # what `head -c 300` takes
    proc.stdout.close()
    _, stderr = proc.communicate(timeout=90)
    stderr = stderr.decode()
    assert len(head) == 300
    assert proc.returncode == 0, stderr
    assert "standard output was closed" in stderr and "Traceback" not in stderr
    if as_json:
        result = json.loads(stderr.strip().splitlines()[-1])
        assert (result["result"], result["app_version_after"]) == ("ok", NEW)
    else:
        assert f"→ {NEW}" in stderr
    assert dev.app_version == NEW and dev.updates == 1


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_like_ctrl_c(virtual, new_app, sig, code):
    """A clean stop: the session is cancelled, a result line says so, the exit code tells the
    signal, and running the same command again finishes the update at once."""
    dev = virtual("rak3172", baud=115200)
    proc = start_flash(dev, new_app, "--json")
    lines = signal_when(proc, lambda e: e.get("event") == "progress" and e["bytes"] >= 4096, sig)
    assert proc.wait(30) == code
    last = lines[-1]
    assert last["result"] == "interrupted" and signal.Signals(sig).name in last["message"]
    assert last["app_version_before"] == "RUI_4.0.5_RAK3172-E"
    assert dev.wait_mode(Mode.BOOTLOADER)
    t0 = time.monotonic()
    rc, out = cli_json("flash", str(new_app), "--port", dev.port, "--yes")
    assert (rc, out["app_version_after"]) == (0, NEW), out
    assert time.monotonic() - t0 < 30          # no stale transfer session to wait out


def test_a_stop_after_the_transfer_does_not_say_the_module_waits_in_its_bootloader(virtual, new_app):
    """SIGTERM once the new firmware was sent and is starting: the bootloader has handed over, so
    the hint says what the re-run does (confirms the version, checks the keys), and the re-run
    finds the update done (found by the RAK4631 soak, whose transfers end in a fraction of a second)."""
    dev = virtual("rak3172")
    proc = start_flash(dev, new_app, "--json", "--baud", "921600")
    lines = signal_when(proc, lambda e: e.get("event") == "phase" and e.get("phase") == "start",
                        signal.SIGTERM)
    assert proc.wait(30) == 143
    last = lines[-1]
    assert last["result"] == "interrupted", last
    assert "waits in its bootloader" not in last["hint"] and "was sent" in last["hint"], last["hint"]
    rc, out = cli_json("flash", str(new_app), "--port", dev.port, "--yes", "--baud", "921600")
    assert (rc, out["result"], out["app_version_after"]) == (0, "already-up-to-date", NEW), out


def test_a_dfu_package_that_is_a_fifo_or_a_zip_bomb_is_a_named_error(tmp_path):
    """The RAK4631's DFU packages are read like firmware files: regular files of sane size,
    and no member unpacks to more than the largest flash (the API; the CLI takes them soon)."""
    import io
    import zipfile

    from rakflash import dfu_package
    from rakflash.errors import ImageNotAFile, PackageError
    fifo = tmp_path / "pkg.zip"
    os.mkfifo(fifo)
    with pytest.raises(ImageNotAFile):
        dfu_package.load(fifo)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", json.dumps({"manifest": {"application": {
            "bin_file": "app.bin", "dat_file": "app.dat"}}}))
        z.writestr("app.bin", bytes(64 << 20))          # 64 MiB of zeros, a few KiB packed
        z.writestr("app.dat", b"\0" * 16)
    path = tmp_path / "bomb.zip"
    path.write_bytes(bomb.getvalue())
    with pytest.raises(PackageError, match="unpacks to"):
        dfu_package.load(path)


def test_a_dfu_manifest_with_a_number_where_a_table_belongs_is_a_named_error(tmp_path):
    """Found by tests/test_fuzz.py: 'init_packet_data': 1 ended in a TypeError."""
    import io
    import zipfile

    from rakflash import dfu_package
    from rakflash.errors import PackageError
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("manifest.json", json.dumps({"manifest": {"application": {
            "bin_file": "app.bin", "dat_file": "app.dat", "init_packet_data": 1}}}))
        z.writestr("app.bin", b"")
        z.writestr("app.dat", b"")
    path = tmp_path / "pkg.zip"
    path.write_bytes(out.getvalue())
    with pytest.raises(PackageError):
        dfu_package.load(path)
