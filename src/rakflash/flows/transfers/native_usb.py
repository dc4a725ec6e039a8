"""Following a native-USB module (RAK4631) from port to port: it re-enumerates at every reset.

Entering the bootloader (``AT+BOOT``, the 1200-baud touch) and starting the
new firmware both make the port vanish and a new one appear, with the same USB
vendor id, a product id or product string that says bootloader or application,
the same serial number and the same USB location. :func:`before_reset` notes
the port's identity and every port listed before the module is reset;
:func:`follow` then waits (with a deadline) for a port that appeared after that
and whose identity matches, and moves the link over. A port that was already
there is never followed: another module with the same ids, waiting in its
bootloader, is not the one that was reset (pc-nrfutil finds the device again by
its USB serial number alone, and would take it). When more than one new port
matches, rakflash stops and says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ... import ports
from ...catalog import Module
from ...errors import PortAmbiguous, PortNotBack
from ...events import Note, Sink, nowhere
from ...link import Link

REAPPEAR_TIMEOUT = 10.0     # seconds for a USB device to re-enumerate (typically well under 2 s)

# USB full speed carries at most 19 bulk packets of 64 bytes per 1 ms frame: the fastest a USB CDC
# port can move data (the simulator's native-USB line runs at this rate), and a 1 ms frame is the
# least a device's answer waits before the host polls it.
USB_FULL_SPEED_BYTES_PER_S = 19 * 64 * 1000
USB_FRAME_S = 0.001


def usb_serial(link: Link) -> str | None:
    """The USB serial number of the port the link is on, if the OS (or the simulator) tells it."""
    entry = ports.port_entry(link.port_name)
    return entry.serial_number if entry is not None else None


@dataclass
class BeforeReset:
    """The module's port as it was before a reset, and every port listed then."""

    port: str
    serial: str | None
    location: str | None
    present: dict[str, tuple] = field(default_factory=dict)


def before_reset(link: Link, serial: str | None = None) -> BeforeReset:
    """Note what :func:`follow` needs, just before the module is made to reset
    (``serial``: the serial number the module told, where the OS did not)."""
    entry = ports.port_entry(link.port_name)
    return BeforeReset(link.port_name, (entry.serial_number if entry else None) or serial,
                       entry.location if entry else None, ports.snapshot())


def current_mode(link: Link, module: Module) -> str | None:
    """``"app"`` or ``"bootloader"`` by the port's USB id, when it is one of ``module``'s."""
    entry = ports.port_entry(link.port_name)
    return entry.mode if entry is not None and entry.module == module.key else None


def follow(link: Link, module: Module, mode: str, *, since: BeforeReset, emit: Sink = nowhere,
           timeout: float = REAPPEAR_TIMEOUT, baud: int | None = None) -> float:
    """Wait for ``module``'s port in ``mode`` — one that appeared after ``since`` was noted,
    with its serial number and USB location — and move ``link`` to it; returns the seconds it took."""
    t0 = time.monotonic()
    gone = link.port_name
    link.close()
    try:
        entry = ports.wait_for_port(module.key, mode, serial_number=since.serial, timeout=timeout,
                                    gone=gone, before=since.present, location=since.location)
    except PortNotBack as exc:
        if mode == "bootloader":
            exc.hint = (f"{module.name} did not come back in its bootloader. " + exc.hint)
        raise
    except PortAmbiguous as exc:
        exc.message += (f"; the module that was on {gone} now waits in its bootloader on one of them"
                        if mode == "bootloader" else
                        f"; the module that was on {gone} now runs its new firmware on one of them")
        raise
    link.reopen(entry.device, baud=baud)
    if entry.mode is None:
        # What runs there is confirmed by the next step's own exchange (the DFU bootloader's
        # Ping, the application's version): the port's listing can't say it here.
        emit(Note(f"this system does not say whether {entry.device} is {module.name}'s bootloader or "
                  f"its application (no USB product string, as on Windows): it is the only new port "
                  f"with the module's serial number and USB location, and what answers there decides"))
    elif entry.device != gone:
        emit(Note(f"{module.name} re-enumerated as its {'bootloader' if mode == 'bootloader' else 'application'}"
                  f" on {entry.device} (USB {entry.vid:04X}:{entry.pid:04X}"
                  + (f" \"{entry.description}\"" if entry.description else "") + ")"))
    return time.monotonic() - t0
