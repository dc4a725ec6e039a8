"""Following a native-USB module (RAK4631) from port to port: it re-enumerates at every reset.

Entering the bootloader (``AT+BOOT``, the 1200-baud touch) and starting the
new firmware both make the port vanish and a new one appear, with the same USB
vendor id, a product id or product string that says bootloader or application,
and the same serial number. :func:`follow` waits for that port (with a
deadline) and moves the link over; a module already in the wanted mode is used
as it is.
"""

from __future__ import annotations

import time

from ... import ports
from ...catalog import Module
from ...errors import PortNotBack
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


def current_mode(link: Link, module: Module) -> str | None:
    """``"app"`` or ``"bootloader"`` by the port's USB id, when it is one of ``module``'s."""
    entry = ports.port_entry(link.port_name)
    return entry.mode if entry is not None and entry.module == module.key else None


def follow(link: Link, module: Module, mode: str, *, serial: str | None, emit: Sink = nowhere,
           timeout: float = REAPPEAR_TIMEOUT, baud: int | None = None) -> float:
    """Wait for ``module``'s port in ``mode`` and move ``link`` to it; returns the seconds it took."""
    t0 = time.monotonic()
    gone = link.port_name
    link.close()
    try:
        entry = ports.wait_for_port(module.key, mode, serial_number=serial, timeout=timeout, gone=gone)
    except PortNotBack as exc:
        if mode == "bootloader":
            exc.hint = (f"{module.name} did not come back in its bootloader. " + exc.hint)
        raise
    link.reopen(entry.device, baud=baud)
    if entry.device != gone:
        emit(Note(f"{module.name} re-enumerated as its {'bootloader' if mode == 'bootloader' else 'application'}"
                  f" on {entry.device} (USB {entry.vid:04X}:{entry.pid:04X}"
                  + (f" \"{entry.description}\"" if entry.description else "") + ")"))
    return time.monotonic() - t0
