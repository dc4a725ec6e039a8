"""The serial link: a byte pipe with a deadline on every read.

pyserial does the port work, so plain device paths, pseudo-terminals and
``socket://host:port`` URLs all work. On top of it this module adds what a
flashing tool needs and pyserial does not give directly:

* every read takes a timeout and never blocks past it;
* line reading for AT dialogues (lines end at CR, LF or both);
* raw traffic recording to a trace file (see :mod:`rakflash.trace`);
* errors mapped to :mod:`rakflash.errors` (missing, busy, disconnected port).

Protocols only need :class:`ByteChannel`: ``read(n, timeout)`` and ``write``.
The simulator's UART and the trace replayer implement the same two methods.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import select
import stat
import time
from typing import Callable, Iterator, Protocol

import serial
import serial.rfc2217

_PosixSerial: type[serial.Serial] | None
try:
    from serial.serialposix import Serial as _PosixSerial
except ImportError:        # Windows: pyserial's own timeout handling
    _PosixSerial = None

from .errors import NotASerialPort, PortBusy, PortDisconnected, PortError, PortNotFound, PortPermission
from .trace import TraceWriter


class ByteChannel(Protocol):
    """What a wire protocol needs from the thing underneath it."""

    def read(self, n: int, timeout: float) -> bytes:
        """Return up to ``n`` bytes; return early once ``n`` arrived, else at the deadline."""

    def write(self, data: bytes) -> None:
        """Send ``data``."""


class Deadline:
    """A point in time; ``remaining()`` never goes below zero."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.end


