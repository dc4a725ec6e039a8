"""Virtual RAK4631 modules (nRF52840, native USB): RUI3 + Nordic Secure DFU, and Arduino + Adafruit DFU.

What makes them different from the UART modules:

* **Native USB**: the module *is* the USB device, so every reset drops the port
  and it comes back as a new one (on Linux ``ttyACM0`` → ``ttyACM1``). The
  simulator serves each power-up on a **new pty path** and registers that path
  with the USB identity it would have (:mod:`rakflash.ports` virtual ports):
  vendor/product id, product string, serial number. There is no baud rate: the
  line runs at the USB full-speed bulk rate (:data:`USB_FULL_SPEED_BAUD`) unless
  the options say otherwise, and any host baud rate works — except that the
  Arduino core takes a host setting 1200 baud as the request to enter its
  bootloader (the "1200-baud touch").
* **RAK4631-R (RUI3)**: the RUI3 AT application; ``AT+BOOT`` sets GPREGRET to
  0xB1 and resets into the Nordic Secure DFU bootloader (1915:521F, product
  "Open DFU Bootloader"; the application is 1915:521F "Rak4631 Serial COM").
  The bootloader serves :class:`~rakflash.sim.nordic_dfu.SecureDfuTarget`
  and checks every init packet as the nRF5 SDK 17 bootloader does: signed with
  the key it was built with (``SimOptions.dfu_key``; real modules carry the
  public half of RAK's published key), hardware version 52, SoftDevice 0x0100
  in ``sd_req``, no downgrade, SHA-256 of the image. Its progress survives a
  reset, so an interrupted update resumes.
* **RAK4631 (Arduino)**: a quiet sketch on 239A:8029; a 1200-baud touch sets
  GPREGRET 0x4E and resets into the Adafruit bootloader's serial-only DFU
  (239A:002A); with no valid application it starts in the UF2 bootloader
  (239A:0029). The bootloader serves
  :class:`~rakflash.protocols.legacy_dfu.LegacyDfuTarget`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time

from .. import dfu_package
from ..ports import register_virtual_port, unregister_virtual_port
from ..protocols import legacy_dfu
from .device import Mode, VirtualModule
from .nordic_dfu import DfuState, InitVerdict, SecureDfuTarget
from .rui3 import Rui3Module
from .uart import PowerCut, SimUart

# USB full speed moves at most 19 bulk packets of 64 bytes per 1 ms frame: 1,216,000
# bytes/s of payload. The pty line counts 10 bits a byte, so this "baud" is that rate.
USB_FULL_SPEED_BAUD = 12_160_000
USB_LATENCY_MS = 1.0          # a USB frame: the host polls a device's IN endpoint once per ms

SD_S140_7 = 0x0100            # FWID of SoftDevice S140 7.x (RUI3 packages: --sd-req 0x0100)
SD_S140_6_1_1 = 0x00B6        # FWID of S140 6.1.1 (Adafruit's RAK4631 bootloader)


class UsbCdcUart(SimUart):
    """A port (pty or TCP) that is registered as a USB CDC port for as long as it is open."""

    def __init__(self, identity: dict, **kw) -> None:
        super().__init__(**kw)
        self.identity = identity
        register_virtual_port(self.path, **identity)

    def close(self) -> None:
        if not self.closed:
            unregister_virtual_port(self.path)
        super().close()


_locations = itertools.count(1)


class NativeUsbModule(VirtualModule):
    """A module whose USB port re-enumerates (on a new path) at every reset.

    It keeps its USB location (the hub port it is plugged into, as pyserial's
    ``location`` says ``1-1.2:1.0``) through every re-enumeration: a virtual one per
    module, ``sim-PID.N``, so a host can tell two modules with the same ids apart.
    """

    gpregret = 0
    usb_location: str | None = None

    def usb_identity(self, mode: Mode) -> dict:
        raise NotImplementedError

    def identity(self, mode: Mode) -> dict:
        """What the port registers: the USB identity of what runs, and where it is plugged in
        (without the product string where the host lists none, as pyserial on Windows)."""
        usb = self.usb_identity(mode)
        if not self.opts.usb_product:
            usb["product"] = None
        return {**usb, "location": self.usb_location}

    def boot_mode(self) -> Mode:
        return Mode.BOOTLOADER if (self.boot_request or not self.app_present()) else Mode.APP

    def _connect(self) -> None:
        o = self.opts
        if self.usb_location is None:
            self.usb_location = f"sim-{os.getpid()}.{next(_locations)}"
        self._usb_mode = self.boot_mode()
        self.uart = UsbCdcUart(self.identity(self._usb_mode), baud=o.baud,
                               latency=o.latency_ms / 1000, faults=o.faults, strict_baud=False,
                               transport=o.transport)
        self._fresh = True
        self.port_changed = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sim-{self.module.key}")

    def _reenumerate(self, mode: Mode) -> None:
        """The USB device goes away and comes back with the identity of what now runs."""
        old = self.uart
        o = self.opts
        self._usb_mode = mode
        self.uart = UsbCdcUart(self.identity(mode), baud=o.baud, latency=o.latency_ms / 1000,
                               faults=o.faults, strict_baud=False, transport=o.transport)
        old.close()
        self.port_changed.set()

    def wait_port_change(self, old: str, timeout: float = 5.0) -> str | None:
        """The new port path once the module re-enumerated away from ``old`` (for tests)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.port != old and not self.uart.closed:
                return self.port
            time.sleep(0.01)
        return None

    def _run(self) -> None:
        while not self._stop:
            if self.uart.closed:
                return                              # the cable was pulled
            mode = self.boot_mode()
            if not self._fresh:
                self._reenumerate(mode)
            self._fresh = False
            uart = self.uart
            self._booted_at = time.monotonic()
            self._set_mode(mode)
            try:
                if mode is Mode.BOOTLOADER:
                    self.run_bootloader()
                else:
                    self.run_app()
            except PowerCut:
                pass
            except OSError:
                if uart.closed:
                    return                          # the cable was pulled under the firmware
                raise
            self.resets += 1

    def stop(self) -> None:
        self._stop = True
        self.uart.close()
        self._thread.join(timeout=2)


