"""Windows and macOS (issue 23): a virtual module without ptys, and what differs per platform.

The TCP transport serves the simulator's line model over RFC 2217 on 127.0.0.1, so every test
here runs on any system; the suite's flow tests run over it a second time in .ci/run
(RAKFLASH_SIM_TRANSPORT=tcp).
"""

from __future__ import annotations

import time

import pytest

from conftest import FAST_BAUD
from rakflash.link import Link
from rakflash.sim import SimOptions, create


@pytest.fixture
def tcp_module():
    started = []

    def make(name: str = "rak3172", **kw):
        kw.setdefault("baud", FAST_BAUD)
        kw.setdefault("latency_ms", 0.2)
        kw.setdefault("flash_scale", 0.0)
        dev = create(name, SimOptions(transport="tcp", **kw)).start()
        started.append(dev)
        return dev

    yield make
    for dev in started:
        dev.stop()


def ask(link: Link, command: str, timeout: float = 1.0) -> list[bytes]:
    link.discard_input()
    link.write_line(command)
    lines = []
    while (line := link.read_line(timeout)) is not None:
        lines.append(line)
        if line in (b"OK",) or line.startswith(b"AT_"):
            break
    return lines


def test_a_virtual_module_over_tcp_is_an_rfc2217_port_on_this_computer(tcp_module):
    dev = tcp_module("rak3172")
    assert dev.port.startswith("rfc2217://127.0.0.1:")
    with Link(dev.port, FAST_BAUD) as link:
        assert ask(link, "AT+VER=?") == [f"AT+VER={dev.app_version}".encode(), b"OK"]


def test_over_tcp_the_wrong_baud_rate_is_garbage_as_on_a_real_line(tcp_module):
    """RFC 2217 tells the simulator the host's baud rate; a plain socket could not."""
    dev = tcp_module("rak3172", baud=115200)
    with Link(dev.port, 9600) as link:
        answer = ask(link, "AT", 0.5)
        assert b"OK" not in answer
        link.baud = 115200                  # the same open port, now at the module's rate
        assert ask(link, "AT") == [b"OK"]
    assert dev.uart.host_baud() is None     # closed: no host on the line any more


def test_over_tcp_the_host_parity_and_control_lines_reach_the_module(tcp_module):
    dev = tcp_module("rak3172")
    with Link(dev.port, FAST_BAUD) as link:
        assert dev.uart.host_lines() == {"rts": False, "dtr": False}     # opened released
        link.set_lines(rts=True)
        assert dev.uart.host_lines() == {"rts": True, "dtr": False}
        link.set_parity("E")
        assert dev.uart.host_parity() == "E"
        assert ask(link, "AT", 0.5) != [b"OK"]     # 8E1 into an 8N1 console: framing errors


def test_the_line_model_side_channels_work_over_tcp(tcp_module):
    """Faults, the reset button and a pulled cable are the same line model on either transport."""
    from rakflash.errors import PortDisconnected
    dev = tcp_module("rak3172")
    with Link(dev.port, FAST_BAUD) as link:
        dev.uart.faults.drop_rate = 1.0             # everything the host sends is lost
        assert ask(link, "AT", 0.3) == []
        dev.uart.faults.drop_rate = 0.0
        resets = dev.resets
        dev.press_reset()
        deadline = time.monotonic() + 2
        while dev.resets == resets and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dev.resets == resets + 1
        assert ask(link, "AT") == [b"OK"]
        dev.uart.pull_cable()
        with pytest.raises(PortDisconnected):
            for _ in range(20):
                link.write_line("AT")
                link.read_line(0.1)
    new_port = dev.plug_in()
    assert new_port.startswith("rfc2217://") and new_port != link.port_name
    with Link(new_port, FAST_BAUD) as link:
        assert ask(link, "AT") == [b"OK"]


# ------------------------------------------------------------------ no POSIX-only modules

