"""Plan an update before anything is written, and refuse plans that can't work.

A plan says what will be sent (only the application part of an image), to
which module, over which protocol, how long it should take, and why it is
safe. Every refusal is its own named error with its own next step:

* image for another MCU or module → :class:`~rakflash.errors.WrongTarget`
* image that only holds bootloader bytes → :class:`~rakflash.errors.TouchesBootloader`
* application larger than its region → :class:`~rakflash.errors.ImageTooLarge`
* firmware the device's bootloader can't take → :class:`~rakflash.errors.BootloaderTooOld`
* the same version already running → :class:`~rakflash.errors.AlreadyUpToDate` (unless forced)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import catalog as _catalog
from ..catalog import Module, version_tuple
from ..errors import (AlreadyUpToDate, BootloaderTooOld, ImageTargetError, ImageTooLarge,
                      TouchesBootloader, UnsupportedUpdate, WrongTarget)
from ..images import Image, ImageInfo, analyse, target_module, vector_at
from .identify import DeviceInfo
from .transfers import for_protocol


@dataclass
class Plan:
    """What an update will do."""

    module: Module
    image: ImageInfo
    device: DeviceInfo
    payload: bytes                 # exactly what the update protocol sends
    address: int                   # where the payload lands
    name: str                      # file name announced to the bootloader
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    app_version: str | None = None
    force: bool = False            # skip the compatibility and same-version checks
    keep_settings: bool = True     # read the owner's settings first, check (and restore) them after

    @property
    def settings_to_keep(self) -> list[str]:
        """The setting queries the update reads before and checks after (empty: none)."""
        if not self.keep_settings or self.device.mode != "app":
            return []
        return list(self.module.dialect.get("settings", []))

    @property
    def protocol(self) -> str:
        return self.module.protocol

    @property
    def blob(self) -> bytes:
        """The Apollo3 OTA blob for an AMOTA update: the given blob's header, or a new one."""
        from ..apollo3_ota import build_blob
        header = self.image.image.ota_header
        if header is not None:
            return header.pack() + self.payload
        return build_blob(self.payload, load_address=self.address)

    def estimate_seconds(self, baud: int, latency: float = 0.002) -> float:
        """Time the transfer needs at ``baud``: line rate, turnarounds and flash time."""
        return minimum_transfer_seconds(self.module, len(self.payload), baud, latency)

    def to_dict(self, baud: int) -> dict:
        return {
            "port": self.device.port, "mode": self.device.mode, "image": self.image.image.path,
            "module": self.module.name, "protocol": self.protocol, "address": self.address,
            "bytes": len(self.payload), "name": self.name,
            "app_version_before": self.device.app_version, "app_version_new": self.app_version,
            "bootloader_version": self.device.bootloader_version,
            "estimated_seconds": round(self.estimate_seconds(baud), 2), "baud": baud,
            "steps": self.steps, "notes": self.notes,
        }


def check_compatibility(module: Module, firmware_version: str | None, bootloader_version: str | None) -> None:
    """Refuse firmware that the module's bootloader can't take (catalog rules)."""
    if not firmware_version or not bootloader_version:
        return
    fw, boot = version_tuple(firmware_version), version_tuple(bootloader_version)
    for rule in module.rules:
        if fw >= version_tuple(rule.firmware_min) and boot < version_tuple(rule.bootloader_min):
            raise BootloaderTooOld(
                f"{module.name} firmware {firmware_version} needs bootloader {rule.bootloader_min} "
                f"or later, and this module has bootloader {bootloader_version}: the update would "
                f"stall ({rule.why}).",
                hint=f"Write the vendor's combined bootloader {rule.bootloader_min} + firmware .hex "
                     f"(FULL.hex) first, {module.recovery_advice()}; after that, serial updates "
                     f"work again.",
                rule_source=rule.source)


