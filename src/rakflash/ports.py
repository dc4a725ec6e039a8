"""Serial port discovery, with the catalog's idea of what each USB id probably is.

Besides the ports the OS lists, a small registry of *virtual USB ports* lets the
simulator's native-USB modules (RAK4631) show up with USB ids like real ones: a
running simulator writes one JSON file per port it serves into a folder
(``$RAKFLASH_VIRTUAL_PORTS``, default ``$XDG_RUNTIME_DIR/rakflash-ports`` or a
per-user folder under the system temp directory) and removes it when the port
goes away; :func:`list_serial_ports` lists them beside the real ones. That is how
rakflash finds such a module again after it re-enumerated on a new port.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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
    virtual: bool = False
    module: str | None = None        # catalog key of the module this USB id belongs to
    mode: str | None = None          # "app" or "bootloader", where the USB id tells
    location: str | None = None      # where on the USB it is plugged in (pyserial's "1-1.2:1.0")

    def identity(self) -> tuple:
        """What the port says it is: a port whose identity changed is another device."""
        return (self.vid, self.pid, self.description, self.serial_number, self.location)

    def to_dict(self) -> dict:
        return {"port": self.device,
                "vid_pid": f"{self.vid:04X}:{self.pid:04X}" if self.vid is not None else None,
                "description": self.description, "serial_number": self.serial_number,
                "probably": self.probably, "module": self.module, "mode": self.mode,
                "virtual": self.virtual}


def list_serial_ports() -> list[PortEntry]:
    """Every serial port the OS knows, and the simulator's virtual USB ports, sorted by name."""
    cat = _catalog.load()
    out = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        description = p.description if p.description and p.description != "n/a" else ""
        out.append(_entry(cat, p.device, p.vid, p.pid, getattr(p, "product", None) or description,
                          description, p.serial_number, location=getattr(p, "location", None)))
    for v in virtual_ports():
        out.append(_entry(cat, v["device"], v["vid"], v["pid"], v.get("product"),
                          v.get("product") or "", v.get("serial_number"), virtual=True,
                          location=v.get("location")))
    return sorted(out, key=lambda e: e.device)


def _entry(cat, device, vid, pid, product, description, serial, virtual=False, location=None) -> PortEntry:
    usb = cat.usb(vid, pid, product) if vid is not None else None
    mode = usb.mode if usb else None
    probably = usb.probably if usb else None
    modes = {u.mode for u in cat.usb_ids if (u.vid, u.pid) == (vid, pid)}
    if usb is not None and usb.product and len(modes) > 1 \
            and (product or "").strip().lower() != usb.product.lower():
        # One VID:PID for two modes, told apart by the product string, and this system did not
        # give it (pyserial on Windows lists no product: its description is the driver's "USB
        # Serial Device (COM7)"): the module is known, its mode is not.
        mode = None
        probably = f"{cat.module(usb.module).name}, application or bootloader (this system does not say which)"
    return PortEntry(device, vid, pid, description, serial, probably,
                     virtual=virtual, module=usb.module if usb else None, mode=mode,
                     location=location if isinstance(location, str) and location else None)


# ------------------------------------------------------------------ what may be opened as a port

# What serial devices are called: Linux /dev/ttyUSB0, /dev/ttyACM0, /dev/ttyS0, /dev/pts/N (a
# pty, as the simulator serves), /dev/rfcomm0; macOS /dev/cu.* and /dev/tty.*; Windows COMn.
# Not /dev/tty (the server's own terminal) nor /dev/tty1… (the Linux consoles).
# /dev/serial/by-id/… links are judged by what they point at.
_DEVICE_PATH = re.compile(r"^/dev/(tty[A-Za-z.][^/]*|cu\.[^/]+|pts/\d+|rfcomm\d+)$")
_COM_NAME = re.compile(r"^(\\\\\.\\)?COM\d+$", re.IGNORECASE)
NETWORK_SCHEMES = ("socket", "rfc2217")    # pyserial's serial-over-TCP handlers


def not_a_serial_port(name: str, *, network_anywhere: bool = False) -> str | None:
    """Why ``name`` should not be opened as a serial port, or None when it looks like one.

    For names that come from somewhere less trusted than the person's own command line (the
    web page): a serial device by its usual names, or pyserial's serial-over-TCP URL to this
    computer (``socket://127.0.0.1:PORT``, ``rfc2217://…``; to any host with
    ``network_anywhere``). Anything else — a file such as /etc/passwd, /dev/zero, pyserial's
    ``hwgrep://`` that opens whatever matches, a connection to another computer — is refused,
    so the server never opens what the person didn't mean as a port.
    """
    kinds = ("serial devices (/dev/tty…, /dev/cu.…, /dev/pts/N, COMn) and serial-over-TCP URLs "
             "(socket://127.0.0.1:PORT, rfc2217://…)")
    if "://" in name:
        from urllib.parse import urlsplit
        url = urlsplit(name)
        if url.scheme.lower() not in NETWORK_SCHEMES:
            return f"{name!r} is not a serial port: rakflash opens only {kinds}"
        try:
            host, port = url.hostname, url.port
        except ValueError:
            host, port = None, None
        if not host or not port:
            return f"{name!r} names no host and TCP port ({url.scheme}://HOST:PORT)"
        if not network_anywhere and not _is_loopback_name(host):
            return (f"{name!r} is on another computer: the page opens serial-over-TCP ports on this "
                    f"computer only (give it on the command line: rakflash web --port {name})")
        return None
    if _COM_NAME.match(name):
        return None
    real = os.path.realpath(name) if name.startswith("/dev/") else name
    if not _DEVICE_PATH.match(real):
        return f"{name!r} is not a serial port: rakflash opens only {kinds}"
    from .link import _not_a_serial_port  # what the path is, if it exists and isn't a device
    wrong = _not_a_serial_port(real)           # (a missing one may be plugged in later)
    return wrong.message if wrong is not None else None