# Run in a fresh interpreter: pyserial is imported first (on Windows it has its own backend, here
# its POSIX one needs termios), then fcntl, termios and tty are hidden — `import termios` raises
# ImportError from then on, as on Windows — and every rakflash module is imported.
HIDE_POSIX = """
import importlib, pkgutil, sys
import serial, serial.tools.list_ports
for name in ("fcntl", "termios", "tty", "pty"):
    sys.modules[name] = None
import rakflash
failed = []
for info in pkgutil.walk_packages(rakflash.__path__, "rakflash."):
    if info.name.endswith(".__main__"):
        continue          # runs the command line (it only imports rakflash.cli)
    try:
        importlib.import_module(info.name)
    except Exception as exc:
        failed.append(f"{info.name}: {exc!r}")
print("imported", len(list(pkgutil.walk_packages(rakflash.__path__, "rakflash."))))
print("\\n".join(failed) or "no failures")
"""


def run_without_posix_modules(code: str, *args: str, timeout: float = 120):
    import os
    import subprocess
    import sys

    from conftest import SRC
    env = {k: v for k, v in os.environ.items() if k != "RAKFLASH_SIM_TRANSPORT"}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_every_module_imports_without_fcntl_and_termios():
    proc = run_without_posix_modules(HIDE_POSIX)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "no failures", proc.stdout
    assert int(proc.stdout.split()[1]) > 50          # it did walk the package


def test_demo_picks_tcp_by_itself_where_there_are_no_ptys():
    """The README's first command, where ptys are missing (as on Windows): no variable set."""
    import json
    code = HIDE_POSIX.split("import rakflash")[0] + (
        "from rakflash.cli import main\n"
        "main(['demo', '--json'])\n")
    proc = run_without_posix_modules(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert result["result"] == "ok" and result["port"].startswith("rfc2217://127.0.0.1:"), result
    assert result["flash_reports"] == result["app_version_after"]


# ------------------------------------------------------------------ rakflash sim --transport tcp

def test_sim_over_tcp_prints_the_url_as_its_port_and_info_identifies_it(tmp_path):
    from conftest import cli_json, run_cli
    from test_cli import SimProcess
    sim = SimProcess("rak3172", "--transport", "tcp", "--baud", "921600", "--latency-ms", "0.2")
    try:
        assert sim.port.startswith("rfc2217://127.0.0.1:")
        code, out = cli_json("info", "--port", sim.port, "--baud", "921600")
        assert code == 0, out
        assert out["module"] == "RAK3172" and out["port"] == sim.port
    finally:
        assert sim.stop() in (0, 1, -2, 130)
    refused = run_cli("sim", "rak3172", "--transport", "tcp", "--link", str(tmp_path / "port"))
    assert refused.returncode == 2 and "--link" in refused.stderr and "URL" in refused.stderr


def test_a_tcp_port_another_program_holds_is_port_busy(tcp_module):
    """One program at a time, as on a serial port; the second is told so, by name."""
    import serial

    from rakflash.errors import PortBusy
    dev = tcp_module("rak3172")
    with serial.serial_for_url(dev.port, FAST_BAUD):
        with pytest.raises(PortBusy):
            Link(dev.port, FAST_BAUD)
    with Link(dev.port, FAST_BAUD) as link:          # closed by the other program: free again
        assert ask(link, "AT") == [b"OK"]


# ------------------------------------------------------------------ RTS/DTR wired to RESET/BOOT0

def test_over_tcp_the_flood_is_caught_by_a_reset_through_rts(tcp_module, cat, tmp_path):
    """An adapter whose RTS drives RESET: `--reset-with rts` restarts a flooding module and the
    burst catches its start-up window, with nobody at the module (a pty has no RTS to carry)."""
    from conftest import cli_json
    from rakflash.sim import firmware
    new = tmp_path / "new.bin"
    new.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 12 * 1024))
    dev = tcp_module("rak3172", sketch="flooding", flood_after=0.3, baud=115200, reset_with="rts")
    time.sleep(0.5)                                  # flooding now
    resets = dev.resets
    code, out = cli_json("flash", str(new), "--port", dev.port, "--yes", "--reset-with", "rts",
                         "--reset-window", "10", timeout=120)
    assert code == 0, out
    assert out["app_version_after"] == "RUI_4.0.6_RAK3172-E" == dev.app_version
    assert dev.resets > resets


