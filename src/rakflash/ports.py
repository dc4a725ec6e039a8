"""Serial port discovery, with the catalog's idea of what each USB id probably is."""

from __future__ import annotations

from dataclasses import dataclass

from serial.tools import list_ports

from . import catalog as _catalog


@dataclass
class PortEntry:
    device: str
    vid: int | None
    pid: int | None
    description: str
    serial_number: str | None
    probably: str | None

    def to_dict(self) -> dict:
        return {"port": self.device,
                "vid_pid": f"{self.vid:04X}:{self.pid:04X}" if self.vid is not None else None,
                "description": self.description, "serial_number": self.serial_number,
                "probably": self.probably}


def list_serial_ports() -> list[PortEntry]:
    """Every serial port the OS knows, sorted by name."""
    cat = _catalog.load()
    out = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        usb = cat.usb(p.vid, p.pid) if p.vid is not None else None
        out.append(PortEntry(p.device, p.vid, p.pid,
                             p.description if p.description and p.description != "n/a" else "",
                             p.serial_number, usb.probably if usb else None))
    return out


def other_openers(path: str) -> list[tuple[int, str]]:
    """Other programs that hold the serial device ``path`` open: (pid, program name).

    pyserial's exclusive lock only keeps out programs that take the same lock;
    a serial monitor that doesn't would silently share the port, and each
    program would get part of the bytes. Nothing in pyserial reports that, so
    this looks in /proc (Linux; elsewhere it finds nothing). A program that
    also holds /dev/ptmx owns a pseudo-terminal (a simulator, a terminal
    emulator): it serves the port rather than reads it, and is not counted.
    """
    import os
    proc = "/proc"
    try:
        target = os.path.realpath(path)
        if not target.startswith("/dev/") or not os.path.isdir(proc):
            return []
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return []
    me = os.getpid()
    found = []
    for pid in pids:
        if pid == me:
            continue
        fd_dir = f"{proc}/{pid}/fd"
        try:
            links = {os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)}
        except OSError:       # gone, or not ours to look at
            continue
        if target in links and "/dev/ptmx" not in links:
            try:
                with open(f"{proc}/{pid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                name = "?"
            found.append((pid, name))
    return found
