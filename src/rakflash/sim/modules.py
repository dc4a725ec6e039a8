"""The concrete virtual modules, one class per module family."""

from __future__ import annotations

from .. import catalog
from ..catalog import version_tuple
from .apollo3_sbl import Apollo3SecureBootloader
from .device import SimOptions, VirtualModule
from .rui3 import Rui3Module
from .rui_v3 import RuiV3Module
from .stm32_rom import Stm32Rom


class YmodemBootloader(VirtualModule):
    """The RUI bootloader's ``at+update``: an ST IAP style YMODEM receiver (DESIGN.md §2).

    Block 0 with a size over the application region is cancelled (CAN CAN);
    otherwise the whole application region is erased, then every block is
    programmed as it arrives. On success the application is marked valid and
    started, without a word.
    """

    def run_update(self) -> bool:
        from ..protocols.ymodem import YmodemReceiver
        app = self.module.app

        def on_start(name: str, size: int) -> None:
            self.check_image_acceptable(size)
            self.app_valid = False
            self.flash.erase(app.start, app.end)

        def on_block(offset: int, data: bytes) -> None:
            self.flash.program(app.start + offset, data)

        result = YmodemReceiver(self.uart, max_size=app.size, on_start=on_start,
                                on_block=on_block).receive()
        if result.status == "ok":
            self.app_valid = True
            self.boot_request = False
            self.updates += 1
            self.uart.drain()
            return True
        return result.status == "idle-reset"

    def check_image_acceptable(self, size: int) -> None:
        """Hook for bootloaders that choke on some images."""


class Rak3172(YmodemBootloader, Stm32Rom, Rui3Module):
    """RAK3172 (STM32WLE5): RUI3 app, RUI bootloader, YMODEM update; the chip's ROM
    bootloader with BOOT0 high (on UART2, the AT port)."""


class Rak811(YmodemBootloader, Stm32Rom, RuiV3Module):
    """RAK811 / RAK4270 (STM32L1/L0): RUI v3 app, bootloader with YMODEM update,
    and the chip's ROM bootloader with BOOT0 high (the RAK4270's stamp has no
    BOOT0 pad, so only a bare-chip setup reaches it there).

    Bootloaders before 3.0.5 can't take firmware 3.0.0.14 and later: the real
    one stalls after the transfer starts ("Start sending…" never moves). The
    cause inside the old bootloader is not public; the simulator reproduces
    the symptom for images larger than ``LEGACY_MAX`` bytes (the size 3.0.0.14
    grew past), going silent until reset.
    """

    LEGACY_MAX = 88 * 1024

    def check_image_acceptable(self, size: int) -> None:
        boot = self.bootloader_version
        if boot and version_tuple(boot) < (3, 0, 5) and size > self.LEGACY_MAX:
            self.stall()

    def stall(self) -> None:
        """Swallow everything, answer nothing, until the reset button or power goes."""
        while not self._stop:
            self.uart.read(4096, 0.5)


class Rak11720(Apollo3SecureBootloader, Rui3Module):
    """RAK11720 (Apollo3): RUI3 app, RUI bootloader, AMOTA packets after ``at+update``;
    below them Ambiq's secure bootloader and INFO0 (:mod:`rakflash.sim.apollo3_sbl`).

    ``at+update`` answers ``Start firmware upgrade...`` and serves AMOTA
    packets (DESIGN.md §2): HEADER erases the pages the image needs, DATA
    programs, VERIFY checks the image CRC against the header, RESET restarts
    into the new application if it was verified. A HEADER for the image being
    received resumes it, as Ambiq's AMOTA does (``amota_resume = False`` makes a
    bootloader whose every HEADER starts over).
    """

    amota_resume = True

    def run_update(self) -> bool:
        from ..protocols.amota import AmotaReceiver
        app = self.module.app
        if self.module.update_reply is not None:     # (the catalog's: what at+update answers, if anything)
            self.app_reply(self.module.update_reply)
        # The packet receiver starts with an empty UART buffer: the LF of a
        # CR LF after at+update (the vendor script sends one) is not a packet.
        self.uart.flush_input()

        def on_header(header) -> None:
            self.app_valid = False
            self.flash.erase(app.start, app.start + header.length)

        result = AmotaReceiver(
            self.uart, load_address=app.start, max_size=app.size, on_header=on_header,
            on_data=lambda offset, data: self.flash.program(app.start + offset, data),
            read_image=lambda n: self.flash.read(app.start, n),
            byte_time=self.uart.byte_time, resume=self.amota_resume).serve()
        if result.status == "ok":
            self.app_valid = True
            self.boot_request = False
            self.updates += 1
        self.uart.drain()
        return result.status != "idle"


MODULES: dict[str, type[VirtualModule]] = {
    "rak3172": Rak3172,
    "rak11720": Rak11720,
    "rak811": Rak811,
    "rak4270": Rak811,
}
# The RAK3172's RUI3 variants: the same chip, bootloader and flows; their own model and image names.
MODULES.update({key: Rak3172 for key in ("rak3172-sip", "rak3172lp-sip", "rak3172-t", "rak3172-f",
                                         "rak11160")})


def _nrf52_modules() -> dict[str, type[VirtualModule]]:
    from .device import Mode
    from .nrf52 import Rak4631, Rak4631Arduino

    class Rak3401(Rak4631):
        """RAK3401: the RAK4631-R's chip, RUI3 bootloader and Secure DFU; its application's own USB
        product string (RAK-nRF52-RUI variants/WisCore_RAK3401_Board/sdk_config.h)."""

        def usb_identity(self, mode: Mode) -> dict:
            identity = super().usb_identity(mode)
            if mode is not Mode.BOOTLOADER:
                identity["product"] = "Rak3401 Serial COM"
            return identity

    return {"rak4631-r": Rak4631, "rak4631-arduino": Rak4631Arduino, "rak3401": Rak3401}


MODULES.update(_nrf52_modules())


def _esp_modules() -> dict[str, type[VirtualModule]]:
    from .esp32 import EspModule
    return {key: EspModule for key in ("rak3112", "rak3212", "rak3312", "rak11200")}


MODULES.update(_esp_modules())


def create(name: str, options: SimOptions | None = None) -> VirtualModule:
    """A virtual module by catalog name (not started yet)."""
    module = catalog.load().module(name)
    if module.key not in MODULES:
        raise KeyError(f"no virtual {module.name} yet (have: {', '.join(sorted(MODULES))})")
    options = options or SimOptions()
    if module.key in ("rak4631-r", "rak4631-arduino", "rak3401") and options.baud == 115200:
        # A native USB port has no baud rate: the line runs at USB full speed's bulk rate.
        from .nrf52 import USB_FULL_SPEED_BAUD
        options.baud = USB_FULL_SPEED_BAUD
    return MODULES[module.key](module, options)
