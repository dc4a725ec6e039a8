"""What doctor advises about this computer rather than the module: where each USB-UART
adapter's driver comes from, the programs known to grab a serial port and how to keep them
off, and how a user gets permission to open a port — per operating system."""

from __future__ import annotations

import os
from shlex import quote
from typing import Any

from ...ports import PortEntry

# Where each adapter's driver comes from (the vendors' download pages) and its Linux kernel module
# (mainline usb-serial drivers). Keyed by the catalog's USB-UART bridge ids.
DRIVERS: dict[tuple[int, int], dict[str, str]] = {
    (0x1A86, 0x7523): {"name": "CH340", "vendor": "WCH",
                       "Windows": "https://www.wch-ic.com/downloads/CH341SER_EXE.html",
                       "Darwin": "https://www.wch-ic.com/downloads/CH34XSER_MAC_ZIP.html",
                       "Linux": "ch341"},
    (0x10C4, 0xEA60): {"name": "CP210x", "vendor": "Silicon Labs",
                       "Windows": "https://www.silabs.com/developers/usb-to-uart-bridge-vcp-drivers",
                       "Darwin": "https://www.silabs.com/developers/usb-to-uart-bridge-vcp-drivers",
                       "Linux": "cp210x"},
    (0x0403, 0x6001): {"name": "FT232", "vendor": "FTDI",
                       "Windows": "https://ftdichip.com/drivers/vcp-drivers/",
                       "Darwin": "https://ftdichip.com/drivers/vcp-drivers/",
                       "Linux": "ftdi_sio"},
}


def driver_advice(drv: dict[str, str] | None, system: str) -> str:
    """What to do on ``system`` when an adapter (``drv``: its :data:`DRIVERS` row, if known)
    is on the bus but no serial port came of it."""
    if system == "Windows":
        text = (f"Install {drv['vendor']}'s {drv['name']} driver from {drv['Windows']}, then unplug the "
                f"adapter and plug it in again (Device Manager lists it under 'Other devices' until then):"
                if drv else "Install the device's driver (Device Manager lists it under 'Other devices'), "
                            "then unplug and plug it in again:")
    elif system == "Darwin":
        if drv and drv["name"] == "CH340":       # (DESIGN.md §2: the CH340 note on older macOS)
            text = (f"Recent macOS has a driver for the CH340; older macOS needs {drv['vendor']}'s, from "
                    f"{drv['Darwin']}. Then unplug the adapter and plug it in again:")
        elif drv:
            text = (f"Install {drv['vendor']}'s {drv['name']} driver from {drv['Darwin']}, then unplug the "
                    f"adapter and plug it in again:")
        else:
            text = "Unplug it and plug it in again; if no /dev/cu.* port appears, its driver is missing:"
    else:
        text = (f"Linux's {drv['Linux']} driver should take it: if 'dmesg' shows the adapter attached and "
                f"then 'disconnected' a second later, brltty (a braille display driver) took it — "
                f"'sudo apt remove brltty' — else load the driver ('sudo modprobe {drv['Linux']}'). Then "
                f"replug it and list the ports:" if drv else
                "Check 'dmesg' for what happened when it was plugged in, then list the ports:")
    return text


# Programs known to grab serial ports, and how to keep them off for good.
KNOWN_HOLDERS: dict[str, tuple[str, str]] = {
    "ModemManager": ("ModemManager probes every new serial port for a modem and garbles the first "
                     "bytes; tell it to leave this adapter alone with a udev rule, then replug it:",
                     "echo 'ATTRS{{idVendor}}==\"{vid}\", ATTRS{{idProduct}}==\"{pid}\", "
                     "ENV{{ID_MM_DEVICE_IGNORE}}=\"1\"' | sudo tee /etc/udev/rules.d/99-rakflash-mm.rules"
                     " && sudo udevadm control --reload-rules"),
    "brltty": ("brltty (a braille display driver) claims USB-UART adapters such as the CH340; "
               "unless you use a braille display, remove it:", "sudo apt remove brltty"),
}


def permission_advice(path: str, entry: PortEntry | None, system: str) -> tuple[str, str, dict]:
    """How this user gets access to ``path`` on ``system``: (what to do, the command, details)."""
    if system == "Darwin":
        return ("macOS normally lets you open USB serial ports; use the /dev/cu.* name (a /dev/tty.* "
                "one waits for a carrier signal) and check the device's permissions:",
                f"ls -l {quote(path)}", {})
    if system == "Windows":
        return ("Windows refuses a port another program holds: close it (serial monitor, IDE).",
                f"rakflash doctor --port {quote(path)}", {})
    details: dict[str, Any] = {}
    try:
        import grp
        st = os.stat(path)
        group = grp.getgrgid(st.st_gid).gr_name
        group_may = bool(st.st_mode & 0o060)
    except (OSError, KeyError, ImportError):
        group, group_may = "dialout", True
    rule_text = None
    if entry is not None and entry.vid is not None:
        rule_text = (f'SUBSYSTEM=="tty", ATTRS{{idVendor}}=="{entry.vid:04x}", '
                     f'ATTRS{{idProduct}}=="{entry.pid:04x}", MODE="0660", TAG+="uaccess"')
        details["udev_rule"] = rule_text
    details["group"] = group
    if group != "root" and group_may:
        text = (f"{path} belongs to the group '{group}': add yourself to it, then log out and in "
                f"again (or start a shell with 'newgrp {group}')")
        if rule_text:
            text += ("; or give the logged-in user access with udev rules for every RAK module and "
                     "adapter ('rakflash udev --install' writes them; 'rakflash udev' shows them)")
        return text + ":", f"sudo usermod -aG {group} $USER", details
    if rule_text:
        return ("Only root may open it: give the logged-in user access with udev rules for every RAK "
                "module and adapter (this one's among them: " + rule_text + "), then replug the "
                "adapter:", "rakflash udev --install", details)
    return (f"Only root may open it: run rakflash with sudo, or change who may ({path} is owned "
            f"by group '{group}'):", f"ls -l {quote(path)}", details)
