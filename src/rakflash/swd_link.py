"""The SWD link: a debug probe and pyOCD's Python API — write a full image, read and write Apollo3 INFO0.

What :mod:`rakflash.link` is for the serial port, this module is for a debug probe: the
transport below the flows, with no decisions about the module's state in it. It sits
here, beside ``link.py``, and imports nothing from ``rakflash.flows``, ``rakflash.cli`` or
``rakflash.web``: the recovery method ``swd``, ``rakflash info0``,
``rakflash probes`` and ``--pack`` all use it, none owns it.

The recovery of last resort for every module: a debug probe (RAKDAP1 or another
CMSIS-DAP probe, or a SEGGER J-Link through pyOCD's J-Link support) writes the
vendor's full ``.hex`` — bootloader and application — past any firmware that
stopped listening. The steps:

1. plan: the catalog's pyOCD target and session options (the Apollo3 needs the
   emulated reset the forum fix found), the image's segments, the equivalent
   ``pyocd flash`` command line for ``--dry-run``;
2. connect: pick the probe (by ``--probe``, or the only one attached), open a
   session; pyOCD's own failures become named errors (no probe, probe busy,
   target not responding, target pack missing);
3. write with sector erase only (flash the image does not cover — the owner's
   keys, on the RAK3172 — is kept), verify by reading every byte back, reset.

pyOCD is an optional extra (``pip install 'rakflash[swd]'``): :func:`pyocd_api`
imports it, and everything else talks to it only through :class:`PyOCD`, the
small boundary the tests replace with a fake session (no probe is attached to
the machines that run them).

INFO0 (Apollo3): read as memory at 0x50020000; written with the ROM's INFO0
helpers as RAK's ``jlink-prog-info0.txt`` calls them (erase at 0x08000085,
program from SRAM at 0x08000061, parameters at 0x10000000, data at
0x10001000, the INFO0 key 0xD894E09E).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import apollo3_info0
from .catalog import Module
from .errors import (
    ImageTargetError,
    PackMissing,
    ProbeBusy,
    ProbeError,
    ProbeNotFound,
    RakflashError,
    SwdUnavailable,
    TargetNotResponding,
    TouchesBootloader,
    TransferFault,
    VerifyFailed,
)
from .events import Phase, Progress, Sink, nowhere
from .images import Image
from .link import Deadline

INSTALL = "pip install 'rakflash[swd]'"
VERIFY_CHUNK = 4096


# ------------------------------------------------------------------ the pyOCD boundary

@dataclass(frozen=True)
class ProbeInfo:
    """A debug probe as pyOCD reports it."""

    unique_id: str
    kind: str            # "CMSIS-DAP", "J-Link", "ST-Link", or pyOCD's class name
    vendor: str
    product: str

    def to_dict(self) -> dict[str, str]:
        return {"unique_id": self.unique_id, "kind": self.kind, "vendor": self.vendor,
                "product": self.product}


_KINDS = {"CMSISDAPProbe": "CMSIS-DAP", "JLinkProbe": "J-Link", "StlinkProbe": "ST-Link",
          "PicoprobeProbe": "Picoprobe"}


class PyOCD:
    """The few pyOCD calls rakflash makes. Tests pass a fake with the same methods."""

    def __init__(self) -> None:
        try:
            from pyocd.core import exceptions
            from pyocd.core.helpers import ConnectHelper
            from pyocd.flash.loader import FlashLoader
        except ImportError:
            raise SwdUnavailable("SWD needs pyOCD, which is not installed") from None
        self.exceptions = exceptions
        self._connect = ConnectHelper
        self._loader = FlashLoader

    def probes(self) -> list[Any]:
        return self._connect.get_all_connected_probes(blocking=False, print_wait_message=False)

    def session(self, unique_id: str, target: str, options: dict[str, Any]) -> Any:
        """An unopened pyOCD session for the probe; None when pyOCD finds no such probe."""
        return self._connect.session_with_chosen_probe(
            blocking=False, unique_id=unique_id, target_override=target, auto_open=False,
            options=options)

    def loader(self, session: Any, progress: Callable[[float], None]) -> Any:
        # Sector erase only, and keep what the image does not cover within an erased
        # sector: a chip erase would take the owner's keys and settings with it.
        return self._loader(session, progress=progress, chip_erase="sector", smart_flash=True,
                            keep_unwritten=True)

    def knows_target(self, target: str) -> bool:
        """Built into pyOCD, or provided by an installed CMSIS pack."""
        from pyocd.target import TARGET
        if target in TARGET:
            return True
        try:
            from pyocd.target.pack.pack_target import ManagedPacks
            return any(d.part_number.lower() == target.lower()
                       for d in ManagedPacks.get_installed_targets())
        except Exception:        # no pack cache yet, or cmsis-pack-manager unavailable
            return False


def pyocd_api() -> PyOCD:
    """The real pyOCD boundary, or :class:`SwdUnavailable` with the line that installs it."""
    return PyOCD()


def describe_probe(probe: Any) -> ProbeInfo:
    kind = _KINDS.get(type(probe).__name__, type(probe).__name__)
    return ProbeInfo(str(probe.unique_id), kind, str(getattr(probe, "vendor_name", "") or ""),
                     str(getattr(probe, "product_name", "") or getattr(probe, "description", "")))


def list_probes(api: PyOCD | None = None) -> list[ProbeInfo]:
    """Every debug probe pyOCD can see (CMSIS-DAP such as RAKDAP1, J-Link, ST-Link)."""
    api = api or pyocd_api()
    try:
        return [describe_probe(p) for p in api.probes()]
    except api.exceptions.Error as exc:
        raise pyocd_error(api, exc, "listing probes") from None


# ------------------------------------------------------------------ plan

@dataclass
class SwdPlan:
    """What an SWD write will do, before a probe is touched."""

    module: Module
    target: str
    options: dict[str, Any]
    image: Image
    probe: str | None = None
    pack: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return self.image.size

    def segments(self) -> list[tuple[int, int]]:
        return [(s.start, s.end) for s in self.image.segments]

    def pyocd_command(self) -> str:
        """The ``pyocd flash`` command line that does the same."""
        parts = ["pyocd", "flash", "-t", self.target, "-e", "sector", "-O", "keep_unwritten=true"]
        for key, value in self.options.items():
            parts += ["-O", f"{key}={value}"]
        if self.probe:
            parts += ["-u", self.probe]
        if self.pack:
            parts += ["--pack", _quote(self.pack)]
        parts.append(_quote(self.image.path))
        return " ".join(parts)

    def steps(self) -> list[str]:
        reset = self.options.get("reset_type", "default")
        return [f"connect to {self.module.name} ({self.target}) through "
                f"{('probe ' + self.probe) if self.probe else 'the attached probe'}",
                f"erase the sectors the image covers and write {self.bytes:,} bytes in "
                f"{len(self.image.segments)} segment(s): "
                + ", ".join(f"{a:#010x}-{b:#010x}" for a, b in self.segments()),
                "verify by reading every byte back",
                f"reset the chip (reset type {reset})"]

    def to_dict(self) -> dict[str, Any]:
        return {"method": "swd", "module": self.module.name, "target": self.target,
                "options": dict(self.options), "probe": self.probe, "pack": self.pack,
                "image": self.image.path, "bytes": self.bytes,
                "segments": [{"start": a, "end": b} for a, b in self.segments()],
                "steps": self.steps(), "notes": list(self.notes),
                "pyocd_command": self.pyocd_command()}


def _quote(text: str) -> str:
    import shlex
    return shlex.quote(text)


def plan_swd(image: Image, module: Module, *, probe: str | None = None,
             pack: str | None = None) -> SwdPlan:
    """The catalog's pyOCD target and options for ``module``; every segment must be in its flash."""
    flash = module.mcu.flash
    for s in image.segments:
        if s.start not in flash or s.end > flash.end:
            raise ImageTargetError(
                f"{image.path} has data at {s.start:#010x}-{s.end:#010x}, outside {module.name}'s "
                f"flash ({flash.start:#010x}-{flash.end:#010x})",
                hint=f"Use the full firmware .hex built for {module.name}.")
    if module.has_region("secure-bootloader"):
        sbl = module.region("secure-bootloader")
        if any(s.start < sbl.end and sbl.start < s.end for s in image.segments):
            raise TouchesBootloader(
                f"{image.path} writes {sbl.start:#x}-{sbl.end:#x}, the chip's own secure "
                "bootloader, which rakflash never writes",
                hint=f"Use RAK's {module.name} firmware .hex: it starts at {sbl.end:#x}.")
    options = dict(module.swd_options)
    plan = SwdPlan(module, module.swd_target, options, image, probe=probe, pack=pack)
    if "reset_type" in options:
        plan.notes.append(f"{module.name} resets with reset_type={options['reset_type']} (older "
                          f"pyOCD spells it sw_{options['reset_type']})")
    return plan


