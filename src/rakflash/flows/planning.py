"""Plan an update before anything is written, and refuse plans that can't work.

:func:`make_plan` makes a :class:`~rakflash.flows.plan.Plan`: what will be sent
(only the application part of an image), to which module, over which protocol,
how long it should take, and why it is safe; it asks the module's transfer
(:mod:`rakflash.flows.transfers`) what it will do. Every refusal is its own
named error with its own next step:

* image for another MCU or module, or whose version string names another
  module (``--force`` writes the latter anyway) → :class:`~rakflash.errors.WrongTarget`
* a device that can't say which of several modules it is, given firmware for
  one of them → :class:`~rakflash.errors.ModuleUncertain` (never a guess: the
  person names it, or is asked)
* image that only holds bootloader bytes, or is built for the bootloader's
  address → :class:`~rakflash.errors.TouchesBootloader`
* application larger than its region → :class:`~rakflash.errors.ImageTooLarge`
* firmware the device's bootloader can't take → :class:`~rakflash.errors.BootloaderTooOld`
  (the rules of every module the device could be apply: an uncertain identity
  never weakens a refusal)
* the same version already running → :class:`~rakflash.errors.AlreadyUpToDate` (unless forced)
"""

from __future__ import annotations

import re

from .. import catalog as _catalog
from ..catalog import Module, version_tuple
from ..errors import (
    AlreadyUpToDate,
    BaudTooLow,
    BootloaderTooOld,
    ImageTargetError,
    ImageTooLarge,
    ModuleUncertain,
    NotFirmware,
    PackageMismatch,
    TouchesBootloader,
    UnsupportedUpdate,
    WrongTarget,
)
from ..images import Image, ImageInfo, analyse, check_firmware, target_module
from ..vector_table import vector_at
from .identify import DeviceInfo
from .plan import Plan, check_compatibility
from .transfers import for_protocol


def version_names(version: str | None) -> str | None:
    """The module a firmware version string names, e.g. ``RUI_4.0.12_RAK11720`` → ``RAK11720``
    (RUI v3 versions such as ``V3.0.0.14.H`` name none)."""
    m = re.search(r"(?<![A-Za-z0-9])RAK\d+", version or "", re.IGNORECASE)
    return m.group(0).upper() if m else None


def _is_named(module: Module, token: str) -> bool:
    names = {module.key, module.name.lower(), *module.aliases}
    return token.lower() in {n.split("-")[0] for n in names}


def _modules_it_could_be(device: DeviceInfo, named: Module | None) -> list[Module]:
    """Every module the device could be: the named one, the one it says, or each candidate."""
    if named is not None:
        return [named]
    if device.module is not None:
        return device.could_be
    # It answered, but not which module it is: any module whose consoles speak that way.
    return [m for m in _catalog.load().modules.values()
            if device.dialect in (m.dialect.key, m.boot_dialect.key)]


def _one_bootloader_for_all(image: Image, could_be: list[Module]) -> Module | None:
    """Among modules a bootloader can't tell apart, the one ``image`` is built for, where it makes no
    difference to the bootloader which it is: all share its flash map and update protocol (the RUI3
    STM32WLE5 variants: one bootloader for every board). None where that does not hold."""
    if len(could_be) < 2:
        return None
    built_for = _catalog.load().by_image_name(_version_in(image, could_be[0]))
    if built_for is None or built_for not in could_be:
        return None
    if all(m.same_flash_as(built_for) and m.protocol == built_for.protocol for m in could_be):
        return built_for
    return None


def _built_for_the_bootloader(image: Image, info: ImageInfo, module: Module) -> str | None:
    """Why a .bin placed at the bootloader's address (its reset vector points there) can't be sent."""
    if image.base_source != "bootloader" or info.vector is None or not module.has_region("bootloader"):
        return None
    boot = module.region("bootloader")
    return (f"{_file(image)} is built for the bootloader's address: its reset vector "
            f"{info.vector[1]:#010x} lies in {module.name}'s bootloader region "
            f"({boot.start:#010x}-{boot.end:#010x}), so it is a bootloader, or a full image without "
            f"an application at {module.app.start:#010x}: the serial bootloader writes applications only")


