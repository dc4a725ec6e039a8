"""`rakflash doctor`: a virtual module (or a port) in each state, the finding and the suggested command.

Every state goes through a real pty, with the same serial code `info` and `flash`
use. Where a suggested command can be run here, the test runs it and checks it
does what doctor said it would.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time

import pytest

from conftest import FAST_BAUD, cli_json, fake_usb_port, run_cli
from rakflash.flows.doctor import diagnose
from rakflash.sim import Mode, firmware

NEW = "RUI_4.0.6_RAK3172-E"
OLD = "RUI_4.0.5_RAK3172-E"


def _key():
    from rakflash import dfu_package as dp
    return dp.new_signing_key()


RAK4631_KEY = _key()


@pytest.fixture
def usb(monkeypatch):
    """usb(*fake ports) -> what port discovery lists when the OS shows exactly those ports."""
    from rakflash import ports

    def listing(*fakes):
        monkeypatch.setattr(ports.list_ports, "comports", lambda: list(fakes))
        return ports.list_serial_ports()
    return listing


def by_code(report):
    return {f.code: f for f in report.findings}


def doctor_json(*args, **kw):
    code, out = cli_json("doctor", *args, **kw)
    return code, out, {f["code"]: f for f in out["findings"]}


@pytest.fixture
def new_app(tmp_path, cat):
    p = tmp_path / "rak3172_new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 12 * 1024))
    return p


class FakeDevice:
    """Something on a pty that is not a RAK module: ``answer(line) -> reply`` or a loopback."""

    def __init__(self, answer=None, loopback=False):
        self.master, self.slave = os.openpty()
        import tty
        tty.setraw(self.slave)
        self.port = os.ttyname(self.slave)
        self.answer, self.loopback, self.running = answer, loopback, True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        import select
        line = b""
        while self.running:
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            if self.loopback:
                os.write(self.master, data)
                continue
            for b in data:
                if b in (10, 13):
                    if line:
                        reply = self.answer(line.decode("latin-1"))
                        if reply:
                            os.write(self.master, reply.encode() + b"\r\n")
                    line = b""
                else:
                    line += bytes([b])

    def close(self):
        self.running = False
        self.thread.join(1)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def fake():
    made = []

    def make(**kw):
        d = FakeDevice(**kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


# ------------------------------------------------------------------ the ports

def test_no_serial_port_at_all_says_plug_in_and_list(monkeypatch):
    report = diagnose(listing=[])
    (f,) = report.findings
    assert (f.code, f.level, f.command) == ("no-serial-port", "problem", "rakflash ports")
    assert "brltty" in f.next and report.exit_code == 4


def test_ports_that_are_not_modules_are_left_alone_and_named(usb):
    report = diagnose(listing=usb(fake_usb_port("/dev/ttyS0", None, None, "n/a")))
    (f,) = report.findings
    assert f.code == "no-module-port" and "/dev/ttyS0" in f.finding
    assert f.command == "rakflash doctor --port /dev/ttyS0"


def test_without_port_every_module_port_is_checked_side_by_side(virtual, usb, tmp_path):
    a, b = virtual("rak3172", serial_number="SN-A"), virtual("rak3172", serial_number="SN-B")
    usb(fake_usb_port(a.port, 0x1A86, 0x7523, "CH340"), fake_usb_port(b.port, 0x10C4, 0xEA60, "CP2102"),
        fake_usb_port("/dev/ttyS0", None, None, "n/a"),
        fake_usb_port("/dev/ttyACM7", 0x0D28, 0x0204, "DAPLink"))   # a probe's COM port: left alone
    report = diagnose(baud=FAST_BAUD)
    apps = [f for f in report.findings if f.code == "application"]
    from click.testing import CliRunner

    from rakflash import cli
    result = CliRunner().invoke(cli.main, ["doctor", "--baud", str(FAST_BAUD), "--json",
                                           "--trace", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 0, result.output
    for dev in (a, b):                       # one trace per port checked
        assert (tmp_path / f"t-{os.path.basename(dev.port)}.jsonl").read_text().count('"ev": "tx"') > 2
    assert sorted(f.port for f in apps) == sorted([a.port, b.port])
    assert {d.serial_number for d in report.devices} == {"SN-A", "SN-B"}
    assert report.exit_code == 0


def test_a_port_that_moved_points_at_its_new_name(virtual, usb):
    dev = virtual("rak3172")
    usb(fake_usb_port(dev.port, 0x1A86, 0x7523, "USB Serial"))
    report = diagnose("/dev/ttyUSB9")
    f = by_code(report)["port-moved"]
    assert dev.port in f.finding and f.command == f"rakflash doctor --port {dev.port}"
    assert report.exit_code == 4


def test_missing_port_cli():
    code, out, found = doctor_json("--port", "/dev/ttyNOPE42")
    assert code == 4 and out["result"] == "problem"
    assert found["port-not-found"]["command"] == "rakflash ports"


def test_busy_port_names_the_program_holding_it(virtual):
    dev = virtual("rak3172")
    fd = os.open(dev.port, os.O_RDWR | os.O_NOCTTY)
    holder = subprocess.Popen(["sleep", "60"], stdin=fd)
    os.close(fd)
    try:
        time.sleep(0.1)
        report = diagnose(dev.port, baud=FAST_BAUD)
    finally:
        holder.kill()
        holder.wait()
    f = by_code(report)["port-busy"]
    assert f"sleep (pid {holder.pid})" in f.finding and "Close sleep" in f.next
    assert f.details["programs"] == [{"pid": holder.pid, "name": "sleep"}]
    assert report.exit_code == 4


def test_port_locked_by_another_program_still_names_it(virtual):
    """A program that took pyserial's exclusive lock: the open fails, doctor still finds who it is."""
    dev = virtual("rak3172")
    holder = subprocess.Popen([sys.executable, "-c", "import serial, sys, time; s = serial.Serial(sys.argv[1], "
                               "exclusive=True); print('held', flush=True); time.sleep(60)", dev.port],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out, found = doctor_json("--port", dev.port, "--baud", str(FAST_BAUD))
    finally:
        holder.kill()
        holder.wait()
    assert code == 4
    assert f"(pid {holder.pid})" in found["port-busy"]["finding"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the port to a group and drop to 'nobody'")
def test_permission_denied_names_the_group_to_join(virtual):
    """The port belongs to root:dialout (as a USB adapter's does); doctor runs as a user not in dialout.

    The doctor runs in a forked child that drops to 'nobody' (the interpreter may not be
    readable by 'nobody', so a fresh process could not start)."""
    import grp
    try:
        dialout = grp.getgrnam("dialout").gr_gid
    except KeyError:
        pytest.skip("no 'dialout' group on this machine")
    dev = virtual("rak3172")
    os.chown(dev.port, 0, dialout)
    os.chmod(dev.port, 0o660)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                       # the child: an ordinary user runs doctor
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            report = diagnose(dev.port, baud=FAST_BAUD)
            os.write(write, json.dumps(report.to_dict()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = json.loads(f.read())
    os.waitpid(pid, 0)
    (f,) = [f for f in out["findings"] if f["code"] == "permission-denied"]
    assert out["exit_code"] == 4
    assert f["command"] == "sudo usermod -aG dialout $USER" and f["group"] == "dialout"
    assert "log out and in" in f["next"]


def test_modemmanager_holding_the_port_gets_the_udev_rule_for_this_adapter(virtual, usb, tmp_path):
    """ModemManager probes new serial ports; the fix is a udev rule with the adapter's own USB ids."""
    import shutil
    dev = virtual("rak3172")
    usb(fake_usb_port(dev.port, 0x10C4, 0xEA60, "CP2102 USB to UART"))
    fake_mm = tmp_path / "ModemManager"          # a program by that name holds the port
    shutil.copy(shutil.which("sleep"), fake_mm)
    fd = os.open(dev.port, os.O_RDWR | os.O_NOCTTY)
    holder = subprocess.Popen([str(fake_mm), "60"], stdin=fd)
    os.close(fd)
    try:
        time.sleep(0.1)
        f = by_code(diagnose(dev.port, baud=FAST_BAUD))["port-busy"]
    finally:
        holder.kill()
        holder.wait()
    assert f"ModemManager (pid {holder.pid})" in f.finding
    assert 'ATTRS{idVendor}=="10c4", ATTRS{idProduct}=="ea60", ENV{ID_MM_DEVICE_IGNORE}="1"' in f.command


@pytest.mark.parametrize("system, command", [
    ("Linux", "rakflash udev --install"),
    ("Darwin", "ls -l {port}"),
    ("Windows", "rakflash doctor --port {port}"),
])
def test_permission_advice_per_system(tmp_path, system, command):
    """A port only root may open (owner root, group root): Linux gets a udev rule for the adapter's
    USB ids; macOS the /dev/cu.* advice; Windows (where 'access denied' means another program)."""
    from rakflash.flows.doctor import permission_advice
    from rakflash.ports import PortEntry
    port = tmp_path / "ttyUSB0"
    port.write_text("")
    os.chown(port, 0, 0)
    os.chmod(port, 0o600)
    entry = PortEntry(str(port), 0x1A86, 0x7523, "USB Serial", None, None)
    text, cmd, _ = permission_advice(str(port), entry, system)
    assert cmd == command.replace("{port}", str(port))
    if system == "Darwin":
        assert "/dev/cu." in text
    if system == "Linux":      # the adapter's own rule is named, and udev --install writes it
        assert 'ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523", MODE="0660", TAG+="uaccess"' in text


def test_a_port_that_vanishes_mid_way_says_so(virtual):
    from rakflash.sim import Faults
    dev = virtual("rak3172", faults=Faults(pull_cable_after=3))
    report = diagnose(dev.port, baud=FAST_BAUD)
    f = by_code(report)["port-vanished"]
    assert f.command == "rakflash ports" and "went away" in f.finding
    assert "application" not in by_code(report)


# ------------------------------------------------------------------ what answers

def test_silent_port_lists_the_rates_tried_and_the_wiring_checks(fake):
    dev = fake(answer=lambda line: None)       # a port with nothing behind it that talks back
    report = diagnose(dev.port)
    f = by_code(report)["silent"]
    assert "115200" in f.finding and "9600" in f.finding
    assert "TX → module RX" in f.next and "powered" in f.next
    assert f.command == f"rakflash doctor --port {dev.port}" and report.exit_code == 5


def test_tx_tied_to_rx_is_told_apart_from_silence(fake):
    dev = fake(loopback=True)
    report = diagnose(dev.port, baud=115200)
    found = by_code(report)
    assert "loopback" in found and "silent" not in found
    assert "jumper" in found["loopback"].why


def test_garbage_at_every_rate(virtual):
    dev = virtual("rak3172", baud=250000)      # a rate neither the catalog nor doctor's extra list has
    report = diagnose(dev.port)
    f = by_code(report)["garbage"]
    assert "unreadable" in f.finding and "115200" in f.finding
    assert "GND" in f.next and f.command.endswith("--baud RATE")
    assert report.exit_code == 5


def test_a_rate_outside_the_catalog_is_found(virtual):
    dev = virtual("rak3172", baud=230400)
    report = diagnose(dev.port)
    found = by_code(report)
    assert found["application"].level == "ok" and "at 230400 baud" in found["application"].finding
    assert "not a rate RAK firmware uses" in found["baud-rate"].why
    assert "--baud 230400" in found["application"].command


def test_an_at_modem_is_not_a_rak_module(fake):
    dev = fake(answer=lambda line: "OK" if line.upper() == "AT" else "ERROR")   # what a cellular modem does
    code, out, found = doctor_json("--port", dev.port, "--baud", "115200")
    assert code == 5
    assert found["not-a-rak-module"]["command"] == "rakflash ports"
    assert "modem" in found["not-a-rak-module"]["why"]
    assert "application" not in found


def test_a_text_console_that_is_not_rak(fake):
    dev = fake(answer=lambda line: f"Unknown command: {line}")
    report = diagnose(dev.port, baud=115200)
    f = by_code(report)["not-a-rak-module"]
    assert "Unknown command" in f.finding and "silent" not in by_code(report)


def test_application_answering_names_module_versions_and_update_command(virtual):
    dev = virtual("rak3172", serial_number="AB12")
    code, out, found = doctor_json("--port", dev.port, "--baud", str(FAST_BAUD))
    assert code == 0 and out["result"] == "ok"
    f = found["application"]
    assert f"RAK3172 runs {OLD}" in f["finding"] and "RUI_BOOT_0.8_STM32WLE5CC" in f["finding"]
    assert "AB12" in f["finding"]
    assert f["command"] == f"rakflash flash FIRMWARE.bin --port {dev.port} --baud {FAST_BAUD}"
    assert out["devices"][0]["module"] == "RAK3172"


def test_for_file_that_fits_gives_the_flash_command_that_works(virtual, new_app):
    dev = virtual("rak3172")
    code, out, found = doctor_json("--port", dev.port, "--baud", str(FAST_BAUD), "--for", str(new_app))
    assert code == 0
    f = found["image-fits"]
    assert NEW in f["finding"] and "12,288 bytes" in f["finding"]
    assert f["command"] == f"rakflash flash {new_app} --port {dev.port} --baud {FAST_BAUD}"
    assert dev.updates == 0 and dev.app_version == OLD          # doctor wrote nothing
    code, result = cli_json(*shlex.split(f["command"])[1:], "--yes")
    assert (code, result["app_version_after"]) == (0, NEW)


def test_for_file_already_running(virtual, tmp_path, cat):
    dev = virtual("rak3172")
    same = tmp_path / "same.bin"
    same.write_bytes(firmware.app_image(cat.module("rak3172"), OLD, 8192))
    report = diagnose(dev.port, baud=FAST_BAUD, image_path=str(same))
    f = by_code(report)["already-up-to-date"]
    assert f.level == "ok" and f.command.endswith("--force") and report.exit_code == 0


def test_for_file_of_another_module_is_refused_with_why(virtual, tmp_path, cat):
    dev = virtual("rak3172")
    other = tmp_path / "rak811.bin"
    other.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 8192))
    report = diagnose(dev.port, baud=FAST_BAUD, image_path=str(other))
    f = by_code(report)["wrong-target"]
    assert f.level == "problem" and "does not run" in f.why and report.exit_code == 6


def test_old_bootloader_behind_a_rui_v3_application_is_read_and_the_recovery_named(virtual, tmp_path, cat):
    """The seed case: RAK811 bootloader 3.0.2, firmware 3.0.0.14. The application can't tell its
    bootloader's version, so doctor asks the bootloader, and starts the application again."""
    dev = virtual("rak811", bootloader_version="V3.0.2")
    fw = tmp_path / "RAK811_3.0.0.14.bin"
    fw.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 16 * 1024))
    code, out, found = doctor_json("--port", dev.port, "--baud", str(FAST_BAUD), "--module", "rak811",
                                   "--for", str(fw))
    f = found["bootloader-too-old"]
    assert code == 6
    assert "needs bootloader 3.0.5" in f["finding"] and "read bootloader V3.0.2" in f["finding"]
    assert "stall" in f["why"]
    assert f["command"] == f"rakflash recover FULL.hex --port {dev.port} --module rak811"
    assert dev.wait_mode(Mode.APP) and dev.updates == 0 and dev.app_version == "V3.0.0.13.H"