# ------------------------------------------------------------------ RUI3 + Secure DFU

class Rak4631(NativeUsbModule, Rui3Module):
    """RAK4631-R: RUI3 application, Nordic Secure DFU bootloader (nRF5 SDK 17.0.2)."""

    MTU = 2051                    # SLIP MTU of the SDK's USB CDC transport: 2 × (1024 + 1) + 1
    INACTIVITY = 120.0            # the SDK bootloader resets after this long without DFU traffic

    def __init__(self, module, options=None) -> None:
        from .device import SimOptions
        options = options or SimOptions()
        if options.dfu_key is None:
            options.dfu_key = dfu_package.new_signing_key()
        self.dfu_public_key = dfu_package.public_key_bytes(options.dfu_key)
        self.dfu_state = DfuState()      # the bootloader settings page
        self.installed_fw_version = 1               # fw_version of the running application
        self._pending_init: dfu_package.InitPacket | None = None
        super().__init__(module, options)

    @property
    def signing_key(self) -> bytes | None:
        """The private key the bootloader trusts, if it was given one (tests sign with it)."""
        key = self.opts.dfu_key
        return key if key is not None and b"PRIVATE" in key else None

    def usb_identity(self, mode: Mode) -> dict:
        product = "Open DFU Bootloader" if mode is Mode.BOOTLOADER else "Rak4631 Serial COM"
        return {"vid": 0x1915, "pid": 0x521F, "product": product, "serial_number": self.opts.serial_number}

    def handle_app_line(self, line: str, version):
        if line.upper() == "AT+BOOT":
            self.gpregret = self.module.extra.get("gpregret", 0xB1)
        return super().handle_app_line(line, version)

    # -- bootloader ------------------------------------------------------------
    def run_bootloader(self) -> None:
        self.gpregret = 0
        while not self._stop:
            target = SecureDfuTarget(self.uart, self, self.dfu_state, mtu=self.MTU,
                                                idle_timeout=self.INACTIVITY, on_text=self.boot_console_line)
            outcome = target.serve()
            if outcome == "activated":
                self.app_valid = True
                self.boot_request = False
                self.updates += 1
                self.uart.drain()
                return
            if outcome == "text":
                return
            if outcome == "idle" and self.app_present():
                self.boot_request = False
                return

    # -- the DFU backend (nRF5 SDK nrf_dfu_validation, as far as an application update goes)
    def check_init(self, data: bytes) -> InitVerdict:
        try:
            init = dfu_package.parse_init(data)
        except Exception:
            init = None
        if init is None or init.family != dfu_package.SECURE:
            return InitVerdict(ext_error=0x04)        # init command invalid
        if not init.signed:
            return InitVerdict(ext_error=0x08)        # signature missing
        if init.signature_type != "ECDSA_P256_SHA256":
            return InitVerdict(ext_error=0x0B)
        if not dfu_package.verify(init.command_bytes, init.signature, self.dfu_public_key):
            return InitVerdict(ext_error=0x0C)        # verification failed
        if init.fw_type != "APPLICATION" or not init.app_size:
            return InitVerdict(ext_error=0x04)        # the sim takes application updates only
        if init.hw_version != self.module.extra.get("hw_version", 52):
            return InitVerdict(ext_error=0x06)
        if SD_S140_7 not in init.sd_req:
            return InitVerdict(ext_error=0x07)
        if init.fw_version is not None and init.fw_version < self.installed_fw_version:
            return InitVerdict(ext_error=0x05)
        if init.hash_type != "SHA256":
            return InitVerdict(ext_error=0x09)
        if init.app_size > self.module.app.size:
            return InitVerdict(ext_error=0x0D)
        self._pending_init = init
        return InitVerdict(firmware_size=init.app_size)

    def begin_object(self, offset: int, size: int) -> None:
        app = self.module.app
        if offset == 0:
            self.app_valid = False          # single bank: the old application is gone from here on
        self.flash.erase(app.start + offset, app.start + offset + size)

    def write(self, offset: int, data: bytes) -> None:
        self.flash.program(self.module.app.start + offset, data)

    def check_firmware(self, size: int) -> int | None:
        init = self._pending_init or dfu_package.parse_init(self.dfu_state.command)
        image = self.flash.read(self.module.app.start, size)
        if hashlib.sha256(image).digest()[::-1] != init.hash:
            return 0x0C
        return None

    def activate(self) -> None:
        init = self._pending_init or dfu_package.parse_init(self.dfu_state.command)
        if init.fw_version is not None:
            self.installed_fw_version = init.fw_version
        self._pending_init = None


