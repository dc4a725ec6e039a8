"""The batch file: one row of LoRaWAN keys per module, checked whole before anything is written.

A batch is a CSV file with a header row naming its columns (any order, any case):

- ``DevEUI`` (also ``dev_eui``): 16 hex digits, unique in the file;
- ``AppEUI`` (also ``app_eui``, ``JoinEUI``, ``join_eui``): 16 hex digits;
- ``AppKey`` (also ``app_key``): 32 hex digits, not all zeros (the factory's blank key);
- optionally ``serial_number`` (also ``SerialNumber``, ``SN``): binds the row to the one
  module that reports this serial number (``AT+SN=?``); empty: the row goes to any module.

Commas, semicolons (The Things Stack's CSV and many spreadsheets) or tabs separate the
fields. Every problem is named by its line number, all of them at once, and a file with
any problem is refused whole (:class:`~rakflash.errors.BatchInvalid`) before a module is
touched. Hex is taken in either case and kept in upper case, as RUI3 answers it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BatchInvalid, UsageError

MAX_BYTES = 16 * 1024 * 1024       # a million rows is ~70 MB; a batch is thousands
MAX_PROBLEMS = 20                  # named one by one; the rest counted

COLUMNS = {
    "dev_eui": ("deveui", "dev_eui", "dev eui"),
    "app_eui": ("appeui", "app_eui", "app eui", "joineui", "join_eui", "join eui"),
    "app_key": ("appkey", "app_key", "app key"),
    "serial_number": ("serial_number", "serialnumber", "serial number", "serial", "sn"),
}
HEX = {"dev_eui": 16, "app_eui": 16, "app_key": 32}
LABEL = {"dev_eui": "DevEUI", "app_eui": "AppEUI", "app_key": "AppKey", "serial_number": "serial number"}
_SERIAL = re.compile(r"[!-~]{1,64}")


def key_hash(app_key: str) -> str:
    """A short, one-way name of an AppKey: the first 8 hex digits of its SHA-256 — enough to tell
    two keys apart in a report or the ledger, useless to recover the key."""
    return hashlib.sha256(app_key.upper().encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Row:
    """One module's keys; ``line`` is its line number in the file (the header is line 1)."""

    line: int
    dev_eui: str
    app_eui: str
    app_key: str
    serial_number: str | None = None

    @property
    def app_key_hash(self) -> str:
        return key_hash(self.app_key)

    def public(self) -> dict:
        """What a report, the ledger or the page may show: never the AppKey itself."""
        return {"line": self.line, "dev_eui": self.dev_eui, "app_eui": self.app_eui,
                "app_key_sha256": self.app_key_hash, "bound_to": self.serial_number}


@dataclass
class Batch:
    """The checked rows of one batch file."""

    path: str
    name: str            # what the ledger calls the batch: the file's name
    rows: list[Row]

    def by_dev_eui(self, dev_eui: str) -> Row | None:
        return next((r for r in self.rows if r.dev_eui == dev_eui.upper()), None)

    def bound_to(self, serial: str) -> Row | None:
        return next((r for r in self.rows if r.serial_number == serial), None)

    def next_for(self, serial: str, taken: set[str]) -> Row | None:
        """The row this module gets: the one bound to its serial number, else the first
        unbound row whose DevEUI is not in ``taken``; None when none is left."""
        bound = self.bound_to(serial)
        if bound is not None:
            return None if bound.dev_eui in taken else bound
        return next((r for r in self.rows if r.serial_number is None and r.dev_eui not in taken), None)


def read_batch(path: str) -> Batch:
    """Read and check the batch file at ``path`` (see the module's docstring)."""
    p = Path(path)
    try:
        if not p.is_file():
            raise UsageError(f"the batch file {path} is not there" if not p.exists()
                             else f"{path} is not a file", hint="Give the path of the batch CSV file.")
        with open(p, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the batch file {path}: {exc.strerror or exc}",
                         hint="Check the path and its permissions.") from None
    if len(raw) > MAX_BYTES:
        raise BatchInvalid(f"the batch file {path} is larger than {MAX_BYTES // 2**20} MiB: not a batch of keys",
                           problems=[])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise BatchInvalid(f"{path}: line {line}: not UTF-8 text", problems=[f"line {line}: not UTF-8 text"]) from None
    return parse_batch(text, path=path, name=p.name)


