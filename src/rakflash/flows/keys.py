"""The owner's LoRaWAN keys, read and kept as a file, and written back: ``rakflash keys``.

Two ways to read them:

* ``at`` — a healthy RUI3 module's own AT commands (``AT+DEVEUI=?`` …), each value
  read *consistently* (the same well-formed answer twice: :func:`settings.read_value`);
* ``stm32-rom`` — the chip's ROM bootloader (BOOT0 held at reset, AN3155 Read Memory
  through :class:`~rakflash.protocols.stm32_rom.RomClient`), for a module whose
  application no longer answers: RUI3's config block at the catalog's ``config``
  address, decoded by :mod:`rakflash.protocols.rui3_config`. RUI v3 (RAK811,
  RAK4270) publishes no layout: there the data EEPROM (the catalog's ``user-data``
  region) is kept as raw bytes, and the backup says the keys inside can't be decoded.

A backup is JSON in a file only its owner can read (mode 0600): the module, its serial
number and DevEUI, when and how it was read, the settings by their AT names — and,
read over the ROM, the raw bytes too. :func:`restore` writes one back over AT, each
value checked by reading it back; a backup of another module (another serial number
or DevEUI) is refused unless ``force``.

The values travel only between the module, the file and (``--show-keys``) the
person's screen: events, ``-v`` and errors carry names and DevEUIs, never a key.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import catalog as _catalog
from ..at import AtConsole
from ..catalog import Module
from ..errors import KeysNotWritten, NotProvisionable, PlanRefused, RecoveryUnavailable, UsageError
from ..events import Phase, Sink, nowhere
from ..link import Link
from ..protocols import rui3_config as rc
from .settings import read_settings, read_value, setting_name, well_formed

FORMAT = 1                  # the backup file's version ("rakflash_keys": 1)
FILE_MAX = 256 * 1024       # a backup is a few KiB; more is not one of ours
# What a keys backup holds, in the order a restore writes them (the band first: RUI3 resets
# region-bound settings when it changes), and which of them are secrets (masked when shown).
KEY_NAMES = ("BAND", "NJM", "CLASS", "DEVEUI", "APPEUI", "APPKEY", "DEVADDR", "APPSKEY", "NWKSKEY")
SECRETS = ("APPKEY", "APPSKEY", "NWKSKEY")
SECRET_FIELDS = {"APPKEY": "app_key", "APPSKEY": "app_skey", "NWKSKEY": "nwk_skey"}   # their JSON names


class KeysNotDecoded(PlanRefused):
    """A backup that holds raw bytes only (RUI v3, an unknown layout): nothing to write over AT."""
    name = "keys-not-decoded"


class WrongModule(PlanRefused):
    """The backup is another module's (serial number or DevEUI differ): refused unless --force."""
    name = "another-module"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Backup:
    """The owner's keys and settings as read from one module (or from a backup file)."""

    module: Module
    via: str                                    # "at" or "stm32-rom" (phase 2: "swd")
    read_at: str
    settings: dict[str, str] = field(default_factory=dict)    # AT name → value
    unreadable: list[str] = field(default_factory=list)       # names that could not be read
    serial_number: str | None = None
    port: str | None = None
    decoded: bool = True                        # False: raw bytes only, the keys can't be told
    layout_version: int | None = None           # the RUI3 config block's, read over the ROM
    raw: list[dict[str, Any]] = field(default_factory=list)   # {"region", "address", "hex"}
    notes: list[str] = field(default_factory=list)
    lock: str | None = None                     # the AT port's lock as the config block holds it

    @property
    def dev_eui(self) -> str | None:
        return self.settings.get("DEVEUI")

    def kept_values(self) -> dict[str, str]:
        """The values the kept-settings store (:func:`settings.keep_until_checked`) takes: the
        catalog's settings of the module's dialect, by their queries."""
        out = {}
        for query in self.module.dialect.get("settings", []):
            name = query.split("+", 1)[-1].split("=", 1)[0]
            if name in self.settings:
                out[query] = self.settings[name]
        return out

    def to_file(self) -> dict[str, Any]:
        """The backup file's object (it holds the keys: written mode 0600)."""
        return {"rakflash_keys": FORMAT, "module": self.module.key, "module_name": self.module.name,
                "serial_number": self.serial_number, "dev_eui": self.dev_eui, "read_at": self.read_at,
                "read_via": self.via, "port": self.port, "decoded": self.decoded,
                "layout_version": self.layout_version, "settings": dict(self.settings),
                "unreadable": list(self.unreadable), "raw": list(self.raw), "notes": list(self.notes)}

    def shown(self, show_keys: bool = False) -> dict[str, Any]:
        """What ``keys show`` says: identity, band, class, join mode; the keys masked unless
        ``show_keys`` (``…_blank`` says whether a masked one is all zeros)."""
        s = self.settings
        band = s.get("BAND")
        region = rc.BANDS[int(band)][1] if band is not None and band.isdigit() and int(band) in rc.BANDS else None
        out: dict[str, Any] = {
            "module": self.module.name, "module_key": self.module.key, "serial_number": self.serial_number,
            "dev_eui": s.get("DEVEUI"), "app_eui": s.get("APPEUI"), "dev_addr": s.get("DEVADDR"),
            "band": band, "region": region, "class": s.get("CLASS"),
            "join_mode": rc.JOIN_MODES.get(int(s["NJM"])) if s.get("NJM", "").isdigit() else None,
            "read_via": self.via, "read_at": self.read_at, "decoded": self.decoded,
            "layout_version": self.layout_version, "unreadable": list(self.unreadable),
            "keys_shown": show_keys, "port_lock": self.lock, "notes": list(self.notes)}
        for name, key in SECRET_FIELDS.items():
            value = s.get(name)
            out[key] = value if show_keys else None
            out[f"{key}_blank"] = None if value is None else int(value, 16) == 0
        return out