# ------------------------------------------------------------------ run

@dataclass
class SwdResult:
    probe: ProbeInfo
    target: str
    bytes: int
    seconds: float
    verified: bool

    def to_dict(self) -> dict[str, Any]:
        return {"probe": self.probe.to_dict(), "target": self.target, "bytes": self.bytes,
                "seconds": round(self.seconds, 3), "verified": self.verified}


def choose_probe(api: PyOCD, wanted: str | None) -> ProbeInfo:
    """The probe to use: the one ``wanted`` names (full or partial unique id), or the only one."""
    probes = list_probes(api)
    if not probes:
        raise ProbeNotFound("no debug probe found (CMSIS-DAP such as RAKDAP1, or J-Link)")
    if wanted:
        match = [p for p in probes if p.unique_id == wanted] or \
            [p for p in probes if wanted.lower() in p.unique_id.lower()]
        if not match:
            raise ProbeNotFound(f"no probe matches {wanted!r} (attached: "
                                f"{', '.join(p.unique_id for p in probes)})",
                                hint="Run 'rakflash probes' and pass one of their ids with --probe.")
        if len(match) > 1:
            raise ProbeError(f"{wanted!r} matches {len(match)} probes: "
                             f"{', '.join(p.unique_id for p in match)}",
                             hint="Pass more of the probe's id with --probe.")
        return match[0]
    if len(probes) > 1:
        raise ProbeError(f"{len(probes)} probes are attached: "
                         f"{', '.join(f'{p.unique_id} ({p.kind})' for p in probes)}",
                         hint="Say which one with --probe ID (see 'rakflash probes').")
    return probes[0]


