"""What an update will do: the :class:`Plan` that :func:`rakflash.flows.planning.make_plan` makes.

A plan says what will be sent (only the application part of an image), to which
module, over which protocol, how long it should take, and why it is safe. The
transfers (:mod:`rakflash.flows.transfers`) take a plan and send it; the planning
above them asks them what they will do, so the plan itself stands below both.
The bootloader rule a plan is checked against again, once the bootloader's
version is read in the bootloader, is here too (:func:`check_compatibility`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..catalog import Module, version_tuple
from ..errors import BootloaderTooOld
from ..images import ImageInfo
from .identify import DeviceInfo


class TransferTime(Protocol):
    """What a plan asks of its transfer (a :class:`rakflash.flows.transfers.Transfer`)."""

    def minimum_seconds(self, module: Module, size: int, baud: int, latency: float) -> float: ...


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
    warnings: list[str] = field(default_factory=list)   # said before writing, in the plan's own words
    app_version: str | None = None
    force: bool = False            # skip the compatibility and same-version checks
    keep_settings: bool = True     # read the owner's settings first, check (and restore) them after
    forced_past: list[BootloaderTooOld] = field(default_factory=list)   # refusals --force went past
    transfer: TransferTime | None = None   # the protocol's transfer (flows.transfers), for the estimate

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
        if self.transfer is None:
            return len(self.payload) * 10 / baud
        return self.transfer.minimum_seconds(self.module, len(self.payload), baud, latency)

    def to_dict(self, baud: int) -> dict:
        return {
            "port": self.device.port, "mode": self.device.mode, "image": self.image.image.path,
            "module": self.module.name, "protocol": self.protocol, "address": self.address,
            "bytes": len(self.payload), "name": self.name,
            "app_version_before": self.device.app_version, "app_version_new": self.app_version,
            "bootloader_version": self.device.bootloader_version,
            "estimated_seconds": round(self.estimate_seconds(baud), 2), "baud": baud,
            "steps": self.steps, "notes": self.notes, "warnings": self.warnings,
        }

    def check_bootloader(self, bootloader_version: str | None) -> None:
        """The compatibility rules against a bootloader version read only now (in the bootloader).

        Forced: a refusal is recorded in :attr:`forced_past` instead, so a transfer that
        then stalls can name the way out.
        """
        try:
            check_compatibility(self.module, self.app_version, bootloader_version, port=self.device.port)
        except BootloaderTooOld as exc:
            if not self.force:
                raise
            self.forced_past.append(exc)


def check_compatibility(module: Module, firmware_version: str | None, bootloader_version: str | None,
                        *, alike: list[Module] | None = None, port: str = "PORT") -> None:
    """Refuse firmware that the module's bootloader can't take (catalog rules).

    ``alike``: the other modules the device could be (it can't tell which); the
    message says the refusal holds if it is this one.
    """
    if not firmware_version or not bootloader_version:
        return
    fw, boot = version_tuple(firmware_version), version_tuple(bootloader_version)
    for rule in module.rules:
        if fw >= version_tuple(rule.firmware_min) and boot < version_tuple(rule.bootloader_min):
            others = [m.name for m in alike or [] if m.key != module.key]
            who = (f"If this is a {module.name} (the device does not say whether it is a "
                   f"{' or a '.join([module.name, *others])}), its" if others else module.name)
            raise BootloaderTooOld(
                f"{who} firmware {firmware_version} needs bootloader {rule.bootloader_min} or later; "
                f"this one has {bootloader_version}, and {rule.why}.",
                hint=f"Write the vendor's combined bootloader {rule.bootloader_min} + firmware .hex "
                     f"(FULL.hex) first, {module.recovery_advice(port=port)}; after that, serial "
                     f"updates work again.",
                rule_source=rule.source, module=module.name, bootloader_min=rule.bootloader_min)


def recovery_after_forced_stall(plan: Plan, port: str) -> str | None:
    """The next step when a transfer that --force sent past a bootloader rule failed: the
    recovery command, not a re-run (which would stall again); None if nothing was forced."""
    if not plan.forced_past:
        return None
    exc = plan.forced_past[0]
    minimum = exc.details.get("bootloader_min", "a newer version")
    return (f"This bootloader can't take this firmware (--force went past that check: "
            f"{exc.message.rstrip('.')}), so running the same command again would stall again. "
            f"Write the vendor's combined bootloader {minimum} + firmware .hex (FULL.hex) "
            f"{plan.module.recovery_advice(port=port)}; after that, serial updates work again.")
