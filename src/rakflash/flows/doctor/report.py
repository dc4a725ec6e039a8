"""What doctor reports: a :class:`Finding` per diagnosis, and the :class:`Report` of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..identify import DeviceInfo
from .observe import BUDGET

LEVELS = ("ok", "note", "action", "problem")   # "problem": something stands in the way (non-zero exit)


@dataclass
class Finding:
    """One diagnosis: what doctor found, why it matters, and what to do next."""

    code: str              # a short machine name, e.g. "port-busy"
    level: str             # one of LEVELS
    finding: str
    why: str
    next: str              # what to do, in words
    command: str | None = None     # the exact command to type next, if there is one
    port: str | None = None
    exit_code: int = 0     # for a "problem": the exit code of its kind (4 port, 5 device, 6 plan, 3 image)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "code": self.code, "level": self.level, "finding": self.finding,
                "why": self.why, "next": self.next, "command": self.command, **self.details}


@dataclass
class Report:
    """Everything one ``doctor`` run found."""

    findings: list[Finding]
    devices: list[DeviceInfo]
    seconds: float
    budget: float = BUDGET

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "problem"]

    @property
    def exit_code(self) -> int:
        return self.problems[0].exit_code if self.problems else 0

    def to_dict(self) -> dict[str, Any]:
        return {"result": "problem" if self.problems else "ok", "exit_code": self.exit_code,
                "seconds": round(self.seconds, 2), "bound_seconds": self.budget,
                "findings": [f.to_dict() for f in self.findings],
                "devices": [d.to_dict() for d in self.devices]}