def check_target(api: PyOCD, target: str, pack: str | None = None) -> None:
    """:class:`PackMissing` (with the ``pyocd pack install`` command) when pyOCD doesn't know
    ``target`` and no ``pack`` file is given. Asks pyOCD only, no probe: called before a
    probe is looked for, so a missing pack is named with or without one attached."""
    if not pack and not api.knows_target(target):
        raise _pack_missing(target)


def open_session(api: PyOCD, probe: ProbeInfo, target: str, options: dict[str, Any], *,
                 pack: str | None = None) -> Any:
    """An open pyOCD session on ``probe`` for ``target``; pyOCD's failures as named errors."""
    opts = dict(options)
    if pack:
        opts["pack"] = pack
    check_target(api, target, pack)
    try:
        session = api.session(probe.unique_id, target, opts)
        if session is None:
            raise ProbeNotFound(f"probe {probe.unique_id} went away before rakflash could open it")
        session.open()
    except RakflashError:
        raise
    except api.exceptions.Error as exc:
        raise pyocd_error(api, exc, "connecting", target=target) from None
    except Exception as exc:      # USB stacks raise their own (usb.core.USBError, OSError)
        raise _usb_error(probe, exc) from None
    return session


def close_session(session: Any) -> None:
    try:
        session.close()
    except Exception:             # closing a vanished probe must not hide the real error
        pass