def _starts_an_application(image: Image, module: Module) -> bool:
    """A valid vector table of ``module`` at its application base."""
    app = module.app
    vector = vector_at(image.read(app.start, 8), 0)
    return vector is not None and module.mcu.ram.start < vector[0] <= module.mcu.ram.end \
        and vector[1] in app


def _accepts(image: Image, module: Module) -> bool:
    """Whether ``image`` could be firmware for ``module`` (its vector table fits the MCU)."""
    try:
        analyse(image, module=module)
    except ImageTargetError:
        return False
    return True


def _file(image: Image) -> str:
    return image.path.replace("\\", "/").rsplit("/", 1)[-1]


def _uncertain(image: Image, could_be: list[Module], fits: list[Module]) -> ModuleUncertain:
    """The refusal to write on a guess: which modules it could be, which the image fits, what to do."""
    if len(fits) == 1:
        built = f"{_file(image)} is built for a {fits[0].name} ({fits[0].mcu.name})"
        then = (f"If it is a {fits[0].name}, run again with --module {fits[0].key}"
                + "".join(f"; if it is a {m.name}, use firmware built for it"
                          for m in could_be if m not in fits) + ".")
    else:
        built = f"{_file(image)} could be firmware for a {' or a '.join(m.name for m in fits)}"
        then = f"Run again with --module {' or --module '.join(m.key for m in fits)}."
    needs = [f"{m.name} firmware from {r.firmware_min} on needs bootloader {r.bootloader_min} or later"
             for m in could_be for r in m.rules]
    exc = ModuleUncertain(
        f"the device does not say whether it is a {' or a '.join(m.name for m in could_be)}, and "
        f"{built}: rakflash won't write it on a guess",
        hint=f"{then} The module's label says which. Nothing was written."
             + (f" (Whichever it is, its rules apply: {'; '.join(needs)}.)" if needs else ""),
        candidates=[m.name for m in could_be], image_fits=[m.name for m in fits])
    exc.modules = could_be
    exc.fits = fits
    return exc


def _version_in(image: Image, module: Module) -> str | None:
    """The application version ``image`` carries, read the way ``module``'s firmware is."""
    try:
        return analyse(image, module=module).app_version
    except ImageTargetError:
        return module.find_app_version(b"".join(s.data for s in image.segments))


