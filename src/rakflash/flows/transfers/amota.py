"""AMOTA packets after ``at+update`` (RAK11720): the Apollo3 OTA blob, HEADER / DATA / VERIFY / RESET."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from ...errors import BootEntryFailed, DeviceRejected
from ...events import Sink
from ...link import Deadline, Link
from ...protocols import amota
from .base import Reporter, guarded, restart_markers

if TYPE_CHECKING:
    from ...catalog import Module
    from ..plan import Plan


def timeouts(plan: Plan, baud: int) -> dict:
    """Reply deadlines: a packet's line time plus programming (or erase for HEADER), with slack.

    A DATA reply gets its own, shorter deadline: it is what a lost reply costs.
    """
    mcu = plan.module.mcu
    packet = (7 + 512 + 8) * 10 / baud + mcu.program_seconds(512)
    erase = mcu.erase_seconds(len(plan.payload))
    return {"reply_timeout": 3 * packet + 2 * erase + 1.0, "data_timeout": 3 * packet + 0.5,
            "verify_timeout": 10.0, "restart_markers": restart_markers(plan)}


class AmotaTransfer:
    name = "amota"

    def steps(self, plan: Plan) -> list[str]:
        return [f"at+update, then AMOTA packets: 48-byte header + {len(plan.payload):,} bytes"]

    def minimum_seconds(self, module: Module, size: int, baud: int, latency: float) -> float:
        mcu = module.mcu
        bt = 10 / baud
        packets = math.ceil(size / 512)
        wire = (3 + 48 + 4 + size + packets * 7 + 7 + 7) * bt
        replies = (8 + packets * 8 + 4 + 4) * bt
        turns = (packets + 3) * 2 * latency
        erase = mcu.erase_seconds(size)                       # HEADER erases what the image needs
        return wire + replies + turns + erase + mcu.program_seconds(size)

    reports_phases = True    # erase (HEADER), write, verify: the update flow leaves them to send()

    def send(self, link: Link, plan: Plan, emit: Sink) -> None:
        report = Reporter(link, emit, len(plan.payload))
        report.enter("erase", "erasing: the bootloader erases the pages the image needs when it gets "
                              "the header")
        start(link, plan)
        sender = amota.AmotaSender(link, progress=report.progress, on_retry=report.retry,
                                   on_phase=report.enter, **timeouts(plan, link.baud))
        try:
            guarded(link, lambda: sender.send(plan.blob), abort=amota.ABORT)
        except DeviceRejected as exc:
            if exc.details.get("status") == amota.WRITE_ERROR:   # name the probe command for this module
                exc.hint += f" (a full image, FULL.hex): {plan.module.recovery_advice()}"
            raise


def start(link: Link, plan: Plan) -> None:
    """``at+update``, confirmed by the bootloader's own answer before the first packet."""
    d = plan.module.boot_dialect
    t0 = time.monotonic()
    link.write_line(d["update"])
    assert plan.module.update_reply is not None     # (the catalog names it for every AMOTA module)
    started = plan.module.update_reply.encode()
    refused = d["unsupported"].encode()
    deadline = Deadline(3.0)
    while not deadline.expired:
        line = link.read_line(deadline.remaining())
        if line is None:
            break
        line = line.strip()
        if line == started or (line != refused and _damaged_copy(line, started)):
            # (A damaged copy: the answer, damaged on its way back: the bootloader runs its
            # packet loop now — a console that didn't would say 'AT not support.' — and the
            # HEADER exchange shows it either way.)
            link.step(f"{d['update']} → {line.decode('latin-1')!r} ({time.monotonic() - t0:.2f} s)")
            return
    link.step(f"{d['update']} → no {plan.module.update_reply!r} ({time.monotonic() - t0:.2f} s)")
    raise BootEntryFailed(f"the bootloader did not start the upgrade (no {plan.module.update_reply!r} "
                          f"after {d['update']})",
                          hint="Run the same command again; the module stays in its bootloader.")


TRANSFER = AmotaTransfer()


def _damaged_copy(line: bytes, expected: bytes) -> bool:
    """``line`` is ``expected`` with at most two bytes changed, or one lost or added."""
    if abs(len(line) - len(expected)) > 1:
        return False
    if len(line) == len(expected):
        return sum(a != b for a, b in zip(line, expected, strict=False)) <= 2
    short, long_ = sorted((line, expected), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))
