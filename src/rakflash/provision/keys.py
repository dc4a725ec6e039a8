"""Give one module its row of a batch: claim it in the ledger, write it over AT, read it back.

The steps, on a module whose application answers (after its update, or already current):

1. read its serial number and its DevEUI, AppEUI and AppKey, each *consistently*
   (the same well-formed answer twice: :func:`~rakflash.flows.settings.read_value`);
2. find its own claim in the ledger (an earlier run that was cut off) — or, when it has
   none, refuse a module that holds keys of its own (an AppKey that is not the factory's
   all-zeros blank) unless ``force``, and claim its row (committed before step 3);
3. write each value that differs with the settings flow's
   :func:`~rakflash.flows.settings.write_value` (written, then read back until two reads
   agree) and record the result in the ledger: ``written`` only once every value read back.

The AppKey never leaves this module but over the serial line: events, the report and the
ledger carry the first 8 hex digits of its SHA-256 (``-v`` shows ``AT+APPKEY=…``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..at import AtConsole
from ..catalog import Module
from ..errors import KeysNotWritten, KeysPresent, LedgerError, NotProvisionable
from ..events import Phase, Sink, nowhere
from ..flows.settings import read_value, setting_name, write_value
from ..link import Link
from .batch import Batch, Row, key_hash
from .ledger import Claim, Ledger

KEYS = {"DEVEUI": "dev_eui", "APPEUI": "app_eui", "APPKEY": "app_key"}   # RUI3 setting → batch column


@dataclass
class Provisioning:
    """What a run provisions with: the checked batch, its ledger, this station, ``--force``."""

    batch: Batch
    ledger: Ledger
    station: str
    force: bool = False
    # Serial numbers seen in this run (the fleet's modules run side by side): two modules that
    # say the same serial number would share its row, the one thing that must never happen.
    _seen: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def only_one(self, serial: str, port: str) -> None:
        with self._lock:
            other = self._seen.setdefault(serial, port)
        if other != port:
            raise NotProvisionable(
                f"the modules on {other} and {port} both say they are {serial}: a row is bound to one "
                f"serial number, so only the first gets it", serial_number=serial,
                hint="Tell the modules apart (a module with a cloned or blank serial number needs one of its "
                     "own); nothing was claimed or written for this one.")

    def run(self, link: Link, module: Module | None, *, firmware: str | None = None,
            emit: Sink = nowhere, slot: str | None = None) -> Provisioned:
        return provision(link, module, self, firmware=firmware, emit=emit, slot=slot)


@dataclass
class Provisioned:
    """One module's row, written and read back."""

    claim: Claim
    serial_number: str
    result: str                    # "written", or "already-written" (it held the row already)
    replaced: dict[str, str] = field(default_factory=dict)   # --force: the DevEUI / AppKey hash it held
    seconds: float = 0.0           # reading, claiming, writing and reading back

    def record(self) -> dict[str, Any]:
        """The report's ``provision`` field: which row went where (never the AppKey)."""
        c = self.claim
        return {"result": self.result, "serial_number": self.serial_number, "line": c.line, "dev_eui": c.dev_eui, "app_eui": c.app_eui,
                "app_key_sha256": c.app_key_sha256, "batch": c.batch, "station": c.station,
                "claimed_at": c.claimed_at, "claimed_now": c.new, "replaced": self.replaced or None,
                "seconds": round(self.seconds, 3)}


def key_queries(module: Module) -> dict[str, str]:
    """The module's AT queries of DevEUI, AppEUI and AppKey (the catalog's settings)."""
    found = {setting_name(q).upper(): q for q in module.dialect.get("settings", [])}
    if not all(k in found for k in KEYS) or not module.dialect.get("serial_number"):
        raise NotProvisionable(
            f"{module.name}'s firmware has no AT commands rakflash knows for writing LoRaWAN keys "
            f"(or for telling its serial number): it can't be given a row of the batch",
            hint="Provision RUI3 modules (RAK3172, RAK11720, RAK4631-R); for this one, update it to RUI3 first.")
    return {k: found[k] for k in KEYS}


@dataclass
class Claimed:
    """A module's row, claimed (or its own claim found) and not yet written."""

    claim: Claim
    row: Row
    serial: str
    held: dict[str, str | None]        # DEVEUI / APPEUI / APPKEY as read before (None: not consistently)
    found: Claim | None                # the claim an earlier run had made, as it was
    replaced: dict[str, Any]