def test_module_waiting_in_its_bootloader_gets_the_command_that_finishes_it(virtual, new_app):
    dev = virtual("rak3172", state="bootloader")
    report = diagnose(dev.port, baud=FAST_BAUD, image_path=str(new_app))
    found = by_code(report)
    f = found["in-bootloader"]
    assert f.level == "action" and "RUI_BOOT_0.8_STM32WLE5CC" in f.finding
    assert "not dead" in f.why and report.exit_code == 0
    code, result = cli_json(*shlex.split(f.command)[1:], "--yes")
    assert (code, result["app_version_after"]) == (0, NEW) and dev.mode == Mode.APP


def _flashes(command, path):
    """Whether ``command`` is `rakflash flash` of the file at ``path``."""
    words = shlex.split(command or "")
    return words[:2] == ["rakflash", "flash"] and path in words


@pytest.mark.parametrize("case", ["seed: old bootloader", "another module's firmware", "a damaged file"])
def test_a_refusal_outranks_finish_the_update(virtual, tmp_path, cat, case):
    """A module waiting in its bootloader, and --for a file flash refuses: no finding may
    advise flashing that file (the seed: bootloader 3.0.2, firmware 3.0.0.14 — 'use recover'
    and 'finish the update: rakflash flash RAK811_3.0.0.14.bin' contradicted each other)."""
    if case.startswith("seed"):
        dev = virtual("rak811", state="bootloader", bootloader_version="V3.0.2")
        fw = tmp_path / "RAK811_3.0.0.14.bin"
        fw.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 16 * 1024))
        refusal, exit_code, extra = "bootloader-too-old", 6, ["--module", "rak811"]
    elif case.startswith("another"):
        dev = virtual("rak3172", state="bootloader")
        fw = tmp_path / "rak811.bin"
        fw.write_bytes(firmware.app_image(cat.module("rak811"), "V3.0.0.14.H", 8192))
        refusal, exit_code, extra = "wrong-target", 6, []
    else:       # the image's own error, found before any port is looked at
        dev = virtual("rak3172", state="bootloader")
        fw = tmp_path / "app.hex"
        fw.write_text(":10000000ZZ\n")
        refusal, exit_code, extra = "image-format", 3, []
    code, out, found = doctor_json("--port", dev.port, "--baud", str(FAST_BAUD), "--for", str(fw), *extra)
    assert code == exit_code and refusal in found and "in-bootloader" in found, out
    assert not [f for f in found.values() if f["level"] == "problem" and f["code"] != refusal], out
    assert not [f["code"] for f in out["findings"] if f["code"] != refusal and _flashes(f["command"], str(fw))]
    waiting = found["in-bootloader"]
    assert fw.name in waiting["next"] and "refuses" in waiting["next"]    # says why not that file
    assert refusal in waiting["next"]                                     # and where the way on is
    # what the other finding says flash would do, it does: refuse, writing nothing
    code, result = cli_json("flash", str(fw), "--port", dev.port, "--baud", str(FAST_BAUD), *extra, "--yes")
    assert (code, result["error"]) == (exit_code, refusal) and dev.updates == 0


