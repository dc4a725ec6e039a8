"""What a write has done to a device so far: one field, three values.

Every command that writes firmware (``flash``, ``recover``) and the web page report it as
``written``, in the CLI's words, its ``--json`` lines and the page alike:

* ``"nothing"`` — no erase or write command went out: the device holds what it held;
* ``"part"`` — an erase or write command went out, and not every block of the image was
  acknowledged: the device may hold part of the new image, or erased flash;
* ``"all"`` — every block of the image was acknowledged (verification is said apart).

It is tracked from what was sent and acknowledged, never from what was hoped: a flow marks
the erase or write command *before* it goes out (once on the line, the chip may act on it
even if its answer is lost), and a block only once the device acknowledged it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NOTHING, PART, ALL = "nothing", "part", "all"

# The words for people, when nothing more precise is known.
SAID = {NOTHING: "Nothing was written to the module.",
        PART: "Part of the image was written: the module holds part of the new image or erased flash.",
        ALL: "The whole image was written."}


def _merge(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    """Add [start, end) to sorted, disjoint ``ranges``, joining what touches."""
    ranges.append((start, end))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for a, b in ranges:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    ranges[:] = merged


def _minus(ranges: list[tuple[int, int]], taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``ranges`` that no range of ``taken`` covers."""
    out = []
    for a, b in ranges:
        for c, d in taken:
            if c <= a < d:
                a = d
            elif a < c < b:
                out.append((a, c))
                a = min(d, b)
        if a < b:
            out.append((a, b))
    return out


def _spans(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"{a:#010x}-{b:#010x}" for a, b in ranges)


@dataclass
class Written:
    """What a write path sent and had acknowledged, and so what the device holds now."""

    state: str = NOTHING
    erasing: list[tuple[int, int]] = field(default_factory=list)   # ranges whose erase went out
    erased: bool = False                                            # … and was acknowledged
    written: list[tuple[int, int]] = field(default_factory=list)   # ranges written and acknowledged
    verified: bool = False

    @property
    def bytes(self) -> int:
        """Bytes of the new image the device acknowledged and still holds."""
        return sum(b - a for a, b in self.written)

    def erase_sent(self, ranges: list[tuple[int, int]]) -> None:
        """An erase command is about to go out for ``ranges`` (what was written there goes)."""
        self.state = PART if self.state == NOTHING else self.state
        self.erased = False
        for a, b in ranges:
            _merge(self.erasing, a, b)
        self.written[:] = _minus(self.written, ranges)

    def erase_acknowledged(self) -> None:
        self.erased = True

    def write_sent(self) -> None:
        """A write command (or a block the device writes on its own) is about to go out."""
        self.state = PART if self.state == NOTHING else self.state

    def acknowledged(self, start: int, end: int) -> None:
        """The device acknowledged the bytes [start, end) as written."""
        self.state = PART if self.state == NOTHING else self.state
        _merge(self.written, start, end)

    def all_written(self) -> None:
        self.state = ALL

    def holds(self, device: str = "the module") -> str:
        """What ``device`` holds now, in a sentence (no next step)."""
        if self.state == NOTHING:
            return SAID[NOTHING]
        if self.state == ALL:
            return (f"The whole image was written to {device}"
                    + (" and verified." if self.verified else " (every block acknowledged)."))
        parts = []
        if self.written:
            parts.append(f"{device} holds the new image's bytes at {_spans(self.written)}")
        rest = _minus(self.erasing, self.written)
        if rest:
            if self.erased:
                parts.append(f"{_spans(rest)} {'is' if len(rest) == 1 else 'are'} erased")
            else:
                parts.append(f"the erase of {_spans(rest)} had begun (those pages may be erased, "
                             "or still hold the old bytes)")
        if not parts:
            parts.append(f"a write to {device} had begun (what it took is unknown)")
        head = "Part of the image was written" if self.written else "Writing had begun"
        return f"{head}: {'; '.join(parts)}."

    def to_dict(self) -> dict:
        return {"written": self.state, "bytes_written": self.bytes,
                "written_ranges": [{"start": a, "end": b} for a, b in self.written],
                "erase_ranges": [{"start": a, "end": b} for a, b in self.erasing]}