# ------------------------------------------------------------------ reading

def _queries(module: Module) -> None:
    if module.dialect.key != "rui3":
        raise NotProvisionable(
            f"{module.name}'s firmware (RUI v3) has no AT commands that give its keys",
            hint=f"Read its data EEPROM through the chip's ROM bootloader instead: 'rakflash keys backup "
                 f"FILE --port PORT --via stm32-rom --module {module.key}' (RUI v3 publishes no layout, so "
                 f"the bytes are kept, not decoded).")


def read_over_at(link: Link, module: Module, *, timeout: float = 0.5, emit: Sink = nowhere) -> Backup:
    """The keys of a module whose RUI3 application answers, each read consistently."""
    _queries(module)
    console = AtConsole(link, module.dialect)
    emit(Phase("settings", f"reading {module.name}'s keys and settings over AT"))
    backup = Backup(module, "at", now_iso(), port=link.port_name)
    serial = module.dialect.get("serial_number")
    backup.serial_number = read_value(console, module, serial, timeout) if serial else None
    reading = read_settings(link, module, [f"AT+{name}=?" for name in KEY_NAMES], timeout=timeout)
    backup.settings = {setting_name(query): value.upper() for query, value in reading.values.items()}
    backup.unreadable = reading.unreadable
    return backup


Read = Callable[[int, int], bytes]      # (address, size) → the bytes there


def memory_regions(module: Module) -> list[tuple[str, int, int]]:
    """(region, address, size) of what holds the owner's keys and settings in the chip's memory,
    in the order they are read: RUI3's config block and its factory defaults (as many bytes as
    the latest layout takes: it holds any older one); RUI v3's data EEPROM (``user-data``),
    whole. Empty for a firmware whose settings rakflash knows nothing of (an Arduino sketch)."""
    if module.config_layout:
        need = rc.size(rc.PLATFORMS[module.config_layout])
        return [(name, module.region(name).start, need) for name in ("config", "factory-defaults")
                if module.has_region(name)]
    if module.dialect.key == "rui-v3" and module.has_region("user-data"):
        r = module.region("user-data")
        return [("user-data", r.start, r.size)]
    return []


def read_from_memory(read: Read, module: Module, via: str, *, port: str | None = None) -> Backup:
    """The owner's data as the chip's memory holds it, through any reader of memory (the STM32
    ROM's Read Memory, an SWD probe): RUI3's config block and its factory defaults, decoded
    (their bytes kept too); RUI v3's data EEPROM, raw."""
    backup = Backup(module, via, now_iso(), port=port)
    if module.config_layout:
        _decode_config(read, module, backup)
    else:
        _raw_eeprom(read, module, backup)
    return backup