def test_module_left_in_a_transfer_session_is_seen_as_waiting(virtual):
    """An update cut off right after at+update: the bootloader still asks for a file ('C's)."""
    import serial
    dev = virtual("rak3172", state="bootloader")
    with serial.Serial(dev.port, FAST_BAUD, timeout=2) as s:
        s.write(b"at+update\r\n")
        assert s.read_until(b"C").endswith(b"C")     # the receiver asks for a file
    report = diagnose(dev.port, baud=FAST_BAUD)
    assert by_code(report)["in-bootloader"].command == f"rakflash flash FIRMWARE.bin --port {dev.port} --baud {FAST_BAUD}"


def test_flooding_sketch_names_the_reset_window_and_the_setup_pause(virtual, new_app):
    dev = virtual("rak3172", sketch="flooding", flood_after=0.0, baud=115200)
    time.sleep(0.2)
    code, out, found = doctor_json("--port", dev.port, "--for", str(new_app))
    f = found["flooding"]
    assert code == 5
    assert "sensor reading" in f["finding"] and "reset button" in f["next"] and "delay(" in f["next"]
    assert f["command"] == f"rakflash flash {new_app} --port {dev.port}"
    # Nothing tells which module it is: a command that runs as it is (flash takes the module
    # from the file), and how to find the name if it can't — never a placeholder to fill in.
    code, out, found = doctor_json("--port", dev.port)
    f = found["flooding"]
    assert f["command"] == f"rakflash flash FIRMWARE.bin --port {dev.port}"
    assert "MODULE" not in f["command"] + f["next"]
    assert "--module" in f["next"] and "rak3172" in f["next"] and "rakflash modules" in f["next"]
    # Known (--module), it is filled in.
    code, out, found = doctor_json("--port", dev.port, "--module", "rak3172")
    f = found["flooding"]
    assert f["command"] == f"rakflash flash FIRMWARE.bin --port {dev.port} --module rak3172"
    assert "rakflash modules" not in f["next"]


