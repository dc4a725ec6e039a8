"""Adafruit legacy DFU over the Arduino RAK4631's USB port: the 1200-baud touch, then START/INIT/DATA/STOP.

The steps: open the sketch's port at 1200 baud and close it (the Arduino core
takes that as the request for its bootloader); the port re-enumerates as the
bootloader's (239A:002A); START with the image size (the bootloader erases),
INIT with the legacy init packet, DATA packets of 512 bytes, STOP; the bootloader
checks the image CRC, starts it, and the port re-enumerates as the sketch's
(239A:8029). A .hex or .bin sketch gets the init packet adafruit-nrfutil would
make for it (device type 0x0052, the image's CRC-16).
"""

from __future__ import annotations

import math
import os
import shlex
from typing import TYPE_CHECKING, Callable

from ...errors import PackageMismatch, PortNotBack, RakflashError
from ...events import Note, Retry, Sink
from ...link import Link
from ...protocols import legacy_dfu
from .base import progress_to
from .native_usb import USB_FRAME_S, USB_FULL_SPEED_BYTES_PER_S, BeforeReset, before_reset, follow

if TYPE_CHECKING:
    from ...catalog import Module
    from ...images import Image
    from ..plan import Plan


RUI3_BOOTLOADER_PACKAGE = "rui3_nrf52840_bootloader_latest.zip"   # as RAK's docs name it


def convert_command(bootloader: str = RUI3_BOOTLOADER_PACKAGE, app: str = "RUI3_APP.zip",
                    port: str = "PORT") -> str:
    """rakflash's own command for RAK's two-step conversion of an Arduino RAK4631 to RUI3
    (the CLI puts the real port in place of ``--port PORT``)."""
    return f"rakflash convert-to-rui3 {shlex.quote(bootloader)} {shlex.quote(app)} --port {port}"


def check_package(image: Image, module: Module) -> None:
    from ...dfu_package import LEGACY, DfuPackage
    pkg = image.package
    if not isinstance(pkg, DfuPackage):     # (None)
        return                       # a .hex/.bin sketch: rakflash makes the legacy init packet
    if pkg.family != LEGACY:
        raise PackageMismatch(
            f"{image.path} is a RUI3 package (Nordic Secure DFU), and this {module.name} has the "
            f"Arduino (Adafruit) bootloader, which takes only legacy DFU packages — it would erase the "
            f"sketch and then refuse the image: nothing was sent", family=pkg.family,
            hint=f"Use an Arduino build of your sketch (adafruit-nrfutil dfu genpkg, or the .hex). To "
                 f"move this module to RUI3 (afterwards it takes no Arduino uploads), its bootloader "
                 f"must be replaced first, with RAK's RUI3 bootloader package, and then this package "
                 f"flashed; rakflash does both: '{convert_command(app=image.path)}'.")
    if pkg.application is None:
        kinds = ", ".join(i.kind for i in pkg.images)
        raise PackageMismatch(f"{image.path} carries only {kinds} and no application: rakflash "
                              f"updates sketches over the serial bootloader; nothing was sent",
                              hint=f"If it is RAK's RUI3 bootloader package, convert the module to RUI3 "
                                   f"with it and the RUI3 application package: "
                                   f"'{convert_command(bootloader=image.path)}'.")
    init = pkg.application.init
    want = module.extra.get("device_type")
    if want is not None and init.device_type not in (want, 0xFFFF):
        raise PackageMismatch(f"{image.path} is made for device type {init.device_type:#06x}, and "
                              f"{module.name} is {want:#06x}: nothing was sent",
                              hint=f"Make the package again from your sketch with 'adafruit-nrfutil dfu "
                                   f"genpkg --dev-type {want:#06x} --application SKETCH.hex SKETCH.zip' "
                                   f"(or give rakflash the sketch's .hex: it makes the package itself).")


def send_clean(link: Link, module: Module, make_client: Callable[[], legacy_dfu.LegacyDfuClient],
               send: Callable[[legacy_dfu.LegacyDfuClient], None], *, serial: str | None,
               emit: Sink) -> BeforeReset:
    """``send(make_client())``; when the bootloader still holds an earlier, interrupted session,
    restart it, follow it to its new port and send again. Returns what was noted before the last
    try (the port the module leaves when it starts what was sent)."""
    for attempt in range(2):
        since = before_reset(link, serial)
        client = make_client()
        try:
            send(client)
            return since
        except legacy_dfu.EarlierSession as exc:
            # An interrupted run left its session open; only a restart ends it (see the protocol).
            if attempt:
                raise
            held = exc.expected
            client.restart_bootloader(held)
            done = (f"the bootloader still held an earlier, interrupted update (it waited for packet "
                    f"{held} of it): rakflash restarted it, and this update starts clean")
        except RakflashError as exc:
            # This update's START or INIT restarted the bootloader: an earlier session whose
            # numbering made it take one of them (a START mid-session, or an INIT after its
            # own: both reset the chip). Its port went away before any DATA was acknowledged.
            if attempt or not set(client.acknowledged) <= {"START", "INIT"} or os.path.exists(link.port_name):
                raise
            held, lost = None, exc
            done = ("the bootloader restarted at this update's first packets (it still held an earlier, "
                    "interrupted update), and this update starts again, clean")
        try:
            follow(link, module, "bootloader", since=since, emit=emit)
        except PortNotBack as exc:
            if held is None:
                raise lost from exc      # not a restart after all (a cable pulled, say): the error it was
            raise legacy_dfu.EarlierSession(held, restarted=True) from exc
        emit(Note(done))
    raise AssertionError("unreachable")