def make_plan(image: Image, device: DeviceInfo, *, module: Module | None = None,
              force: bool = False, keep_settings: bool = True) -> Plan:
    """Check ``image`` against ``device`` and decide what to send."""
    guessed = []
    if module is None and device.module is not None and not device.module_certain:
        # The device could be one of several modules (RUI v3 doesn't say which):
        # the image's MCU decides, and the plan says so, so the person can stop it.
        target = target_module(image)
        if target and target.dialect.key == device.module.dialect.key:
            alike = [m.name for m in _catalog.load().modules.values()
                     if m.dialect.key == target.dialect.key]
            guessed.append(f"the device does not say which module it is ({' or '.join(alike)}); the "
                           f"image is built for {target.name}'s {target.mcu.name}, so rakflash takes it "
                           f"as a {target.name} (if it is not, stop and name it with --module)")
            module = target
    module = module or device.module
    if module is None and device.module is None:
        module = target_module(image)     # the device couldn't say (a garbled answer): the image can
        if module is not None:
            guessed.append(f"the device did not say which module it is; the image is built for "
                           f"{module.name}, so rakflash takes it as one")
    if module is None:
        raise WrongTarget("rakflash could not tell which module this is",
                          hint="Name it with --module (see 'rakflash modules').")
    if device.module is not None and device.module.key != module.key and device.module_certain:
        raise WrongTarget(f"--module says {module.name}, but the device is a {device.module.name}",
                          hint=f"Use firmware for {device.module.name}, or check the port.")
    if for_protocol(module.protocol) is None:
        raise UnsupportedUpdate(
            f"rakflash can't yet update a {module.name} over its serial port ({module.protocol})",
            hint=f"Nothing was sent. Write a full image (FULL.hex) {module.recovery_advice()}.")
    try:
        info = analyse(image, module=module)
    except ImageTargetError as exc:
        hint = exc.hint
        if not device.module_certain:
            hint = (f"{hint} If the module is not a {module.name} (the device does not say), "
                    f"name it with --module (see 'rakflash modules').")
        raise WrongTarget(exc.message, hint=hint) from None
    if info.image.format != "apollo3-ota" and info.module is not None and info.vector is None \
            and not info.includes_app:
        raise WrongTarget(f"{image.path} holds no {module.name} application",
                          hint=f"Use the application firmware built for {module.name}.")
    app = module.app
    notes: list[str] = list(guessed)
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
        raise TouchesBootloader(
            f"{image.path} does not start an application at {app.start:#010x} ({what}): it "
            f"would not boot after a serial update",
            hint=(f"Check --address (a {module.name} application .bin goes to {app.start:#010x}); "
                  f"a full image (FULL.hex) is written {module.recovery_advice()}."))
    if outside_app:
        dropped = ", ".join(r.name for r in info.regions if r.name != "application")
        notes.append(f"combined image: only its application part ({app_part.size:,} bytes) is "
                     f"sent; the {dropped} part ({outside_app:,} bytes) stays as it is on the "
                     f"module (the serial bootloader can't write it)")
    payload = app_part.contiguous(app.start)
    if len(payload) > app.size:
        raise ImageTooLarge(f"the application is {len(payload):,} bytes; {module.name} holds {app.size:,}")
    if not force:
        check_compatibility(module, info.app_version, device.bootloader_version)
        needs = [r for r in module.rules if info.app_version
                 and version_tuple(info.app_version) >= version_tuple(r.firmware_min)]
        if needs and device.bootloader_version is None:
            notes.append(f"this firmware needs bootloader {needs[0].bootloader_min} or later, and "
                         f"{module.name}'s application does not tell its bootloader's version: "
                         f"rakflash reads it in the bootloader and, if it is older, stops there "
                         f"before writing and starts the application again")
    if info.app_version and device.app_version and device.mode == "app" \
            and version_tuple(info.app_version) < version_tuple(device.app_version):
        notes.append(f"this is a downgrade: {device.app_version} → {info.app_version}")
    if not force and info.app_version and device.mode == "app" and device.app_version == info.app_version:
        raise AlreadyUpToDate(f"{module.name} already runs {info.app_version}", module=module.name,
                              app_version_after=info.app_version, bytes=0, seconds=0.0)
    name = image.path.replace("\\", "/").rsplit("/", 1)[-1]
    plan = Plan(module, info, device, payload, app.start, name, notes=notes,
                app_version=info.app_version, force=force, keep_settings=keep_settings)
    plan.steps = _steps(plan)
    return plan


def _steps(plan: Plan) -> list[str]:
    m, d = plan.module, plan.device
    steps = []
    if plan.settings_to_keep:
        from .settings import setting_name
        names = ", ".join(setting_name(q) for q in plan.settings_to_keep)
        steps.append(f"read the LoRaWAN keys and settings ({names}) to check they survive")
    if d.mode == "app":
        steps.append(f"enter the bootloader ({' / '.join(m.dialect['boot'])}), confirmed by its own answer")
    else:
        steps.append("the module already waits in its bootloader: go on from there")
    steps += for_protocol(plan.protocol).steps(plan)
    steps.append("the bootloader starts the new application; confirm it answers with "
                 f"{plan.app_version or 'its version'}")
    if plan.settings_to_keep:
        steps.append("check the keys and settings again; write back any the new firmware lost")
    return steps


def minimum_transfer_seconds(module: Module, size: int, baud: int, latency: float) -> float:
    """The least time the module's update protocol can take for ``size`` bytes on that link
    (see :meth:`rakflash.flows.transfers.Transfer.minimum_seconds`)."""
    transfer = for_protocol(module.protocol)
    return transfer.minimum_seconds(module, size, baud, latency) if transfer else size * 10 / baud