@pytest.mark.parametrize("name, pid, boot0, command_for", [
    ("rak3172", 0x497, "pin 21", "rak3172"), ("rak811", 0x429, "pin 17", "rak811"),
    # The RUI3 variants share the chip: the ROM names every board it could be, each with its pins,
    # and one command (the flash map is the same) restores any of them.
    ("rak3172-sip", 0x497, "the BOOT0 pad", "rak3172"), ("rak3172-t", 0x497, "pin 21", "rak3172"),
    ("rak11160", 0x497, "the BOOT pin", "rak3172")])
def test_boot0_left_high_the_rom_bootloader_is_named_with_the_way_out(virtual, cat, name, pid, boot0,
                                                                       command_for):
    dev = virtual(name, boot_pin=True)
    assert dev.wait_mode(Mode.ROM)
    same_chip = [m.name for m in cat.modules_with_mcu(dev.module.mcu)]
    for _ in range(2):            # a second run finds the ROM already in sync, and still knows it
        report = diagnose(dev.port, baud=FAST_BAUD)
        f = by_code(report)["rom-bootloader"]
        assert f.details["pid"] == pid and f.details["modules"] == same_chip and dev.module.name in same_chip
        assert f"BOOT0 is {boot0}" in f.next and "BOOT0 low" in f.next and report.exit_code == 5
    assert f.command == f"rakflash recover FULL.hex --port {dev.port} --module {command_for}"
    dev.set_boot_pin(False)       # what the finding says: BOOT0 low, reset
    dev.press_reset()
    assert dev.wait_mode(Mode.APP)
    assert "application" in by_code(diagnose(dev.port, baud=FAST_BAUD))


