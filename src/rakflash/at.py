"""AT dialogues: the three consoles rakflash talks to, as data from the catalog.

* ``rui3`` — RUI3 applications: ``AT+VER=?`` → ``AT+VER=<value>`` then ``OK``;
  failures are words (``AT_ERROR``, ``AT_COMMAND_NOT_FOUND``, …).
* ``rui-v3`` — RUI v3 applications (RAK811, RAK4270): ``at+version`` →
  ``OK V3.0.0.14.H``; failures ``ERROR: <code>``.
* ``rui-boot`` — the RUI bootloader console: a reply is one line, never ``OK``;
  unknown commands get ``AT not support.``.

:func:`parse_reply` is pure (lines in, :class:`AtReply` out) so it can be
property-tested; :class:`AtConsole` runs a command over a link with a deadline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .catalog import Dialect
from .link import Deadline, Link


@dataclass
class AtReply:
    """The outcome of one AT command."""

    status: str                   # "ok", "error" or "none" (no complete reply by the deadline)
    value: str | None = None      # the information part, if any
    error: str | None = None      # error word or "ERROR: n" text
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def parse_reply(dialect: Dialect, command: str, lines: list[str]) -> AtReply:
    """Interpret the lines received after ``command`` (possibly still incomplete)."""
    kind = dialect.key
    if kind == "rui-boot":
        for line in lines:
            if line == dialect["banner"] or line.lower() == command.lower():
                continue
            if line == dialect["unsupported"]:
                return AtReply("error", error=line, lines=lines)
            return AtReply("ok", value=line, lines=lines)
        return AtReply("none", lines=lines)
    if kind == "rui-v3":
        prefix = dialect["error_prefix"]
        for i, line in enumerate(lines):
            if line.startswith(prefix):
                code = line[len(prefix):].strip()
                meaning = dialect.get("error_codes", {}).get(code)
                return AtReply("error", error=f"{prefix} {code}" + (f" ({meaning})" if meaning else ""),
                               lines=lines)
            if line.startswith(dialect["ok"]):
                rest = [line[len(dialect["ok"]):].strip(), *lines[i + 1:]]
                value = "\n".join(x for x in rest if x) or None
                return AtReply("ok", value=value, lines=lines)
        return AtReply("none", lines=lines)
    # rui3
    # A query (AT+X=?) is answered by "AT+X=<value>" then OK; lines before
    # that answer are left-overs of an earlier exchange and are skipped.
    errors = set(dialect["errors"])
    name = command.split("=", 1)[0].upper()
    query = command.endswith("=?")
    info: list[str] = []
    for line in lines:
        if line.upper() == command.upper():
            continue  # echo
        answered = bool(info) or not query
        if line == dialect["ok"] and answered:
            return AtReply("ok", value="\n".join(info) or None, lines=lines)
        if line in errors:
            return AtReply("error", error=line, lines=lines)
        if line.upper().startswith(name + "="):
            info.append(line[len(name) + 1:])
        elif not query and line != dialect["ok"]:
            info.append(line)
    return AtReply("none", lines=lines)


def format_reply(dialect: Dialect, command: str, value: str | None, error: str | None = None) -> list[str]:
    """The lines a device of ``dialect`` sends for a reply (the inverse of :func:`parse_reply`)."""
    kind = dialect.key
    if kind == "rui-boot":
        return [error or dialect["unsupported"]] if error is not None else [value or ""]
    if kind == "rui-v3":
        if error is not None:
            return [f"{dialect['error_prefix']} {error}"]
        return [f"{dialect['ok']} {value}" if value else dialect["ok"]]
    if error is not None:
        return [error]
    name = command.split("=", 1)[0]
    return ([f"{name}={value}"] if value is not None else []) + [dialect["ok"]]


class AtConsole:
    """Send AT commands of one dialect over a link and collect the replies."""

    def __init__(self, link: Link, dialect: Dialect) -> None:
        self.link = link
        self.dialect = dialect

    def command(self, command: str, timeout: float = 1.0) -> AtReply:
        """Send ``command`` and wait (at most ``timeout``) for a complete reply.

        The bootloader console never says ``OK``, so its reply is complete with
        its first line. Lines that keep coming (a chatty firmware) don't extend
        the deadline. The link's step listener (``-v``) is told the command and
        how it was answered.
        """
        t0 = time.monotonic()
        reply = self._command(command, timeout)
        step = getattr(self.link, "step", None)
        if step is not None:
            if self._is_setting(command):      # the owner's keys are never shown, only their names
                shown = command.split("=", 1)[0] + ("=?" if command.endswith("=?") else "=…")
                told = "OK (value not shown)" if reply.ok else _told(reply)
            else:
                shown, told = command, _told(reply)
            step(f"{shown} → {told} ({time.monotonic() - t0:.2f} s)")
        return reply

    def _is_setting(self, command: str) -> bool:
        """A query or write of one of the dialect's LoRaWAN settings (keys, EUIs, band, and every
        setting ``keys``/``settings`` read: the catalog's ``setting_format`` names them)."""
        name = command.split("=", 1)[0].upper()
        return any(q.split("=", 1)[0].upper() == name for q in self.dialect.get("settings", [])) \
            or name.removeprefix("AT+") in (self.dialect.get("setting_format") or {})

    def _command(self, command: str, timeout: float) -> AtReply:
        self.link.write_line(command, self.dialect.get("line_ending", "\r\n"))
        deadline = Deadline(timeout)
        lines: list[str] = []
        while True:
            raw = None if deadline.expired else self.link.read_line(deadline.remaining())
            if raw is None:
                # Keep an unterminated tail as a last line: garbage shows up here.
                tail = self.link.discard_input()
                if tail:
                    lines.append(tail.decode("latin-1"))
                return parse_reply(self.dialect, command, lines)
            lines.append(raw.decode("latin-1").strip())
            reply = parse_reply(self.dialect, command, lines)
            if reply.status != "none":
                return reply

    def value(self, command: str, timeout: float = 1.0) -> str | None:
        """The information a query answers with, or None (an error, or no answer by the deadline)."""
        reply = self.command(command, timeout)
        return reply.value if reply.ok else None

    def agreed_value(self, command: str, timeout: float = 1.0, tries: int = 4) -> str | None:
        """A query's value asked until two answers agree (two on a clean line): one byte damaged
        on the way must not make a bootloader 3.0.5 read as 'V³.0.5', an older one.

        None when nothing answers the first time. When no two of ``tries`` answers agree, the
        last one — as good as a single reading, and rules that refuse on it stay on the safe side.
        """
        seen: list[str] = []
        for _ in range(tries):
            value = self.value(command, timeout)
            if value is None:
                if not seen:
                    return None       # it does not answer this: don't wait for more
                continue
            if value in seen:
                return value
            seen.append(value)
        return seen[-1] if seen else None


def _told(reply: AtReply) -> str:
    """A reply in a few words, for the step lines of ``-v``."""
    if reply.status == "none":
        return (f"no reply of this dialect ({' | '.join(reply.lines)[:60]!r})" if reply.lines else "no answer")
    word = "OK" if reply.ok else (reply.error or "error")
    return f"{word} {reply.value[:60]!r}" if reply.value else word


def looks_like_text(data: bytes) -> bool:
    """Mostly printable ASCII with line breaks: what a console at the right baud sends."""
    if not data:
        return False
    good = sum(1 for b in data if 32 <= b < 127 or b in (9, 10, 13))
    return good >= 0.9 * len(data)
