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
    this looks in /proc (Linux; elsewhere it finds nothing). For a
    pseudo-terminal, the program holding its master side (a simulator, a
    terminal emulator) serves the port rather than reads it, and is not counted.
    """
    import os
    import re
    proc = "/proc"
    try:
        target = os.path.realpath(path)
        if not target.startswith("/dev/") or not os.path.isdir(proc):
            return []
        pids = [int(p) for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return []
    pts = re.fullmatch(r"/dev/pts/(\d+)", target)
    me = os.getpid()
    found = []
    for pid in pids:
        if pid == me:
            continue
        fd_dir = f"{proc}/{pid}/fd"
        try:
            links = {fd: os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)}
        except OSError:       # gone, or not ours to look at
            continue
        if target not in links.values():
            continue
        if pts and any(link == "/dev/ptmx" and _pty_index(pid, fd) == pts.group(1)
                       for fd, link in links.items()):
            continue          # this program owns the pseudo-terminal
        try:
            with open(f"{proc}/{pid}/comm") as f:
                name = f.read().strip()
        except OSError:
            name = "?"
        found.append((pid, name))
    return found


def _pty_index(pid: int, fd: str) -> str | None:
    """Which /dev/pts/N a /dev/ptmx descriptor is the master of (Linux fdinfo ``tty-index``)."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("tty-index:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