def make_plan(image: Image, device: DeviceInfo, *, module: Module | None = None,
              force: bool = False, keep_settings: bool = True) -> Plan:
    """Check ``image`` against ``device`` and decide what to send.

    ``module`` is what the person named (``--module``): it settles which module a
    device that can't tell is, but never overrides what a device says it is.
    """
    if module is not None:
        if device.module is not None and device.module_certain and device.module.key != module.key:
            raise WrongTarget(f"--module says {module.name}, but the device is a {device.module.name}",
                              hint=f"Use firmware for {device.module.name}, or check the port.")
        if device.candidates and module not in device.candidates or \
                device.dialect not in (module.dialect.key, module.boot_dialect.key):
            alike = device.candidates or _modules_it_could_be(device, None)
            raise WrongTarget(f"--module says {module.name}, but the device answers like a "
                              f"{' or a '.join(m.name for m in alike)}",
                              hint="Check --module and the port (see 'rakflash info --port PORT').")
    could_be = _modules_it_could_be(device, module)
    one_bootloader = _one_bootloader_for_all(image, could_be)
    if one_bootloader is not None:
        could_be = [one_bootloader]
    if not force and len(could_be) > 1 and device.bootloader_version:
        # An uncertain identity never weakens a refusal: the rules of every module it
        # could be apply, each with the image's version as that module reads it.
        for m in could_be:
            check_compatibility(m, _version_in(image, m), device.bootloader_version, alike=could_be,
                                port=device.port)
    guessed = []
    target = target_module(image)
    fits = [m for m in could_be if _accepts(image, m)] if len(could_be) > 1 else could_be
    if len(could_be) == 1:
        module = could_be[0]
    elif fits:
        # The image fits a module the device could be: writing it on that guess could
        # leave another module with firmware for another chip. Find out or ask.
        raise _uncertain(image, could_be, fits)
    elif target is not None and could_be:
        raise WrongTarget(f"{_file(image)} is built for {target.name}'s {target.mcu.name}, but the "
                          f"device is a {' or a '.join(m.name for m in could_be)}",
                          hint="Use the firmware built for this module; if it is none of these, "
                               "name it with --module (see 'rakflash modules').")
    elif could_be:
        module = could_be[0]   # the image fits none of them: analyse() below says why
    else:
        module = target        # nothing to go on but the image
        if module is not None:
            guessed.append(f"the device did not say which module it is; the image is built for "
                           f"{module.name}, so rakflash takes it as one")
    if module is None:
        check_firmware(image)
        raise WrongTarget("rakflash could not tell which module this is",
                          hint="Name it with --module (see 'rakflash modules').")
    # A package's application linked for the other bootloader family's base: named as that, which
    # says more than the vector table's "built for another address" below.
    linked = image.package.linked_elsewhere() if image.package is not None else None
    if linked is not None:              # its application, linked for the other family's base
        raise PackageMismatch(f"{_file(image)}: {linked.describe()}; nothing was sent",
                              hint=linked.next_step(), linked_for=linked.linked_for)
    # The image checks every write path shares (images.analyse): a file that is not firmware,
    # or firmware for another chip, is refused before anything else is said about it.
    try:
        info = analyse(image, module=module)
    except NotFirmware:
        raise
    except ImageTargetError as exc:
        raise WrongTarget(exc.message, hint=exc.hint) from None
    if for_protocol(module.protocol) is None:
        raise UnsupportedUpdate(
            f"rakflash can't yet update a {module.name} over its serial port ({module.protocol})",
            hint=f"Nothing was sent. Write a full image (FULL.hex) {module.recovery_advice()}.")
    check_image = getattr(for_protocol(module.protocol), "check_image", None)
    if check_image is not None:
        check_image(image, module)      # e.g. a DFU package for the other nRF52 bootloader family
    check_device = getattr(for_protocol(module.protocol), "check_device", None)
    if check_device is not None and not force:
        check_device(image, module, device)   # e.g. signed with another key than it accepted before
    too_slow = getattr(for_protocol(module.protocol), "refusal", None)
    if too_slow is not None and too_slow(module, device.baud):
        raise BaudTooLow(too_slow(module, device.baud), baud=device.baud)
    if info.image.format != "apollo3-ota" and info.module is not None and info.vector is None \
            and not info.includes_app:
        raise WrongTarget(f"{image.path} holds no {module.name} application",
                          hint=f"Use the application firmware built for {module.name}.")
    app = module.app
    notes: list[str] = list(guessed)
    if one_bootloader is not None:
        variants = [m.name for m in _catalog.load().variants(module)]
        notes.append(f"in its bootloader the module can't say which of {', '.join(variants)} it is (one "
                     f"RUI3 bootloader serves them all, with the same flash map); {_file(image)} is "
                     f"built for the {module.name}, so rakflash takes it as one ('rakflash info' "
                     f"afterwards reads AT+HWMODEL=?, which names the board)")
    if module.unconfirmed_note:
        notes.append(module.unconfirmed_note)
    warnings: list[str] = []
    built_for = _catalog.load().by_image_name(info.app_version)
    named = version_names(info.app_version)
    if built_for is not None and built_for.key != module.key \
            and built_for.key not in module.takes_images_of:
        # (An image for another chip or flash map was refused above, by its vector table.)
        said = (f"{_file(image)} is built for the {built_for.name} (its version string "
                f"{info.app_version}), but the module is a {module.name}")
        if not force:
            raise WrongTarget(
                f"{said}: RUI3 builds each board's image for its own radio and pins",
                hint=f"Use the firmware built for {module.name} (its version string ends in "
                     f"_{module.image_names[0] if module.image_names else module.name}). If you are "
                     f"sure this one is right for it, --force writes it anyway"
                     + (" (the flash maps are the same)" if module.same_flash_as(built_for) else "")
                     + ". Nothing was written.",
                version_names=built_for.name)
        warnings.append(f"{said}: written anyway (--force)")
    elif built_for is None and named and not _is_named(module, named):
        if not force:
            raise WrongTarget(
                f"{_file(image)} carries the version string {info.app_version}, which names "
                f"{named}, but the module is a {module.name}",
                hint=f"Use the firmware built for {module.name}. If you are sure this one is right "
                     f"for it, --force writes it anyway.",
                version_names=named)
        warnings.append(f"the image's version string {info.app_version} names {named}, not "
                        f"{module.name}: written anyway (--force)")
    built_for_boot = _built_for_the_bootloader(image, info, module)
    if built_for_boot and (not info.includes_app or not _starts_an_application(image, module)):
        raise TouchesBootloader(built_for_boot, hint=f"Use the application firmware for {module.name}; "
                                                     f"a bootloader or full image is written "
                                                     f"{module.recovery_advice(port=device.port)}.")
    if not info.includes_app:
        if info.includes_bootloader or info.regions:
            raise TouchesBootloader(
                f"{image.path} holds only {', '.join(r.name for r in info.regions)} bytes "
                f"and no application: the serial bootloader can't write those",
                hint=f"A full image (bootloader included, FULL.hex) is written {module.recovery_advice()}.")
        raise WrongTarget(f"{image.path} places no bytes in {module.name}'s application region "
                          f"({app.start:#010x}-{app.end:#010x})")
    for seg in image.segments:
        # A run of bytes that starts in the application and goes on past its
        # end is an application too large for the region (not a combined image).
        if app.start <= seg.start < app.end < seg.end or seg.start < app.start and seg.end > app.end:
            raise ImageTooLarge(
                f"{image.path} has {seg.end - app.start:,} bytes of application from "
                f"{app.start:#010x}, but {module.name}'s application region holds {app.size:,}",
                image_bytes=seg.end - app.start, region_bytes=app.size)
    outside_app = image.size - image.covered(app.start, app.end)
    app_part = image.slice(app.start, app.end)
    vector = vector_at(app_part.read(app.start, 8), 0)
    if vector is None or not (module.mcu.ram.start < vector[0] <= module.mcu.ram.end
                              and vector[1] in app):
        # The bootloader jumps through the vector table at the application base:
        # without a valid one there (a .bin given the wrong --address, say) the
        # module would be left with an application that never starts.
        what = ("no vector table there" if vector is None else
                f"what is there (SP {vector[0]:#010x}, reset {vector[1]:#010x}) is no "
                f"{module.name} application's vector table")
        # Only an address the person gave can be the mistake to point at (a .hex carries its
        # own addresses, and the web page has no --address).
        check = (f"Check --address (a {module.name} application .bin goes to {app.start:#010x})"
                 if image.base_source == "--address" else
                 f"Use the application firmware built for {module.name}")
        raise TouchesBootloader(
            f"{image.path} does not start an application at {app.start:#010x} ({what}): it "
            f"would not boot after a serial update",
            hint=f"{check}; a full image (FULL.hex) is written {module.recovery_advice()}.")
    if outside_app:
        dropped = ", ".join(r.name for r in info.regions if r.name != "application")
        notes.append(f"combined image: only its application part ({app_part.size:,} bytes) is "
                     f"sent; the {dropped} part ({outside_app:,} bytes) stays as it is on the "
                     f"module (the serial bootloader can't write it)")
    payload = app_part.contiguous(app.start)
    if len(payload) > app.size:
        raise ImageTooLarge(f"the application is {len(payload):,} bytes; {module.name} holds {app.size:,}")
    forced_past: list[BootloaderTooOld] = []
    try:
        check_compatibility(module, info.app_version, device.bootloader_version, port=device.port)
    except BootloaderTooOld as exc:
        if not force:
            raise
        forced_past.append(exc)
        warnings.append(f"{exc.message.rstrip('.')}: written anyway (--force); the transfer will "
                        f"most likely stall")
    needs = [r for r in module.rules if info.app_version
             and version_tuple(info.app_version) >= version_tuple(r.firmware_min)]
    if needs and device.bootloader_version is None and not force:
        notes.append(f"this firmware needs bootloader {needs[0].bootloader_min} or later, and "
                     f"{module.name}'s application does not tell its bootloader's version: "
                     f"rakflash reads it in the bootloader and, if it is older, stops there "
                     f"before writing and starts the application again")
    if info.app_version is None:
        warnings.append(f"{_file(image)} carries no version string: after writing, rakflash can "
                        f"check that the new firmware answers, but not which version it is")
    if info.app_version and device.app_version and device.mode == "app" \
            and version_tuple(info.app_version) < version_tuple(device.app_version):
        notes.append(f"this is a downgrade: {device.app_version} → {info.app_version}")
    if not force and info.app_version and device.mode == "app" and device.app_version == info.app_version:
        raise AlreadyUpToDate(f"{module.name} already runs {info.app_version}", module=module.name,
                              app_version_after=info.app_version, bytes=0, seconds=0.0)
    name = image.path.replace("\\", "/").rsplit("/", 1)[-1]
    plan = Plan(module, info, device, payload, app.start, name, notes=notes, warnings=warnings,
                app_version=info.app_version, force=force, keep_settings=keep_settings,
                forced_past=forced_past, transfer=for_protocol(module.protocol))
    plan.steps = _steps(plan)
    return plan