@contextmanager
def connected(api: PyOCD, probe: ProbeInfo, target: str, options: dict[str, Any], *,
              pack: str | None = None, doing: str = "writing") -> Iterator[Any]:
    """:func:`open_session` for a ``with`` block, closed however it ends; pyOCD's failures
    inside the block become named errors too (saying they happened while ``doing``)."""
    session = open_session(api, probe, target, options, pack=pack)
    try:
        yield session
    except RakflashError:
        raise
    except api.exceptions.Error as exc:
        raise pyocd_error(api, exc, doing, target=target) from None
    finally:
        close_session(session)


def read_memory(api: PyOCD, session: Any, address: int, size: int, doing: str = "reading") -> bytes:
    """``size`` bytes at ``address``, read through the probe (flash, or an STM32L0/L1's data
    EEPROM, as memory). A read the chip refuses — read-out protection on an STM32 answers a
    debugger's flash reads with a bus fault — is a named :class:`TransferFault` saying so."""
    try:
        return bytes(session.target.read_memory_block8(address, size))
    except api.exceptions.TransferFaultError as exc:
        raise TransferFault(
            f"the chip refused the probe's read of {address:#010x} while {doing} ({exc}): an STM32 "
            f"with read-out protection on answers every read of its flash so",
            hint="Nothing was changed. Removing read-out protection erases the whole chip, keys "
                 "included, so they can't be read first: if the application still answers, read them "
                 "over AT ('rakflash keys backup FILE --port PORT').", address=address) from None


def write_memory(api: PyOCD, session: Any, address: int, data: bytes) -> None:
    """Program ``data`` at ``address`` with pyOCD's flash loader: sector erase, keeping what
    ``data`` does not cover in the sectors it touches (the same loader the image is written with)."""
    loader = api.loader(session, lambda fraction: None)
    loader.add_data(address, data)
    loader.commit()


def write_image(api: PyOCD, session: Any, image: Image, emit: Sink = nowhere) -> None:
    """Erase the sectors ``image`` covers and program it (``erase`` / ``write`` phases)."""
    total = image.size
    phase = ["erase"]
    last = [0.0]
    emit(Phase("erase", "erasing the sectors the image covers", {"bytes": total}))

    def progress(fraction: float) -> None:
        if fraction < last[0] and phase[0] == "erase":    # pyOCD starts programming from 0
            phase[0] = "write"
            emit(Phase("write", f"writing {total:,} bytes", {"bytes": total}))
        last[0] = fraction
        emit(Progress(int(total * min(max(fraction, 0.0), 1.0)), total, phase[0]))

    loader = api.loader(session, progress)
    for seg in image.segments:
        loader.add_data(seg.start, seg.data)
    loader.commit()
    if phase[0] == "erase":
        emit(Phase("write", f"writing {total:,} bytes", {"bytes": total}))
    emit(Progress(total, total, "write"))


def run_swd(plan: SwdPlan, *, api: PyOCD | None = None, emit: Sink = nowhere,
            verify: bool = True) -> SwdResult:
    """Connect, write (sector erase), verify by reading back, reset."""
    api = api or pyocd_api()
    t0 = time.monotonic()
    check_target(api, plan.target, plan.pack)        # before any probe is looked for
    probe = choose_probe(api, plan.probe)
    emit(Phase("connect", f"connecting to {plan.target} through {probe.kind} probe {probe.unique_id}",
               {"probe": probe.unique_id, "target": plan.target, **plan.options}))
    with connected(api, probe, plan.target, plan.options, pack=plan.pack) as session:
        write_image(api, session, plan.image, emit)
        if verify:
            emit(Phase("verify", "reading every byte back", {"bytes": plan.bytes}))
            verify_segments(session.target, plan.image, emit)
        emit(Phase("start", f"resetting {plan.module.name}",
                   {"reset_type": plan.options.get("reset_type", "default")}))
        session.target.reset()
    return SwdResult(probe, plan.target, plan.bytes, time.monotonic() - t0, verify)


