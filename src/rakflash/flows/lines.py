"""Drive RESET and BOOT0 through the adapter's modem lines, in stm32flash's ``-i`` notation.

stm32flash (``-i GPIO_string``, its man page and ``init.c``) writes an entry
and an exit sequence as ``entry:exit``; a sequence is signals separated by
``,`` (then 100 ms pass) or ``&`` (no pause); a signal is ``rts``, ``dtr`` or
``brk``, set (asserted), or reset when prefixed with ``-``.

rakflash's ``--reset-with LINE`` / ``--boot0-with LINE`` name the line wired
to each pin the same way: ``rts`` means the pin is active while RTS is set,
``-rts`` while RTS is reset (wiring without the usual inversion). From them
it builds the sequences: BOOT0 active and RESET active together, 100 ms,
RESET released (entry); BOOT0 released (exit, after Go — no second reset).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..errors import UsageError
from ..link import Link

PAUSE = 0.1          # stm32flash's ',' pause
LINES = ("rts", "dtr")


@dataclass(frozen=True)
class Signal:
    line: str          # "rts", "dtr" or "brk"
    level: bool        # True: set (asserted)
    pause_after: float


def check_line(text: str | None, option: str) -> str | None:
    """Validate a ``--reset-with`` / ``--boot0-with`` value (``rts``, ``dtr``, ``-rts``, ``-dtr``)."""
    if text is None:
        return None
    t = text.strip().lower()
    if t.lstrip("-") not in LINES or t.count("-") > 1:
        raise UsageError(f"{option} takes rts, dtr, -rts or -dtr, not {text!r}",
                         hint="A leading '-' means the pin is active while the line is low (reset), "
                              "as in stm32flash's -i sequences.")
    return t


def _active(spec: str, active: bool) -> str:
    """The signal that makes the pin wired as ``spec`` active (or inactive)."""
    inverted = spec.startswith("-")
    line = spec.lstrip("-")
    return line if active != inverted else f"-{line}"


def entry_sequence(reset: str | None, boot0: str | None) -> str:
    first = "&".join(s for s in (boot0 and _active(boot0, True), reset and _active(reset, True)) if s)
    return ",".join(s for s in (first, reset and _active(reset, False)) if s)


def exit_sequence(boot0: str | None) -> str:
    return _active(boot0, False) if boot0 else ""


def stm32flash_sequence(reset: str | None, boot0: str | None) -> str:
    """The stm32flash ``-i`` string for the same wiring."""
    exit_seq = exit_sequence(boot0)
    return entry_sequence(reset, boot0) + (f":{exit_seq}" if exit_seq else "")


def parse_sequence(text: str) -> list[Signal]:
    """One stm32flash sequence (no ``:``) as signals."""
    out: list[Signal] = []
    token = ""
    for ch in text + ",":
        if ch in ",&":
            t = token.strip().lower()
            if t:
                line = t.lstrip("-")
                if line not in (*LINES, "brk") or t.count("-") > 1:
                    raise UsageError(f"{t!r} is not a signal of a GPIO sequence (rts, dtr, brk, -rts …)")
                out.append(Signal(line, not t.startswith("-"), PAUSE if ch == "," else 0.0))
            token = ""
        else:
            token += ch
    if out:
        out[-1] = Signal(out[-1].line, out[-1].level, PAUSE)   # settle after the last step
    return out


def run_sequence(link: Link, text: str) -> None:
    """Carry out a sequence on ``link``'s modem lines."""
    for sig in parse_sequence(text):
        if sig.line == "brk":
            continue          # a break pulse drives no pin rakflash knows about
        link.set_lines(**{sig.line: sig.level})
        if sig.pause_after:
            time.sleep(sig.pause_after)


def enter_rom(link: Link, *, reset: str | None, boot0: str | None) -> None:
    """BOOT0 active, RESET pulsed: the chip starts its ROM bootloader."""
    seq = entry_sequence(reset, boot0)
    if seq:
        link.note(f"lines: {seq}")
        run_sequence(link, seq)


def leave_rom(link: Link, *, boot0: str | None) -> None:
    """BOOT0 released, so the next reset starts the firmware."""
    seq = exit_sequence(boot0)
    if seq:
        link.note(f"lines: {seq}")
        run_sequence(link, seq)
