"""Where the host's end of a simulated UART is: a pseudo-terminal, or an RFC 2217 server on TCP.

The line model (:mod:`rakflash.sim.uart`) moves bytes at line rate between the
firmware and one of these ends, and asks the end what the host set (baud rate,
parity, RTS/DTR).

* ``"pty"`` (:class:`PtyEnd`): a pseudo-terminal, hand-made on ``os.openpty``
  because no library simulates line timing; the slave end is held open by the
  simulator so that hosts can open and close the port any number of times. The
  host's baud rate and parity are read from the pty's termios settings. Linux
  and macOS only.
* ``"tcp"`` (:class:`TcpEnd`): an RFC 2217 server on 127.0.0.1 (Telnet COM
  port control), which pyserial — and so rakflash — opens as
  ``rfc2217://127.0.0.1:PORT``. RFC 2217 carries what a plain TCP stream can't:
  the host's baud rate, parity and its RTS/DTR lines (docs/protocols.md says
  why this and not ``socket://``). pyserial's own server half
  (``serial.rfc2217.PortManager``) speaks the protocol; this end only holds
  the settings it sets. Works everywhere, Windows included.

``RAKFLASH_SIM_TRANSPORT=tcp`` (or ``pty``) forces one; by default a pty where
the system has them, else TCP (:func:`default_transport`).
"""

from __future__ import annotations

import array
import os
import select
import socket
import threading
from typing import TYPE_CHECKING

try:                          # POSIX only: the pty transport
    import fcntl
    import termios
    import tty
except ImportError:           # Windows: only the TCP transport
    fcntl = termios = tty = None     # type: ignore[assignment]  # mypy checks the POSIX branch

if TYPE_CHECKING:
    from serial.rfc2217 import PortManager

TRANSPORTS = ("pty", "tcp")
TRANSPORT_ENV = "RAKFLASH_SIM_TRANSPORT"

# termios speed constants → bit rates (Linux).
_SPEEDS = {getattr(termios, f"B{b}"): b for b in (
    50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600,
    115200, 230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000,
    2500000, 3000000, 3500000, 4000000) if hasattr(termios, f"B{b}")} if termios else {}
_BOTHER = 0o010000
_TCGETS2 = 0x802C542A


def has_ptys() -> bool:
    """Whether this system can serve a virtual module on a pseudo-terminal."""
    return termios is not None and hasattr(os, "openpty")


def default_transport() -> str:
    """``$RAKFLASH_SIM_TRANSPORT`` when set, else ``"pty"`` where ptys exist, else ``"tcp"``."""
    forced = os.environ.get(TRANSPORT_ENV, "").strip().lower()
    if forced:
        if forced not in TRANSPORTS:
            raise ValueError(f"{TRANSPORT_ENV}={forced!r}: the transports are {', '.join(TRANSPORTS)}")
        return forced
    return "pty" if has_ptys() else "tcp"