class LegacyDfuTransfer:
    name = "legacy-dfu"
    app_timeout = 10.0
    # What confirms the update instead of a version: a sketch has no console to ask.
    unconfirmed_because = "a sketch can't be asked its version; it came back on its own port"

    def check_image(self, image: Image, module: Module) -> None:
        check_package(image, module)

    def steps(self, plan: Plan) -> list[str]:
        follow = ([] if plan.device.mode == "bootloader" else   # already there: its port stays
                  ["the USB port re-enumerates as the Adafruit bootloader (239A:002A): rakflash finds it "
                   "again by its USB id and serial number"])
        return follow + [
                f"legacy DFU: START (the bootloader erases), INIT, {math.ceil(len(plan.payload) / 512)} "
                f"DATA packets of up to 512 bytes ({len(plan.payload):,} bytes), STOP — each "
                f"acknowledged, a lost one sent again",
                "the bootloader checks the image CRC and starts the sketch; its port re-enumerates "
                "as 239A:8029"]

    def confirm_step(self, plan: Plan) -> str:
        return (f"the sketch coming back on its port confirms the update; a sketch has no console, so "
                f"rakflash can't ask whether it runs {plan.app_version or 'the new version'}")

    def minimum_seconds(self, module: Module, size: int, baud: int, latency: float) -> float:
        """Every packet (header, payload, CRC, SLIP ENDs) and its 6-byte acknowledgement at USB
        full speed, one USB frame each way per packet, the erase after START; the bootloader
        programs a packet while the next one comes (it acknowledges on arrival), so programming
        counts only where it takes longer than the exchange."""
        bt = 1 / USB_FULL_SPEED_BYTES_PER_S
        packets = math.ceil(size / 512)
        overhead = 4 + 4 + 2 + 2
        wire = ((overhead + 16) + (overhead + 20) + packets * overhead + size + overhead
                + (packets + 3) * 6) * bt
        turns = (packets + 3) * 2 * max(latency, USB_FRAME_S)
        mcu = module.mcu
        return mcu.erase_seconds(size) + max(wire + turns, mcu.program_seconds(size))

    def enter_bootloader(self, link: Link, plan: Plan, emit: Sink) -> tuple[float, str | None]:
        """The 1200-baud touch and follow the port; a module already in its bootloader is used as it is."""
        module = plan.module
        if plan.device.mode == "bootloader":
            return 0.0, None
        since = before_reset(link, plan.device.serial_number)
        baud = link.baud
        link.touch(module.dialect.get("touch_baud", 1200))
        seconds = follow(link, module, "bootloader", since=since, emit=emit, baud=baud)
        return seconds, None

    def send(self, link: Link, plan: Plan, emit: Sink) -> None:
        from ... import dfu_package
        pkg = plan.image.image.package
        if isinstance(pkg, dfu_package.DfuPackage):
            assert pkg.application is not None      # (check_package refused a package without)
            init, firmware = pkg.application.init_bytes, pkg.application.firmware
        else:
            firmware = plan.payload
            init = dfu_package.legacy_init_packet(
                firmware, device_type=plan.module.extra.get("device_type", 0x0052))
        retries = [0]

        def retried(why: str) -> None:
            retries[0] += 1
            emit(Retry(retries[0], why))

        mcu = plan.module.mcu
        since = send_clean(link, plan.module, lambda: legacy_dfu.LegacyDfuClient(
            link, page_erase=mcu.page_erase_ms / 1000, page_write=1.0 + 3 * mcu.program_seconds(4096),
            progress=progress_to(emit), on_retry=retried), lambda client: client.send(init, firmware),
            serial=plan.device.serial_number, emit=emit)
        follow(link, plan.module, "app", since=since, emit=emit, timeout=self.app_timeout)

    def confirm_version(self, link: Link, plan: Plan, timeout: float, emit: Sink) -> str | None:
        """An Arduino sketch has no console to ask: the module coming back as the sketch is the confirmation."""
        emit(Note(f"{plan.module.name} came back as its sketch ({link.port_name}); an Arduino sketch "
                  f"can't be asked for its version, so rakflash can't confirm which one runs"))
        return None


TRANSFER = LegacyDfuTransfer()
