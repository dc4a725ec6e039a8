"""Settings as files, like WisToolBox templates: ``rakflash settings save|apply``.

A settings file holds what makes a module behave the way a deployment wants — band,
class, join mode, ADR, data rate, confirmed uplinks and retries, TX power, the join and
RX delays, … — and nothing that identifies one module (no DevEUI, no key), so one file
fits a whole batch. Saving reads each setting *consistently* (the same well-formed answer
twice: :func:`settings.read_value`); applying writes only what differs, in an order the
firmware takes (the band first: RUI3 resets region-bound values when it changes), and
checks each by reading it back. A value the module refuses (``AT_PARAM_ERROR``, say a
data rate its band doesn't have) is :class:`SettingRefused`, by name and value.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..at import AtConsole
from ..catalog import Module
from ..errors import NotProvisionable, UsageError, VerifyFailed
from ..events import Phase, Sink, nowhere
from ..link import Link
from .keys import now_iso, read_json
from .settings import read_settings, read_value, setting_name, well_formed

FORMAT = 1
# RUI3 AT settings a settings file holds, in the order they are applied.
NAMES = ("BAND", "NJM", "CLASS", "ADR", "DR", "CFM", "RETY", "TXP", "PNM", "JN1DL", "JN2DL",
         "RX1DL", "RX2DL", "RX2DR", "LINKCHECK")
TRIES = 3


class SettingRefused(VerifyFailed):
    """The module answered a setting's value with an error word: it does not take that value."""
    name = "setting-refused"
    hint = ("Check the value against the module's band (a data rate or TX power that band doesn't "
            "have), correct it in the settings file, and run the same command again: what was "
            "applied before it stays.")


class SettingNotApplied(VerifyFailed):
    """A setting was written but never read back the same way twice."""
    name = "setting-not-applied"
    hint = "Check the cable and run the same command again: it writes what still differs."


@dataclass
class SettingsFile:
    settings: dict[str, str]
    saved_at: str
    saved_from: dict[str, Any] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def to_file(self) -> dict[str, Any]:
        return {"rakflash_settings": FORMAT, "saved_at": self.saved_at, "saved_from": self.saved_from,
                "settings": self.settings, "unreadable": self.unreadable}


def _rui3(module: Module) -> None:
    if module.dialect.key != "rui3":
        raise NotProvisionable(f"{module.name}'s firmware (RUI v3) has none of the RUI3 AT settings a "
                               f"settings file holds", hint="Settings files are for RUI3 modules (RAK3172, "
                               "RAK11720, RAK4631-R and their kin).")


def read(link: Link, module: Module, *, serial_number: str | None = None, firmware: str | None = None,
         timeout: float = 0.5, emit: Sink = nowhere) -> SettingsFile:
    """Every setting of :data:`NAMES` the module gives consistently."""
    _rui3(module)
    emit(Phase("settings", f"reading {module.name}'s settings"))
    reading = read_settings(link, module, [f"AT+{name}=?" for name in NAMES], timeout=timeout)
    return SettingsFile({setting_name(query): value.upper() for query, value in reading.values.items()},
                        now_iso(), {"module": module.key, "serial_number": serial_number, "firmware": firmware},
                        reading.unreadable)


def file_text(got: SettingsFile) -> str:
    """The settings file's text, as :func:`save` writes it (``rakflash web`` serves it as a download)."""
    return json.dumps(got.to_file(), indent=2) + "\n"


def save(got: SettingsFile, path: str | Path) -> None:
    """Write the file (replaced whole: a template is meant to be saved again)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(file_text(got))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(path: str | Path, module: Module | None = None) -> dict[str, str]:
    """The settings in a file (untrusted: every name one of :data:`NAMES`, every value well-formed)."""
    return parse(read_json(path, "settings file"), path, module)


def parse(data: dict[str, Any], source: str | Path, module: Module | None = None) -> dict[str, str]:
    """The settings in a settings file's object (read from ``source``: a path, or what the page
    uploaded), checked as :func:`load` checks a file."""
    path = source
    settings = data.get("settings")
    if data.get("rakflash_settings") != FORMAT or not isinstance(settings, dict) or not settings:
        raise UsageError(f"{path} is not a settings file rakflash can use",
                         hint="Give a file 'rakflash settings save' wrote.")
    from .. import catalog as _catalog
    check = module or _catalog.load().module("rak3172")      # the RUI3 AT set's formats
    out = {}
    for name, value in settings.items():
        if name not in NAMES:
            raise UsageError(f"{path}: {str(name)[:20]!r} is not a setting a settings file holds "
                             f"({', '.join(NAMES)})", hint="Correct the file (keys go in 'rakflash keys' backups).")
        if not well_formed(check, f"AT+{name}=?", value):
            raise UsageError(f"{path}: {value!r} is not a value of {name}", hint="Correct the file.")
        out[name] = str(value).upper()
    return out


@dataclass
class Applied:
    changed: list[str] = field(default_factory=list)   # written and read back
    same: list[str] = field(default_factory=list)      # the module held it already

    def to_dict(self) -> dict[str, list[str]]:
        return {"changed": self.changed, "same": self.same}


def apply(link: Link, module: Module, wanted: dict[str, str], *, timeout: float = 0.5,
          emit: Sink = nowhere) -> Applied:
    """Write what differs, each read back; :class:`SettingRefused` names a value the module refuses."""
    _rui3(module)
    emit(Phase("settings-write", f"applying settings to {module.name}, each read back"))
    console = AtConsole(link, module.dialect)
    done = Applied()
    for name in NAMES:
        if name not in wanted:
            continue
        value, query = wanted[name], f"AT+{name}=?"
        if (read_value(console, module, query, timeout) or "").upper() == value:
            done.same.append(name)
            continue
        refusals: list[str] = []
        for _ in range(TRIES):
            reply = console.command(f"AT+{name}={value}", timeout)
            if reply.status == "error":
                refusals.append(reply.error or "error")
            if (read_value(console, module, query, timeout) or "").upper() == value:
                done.changed.append(name)
                break
        else:
            so_far = f" ({', '.join(done.changed)} applied before it)" if done.changed else ""
            if len(refusals) == TRIES and len(set(refusals)) == 1:
                raise SettingRefused(f"{module.name} refused AT+{name}={value}: it answered {refusals[0]}"
                                     f"{so_far}", setting=name, value=value, answer=refusals[0],
                                     changed=done.changed, same=done.same)
            raise SettingNotApplied(f"{module.name}: {name} did not read back as {value} after it was written"
                                    f"{so_far}", setting=name, value=value, changed=done.changed, same=done.same)
    return done