class Link:
    """An open serial port with deadlines, line reading and tracing."""

    def __init__(self, port: str, baud: int = 115200, *, parity: str = "N",
                 trace: TraceWriter | None = None, exclusive: bool = True) -> None:
        self.port_name = port
        self.trace = trace
        # Told every step (note) and every AT exchange (step) as it happens: '-v' shows them.
        self.on_step: Callable[[str], None] | None = None
        self._pending = bytearray()
        self.parity = parity            # what the protocol asked for
        self.parity_applied = parity    # what the port carries (see below)
        if parity != "N" and _is_pty(port):
            # A pseudo-terminal can't carry parity (Linux clears PARENB on a pty, and
            # recent kernels refuse it with EINVAL): the other end is a program — the
            # simulator — that frames the bytes itself. Open it without parity; the
            # trace's "open" event says so (parity_applied).
            self.parity_applied = "N"
        wrong = _not_a_serial_port(port)
        if wrong is not None:
            raise wrong
        self._ser: serial.Serial | _Rfc2217Serial | None
        try:
            self._ser = self._open(port, baud, self.parity_applied, exclusive)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _open_error(port, exc) from None
        except Exception as exc:      # termios.error: settings the port refuses
            if type(exc).__module__ != "termios":
                raise
            raise PortError(f"{port} refuses the line settings {baud} baud, parity {parity}: "
                            f"{_reason(exc)}", hint="Check that the port is a serial port.") from None
        self._exclusive = exclusive
        if exclusive:
            from .ports import other_openers
            others = other_openers(port)
            if others:
                self._ser.close()
                raise port_busy(port, others)
        if trace:
            extra = {"parity_applied": self.parity_applied} if self.parity_applied != parity else {}
            trace.event("open", port=port, baud=baud, parity=parity, **extra)

    @staticmethod
    def _open(port: str, baud: int, parity: str, exclusive: bool) -> serial.Serial | _Rfc2217Serial:
        kwargs = {"exclusive": exclusive} if "://" not in port else {}
        ser: serial.Serial | _Rfc2217Serial
        if port.lower().startswith("rfc2217://"):
            ser = _Rfc2217Serial(None, baudrate=baud, parity=parity, timeout=0)
            ser.port = port
        else:
            ser = serial.serial_for_url(port, baudrate=baud, parity=parity, timeout=0,
                                        write_timeout=10, do_not_open=True, **kwargs)
        # pyserial asserts RTS and DTR on open by default; on an adapter that wires
        # them to RESET/BOOT (esptool-style) that would hold the module in reset.
        # Open with both released; pulse_reset asserts them only when asked.
        ser.rts = False
        ser.dtr = False
        ser.open()
        return ser

    # -- context management -------------------------------------------------
    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._ser is not None:
            try:
                self._ser.close()
            except Exception:  # closing a vanished port must not mask the real error
                pass
            self._ser = None
            if self.trace:
                self.trace.event("close")

    @property
    def _port(self) -> serial.Serial | _Rfc2217Serial:
        """The open port; a closed link has none (say so, rather than fail on None)."""
        if self._ser is None:
            raise PortError(f"{self.port_name} is closed")
        return self._ser

    def reopen(self, port: str, baud: int | None = None) -> None:
        """Go on over another port: a native-USB module re-enumerated (RAK4631 entering or
        leaving its bootloader). Same line settings and trace; unread bytes of the old port are dropped."""
        baud = baud or (self._ser.baudrate if self._ser is not None else 115200)
        self.close()
        fresh = Link(port, baud, parity=self.parity, trace=self.trace, exclusive=self._exclusive)
        self._ser, fresh._ser = fresh._ser, None
        self.port_name = port
        self.parity_applied = fresh.parity_applied
        self._pending.clear()

    # -- settings -------------------------------------------------------------
    @property
    def baud(self) -> int:
        return self._port.baudrate

    @baud.setter
    def baud(self, value: int) -> None:
        with self._port_guard():
            self._port.baudrate = value
        if self.trace:
            self.trace.event("baud", baud=value)

    def touch(self, baud: int) -> None:
        """Set ``baud`` as a signal, not to talk at it (the Arduino core's 1200-baud touch): the
        device may drop the port at once — which is what it was asked to do — before the setting
        is even confirmed (an RFC 2217 server's acknowledgement never comes), so a port gone here
        is not an error. Whoever touches follows the device to its new port next."""
        try:
            self.baud = baud
        except PortDisconnected:
            if self.trace:
                self.trace.event("baud", baud=baud)
            self.note(f"{self.port_name} went away at the {baud}-baud touch")

    def set_parity(self, parity: str) -> None:
        """Switch the framing: ``"E"`` for an STM32 ROM bootloader (8E1), ``"N"`` for AT consoles."""
        applied = "N" if parity != "N" and _is_pty(self.port_name) else parity
        with self._port_guard():
            self._port.parity = applied
        self.parity, self.parity_applied = parity, applied
        if self.trace:
            self.trace.event("parity", parity=parity,
                             **({"parity_applied": applied} if applied != parity else {}))

    def set_lines(self, *, rts: bool | None = None, dtr: bool | None = None) -> None:
        """Drive the modem control lines (used for wired reset / boot pins)."""
        try:
            if rts is not None:
                self._port.rts = rts
            if dtr is not None:
                self._port.dtr = dtr
        except (serial.SerialException, OSError) as exc:
            raise PortError(f"{self.port_name} has no RTS/DTR lines to drive: {_reason(exc)}",
                            hint="Press the module's reset button by hand instead "
                                 "(leave out --reset-with).") from None
        if self.trace:
            self.trace.event("lines", rts=rts, dtr=dtr)

    def raw_serial(self):
        """The open pyserial port, for a library that speaks its own protocol on it (esptool,
        flows/esp_chip.py, which records its bytes in the trace itself)."""
        return self._ser

    def note(self, text: str) -> None:
        """Mark a step in the trace (if one is recorded), so a bug report reads in steps; and
        tell :attr:`on_step`, if set."""
        if self.trace:
            self.trace.note(text)
        self.step(text)

    def step(self, text: str) -> None:
        """Tell :attr:`on_step` (if set) what just happened, e.g. an AT command and its answer
        (the trace has those bytes already)."""
        if self.on_step is not None:
            self.on_step(text)

    # -- bytes kept out of the trace -----------------------------------------------
    _hidden: str | None = None      # what the bytes on the line are, while they are kept out of a trace

    @contextlib.contextmanager
    def hidden(self, what: str) -> Iterator[None]:
        """Bytes sent and received inside are kept out of the trace, which records only how many
        there were and ``what`` they were (``tx-hidden`` / ``rx-hidden`` events): a lock password,
        and the module's echo of it. A replay of such a trace can't play that exchange."""
        self._hidden = what
        try:
            yield
        finally:
            self._hidden = None

    def _record(self, direction: str, data: bytes) -> None:
        assert self.trace is not None        # (write and read call it only with a trace)
        if self._hidden is not None:
            self.trace.event(f"{direction}-hidden", bytes=len(data), what=self._hidden)
        else:
            self.trace.data(direction, data)

    # -- byte I/O --------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.trace:
            self._record("tx", data)
        try:                  # (inline rather than _port_guard: this and the reads are the hot path)
            self._port.write(data)
        except (serial.SerialException, OSError) as exc:
            raise self._gone(exc, "writing to ") from None

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes: early once ``n`` arrived, else whatever came by the deadline."""
        out = bytearray()
        if self._pending:
            out += self._pending[:n]
            del self._pending[:n]
        if len(out) < n:
            out += self._read_port(n - len(out), timeout)
        return bytes(out)

    def read_available(self, timeout: float = 0.0) -> bytes:
        """Everything already received (waiting at most ``timeout`` for the first byte)."""
        out = bytes(self._pending)
        self._pending.clear()
        if not out:
            out = self._read_port(1, timeout)
        waiting = self._in_waiting()
        if waiting:
            out += self._read_port(waiting, 0)
        return out

    def _read_port(self, n: int, timeout: float) -> bytes:
        try:
            data = self._wait_read(n, timeout if timeout > 0 else 0.0)
        except (serial.SerialException, OSError) as exc:
            raise self._gone(exc) from None
        if data and self.trace:
            self._record("rx", data)
        return data

    def _wait_read(self, n: int, timeout: float) -> bytes:
        """pyserial's ``read(n)`` within ``timeout`` seconds.

        On a POSIX serial port (pyserial opens it non-blocking) the bytes are
        read here with select() and os.read(), as pyserial's own read does but
        without its per-call overhead; and its ``timeout`` is never changed:
        every change reconfigures the port (tcsetattr and flock), and with a new
        deadline on every read that was about a fifth of the host's CPU per
        byte sent. The wait also ends when another thread calls the port's
        ``cancel_read()`` (pyserial's wake-up pipe), as pyserial's read does.
        """
        ser = self._port
        if _PosixSerial is None or not isinstance(ser, _PosixSerial) or ser.fd is None:
            ser.timeout = timeout
            return ser.read(n)
        fd = ser.fd
        data = _read_now(fd, n)
        if len(data) >= n or timeout <= 0:
            return data
        wake = getattr(ser, "pipe_abort_read_r", None)
        fds = [fd] if wake is None else [fd, wake]
        end = time.monotonic() + timeout
        while len(data) < n:
            left = end - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(fds, [], [], left)
            if not ready:
                break
            if wake is not None and wake in ready:
                os.read(wake, 1000)         # cancel_read() from another thread: return now
                break
            chunk = _read_now(fd, n - len(data))
            if not chunk:
                raise serial.SerialException("device reports readiness to read but returned no data "
                                             "(device disconnected or multiple access on port?)")
            data += chunk
        return data

    def _in_waiting(self) -> int:
        try:
            return self._port.in_waiting
        except (serial.SerialException, OSError) as exc:
            raise self._gone(exc) from None

    @contextlib.contextmanager
    def _port_guard(self, doing: str = "") -> Iterator[None]:
        """Every call into the port: a vanished device becomes PortDisconnected, not a traceback."""
        try:
            yield
        except (serial.SerialException, OSError) as exc:
            raise self._gone(exc, doing) from None

    def _gone(self, exc: BaseException, doing: str = "") -> PortDisconnected:
        what = f"{doing}{self.port_name} failed" if doing else f"{self.port_name} went away"
        return PortDisconnected(f"{what}: {_reason(exc)}")

    def discard_input(self) -> bytes:
        """Drop what has arrived but was not read yet; return it (for diagnostics)."""
        dropped = bytes(self._pending)
        self._pending.clear()
        return dropped + self.read_available()

    # -- lines ----------------------------------------------------------------
    def read_line(self, timeout: float, *, max_len: int = 4096) -> bytes | None:
        """The next non-empty line (without CR/LF), or ``None`` at the deadline.

        A line ends at CR, LF or CRLF. If ``max_len`` bytes arrive without an
        end of line they are returned as a line, so a flood can't grow memory.
        """
        deadline = Deadline(timeout)
        while True:
            line = self._take_line(max_len)
            if line is not None:
                return line
            chunk = self._read_port(max(1, min(256, self._in_waiting() or 1)), deadline.remaining())
            if not chunk:
                if deadline.expired:
                    return None
                continue
            self._pending += chunk

    def _take_line(self, max_len: int) -> bytes | None:
        buf = self._pending
        while buf[:1] in (b"\r", b"\n"):
            del buf[:1]
        for i, b in enumerate(buf):
            if b in (0x0D, 0x0A):
                line = bytes(buf[:i])
                del buf[:i + 1]
                return line
            if i + 1 >= max_len:
                line = bytes(buf[:max_len])
                del buf[:max_len]
                return line
        return None

    def write_line(self, text: str, ending: str = "\r\n") -> None:
        self.write((text + ending).encode("ascii"))


class _Rfc2217Serial(serial.rfc2217.Serial):
    """pyserial's RFC 2217 client (``rfc2217://host:port``: a serial port over TCP that carries
    the baud rate, parity and RTS/DTR — the simulator's TCP transport, a networked port server),
    sending the line settings only when they change.

    pyserial's client sends all four settings and waits for each to be acknowledged (at least
    50 ms) at every ``_reconfigure_port``, which its ``timeout`` setter calls too; rakflash gives
    each read its own deadline, so unchanged settings are not sent again. It has no write
    timeout (pyserial raises NotImplementedError for one): the port is opened without.
    """

    _sent_settings: tuple[object, ...] | None = None
    # pyserial's own state, which its stubs leave out
    _read_buffer: queue.Queue[bytes | None]
    _baudrate: int
    _bytesize: int
    _parity: str
    _stopbits: float
    _rtscts: bool
    _xonxoff: bool

    def open(self) -> None:
        import warnings
        self._sent_settings = None
        with warnings.catch_warnings():      # pyserial 3.5 names its reader thread the old way
            warnings.filterwarnings("ignore", r"set(Daemon|Name)\(\) is deprecated", DeprecationWarning)
            try:
                super().open()
            except (serial.SerialException, OSError) as exc:
                # The server closed the connection before answering (pyserial's reader thread
                # queued its end-of-stream None, or the next request found the pipe broken): it
                # serves one program at a time, as a serial port is opened by one (the
                # simulator's TCP port; ser2net's max-connections).
                queue = getattr(self._read_buffer, "queue", ())
                if None in list(queue) or isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                    raise serial.SerialException(f"{self.portstr}: the server closed the connection "
                                                 f"at once: the port is in use") from exc
                raise

    def _reconfigure_port(self) -> None:
        if self.write_timeout is not None:         # as pyserial's client says it (esptool sets one,
            raise NotImplementedError("write_timeout is currently not supported")   # then None)
        settings = (self._baudrate, self._bytesize, self._parity, self._stopbits, self._rtscts,
                    self._xonxoff)
        if settings == self._sent_settings:
            return
        super()._reconfigure_port()  # type: ignore[misc]  # pyserial's stubs leave its private methods out
        self._sent_settings = settings


def _is_pty(port: str) -> bool:
    """Whether ``port`` is a Unix pseudo-terminal (Unix98 pty slaves have majors 136-143)."""
    import os
    import stat
    try:
        st = os.stat(port)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and 136 <= os.major(st.st_rdev) <= 143


def _read_now(fd: int, n: int) -> bytes:
    """What a non-blocking descriptor has now, up to ``n`` bytes (b"" when nothing)."""
    try:
        return os.read(fd, n)
    except (BlockingIOError, InterruptedError):
        return b""


def _reason(exc: BaseException) -> str:
    """The OS's words for why, not a Python tuple: pyserial wraps termios' errors as
    "Could not configure port: (25, 'Inappropriate ioctl for device')"."""
    err, words = _os_cause(exc)
    if words:
        return f"{words} (errno {err})"
    return str(exc).strip() or exc.__class__.__name__


def _os_cause(exc: BaseException) -> tuple[int | None, str | None]:
    """(errno, the system's words) of ``exc`` or of the error it was raised from."""
    for e in (exc, exc.__cause__, exc.__context__):
        if e is None:
            continue
        err, words = getattr(e, "errno", None), getattr(e, "strerror", None)
        if isinstance(err, int) and isinstance(words, str) and words:
            return err, words
        args = e.args
        if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
            return args[0], args[1]
    return None, None


def _not_a_serial_port(port: str) -> PortError | None:
    """A path that exists but can't be a serial port, which is a character device: said before
    it is opened (a regular file is never opened for writing). Names (COM3, socket://…) and
    missing paths are left to the open, which says what is wrong with them."""
    try:
        mode = os.stat(port).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISCHR(mode):
        return None
    what = ("a folder" if stat.S_ISDIR(mode) else "a regular file" if stat.S_ISREG(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a block device" if stat.S_ISBLK(mode) else "not a device")
    return NotASerialPort(f"{port} is not a serial port: it is {what}")


def port_busy(port: str, others: list[tuple[int, str]] | tuple = (), *, windows: bool = False) -> PortBusy:
    """The one way rakflash says a port is taken — whether another program holds its lock or
    just has it open — naming the programs where the system tells (Linux, from /proc)."""
    names = ", ".join(f"{name} (pid {pid})" for pid, name in others)
    return PortBusy(f"{port} is in use by another program" + (f": {names}" if names else "")
                    + (" (Windows says 'Access is denied')" if windows else ""),
                    programs=[{"pid": p, "name": n} for p, n in others])


def _open_error(port: str, exc: BaseException) -> PortError:
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err in (errno.ENOENT, errno.ENODEV, errno.ENXIO) or "No such file" in text:
        return PortNotFound(f"serial port {port} does not exist")
    if err in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text \
            or "busy" in text.lower():
        from .ports import other_openers
        return port_busy(port, other_openers(port))
    if "the port is in use" in text:
        return port_busy(port)            # an RFC 2217 server that serves another program
    if "Access is denied" in text:
        # Windows says this (PermissionError 13) when another program holds the port.
        return port_busy(port, (), windows=True)
    if err == errno.EACCES or "Permission denied" in text:
        return PortPermission(f"no permission to open {port}")
    if "Connection refused" in text:
        return PortNotFound(f"nothing listens at {port}")
    if _os_cause(exc)[0] == errno.ENOTTY:
        return NotASerialPort(f"{port} is not a serial port: it is a device that is not a terminal "
                              f"(the system says '{_os_cause(exc)[1]}')")
    return PortError(f"cannot open {port}: {_reason(exc)}")