def test_boot_held_on_a_rak11720_the_secure_bootloader_is_named_with_the_way_out(virtual):
    from rakflash.apollo3_info0 import rak11720_default
    dev = virtual("rak11720", boot_pin=True, info0=rak11720_default().replace(uart_baud=FAST_BAUD).raw)
    assert dev.wait_mode(Mode.ROM)
    report = diagnose(dev.port, baud=FAST_BAUD)
    found = by_code(report)
    f = found["apollo3-sbl"]
    assert "secure bootloader answers" in f.finding and "RAK11720" in f.finding
    assert "GPIO41" in f.next and "release BOOT" in f.next and report.exit_code == 5
    assert f.command == f"rakflash recover FULL.hex --port {dev.port} --module rak11720"
    assert "silent" not in found and "garbage" not in found
    dev.set_boot_pin(False)        # what the finding says: release BOOT, reset
    dev.press_reset()
    assert dev.wait_mode(Mode.APP)
    assert "application" in by_code(diagnose(dev.port, baud=FAST_BAUD))


@pytest.fixture
def rak4631(virtual):
    """rak4631(name) -> a started virtual RAK4631 (RUI3, or 'rak4631-arduino') on its own virtual USB port."""
    from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD

    def make(name="rak4631"):
        kw = {"dfu_key": RAK4631_KEY} if name == "rak4631" else {}
        return virtual(name, baud=USB_FULL_SPEED_BAUD, **kw)
    return make


