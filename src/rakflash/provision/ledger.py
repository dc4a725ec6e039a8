"""The ledger: which module got which row of a batch — claimed before a key is written.

One table, the same in SQLite (the default: a file beside the batch, nothing to set up)
and PostgreSQL (``--ledger postgresql://…``: several stations on one batch, through
psycopg 3, the optional extra ``rakflash[postgres]``)::

    rakflash_claims(dev_eui PRIMARY KEY, batch, line, app_eui, app_key_sha256,
                    serial_number, module, station, port, firmware,
                    claimed_at, result, error, updated_at,
                    UNIQUE (batch, serial_number))

Why no row is ever claimed twice, and no module keeps a row the ledger doesn't know:

- **A claim is a single INSERT** of the row's DevEUI and the module's serial number,
  committed before a key is written (``INSERT … ON CONFLICT DO NOTHING``: the database
  tells which of two stations inserted it). ``dev_eui`` is the primary key, so a DevEUI is
  claimed once in the whole ledger — across batches and stations; ``(batch,
  serial_number)`` is unique, so a module holds at most one row of a batch.
- A station that lost a row to another one reads the claims again and tries the next row.
  In SQLite each claim also holds the write lock (``BEGIN IMMEDIATE``) from the read to the
  insert, so stations on one file never even collide.
- **A crash between the claim and the write** leaves the claim with ``result='claimed'``;
  the re-run finds the module's own claim by its serial number and writes that row — it
  never takes a second one. A claim whose module never comes back stays visible
  (``rakflash ledger show``) as claimed and not written.

The AppKey is never stored: only the first 8 hex digits of its SHA-256, to notice a batch
file whose key changed after its row was claimed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Iterable, Iterator

from ..errors import BatchUsedUp, LedgerError
from .batch import Batch

TABLE = "rakflash_claims"
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    dev_eui TEXT PRIMARY KEY,
    batch TEXT NOT NULL,
    line INTEGER NOT NULL,
    app_eui TEXT NOT NULL,
    app_key_sha256 TEXT NOT NULL,
    serial_number TEXT NOT NULL,
    module TEXT,
    station TEXT NOT NULL,
    port TEXT,
    firmware TEXT,
    claimed_at TEXT NOT NULL,
    result TEXT NOT NULL,
    error TEXT,
    updated_at TEXT NOT NULL,
    UNIQUE (batch, serial_number)
)"""
FIELDS = ("dev_eui", "batch", "line", "app_eui", "app_key_sha256", "serial_number", "module", "station",
          "port", "firmware", "claimed_at", "result", "error", "updated_at")
CHUNK = 500          # DevEUIs asked about per query


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Claim:
    """A row of the ledger: ``result`` is ``claimed`` (keys not yet confirmed), ``written``
    (read back from the module) or ``failed`` (``error`` says why; the row stays its module's)."""

    dev_eui: str
    batch: str
    line: int
    app_eui: str
    app_key_sha256: str
    serial_number: str
    module: str | None
    station: str
    port: str | None
    firmware: str | None
    claimed_at: str
    result: str
    error: str | None
    updated_at: str
    new: bool = False          # claimed by this call (not found from an earlier run)

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in FIELDS}


def default_path(batch_path: str) -> str:
    """The SQLite ledger of a batch: ``batch.csv`` → ``batch.csv.ledger.sqlite`` beside it."""
    return str(Path(batch_path).with_name(Path(batch_path).name + ".ledger.sqlite"))


def describe(spec: str) -> str:
    """A ledger's address to show: a database URL without its password."""
    return re.sub(r"(postgres(?:ql)?://[^:/@]*):[^@]*@", r"\1:***@", spec)


def open_ledger(spec: str | None, batch_path: str, *, create: bool = True) -> Ledger:
    """The ledger ``--ledger`` names (a ``postgresql://`` URL or an SQLite file), else the file
    beside the batch. ``create=False`` (show, export): a missing SQLite file is an error."""
    if spec and re.match(r"postgres(ql)?://", spec):
        return PostgresLedger(spec)
    path = spec or default_path(batch_path)
    if not create and not Path(path).exists():
        raise LedgerError(f"there is no ledger at {path}: no module has been given a row of this batch yet",
                          hint="Run 'rakflash provision BATCH …' or 'rakflash flash FILE … --provision BATCH' "
                               "first, or name the ledger with --ledger.")
    return SqliteLedger(path)


