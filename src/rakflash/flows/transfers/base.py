"""What every serial transfer provides, and the helpers they share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from ...errors import RakflashError
from ...events import Phase, Progress, Retry, Sink
from ...link import Link

if TYPE_CHECKING:
    from ...catalog import Module
    from ..plan import Plan


class Transfer(Protocol):
    """One update protocol, as the update flow and the plan use it."""

    name: str

    def steps(self, plan: Plan) -> list[str]:
        """What the transfer will do, in the plan's words (one or more steps)."""

    def minimum_seconds(self, module: Module, size: int, baud: int, latency: float) -> float:
        """The least time the protocol can take for ``size`` bytes on that link.

        Counts every byte on the wire, one turnaround ``latency`` per
        acknowledged packet in each direction, and the flash erase/program time
        the MCU's datasheet gives: no implementation can beat it on that link.
        """

    def send(self, link: Link, plan: Plan, emit: Sink) -> int | None:
        """Send the plan's payload; the module's bootloader console is ready on ``link``.

        Returns the byte it resumed at, for a protocol whose bootloader keeps what an
        interrupted run sent (Nordic Secure DFU); None (or nothing) when it sent it all.

        On failure or Ctrl-C the transfer ends the device's session so its
        bootloader answers again (the re-run goes on from there), then re-raises.
        """


def restart_markers(plan: Plan) -> tuple[bytes, ...]:
    """What only a freshly restarted bootloader prints: its banner, its console's refusal."""
    d = plan.module.boot_dialect
    return d["banner"].encode(), d["unsupported"].encode()


def guarded(link: Link, send: Callable[[], None], *, abort: bytes) -> None:
    """Run a transfer; on failure send ``abort`` so the device leaves its transfer
    session and its bootloader console answers again (a re-run then goes on from there)."""
    try:
        send()
    except (RakflashError, KeyboardInterrupt):
        try:
            link.write(abort)
        except RakflashError:
            pass
        raise


def progress_to(emit: Sink, phase: str = "write") -> Callable[[int, int], None]:
    """A protocol's ``progress(done, total)`` callback that emits :class:`Progress` events."""
    return lambda done, total: emit(Progress(done, total, phase))


class Reporter:
    """A transfer's own phases and retries as events, for renderers to show what it is doing.

    :meth:`enter` begins a phase (``erase``, ``write``, ``verify``; each carries the
    payload's ``bytes`` so a progress bar knows its total); :meth:`retry` counts
    what was sent again in this transfer and says why, in the phase it happened;
    :meth:`progress` is a protocol's ``progress(done, total)`` callback.
    """

    MESSAGES = {"erase": "erasing (the bootloader erases before it takes the data)",
                "write": "writing", "verify": "verifying"}

    def __init__(self, link: Link, emit: Sink, total: int) -> None:
        self.link, self.emit, self.total = link, emit, total
        self.phase = "write"
        self.retries = 0

    def enter(self, phase: str, message: str | None = None) -> None:
        self.phase = phase
        self.link.note(f"update step: {phase}")
        self.emit(Phase(phase, message or self.MESSAGES.get(phase, phase), {"bytes": self.total}))

    def retry(self, reason: str) -> None:
        self.retries += 1
        self.emit(Retry(self.retries, reason, self.phase))

    def progress(self, done: int, total: int) -> None:
        self.emit(Progress(done, total, "write"))
