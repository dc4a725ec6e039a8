"""The commands doctor suggests: its findings' "what to type next", worded one way.

``FIRMWARE``/``PACKAGE`` stand for the person's file when ``--for`` wasn't given.
"""

from __future__ import annotations

from shlex import quote

from ...catalog import Module
from .. import rom_probe
from .observe import Observation

FIRMWARE = "FIRMWARE.bin"   # stands for the person's file in a suggested command when --for wasn't given
PACKAGE = "PACKAGE.zip"     # a RAK4631's DFU package
DFU_PROTOCOLS = ("nordic-dfu", "legacy-dfu")


def doctor_again(o: Observation) -> str:
    return f"rakflash doctor --port {quote(o.port or 'PORT')}"


def placeholder(module: Module | None) -> str:
    """What stands for the person's file in a suggested command: a DFU package for a RAK4631."""
    return PACKAGE if module is not None and module.protocol in DFU_PROTOCOLS else FIRMWARE


def flash_command(o: Observation, *extra: str, module: Module | None = None) -> str:
    dev = o.device
    file = quote(o.image_path) if o.image_path else placeholder(dev.module if dev else module)
    parts = ["rakflash flash", file, "--port", quote(o.port or "PORT")]
    if dev is not None and dev.baud != 115200 and not dev.usb:      # a native USB port has no baud rate
        parts += ["--baud", str(dev.baud)]
    if module is not None:
        parts += ["--module", module.key]
    return " ".join([*parts, *extra])


def recovery_command(module: Module, port: str | None) -> str:
    """The command that writes a full image (bootloader included) without the serial bootloader:
    the catalog's ``rakflash recover`` command where rakflash has a way, else pyOCD over SWD."""
    return rom_probe.recovery_command(module, port or "PORT")
