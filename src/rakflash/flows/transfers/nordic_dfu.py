"""Nordic Secure DFU over the RAK4631-R's USB port: AT+BOOT, follow the port, send the signed package.

The steps: ``AT+BOOT`` (GPREGRET 0xB1, reset) and the port re-enumerates as
"Open DFU Bootloader"; Ping, MTU and PRN; the init packet (command object), then
the firmware in 4 KiB data objects, each checked by CRC-32 before Execute; the
bootloader checks the signature and hash, starts the new firmware, and the port
re-enumerates as the application. A re-run after an interruption resumes from
the offset and CRC the bootloader reports.

A package the bootloader refuses at its init packet (signed with another key, a
downgrade of ``fw_version``) has cost nothing yet: the application is erased only
when the first data object comes (nRF5 SDK 17 single bank). So rakflash starts the
application again (``at+run``, which RAK's DFU bootloader answers beside the DFU
packets) and says so. And it remembers, per module and serial number, what the
bootloader was seen to accept — the public key that can have signed the accepted
init packet (recovered from its signature: ECDSA gives at most two, and a second
accepted package leaves one) and the ``fw_version`` it installed — so that the next
package signed with another key, or a lower ``fw_version``, is refused before
``AT+BOOT``: its bootloader would refuse it anyway.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from ... import dfu_package
from ...errors import DfuRejected, PackageMismatch, RakflashError
from ...events import Note, Retry, Sink
from ...link import Link
from ...protocols import nordic_dfu
from .base import progress_to
from .legacy_dfu import convert_command
from .native_usb import USB_FRAME_S, USB_FULL_SPEED_BYTES_PER_S, before_reset, follow

if TYPE_CHECKING:
    from ...catalog import Module
    from ...images import Image
    from ..identify import DeviceInfo
    from ..plan import Plan

CONVERSION_HINT = ("To run RUI3 on an Arduino RAK4631, its bootloader must be replaced first, then the "
                   "RUI3 package flashed: '" + convert_command(port="ITS_PORT") + "', with that "
                   "module's port, does both.")


def check_package(image: Image, module: Module) -> None:
    """Refuse, before anything is sent, what this bootloader would refuse or can't take."""
    from ...dfu_package import SECURE
    pkg = image.package
    path = image.path
    if not isinstance(pkg, dfu_package.DfuPackage):     # (None: a plain image)
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


# ------------------------------------------------------------------ what the bootloader was seen to accept

SEEN_FILE_MAX = 16 * 1024