def _decode_config(read: Read, module: Module, backup: Backup) -> None:
    """RUI3: read the config block (and the factory defaults beside it) and decode it."""
    assert module.config_layout is not None        # read_from_memory decodes only a RUI3 module's
    platform = rc.PLATFORMS[module.config_layout]
    for region, start, need in memory_regions(module):
        raw = read(start, need)
        backup.raw.append({"region": region, "address": f"0x{start:08X}", "hex": raw.hex()})
        if region != "config":
            continue
        try:
            block = rc.decode(raw, platform)
        except rc.Erased as exc:
            backup.decoded = False
            backup.notes.append(f"{exc}: the module starts from its factory defaults (kept as raw bytes too)")
        except rc.ConfigError as exc:
            backup.decoded = False
            backup.notes.append(f"the config block can't be decoded ({exc}); its bytes are kept as they were read")
        else:
            backup.layout_version = block.version
            backup.settings = {n: v for n, v in rc.at_values(block, list(KEY_NAMES)).items()}
            backup.serial_number = block.text("sn") or None
            backup.lock = rc.lock_state(block)


def _raw_eeprom(read: Read, module: Module, backup: Backup) -> None:
    """RUI v3: the data EEPROM, raw (its layout is not published)."""
    backup.decoded = False
    for region, start, size in memory_regions(module):
        raw = read(start, size)
        backup.raw.append({"region": region, "address": f"0x{start:08X}", "hex": raw.hex()})
    backup.notes.append(f"{module.name} runs RUI v3, which publishes no layout of its settings: the data "
                        f"EEPROM was kept as raw bytes, and the keys inside can't be decoded")


def raw_writes(backup: Backup, regions: tuple[str, ...] = ("config",)) -> list[tuple[int, bytes]]:
    """What writing the backup's raw copy back takes: (address, bytes) of each of ``regions`` it
    holds (RUI3's config block by default; a RUI v3 backup's ``user-data``), for a recovery that
    erased them to write back as they were read."""
    return [(int(r["address"], 16), bytes.fromhex(r["hex"])) for r in backup.raw if r["region"] in regions]


def changed(before: Backup, after: Backup) -> list[str]:
    """The settings ``before`` holds that ``after`` does not hold the same (read after a
    recovery: empty means "keys kept"). Raw copies compare by bytes where nothing was decoded."""
    if not before.decoded:
        mine = {r["region"]: r["hex"] for r in after.raw}
        return [r["region"] for r in before.raw if mine.get(r["region"]) != r["hex"]]
    return [n for n, v in before.settings.items() if after.settings.get(n) != v]


# ------------------------------------------------------------------ a recovery's copy

@dataclass
class KeptCopy:
    """Where a recovery kept what it read before writing: a keys backup file in rakflash's
    kept-settings folder (``path``; None when none could be written there), and whether this
    run put the values in the kept-settings store ``flash`` reads (``in_store``)."""

    path: Path | None
    in_store: bool = False
    why_not: str | None = None          # why no file could be written

    def forget(self, backup: Backup) -> None:
        """The chip holds what was read (checked by reading it back): the copy goes, as
        ``flash``'s kept values go once checked (never a file another run kept)."""
        from .settings import forget_kept
        if self.path is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
            self.path = None
        if self.in_store:
            forget_kept(backup.module, backup.serial_number, backup.dev_eui)
            self.in_store = False