def test_over_tcp_a_recovery_through_the_rom_needs_no_hands(tcp_module, cat, tmp_path):
    """RTS to RESET, DTR to BOOT0 (stm32flash's -i wiring): recover enters the STM32 ROM by the
    lines, writes the full image and releases BOOT0, and the new bootloader and firmware run."""
    from conftest import cli_json
    from rakflash.sim import Mode, firmware
    rak811 = cat.module("rak811")
    dev = tcp_module("rak811", bootloader_version="3.0.2", app_version="V3.0.0.13.H",
                     reset_with="rts", boot0_with="dtr")
    full = tmp_path / "full.hex"
    full.write_text(firmware.combined_hex(rak811, "V3.0.5", "V3.0.0.14.H", 40 * 1024))
    code, out = cli_json("recover", str(full), "--port", dev.port, "--baud", str(FAST_BAUD),
                         "--module", "rak811", "--reset-with", "rts", "--boot0-with", "dtr", "--yes",
                         timeout=120)
    assert code == 0, out
    assert (out["bootloader_version_after"], out["app_version_after"]) == ("V3.0.5", "V3.0.0.14.H")
    assert dev.boot_pin is False and dev.wait_mode(Mode.APP)
    assert (dev.bootloader_version, dev.app_version) == ("V3.0.5", "V3.0.0.14.H")


# ------------------------------------------------------------------ a port another program holds

def test_windows_access_is_denied_is_port_busy_naming_what_to_close(monkeypatch):
    """pyserial on Windows, when another program has COM3 open: its exact words (serialwin32)."""
    import serial

    from rakflash.errors import PortBusy

    def windows_open(*a, **kw):
        raise serial.SerialException("could not open port 'COM3': PermissionError(13, 'Access is "
                                     "denied.', None, 5)")
    monkeypatch.setattr(Link, "_open", staticmethod(windows_open))
    with pytest.raises(PortBusy) as caught:
        Link("COM3", 115200)
    assert "COM3 is in use by another program" in caught.value.message
    assert "Access is denied" in caught.value.message
    assert "Arduino IDE" in caught.value.hint and "WisToolBox" in caught.value.hint


def test_without_proc_lsof_names_the_program_that_holds_the_device(tmp_path, monkeypatch):
    """macOS has no /proc: the holder is named from lsof's answer (run for real here)."""
    import shutil
    import subprocess
    import sys

    from rakflash import ports
    if not shutil.which("lsof"):
        pytest.skip("no lsof on this machine")
    device = tmp_path / "cu.usbserial-0001"
    device.write_bytes(b"")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(device)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        found = ports.lsof_openers(str(device))
        assert [pid for pid, _ in found] == [holder.pid] and found[0][1].startswith("python")
        monkeypatch.setattr(ports, "PROC", str(tmp_path / "no-proc"))
        monkeypatch.setattr(ports.os.path, "realpath", lambda p: "/dev/cu.usbserial-0001")
        monkeypatch.setattr(ports, "lsof_openers", lambda p: found if p == "/dev/cu.usbserial-0001" else [])
        assert ports.other_openers("/dev/cu.usbserial-0001") == found
        monkeypatch.setattr(ports.os.path, "realpath", lambda p: "/dev/ttys004")   # a macOS pty
        assert ports.other_openers("/dev/ttys004") == []
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ ports as each platform names them

def recorded(device, vid, pid, description, *, product=None, serial=None, location=None):
    """One port as pyserial's list_ports gives it on that system (pyserial 3.5: Linux and macOS
    fill in the USB product string, Windows gives the driver's friendly name only)."""
    from serial.tools import list_ports_common
    p = list_ports_common.ListPortInfo(device, skip_link_detection=True)
    p.vid, p.pid, p.description, p.product = vid, pid, description, product
    p.serial_number, p.location = serial, location
    return p


