"""YMODEM-1K after ``at+update`` (RAK3172, RAK811, RAK4270): the RUI bootloader's ST-IAP-style receiver."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from ...errors import TransferTimeout
from ...events import Sink
from ...link import Deadline, Link
from ...protocols import ymodem
from .base import Reporter, guarded, restart_markers

if TYPE_CHECKING:
    from ...catalog import Module
    from ..plan import Plan


def timeouts(plan: Plan, baud: int) -> dict:
    """Deadlines from the link and the MCU's datasheet, with generous margins.

    Block 0's ACK waits for the erase of the whole application region; a data
    block's ACK for its line time plus programming; 1 s of slack for USB and
    scheduling on top of both.
    """
    mcu, app = plan.module.mcu, plan.module.app
    erase = mcu.erase_seconds(app.size)
    size = block_size(plan.module, baud) or 128
    block = (size + 5) * 10 / baud + mcu.program_seconds(size)
    return {"erase_timeout": 2 * erase + 2.0, "ack_timeout": 3 * block + 1.0,
            "start_timeout": 3.0, "restart_markers": restart_markers(plan), "byte_time": 10 / baud,
            "st_iap": plan.module.receiver == "st-iap", "block_size": size}


def block_size(module: Module, baud: int) -> int | None:
    """1024-byte blocks where the bootloader's receiver gets a whole one within its wait at
    ``baud``, else 128; None when not even those make it (see :func:`ymodem.block_size_for`)."""
    return ymodem.block_size_for(baud, module.receiver_timeout)


class YmodemTransfer:
    name = "ymodem"

    def steps(self, plan: Plan) -> list[str]:
        baud = plan.device.baud
        size = block_size(plan.module, baud) or 128
        what = "YMODEM-1K" if size == 1024 else (
            f"YMODEM with 128-byte blocks (at {baud} baud a 1 KiB block takes "
            f"{ymodem.block_line_seconds(1024, baud):.2f} s on the wire, more than the bootloader's "
            f"{plan.module.receiver_timeout:g} s wait for it)")
        return [f"at+update, then {what}: {len(plan.payload):,} bytes to {plan.address:#010x} "
                f"(the bootloader erases the application region first)"]

    def refusal(self, module: Module, baud: int) -> str | None:
        """Why no update can work at ``baud`` (even a 128-byte block is too slow), or None."""
        if block_size(module, baud) is not None:
            return None
        return (f"at {baud} baud even a 128-byte YMODEM block takes "
                f"{ymodem.block_line_seconds(128, baud):.2f} s on the wire, longer than "
                f"{module.name}'s bootloader waits for it ({module.receiver_timeout:g} s): no update "
                f"can get through at this rate")

    def minimum_seconds(self, module: Module, size: int, baud: int, latency: float) -> float:
        mcu = module.mcu
        bt = 10 / baud
        bsize = block_size(module, baud) or 128
        blocks = math.ceil(size / bsize)
        wire = (133 + blocks * (bsize + 5) + 1 + 133) * bt   # block 0, data, EOT, closing block
        replies = (2 + blocks + 1 + 2 + 1) * bt               # ACK+C, ACKs, ACK(+C), ACK
        turns = (blocks + 3) * 2 * latency
        erase = mcu.erase_seconds(module.app.size)            # block 0 erases the whole region
        return wire + replies + turns + erase + mcu.program_seconds(size)

    reports_phases = True    # erase (block 0's wait), then write: the update flow leaves them to send()

    def send(self, link: Link, plan: Plan, emit: Sink) -> None:
        report = Reporter(link, emit, len(plan.payload))
        report.enter("erase", "erasing: the bootloader erases the application region when it gets the "
                              "file header")
        start(link, plan)
        sender = ymodem.YmodemSender(link, progress=report.progress, on_retry=report.retry,
                                     on_started=lambda: report.enter("write"),
                                     **timeouts(plan, link.baud))
        guarded(link, lambda: sender.send(plan.name, plan.payload, started=True), abort=ymodem.ABORT)


def start(link: Link, plan: Plan, *, tries: int = 3, timeout: float = 3.0) -> None:
    """``at+update`` until the receiver asks for the file with its first ``C``.

    ``at+update`` answers nothing; a console that answers ``AT not support.`` got
    the command damaged on the line (the receiver didn't start): send it again.
    """
    d = plan.module.boot_dialect
    refused = d["unsupported"].encode()
    for _ in range(tries):
        t0 = time.monotonic()
        link.write_line(d["update"])
        deadline = Deadline(timeout)
        seen = bytearray()
        while not deadline.expired:
            seen += link.read(64, min(0.05, deadline.remaining()))
            if bytes([ymodem.CRC_REQUEST]) in seen:
                link.step(f"{d['update']} → 'C', the receiver asks for the file ({time.monotonic() - t0:.2f} s)")
                return
            if refused in seen:
                link.step(f"{d['update']} → {d['unsupported']!r} ({time.monotonic() - t0:.2f} s)")
                break
        else:
            link.step(f"{d['update']} → no answer ({time.monotonic() - t0:.2f} s)")
            break               # silence: no use repeating a command that went unanswered
    raise TransferTimeout("the bootloader never asked for the file (no 'C' after "
                          f"{d['update']})",
                          hint="Run the same command again; the module stays in its bootloader.",
                          offset=0)


TRANSFER = YmodemTransfer()
