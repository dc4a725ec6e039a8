"""Running doctor: examine each port (side by side, each within its time bound), apply the
rule book to what was seen, and make the findings agree with each other in one :class:`Report`."""

from __future__ import annotations

import os
import platform
import shlex
import threading
import time
from typing import Callable

from ... import images
from ...catalog import Module
from ...errors import AlreadyUpToDate, RakflashError
from ...ports import PortEntry, list_serial_ports
from ...trace import TraceWriter
from ..discovery import module_ports
from .commands import FIRMWARE, PACKAGE, placeholder
from .esp import rules_for
from .observe import BUDGET, Observation, examine
from .report import Finding, Report
from .rules import RULES


def findings_for(o: Observation) -> list[Finding]:
    """Every rule's finding for ``o``, problems first (each tagged with its port)."""
    found = []
    for r in rules_for(o, RULES):      # an ESP chip's findings replace the AT modules' (esp.py)
        f = r(o)
        if f is not None:
            f.port = f.port or o.port
            found.append(f)
    e = o.plan_error
    if e is not None and not isinstance(e, AlreadyUpToDate) and o.image_path:
        _refusal_outranks(found, o.image_path, e.name,
                          (o.device.module if o.device is not None else None) or o.module)
    order = {"problem": 0, "action": 1, "ok": 2, "note": 3}
    return sorted(found, key=lambda f: order[f.level])


def _refusal_outranks(found: list[Finding], image_path: str, refusal: str,
                      module: Module | None = None) -> None:
    """Findings must not contradict each other: when ``flash`` would refuse the ``--for`` file
    (``refusal``: the refusing finding's code — a plan refusal, or the image's own error), no
    other finding may advise flashing it. Such a finding keeps what it found, points at the
    refusal (whose next step is the way on), and its command takes any other firmware."""
    if module is not None:
        other = placeholder(module)
    else:
        other = PACKAGE if image_path.lower().endswith(".zip") else FIRMWARE
    for f in found:
        if f.code == refusal or not _flashes(f.command, image_path):
            continue
        f.command = " ".join(shlex.quote(other if w == image_path else w)
                             for w in shlex.split(f.command or ""))
        f.next = (f"{f.next.rstrip(' :')}, but not with {os.path.basename(image_path)}: flash refuses it "
                  f"(the '{refusal}' finding says why, and its next step is the way on). With a "
                  f"firmware this module takes:")


def _flashes(command: str | None, image_path: str) -> bool:
    """Whether ``command`` is ``rakflash flash`` of ``image_path``."""
    try:
        words = shlex.split(command or "")
    except ValueError:
        return False
    return words[:2] == ["rakflash", "flash"] and image_path in words[2:]


def diagnose(port: str | None = None, *, image_path: str | None = None, module: Module | None = None,
             baud: int | None = None, budget: float = BUDGET, trace: TraceWriter | None = None,
             trace_for: Callable[[str], TraceWriter | None] | None = None,
             listing: list[PortEntry] | None = None) -> Report:
    """Examine ``port`` (or every port that may be a module) and apply the rules.

    Bounded: each port gets ``budget`` seconds, and ports are examined side by side.
    ``trace`` records the exchange (one port); ``trace_for(port)`` gives each port its own.
    """
    t0 = time.monotonic()
    listing = list_serial_ports() if listing is None else listing
    image, image_error = None, None
    if image_path is not None:
        try:
            image = images.load(image_path, module=module)
        except RakflashError as exc:
            image_error = exc
    findings: list[Finding] = []
    if image_error is not None:
        # The image's own finding only: the port rules have their observations below.
        findings += [f for f in findings_for(Observation(None, listing=listing, image_path=image_path,
                                                         image_error=image_error))
                     if f.code == image_error.name]
    ports = [port] if port is not None else [e.device for e in module_ports(listing)]
    if not ports:
        from ...usb_devices import present
        system = platform.system()
        findings += findings_for(Observation(None, listing=listing, image_path=image_path, system=system,
                                             usb_present=present(system)))
        return Report(findings, [], time.monotonic() - t0, budget)
    seen: dict[str, Observation] = {}
    traces = {p: trace_for(p) for p in ports} if trace_for is not None else {}   # opened here, not in a thread

    def look(p: str) -> None:
        seen[p] = examine(p, listing=listing, module=module, baud=baud, image=image,
                          image_path=image_path, budget=budget, trace=traces.get(p, trace))

    threads = [threading.Thread(target=look, args=(p,), daemon=True, name=f"doctor {p}") for p in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(budget + 5)
    for p in ports:
        if p in seen:
            findings += findings_for(seen[p])
    if image_error is not None and image_path:
        _refusal_outranks(findings, image_path, image_error.name)
    devices = [o.device for o in (seen[p] for p in ports if p in seen) if o.device is not None]
    return Report(findings, devices, time.monotonic() - t0, budget)
