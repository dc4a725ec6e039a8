"""Recovery method ``swd``: a full image through a debug probe and pyOCD, for every module.

The steps are :mod:`rakflash.swd_link`'s, in the recovery framework's shape:
the probe is picked in ``reach`` (nothing for the person to time: the probe is
wired, the module powered), the pyOCD session opened in ``connect`` with the
catalog's target and reset type, the image written with sector erase in
``write``, read back in full in ``verify``, the chip reset in ``start``. With a
serial port given, the framework then asks the module what runs; without one
(``--port`` is optional for this method) the result says it was not asked.

pyOCD is the optional extra ``rakflash[swd]``; without it, the first step says
how to get it.
"""

from __future__ import annotations

import time
from typing import Any

from ... import swd_link
from ...catalog import Module
from ...errors import RakflashError, TransferFault
from ...events import Note, Phase
from ...images import ImageInfo
from .base import RecoveryMethod, RecoveryOptions, RecoveryPlan, Session

SWD_HZ = 1_000_000        # pyOCD's default SWD clock (its 'frequency' option)


class SwdMethod(RecoveryMethod):
    name = "swd"
    needs_port = False

    def plan(self, image: ImageInfo, module: Module, options: RecoveryOptions) -> RecoveryPlan:
        sp = swd_link.plan_swd(image.image, module, probe=options.probe, pack=options.pack)
        page = module.mcu.page_size
        erase = [(s.start - s.start % page, -(-s.end // page) * page) for s in image.image.segments]
        steps = sp.steps() + ["identify the module over its AT port, if --port is given, and "
                              "report the versions"]
        guide = [f"Wire the probe to {module.name}'s SWD pads: SWDIO, SWCLK, GND, and the probe's "
                 "VTref to the module's 3.3 V; power the module.",
                 "Nothing to time: rakflash connects, writes, verifies and resets by itself."]
        return RecoveryPlan("swd", module, image, list(image.image.segments), erase, sp.bytes, steps,
                            guide, minimum_seconds(module, sp.bytes, erase), options.baud,
                            notes=list(sp.notes),
                            details={"rate": f"pyOCD's default {SWD_HZ // 1_000_000} MHz SWD clock",
                                     "target": sp.target, "swd_options": dict(sp.options),
                                     "probe": sp.probe, "pack": sp.pack,
                                     "pyocd_command": sp.pyocd_command()})

    def precheck(self, plan: RecoveryPlan) -> None:
        """pyOCD installed, and the target known to it (or a --pack given): no probe asked."""
        swd_link.check_target(swd_link.pyocd_api(), plan.details["target"], plan.details["pack"])

    # -- the steps ---------------------------------------------------------------------
    def reach(self, session: Session) -> None:
        api = swd_link.pyocd_api()
        d = session.plan.details
        swd_link.check_target(api, d["target"], d["pack"])     # a missing pack, before any probe is looked for
        probe = swd_link.choose_probe(api, session.options.probe)
        session.state.update(api=api, probe=probe)
        session.emit(Note(f"using {probe.kind} probe {probe.unique_id}"
                          + (f" ({probe.product})" if probe.product else "")))

    def connect(self, session: Session) -> None:
        api, probe = session.state["api"], session.state["probe"]
        d = session.plan.details
        target_session = swd_link.open_session(api, probe, d["target"], d["swd_options"], pack=d["pack"])
        session.state["session"] = target_session
        session.emit(Phase("connect", f"{d['target']} through {probe.kind} probe {probe.unique_id}",
                           info={"probe": probe.unique_id, "target": d["target"], **d["swd_options"]}))

    def write(self, session: Session) -> None:
        t0 = time.monotonic()
        written = session.written
        written.erase_sent(session.plan.erase)      # pyOCD erases each sector before it programs it
        self._step(session, "writing", lambda api, s: swd_link.write_image(
            api, s, session.plan.image.image, session.emit))
        for seg in session.plan.segments:
            written.acknowledged(seg.start, seg.end)
        session.transfer_seconds = time.monotonic() - t0

    def verify(self, session: Session) -> None:
        t0 = time.monotonic()
        self._step(session, "verifying", lambda api, s: swd_link.verify_segments(
            s.target, session.plan.image.image, session.emit))
        session.verify = "read-back"
        session.verify_seconds = time.monotonic() - t0
        # Every byte was read back: the flash holds the image's bootloader (if it has one).
        session.bootloader_version_after = session.plan.bootloader_version

    # -- memory, for the owner's keys ----------------------------------------------
    def memory_access(self, plan: RecoveryPlan) -> str | None:
        return None             # the probe reads memory, and pyOCD's flash loader writes it

    def read_memory(self, session: Session, address: int, size: int, expect: bytes | None = None) -> bytes:
        """Read through the probe (SWD transfers are acknowledged and parity-checked: one read counts)."""
        return self._step(session, "reading the keys", lambda api, s: swd_link.read_memory(
            api, s, address, size, "reading the keys"))

    def write_memory(self, session: Session, address: int, data: bytes) -> None:
        mcu = session.plan.module.mcu
        if not mcu.flash.start <= address < mcu.flash.end:
            raise TransferFault(
                f"the bytes to write back lie at {address:#010x}, outside the flash (an STM32's data "
                f"EEPROM), which rakflash does not write through a probe",
                hint="The copy read before is kept (see keys_kept_in); write it back through the "
                     "chip's ROM bootloader or with the vendor's tools.", address=address)
        self._step(session, "writing the keys back", lambda api, s: swd_link.write_memory(api, s, address, data))

    def start(self, session: Session) -> None:
        try:
            self._step(session, "resetting", lambda api, s: s.target.reset())
        finally:
            self._close(session)

    def _step(self, session: Session, doing: str, fn) -> Any:
        api, target_session = session.state["api"], session.state["session"]
        try:
            return fn(api, target_session)
        except RakflashError:
            self._close(session)
            raise
        except api.exceptions.Error as exc:
            self._close(session)
            raise swd_link.pyocd_error(api, exc, doing, target=session.plan.details["target"]) from None
        except BaseException:
            self._close(session)
            raise

    def _close(self, session: Session) -> None:
        s = session.state.pop("session", None)
        if s is not None:
            swd_link.close_session(s)


def minimum_seconds(module: Module, size: int, erase: list[tuple[int, int]], *,
                    hz: int = SWD_HZ) -> float:
    """The least time at pyOCD's default SWD clock: every byte written and read back as
    SWD data phases (32 data bits in a 46-bit transfer), plus the datasheet's erase and
    program time for the sectors written."""
    wire = 2 * size / 4 * 46 / hz
    erased = sum(b - a for a, b in erase)
    return wire + module.mcu.erase_seconds(erased) + module.mcu.program_seconds(size)
