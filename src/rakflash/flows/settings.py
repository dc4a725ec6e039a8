"""The owner's LoRaWAN keys and settings: read before an update, checked (and put back) after.

The serial bootloaders erase only the application region, so the keys a
module keeps in its user-data area survive an update. A new firmware can
still lose them itself (a changed storage layout resets them at its first
start). So rakflash reads the settings the catalog names for the module's AT
dialect while the old application still answers, reads them again from the
new one, and writes back any that changed. Only the names of settings appear
in output.

An update can be cut off between the two reads (power, cable, Ctrl-C), and
the re-run then finds the module in its bootloader with nothing to ask. So
the values read are also kept in a file readable only by the user (under
``$XDG_CACHE_HOME/rakflash``, keyed by module and serial number) until a run
has checked them; the re-run takes them from there once the new application
tells its serial number. A check that can't write a setting back leaves the
file, and says where it is, so the owner still has the values.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..at import AtConsole
from ..catalog import Module
from ..link import Link

if TYPE_CHECKING:
    from .identify import DeviceInfo


@dataclass
class SettingsCheck:
    """What happened to the settings across an update."""

    names: list[str] = field(default_factory=list)      # settings compared
    restored: list[str] = field(default_factory=list)   # lost by the new firmware, written back
    lost: list[str] = field(default_factory=list)       # lost and could not be written back
    from_earlier_run: bool = False    # the values came from a run that was cut off
    kept_in: str | None = None        # where the values are, when some could not be written back

    @property
    def kept(self) -> bool:
        return not self.lost

    def to_dict(self) -> dict:
        return {"checked": self.names, "restored": self.restored, "lost": self.lost,
                "from_earlier_run": self.from_earlier_run, "kept_in": self.kept_in}


# ------------------------------------------------------------------ values kept between runs

def _pending_file(module: Module, serial: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rakflash"
    return base / f"settings-{module.key}-{re.sub(r'[^A-Za-z0-9_.-]', '_', serial)}.json"


def keep_until_checked(module: Module, serial: str | None, values: dict[str, str]) -> None:
    """Keep ``values`` on disk (mode 0600) until a run has checked them on this module."""
    if not serial or not values:
        return
    path = _pending_file(module, serial)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"module": module.key, "serial_number": serial, "settings": values}, f)
    except OSError:
        pass      # no cache dir: this run still checks them; only a re-run can't


def kept_from_earlier(module: Module, serial: str | None) -> dict[str, str] | None:
    """Values an earlier, cut-off run kept for this module, if any."""
    if not serial:
        return None
    try:
        data = json.loads(_pending_file(module, serial).read_text())
    except (OSError, ValueError):
        return None
    if data.get("module") != module.key or data.get("serial_number") != serial:
        return None
    return dict(data.get("settings") or {})


def forget_kept(module: Module, serial: str | None) -> None:
    if serial:
        try:
            _pending_file(module, serial).unlink()
        except OSError:
            pass


def settle(link: Link, module: Module, serial: str | None, before: dict[str, str] | None, *,
           timeout: float = 0.5) -> SettingsCheck | None:
    """After an update (or for a module found already up to date): check the settings.

    ``before`` are the values this run read; without them, the values an
    earlier cut-off run kept are used. None when there is nothing to check against.
    """
    earlier = before is None
    if earlier:
        before = kept_from_earlier(module, serial)
        if before is None:
            return None
    check = check_and_restore(link, module, before, timeout=timeout)
    check.from_earlier_run = earlier
    if check.kept:
        forget_kept(module, serial)
    elif serial and _pending_file(module, serial).exists():
        check.kept_in = str(_pending_file(module, serial))
    return check


def settle_earlier(link: Link, device: "DeviceInfo") -> SettingsCheck | None:
    """For a module found already running the new version: finish the check an
    earlier, cut-off run could not (None when there is nothing to check)."""
    module = device.module
    if device.mode != "app" or module is None or not module.dialect.get("settings"):
        return None
    return settle(link, module, device.serial_number, None)


def setting_name(query: str) -> str:
    """``"AT+APPKEY=?"`` → ``"APPKEY"``."""
    return query.split("+", 1)[-1].split("=", 1)[0]


def read_settings(link: Link, module: Module, queries: list[str] | None = None, *,
                  timeout: float = 0.5) -> dict[str, str]:
    """The settings the application reports (query → value); those it can't answer are left out.

    ``queries`` defaults to the ones the catalog names for the module's dialect.
    """
    console = AtConsole(link, module.dialect)
    values = {}
    for query in module.dialect.get("settings", []) if queries is None else queries:
        value = console.value(query, timeout)
        if value is not None:
            values[query] = value
    return values


def check_and_restore(link: Link, module: Module, before: dict[str, str], *,
                      timeout: float = 0.5) -> SettingsCheck:
    """Compare the new application's settings with ``before``; write back the ones that changed."""
    check = SettingsCheck(names=[setting_name(q) for q in before])
    if not before:
        return check
    after = read_settings(link, module, list(before), timeout=timeout)
    console = AtConsole(link, module.dialect)
    for query, value in before.items():
        if after.get(query) == value:
            continue
        name = setting_name(query)
        setter = query[:-1] if query.endswith("?") else query + "="   # "AT+APPKEY=?" → "AT+APPKEY="
        reply = console.command(setter + value, timeout)
        if reply.ok and console.value(query, timeout) == value:
            check.restored.append(name)
        else:
            check.lost.append(name)
    return check
