"""Arduino RAK4631 → RAK4631-R (RUI3), RAK's documented conversion as one guided flow.

RAK's steps (rakwireless-docs RAK4631-R "DFU"; forum "Updating RAK4631 to RUI3"):
first ``adafruit-nrfutil dfu serial --package rui3_nrf52840_bootloader_latest.zip
--singlebank --touch 1200`` — the Adafruit bootloader takes RUI3's bootloader as a
bootloader update over its legacy DFU and replaces itself — then ``nrfutil dfu
usb-serial`` of the RUI3 application package to the new Secure DFU bootloader.

Here: check both packages and the module before anything is sent; the 1200-baud
touch; the bootloader package over legacy DFU (mode bootloader, or SoftDevice +
bootloader); follow the port to the new bootloader (1915:521F); then an ordinary
``flash`` of the RUI3 package (:class:`~rakflash.flows.session.FlashSession`),
which confirms the new firmware's version. Interrupted after the first step, the
module is a RAK4631-R waiting in its bootloader: ``rakflash flash APP.zip`` finishes.
"""

from __future__ import annotations

from typing import Callable

from .. import catalog as _catalog
from ..dfu_package import LEGACY, SECURE, DfuPackage
from ..errors import Aborted, ImageTargetError, NotFirmware, PackageMismatch, WrongTarget
from ..events import Note, Phase, Sink, nowhere
from ..images import Image, analyse, check_firmware
from ..link import Link
from ..protocols import legacy_dfu
from .identify import DeviceInfo, identify
from .session import FlashOptions, FlashSession
from .transfers.base import progress_to
from .transfers.legacy_dfu import send_clean
from .transfers.native_usb import before_reset, follow
from .update import UpdateResult


def check_packages(bootloader: Image, app: Image) -> None:
    """Refuse, before anything is sent, packages that are not the two this conversion needs
    (and, as every write path does, files that are not firmware: :func:`images.analyse`)."""
    cat = _catalog.load()
    for image in (bootloader, app):
        check_firmware(image)
    bl = bootloader.package
    if not isinstance(bl, DfuPackage) or bl.family != LEGACY or not (bl.image("bootloader") or bl.image("softdevice_bootloader")):
        raise PackageMismatch(f"{bootloader.path} is not a bootloader package for the Adafruit bootloader "
                              f"(RAK's rui3_nrf52840_bootloader_latest.zip is one): nothing was sent",
                              hint="Give RAK's RUI3 bootloader package first, then the RUI3 application package.")
    pkg = app.package
    if not isinstance(pkg, DfuPackage) or pkg.family != SECURE or pkg.application is None:
        raise PackageMismatch(f"{app.path} is not a RUI3 application package (Nordic Secure DFU): nothing "
                              f"was sent", hint="Give the RUI3 package for RAK4631-R second.")
    linked = pkg.linked_elsewhere()     # the plan refuses it too, but only after the bootloader changed
    if linked is not None:
        raise PackageMismatch(f"{app.path}: {linked.describe()}; nothing was sent", hint=linked.next_step(),
                              linked_for=linked.linked_for)
    # Each package's firmware against the module that takes it: the Adafruit bootloader
    # takes the bootloader package, RUI3's bootloader the application package.
    for image, key in ((bootloader, "rak4631-arduino"), (app, "rak4631-r")):
        try:
            analyse(image, module=cat.module(key))
        except NotFirmware:
            raise
        except ImageTargetError as exc:
            raise WrongTarget(f"{exc.message}: nothing was sent", hint=exc.hint) from None


def convert_to_rui3(link: Link, bootloader: Image, app: Image, *, emit: Sink = nowhere,
                    confirm: Callable[[DeviceInfo], bool] | None = None) -> UpdateResult:
    """Replace an Arduino RAK4631's bootloader with RUI3's, then flash the RUI3 application."""
    cat = _catalog.load()
    arduino, rui3 = cat.module("rak4631-arduino"), cat.module("rak4631-r")
    check_packages(bootloader, app)
    emit(Phase("identify", f"identifying the module on {link.port_name}"))
    dev = identify(link)
    if dev.module is not None and dev.module.key == rui3.key:
        emit(Note("the module already has RUI3's bootloader: only the application is flashed"))
    elif dev.module is None or dev.module.key != arduino.key:
        raise WrongTarget(f"{link.port_name} is {dev.module.name if dev.module else 'no RAK4631'}, not an "
                          f"Arduino RAK4631: nothing was sent",
                          hint="Check the port ('rakflash ports' lists a RAK4631 by its USB id).")
    else:
        if confirm is not None and not confirm(dev):
            raise Aborted("conversion not confirmed")
        if dev.mode == "app":
            emit(Phase("boot", "entering the Adafruit bootloader (1200-baud touch)"))
            since = before_reset(link, dev.serial_number)
            baud = link.baud
            link.touch(arduino.dialect.get("touch_baud", 1200))
            follow(link, arduino, "bootloader", since=since, emit=emit, baud=baud)
        pkg = bootloader.package
        assert isinstance(pkg, DfuPackage)       # (check_packages saw to it, and to its bootloader)
        image = pkg.image("softdevice_bootloader") or pkg.image("bootloader")
        assert image is not None
        meta = (pkg.manifest.get(image.kind) or {}).get("info_read_only_metadata") or {}
        if image.kind == "softdevice_bootloader":
            mode = legacy_dfu.MODE_SD_BL
            bl_size = int(meta.get("bl_size", 0))
            sd_size = int(meta.get("sd_size", len(image.firmware) - bl_size))
        else:
            mode, sd_size, bl_size = legacy_dfu.MODE_BOOTLOADER, 0, len(image.firmware)
        emit(Phase("write", f"writing RUI3's bootloader ({len(image.firmware):,} bytes) over the Adafruit "
                            f"bootloader's legacy DFU", {"bytes": len(image.firmware)}))
        since = send_clean(   # then it restarts as a RAK4631-R
            link, arduino, lambda: legacy_dfu.LegacyDfuClient(link, progress=progress_to(emit)),
            lambda client: client.send(image.init_bytes, image.firmware, mode=mode, sd_size=sd_size,
                                       bl_size=bl_size), serial=dev.serial_number, emit=emit)
        follow(link, rui3, "bootloader", since=since, emit=emit, timeout=20.0)
        emit(Note("the module is now a RAK4631-R waiting in its Secure DFU bootloader; if anything stops "
                  "here, 'rakflash flash' of the RUI3 package finishes the job"))
    result = FlashSession(link, app, FlashOptions(module=rui3, keep_settings=False), emit=emit).run()
    assert isinstance(result, UpdateResult)      # (not a dry run)
    return result