def _seen_file(module: Module, serial: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rakflash"
    return base / f"dfu-accepted-{module.key}-{re.sub(r'[^A-Za-z0-9_.-]', '_', serial)[:64]}.json"


def signers(data: bytes, signature: bytes) -> list[bytes]:
    """The raw public keys (64 bytes, x ‖ y) that can have made an nrfutil-style signature
    (r and s little-endian) of ``data``: ECDSA public key recovery (python-ecdsa)."""
    from ecdsa import NIST256p, VerifyingKey
    from ecdsa.util import sigdecode_string
    if len(signature) != 64:
        return []
    big = signature[:32][::-1] + signature[32:][::-1]
    try:
        keys = VerifyingKey.from_public_key_recovery(big, data, NIST256p, hashfunc=hashlib.sha256,
                                                     sigdecode=sigdecode_string)
    except Exception:         # not a valid signature at all: nothing to learn from it
        return []
    return [k.to_string() for k in keys]


def seen_accepted(module: Module, serial: str | None) -> dict | None:
    """What rakflash saw this module's bootloader accept (None: nothing, or an unreadable file,
    which is never a reason to refuse)."""
    if not serial:
        return None
    try:
        fd = os.open(_seen_file(module, serial), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None       # a FIFO or a device: never read (it could block)
            data = json.loads(f.read(SEEN_FILE_MAX).decode("utf-8"))
        if data.get("module") != module.key or data.get("serial_number") != serial:
            return None
        keys = [bytes.fromhex(k) for k in data.get("signers") or []]
        version = data.get("fw_version")
        return {"signers": [k for k in keys if len(k) == 64],
                "fw_version": version if isinstance(version, int) and not isinstance(version, bool) else None,
                "when": str(data.get("when") or "an earlier run")}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError, RecursionError):
        return None


def remember_accepted(module: Module, serial: str | None, init) -> None:
    """Note that the bootloader of ``module`` ``serial`` accepted and installed ``init``."""
    if not serial:
        return
    earlier = seen_accepted(module, serial) or {}
    keys = signers(init.command_bytes, init.signature) if init.signed else []
    both = [k for k in keys if k in (earlier.get("signers") or [])]
    record = {"module": module.key, "serial_number": serial, "signers": [k.hex() for k in (both or keys)],
              "fw_version": init.fw_version,
              "when": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    path = _seen_file(module, serial)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
    except OSError:
        pass          # nothing kept: the next run just can't refuse early


def check_device(image: Image, module: Module, device: DeviceInfo) -> None:
    """Refuse, before AT+BOOT, a package this module's bootloader was seen to refuse the like of:
    signed with another key than the one it accepted, or a lower fw_version than it installed."""
    from ... import ports
    pkg = image.package
    app = pkg.application if isinstance(pkg, dfu_package.DfuPackage) else None
    try:
        entry = ports.port_entry(device.port)
    except Exception:          # listing ports must never stop a plan
        entry = None
    # Keyed by the USB serial number (the chip's, the same in the bootloader and the
    # application), as remember_accepted keys it; the module's own when the OS tells none.
    seen = seen_accepted(module, (entry.serial_number if entry else None) or device.serial_number)
    if app is None or seen is None:
        return
    init = app.init
    if init.signed and seen["signers"] and not any(
            dfu_package.verify(init.command_bytes, init.signature, k) for k in seen["signers"]):
        raise PackageMismatch(
            f"{image.path} is signed with another key than the packages this {module.name}'s bootloader "
            f"accepted (rakflash updated it on {seen['when']}): its bootloader would refuse it "
            f"(Extended Error 0x0c, after AT+BOOT); nothing was sent",
            reason="other-key",
            hint=f"Use the package signed with the key {module.name}'s bootloader checks (RAK's RUI3 "
                 f"package, or yours signed with the key your bootloader was built with). If its "
                 f"bootloader was replaced since, --force sends it anyway.")
    if init.fw_version is not None and seen["fw_version"] is not None and init.fw_version < seen["fw_version"]:
        raise PackageMismatch(
            f"{image.path} has application version (fw_version) {init.fw_version}, lower than the "
            f"{seen['fw_version']} rakflash installed on this {module.name} on {seen['when']}: its "
            f"bootloader refuses a downgrade (Extended Error 0x05, after AT+BOOT); nothing was sent",
            reason="fw-version",
            hint=f"Use a package made with --application-version {seen['fw_version']} or higher "
                 f"('nrfutil pkg generate --application-version …'); --force sends this one anyway.")


def timeouts(plan: Plan) -> nordic_dfu.Timeouts:
    mcu = plan.module.mcu
    obj = mcu.erase_seconds(4096) + mcu.program_seconds(4096)
    return nordic_dfu.Timeouts(reply=2.0, create=2.0 + 3 * mcu.erase_seconds(4096),
                               execute=2.0 + 3 * obj, last_execute=15.0 + 3 * obj, ping=5.0)


class NordicDfuTransfer:
    name = "nordic-dfu"
    app_timeout = 10.0

    def check_image(self, image: Image, module: Module) -> None:
        check_package(image, module)

    def check_device(self, image: Image, module: Module, device: DeviceInfo) -> None:
        check_device(image, module, device)

    def steps(self, plan: Plan) -> list[str]:
        follow = ([] if plan.device.mode == "bootloader" else   # already there: its port stays
                  ["the USB port re-enumerates as the DFU bootloader (1915:521F \"Open DFU Bootloader\"): "
                   "rakflash finds it again by its USB id and serial number"])
        return follow + [
                f"Nordic Secure DFU: the signed init packet, then {len(plan.payload):,} bytes in "
                f"{math.ceil(len(plan.payload) / 4096)} objects of 4 KiB, each checked by CRC-32 "
                f"(a re-run resumes from what the bootloader kept)",
                "the bootloader checks the signature and hash and starts the new firmware; its port "
                "re-enumerates as the application"]

    def minimum_seconds(self, module: Module, size: int, baud: int, latency: float) -> float:
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

    def enter_bootloader(self, link: Link, plan: Plan, emit: Sink) -> tuple[float, str | None]:
        """AT+BOOT and follow the port; a module already in its DFU bootloader is used as it is."""
        module = plan.module
        if plan.device.mode == "bootloader":
            return 0.0, plan.device.bootloader_version
        since = before_reset(link, plan.device.serial_number)
        link.write_line(module.dialect["boot"][0])
        link.step(f"{module.dialect['boot'][0]} → no answer expected: the port re-enumerates")
        seconds = follow(link, module, "bootloader", since=since, emit=emit)
        return seconds, None

    def send(self, link: Link, plan: Plan, emit: Sink) -> int | None:
        """Send the package; the byte it resumed at (what an interrupted run left in the
        bootloader), or None when it sent the whole firmware."""
        pkg = plan.image.image.package
        assert isinstance(pkg, dfu_package.DfuPackage) and pkg.application is not None   # (check_package's)
        app = pkg.application
        since = before_reset(link, plan.device.serial_number)    # the new firmware re-enumerates
        retries = [0]

        def retried(why: str) -> None:
            retries[0] += 1
            emit(Retry(retries[0], why))

        client = nordic_dfu.SecureDfuClient(link, timeouts=timeouts(plan), progress=progress_to(emit),
                                            on_retry=retried)
        try:
            report = client.send(app.init_bytes, app.firmware)
        except DfuRejected as exc:
            if client.report.objects == 0 and exc.details.get("offset") is None:
                self._leave_after_refusal(link, plan, exc, since, emit)
            raise
        if report.resumed_from:
            emit(Note(f"resumed at byte {report.resumed_from:,} of {len(app.firmware):,}: the "
                      f"bootloader had kept what an interrupted run sent"))
        follow(link, plan.module, "app", since=since, emit=emit, timeout=self.app_timeout)
        remember_accepted(plan.module, since.serial, app.init)     # USB serial, else the module's
        return report.resumed_from or None

    def _leave_after_refusal(self, link: Link, plan: Plan, exc: DfuRejected, since, emit: Sink) -> None:
        """Refused at the init packet: nothing was written, the application is as it was. Start
        it again (``at+run``), and say where the module is either way — also when there is no
        application to start (an interrupted update erased it, or a conversion left none)."""
        module = plan.module
        boot_port = link.port_name
        nothing = f"; nothing was written: {module.name} waits in its bootloader on {boot_port}"
        try:
            link.discard_input()
            link.write((module.boot_dialect["run"] + "\r\n").encode())
            answer = link.read_line(1.0) or b""
        except RakflashError:
            answer = b""                # the port went away: the application starting, most likely
        if b"Jump failed" in answer:    # the RUI bootloader console: "No legal application detected."
            exc.message += (nothing + ", with no application to start (an earlier update or the "
                                      "conversion to RUI3 left none)")
            exc.hint = (exc.hint.rstrip(". ") + ". Until a package it accepts is written, it stays in its "
                        "bootloader; 'rakflash flash' of that package goes on from there.")
            return
        try:
            follow(link, module, "app", since=since, emit=emit, timeout=self.app_timeout)
        except RakflashError:          # not back (or the port failed): the refusal stays the error
            exc.message += (nothing + ", its application unchanged — press its reset button to start "
                                      "the application, or flash the right package")
            return
        exc.message += (f"; nothing was written, and {module.name} runs its application again "
                        f"(unchanged) on {link.port_name}")


TRANSFER = NordicDfuTransfer()
