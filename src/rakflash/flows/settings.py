"""The owner's LoRaWAN keys and settings: read before an update, checked (and put back) after.

The serial bootloaders erase only the application region, so the keys a
module keeps in its user-data area survive an update. A new firmware can
still lose them itself (a changed storage layout resets them at its first
start). So rakflash reads the settings the catalog names for the module's AT
dialect while the old application still answers, reads them again from the
new one, and writes back any that changed. Only the names of settings appear
in output.

A value is trusted only when it was read *consistently*: the same answer
twice, and well-formed for its setting (the catalog's ``setting_format``:
16 hex digits for an EUI, …). One damaged byte on the line must never become
the owner's key. A setting that can't be read that way "could not be checked"
and is never written.

An update can be cut off between the two reads (power, cable, Ctrl-C), and
the re-run then finds the module in its bootloader with nothing to ask. So
the values read are also kept in a file readable only by the user (under
``$XDG_CACHE_HOME/rakflash``, keyed by module, serial number and DevEUI) until a
run has checked them; the re-run takes them from there once the new application
tells its serial number and DevEUI. Two modules may share a serial number (a
batch with blank or copied ones, virtual modules): the DevEUI keeps one's values
from ever being offered to the other. A file kept for the same module and serial
number but another DevEUI is named in a warning, never used: it may be another
module's, or this one's if its new firmware reset the DevEUI too. A check that
can't write a setting back leaves the file, and says where it is, so the owner
still has the values. The file is untrusted input: a damaged one is set aside
(renamed, never deleted) with a warning, and the run goes on without it.

A module caught in its bootloader after a reset (its firmware floods the port)
had no application to ask before the update: :func:`read_in_start_up_window`
starts the application again and reads the settings in its quiet start-up
window, then brings it back into the bootloader.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..at import AtConsole
from ..catalog import Module
from ..events import Note, Sink, Warning, nowhere
from ..link import Deadline, Link

if TYPE_CHECKING:
    from .identify import DeviceInfo


READS = 6          # answers asked for at most, to find one that comes twice (2 on a clean line)
WRITES = 3         # tries at writing a setting back (each checked by a consistent read)
KEPT_FILE_MAX = 64 * 1024    # a kept-settings file is a few hundred bytes; more is not ours


@dataclass
class Reading:
    """Settings read from an application: the trusted values, and the names that weren't."""

    values: dict[str, str] = field(default_factory=dict)   # query → value, read consistently
    unreadable: list[str] = field(default_factory=list)    # names that could not be
    serial_number: str | None = None   # when read along (in a start-up window)
    from_earlier_run: bool = False     # values an earlier, cut-off run kept took precedence


@dataclass
class SettingsCheck:
    """What happened to the settings across an update.

    A setting is *checked* only when its value after the update is known: read back
    consistently (kept, or written back and confirmed), or read consistently as another
    value that could not be written back (lost). One whose value after the update
    rakflash can't tell may have changed, and is never counted as checked.
    """

    names: list[str] = field(default_factory=list)      # every setting this run was to check
    restored: list[str] = field(default_factory=list)   # lost by the new firmware, written back
    lost: list[str] = field(default_factory=list)       # lost and could not be written back
    unchecked: list[str] = field(default_factory=list)  # not read consistently before: left alone
    unconfirmed: list[str] = field(default_factory=list)  # read before; after the update never read
    #                                                       back consistently: written back, unconfirmed
    from_earlier_run: bool = False    # the values came from a run that was cut off
    kept_in: str | None = None        # where the values are, when some could not be written back

    @property
    def may_have_changed(self) -> list[str]:
        """The settings whose value after the update can't be confirmed."""
        return [n for n in self.names if n in self.unchecked or n in self.unconfirmed]

    @property
    def checked(self) -> list[str]:
        """The settings whose value after the update is known (kept, restored or lost)."""
        unknown = self.may_have_changed
        return [n for n in self.names if n not in unknown]

    @property
    def kept(self) -> bool | None:
        """True when every setting was checked and is there; False when one was lost;
        None when some could not be confirmed (and none was lost)."""
        if self.lost:
            return False
        return None if self.may_have_changed else True

    def to_dict(self) -> dict:
        return {"checked": self.checked, "restored": self.restored, "lost": self.lost,
                "unchecked": self.may_have_changed, "from_earlier_run": self.from_earlier_run,
                "kept_in": self.kept_in}


