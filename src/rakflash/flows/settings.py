"""The owner's LoRaWAN keys and settings: read before an update, checked (and put back) after.

The serial bootloaders erase only the application region, so the keys a
module keeps in its user-data area survive an update. A new firmware can
still lose them itself (a changed storage layout resets them at its first
start). So rakflash reads the settings the catalog names for the module's AT
dialect while the old application still answers, reads them again from the
new one, and writes back any that changed. The values stay in memory; only
the names of settings appear in output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..at import AtConsole
from ..catalog import Module
from ..link import Link


@dataclass
class SettingsCheck:
    """What happened to the settings across an update."""

    names: list[str] = field(default_factory=list)      # settings compared
    restored: list[str] = field(default_factory=list)   # lost by the new firmware, written back
    lost: list[str] = field(default_factory=list)       # lost and could not be written back

    @property
    def kept(self) -> bool:
        return not self.lost

    def to_dict(self) -> dict:
        return {"checked": self.names, "restored": self.restored, "lost": self.lost}


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
        value = _query(console, query, timeout)
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
        if reply.ok and _query(console, query, timeout) == value:
            check.restored.append(name)
        else:
            check.lost.append(name)
    return check


def _query(console: AtConsole, query: str, timeout: float) -> str | None:
    reply = console.command(query, timeout)
    return reply.value if reply.ok else None