def _packages(tmp_path, cat):
    from rakflash import dfu_package as dp
    rui3 = tmp_path / "RUI3_APP.zip"
    rui3.write_bytes(dp.secure_package(firmware.app_image(cat.module("rak4631-r"), "RUI_4.0.6_RAK4631", 20_000),
                                       key_pem=RAK4631_KEY, fw_version=2))
    arduino = tmp_path / "sketch.zip"
    arduino.write_bytes(dp.legacy_package(firmware.app_image(cat.module("rak4631-arduino"), "ARDUINO_SKETCH_1.1",
                                                             16_000)))
    return str(rui3), str(arduino)


def test_rak4631_rui3_variant_and_the_package_it_takes(rak4631, tmp_path, cat):
    dev = rak4631("rak4631")
    rui3, arduino = _packages(tmp_path, cat)
    found = by_code(diagnose(dev.port))
    f = found["rak4631-variant"]
    assert "RUI3" in f.finding and "1915:521F" in f.finding and "signed" in f.next
    assert f.command == found["application"].command == f"rakflash flash PACKAGE.zip --port {dev.port}"
    report = diagnose(dev.port, image_path=arduino)
    f = by_code(report)["package-mismatch"]
    assert f.level == "problem" and "Extended Error 0x07" in f.why and report.exit_code == 6
    assert by_code(diagnose(dev.port, image_path=rui3))["image-fits"].command == \
        f"rakflash flash {rui3} --port {dev.port}"


