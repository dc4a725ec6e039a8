"""A simulated UART, paced like a real serial line, served on a pty or over TCP.

The virtual module's firmware talks to :class:`SimUart` exactly as it would to
its UART peripheral: ``read(n, timeout)`` and ``write(data)`` (the same
:class:`~rakflash.link.ByteChannel` shape the host side uses). The host side
opens the port with any serial program.

What makes it behave like a real module behind a USB-UART bridge (the *line
model*, the same whichever way the host reaches it):

* bytes move at the simulated baud rate (10 bit times per byte, 8N1) in both
  directions: a byte written by the host becomes readable by the firmware only
  after its bit time, and the firmware's output leaves at line rate;
* each turnaround (the first byte sent either way after the line was idle)
  waits ``latency`` seconds, as a USB bridge's polling does;
* the firmware's transmit buffer is bounded, so a sketch that prints without
  pause is held to line rate and bytes nobody reads are dropped;
* if the host opened the port at another baud rate than the module's, both
  directions turn into garbage, as they would on a real line;
* faults (bit errors, dropped bytes, garbage — in either direction — power
  cuts, a pulled cable) are applied on the line.

Where the host's end of the line is — a pty or an RFC 2217 server on TCP — is
:mod:`rakflash.sim.transport`.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .transport import TRANSPORTS, PtyEnd, TcpEnd, default_transport


@dataclass
class Rewrite:
    """A scripted fault: the next ``times`` occurrences of ``pattern`` in one
    direction's bytes become ``replacement`` (a wrong digit in one answer, say).

    A pattern is found within what one write carries (a reply line and its
    ``OK`` travel together), not across writes.
    """

    pattern: bytes
    replacement: bytes
    times: int = 1

    def apply(self, data: bytes) -> bytes:
        while self.times > 0 and self.pattern in data:
            data = data.replace(self.pattern, self.replacement, 1)
            self.times -= 1
        return data


@dataclass
class Noise:
    """Random damage to the bytes going one way, drawn per byte from a seeded generator."""

    bit_error_rate: float = 0.0     # one bit of the byte flipped
    drop_rate: float = 0.0          # the byte is lost
    garbage_rate: float = 0.0       # a random byte appears after it (line noise, a glitch)

    def apply(self, data: bytes, rng: random.Random) -> bytes:
        if not (self.bit_error_rate or self.drop_rate or self.garbage_rate):
            return data
        out = bytearray()
        for b in data:
            r = rng.random()
            if r < self.drop_rate:
                continue
            if r < self.drop_rate + self.bit_error_rate:
                b ^= 1 << rng.randrange(8)
            out.append(b)
            if self.garbage_rate and rng.random() < self.garbage_rate:
                out.append(rng.randrange(256))
        return bytes(out)


@dataclass
class Faults:
    """Line faults a test or person can switch on, in both directions.

    Host → module (what the firmware receives): ``bit_error_rate`` (a byte
    arrives with one bit flipped), ``drop_rate`` (it is lost), ``garbage_rate``
    (a random byte appears after it). Module → host (what rakflash receives):
    the same three with ``_to_host``. Each is a probability per byte, drawn
    from a generator seeded with ``seed`` (one per direction).

    ``power_cut_after``: the module loses power once ``received`` (the bytes
    it received since it was made) reaches this count; ``pull_cable_after``:
    the port disappears at that count. Tests arm them relative to now with
    ``faults.received + N``. ``rewrite_to_host`` / ``rewrite_to_module`` hold
    scripted one-off faults (:class:`Rewrite`).
    """

    bit_error_rate: float = 0.0
    drop_rate: float = 0.0
    garbage_rate: float = 0.0
    bit_error_rate_to_host: float = 0.0
    drop_rate_to_host: float = 0.0
    garbage_rate_to_host: float = 0.0
    power_cut_after: int | None = None
    pull_cable_after: int | None = None
    seed: int = 1
    received: int = 0
    sent: int = 0
    rewrite_to_host: list[Rewrite] = field(default_factory=list)
    rewrite_to_module: list[Rewrite] = field(default_factory=list)
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _rng_to_host: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)
        self._rng_to_host.seed(self.seed + 0x5EED)

    @classmethod
    def both_ways(cls, *, bit_error_rate: float = 0.0, drop_rate: float = 0.0,
                  garbage_rate: float = 0.0, **kw: Any) -> Faults:
        """The same noise on the line in both directions."""
        return cls(bit_error_rate=bit_error_rate, drop_rate=drop_rate, garbage_rate=garbage_rate,
                   bit_error_rate_to_host=bit_error_rate, drop_rate_to_host=drop_rate,
                   garbage_rate_to_host=garbage_rate, **kw)

    def apply(self, data: bytes) -> bytes:
        """The bytes from the host as the firmware sees them."""
        self.received += len(data)
        for rw in self.rewrite_to_module:
            data = rw.apply(data)
        return Noise(self.bit_error_rate, self.drop_rate, self.garbage_rate).apply(data, self._rng)

    def apply_to_host(self, data: bytes) -> bytes:
        """The bytes from the firmware as the host sees them."""
        self.sent += len(data)
        for rw in self.rewrite_to_host:
            data = rw.apply(data)
        return Noise(self.bit_error_rate_to_host, self.drop_rate_to_host,
                     self.garbage_rate_to_host).apply(data, self._rng_to_host)


class Unplugged(OSError):
    """The firmware touched a UART whose cable was pulled: the module has no power."""


class PowerCut(Exception):
    """Raised inside the firmware when the simulated power goes away."""


class SimUart:
    """The module's UART: the line model, served on a new pty or TCP port (``transport``)."""

    TX_BUFFER = 256  # bytes the firmware can queue before write() blocks

    def __init__(self, baud: int = 115200, *, latency: float = 0.0,
                 faults: Faults | None = None, strict_baud: bool = True,
                 parity: str = "N", transport: str | None = None) -> None:
        self.baud = baud
        self.latency = latency
        self.faults = faults or Faults()
        self.strict_baud = strict_baud
        self.parity = parity
        self.autobaud = False     # accept any host baud rate (an STM32 ROM measures it from 0x7F)
        self.transport = transport or default_transport()
        if self.transport not in TRANSPORTS:
            raise ValueError(f"no transport {self.transport!r}: the transports are {', '.join(TRANSPORTS)}")
        self.end = PtyEnd(baud) if self.transport == "pty" else TcpEnd()
        self.parity_visible = self.end.parity_visible
        self.path = self.end.path
        self._cond = threading.Condition()
        self._rx: collections.deque[list] = collections.deque()  # [start, bit_time, bytes, taken]
        self._rx_line_free = 0.0
        self._line = bytearray()
        self._tx: collections.deque[bytes] = collections.deque()
        self._tx_queued = 0
        self._tx_line_free = 0.0
        self._power_cut = False
        self.closed = False
        self.on_power_cut = None   # callback(), set by the device
        self.rx_total = 0
        self._threads = [threading.Thread(target=self._reader, daemon=True, name="uart-rx"),
                         threading.Thread(target=self._transmitter, daemon=True, name="uart-tx")]
        for t in self._threads:
            t.start()

    # ------------------------------------------------------------ line settings
    @property
    def byte_time(self) -> float:
        bits = 11 if self.parity != "N" else 10
        return bits / self.baud

    def host_baud(self) -> int | None:
        """The baud rate the host configured on the port, or None if unknown."""
        return self.end.host_baud()

    def host_parity(self) -> str:
        return self.end.host_parity()

    def host_lines(self) -> dict[str, bool] | None:
        """The host's RTS and DTR (``{"rts": …, "dtr": …}``), where the transport carries them
        (TCP); None on a pty, which has no modem lines."""
        return self.end.host_lines()

    def on_host_lines(self, callback) -> None:
        """Call ``callback({"rts": …, "dtr": …})`` whenever the host changes its RTS or DTR
        (over TCP; a pty has no modem lines, so never there)."""
        if isinstance(self.end, TcpEnd):
            self.end.on_lines = callback

    def _line_matches(self) -> bool:
        if not self.strict_baud:
            return True
        if self.parity_visible and self.host_parity() != self.parity:
            return False
        if self.autobaud:
            return True
        hb = self.host_baud()
        return hb is None or abs(hb - self.baud) <= self.baud * 0.03

    # ------------------------------------------------------------ host → firmware
    def _reader(self) -> None:
        while not self.closed:
            try:
                data = self.end.receive(0.1)
            except (OSError, ValueError):
                if self.closed:
                    return
                time.sleep(0.01)
                continue
            if data:
                self._receive(data, time.monotonic())

    def _receive(self, data: bytes, now: float) -> None:
        if not self._line_matches():
            data = _garble(data, keep_line_ends=True)
        f = self.faults
        before = f.received
        data = f.apply(data)
        if f.pull_cable_after is not None and f.received >= f.pull_cable_after > before:
            keep = f.pull_cable_after - before
            data = data[:keep]
            threading.Thread(target=self.pull_cable, daemon=True).start()
        if f.power_cut_after is not None and f.received >= f.power_cut_after > before:
            data = data[:f.power_cut_after - before]
            f.power_cut_after = None
            with self._cond:
                self._power_cut = True
                self._cond.notify_all()
        bt = self.byte_time
        with self._cond:
            # The bridge's turnaround delays a write that finds the line idle;
            # bytes that queue behind others just follow at line rate.
            start = max(now + self.latency, self._rx_line_free)
            self._rx_line_free = start + len(data) * bt
            self._rx.append([start, bt, data, 0])
            self.rx_total += len(data)
            self._cond.notify_all()

    def _available(self, now: float) -> int:
        n = 0
        for start, bt, data, taken in self._rx:
            arrived = min(len(data), int((now - start) / bt + 1e-9))
            n += max(0, arrived - taken)
            if arrived < len(data):
                break
        return n

    def _arrival_of(self, k: int) -> float | None:
        """When ``k`` more of the queued bytes will have crossed the line (when the last
        queued one will, if fewer are queued; None if none is): a read for a whole
        packet wakes once, when the packet is in, not once per byte."""
        last = None
        for start, bt, data, taken in self._rx:
            left = len(data) - taken
            if left <= 0:
                continue
            if k <= left:
                return start + (taken + k) * bt
            k -= left
            last = start + len(data) * bt
        return last

    def read(self, n: int, timeout: float) -> bytes:
        """Up to ``n`` bytes that have crossed the line; early once ``n`` arrived."""
        end = time.monotonic() + timeout
        out = bytearray()
        with self._cond:
            while True:
                self._check_power()
                now = time.monotonic()
                self._take(n - len(out), now, out)
                if len(out) >= n or now >= end:
                    return bytes(out)
                nxt = self._arrival_of(n - len(out))      # new bytes from the host wake us too
                wait = end - now if nxt is None else min(end, nxt) - now
                self._cond.wait(max(wait, 0.0))

    def _take(self, want: int, now: float, out: bytearray) -> None:
        while want > 0 and self._rx:
            chunk = self._rx[0]
            start, bt, data, taken = chunk
            arrived = min(len(data), int((now - start) / bt + 1e-9))
            k = min(want, arrived - taken)
            if k <= 0:
                return
            out += data[taken:taken + k]
            chunk[3] = taken + k
            want -= k
            if chunk[3] >= len(data):
                self._rx.popleft()

    def readline(self, timeout: float, max_len: int = 64) -> bytes | None:
        """A line ended by CR or LF (without it), up to ``max_len`` bytes; None at the deadline.

        A line still incomplete at the deadline is kept for the next call, as
        a firmware's line buffer keeps it.
        """
        end = time.monotonic() + timeout
        line = self._line
        while True:
            b = self.read(1, max(0.0, end - time.monotonic()))
            if not b:
                return None
            if b in (b"\r", b"\n"):
                if line:
                    out = bytes(line)
                    line.clear()
                    return out
                continue
            line += b
            if len(line) >= max_len:
                out = bytes(line)
                line.clear()
                return out

    def flush_input(self) -> None:
        """Forget what the host sent so far (a reset clears the UART)."""
        with self._cond:
            self._rx.clear()
            self._line.clear()

    def _check_power(self) -> None:
        if self.closed:
            raise Unplugged("the cable is pulled")
        if self._power_cut:
            self._power_cut = False
            raise PowerCut()

    def cut_power(self) -> None:
        """Make the firmware's next UART call raise :class:`PowerCut` (reset button, power loss)."""
        with self._cond:
            self._power_cut = True
            self._cond.notify_all()

    # ------------------------------------------------------------ firmware → host
    def write(self, data: bytes) -> None:
        """Queue bytes for the line; blocks while the transmit buffer is full."""
        with self._cond:
            self._check_power()
            if not self._tx and self._tx_line_free < time.monotonic():
                # The line was idle: this write is a turnaround.
                self._tx_line_free = time.monotonic() + self.latency
            view = memoryview(bytes(data))
            while view:
                while self._tx_queued >= self.TX_BUFFER and not self.closed:
                    self._cond.wait(0.05)
                    self._check_power()
                k = min(len(view), max(1, self.TX_BUFFER - self._tx_queued))
                self._tx.append(bytes(view[:k]))
                self._tx_queued += k
                view = view[k:]
                self._cond.notify_all()

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until everything queued has left the line."""
        end = time.monotonic() + timeout
        with self._cond:
            while (self._tx or self._tx_line_free > time.monotonic()) and time.monotonic() < end:
                self._cond.wait(0.005)

    def _transmitter(self) -> None:
        while not self.closed:
            with self._cond:
                while not self._tx and not self.closed:
                    self._cond.wait(0.1)
                if self.closed:
                    return
                chunk = self._tx.popleft()
                self._tx_queued -= len(chunk)
                # Taken off the queue and put on the line in one step (drain() must never see
                # neither), at the line settings of this moment: the bytes are sent now, so a
                # change made once drain() returned (the ROM handing over at Go) can't garble them.
                start = max(time.monotonic(), self._tx_line_free)
                done = start + len(chunk) * self.byte_time
                self._tx_line_free = done
                garbled = not self._line_matches()
                self._cond.notify_all()
            delay = done - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if garbled:
                chunk = _garble(chunk)
            chunk = self.faults.apply_to_host(chunk)
            if self.closed:
                return
            try:
                self.end.send(chunk)     # nobody reads the port: the bytes fall off the line
            except OSError:
                if self.closed:
                    return

    # ------------------------------------------------------------ cable
    def pull_cable(self) -> None:
        """The port disappears: hosts get an I/O error, the path goes away."""
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self._cond:
            self._cond.notify_all()
        # The line threads stop before the port goes: a descriptor number (or a TCP
        # port) closed here may be reused at once (a cable plugged back in).
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=2)
        self.end.close()


PtyUart = SimUart     # its name from when the pty was the only transport


def _garble(data: bytes, keep_line_ends: bool = False) -> bytes:
    """What bytes look like at a wrong baud rate: framing errors, high bits, noise.

    ``keep_line_ends`` lets CR/LF through (a simplification: it makes the
    firmware answer the garbled line, so the host sees garbage answers rather
    than silence, which is what people report from real wrong-baud sessions).
    """
    return bytes(b if keep_line_ends and b in (10, 13) else ((b * 0x9D) ^ 0xA5 | 0x80) & 0xFF
                 for b in data)
