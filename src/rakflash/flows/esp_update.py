"""An ESP32 module's update (RAK3112, RAK3212, RAK3312, RAK11200), through esptool's Python API.

What rakflash keeps around esptool's ``write_flash`` (the chip's side — download mode, asking
it, leaving it — is :mod:`rakflash.flows.esp_chip`):

1. **identify** — enter download mode and ask the chip (:func:`~rakflash.flows.esp_chip.read_chip`);
2. **plan and refuse** before writing (:func:`make_plan`): an image built for another chip (its
   header's chip id), for another chip revision, larger than the flash or than its app
   partition, a partition table that doesn't fit the flash, a damaged image, the same bytes
   already there (the chip's MD5);
3. **write** with esptool's ``write_flash`` (its stub, compressed), progress from esptool's own
   progress reports as rakflash events;
4. **verify** by the MD5 the chip computes over each region written (esptool asks for it after
   writing; rakflash keeps the chip's answer and compares it with the image's);
5. **start** the new firmware (esptool's hard reset, or the person releases GPIO0 and resets)
   and read the app's version from its boot log.

:func:`run` is a flash session's whole run for such a module (``FlashSession.run`` hands it over:
even identifying the chip goes through its ROM); :func:`examine` is doctor's look.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from .. import esp_image
from ..catalog import Module
from ..errors import (
    Aborted,
    AlreadyUpToDate,
    ImageFormatError,
    ImageTargetError,
    ImageTooLarge,
    NotFirmware,
    PartitionTableInvalid,
    RakflashError,
    VerifyFailed,
    WrongTarget,
)
from ..events import DeviceFound, Phase, PlanReady, Sink, Warning, nowhere
from ..images import Image, ImageInfo, analyse
from ..link import Link
from . import esp_chip
from .esp_chip import (
    BOOT_LOG_WAIT,
    FLASH_BAUD,
    PERSON_WINDOW,
    ROM_BAUD,
    Chip,
    chip_module,
    connect,
    device_fields,
    esptool_on,
    fatal,
    hear_the_app,
    leave,
    leave_quietly,
    port_module,
    read_chip,
    reset_kind,
)
from .identify import DeviceInfo
from .transfers.esp_rom import TRANSFER
from .update import UpdateResult

# ------------------------------------------------------------------ the plan

@dataclass
class EspPlan:
    """What an ESP write will do (the :class:`~rakflash.flows.plan.Plan` shape, for the renderers)."""

    module: Module
    image: ImageInfo                 # its esp part: the file's images and partition table
    device: DeviceInfo
    chip: Chip
    parts: list[tuple[int, bytes]]   # (flash offset, bytes) to write
    baud: int
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    app_version: str | None = None
    force: bool = False

    @property
    def payload(self) -> bytes:
        return b"".join(d for _, d in self.parts)

    @property
    def address(self) -> int:
        return self.parts[0][0]

    @property
    def protocol(self) -> str:
        return "esptool"

    @property
    def name(self) -> str:
        return self.image.image.path.replace("\\", "/").rsplit("/", 1)[-1]

    def estimate_seconds(self, baud: int | None = None, latency: float = 0.002) -> float:
        return TRANSFER.minimum_seconds(self.module, self.payload, baud or self.baud, latency)

    def to_dict(self, baud: int | None = None) -> dict:
        d = self.device
        return {"port": d.port, "mode": d.mode, "image": self.image.image.path, "module": self.module.name,
                "protocol": "esptool", "address": self.address, "bytes": len(self.payload),
                "name": self.name, "app_version_before": d.app_version, "app_version_new": self.app_version,
                "bootloader_version": d.bootloader_version,
                "estimated_seconds": round(self.estimate_seconds(baud), 2), "baud": baud or self.baud,
                "steps": self.steps, "notes": self.notes, "warnings": self.warnings,
                "chip": self.chip.name, "mac": self.chip.mac, "flash_size": self.chip.flash_size,
                "parts": [{"address": a, "bytes": len(b)} for a, b in self.parts]}


def make_plan(image, chip: Chip, device: DeviceInfo, module: Module, *, baud: int,
              force: bool = False) -> EspPlan:
    """Check the image against the chip before anything is written; the parts to write."""
    try:
        info = analyse(image, module=module)
    except NotFirmware:
        raise
    except ImageTargetError as exc:
        raise WrongTarget(exc.message, hint=exc.hint, **exc.details) from None
    esp: esp_image.EspFile = image.esp
    file = info.image.path
    if esp.chip_id is not None and esp.chip_id >= 0 and esp.chip_id != chip.chip_id:
        raise WrongTarget(f"{file} is built for the {esp.chip} (its image header says chip id "
                          f"{esp.chip_id}), but the chip on {device.port} is an {chip.name}",
                          hint=f"Use the firmware built for the {module.name} ({chip.name}). Nothing "
                               f"was written.", chip_id=esp.chip_id)
    damaged = [p for o, i in esp.images for p in i.problems()]
    if damaged:
        raise ImageFormatError(f"{file}: {damaged[0]}",
                               hint="Download or build the firmware again and compare its SHA-256. "
                                    "Nothing was written.")
    for _offset, img in esp.images:
        top = img.max_rev_full if img.max_rev_full not in (0, 0xFFFF) else None
        if img.max_rev_full and (chip.revision < img.min_rev_full or (top is not None and chip.revision > top)):
            wanted = (f"v{img.min_rev_full // 100}.{img.min_rev_full % 100}"
                      + (f" to v{top // 100}.{top % 100}" if top is not None else " or later"))
            raise WrongTarget(f"the {img.kind} in {file} needs chip revision {wanted}; this "
                              f"{chip.name} is revision v{chip.revision // 100}.{chip.revision % 100}",
                              hint="Use a build for this chip revision. Nothing was written.")
    flash = chip.flash_size or module.mcu.flash.size
    parts: list[tuple[int, bytes]] = [(s.start, s.data) for s in image.segments]
    notes: list[str] = []
    warnings: list[str] = []
    if esp.kind == "app":
        # A lone app goes where the chip's own partition table puts its app: that table decides
        # what the bootloader starts.
        table = chip.table
        slot = table.first_app() if table else None
        if table is None or slot is None or esp.app is None:
            raise PartitionTableInvalid(
                f"{file} is an app alone, and the {chip.name} on {device.port} has "
                f"{'no partition table' if table is None else 'no app partition in its partition table'}, "
                f"so nothing would start it",
                hint=f"Write the merged binary (bootloader, partition table and app: 'esptool "
                     f"merge-bin', or your build's *.merged.bin) with 'rakflash flash MERGED.bin --port "
                     f"{device.port}'. Nothing was written.")
        if image.segments[0].start != slot.offset and info.image.base_source != "--address":
            notes.append(f"the app goes to {slot.offset:#x}, the chip's {slot.label!r} partition "
                         f"(its partition table says so)")
            parts = [(slot.offset, image.segments[0].data)]
        target = next((p for p in table.apps if p.offset == parts[0][0]), None)
        if target is None:
            raise PartitionTableInvalid(
                f"{parts[0][0]:#x} is the start of no app partition of the chip's partition table "
                f"({', '.join(f'{p.label} at {p.offset:#x}' for p in table.apps)})",
                hint="Leave out --address: rakflash puts an app in the chip's first app partition. "
                     "Nothing was written.")
        app_len = esp.app.length
        if app_len > target.size:
            raise ImageTooLarge(f"{file}'s app is {app_len:,} bytes; the chip's {target.label!r} partition "
                                f"holds {target.size:,}", image_bytes=app_len, region_bytes=target.size,
                                hint="Build it smaller, or write a merged binary with a partition table "
                                     "that gives the app more room. Nothing was written.")
        for p in chip.table_problems:
            warnings.append(f"the chip's partition table: {p}")
        if any(p.subtype_name == "ota" for p in table.partitions):
            notes.append("the partition table has OTA data: the bootloader starts the slot it names, "
                         "which after an over-the-air update may be another one")
    if esp.table is not None:
        problems = esp.table[1].problems(flash)
        if problems:
            raise PartitionTableInvalid(f"{file}'s partition table can't work on this {chip.name} "
                                        f"({chip.flash_size_text} of flash): {problems[0]}")
    for offset, data in parts:
        if offset + len(data) > flash:
            raise ImageTooLarge(f"{file} reaches {offset + len(data):#x} ({offset:#x} + {len(data):,} "
                                f"bytes), past the {chip.flash_size_text} of flash on {device.port}",
                                image_bytes=offset + len(data), region_bytes=flash,
                                hint=f"Use the firmware built for the {module.name} "
                                     f"({module.mcu.flash.size >> 20} MB flash). Nothing was written.")
    file_problems = [p for p in esp.problems(flash) if "partition table" not in p]
    if file_problems:
        raise PartitionTableInvalid(f"{file}: {file_problems[0]}")
    if esp.bootloader is not None:
        notes.append("this rewrites the second-stage bootloader: the chip's ROM stays, so an "
                      "interrupted write is finished by running the same command again")
    for _o, img in esp.images:
        size = (img.flash_size_freq & 0xF0)
        header_mb = int(esp_image.FLASH_SIZES.get(size, "0MB")[:-2])
        if img.kind == "bootloader" and chip.flash_size and header_mb and (header_mb << 20) > chip.flash_size:
            warnings.append(f"the bootloader's header says {header_mb} MB of flash; the chip has "
                            f"{chip.flash_size_text}")
    if module.unconfirmed_note:
        notes.append(module.unconfirmed_note)
    plan = EspPlan(module, info, device, chip, parts, baud, notes=notes, warnings=warnings,
                   app_version=info.app_version, force=force)
    plan.steps = TRANSFER.steps(plan)
    return plan


def _same_bytes(esp, plan: EspPlan) -> bool:
    """Whether every part is already on the chip, byte for byte (the chip's MD5 says)."""
    app = plan.chip.app or {}
    new = plan.image.esp.app if plan.image.esp is not None else None
    if new is not None and new.app_desc and app.get("app_elf_sha256") != new.app_desc.get("app_elf_sha256"):
        return False              # another build: no need to ask the chip
    for offset, data in plan.parts:
        if esp.flash_md5sum(offset, len(data)) != hashlib.md5(data).hexdigest():
            return False
    return True


def examine(link: Link, module: Module | None = None, *, image: Image | None = None,
            emit: Sink = nowhere, window: float = PERSON_WINDOW
            ) -> tuple[DeviceInfo, EspPlan | None, RakflashError | None]:
    """What the chip is (:func:`~rakflash.flows.esp_chip.ask`) and — given ``image`` — the plan
    ``flash`` would make for it, or its refusal (doctor's ``--for``). Nothing is written."""
    from esptool.util import FatalError
    found: dict[str, Any] = {"plan": None, "refusal": None}

    def with_the_chip(conn: esp_chip.Connection, chip: Chip, named: Module | None,
                      fields: dict[str, Any]) -> None:
        if image is None or named is None:
            return
        try:
            plan = make_plan(image, chip, DeviceInfo(**fields), named, baud=link.baud)
            if _same_bytes(conn.esp, plan):
                found["refusal"] = AlreadyUpToDate(
                    f"{named.name} already holds exactly these bytes (the chip's MD5 of each region "
                    f"matches {plan.name})", module=named.name, app_version_after=plan.app_version,
                    bytes=0, seconds=0.0)
            else:
                found["plan"] = plan
        except RakflashError as exc:
            found["refusal"] = exc
        except (FatalError, OSError) as exc:
            found["refusal"] = fatal(exc, "checking the image against the chip")
    info = DeviceInfo(**esp_chip.ask(link, module, emit=emit, window=window, while_there=with_the_chip))
    plan = found["plan"]
    if plan is not None:
        plan.device = info
    return info, plan, found["refusal"]


# ------------------------------------------------------------------ the update

class EspUpdateResult(UpdateResult):
    """:class:`~rakflash.flows.update.UpdateResult` of an ESP write, with the chip, the chip's
    MD5 of each region written, the parts and how the new firmware was started."""

    chip: dict[str, Any] | None = None
    verified: list[dict[str, Any]] | None = None
    parts: list[dict[str, int]] | None = None
    started_by: str | None = None

    def to_dict(self) -> dict:
        d = super().to_dict()
        d.update(chip=self.chip, verified=self.verified, parts=self.parts, started_by=self.started_by)
        return d


def run(session: Any) -> EspUpdateResult | EspPlan:
    """A :class:`~rakflash.flows.session.FlashSession`'s whole run for an ESP module: identify,
    plan, confirm, write, verify, start. Returns the result, or — a dry run — the plan (the
    session makes its DryRun of it)."""
    from esptool.cmds import run_stub, write_flash
    from esptool.util import FatalError
    o, link, emit = session.options, session.link, session.emit
    t0 = time.monotonic()
    image = session.image
    named = o.module
    if named is None and getattr(image, "esp", None) is not None:
        info = analyse(image)
        named = info.module
    if named is None:
        named = port_module(link)
    # A file that is no ESP image, or an image for a non-ESP module, is refused before the port
    # is touched (as check_firmware does for the others).
    if named is not None:
        try:
            analyse(image, module=named)
        except NotFirmware:
            raise
        except ImageTargetError as exc:
            raise WrongTarget(exc.message, hint=exc.hint, **exc.details) from None
    emit(Phase("identify", f"identifying the ESP chip on {link.port_name} (its ROM download mode)"))
    with esptool_on(link, emit) as (port, listener):
        emit(Phase("boot", "entering the ROM download mode"))
        conn = connect(link, port, listener, named, emit=emit, window=o.reset_window)
        try:
            conn.esp = run_stub(conn.esp)
            native = (named or port_module(link)) is not None and reset_kind(named, link) == "usb-serial-jtag"
            baud = ROM_BAUD if native else (o.baud or FLASH_BAUD)
            if baud != ROM_BAUD:
                conn.esp.change_baud(baud)
            chip = read_chip(conn.esp, named)
        except (FatalError, OSError) as exc:
            raise fatal(exc, "reading the chip") from None
        module, could_be = chip_module(chip, named)
        if module is None:
            raise WrongTarget(f"the chip on {link.port_name} is an {chip.name}, which no module "
                              f"rakflash knows has", hint="See 'rakflash modules'. Nothing was written.")
        if named is not None and named.esp_fact("image_chip_id") != chip.chip_id:
            raise WrongTarget(f"--module says {named.name} ({named.mcu.name}), but the chip on "
                              f"{link.port_name} is an {chip.name}",
                              hint="Check --module and the port. Nothing was written.")
        dev = DeviceInfo(**device_fields(link, chip, module, could_be, mode="rom", notes=[]))
        session.device = dev
        emit(DeviceFound({k: v for k, v in dev.to_dict().items() if k != "error"}))
        plan = make_plan(image, chip, dev, module, baud=link.baud, force=o.force)
        session.plan = plan
        if not o.force and _same_bytes(conn.esp, plan):
            leave_quietly(conn, link)
            raise AlreadyUpToDate(f"{module.name} already holds exactly these bytes (the chip's MD5 of "
                                  f"each region matches {plan.name})", module=module.name,
                                  app_version_after=plan.app_version or dev.app_version, bytes=0,
                                  seconds=0.0)
        emit(PlanReady(plan.to_dict(link.baud)))
        if o.dry_run:
            leave_quietly(conn, link)
            return plan
        if session.confirm is not None and not session.confirm(plan):
            leave_quietly(conn, link)
            raise Aborted("update not confirmed")
        session._writing = True
        digests: dict[tuple[int, int], str] = {}
        esp = conn.esp
        asked = esp.flash_md5sum

        def kept_md5(addr: int, size: int) -> str:        # the chip's own answer, as esptool gets it
            digest = asked(addr, size)
            digests[(addr, size)] = digest
            return digest
        esp.flash_md5sum = kept_md5
        listener.total = len(plan.payload)
        emit(Phase("write", "writing (esptool's stub erases as it goes)", {"bytes": listener.total}))
        session._data_sent = True
        t1 = time.monotonic()
        try:
            write_flash(esp, [(a, d) for a, d in plan.parts], flash_size="keep")
        except (FatalError, OSError) as exc:
            if "MD5 of file does not match" in str(exc) or "Write failed, the written flash region is empty" in str(exc):
                raise VerifyFailed(f"the chip's MD5 of what it holds is not the image's: {exc}",
                                   bytes=len(plan.payload)) from None
            raise fatal(exc, "writing") from None
        finally:
            del esp.flash_md5sum
        # The write itself, as esptool times it (compressed data on the wire and the flash work);
        # the flash parameters before it and the MD5 after it are in the whole run's seconds.
        transfer_seconds = listener.write_seconds or (time.monotonic() - t1)
        verified = _check_digests(plan, digests)
        session._sent = True
        emit(Phase("start", "starting the new firmware"))
        try:
            how = leave(conn, link, module, emit, o.reset_window)
        except (FatalError, OSError) as exc:
            raise fatal(exc, "resetting the chip") from None
    wait = o.reset_window if how == "person" else BOOT_LOG_WAIT
    after, _heard = hear_the_app(link, conn, how, emit, wait)
    warnings = []
    if plan.app_version and after is None:
        warnings.append({"code": "version-unconfirmed",
                         "message": f"the new firmware's boot log did not say its version within "
                                    f"{wait:.0f} s"
                                    + (" (let go of GPIO0 and press reset to start it)" if how == "person" else "")})
        emit(Warning(warnings[-1]["code"], warnings[-1]["message"]))
    elif plan.app_version and after != plan.app_version:
        raise VerifyFailed(f"after the write the {module.name}'s boot log says app version {after!r}, "
                           f"but the image carries {plan.app_version!r}", bytes=len(plan.payload))
    result = EspUpdateResult("ok", module.name, dev.app_version, after or plan.app_version,
                             len(plan.payload), time.monotonic() - t0, conn.seconds, transfer_seconds,
                             None, warnings, version_confirmed=after is not None and after == plan.app_version)
    result.chip = chip.to_dict()
    result.verified = verified
    result.parts = [{"address": a, "bytes": len(d)} for a, d in plan.parts]
    result.started_by = how
    return result


def _check_digests(plan: EspPlan, digests: dict[tuple[int, int], str]) -> list[dict]:
    """The chip's MD5 of each region written, against the image's: "verified" only from these."""
    out = []
    for addr, data in plan.parts:
        padded = data + b"\xff" * (-len(data) % 4)
        want = hashlib.md5(padded).hexdigest()
        got = digests.get((addr, len(padded))) or digests.get((addr, len(data)))
        if got is None:
            raise VerifyFailed(f"esptool did not ask the chip for the MD5 of {addr:#x}+{len(data):,}: "
                               f"rakflash can't say the write was verified", bytes=len(plan.payload))
        if got != want:
            raise VerifyFailed(f"the chip's MD5 of {addr:#x}+{len(padded):,} is {got}, the image's "
                               f"{want}", bytes=len(plan.payload))
        out.append({"address": addr, "bytes": len(padded), "md5": got})
    return out


