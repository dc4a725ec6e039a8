"""One stream of typed events that every output is drawn from.

Flows report what happens by calling an ``emit`` function (a :data:`Sink`)
with one of the events below; they never print. The terminal (progress bar and
lines), ``--json`` (one JSON object per event), the web page (server-sent
events) and the fleet table (one row per device) are all renderers of the same
stream, so what one output can show, the others can too — and no output decides
anything.

Each event turns into one JSON object with ``to_dict()``: ``{"event": KIND,
…fields}``. The README lists every kind and its fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar


@dataclass(frozen=True)
class Event:
    """Base of all events. ``kind`` is the JSON ``event`` value."""

    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "info":
                d.update(value)
            else:
                d[f.name] = value
        return d


@dataclass(frozen=True)
class Phase(Event):
    """A step of a flow begins.

    ``phase`` is one of a small vocabulary shared by every flow: ``identify``,
    ``settings`` (reading the owner's keys), ``boot`` (entering the bootloader),
    ``connect`` (a ROM bootloader's handshake), ``erase``, ``write``, ``verify``,
    ``start`` (starting the new firmware and confirming its version),
    ``settings-check``. ``message`` says it for people; ``info`` holds details
    (flattened into the JSON object).
    """

    kind: ClassVar[str] = "phase"
    phase: str
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress(Event):
    """``bytes`` of ``total`` done in ``phase`` (usually ``write``)."""

    kind: ClassVar[str] = "progress"
    bytes: int
    total: int
    phase: str = "write"


@dataclass(frozen=True)
class Retry(Event):
    """Something was sent again; ``retries`` counts them in this run so far."""

    kind: ClassVar[str] = "retry"
    retries: int
    reason: str
    phase: str = "write"


@dataclass(frozen=True)
class Prompt(Event):
    """The person must do something now, e.g. ``action="press-reset"``.

    ``window`` is how many seconds rakflash waits for it (``countdown`` events
    follow); ``info`` carries action-specific details (e.g. ``reset_line``).
    """

    kind: ClassVar[str] = "prompt"
    action: str
    message: str
    window: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Countdown(Event):
    """About once a second while waiting for the person (``action`` as in the prompt)."""

    kind: ClassVar[str] = "countdown"
    seconds_left: int
    action: str = "press-reset"


@dataclass(frozen=True)
class Caught(Event):
    """The module was caught in its bootloader after a reset (the flood is behind us)."""

    kind: ClassVar[str] = "caught"
    waited: float = 0.0


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the JSON kind is "warning"
    """Something the person should know that does not stop the flow (``code`` names it)."""

    kind: ClassVar[str] = "warning"
    code: str
    message: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Note(Event):
    """A remark for people (shown as ``note:``), e.g. which module was assumed."""

    kind: ClassVar[str] = "note"
    message: str


@dataclass(frozen=True)
class Keys(Event):
    """The owner's keys as a recovery read them from the chip's memory: ``when`` is
    ``before`` (read before anything is written: what was found, and where a copy is kept)
    or ``after`` (read again after the write, and after writing them back if the write
    overwrote them: ``state`` says ``kept``, ``written-back`` or ``lost``). ``info`` holds
    :meth:`rakflash.flows.keys.Backup.shown` — DevEUI, AppEUI, band, class, join mode; the
    AppKey and session keys masked (``null``) unless the person asked to see them."""

    kind: ClassVar[str] = "keys"
    when: str
    state: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceFound(Event):
    """Identification found what answers on the port: ``info`` holds ``module``, ``mode``,
    ``app_version``, ``bootloader_version``, ``serial_number``… (a DeviceInfo's fields)."""

    kind: ClassVar[str] = "device"
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanReady(Event):
    """The plan, before anything is written (``plan`` is its ``to_dict()``)."""

    kind: ClassVar[str] = "plan"
    info: dict[str, Any] = field(default_factory=dict)


Sink = Callable[[Event], None]


def nowhere(event: Event) -> None:
    """A sink that drops every event."""


class Recorder:
    """A sink that keeps every event (for tests, and for a result's history)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def of(self, cls: type) -> list:
        return [e for e in self.events if isinstance(e, cls)]


def tee(*sinks: Sink | None) -> Sink:
    """One sink that passes every event to each of ``sinks`` (None ones are skipped)."""
    live = [s for s in sinks if s is not None]

    def emit(event: Event) -> None:
        for s in live:
            s(event)

    return emit