def _is_loopback_name(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------ virtual USB ports

def virtual_ports_dir() -> Path:
    """Where running simulators register the USB identity of the ports they serve."""
    env = os.environ.get("RAKFLASH_VIRTUAL_PORTS")
    if env:
        return Path(env)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "rakflash-ports"
    user = os.getuid() if hasattr(os, "getuid") else _user_name()      # (Windows has no uid)
    return Path(tempfile.gettempdir()) / f"rakflash-ports-{user}"


def _user_name() -> str:
    import getpass
    try:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", getpass.getuser())
    except Exception:          # no user name in the environment
        return "user"


def _registry_file(device: str) -> Path:
    # A path (/dev/pts/3) or a URL (rfc2217://127.0.0.1:40123) as a file name any system takes.
    return virtual_ports_dir() / (re.sub(r"[^A-Za-z0-9.-]+", "_", device.strip("/")) + ".json")


def register_virtual_port(device: str, *, vid: int, pid: int, product: str | None = None,
                          serial_number: str | None = None, location: str | None = None) -> None:
    """Announce that ``device`` is a (simulated) USB port with these ids, until unregistered.
    ``location``: where on the USB it is plugged in (the same across its re-enumerations)."""
    folder = virtual_ports_dir()
    folder.mkdir(parents=True, exist_ok=True)
    record = {"device": device, "vid": vid, "pid": pid, "product": product,
              "serial_number": serial_number, "location": location, "owner": os.getpid(),
              "since": time.time()}
    tmp = _registry_file(device).with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(_registry_file(device))


def unregister_virtual_port(device: str) -> None:
    try:
        _registry_file(device).unlink()
    except OSError:
        pass


def virtual_ports() -> list[dict]:
    """The registered virtual USB ports whose simulator still runs and whose path still exists."""
    folder = virtual_ports_dir()
    try:
        files = sorted(folder.glob("*.json"))
    except OSError:
        return []
    found = []
    for f in files:
        try:
            record = json.loads(f.read_text())
            owner = int(record["owner"])
            _check_alive(owner)
        except ProcessLookupError:
            unregister_virtual_port(record.get("device", ""))    # its simulator is gone
            continue
        except PermissionError:
            pass                                                 # alive, another user's
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if "://" in record["device"] or os.path.exists(record["device"]):
            found.append(record)      # (a TCP port lives as long as its simulator)
    return found


def _check_alive(pid: int) -> None:
    """ProcessLookupError unless process ``pid`` runs. Not os.kill(pid, 0) on Windows: there
    any signal but Ctrl-C/Ctrl-Break terminates the process."""
    if sys.platform != "win32":    # (not os.name: mypy knows ctypes.windll is Windows-only by this test)
        os.kill(pid, 0)
        return
    import ctypes
    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)      # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        raise ProcessLookupError(pid)
    try:
        code = ctypes.c_ulong()
        if kernel32.GetExitCodeProcess(handle, ctypes.byref(code)) and code.value != 259:
            raise ProcessLookupError(pid)                  # 259: STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


PROC = "/proc"


def lsof_openers(path: str, timeout: float = 3.0) -> list[tuple[int, str]]:
    """Other programs that have ``path`` open, as ``lsof -F pc`` names them (pid, command);
    [] where lsof is missing, slow or can't tell."""
    import shutil
    import subprocess
    lsof = shutil.which("lsof") or ("/usr/sbin/lsof" if os.path.exists("/usr/sbin/lsof") else None)
    if lsof is None:
        return []
    try:
        out = subprocess.run([lsof, "-w", "-F", "pc", "--", path], capture_output=True, text=True,
                             timeout=timeout).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found: list[tuple[int, str]] = []
    pid = None
    for line in out.splitlines():
        if line.startswith("p") and line[1:].isdigit():
            pid = int(line[1:])
        elif line.startswith("c") and pid is not None and pid != os.getpid():
            found.append((pid, line[1:]))
            pid = None
    return found