# ------------------------------------------------------------------ what a value looks like

def setting_name(query: str) -> str:
    """``"AT+APPKEY=?"`` → ``"APPKEY"``."""
    return query.split("+", 1)[-1].split("=", 1)[0]


_ANY_VALUE = re.compile(r"[!-~](?:[ -~]{0,62}[!-~])?")   # printable ASCII, 1-64 characters


def dev_eui_of(values: dict[str, str]) -> str | None:
    """The DevEUI among settings values read consistently (an identifier, not a secret:
    a report may carry it; the AppKey never leaves these values)."""
    return next((v for q, v in values.items() if setting_name(q).upper() == "DEVEUI"), None)


def well_formed(module: Module, query: str, value: object) -> bool:
    """Whether ``value`` looks like a value of the setting ``query`` asks for (the catalog's
    ``setting_format``; printable ASCII of at most 64 characters where it names none)."""
    if not isinstance(value, str):
        return False
    pattern = (module.dialect.get("setting_format") or {}).get(setting_name(query))
    regex = re.compile(pattern) if pattern else _ANY_VALUE
    return regex.fullmatch(value) is not None and value.isascii()


def _query_ok(module: Module, query: object) -> bool:
    return isinstance(query, str) and query in module.dialect.get("settings", [])


# ------------------------------------------------------------------ values kept between runs

class KeptFileDamaged(Exception):
    """The kept-settings file is not what rakflash writes (see :func:`kept_from_earlier`)."""


def _kept_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rakflash"


def _file_part(text: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]', '_', text)[:64]


def _pending_file(module: Module, serial: str, dev_eui: str | None = None) -> Path:
    """``settings-MODULE-SERIAL-DEVEUI.json`` (without ``-DEVEUI`` when it is not known)."""
    tail = f"-{_file_part(dev_eui.upper())}" if dev_eui else ""
    return _kept_dir() / f"settings-{module.key}-{_file_part(serial)}{tail}.json"


def dev_eui_query(module: Module) -> str | None:
    """The query of the module's DevEUI among the settings it keeps, if it has one."""
    return next((q for q in module.dialect.get("settings", []) if setting_name(q).upper() == "DEVEUI"), None)


def keep_until_checked(module: Module, serial: str | None, values: dict[str, str]) -> None:
    """Keep ``values`` on disk (mode 0600) until a run has checked them on this module
    (keyed by module, serial number and the DevEUI among ``values``)."""
    if not serial or not values:
        return
    dev_eui = dev_eui_of(values)
    path = _pending_file(module, serial, dev_eui)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK,
                     0o600)
        with os.fdopen(fd, "w") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return      # not a file we can keep values in; this run still checks them
            json.dump({"module": module.key, "serial_number": serial, "dev_eui": dev_eui,
                       "settings": values}, f)
    except OSError:
        pass      # no cache dir: this run still checks them; only a re-run can't