def keep_copy(backup: Backup) -> KeptCopy:
    """Keep what a recovery read from the chip until it has checked that the chip still holds
    it: the backup as a file (``keys-MODULE-SERIAL-TIME.json``, mode 0600, the format ``keys
    backup`` writes, raw bytes included, so ``keys restore`` takes a decoded one) in the folder
    of the kept-settings store, and the decoded values in the store itself
    (:func:`settings.keep_until_checked`: a later ``flash`` of this module finds them) — unless
    an earlier, cut-off run keeps values there already (they stay as they are)."""
    from .settings import _file_part, _kept_dir, _pending_file, keep_until_checked
    folder = _kept_dir()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    base = f"keys-{backup.module.key}-{_file_part(backup.serial_number or 'unknown')}-{stamp}"
    copy = KeptCopy(None)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for n in range(1, 100):
            path = folder / (base + (f"-{n}" if n > 1 else "") + ".json")
            if not os.path.lexists(path):
                save(backup, path)
                copy.path = path
                break
    except (OSError, UsageError) as exc:
        copy.why_not = getattr(exc, "message", None) or getattr(exc, "strerror", None) or str(exc)
    values = backup.kept_values() if backup.decoded else {}
    if values and backup.serial_number:
        pending = _pending_file(backup.module, backup.serial_number, backup.dev_eui)
        if not os.path.lexists(pending):
            keep_until_checked(backup.module, backup.serial_number, values)
            copy.in_store = os.path.lexists(pending)
    return copy


# ------------------------------------------------------------------ over SWD

def read_over_swd(module: Module, *, probe: str | None = None, pack: str | None = None, api=None,
                  emit: Sink = nowhere) -> Backup:
    """The keys of a module read through a debug probe (pyOCD): the config block (RUI3) or the
    data EEPROM (RUI v3) read as memory. The module is not reset; pyOCD halts the core while
    it is connected and lets it run again when it lets go."""
    from .. import swd_link
    if not memory_regions(module):
        raise NotProvisionable(f"{module.name}'s firmware keeps no keys where rakflash knows to find them",
                               hint="Read them with the firmware's own tools.")
    if not module.swd_target:
        raise RecoveryUnavailable(f"rakflash knows no SWD target for {module.name}",
                                  hint="Read them over AT while its application answers (--via at).")
    api = api or swd_link.pyocd_api()
    target = module.swd_target
    swd_link.check_target(api, target, pack)          # a missing pack, before any probe is looked for
    chosen = swd_link.choose_probe(api, probe)
    emit(Phase("connect", f"{target} through {chosen.kind} probe {chosen.unique_id}: reading "
               f"{module.name}'s settings", {"probe": chosen.unique_id, "target": target}))
    with swd_link.connected(api, chosen, target, dict(module.swd_options), pack=pack,
                            doing="reading the keys") as session:
        return read_from_memory(lambda a, n: swd_link.read_memory(api, session, a, n, "reading the keys"),
                                module, "swd")


# ------------------------------------------------------------------ the file

def check_new_file(path: str | Path) -> None:
    """A usage error when ``path`` exists: a keys backup is never written over another file."""
    if os.path.lexists(path):
        raise UsageError(f"{path} exists: rakflash never writes a keys backup over another file",
                         hint="Give another file name, or move the old one away first.")


def write_private(path: str | Path, text: str) -> None:
    """Create ``path`` readable and writable by its owner only (0600); never over an existing
    file, never through a symbolic link."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        check_new_file(path)
        raise
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}",
                         hint="Give a path in a folder you can write to.") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


def file_text(backup: Backup) -> str:
    """The backup file's text, as :func:`save` writes it (``rakflash web`` serves it as a download)."""
    return json.dumps(backup.to_file(), indent=2) + "\n"


def save(backup: Backup, path: str | Path) -> None:
    write_private(path, file_text(backup))


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from a file a person names (untrusted: size, type and shape checked)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise UsageError(f"no file {path}", hint=f"Give the {what} file's path.") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}", hint=f"Give the {what} file's path.") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise UsageError(f"{path} is not a regular file", hint=f"Give the {what} file itself.")
        raw = f.read(FILE_MAX + 1)
    try:
        data = json.loads(raw.decode("utf-8")) if len(raw) <= FILE_MAX else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a {what} rakflash wrote", hint=f"Give a {what} file rakflash wrote.")
    return data


