"""Linux udev rules that let the logged-in user open every serial port rakflash knows by its USB id.

One rule per USB id of the catalog (modules' own native USB ids, the USB-UART bridges they sit
behind, SWD probes): ``TAG+="uaccess"`` gives the person at the computer access (systemd-logind;
no group to join, no logging out), ``MODE="0660"`` keeps the device's group, and
``ENV{ID_MM_DEVICE_IGNORE}="1"`` keeps ModemManager from probing the port and garbling the first
bytes (DESIGN.md §2, "What breaks in the field"). A probe also gets a rule for its USB device
itself, which pyOCD opens directly. ``install`` writes them with ``sudo tee`` and reloads udev.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from . import catalog as _catalog
from .errors import UdevInstallFailed, UsageError

RULES_PATH = "/etc/udev/rules.d/70-rakflash.rules"


def rules(cat: _catalog.Catalog | None = None) -> str:
    """The rules file's text: every USB id of the catalog once, with what it is."""
    cat = cat or _catalog.load()
    lines = ["# rakflash: serial ports of RAK modules, the USB-UART bridges they sit behind and SWD",
             "# probes, for the logged-in user; ModemManager leaves them alone. Written by 'rakflash udev'.",
             ""]
    seen = set()
    for u in cat.usb_ids:
        if (u.vid, u.pid) in seen:
            continue
        seen.add((u.vid, u.pid))
        what = cat.module(u.module).name if u.module else u.name
        ids = f'ATTRS{{idVendor}}=="{u.vid:04x}", ATTRS{{idProduct}}=="{u.pid:04x}"'
        lines.append(f"# {u.vid:04X}:{u.pid:04X} {what}")
        lines.append(f'SUBSYSTEM=="tty", {ids}, MODE="0660", TAG+="uaccess", ENV{{ID_MM_DEVICE_IGNORE}}="1"')
        if u.kind == "probe":
            lines.append(f'SUBSYSTEM=="usb", ATTR{{idVendor}}=="{u.vid:04x}", '
                         f'ATTR{{idProduct}}=="{u.pid:04x}", MODE="0660", TAG+="uaccess"')
    return "\n".join(lines) + "\n"


def install_commands(path: str = RULES_PATH) -> list[list[str]]:
    """What ``install`` runs, in order (with sudo unless already root)."""
    sudo = [] if hasattr(os, "geteuid") and os.geteuid() == 0 else ["sudo"]
    return [sudo + ["tee", path], sudo + ["udevadm", "control", "--reload-rules"],
            sudo + ["udevadm", "trigger", "--subsystem-match=tty", "--action=add"]]


def install(system: str, *, on_step=None, timeout: float = 120) -> list[str]:
    """Write :func:`rules` to :data:`RULES_PATH` and reload udev; returns the commands run.
    ``on_step(command)`` is told each before it runs (sudo may ask for a password)."""
    if system != "Linux":
        raise UsageError(f"udev is Linux's; this is {system}",
                         hint="macOS and Windows need no rules to open a serial port; 'rakflash "
                              "doctor' says what else keeps a port shut.")
    text = rules()
    done: list[str] = []
    for command in install_commands():
        if shutil.which(command[0]) is None:
            raise UdevInstallFailed(f"'{command[0]}' is not installed, so the rules can't be written",
                                    hint=f"As root, write the output of 'rakflash udev' to {RULES_PATH}, "
                                         f"then run: udevadm control --reload-rules")
        shown = " ".join(command)
        if on_step:
            on_step(shown)
        try:
            proc = subprocess.run(command, input=text if "tee" in command else None, text=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UdevInstallFailed(f"'{shown}' did not finish within {timeout:.0f} s"
                                    + (": the rules were written" if done else "")) from None
        if proc.returncode != 0:
            why = (proc.stderr or "").strip().splitlines()
            raise UdevInstallFailed(f"'{shown}' failed (exit {proc.returncode})"
                                    + (f": {why[-1]}" if why else "")
                                    + ("; the rules file was written" if done else "; nothing was written"))
        done.append(shown)
    return done