def _steps(plan: Plan) -> list[str]:
    m, d = plan.module, plan.device
    steps = []
    if plan.settings_to_keep:
        from .settings import setting_name
        names = ", ".join(setting_name(q) for q in plan.settings_to_keep)
        steps.append(f"read the LoRaWAN keys and settings ({names}) to check they survive")
    if d.mode == "app" and m.dialect.get("touch_baud"):
        steps.append(f"enter the bootloader with a {m.dialect['touch_baud']}-baud touch (open the port "
                     f"at that rate and close it)")
    elif d.mode == "app" and hasattr(for_protocol(plan.protocol), "enter_bootloader"):
        steps.append(f"enter the bootloader ({' / '.join(m.dialect['boot'])})")
    elif d.mode == "app":
        steps.append(f"enter the bootloader ({' / '.join(m.dialect['boot'])}), confirmed by its own answer")
    else:
        steps.append("the module already waits in its bootloader: go on from there")
    transfer = for_protocol(plan.protocol)
    assert transfer is not None         # make_plan refuses a module whose protocol has none
    steps += transfer.steps(plan)
    confirm_step = getattr(transfer, "confirm_step", None)     # a firmware that can't be asked
    steps.append(confirm_step(plan) if confirm_step else
                 "the bootloader starts the new application; confirm it answers with "
                 f"{plan.app_version or 'its version'}")
    if plan.settings_to_keep:
        steps.append("check the keys and settings again; write back any the new firmware lost")
    return steps


def minimum_transfer_seconds(module: Module, size: int, baud: int, latency: float) -> float:
    """The least time the module's update protocol can take for ``size`` bytes on that link
    (see :meth:`rakflash.flows.transfers.Transfer.minimum_seconds`)."""
    transfer = for_protocol(module.protocol)
    return transfer.minimum_seconds(module, size, baud, latency) if transfer else size * 10 / baud