class PtyEnd:
    """The host's end on a new pseudo-terminal (Linux, macOS): the host opens its slave path."""

    def __init__(self, baud: int) -> None:
        if not has_ptys():
            raise OSError("this system has no pseudo-terminals: serve the virtual module over TCP "
                          "(--transport tcp)")
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.parity_visible = _keeps_parity(self._slave)
        self._set_slave_speed(baud)
        self.path = os.ttyname(self._slave)
        os.set_blocking(self.master, False)

    def _set_slave_speed(self, baud: int) -> None:
        attrs = termios.tcgetattr(self._slave)
        for code, rate in _SPEEDS.items():
            if rate == baud:
                attrs[4] = attrs[5] = code
                termios.tcsetattr(self._slave, termios.TCSANOW, attrs)
                return

    def host_baud(self) -> int | None:
        try:
            attrs = termios.tcgetattr(self.master)
        except termios.error:
            return None
        speed = attrs[4]
        if speed in _SPEEDS:
            return _SPEEDS[speed]
        if speed == _BOTHER or attrs[2] & _BOTHER:
            buf = array.array("I", [0] * 11)
            try:
                fcntl.ioctl(self.master, _TCGETS2, buf, True)
                return buf[9]  # c_ispeed (after 4 flags and c_line + 19 c_cc bytes = 5 words)
            except OSError:
                return None
        return None

    def host_parity(self) -> str:
        try:
            cflag = termios.tcgetattr(self.master)[2]
        except termios.error:
            return "N"
        if not cflag & termios.PARENB:
            return "N"
        return "O" if cflag & termios.PARODD else "E"

    def host_lines(self) -> None:
        return None               # a pty has no modem lines

    def receive(self, timeout: float) -> bytes:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return b""
        try:
            return os.read(self.master, 4096)
        except BlockingIOError:
            return b""

    def send(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except BlockingIOError:
            pass                  # the pty's buffer is full: nobody reads

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class _HostSettings:
    """What pyserial's RFC 2217 server half (``PortManager``) sets and reads on "its serial
    port": here, just what the host asked for, which the line model compares with the module's.
    A change of RTS or DTR is told to ``on_lines`` (the adapter's wiring to RESET / BOOT0)."""

    def __init__(self, on_lines=None) -> None:
        self.on_lines = None
        self.baudrate = None
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = self.rtscts = False
        self.rts = self.dtr = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False
        self.on_lines = on_lines

    def __setattr__(self, name: str, value) -> None:
        changed = name in ("rts", "dtr") and getattr(self, name, None) != value
        super().__setattr__(name, value)
        if changed and self.on_lines is not None:
            self.on_lines({"rts": bool(self.rts), "dtr": bool(getattr(self, "dtr", False))})

    def reset_input_buffer(self) -> None:
        pass

    def reset_output_buffer(self) -> None:
        pass


class TcpEnd:
    """The host's end as an RFC 2217 server on 127.0.0.1 (``rfc2217://127.0.0.1:PORT``).

    One host at a time, as a serial port is opened by one program at a time: a
    second connection while one is open is closed at once (its open fails).
    Bytes the module sends while no host is connected fall off the line.
    """

    parity_visible = True          # RFC 2217 carries the host's parity

    def __init__(self, host: str = "127.0.0.1") -> None:
        from serial.rfc2217 import PortManager
        self._PortManager = PortManager
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self.path = f"rfc2217://{host}:{self.port}"
        self._conn: socket.socket | None = None
        self._manager: PortManager | None = None
        self._settings = _HostSettings()
        self._send_lock = threading.Lock()
        self.on_lines = None          # callback({"rts": …, "dtr": …}) at every change of the host's lines

    # PortManager's "connection": its Telnet answers go out here, between the data
    def write(self, data: bytes) -> None:
        self._sendall(data)

    def _sendall(self, data: bytes) -> None:
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.sendall(data)
            except OSError:
                pass              # the host went away: the reader notices and forgets it

    def _lines_changed(self, lines: dict[str, bool]) -> None:
        if self.on_lines is not None:
            self.on_lines(lines)

    def host_baud(self) -> int | None:
        return self._settings.baudrate if self._conn is not None else None

    def host_parity(self) -> str:
        return self._settings.parity

    def host_lines(self) -> dict[str, bool]:
        return {"rts": bool(self._settings.rts), "dtr": bool(self._settings.dtr)}

    def receive(self, timeout: float) -> bytes:
        conn = self._conn
        ready, _, _ = select.select([self._listener] + ([conn] if conn else []), [], [], timeout)
        if self._listener in ready:
            new, _ = self._listener.accept()
            if self._conn is None:
                new.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                new.settimeout(2.0)       # a host that stops reading can't hold the line forever
                self._settings = _HostSettings(self._lines_changed)
                self._conn = new
                self._manager = self._PortManager(self._settings, self)  # type: ignore[arg-type]  # duck-typed Serials
            else:
                new.close()               # the port is open already (one program at a time)
        if conn is None or conn not in ready:
            return b""
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if not data:                      # the host closed the port: its lines are released
            with self._send_lock:
                self._conn = None
            conn.close()
            # Both at once, as a USB-UART driver drops them in one control request at close: one
            # after the other would pass through a state (DTR set, RTS clear) that a reset circuit
            # reads as "GPIO0 low" (sim/esp32.py).
            settings, settings.on_lines = self._settings, None
            settings.rts = settings.dtr = False
            self._lines_changed({"rts": False, "dtr": False})
            return b""
        try:
            assert self._manager is not None      # (made with the connection)
            return b"".join(self._manager.filter(data))
        except Exception:                 # a request PortManager can't answer (struct.error …):
            with self._send_lock:         # the host's program is broken; drop it, keep serving
                self._conn = None
            conn.close()
            return b""

    def send(self, data: bytes) -> None:
        self._sendall(data.replace(b"\xff", b"\xff\xff"))     # Telnet IAC doubled

    def close(self) -> None:
        with self._send_lock:
            conn, self._conn = self._conn, None
        for s in (conn, self._listener):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def _keeps_parity(fd: int) -> bool:
    """Whether this pty keeps a host's parity setting (Linux ptys clear PARENB, so they don't)."""
    attrs = termios.tcgetattr(fd)
    try:
        trial = list(attrs)
        trial[2] |= termios.PARENB
        termios.tcsetattr(fd, termios.TCSANOW, trial)
        return bool(termios.tcgetattr(fd)[2] & termios.PARENB)
    except termios.error:
        return False
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
