"""Nordic Secure DFU over the RAK4631-R's USB port: AT+BOOT, follow the port, send the signed package.

The steps: ``AT+BOOT`` (GPREGRET 0xB1, reset) and the port re-enumerates as
"Open DFU Bootloader"; Ping, MTU and PRN; the init packet (command object), then
the firmware in 4 KiB data objects, each checked by CRC-32 before Execute; the
bootloader checks the signature and hash, starts the new firmware, and the port
re-enumerates as the application. A re-run after an interruption resumes from
the offset and CRC the bootloader reports.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ...errors import PackageMismatch
from ...events import Note, Retry, Sink
from ...link import Link
from ...protocols import nordic_dfu
from .base import progress_to
from .legacy_dfu import convert_command
from .native_usb import USB_FRAME_S, USB_FULL_SPEED_BYTES_PER_S, before_reset, follow

if TYPE_CHECKING:
    from ...catalog import Module
    from ...images import Image
    from ..plan import Plan

CONVERSION_HINT = ("To run RUI3 on an Arduino RAK4631, its bootloader must be replaced first, then the "
                   "RUI3 package flashed: '" + convert_command(port="ITS_PORT") + "', with that "
                   "module's port, does both.")


def check_package(image: "Image", module: "Module") -> None:
    """Refuse, before anything is sent, what this bootloader would refuse or can't take."""
    from ...dfu_package import SECURE
    pkg = image.package
    path = image.path
    if pkg is None:
        raise PackageMismatch(
            f"{path} is a plain {image.format} image, and {module.name}'s bootloader (Nordic Secure "
            f"DFU) takes only signed DFU packages (.zip): nothing was sent",
            hint="Use RAK's RUI3 package (.zip) for RAK4631-R, or make one: 'nrfutil pkg generate "
                 "--hw-version 52 --sd-req 0x0100 --application-version 1 --application FILE.hex "
                 "--key-file KEY.pem PKG.zip' (RAK4631-R bootloaders check RAK's key).")
    if pkg.family != SECURE:
        raise PackageMismatch(
            f"{path} is an Arduino package (Adafruit legacy DFU), and this {module.name} has RUI3's "
            f"Nordic Secure DFU bootloader, which would refuse it (nrfutil says 'Extended Error "
            f"0x07'): nothing was sent", family=pkg.family,
            hint="Use the RUI3 firmware package for RAK4631-R. Arduino sketches need the Arduino "
                 "(Adafruit) bootloader; a RAK4631-R can't take them over its serial port.")
    app = pkg.application
    if app is None:
        kinds = ", ".join(i.kind for i in pkg.images)
        raise PackageMismatch(f"{path} carries only {kinds} and no application: rakflash updates "
                              f"applications over the serial bootloader; nothing was sent",
                              hint="Use the application package, or 'nrfutil dfu usb-serial' for "
                                   "a bootloader or SoftDevice update.")
    init = app.init
    hw = module.extra.get("hw_version")
    if hw is not None and init.hw_version not in (None, hw):
        raise PackageMismatch(f"{path} is made for hardware version {init.hw_version}, and "
                              f"{module.name} is {hw}: its bootloader would refuse it; nothing was sent",
                              hint=f"Use the package made for {module.name} (--hw-version {hw}).")
    sd = module.extra.get("sd_req") or []
    if sd and init.sd_req and not set(sd) & set(init.sd_req):
        listed = ", ".join(f"{x:#06x}" for x in init.sd_req)
        raise PackageMismatch(f"{path} requires SoftDevice {listed}, and {module.name} has "
                              f"{', '.join(f'{x:#06x}' for x in sd)} (RUI3's S140 7.x): its bootloader "
                              f"would refuse it with 'Extended Error 0x07'; nothing was sent",
                              hint="Use the RUI3 package for RAK4631-R (made with --sd-req 0x0100). "
                                   + CONVERSION_HINT)
    if not init.signed:
        raise PackageMismatch(f"{path} is not signed, and {module.name}'s bootloader takes only "
                              f"signed packages: nothing was sent",
                              hint="Use RAK's signed RUI3 package, or sign yours with 'nrfutil pkg "
                                   "generate --key-file' (the key the bootloader was built with).")