def test_rak4631_arduino_variant_is_pointed_at_the_conversion(rak4631, tmp_path, cat):
    dev = rak4631("rak4631-arduino")
    rui3, arduino = _packages(tmp_path, cat)
    found = by_code(diagnose(dev.port))
    assert "runs its sketch" in found["application"].finding
    assert found["rak4631-variant"].command == \
        f"rakflash convert-to-rui3 rui3_nrf52840_bootloader_latest.zip RUI3_APP.zip --port {dev.port}"
    f = by_code(diagnose(dev.port, image_path=rui3))["package-mismatch"]
    assert f.command == f"rakflash convert-to-rui3 rui3_nrf52840_bootloader_latest.zip {rui3} --port {dev.port}"
    assert "image-fits" in by_code(diagnose(dev.port, image_path=arduino))
    assert dev.updates == 0


def test_unusable_image(virtual, tmp_path):
    dev = virtual("rak3172")
    report = diagnose(dev.port, baud=FAST_BAUD, image_path=str(tmp_path / "missing.bin"))
    found = by_code(report)
    assert found["image-not-found"].exit_code == 3 and "application" in found


def test_time_is_bounded(fake):
    dev = fake(answer=lambda line: None)
    report = diagnose(dev.port, budget=1.0)
    f = by_code(report)["out-of-time"]
    assert "identifying" in f.finding and report.budget == 1.0


def test_human_output(virtual):
    dev = virtual("rak3172", state="bootloader")
    proc = run_cli("doctor", "--port", dev.port, "--baud", str(FAST_BAUD))
    assert proc.returncode == 0, proc.stderr
    assert "! RAK3172 (or one of its RUI3 variants) waits in its bootloader" in proc.stdout
    assert "why" in proc.stdout and f"rakflash flash FIRMWARE.bin --port {dev.port}" in proc.stdout
    assert "at most 20 s per port" in proc.stdout