def parse_batch(text: str, *, path: str = "batch.csv", name: str | None = None) -> Batch:
    """Check ``text`` as a batch file; :class:`BatchInvalid` names every bad line."""
    problems: list[str] = []
    lines = text.splitlines()
    header_at = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if header_at is None:
        raise BatchInvalid(f"{path} is empty: a batch needs a header row (DevEUI, AppEUI, AppKey) and rows",
                           problems=["line 1: empty file"])
    delimiter = _delimiter(lines[header_at])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    columns: dict[str, int] = {}
    rows: list[Row] = []
    first_line_of: dict[str, int] = {}
    serial_line: dict[str, int] = {}
    try:
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if not columns:
                columns = _header(fields, line, problems)
                if not columns:
                    break
                width = len(fields)
                continue
            if len(fields) != width:
                problems.append(f"line {line}: {len(fields)} fields where the header has {width}")
                continue
            row = _row(fields, columns, line, problems)
            if row is None:
                continue
            if row.dev_eui in first_line_of:
                problems.append(f"line {line}: DevEUI {row.dev_eui} is already on line {first_line_of[row.dev_eui]}")
                continue
            first_line_of[row.dev_eui] = line
            if row.serial_number is not None:
                if row.serial_number in serial_line:
                    problems.append(f"line {line}: serial number {row.serial_number} is already bound "
                                    f"to the row on line {serial_line[row.serial_number]}")
                    continue
                serial_line[row.serial_number] = line
            rows.append(row)
    except csv.Error as exc:
        problems.append(f"line {reader.line_num}: {exc}")
    if not columns and not problems:     # only separators and blanks
        problems.append(f"line {header_at + 1}: no header row naming DevEUI, AppEUI and AppKey")
    elif columns and not rows and not problems:
        problems.append(f"line {header_at + 1}: a header and no rows")
    if problems:
        raise_problems(path, problems)
    return Batch(path=path, name=name or Path(path).name, rows=rows)


def raise_problems(path: str, problems: list[str]) -> None:
    """:class:`BatchInvalid` naming the first problems (line by line) and counting the rest."""
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    message = (f"{path}: {len(problems)} problem{'s' if len(problems) != 1 else ''}, nothing was written: "
               + "; ".join(shown) + (f"; and {more} more" if more else ""))
    raise BatchInvalid(message, problems=problems)


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def _header(fields: list[str], line: int, problems: list[str]) -> dict[str, int]:
    names = [f.strip().lower() for f in fields]
    columns: dict[str, int] = {}
    for key, aliases in COLUMNS.items():
        found = [i for i, n in enumerate(names) if n in aliases]
        if len(found) > 1:
            problems.append(f"line {line}: two columns are the {LABEL[key]} "
                            f"({', '.join(fields[i].strip() for i in found)})")
        elif found:
            columns[key] = found[0]
        elif key != "serial_number":
            problems.append(f"line {line}: no {LABEL[key]} column (the header names "
                            f"{', '.join(repr(f.strip()) for f in fields) or 'nothing'})")
    return columns if not problems else {}


def _row(fields: list[str], columns: dict[str, int], line: int, problems: list[str]) -> Row | None:
    values: dict[str, str] = {}
    ok = True
    for key, digits in HEX.items():
        value = fields[columns[key]].strip()
        if not re.fullmatch(f"[0-9A-Fa-f]{{{digits}}}", value):
            what = "empty" if not value else f"{value[:40]!r} is not {digits} hex digits"
            problems.append(f"line {line}: {LABEL[key]} {what}")
            ok = False
        elif key == "app_key" and int(value, 16) == 0:
            problems.append(f"line {line}: AppKey is all zeros (the blank key every module has from the factory)")
            ok = False
        elif key == "dev_eui" and int(value, 16) in (0, 2**64 - 1):
            problems.append(f"line {line}: DevEUI {value} is not a device's EUI")
            ok = False
        values[key] = value.upper()
    serial = fields[columns["serial_number"]].strip() if "serial_number" in columns else ""
    if serial and not _SERIAL.fullmatch(serial):
        problems.append(f"line {line}: serial number {serial[:40]!r} is not 1-64 printable characters without spaces")
        ok = False
    if not ok:
        return None
    return Row(line, values["dev_eui"], values["app_eui"], values["app_key"], serial or None)