def claim_row(link: Link, module: Module | None, p: Provisioning, *, firmware: str | None = None,
              emit: Sink = nowhere, slot: str | None = None, timeout: float = 0.5) -> Claimed:
    """Steps 1-2: read the module's serial number and keys, refuse or claim its row (committed
    before this returns). ``slot`` names the module within the run (its first port)."""
    if module is None:
        raise NotProvisionable("rakflash could not tell which module this is, so it can't write its keys",
                               hint="Name it with --module and run the same command again.")
    queries = key_queries(module)
    console = AtConsole(link, module.dialect)
    emit(Phase("provision", f"reading {module.name}'s serial number and keys"))
    serial = read_value(console, module, module.dialect["serial_number"], timeout, stop_when_silent=True)
    if serial is None:
        raise NotProvisionable(
            f"{module.name} did not tell its serial number the same way twice, so no row of the batch can be "
            f"bound to it", hint="Check that its application runs (not its bootloader: finish its update "
                                 "first) and the cable, then run the same command again.")
    p.only_one(serial, slot or link.port_name)
    held = {k: read_value(console, module, q, timeout) for k, q in queries.items()}
    batch, ledger = p.batch, p.ledger
    own = ledger.claim_of(batch.name, serial)
    replaced: dict[str, Any] = {}
    if own is None:
        blank = held["APPKEY"] is not None and int(held["APPKEY"], 16) == 0
        if not blank:
            if None in held.values() and not p.force:
                unread = ", ".join(k for k, v in held.items() if v is None)
                raise NotProvisionable(
                    f"{module.name} {serial} did not give its {unread} the same way twice, so rakflash "
                    f"can't tell whether it holds keys of its own; nothing was claimed or written",
                    hint="Check the cable and run the same command again (--force writes its row anyway).")
            if p.force:
                replaced = {"dev_eui": held["DEVEUI"], "app_key_sha256": key_hash(held["APPKEY"])
                            if held["APPKEY"] else None}
            else:
                assert held["APPKEY"] is not None       # (every key was read, or refused just above)
                raise KeysPresent(
                    f"{module.name} {serial} already holds keys of its own (DevEUI {held['DEVEUI']}, an AppKey "
                    f"that is not blank: sha256 {key_hash(held['APPKEY'])}…), not a row of {batch.name} claimed "
                    f"for it; nothing was claimed or written", serial_number=serial, dev_eui=held["DEVEUI"])
    claim = own or ledger.claim(batch, serial, station=p.station, module=module.name, port=link.port_name,
                                firmware=firmware)
    row = batch.by_dev_eui(claim.dev_eui)
    if row is None:
        raise LedgerError(f"the ledger gives {serial} the row of DevEUI {claim.dev_eui} (line {claim.line} of "
                          f"{claim.batch}), which is no longer in {batch.path}",
                          hint="Put that row back in the batch file, or provision this module from the file "
                               "it came from.")
    emit(Phase("provision", f"{'claimed' if claim.new else 'found its claim on'} line {row.line} of {batch.name} "
               f"for {serial} (DevEUI {row.dev_eui})",
               {"claimed": True, "new": claim.new, "serial_number": serial, **row.public()}))
    wanted = {k: getattr(row, column) for k, column in KEYS.items()}
    if own is not None and own.result == "written" and held != wanted and not p.force:
        # Written and read back once: a module of this serial number that now holds other keys is
        # another module claiming the same number, or its keys were reset. Not on a guess.
        raise KeysPresent(
            f"the ledger has line {row.line} (DevEUI {row.dev_eui}) written to {serial} and read back at "
            f"{own.updated_at}, but this {module.name} {serial} now holds other keys (DevEUI {held['DEVEUI']}): "
            f"another module with the same serial number, or its keys were reset; nothing was written",
            serial_number=serial, dev_eui=held["DEVEUI"],
            hint="If this is that module and its keys were reset, run the same command with --force to write "
                 "its row again; if it is another module, it needs a serial number of its own.")
    return Claimed(claim, row, serial, held, own, replaced)


def claimed_record(c: Claimed) -> dict[str, Any]:
    """The report's ``provision`` object of a row claimed and not (yet) written."""
    return {**Provisioned(c.claim, c.serial, "claimed", c.replaced).record(), "seconds": None}


def provision(link: Link, module: Module | None, p: Provisioning, *, firmware: str | None = None,
              emit: Sink = nowhere, slot: str | None = None, timeout: float = 0.5) -> Provisioned:
    """Give the module on ``link`` its row of ``p.batch`` (see the module's docstring)."""
    t0 = time.monotonic()
    c = claim_row(link, module, p, firmware=firmware, emit=emit, slot=slot, timeout=timeout)
    assert module is not None       # (claim_row refuses a module it can't tell)
    claim, row, serial, held, ledger = c.claim, c.row, c.serial, c.held, p.ledger
    queries = key_queries(module)
    console = AtConsole(link, module.dialect)
    wanted = {k: getattr(row, column) for k, column in KEYS.items()}
    if all(held[k] == v for k, v in wanted.items()):
        result = "already-written"
    else:
        for k, value in wanted.items():
            if held[k] != value and not write_value(console, module, queries[k], value, timeout):
                ledger.record(claim, "failed", error=f"{k} did not read back", firmware=firmware,
                              port=link.port_name, station=p.station)
                raise KeysNotWritten(
                    f"{module.name} {serial}: its {k} did not read back the same way twice after it was "
                    f"written (line {row.line}, DevEUI {row.dev_eui}); the row stays claimed for it",
                    serial_number=serial, line=row.line, dev_eui=row.dev_eui)
        result = "written"
    ledger.record(claim, "written", firmware=firmware, port=link.port_name, station=p.station)
    emit(Phase("provision", f"line {row.line} written to {serial} and read back", {"written": True, **row.public()}))
    return Provisioned(claim, serial, result, c.replaced, time.monotonic() - t0)