def load(path: str | Path) -> Backup:
    """A backup file read back (every value checked against what the setting takes)."""
    data = read_json(path, "keys backup")
    bad = UsageError(f"{path} is not a keys backup rakflash can use", hint="Give a file 'rakflash keys backup' wrote.")
    if data.get("rakflash_keys") != FORMAT or not isinstance(data.get("settings"), dict):
        raise bad
    try:
        module = _catalog.load().module(str(data.get("module")))
    except KeyError:
        raise bad from None
    values = {}
    for name, value in data["settings"].items():
        if name not in KEY_NAMES or not well_formed(module, f"AT+{name}=?", value) \
                or (name in rc.AT_BY_NAME and rc.stored_value(name, value) is None):
            raise UsageError(f"{path}: its value for {str(name)[:20]} is not one {module.name} takes",
                             hint="The file is damaged or was edited: use another backup.")
        values[name] = value
    serial = data.get("serial_number")
    return Backup(module, str(data.get("read_via")), str(data.get("read_at")), values,
                  serial_number=serial if isinstance(serial, str) else None,
                  decoded=bool(data.get("decoded")), layout_version=data.get("layout_version"),
                  notes=[n for n in data.get("notes", []) if isinstance(n, str)])


# ------------------------------------------------------------------ restoring

@dataclass
class Restored:
    """What a restore did, by setting name (never a value)."""

    written: list[str] = field(default_factory=list)     # changed, and read back the same
    same: list[str] = field(default_factory=list)        # the module held it already
    failed: list[str] = field(default_factory=list)      # written, but never read back the same

    def to_dict(self) -> dict[str, list[str]]:
        return {"written": self.written, "same": self.same, "failed": self.failed}


def check_same_module(backup: Backup, serial: str | None, dev_eui: str | None, *, force: bool) -> None:
    """Refuse a backup of another module (serial number or DevEUI differ) unless ``force``."""
    differ = []
    if backup.serial_number and serial and backup.serial_number != serial:
        differ.append(f"serial number {backup.serial_number}, this module {serial}")
    if backup.dev_eui and dev_eui and backup.dev_eui.upper() != dev_eui.upper():
        differ.append(f"DevEUI {backup.dev_eui}, this module {dev_eui}")
    if differ and not force:
        raise WrongModule(f"the backup is of another {backup.module.name} ({'; '.join(differ)}): nothing "
                          f"was written", serial_number=serial, dev_eui=dev_eui,
                          hint="If you mean to give this module those keys (a replacement module, or its "
                               "DevEUI was reset), run the same command with --force.")


def restore(link: Link, module: Module, backup: Backup, *, force: bool = False, timeout: float = 0.5,
            emit: Sink = nowhere) -> Restored:
    """Write ``backup`` over AT, each setting that differs, each read back until two reads agree."""
    if module.key != backup.module.key and not (module.same_flash_as(backup.module) and force):
        raise WrongModule(f"the backup is of a {backup.module.name}, and this is a {module.name}: nothing "
                          f"was written", hint="Restore it on the module it was read from.")
    if not backup.decoded or not backup.settings:
        raise KeysNotDecoded(f"the backup holds no keys rakflash can write over AT "
                             f"({'; '.join(backup.notes) or 'it holds raw bytes only'})",
                             hint="Keep the file: its raw bytes are what the module held.")
    _queries(module)
    console = AtConsole(link, module.dialect)
    serial_q = module.dialect.get("serial_number")
    serial = read_value(console, module, serial_q, timeout) if serial_q else None
    dev_eui = read_value(console, module, "AT+DEVEUI=?", timeout)
    check_same_module(backup, serial, dev_eui, force=force)
    emit(Phase("settings-write", f"writing {module.name}'s keys and settings back, each read back"))
    done = Restored()
    for name in KEY_NAMES:
        if name not in backup.settings:
            continue
        value, query = backup.settings[name], f"AT+{name}=?"
        if read_value(console, module, query, timeout) == value:
            done.same.append(name)
            continue
        for _ in range(3):
            console.command(f"AT+{name}={value}", timeout)
            if read_value(console, module, query, timeout) == value:
                done.written.append(name)
                break
        else:
            done.failed.append(name)
    if done.failed:
        raise KeysNotWritten(f"{module.name}: {', '.join(done.failed)} did not read back the same way twice "
                             f"after it was written" + (f" ({', '.join(done.written)} did)" if done.written else ""),
                             hint="Check the cable and run the same command again: it writes what still differs.",
                             restored=done.to_dict())
    return done
