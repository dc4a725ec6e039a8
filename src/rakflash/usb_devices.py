"""Which USB devices are plugged in, whether or not a serial port came of them.

pyserial lists serial *ports*; an adapter whose driver is missing (Windows, older macOS with a
CH340) or was taken by another driver (Linux: brltty and the CH340) is on the USB bus but has no
port, so no port listing shows it. This asks the system for the USB ids on the bus:

* Linux: sysfs, ``/sys/bus/usb/devices/*/idVendor`` and ``idProduct`` (hex);
* macOS: ``ioreg -p IOUSB -l -w 0`` — ``"idVendor" = 6790`` lines (decimal);
* Windows: ``pnputil /enum-devices /connected`` — ``USB\\VID_1A86&PID_7523\\…`` instance ids
  (pnputil's ``/enum-devices`` is in Windows 10 2004 and later).

Each returns None where the system can't be asked, never raises.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path


def present(system: str, *, sysfs: str = "/sys/bus/usb/devices",
            timeout: float = 5.0) -> list[tuple[int, int]] | None:
    """The (vid, pid) of every USB device attached, or None where rakflash can't tell."""
    if system == "Linux":
        return from_sysfs(Path(sysfs))
    command = {"Darwin": ["ioreg", "-p", "IOUSB", "-l", "-w", "0"],
               "Windows": ["pnputil", "/enum-devices", "/connected"]}.get(system)
    if command is None:
        return None
    try:
        text = subprocess.run(command, capture_output=True, text=True, timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_ioreg(text) if system == "Darwin" else parse_pnputil(text)


def from_sysfs(root: Path) -> list[tuple[int, int]] | None:
    try:
        devices = sorted(root.iterdir())
    except OSError:
        return None
    found = []
    for d in devices:
        try:
            found.append((int((d / "idVendor").read_text(), 16), int((d / "idProduct").read_text(), 16)))
        except (OSError, ValueError):
            continue          # an interface, not a device
    return _unique(found)


def parse_ioreg(text: str) -> list[tuple[int, int]]:
    """``ioreg -p IOUSB -l``: one ``+-o`` block per device, its properties ``"idVendor" = N`` and
    ``"idProduct" = N`` (decimal) in any order."""
    found = []
    for block in text.split("+-o ")[1:]:
        vid = re.search(r'"idVendor" = (\d+)', block)
        pid = re.search(r'"idProduct" = (\d+)', block)
        if vid and pid:
            found.append((int(vid.group(1)), int(pid.group(1))))
    return _unique(found)


def parse_pnputil(text: str) -> list[tuple[int, int]]:
    """``pnputil /enum-devices``: instance ids such as ``USB\\VID_1A86&PID_7523\\5&2B…``."""
    return _unique([(int(v, 16), int(p, 16))
                    for v, p in re.findall(r"USB\\VID_([0-9A-Fa-f]{4})&PID_([0-9A-Fa-f]{4})", text)])


def _unique(ids: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return list(dict.fromkeys(ids))