def other_openers(path: str) -> list[tuple[int, str]]:
    """Other programs that hold the serial device ``path`` open: (pid, program name).

    pyserial's exclusive lock only keeps out programs that take the same lock;
    a serial monitor that doesn't would silently share the port, and each
    program would get part of the bytes. Nothing in pyserial reports that, so
    this looks in /proc (Linux), else asks ``lsof`` (macOS) — about a real
    device, not a pseudo-terminal (whose simulator holds it open too); where
    neither can tell (Windows) it finds nothing. For a pseudo-terminal on
    Linux, the program holding its master side (a simulator, a terminal
    emulator) serves the port rather than reads it, and is not counted.
    """
    import os
    import re
    proc = PROC
    try:
        target = os.path.realpath(path)
        if not target.startswith("/dev/"):
            return []
        if not os.path.isdir(proc):
            return [] if re.match(r"/dev/(ttys\d+|pts/)", target) else lsof_openers(target)
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


# ------------------------------------------------------------------ finding a port again

def port_entry(path: str) -> PortEntry | None:
    """What the OS (or the virtual port registry) says about ``path``, if it lists it."""
    # A link to the port (``rakflash sim --link``, a udev symlink) is the port it points at.
    real = os.path.realpath(path) if path.startswith("/") or os.path.islink(path) else path
    for e in list_serial_ports():
        if e.device in (path, real):
            return e
    return None


def snapshot() -> dict[str, tuple]:
    """Every port listed now, with its identity (see :func:`wait_for_port`'s ``before``)."""
    return {e.device: e.identity() for e in list_serial_ports()}


def usb_path(location: str | None) -> str | None:
    """The USB path of a port's location, without its interface (``1-1.2:1.0`` → ``1-1.2``):
    a module keeps its path through a re-enumeration, its interface numbers may change."""
    return location.split(":", 1)[0] if location else None


def port_exists(name: str) -> bool:
    """Whether ``name`` is there now: a device path that exists, or a port the system (or the
    virtual port registry: a simulator's ``rfc2217://`` port) lists."""
    if "://" not in name and os.path.exists(name):
        return True
    return port_entry(name) is not None


def wait_for_port(module: str, mode: str, *, serial_number: str | None = None,
                  timeout: float = 10.0, poll: float = 0.05, gone: str | None = None,
                  before: dict[str, tuple] | None = None, location: str | None = None) -> PortEntry:
    """The port a native-USB module re-enumerated on, in ``mode`` ("bootloader" or "app").

    The USB ids name the module and, with the product string where one VID:PID
    serves both, the mode; the serial number and USB location (when the module told
    them) must match. ``before`` (a :func:`snapshot` taken before the module was
    reset) keeps out every port that was already there then and stayed: another
    module with the same ids — even the same serial number — waiting in its
    bootloader is not the one that was just reset. A port counts as new once it is
    listed with another identity than before, or after it was seen gone.

    Where the system does not say a port's mode (Windows), a new port that matches
    in all else is returned with ``mode`` None, and the caller must confirm it.

    Raises :class:`~rakflash.errors.PortNotBack` at the deadline, naming what was
    seen instead, and :class:`~rakflash.errors.PortAmbiguous` when more than one new
    port matches (rakflash can't tell which one is the module it reset).
    """
    from .errors import PortAmbiguous, PortNotBack
    end = time.monotonic() + timeout
    seen: list[PortEntry] = []
    went_away: set[str] = set()
    path = usb_path(location)
    # A variant's bootloader may enumerate as its base's (the RAK3401's as the RAK4631-R's: one
    # USB id and product string for both), so any of the family's ids will do.
    cat = _catalog.load()
    family = {m.key for m in cat.variants(cat.modules[module])} if module in cat.modules else {module}
    while True:
        entries = list_serial_ports()
        listed = {e.device for e in entries}
        if before is not None:
            went_away |= {d for d in before if d not in listed}

        def new(e: PortEntry, went_away: set[str] = went_away) -> bool:
            return (before is None or e.device not in before or e.device in went_away
                    or before[e.device] != e.identity())

        # A port whose mode the system does not say (pyserial on Windows lists no product string,
        # and the RAK4631-R's application and bootloader share one VID:PID) may be the one: the
        # caller confirms what answers there. One that does say is taken before it.
        matching = [e for e in entries if e.module in family and e.mode in (mode, None) and new(e)
                    and (serial_number is None or e.serial_number in (None, serial_number))
                    and (path is None or usb_path(e.location) in (None, path))]
        candidates = [e for e in matching if e.mode == mode] or matching
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            same = " with the same serial number" if serial_number else ""
            which = f"new ports look like the {module} that was reset" if before is not None \
                else f"ports look like a {module}"
            raise PortAmbiguous(f"{len(candidates)} {which}, in its {mode}{same} "
                                f"({', '.join(e.device for e in candidates)}), and rakflash can't tell "
                                f"which one is yours")
        seen = [e for e in entries if e.module in family]
        if time.monotonic() >= end:
            break
        time.sleep(poll)
    what = (f"; ports of that module now: {', '.join(f'{e.device} ({e.mode})' for e in seen)}" if seen else
            "; no port of that module is listed")
    if before is not None and any(e.mode == mode and e.device in before and e.device not in went_away
                                  for e in seen):
        what += (" — those that were there before it was reset belong to another module and "
                 "were left alone")
    raise PortNotBack(f"the module's USB port did not come back in its {mode} within {timeout:.0f} s"
                      + (f" (it was {gone})" if gone else "") + what)