# ------------------------------------------------------------------ Arduino + Adafruit legacy DFU

class Rak4631Arduino(NativeUsbModule):
    """RAK4631 with the Adafruit nRF52 bootloader: an Arduino sketch, legacy serial DFU."""

    TOUCH_BAUD = 1200

    def usb_identity(self, mode: Mode) -> dict:
        if mode is Mode.BOOTLOADER:
            serial_only = self.gpregret == self.module.extra.get("gpregret", 0x4E)
            return {"vid": 0x239A, "pid": 0x002A if serial_only else 0x0029,
                    "product": "WisBlock RAK4631 Bootloader", "serial_number": self.opts.serial_number}
        return {"vid": 0x239A, "pid": 0x8029, "product": "WisBlock RAK4631",
                "serial_number": self.opts.serial_number}

    def boot_mode(self) -> Mode:
        return Mode.BOOTLOADER if (self.gpregret or self.boot_request or not self.app_present()) else Mode.APP

    def run_app(self) -> None:
        """A quiet sketch; the core watches for the 1200-baud touch."""
        while not self._stop:
            if self.uart.host_baud() == self.TOUCH_BAUD:
                self.gpregret = self.module.extra.get("gpregret", 0x4E)
                return
            self.uart.read(4096, 0.02)

    def handle_app_line(self, line: str, version):
        return None

    new_bootloader: bytes | None = None     # a bootloader image received over DFU, installed at the reset

    def run_bootloader(self) -> None:
        self.boot_request = False
        # The bootloader clears GPREGRET once it has read it (Adafruit_nRF52_Bootloader src/main.c):
        # a reset from here on comes back as 239A:0029 (its sketch erased) or as the sketch.
        self.gpregret = 0
        while not self._stop:
            outcome = legacy_dfu.LegacyDfuTarget(self.uart, _AdafruitBackend(self)).serve()
            if outcome == "reset":
                self.uart.drain()
                return                  # a START mid-session: its error handler resets the chip
            if outcome == "activated":
                self.gpregret = 0
                self.updates += 1
                self.uart.drain()
                if self.new_bootloader is not None:
                    self._become_rui3(self.new_bootloader)
                else:
                    self.app_valid = True
                return

    def _become_rui3(self, bootloader: bytes) -> None:
        """RAK's conversion: the Adafruit bootloader installed RUI3's Secure DFU bootloader over itself.

        From the next reset the module is a RAK4631-R with no application: its new
        bootloader waits for the RUI3 package, on 1915:521F "Open DFU Bootloader". The
        simulator has no model of RUI3's bootloader beyond the version string its image
        carries, so the object becomes the virtual RAK4631-R (the key it trusts:
        ``SimOptions.dfu_key``, else a new one).
        """
        from .. import catalog
        rui3 = catalog.load().module("rak4631-r")
        boot = rui3.region("bootloader")
        self.flash.erase(boot.start, boot.end)
        self.flash.program(boot.start, bootloader[:boot.size])
        self.new_bootloader = None
        if self.opts.dfu_key is None:
            self.opts.dfu_key = dfu_package.new_signing_key()
        self.__class__ = Rak4631   # type: ignore[assignment]  # it becomes a RAK4631-R: a class of its own
        self.module = rui3
        self.dfu_public_key = dfu_package.public_key_bytes(self.opts.dfu_key)
        self.dfu_state = DfuState()
        self.installed_fw_version = 0
        self._pending_init = None
        self.app_valid = False
        self.boot_request = False
        self.gpregret = 0