def timeouts(plan: "Plan") -> nordic_dfu.Timeouts:
    mcu = plan.module.mcu
    obj = mcu.erase_seconds(4096) + mcu.program_seconds(4096)
    return nordic_dfu.Timeouts(reply=2.0, create=2.0 + 3 * mcu.erase_seconds(4096),
                               execute=2.0 + 3 * obj, last_execute=15.0 + 3 * obj, ping=5.0)


class NordicDfuTransfer:
    name = "nordic-dfu"
    app_timeout = 10.0

    def check_image(self, image: "Image", module: "Module") -> None:
        check_package(image, module)

    def steps(self, plan: "Plan") -> list[str]:
        follow = ([] if plan.device.mode == "bootloader" else   # already there: its port stays
                  ["the USB port re-enumerates as the DFU bootloader (1915:521F \"Open DFU Bootloader\"): "
                   "rakflash finds it again by its USB id and serial number"])
        return follow + [
                f"Nordic Secure DFU: the signed init packet, then {len(plan.payload):,} bytes in "
                f"{math.ceil(len(plan.payload) / 4096)} objects of 4 KiB, each checked by CRC-32 "
                f"(a re-run resumes from what the bootloader kept)",
                "the bootloader checks the signature and hash and starts the new firmware; its port "
                "re-enumerates as the application"]

    def minimum_seconds(self, module: "Module", size: int, baud: int, latency: float) -> float:
        """USB CDC has no baud rate: every byte at USB full speed's bulk rate, one USB frame per
        answer each way, and the flash time (erase before each object's answer; programming
        while the next bytes stream in, so only what exceeds the wire time counts)."""
        bt = 1 / USB_FULL_SPEED_BYTES_PER_S
        objects = math.ceil(size / 4096)
        writes = math.ceil(size / 1024)
        setup = (3 + 5) + (2 + 6) + (4 + 4) + (3 + 16)            # ping, MTU, PRN, select data
        init = (3 + 16) + (7 + 4) + (2 + 150) + (2 + 12) + (2 + 4)  # select, create, write, crc, execute
        per_object = (7 + 4) + (2 + 12) + (2 + 4)                  # create, crc, execute (+ answers)
        wire = (setup + init + objects * per_object + size + 2 * writes) * bt
        turns = (4 + 4 + 3 * objects) * 2 * max(latency, USB_FRAME_S)
        mcu = module.mcu
        erase = objects * mcu.erase_seconds(4096)
        return turns + erase + max(wire, mcu.program_seconds(size))

    def enter_bootloader(self, link: Link, plan: "Plan", emit: Sink) -> tuple[float, str | None]:
        """AT+BOOT and follow the port; a module already in its DFU bootloader is used as it is."""
        module = plan.module
        if plan.device.mode == "bootloader":
            return 0.0, plan.device.bootloader_version
        since = before_reset(link, plan.device.serial_number)
        link.write_line(module.dialect["boot"][0])
        seconds = follow(link, module, "bootloader", since=since, emit=emit)
        return seconds, None

    def send(self, link: Link, plan: "Plan", emit: Sink) -> int | None:
        """Send the package; the byte it resumed at (what an interrupted run left in the
        bootloader), or None when it sent the whole firmware."""
        pkg = plan.image.image.package
        app = pkg.application
        since = before_reset(link, plan.device.serial_number)    # the new firmware re-enumerates
        retries = [0]

        def retried(why: str) -> None:
            retries[0] += 1
            emit(Retry(retries[0], why))

        client = nordic_dfu.SecureDfuClient(link, timeouts=timeouts(plan), progress=progress_to(emit),
                                            on_retry=retried)
        report = client.send(app.init_bytes, app.firmware)
        if report.resumed_from:
            emit(Note(f"resumed at byte {report.resumed_from:,} of {len(app.firmware):,}: the "
                      f"bootloader had kept what an interrupted run sent"))
        follow(link, plan.module, "app", since=since, emit=emit, timeout=self.app_timeout)
        return report.resumed_from or None


TRANSFER = NordicDfuTransfer()