PLATFORMS = {
    "linux": [recorded("/dev/ttyS0", None, None, "n/a"),
              recorded("/dev/ttyUSB0", 0x1A86, 0x7523, "USB Serial", product="USB Serial", location="1-2"),
              recorded("/dev/ttyACM0", 0x1915, 0x521F, "Rak4631 Serial COM", product="Rak4631 Serial COM",
                       serial="E1A2B3C4D5E6", location="1-3:1.0")],
    "macos": [recorded("/dev/cu.Bluetooth-Incoming-Port", None, None, "n/a"),
              recorded("/dev/cu.usbserial-1420", 0x1A86, 0x7523, "USB Serial", product="USB Serial",
                       location="20-2"),
              recorded("/dev/cu.usbmodem14301", 0x1915, 0x521F, "Rak4631 Serial COM",
                       product="Rak4631 Serial COM", serial="E1A2B3C4D5E6", location="20-3")],
    "windows": [recorded("COM1", None, None, "Communications Port (COM1)"),
                recorded("COM3", 0x1A86, 0x7523, "USB-SERIAL CH340 (COM3)", location="1-2"),
                recorded("COM7", 0x1915, 0x521F, "USB Serial Device (COM7)", serial="E1A2B3C4D5E6",
                         location="1-3:x.0")],
}


@pytest.mark.parametrize("system", sorted(PLATFORMS))
def test_ports_lists_each_systems_names_with_what_each_probably_is(system, monkeypatch):
    from serial.tools import list_ports

    from rakflash.ports import list_serial_ports
    monkeypatch.setattr(list_ports, "comports", lambda *a, **kw: list(PLATFORMS[system]))
    entries = {e.device: e for e in list_serial_ports()}
    bridge, native = [p.device for p in PLATFORMS[system][1:]]
    assert entries[bridge].module is None and "UART module" in entries[bridge].probably
    assert entries[native].module == "rak4631-r" and entries[native].serial_number == "E1A2B3C4D5E6"
    if system == "windows":      # no product string: the module is known, its mode is not
        assert entries[native].mode is None
        assert entries[native].probably == "RAK4631-R, application or bootloader (this system does not say which)"
    else:
        assert entries[native].mode == "app"
    first = PLATFORMS[system][0].device
    assert entries[first].probably is None and entries[first].module is None


@pytest.mark.parametrize("system", sorted(PLATFORMS))
def test_the_automatic_port_choice_takes_each_systems_name(system, monkeypatch):
    """Without --port, the only port that looks like a module's — by its USB ids, whatever the
    system calls it (COM3, /dev/cu.usbserial-1420: macOS lists the call-out cu. device only)."""
    from serial.tools import list_ports

    from rakflash.cli.options import pick_port
    from rakflash.errors import UsageError
    monkeypatch.setattr(list_ports, "comports", lambda *a, **kw: list(PLATFORMS[system][:2]))
    assert pick_port(None) == PLATFORMS[system][1].device
    monkeypatch.setattr(list_ports, "comports", lambda *a, **kw: list(PLATFORMS[system]))
    with pytest.raises(UsageError) as two:
        pick_port(None)
    assert "2 ports could be a module's" in two.value.message


# ------------------------------------------------------------------ the CI definition for other systems

