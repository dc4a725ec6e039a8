"""Many modules at once: `rakflash flash FILE --port A --port B …` / `--all`, live rows, `--report`.

Virtual modules on real ptys, one of them faulty (its power fails mid-write) and
one pulled out mid-way; a Ctrl-C that stops them all; re-runs that finish the
ones that were cut off.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import FAST_BAUD, SRC, cli_json, fake_usb_port, run_cli
from rakflash.sim import Mode, firmware

NEW = "RUI_4.0.6_RAK3172-E"
OLD = "RUI_4.0.5_RAK3172-E"
SIZE = 24 * 1024
RECORD_KEYS = {"time", "host", "port", "module", "serial_number", "dev_eui", "app_version_before",
               "app_version_after", "bootloader_version", "bytes", "seconds", "result", "error",
               "message", "image", "image_sha256", "rakflash"}


@pytest.fixture
def new_app(tmp_path, cat):
    p = tmp_path / "rak3172_new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, SIZE))
    return p


@pytest.fixture
def modules(virtual):
    """modules(n, **options) -> n virtual RAK3172s, each with its own serial number and DevEUI."""
    def make(n, **kw):
        devs = []
        for i in range(n):
            dev = virtual("rak3172", serial_number=f"SN-{i}", **kw)
            dev.settings["DEVEUI"] = f"AC1F09FFFE00000{i}"
            dev.save_settings()
            devs.append(dev)
        return devs
    return make


def flash_json(image, *ports, extra=(), baud=FAST_BAUD):
    args = ["flash", str(image), "--baud", str(baud), "--yes", "--json", *extra]
    for p in ports:
        args += ["--port", p]
    proc = run_cli(*args, timeout=120)
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return proc, lines


def results(lines):
    return {e["port"]: e for e in lines if e.get("event") == "device-result"}


def read_report(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_one_faulty_and_one_pulled_never_stop_the_others_and_the_rerun_finishes(modules, new_app, tmp_path):
    good1, good2, pulled, faulty = modules(4)
    pulled.uart.faults.pull_cable_after = pulled.uart.faults.received + SIZE // 3
    faulty.uart.faults.power_cut_after = faulty.uart.faults.received + SIZE // 2
    report = tmp_path / "production.jsonl"
    proc, lines = flash_json(new_app, good1.port, good2.port, pulled.port, faulty.port,
                             extra=("--report", str(report)))
    assert proc.returncode == 11, proc.stderr
    done = results(lines)
    assert done[good1.port]["result"] == done[good2.port]["result"] == "ok"
    assert done[pulled.port]["result"] == "port-disconnected"
    assert done[faulty.port]["result"] == "device-restarted"
    for dev in (good1, good2):
        assert dev.app_version == NEW and dev.flash.read(0x08006000, SIZE) == new_app.read_bytes()
    # The pulled module's end was reported while the others were still writing.
    order = [e["port"] for e in lines if e.get("event") == "device-result"]
    assert order.index(pulled.port) < order.index(good1.port)
    assert 0 < done[pulled.port]["bytes"] < SIZE
    summary = lines[-1]
    assert (summary["result"], summary["ok"], summary["failed"]) == ("failed", 2, 2)
    assert {f["port"] for f in summary["failures"]} == {pulled.port, faulty.port}

    records = {r["port"]: r for r in read_report(report)}
    assert set(records) == {good1.port, good2.port, pulled.port, faulty.port}
    for r in records.values():
        assert set(r) == RECORD_KEYS
        assert r["image_sha256"] == __import__("hashlib").sha256(new_app.read_bytes()).hexdigest()
        assert r["module"] == "RAK3172" and r["app_version_before"] == OLD
    ok = records[good1.port]
    assert (ok["serial_number"], ok["dev_eui"], ok["app_version_after"], ok["bytes"], ok["error"]) == \
        ("SN-0", "AC1F09FFFE000000", NEW, SIZE, None)
    assert records[good2.port]["dev_eui"] == "AC1F09FFFE000001"
    cut = records[pulled.port]
    assert (cut["result"], cut["error"], cut["serial_number"]) == ("port-disconnected",) * 2 + ("SN-2",)
    assert cut["message"] and cut["app_version_after"] is None
    # The failed ones' settings were read before they failed: their DevEUIs are known
    # (production traceability), though neither module could be asked afterwards.
    assert cut["dev_eui"] == "AC1F09FFFE000002"
    assert (records[faulty.port]["serial_number"], records[faulty.port]["dev_eui"]) == \
        ("SN-3", "AC1F09FFFE000003")
    assert "APPKEY" not in report.read_text().upper()           # identifiers only, never a key

    # Plug the pulled one back in (a new pty path) and run again: the cut-off ones are
    # finished, the ones already done are left alone.
    again = pulled.plug_in()
    assert pulled.wait_mode(Mode.BOOTLOADER)
    proc, lines = flash_json(new_app, good1.port, good2.port, again, faulty.port,
                             extra=("--report", str(report)))
    assert proc.returncode == 0, lines[-1]
    done = results(lines)
    assert done[again]["result"] == done[faulty.port]["result"] == "ok"
    assert done[good1.port]["result"] == "already-up-to-date"
    assert pulled.app_version == faulty.app_version == NEW
    assert len(read_report(report)) == 8                      # appended, never rewritten
    # Found in their bootloaders, the two tell their serial numbers only once the new
    # application runs (it is asked for the kept-settings file): the rows have them.
    rerun = {r["port"]: r for r in read_report(report)[4:]}
    assert (rerun[again]["serial_number"], rerun[again]["dev_eui"]) == ("SN-2", "AC1F09FFFE000002")
    assert (rerun[faulty.port]["serial_number"], rerun[faulty.port]["dev_eui"]) == \
        ("SN-3", "AC1F09FFFE000003")


def test_ctrl_c_stops_all_cleanly_and_the_rerun_finishes_them(modules, tmp_path, cat):
    image = tmp_path / "new.bin"
    image.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 40 * 1024))
    devs = modules(3, baud=115200)
    report = tmp_path / "r.jsonl"
    trace = tmp_path / "t.jsonl"
    args = [sys.executable, "-m", "rakflash", "flash", str(image), "--yes", "--json", "--report", str(report),
            "--trace", str(trace)]
    for d in devs:
        args += ["--port", d.port]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=SRC))
    writing, lines = set(), []
    try:
        for line in proc.stdout:
            event = json.loads(line)
            lines.append(event)
            if event.get("event") == "progress" and event["bytes"] >= 4096:
                writing.add(event["port"])
                if len(writing) == len(devs) and proc.returncode is None:
                    proc.send_signal(signal.SIGINT)          # all three are mid-write
                    writing.add("sent")
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, proc.stderr.read()
    assert {e["result"] for e in results(lines).values()} == {"interrupted"}
    assert lines[-1]["result"] == "interrupted"
    assert [r["result"] for r in read_report(report)] == ["interrupted"] * 3
    from rakflash.trace import read_trace
    for d in devs:
        assert d.wait_mode(Mode.BOOTLOADER) and d.updates == 0
        # Each module's transfer session was ended the way a Ctrl-C on one module ends it
        # (CAN CAN…, in its own trace: one file per port).
        sent = [e["hex"] for e in read_trace(tmp_path / f"t-{os.path.basename(d.port)}.jsonl")
                if e.get("ev") == "tx"]
        assert sent[-1] == "18" * 5, sent[-3:]
    proc, lines = flash_json(image, *(d.port for d in devs), baud=115200)
    assert proc.returncode == 0 and lines[-1]["ok"] == 3
    assert all(d.app_version == NEW for d in devs)


def test_all_updates_every_module_port_and_leaves_other_ports_alone(modules, new_app, monkeypatch):
    from click.testing import CliRunner

    from rakflash import cli, ports
    a, b = modules(2)
    monkeypatch.setattr(ports.list_ports, "comports", lambda: [
        fake_usb_port(a.port, 0x1A86, 0x7523, "USB Serial"),          # CH340 bridges with modules behind
        fake_usb_port(b.port, 0x10C4, 0xEA60, "CP2102 USB to UART"),
        fake_usb_port("/dev/ttyS0", None, None, "n/a"),              # a built-in port: not touched
        fake_usb_port("/dev/ttyACM9", 0x0D28, 0x0204, "DAPLink CMSIS-DAP")])   # a probe's COM port
    result = CliRunner().invoke(cli.main, ["flash", str(new_app), "--all", "--baud", str(FAST_BAUD),
                                           "--yes", "--json"])
    lines = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith("{")]
    assert result.exit_code == 0, result.output
    assert set(results(lines)) == {a.port, b.port}
    assert a.app_version == b.app_version == NEW


def test_all_with_no_module_port_is_a_port_error(new_app, monkeypatch):
    from click.testing import CliRunner

    from rakflash import cli, ports
    monkeypatch.setattr(ports.list_ports, "comports", lambda: [fake_usb_port("/dev/ttyS0", None, None, "n/a")])
    result = CliRunner().invoke(cli.main, ["flash", str(new_app), "--all", "--yes", "--json"])
    assert result.exit_code == 4 and json.loads(result.output.splitlines()[-1])["error"] == "port-not-found"


def test_a_missing_port_among_several_is_that_row_only(modules, new_app, tmp_path):
    (dev,) = modules(1)
    proc, lines = flash_json(new_app, dev.port, "/dev/ttyNOPE7", extra=("--report", str(tmp_path / "r")))
    done = results(lines)
    assert proc.returncode == 11
    assert done[dev.port]["result"] == "ok" and done["/dev/ttyNOPE7"]["result"] == "port-not-found"
    assert {r["result"] for r in read_report(tmp_path / "r")} == {"ok", "port-not-found"}


def test_rows_in_a_log_and_the_summary(modules, new_app):
    a, b = modules(2)
    proc = run_cli("flash", str(new_app), "--port", a.port, "--port", b.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert f"{a.port}: writing" in proc.stderr and f"{b.port}: ok" in proc.stderr
    assert "2 of 2 modules done" in proc.stdout


def test_live_rows_on_a_terminal(modules, new_app):
    """On a terminal: a table with a row per module (port, module, serial number, phase, progress, result)."""
    import pty
    a, b = modules(2)
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "flash", str(new_app), "--port", a.port,
                             "--port", b.port, "--baud", str(FAST_BAUD), "--yes"],
                            stdout=subprocess.PIPE, stderr=slave, text=True,
                            env=dict(os.environ, PYTHONPATH=SRC, COLUMNS="160", TERM="xterm"))
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(60)
    os.close(master)
    screen = seen.decode("utf-8", "replace")
    assert proc.returncode == 0
    for heading in ("port", "module", "serial number", "phase", "progress", "result"):
        assert heading in screen
    assert "SN-0" in screen and "SN-1" in screen and "RAK3172" in screen and "24/24 KiB" in screen


def test_several_ports_need_a_yes_without_a_terminal(modules, new_app):
    a, b = modules(2)
    code, out = cli_json("flash", str(new_app), "--port", a.port, "--port", b.port, "--baud", str(FAST_BAUD))
    assert (code, out["error"]) == (10, "confirmation-needed")
    assert a.updates == b.updates == 0


def test_dry_run_on_several_writes_nothing(modules, new_app):
    a, b = modules(2)
    proc, lines = flash_json(new_app, a.port, b.port, extra=("--dry-run",))
    assert proc.returncode == 0
    assert {e["result"] for e in results(lines).values()} == {"dry-run"}
    assert a.updates == b.updates == 0 and a.app_version == OLD


def test_single_port_report_has_the_same_fields(modules, new_app, tmp_path):
    (dev,) = modules(1)
    report = tmp_path / "one.jsonl"
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes",
                         "--report", str(report))
    assert code == 0 and out["result"] == "ok"           # the single-port output is as it was
    code, _ = cli_json("flash", str(new_app), "--port", "/dev/ttyNOPE3", "--yes", "--report", str(report))
    first, second = read_report(report)
    assert set(first) == set(second) == RECORD_KEYS
    assert (first["result"], first["dev_eui"], first["app_version_after"]) == ("ok", "AC1F09FFFE000000", NEW)
    assert (second["result"], second["port"]) == ("port-not-found", "/dev/ttyNOPE3")


def test_unwritable_report_is_a_usage_error_before_anything_is_sent(modules, new_app, tmp_path):
    (dev,) = modules(1)
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--yes",
                         "--report", str(tmp_path / "no" / "such" / "r.jsonl"))
    assert (code, out["error"]) == (2, "usage") and dev.updates == 0
    before = new_app.read_bytes()
    code, out = cli_json("flash", str(new_app), "--port", dev.port, "--port", dev.port + "x", "--yes",
                         "--report", str(new_app))                   # a slip of the tab key
    assert (code, out["error"]) == (2, "usage") and new_app.read_bytes() == before


def test_virtual_modules_can_have_their_own_serial_numbers():
    """`rakflash sim --serial-number`: several virtual modules, each its own (the report is keyed by it)."""
    from test_cli import SimProcess
    sim = SimProcess("rak3172", "--baud", str(FAST_BAUD), "--latency-ms", "0.2", "--serial-number", "LINE3-0042")
    try:
        code, out = cli_json("info", "--port", sim.port, "--baud", str(FAST_BAUD))
        assert (code, out["serial_number"]) == (0, "LINE3-0042")
    finally:
        sim.stop()


def test_all_finds_virtual_usb_modules_through_the_port_registry_and_updates_them(tmp_path, cat):
    """No fake listing: two virtual RAK4631-Rs register their USB ids as the simulator does, and
    `--all` finds them through port discovery, follows each through its re-enumeration, and reports both."""
    from rakflash import dfu_package as dp
    from rakflash.sim import SimOptions, create
    from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD
    key = dp.new_signing_key()
    devs = [create("rak4631", SimOptions(baud=USB_FULL_SPEED_BAUD, latency_ms=0.2, flash_scale=0.0,
                                         dfu_key=key, serial_number=f"USB-{i}")).start() for i in range(2)]
    try:
        pkg = tmp_path / "RUI3_APP.zip"
        pkg.write_bytes(dp.secure_package(firmware.app_image(cat.module("rak4631-r"), "RUI_4.0.6_RAK4631",
                                                             20_000), key_pem=key, fw_version=2))
        report = tmp_path / "r.jsonl"
        proc = run_cli("flash", str(pkg), "--all", "--yes", "--json", "--report", str(report), timeout=120)
        lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
        assert proc.returncode == 0, proc.stderr + proc.stdout[-2000:]
        assert lines[-1]["ok"] == 2
        records = read_report(report)
        assert sorted(r["serial_number"] for r in records) == ["USB-0", "USB-1"]
        assert {r["app_version_after"] for r in records} == {"RUI_4.0.6_RAK4631"}
        assert all(d.app_version == "RUI_4.0.6_RAK4631" for d in devs)
    finally:
        for d in devs:
            d.stop()


@pytest.mark.parametrize("where", ["/dev/full", "a FIFO nobody reads"])
@pytest.mark.parametrize("count", [1, 2])
def test_a_report_that_cannot_take_lines_is_refused_before_any_module_is_touched(modules, new_app, tmp_path,
                                                                                  where, count):
    """`--report /dev/full` ended "ok" with tracebacks in the threads and no rows; a FIFO hung
    before anything was flashed. Both are a usage error now, and no module is asked anything."""
    devs = modules(count)
    path = "/dev/full"
    if where.startswith("a FIFO"):
        path = str(tmp_path / "report.fifo")
        os.mkfifo(path)
    args = ["flash", str(new_app), "--baud", str(FAST_BAUD), "--yes", "--report", path]
    for d in devs:
        args += ["--port", d.port]
    code, out = cli_json(*args, timeout=30)
    assert (code, out["error"]) == (2, "usage"), out
    why = "No space left on device" if path == "/dev/full" else "it is a FIFO and nothing reads it"
    assert why in out["message"] and "Nothing was sent" in out["hint"], out
    for d in devs:
        assert d.updates == 0 and d.uart.faults.received == 0      # not even identified


def _limited_to(size):
    """The subprocess's files can't grow past ``size`` bytes (RLIMIT_FSIZE): a report already that
    big takes no more lines, as on a full disk (write fails with EFBIG; Python ignores SIGXFSZ)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