def kept_from_earlier(module: Module, serial: str | None,
                      dev_eui: str | None = None) -> dict[str, str] | None:
    """Values an earlier, cut-off run kept for this module (module, serial number and
    DevEUI ``dev_eui``: None when it could not be read), if any.

    The file is read as untrusted input: anything but an object of this module
    and serial number holding well-formed values of the catalog's settings
    raises :class:`KeptFileDamaged` (see :func:`set_aside`). A file of another
    module, serial number or DevEUI (a renamed copy) is not this module's: None.
    """
    if not serial:
        return None
    path = _pending_file(module, serial, dev_eui)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeptFileDamaged(f"it can't be opened ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise KeptFileDamaged("it is not a regular file")
        raw = f.read(KEPT_FILE_MAX + 1)
    if len(raw) > KEPT_FILE_MAX:
        raise KeptFileDamaged(f"it is larger than {KEPT_FILE_MAX:,} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise KeptFileDamaged("it is not valid JSON") from None
    if not isinstance(data, dict):
        raise KeptFileDamaged("it holds no JSON object")
    if data.get("module") != module.key or data.get("serial_number") != serial:
        return None
    values = data.get("settings")
    if not isinstance(values, dict) or not values:
        raise KeptFileDamaged("its 'settings' is not a list of values")
    for query, value in values.items():
        if not _query_ok(module, query):
            raise KeptFileDamaged(f"it names a setting {query[:40]!r} that {module.name} does not have")
        if not well_formed(module, query, value):
            raise KeptFileDamaged(f"its value for {setting_name(query)} is not a well-formed one")
    # Kept before files named the DevEUI: the DevEUI among its values says whose they are.
    kept_for = data.get("dev_eui") if "dev_eui" in data else dev_eui_of(values)
    if not _same_eui(kept_for, dev_eui):
        return None
    return dict(values)


def _same_eui(a: object, b: str | None) -> bool:
    return (a.upper() if isinstance(a, str) else a) == (b.upper() if b else None)


def kept_for_others(module: Module, serial: str | None, dev_eui: str | None) -> list[tuple[Path, str | None]]:
    """Files an earlier run kept for ``module`` and ``serial`` under another DevEUI than
    ``dev_eui``: (path, the DevEUI they were kept for). Named, never used."""
    if not serial:
        return []
    found = []
    try:
        paths = sorted(_kept_dir().glob(f"settings-{module.key}-{_file_part(serial)}*.json"))
    except OSError:
        return []
    for path in paths:
        if path == _pending_file(module, serial, dev_eui):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)   # a FIFO must not block
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    continue
                data = json.loads(f.read(KEPT_FILE_MAX).decode("utf-8"))
            values = data.get("settings")
            kept_for = data.get("dev_eui") if "dev_eui" in data else dev_eui_of(values)
        except (OSError, UnicodeDecodeError, ValueError, RecursionError, AttributeError, TypeError):
            continue
        if data.get("module") == module.key and data.get("serial_number") == serial \
                and not _same_eui(kept_for, dev_eui):
            found.append((path, kept_for if isinstance(kept_for, str) else None))
    return found


def warn_kept_for_others(module: Module, serial: str | None, dev_eui: str | None, emit: Sink) -> None:
    """A ``settings-kept-for-another`` warning for each file :func:`kept_for_others` finds."""
    for path, kept_for in kept_for_others(module, serial, dev_eui):
        emit(Warning("settings-kept-for-another",
                     f"an earlier, interrupted run kept the keys and settings of a {module.name} with "
                     f"serial number {serial} and DevEUI {kept_for or 'unknown'} in {path}; "
                     + (f"this module answers DevEUI {dev_eui}" if dev_eui else
                        "this module's DevEUI could not be read")
                     + f", so rakflash does not use them. If this is "
                     f"that module and its new firmware reset its DevEUI, set its settings again from "
                     f"that file ({_setters(module, [setting_name(q) for q in module.dialect.get('settings', [])])})",
                     {"path": str(path), "dev_eui": kept_for}))


def set_aside(module: Module, serial: str, why: str, emit: Sink, dev_eui: str | None = None) -> None:
    """Rename a damaged kept-settings file (never delete it: it may still hold the owner's
    keys) and say so with a ``settings-file-damaged`` warning."""
    path = _pending_file(module, serial, dev_eui)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        os.rename(path, aside)
        where = f"it was set aside as {aside}"
    except OSError as exc:
        where = f"it could not be set aside ({exc.strerror or exc}): move it away by hand"
    emit(Warning("settings-file-damaged",
                 f"the file in which an earlier run kept {module.name}'s keys and settings, {path}, "
                 f"is damaged ({why}); {where}, and this run goes on without it",
                 {"path": str(path), "set_aside_as": str(aside)}))


def _earlier_or_warn(module: Module, serial: str | None, emit: Sink,
                     dev_eui: str | None = None) -> dict[str, str] | None:
    try:
        values = kept_from_earlier(module, serial, dev_eui)
    except KeptFileDamaged as exc:
        set_aside(module, serial or "", str(exc), emit, dev_eui)
        return None
    if values is None:
        warn_kept_for_others(module, serial, dev_eui, emit)
    return values


def forget_kept(module: Module, serial: str | None, dev_eui: str | None = None) -> None:
    if serial:
        try:
            _pending_file(module, serial, dev_eui).unlink()
        except OSError:
            pass


# ------------------------------------------------------------------ reading and writing

def read_value(console: AtConsole, module: Module, query: str, timeout: float, *,
               reads: int = READS, stop_when_silent: bool = False) -> str | None:
    """``query``'s value, when it reads the same twice and is well-formed; else None.

    At most ``reads`` answers are asked for. Two independent line errors
    that damage one answer the same way are vanishingly unlikely; one damaged
    byte is not. ``stop_when_silent``: a query nothing answers ends the reading
    at once (a module that may not be listening is not waited for ``reads`` times).
    """
    seen: list[str] = []
    for _ in range(reads):
        value = console.value(query, timeout)
        if value is None and stop_when_silent:
            return None
        if value is None or not well_formed(module, query, value):
            continue
        if value in seen:
            return value
        seen.append(value)
    return None


def read_settings(link: Link, module: Module, queries: list[str] | None = None, *,
                  timeout: float = 0.5) -> Reading:
    """The settings the application reports, each read consistently (see :func:`read_value`).

    ``queries`` defaults to the ones the catalog names for the module's dialect.
    """
    console = AtConsole(link, module.dialect)
    reading = Reading()
    for query in module.dialect.get("settings", []) if queries is None else queries:
        value = read_value(console, module, query, timeout)
        if value is None:
            reading.unreadable.append(setting_name(query))
        else:
            reading.values[query] = value
    return reading


def write_value(console: AtConsole, module: Module, query: str, value: str, timeout: float) -> bool:
    """Write ``value`` with the setting's setter; True once it reads back consistently."""
    setter = query[:-1] if query.endswith("?") else query + "="   # "AT+APPKEY=?" → "AT+APPKEY="
    for _ in range(WRITES):
        console.command(setter + value, timeout)
        # The reply may be damaged on its way back; what counts is what reads back.
        if read_value(console, module, query, timeout) == value:
            return True
    return False


def check_and_restore(link: Link, module: Module, before: dict[str, str], *,
                      timeout: float = 0.5) -> SettingsCheck:
    """Compare the new application's settings with ``before``; write back the ones that changed.

    Only values read consistently belong in ``before``; a value the new
    application does not give consistently is written back too (it is known).
    Whether a write-back took is known only from a consistent read: a setting
    that never reads back so is *unconfirmed* — lost only when it was read
    consistently as another value.
    """
    check = SettingsCheck(names=[setting_name(q) for q in before])
    console = AtConsole(link, module.dialect)
    for query, value in before.items():
        after = read_value(console, module, query, timeout)
        if after == value:
            continue
        name = setting_name(query)
        if write_value(console, module, query, value, timeout):
            if after is not None:
                check.restored.append(name)   # it had changed; now it is back
            # (else the new value could not be read consistently: it is written and
            # confirmed now, but whether the firmware had changed it is unknown)
        elif after is not None:
            check.lost.append(name)           # it had changed, and no write-back read back
        else:
            check.unconfirmed.append(name)    # never read consistently after: written, unconfirmed
    return check


def settle(link: Link, module: Module, serial: str | None, before: Reading | None, *,
           emit: Sink = nowhere, timeout: float = 0.5) -> SettingsCheck | None:
    """After an update (or for a module found already up to date): check the settings.

    ``before`` are the values this run read; without them, the values an
    earlier cut-off run kept are used. None when there is nothing to check
    against. Warnings (a damaged kept file, settings that could not be
    checked or were lost) go to ``emit``.
    """
    earlier = before is None
    if before is None:
        # Whose values were kept is told by the DevEUI as well as the serial number.
        query = dev_eui_query(module)
        dev_eui = (read_value(AtConsole(link, module.dialect), module, query, timeout)
                   if query and serial else None)
        values = _earlier_or_warn(module, serial, emit, dev_eui)
        if values is None:
            return None
        before = Reading(values, from_earlier_run=True)
    dev_eui = dev_eui_of(before.values)
    check = check_and_restore(link, module, before.values, timeout=timeout)
    check.unchecked = [n for n in before.unreadable if n not in check.names]
    check.names += check.unchecked
    check.from_earlier_run = earlier or before.from_earlier_run
    if not check.lost and not check.unconfirmed:
        forget_kept(module, serial, dev_eui)
    elif serial and _pending_file(module, serial, dev_eui).exists():
        check.kept_in = str(_pending_file(module, serial, dev_eui))
    warn_about(check, module, emit)
    return check


def settle_earlier(link: Link, device: DeviceInfo, *, emit: Sink = nowhere) -> SettingsCheck | None:
    """For a module found already running the new version: finish the check an
    earlier, cut-off run could not (None when there is nothing to check)."""
    module = device.module
    if device.mode != "app" or module is None or not module.dialect.get("settings"):
        return None
    return settle(link, module, device.serial_number, None, emit=emit)


def before_update(link: Link, module: Module, serial: str | None, queries: list[str], *,
                  emit: Sink = nowhere, reading: Reading | None = None, timeout: float = 0.5) -> Reading:
    """Read the settings before an update (or take ``reading``) and keep them until checked.

    Values an earlier, cut-off run kept for this module win over what the
    application reports now: that run may have been cut off after the new
    firmware started and reset them, so what answers now may be the reset values.
    """
    if reading is None:
        reading = read_settings(link, module, queries, timeout=timeout)
        # The serial number names the file the values are kept in until checked: read it
        # consistently too, or a damaged one would hide them from the re-run.
        query = module.dialect.get("serial_number")
        if query:
            reading.serial_number = read_value(AtConsole(link, module.dialect), module, query, timeout)
    serial = reading.serial_number or serial
    earlier = _earlier_or_warn(module, serial, emit, dev_eui_of(reading.values))
    if earlier:
        names = [setting_name(q) for q in earlier]
        emit(Note(f"using the values of {', '.join(names)} that an earlier, interrupted run kept "
                  f"(the firmware it wrote may have reset them)"))
        reading.values.update(earlier)
        reading.unreadable = [n for n in reading.unreadable if n not in names]
        reading.from_earlier_run = True
    keep_until_checked(module, serial, reading.values)
    return reading


# ------------------------------------------------------------------ saying it

def _setters(module: Module, names: list[str]) -> str:
    return ", ".join(f"AT+{n}=<value>" for n in names)


def warn_about(check: SettingsCheck, module: Module, emit: Sink) -> None:
    """Warnings a person and a script can't miss: settings lost, or not checked."""
    if check.lost:
        where = (f" The values from before the update are in {check.kept_in} (readable only by you)."
                 if check.kept_in else "")
        emit(Warning("settings-lost",
                     f"the new firmware lost {', '.join(check.lost)} and rakflash could not write them "
                     f"back: set them again with {_setters(module, check.lost)}.{where}",
                     {"settings": check.lost, "kept_in": check.kept_in}))
    if check.unconfirmed:
        where = (f" The values from before the update are in {check.kept_in} (readable only by you)."
                 if check.kept_in else "")
        one = len(check.unconfirmed) == 1
        it, they, s_ = ("it", "it", "s") if one else ("them", "they", "")
        emit(Warning("settings-unconfirmed",
                     f"{', '.join(check.unconfirmed)} may have changed: after the update {module.name} "
                     f"never gave the same well-formed answer twice, so rakflash wrote back the "
                     f"value{'' if one else 's'} from before but could not confirm {it}. Check {it} now "
                     f"({', '.join(f'AT+{n}=?' for n in check.unconfirmed)}) and, if {they} "
                     f"differ{s_}, set {it} again with {_setters(module, check.unconfirmed)}"
                     + (f"; running the same command again checks {it} again" if check.kept_in else "")
                     + f".{where}",
                     {"settings": check.unconfirmed, "kept_in": check.kept_in}))
    if check.unchecked:
        emit(Warning("settings-unchecked",
                     f"{', '.join(check.unchecked)} could not be checked and may have changed: "
                     f"{module.name} never gave the "
                     f"same well-formed answer twice before the update, so rakflash left "
                     f"{'it' if len(check.unchecked) == 1 else 'them'} alone. Check "
                     f"{'it' if len(check.unchecked) == 1 else 'them'} now ("
                     f"{', '.join(f'AT+{n}=?' for n in check.unchecked)}) and, if the new firmware "
                     f"reset {'it' if len(check.unchecked) == 1 else 'them'}, set "
                     f"{'it' if len(check.unchecked) == 1 else 'them'} again with "
                     f"{_setters(module, check.unchecked)}.",
                     {"settings": check.unchecked}))


def warn_unread(module: Module, why: str, emit: Sink) -> None:
    """The settings could not be read before the update and nothing was kept from an earlier run."""
    names = [setting_name(q) for q in module.dialect.get("settings", [])]
    emit(Warning("settings-unread",
                 f"{module.name}'s keys and settings ({', '.join(names)}) could not be read before the "
                 f"update ({why}), and no earlier run kept them, so rakflash can't tell whether the "
                 f"new firmware kept them. Check them now ({', '.join(f'AT+{n}=?' for n in names)}); "
                 f"if the new firmware reset them, set them again with {_setters(module, names)}.",
                 {"settings": names}))


# ------------------------------------------------------------------ the start-up window

class WindowTooShort(Exception):
    """The application started flooding before the settings were read and it heard the boot command."""


def read_in_start_up_window(link: Link, module: Module, *, timeout: float = 0.3) -> Reading | None:
    """For a module caught in its bootloader because its firmware floods the port.

    Starts the application again (``at+run``: a fresh start, so a fresh quiet
    start-up window), reads the settings (and the serial number, which names
    the kept-settings file) consistently as soon as it answers, and sends it
    back into its bootloader with the boot command. Returns the reading, or
    None when there is no application to start (the module stays in its
    bootloader). Raises :class:`WindowTooShort` when the flood began before the
    boot command got through: the module runs its flooding application again
    and must be caught after another reset.
    """
    from . import boot
    if not boot.leave_bootloader(link, module):
        return None
    d = module.dialect
    console = AtConsole(link, d)
    deadline = Deadline(3.0)
    while not deadline.expired:            # the application answers as soon as it runs
        if console.command(d["probe"], 0.05).ok:
            break
    else:
        raise WindowTooShort("it did not answer AT after it was started")
    reading = read_settings(link, module, timeout=timeout)
    if d.get("serial_number"):
        reading.serial_number = read_value(console, module, d["serial_number"], timeout)
    if boot.request_boot(link, module, timeout=1.0):
        return reading
    raise WindowTooShort(f"it started printing before {d['boot'][0]} got through")