class Ledger:
    """The claims; subclasses connect to SQLite or PostgreSQL."""

    where: str = ""
    placeholder = "?"
    _db: Any                 # the connection: sqlite3's or psycopg's (set by the subclass)
    _lock: threading.RLock   # one transaction at a time on it

    # -- the database --------------------------------------------------------
    def _execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One transaction at a time on the connection (a fleet's threads share it), committed
        whole or rolled back whole."""
        with self._lock, self._database_transaction():
            yield

    def _database_transaction(self) -> ContextManager[Any]:
        raise NotImplementedError

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self.placeholder)

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[Claim]:
        return [Claim(*r) for r in self._execute(f"SELECT {', '.join(FIELDS)} FROM {TABLE} " + sql, params)]

    # -- reading -------------------------------------------------------------
    def claims(self, batch: str | None = None) -> list[Claim]:
        """Every claim of ``batch`` (of every batch when None), in the batch's line order."""
        if batch is None:
            return self._rows("ORDER BY batch, line")
        return self._rows("WHERE batch = ? ORDER BY line", (batch,))

    def claim_of(self, batch: str, serial: str) -> Claim | None:
        found = self._rows("WHERE batch = ? AND serial_number = ?", (batch, serial))
        return found[0] if found else None

    def claims_of_dev_euis(self, dev_euis: list[str]) -> dict[str, Claim]:
        """The claims of these DevEUIs, in whichever batch."""
        found: dict[str, Claim] = {}
        for i in range(0, len(dev_euis), CHUNK):
            part = dev_euis[i:i + CHUNK]
            marks = ", ".join("?" * len(part))
            for c in self._rows(f"WHERE dev_eui IN ({marks})", part):
                found[c.dev_eui] = c
        return found

    # -- claiming ------------------------------------------------------------
    def claim(self, batch: Batch, serial: str, *, station: str, module: str | None = None,
              port: str | None = None, firmware: str | None = None) -> Claim:
        """This module's row of ``batch``: its own claim from an earlier run, else a new one
        (the row bound to its serial number, else the next unclaimed row), committed before
        this returns. :class:`BatchUsedUp` when no row is left for it."""
        lost: set[str] = set()           # rows another station (or batch) claimed under our feet
        for _ in range(len(batch.rows) + 2):
            with self._transaction():
                own = self.claim_of(batch.name, serial)
                if own is not None:
                    return own
                taken = {c.dev_eui for c in self.claims(batch.name)} | lost
                row = batch.next_for(serial, taken)
                if row is None:
                    bound = batch.bound_to(serial)
                    raise BatchUsedUp(
                        f"the row bound to {serial} (line {bound.line}) is claimed by another module"
                        if bound is not None else
                        f"every row of {batch.name} is claimed ({len(batch.rows)} rows): none left for "
                        f"the module {serial}", claimed=len(taken & {r.dev_eui for r in batch.rows}),
                        rows=len(batch.rows))
                t = now()
                values = (row.dev_eui, batch.name, row.line, row.app_eui, row.app_key_hash, serial, module,
                          station, port, firmware, t, "claimed", None, t)
                won = self._insert(values)
            if won:
                return Claim(*values, new=True)
            lost.add(row.dev_eui)
        raise LedgerError(f"could not claim a row of {batch.name} for {serial}: other stations took "
                          f"every row this one tried", hint="Run the same command again.")

    def _insert(self, values: tuple) -> bool:
        marks = ", ".join("?" * len(values))
        return bool(self._execute(f"INSERT INTO {TABLE} ({', '.join(FIELDS)}) VALUES ({marks}) "
                                  f"ON CONFLICT DO NOTHING RETURNING dev_eui", values))

    def record(self, claim: Claim, result: str, *, error: str | None = None,
               firmware: str | None = None, port: str | None = None, station: str | None = None) -> Claim:
        """The outcome of writing a claimed row (``written`` or ``failed``)."""
        t = now()
        with self._transaction():
            self._execute(f"UPDATE {TABLE} SET result = ?, error = ?, updated_at = ?, "
                          f"firmware = COALESCE(?, firmware), port = COALESCE(?, port), "
                          f"station = COALESCE(?, station) WHERE dev_eui = ?",
                          (result, error, t, firmware, port, station, claim.dev_eui))
        claim.result, claim.error, claim.updated_at = result, error, t
        claim.firmware = firmware or claim.firmware
        claim.port, claim.station = port or claim.port, station or claim.station
        return claim

    def release(self, dev_eui: str, serial: str) -> bool:
        """Take back a claim whose keys were never written (its module was refused before anything
        was written to it): only while it is ``claimed`` and still this serial number's."""
        with self._transaction():
            return bool(self._execute(f"DELETE FROM {TABLE} WHERE dev_eui = ? AND serial_number = ? "
                                      f"AND result = 'claimed' RETURNING dev_eui", (dev_eui, serial)))


class SqliteLedger(Ledger):
    """The ledger in an SQLite file (standard library). Safe for several processes on one
    machine: each claim holds the database's write lock from its read to its insert."""

    def __init__(self, path: str) -> None:
        self.where = path
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._db.execute(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(f"cannot open the ledger {path}: {exc}",
                              hint="Check that the folder is writable and the file is an rakflash ledger "
                                   "(SQLite), or name another one with --ledger.") from None
        self._lock = threading.RLock()   # one connection, shared by a fleet's threads

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"the ledger {self.where} failed: {exc}", hint="Run the same command again; "
                              "if it fails again, check the file (disk full, another program locking it).") from None

    @contextlib.contextmanager
    def _database_transaction(self) -> Iterator[None]:
        # IMMEDIATE takes SQLite's write lock at once: a second station's claim waits, never both win.
        self._execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._execute("ROLLBACK")
            raise
        self._execute("COMMIT")


class PostgresLedger(Ledger):
    """The ledger in a PostgreSQL database (psycopg 3), shared by several stations."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        self.where = describe(url)
        try:
            import psycopg
        except ImportError:
            raise LedgerError("a PostgreSQL ledger needs the psycopg package, which is not installed",
                              hint="Install it with: pip install 'rakflash[postgres]'") from None
        self._psycopg = psycopg
        self._lock = threading.RLock()
        try:
            self._db = psycopg.connect(url, autocommit=True, connect_timeout=10)
            with self._db.transaction():
                # Two stations starting at once must not both create the table.
                self._db.execute("SELECT pg_advisory_xact_lock(726173)")
                self._db.execute(SCHEMA)
        except psycopg.Error as exc:
            raise LedgerError(f"cannot use the ledger {self.where}: {str(exc).strip().splitlines()[0]}",
                              hint="Check the URL, that the database server runs and that this user may "
                                   "create a table in it.") from None

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        try:
            with self._lock:
                cur = self._db.execute(self._sql(sql), tuple(params))
                return cur.fetchall() if cur.description else []
        except self._psycopg.Error as exc:
            raise LedgerError(f"the ledger {self.where} failed: {str(exc).strip().splitlines()[0]}",
                              hint="Run the same command again once the database answers.") from None

    def _database_transaction(self) -> ContextManager[Any]:
        return self._db.transaction()          # psycopg's: commits on success, rolls back on error


def station_name() -> str:
    """This station's default name: the host's."""
    import socket
    return socket.gethostname()


def check_against(batch: Batch, ledger: Ledger) -> None:
    """Refuse (line by line) a batch whose rows the ledger already gave out otherwise: a DevEUI
    claimed in another batch, a row bound to one serial number but claimed by another, a row
    whose keys changed since it was claimed. Nothing is claimed or written before this passes."""
    from .batch import raise_problems
    claims = ledger.claims_of_dev_euis([r.dev_eui for r in batch.rows])
    mine = {c.serial_number: c for c in claims.values() if c.batch == batch.name}
    problems: list[str] = []
    for row in batch.rows:
        c = claims.get(row.dev_eui)
        if row.serial_number and row.serial_number in mine and mine[row.serial_number].dev_eui != row.dev_eui:
            other = mine[row.serial_number]
            problems.append(f"line {row.line}: the row is bound to {row.serial_number}, which the ledger "
                            f"already gave the row of line {other.line} (DevEUI {other.dev_eui})")
        if c is None:
            continue
        if c.batch != batch.name:
            problems.append(f"line {row.line}: DevEUI {row.dev_eui} is already claimed in the batch "
                            f"{c.batch} (line {c.line}, module {c.serial_number})")
        elif row.serial_number and c.serial_number != row.serial_number:
            problems.append(f"line {row.line}: the row is bound to {row.serial_number}, but the ledger has "
                            f"it claimed by the module {c.serial_number}")
        elif c.app_key_sha256 != row.app_key_hash or c.app_eui != row.app_eui:
            problems.append(f"line {row.line}: DevEUI {row.dev_eui} was claimed by {c.serial_number} with "
                            f"other keys than the file has now (AppKey sha256 {c.app_key_sha256}…, "
                            f"AppEUI {c.app_eui})")
    if problems:
        raise_problems(batch.path, problems)


def status(batch: Batch, ledger: Ledger | None) -> dict[str, Any]:
    """Every row of ``batch`` with its state in ``ledger`` (``written``, ``claimed``, ``failed`` or
    ``left``; ``ledger`` None: no ledger yet, every row left), the counts, and the claims of this
    batch's name whose DevEUI is no longer in the file (``not_in_file``). Never an AppKey."""
    claims = {c.dev_eui: c for c in ledger.claims(batch.name)} if ledger is not None else {}
    shown = ("serial_number", "module", "station", "port", "firmware", "claimed_at", "error", "updated_at")
    rows = []
    for r in batch.rows:
        c = claims.get(r.dev_eui)
        rows.append({**r.public(), "state": c.result if c else "left",
                     **({k: v for k, v in c.to_dict().items() if k in shown} if c else {})})
    return {"batch": batch.name, "total": len(rows),
            "written": sum(r["state"] == "written" for r in rows),
            "claimed": sum(r["state"] != "left" for r in rows),
            "not_written": sum(r["state"] in ("claimed", "failed") for r in rows),
            "left": sum(r["state"] == "left" for r in rows),
            "rows": rows, "not_in_file": [c.to_dict() for d, c in claims.items() if batch.by_dev_eui(d) is None]}