def test_the_ci_workflow_runs_the_readmes_commands_on_three_systems():
    """.github/workflows/ci.yml can't run here; what it runs must be what the README tells a person
    to run (and, on Windows, the flow tests .ci/run runs over TCP)."""
    import re
    import shlex
    from pathlib import Path

    import yaml
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    quick_start = re.search(r"```sh\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands == ["pip install . && rakflash demo", "pip install -e '.[test]' && pytest"]

    job = yaml.safe_load((root / ".github/workflows/ci.yml").read_text())["jobs"]["test"]
    assert sorted(job["strategy"]["matrix"]["os"]) == ["macos-latest", "ubuntu-latest", "windows-latest"]
    steps = {s.get("name"): s for s in job["steps"]}
    assert steps["rakflash demo"]["run"].strip() == commands[0] and "if" not in steps["rakflash demo"]
    assert steps["the tests (Linux, macOS)"]["run"].strip() == commands[1]
    windows = steps["the tests (Windows)"]
    assert windows["env"] == {"RAKFLASH_SIM_TRANSPORT": "tcp"}
    assert windows["run"].strip().startswith(commands[1] + " tests/")
    ci_run = (root / ".ci/run").read_text().replace("\\\n", " ")
    second_pass = re.search(r"^RAKFLASH_SIM_TRANSPORT=tcp pytest (.*)$", ci_run, re.M).group(1)
    assert shlex.split(windows["run"])[len(shlex.split(commands[1])):] == shlex.split(second_pass)


# ------------------------------------------------------------------ rakflash udev (Linux)

def test_udev_prints_a_rule_for_every_usb_id_of_the_catalog(cat):
    from conftest import run_cli
    proc = run_cli("udev")
    assert proc.returncode == 0, proc.stderr
    rules = [ln for ln in proc.stdout.splitlines() if ln and not ln.startswith("#")]
    for u in cat.usb_ids:
        ids = f'ATTRS{{idVendor}}=="{u.vid:04x}", ATTRS{{idProduct}}=="{u.pid:04x}"'
        tty = [r for r in rules if r.startswith('SUBSYSTEM=="tty"') and ids in r]
        assert len(tty) == 1, (u, tty)
        assert 'TAG+="uaccess"' in tty[0] and 'ENV{ID_MM_DEVICE_IGNORE}="1"' in tty[0]
        if u.kind == "probe":      # pyOCD opens the probe's USB device itself
            assert f'SUBSYSTEM=="usb", ATTR{{idVendor}}=="{u.vid:04x}", ATTR{{idProduct}}=="{u.pid:04x}"' \
                in proc.stdout
    assert len(rules) == len({(u.vid, u.pid) for u in cat.usb_ids}) \
        + len({(u.vid, u.pid) for u in cat.usb_ids if u.kind == "probe"})


def fake_tools(folder, *, sudo_fails: bool = False):
    """sudo, tee and udevadm that only write down what they were asked (nothing touches /etc)."""
    log = folder / "log"
    folder.mkdir(exist_ok=True)
    (folder / "tee").write_text(f'#!/bin/sh\necho "tee $*" >> {log}\ncat > {folder}/written\n')
    (folder / "udevadm").write_text(f'#!/bin/sh\necho "udevadm $*" >> {log}\n')
    (folder / "sudo").write_text('#!/bin/sh\necho "sudo: a password is required" >&2\nexit 1\n' if sudo_fails
                                 else f'#!/bin/sh\necho "sudo $1" >> {log}\nexec "$@"\n')
    for name in ("tee", "udevadm", "sudo"):
        (folder / name).chmod(0o755)
    return log


@pytest.mark.parametrize("root", [True, False])
def test_udev_install_writes_the_rules_with_sudo_and_reloads_udev(tmp_path, monkeypatch, root):
    import os

    from rakflash import udev
    log = fake_tools(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0 if root else 1000)
    steps = []
    done = udev.install("Linux", on_step=steps.append)
    sudo = "" if root else "sudo "
    assert done == steps == [f"{sudo}tee /etc/udev/rules.d/70-rakflash.rules",
                             f"{sudo}udevadm control --reload-rules",
                             f"{sudo}udevadm trigger --subsystem-match=tty --action=add"]
    assert (tmp_path / "bin" / "written").read_text() == udev.rules()
    ran = log.read_text().splitlines()
    assert [ln for ln in ran if not ln.startswith("sudo")] == [
        "tee /etc/udev/rules.d/70-rakflash.rules", "udevadm control --reload-rules",
        "udevadm trigger --subsystem-match=tty --action=add"]
    assert sum(ln.startswith("sudo") for ln in ran) == (0 if root else 3)


def test_udev_install_that_sudo_refuses_says_nothing_was_written(tmp_path, monkeypatch):
    import os

    from rakflash import udev
    from rakflash.errors import UdevInstallFailed
    fake_tools(tmp_path / "bin", sudo_fails=True)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UdevInstallFailed) as failed:
        udev.install("Linux")
    assert failed.value.message == ("'sudo tee /etc/udev/rules.d/70-rakflash.rules' failed (exit 1): "
                                    "sudo: a password is required; nothing was written")
    assert "70-rakflash.rules" in failed.value.hint and not (tmp_path / "bin" / "written").exists()


def test_udev_install_elsewhere_than_linux_is_a_usage_error():
    from rakflash import udev
    from rakflash.errors import UsageError
    with pytest.raises(UsageError, match="udev is Linux's; this is Windows"):
        udev.install("Windows")