class _AdafruitBackend:
    """The Adafruit bootloader's handling of the legacy packets (single bank)."""

    def __init__(self, dev: Rak4631Arduino) -> None:
        self.dev = dev
        self.module = dev.module
        self.flash = dev.flash
        self._image_size = 0
        self._init: dfu_package.InitPacket | None = None

    def start(self, mode: int, sd_size: int, bl_size: int, app_size: int) -> bool:
        self._init = None
        self._mode, self._sd_size, self._bl_size = mode, sd_size, bl_size
        self._bootloader_update = False
        app = self.module.app
        if mode in (legacy_dfu.MODE_BOOTLOADER, legacy_dfu.MODE_SD_BL):
            # A bootloader (and SoftDevice) update: received into the application area
            # (single bank: the sketch is gone), installed by the bootloader at the reset.
            if not 0 < bl_size <= self.module.region("bootloader").size or sd_size + bl_size > app.size:
                return False
            self._image_size = sd_size + bl_size
            self._bootloader_update = True
        elif mode == legacy_dfu.MODE_APPLICATION and 0 < app_size <= app.size:
            self._image_size = app_size
        else:
            return False
        self.dev.app_valid = False
        self.flash.erase(app.start, app.start + self._image_size)
        return True

    def init(self, init_packet: bytes) -> bool:
        try:
            init = dfu_package.parse_init(init_packet, legacy_hint=True)
        except Exception:
            return False
        if init.family != dfu_package.LEGACY:
            return False
        if init.device_type not in (self.module.extra.get("device_type", 0x0052), 0xFFFF):
            return False
        if not ({0xFFFE, SD_S140_6_1_1} & set(init.sd_req)):
            return False
        self._init = init
        return True

    def data(self, offset: int, chunk: bytes) -> None:
        if offset + len(chunk) <= self._image_size:
            self.flash.program(self.module.app.start + offset, chunk)

    def stop(self, size: int) -> bool:
        if self._init is None or size != self._image_size:
            return False
        image = self.flash.read(self.module.app.start, size)
        if dfu_package.crc16_ccitt(image) != self._init.crc16:
            return False
        if self._bootloader_update:
            self.dev.new_bootloader = image[self._sd_size:]      # the bootloader part
        return True