@pytest.mark.parametrize("count", [1, 2])
def test_a_report_that_stops_taking_lines_midway_ends_the_run_with_that_error(modules, new_app, tmp_path,
                                                                              count):
    """The report opens (the check before any module passes), then every line fails as on a disk
    that has just filled up: the modules are updated and said so, and the run ends with
    report-failed naming the ports whose line is missing — never "ok", never a traceback."""
    devs = modules(count)
    report = tmp_path / "line3.jsonl"
    earlier = "".join(json.dumps({"earlier": n, "pad": "x" * 200}) + "\n" for n in range(300))
    report.write_text(earlier)
    args = [sys.executable, "-m", "rakflash", "flash", str(new_app), "--baud", str(FAST_BAUD), "--yes",
            "--json", "--report", str(report)]
    for d in devs:
        args += ["--port", d.port]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=SRC, PYTHONDONTWRITEBYTECODE="1"),
                          preexec_fn=_limited_to(len(earlier)))
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert "Traceback" not in proc.stderr, proc.stderr
    last = lines[-1]
    assert (proc.returncode, last["error"]) == (2, "report-failed"), (last, proc.stderr)
    assert "File too large" in last["message"] and last["hint"]
    assert sorted(last["missing"]) == sorted(d.port for d in devs)
    for d in devs:
        assert d.updates == 1 and d.port in last["message"]
    if count > 1:                # the rows went out, and the summary rides on the error line
        assert {p: e["result"] for p, e in results(lines).items()} == {d.port: "ok" for d in devs}
        assert (last["modules"], last["ok"], last["failed"]) == (count, count, 0)
    else:
        assert "the module ended " + devs[0].port + ": ok" in last["message"]
    assert report.read_text() == earlier                         # appended to, never rewritten


def test_virtual_modules_started_alike_are_three_modules_in_the_report(virtual, new_app, tmp_path):
    """Each virtual module has its own serial number and DevEUI unless told otherwise (they were
    all SIM0000001 / AC1F09FFFE000001: a report of three modules showed one DevEUI)."""
    devs = [virtual("rak3172") for _ in range(3)]
    report = tmp_path / "three.jsonl"
    proc, lines = flash_json(new_app, *(d.port for d in devs), extra=("--report", str(report)))
    assert proc.returncode == 0, lines[-1]
    records = {r["port"]: r for r in read_report(report)}
    assert len({r["dev_eui"] for r in records.values()}) == 3
    assert len({r["serial_number"] for r in records.values()}) == 3
    for d in devs:
        assert (records[d.port]["serial_number"], records[d.port]["dev_eui"]) == \
            (d.opts.serial_number, d.opts.dev_eui)