def verify_segments(target: Any, image: Image, emit: Sink = nowhere) -> None:
    done, total = 0, image.size
    for seg in image.segments:
        for off in range(0, seg.size, VERIFY_CHUNK):
            want = seg.data[off:off + VERIFY_CHUNK]
            got = bytes(target.read_memory_block8(seg.start + off, len(want)))
            if got != want:
                bad = next(i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b)
                raise VerifyFailed(
                    f"read-back differs from the image at {seg.start + off + bad:#010x} "
                    f"(wrote {want[bad]:#04x}, read {got[bad]:#04x})",
                    hint="The flash did not take the image (write-protected, or a failing chip): "
                         "run the same command again; if it fails at the same address, the "
                         "region is protected.")
            done += len(want)
            emit(Progress(done, total, "verify"))


# ------------------------------------------------------------------ Apollo3 INFO0

INFO0_PARAMS = 0x10000000
INFO0_DATA = 0x10001000
INFO0_MSP = 0x10000100
ROM_ERASE_INFO = 0x08000085            # flash_info_erase_from_sram (Thumb address)
ROM_PROGRAM_INFO = 0x08000061          # flash_program_info_area_from_sram (Thumb address)


def read_info0(api: PyOCD, probe: ProbeInfo, module: Module) -> bytes:
    """The 8 KiB of INFO0, read over SWD."""
    with connected(api, probe, module.swd_target, dict(module.swd_options)) as session:
        return bytes(session.target.read_memory_block8(apollo3_info0.BASE, apollo3_info0.SIZE))