def test_udev_install_from_the_command_line_says_what_it_ran(tmp_path, monkeypatch):
    import os

    from conftest import cli_json
    fake_tools(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    code, out = cli_json("udev", "--install")
    assert code == 0, out
    assert out["installed"] is True and out["path"] == "/etc/udev/rules.d/70-rakflash.rules"
    assert [c.removeprefix("sudo ") for c in out["commands"]] == [
        "tee /etc/udev/rules.d/70-rakflash.rules", "udevadm control --reload-rules",
        "udevadm trigger --subsystem-match=tty --action=add"]
    assert "ENV{ID_MM_DEVICE_IGNORE}" in (tmp_path / "bin" / "written").read_text()


# ------------------------------------------------------------------ an adapter without its driver

IOREG = """+-o Root  <class IORegistryEntry, id 0x100000100, retain 30>
  +-o AppleT8103USBXHCI@00000000  <class AppleT8103USBXHCI, id 0x1000002f4, registered, matched>
    | {
    |   "locationID" = 0
    | }
    +-o USB Serial@00100000  <class IOUSBHostDevice, id 0x100000a3d, registered, matched, active>
        {
          "sessionID" = 1416197417123
          "idProduct" = 29987
          "kUSBProductString" = "USB Serial"
          "idVendor" = 6790
          "locationID" = 1048576
        }
    +-o Keyboard@00200000  <class IOUSBHostDevice, id 0x100000a50, registered, matched, active>
        {
          "idVendor" = 1452
          "idProduct" = 641
        }
"""

PNPUTIL = r"""Microsoft PnP Utility

Instance ID:                USB\VID_10C4&PID_EA60\0001
Device Description:         CP2102 USB to UART Bridge Controller
Class Name:                 Other devices
Status:                     Problem
Problem Code:               28 (0x1C) [CM_PROB_FAILED_INSTALL]

Instance ID:                USB\ROOT_HUB30\4&1a2b3c4d&0&0
Device Description:         USB Root Hub (USB 3.0)
Class Name:                 USB
Status:                     Started
"""


def test_the_usb_ids_on_the_bus_as_each_system_tells_them(tmp_path):
    from rakflash import usb_devices
    assert usb_devices.parse_ioreg(IOREG) == [(0x1A86, 0x7523), (1452, 641)]
    assert usb_devices.parse_pnputil(PNPUTIL) == [(0x10C4, 0xEA60)]
    for name, vid, pid in (("1-2", "1a86", "7523"), ("usb1", "1d6b", "0002")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "idVendor").write_text(vid + "\n")
        (tmp_path / name / "idProduct").write_text(pid + "\n")
    (tmp_path / "1-2:1.0").mkdir()                     # an interface: no ids of its own
    assert usb_devices.from_sysfs(tmp_path) == [(0x1A86, 0x7523), (0x1D6B, 0x0002)]
    assert usb_devices.present("Plan9") is None


@pytest.mark.parametrize("system, says", [
    ("Windows", "https://www.silabs.com/developers/usb-to-uart-bridge-vcp-drivers"),
    ("Darwin", "older macOS needs WCH's, from https://www.wch-ic.com/downloads/CH34XSER_MAC_ZIP.html"),
    ("Linux", "sudo apt remove brltty"),
])
def test_doctor_names_the_driver_an_adapter_on_the_bus_lacks(system, says):
    from rakflash.flows.doctor import Observation, findings_for
    from rakflash.usb_devices import parse_ioreg, parse_pnputil
    on_bus = {"Windows": parse_pnputil(PNPUTIL), "Darwin": parse_ioreg(IOREG),
              "Linux": [(0x1A86, 0x7523)]}[system]
    found = findings_for(Observation(None, listing=[], system=system, usb_present=on_bus))
    assert found[0].code == "driver-missing" and says in found[0].next, found[0]
    assert "is plugged in, but no serial port came of it" in found[0].finding
    assert found[0].command == "rakflash ports"
    # the same adapter with its port listed: nothing is missing
    from rakflash.ports import PortEntry
    vid, pid = on_bus[0]
    listed = [PortEntry("COM3", vid, pid, "USB Serial", None, "a UART module")]
    assert "driver-missing" not in [f.code for f in findings_for(
        Observation(None, listing=listed, system=system, usb_present=on_bus))]


def test_a_rak4631_over_tcp_re_enumerates_on_a_new_tcp_port_that_ports_lists(tcp_module):
    """Native USB: AT+BOOT drops the port and the bootloader comes back on a new one — over TCP a
    new port number, registered with its USB identity as a new pty would be."""
    from rakflash.ports import list_serial_ports
    dev = tcp_module("rak4631")
    app_port = dev.port
    listed = {e.device: e for e in list_serial_ports() if e.virtual}
    assert (listed[app_port].module, listed[app_port].mode) == ("rak4631-r", "app")
    assert listed[app_port].to_dict()["vid_pid"] == "1915:521F"
    with Link(app_port, 115200) as link:
        link.write_line("AT+BOOT")
        boot_port = dev.wait_port_change(app_port)
    assert boot_port is not None and boot_port.startswith("rfc2217://127.0.0.1:") and boot_port != app_port
    listed = {e.device: e for e in list_serial_ports() if e.virtual}
    assert app_port not in listed and listed[boot_port].mode == "bootloader"
    assert listed[boot_port].serial_number == dev.opts.serial_number


def test_sim_wires_the_adapters_lines_from_the_command_line(tmp_path, cat):
    """`rakflash sim … --transport tcp --reset-with rts`: a flooding module that `flash --reset-with
    rts` resets by itself; on a pty the wiring is refused (no modem lines there)."""
    from conftest import cli_json, run_cli
    from rakflash.sim import firmware
    from test_cli import SimProcess
    new = tmp_path / "new.bin"
    new.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 12 * 1024))
    sim = SimProcess("rak3172", "--transport", "tcp", "--sketch", "flooding", "--reset-with", "rts",
                     "--flash-scale", "0")
    try:
        time.sleep(1.2)                                   # past the sketch's quiet start
        code, out = cli_json("flash", str(new), "--port", sim.port, "--yes", "--reset-with", "rts",
                             "--reset-window", "10", timeout=120)
        assert code == 0, out
        assert out["app_version_after"] == "RUI_4.0.6_RAK3172-E"
    finally:
        sim.stop()
    refused = run_cli("sim", "rak3172", "--transport", "pty", "--reset-with", "rts")
    assert refused.returncode == 2 and "no RTS/DTR" in refused.stderr
    refused = run_cli("sim", "rak3172", "--transport", "tcp", "--boot0-with", "cts")
    assert refused.returncode == 2 and "--boot0-with takes rts, dtr, -rts or -dtr" in refused.stderr


