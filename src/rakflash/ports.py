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