def write_info0(api: PyOCD, probe: ProbeInfo, module: Module, new: bytes, *,
                emit: Sink = nowhere, timeout: float = 2.0) -> None:
    """Erase INFO0 and program ``new`` with the ROM's helpers, then read it back."""
    if len(new) != apollo3_info0.SIZE:
        raise ValueError("INFO0 is 8 KiB")
    key = apollo3_info0.PROGRAM_KEY
    with connected(api, probe, module.swd_target, dict(module.swd_options)) as session:
        t = session.target
        t.halt()
        emit(Phase("erase", "erasing INFO0 with the ROM helper", {}))
        _rom_call(t, ROM_ERASE_INFO, [0, key, 0xFFFFFFFF], result_at=INFO0_PARAMS + 8,
                  timeout=timeout, what="erasing INFO0")
        emit(Phase("write", "programming INFO0 with the ROM helper", {"bytes": len(new)}))
        t.write_memory_block8(INFO0_DATA, list(new))
        _rom_call(t, ROM_PROGRAM_INFO, [0, 0, len(new) // 4, key, 0xFFFFFFFF],
                  result_at=INFO0_PARAMS + 16, timeout=timeout, what="programming INFO0")
        emit(Phase("verify", "reading INFO0 back", {"bytes": len(new)}))
        got = bytes(t.read_memory_block8(apollo3_info0.BASE, apollo3_info0.SIZE))
        if got != new:
            bad = next(i for i, (a, b) in enumerate(zip(got, new, strict=False)) if a != b)
            raise VerifyFailed(f"INFO0 reads back differently at offset {bad:#06x}",
                               hint="INFO0 may not be programmable again on this chip (see "
                                    "'rakflash info0 show'); the old values may be partly gone: "
                                    "write the file again before resetting the chip.")
        emit(Phase("start", "resetting the chip", {}))
        t.reset()


def _rom_call(target: Any, entry: int, params: list[int], *, result_at: int, timeout: float,
              what: str) -> None:
    """Run a ROM helper the way RAK's J-Link script does: parameters in SRAM, MSP and PC
    set, go; the helper writes its result word where the parameters end."""
    target.write_memory_block32(INFO0_PARAMS, params)
    target.write_core_register("msp", INFO0_MSP)
    target.write_core_register("pc", entry & ~1)
    target.write_core_register("xpsr", 1 << 24)          # Thumb state
    target.resume()
    deadline = Deadline(timeout)
    result = 0xFFFFFFFF
    while not deadline.expired:
        time.sleep(0.01)
        result = target.read32(result_at)
        if result != 0xFFFFFFFF:
            break
    target.halt()
    if result != 0:
        raise TransferFault(
            f"the ROM helper failed {what} (result {result:#010x}"
            + (", no answer within the deadline" if result == 0xFFFFFFFF else "") + ")",
            hint="INFO0 may be locked against erasing or programming (see 'rakflash info0 show'); "
                 "nothing else was changed.")


# ------------------------------------------------------------------ pyOCD's failures, named

def pack_devices(path: str) -> list[str]:
    """The device names a CMSIS pack describes (its ``.pdsc``'s ``<device Dname="…">``; pyOCD's
    target names are these, lowercased). A CMSIS pack is a zip archive with one ``.pdsc``
    description at its top (CMSIS-Pack specification, "Pack Description (*.pdsc) Format").
    Raises ``ValueError`` saying why a file is not one."""
    import re
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            pdsc = [n for n in z.namelist() if n.lower().endswith(".pdsc")]
            if not pdsc:
                raise ValueError("a zip archive without a .pdsc description")
            text = z.read(pdsc[0]).decode("utf-8", "replace")
    except zipfile.BadZipFile:
        raise ValueError("not a zip archive") from None
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    return re.findall(r'<device\b[^>]*\bDname="([^"]+)"', text)


def _pack_missing(target: str) -> PackMissing:
    return PackMissing(
        f"pyOCD does not know the target {target}: its CMSIS device pack is not installed",
        hint=f"Install it once with 'pyocd pack install {target}' (this downloads the vendor's "
             "pack, so it needs the internet). On a machine without internet, download the "
             ".pack file elsewhere and pass it with --pack FILE.", target=target)


def pyocd_error(api: PyOCD, exc: Exception, doing: str, *, target: str | None = None) -> RakflashError:
    """The named rakflash error for one of pyOCD's exceptions."""
    e = api.exceptions
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    if isinstance(exc, e.TargetSupportError):
        return _pack_missing(target or "?")
    if isinstance(exc, e.TransferFaultError):
        return TransferFault(f"a memory access faulted while {doing}: {text}",
                             hint="The flash may be write- or read-protected, or the image covers "
                                  "memory that isn't flash: check the image and run again.")
    if isinstance(exc, e.FlashFailure):
        return TransferFault(f"the flash algorithm failed while {doing}: {text}",
                             hint="Run the same command again; if it fails at the same place, the "
                                  "flash may be protected or worn.")
    if isinstance(exc, e.ProbeDisconnected):
        return ProbeNotFound(f"the probe went away while {doing}: {text}",
                             hint="Check the probe's USB cable and run the same command again.")
    if isinstance(exc, (e.TransferError, e.TimeoutError)):
        return TargetNotResponding(f"the chip does not answer the probe ({doing}): {text}")
    if isinstance(exc, e.ProbeError):
        if any(w in low for w in ("busy", "in use", "access denied", "already open", "claim",
                                  "unable to open")):
            return ProbeBusy(f"the probe can't be opened, probably in use by another program: {text}",
                             hint="Close the other program using the probe (another pyocd, a "
                                  "debugger, an IDE); on Linux, check that pyOCD's udev rules give "
                                  "you access to it.")
        return ProbeError(f"the probe failed while {doing}: {text}")
    return ProbeError(f"pyOCD failed while {doing}: {text}")


def _usb_error(probe: ProbeInfo, exc: Exception) -> RakflashError:
    text = str(exc).strip() or type(exc).__name__
    if any(w in text.lower() for w in ("busy", "resource", "access denied", "permission")):
        return ProbeBusy(f"probe {probe.unique_id} can't be opened: {text}",
                         hint="Close the other program using the probe; on Linux without pyOCD's "
                              "udev rules, a permission error looks like this too.")
    return ProbeError(f"probe {probe.unique_id} can't be opened: {text}")