def test_a_request_the_server_cant_answer_drops_that_client_not_the_port(tcp_module):
    """An RFC 2217 client asking for the current baud rate before setting one (pyserial never does)
    is disconnected; the next program opens the port as usual."""
    import socket
    dev = tcp_module("rak3172")
    host, port = "127.0.0.1", int(dev.port.rsplit(":", 1)[1])
    with socket.create_connection((host, port)) as odd:
        odd.sendall(bytes([255, 250, 44, 1, 0, 0, 0, 0, 255, 240]))   # IAC SB COM-PORT SET-BAUDRATE 0 IAC SE
        odd.settimeout(2)
        while odd.recv(4096):                                        # until the server hangs up
            pass
    with Link(dev.port, FAST_BAUD) as link:
        assert ask(link, "AT") == [b"OK"]


def test_a_1200_baud_touch_whose_port_goes_before_the_setting_is_confirmed_is_no_error(tcp_module,
                                                                                   monkeypatch):
    """Over RFC 2217 the Arduino core can drop the port before the server confirms the new
    settings; pyserial then times out waiting for that confirmation. The touch did its job."""
    import serial
    dev = tcp_module("rak3172")
    with Link(dev.port, FAST_BAUD) as link:
        def never_confirmed(value):
            raise serial.SerialException("timeout while waiting for option 'control'")
        monkeypatch.setattr(link._ser, "rfc2217_set_control", never_confirmed)
        steps = []
        link.on_step = steps.append
        link.touch(1200)
        assert steps == [f"{dev.port} went away at the 1200-baud touch"]


def test_an_unknown_transport_in_the_variable_is_a_usage_error(monkeypatch):
    from conftest import run_cli
    monkeypatch.setenv("RAKFLASH_SIM_TRANSPORT", "serial")
    for args in (["demo"], ["sim", "rak3172"]):
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert "RAKFLASH_SIM_TRANSPORT='serial': the transports are pty, tcp" in proc.stderr
