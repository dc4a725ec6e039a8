"""Virtual ESP32 and ESP32-S3 modules (RAK11200; RAK3112, RAK3212, RAK3312): the chip's ROM
serial download mode, esptool's flasher stub, and an application in flash.

Faithful enough that esptool's own command line, unchanged, works against it (``esptool --port P
chip-id``, ``write-flash``, ``verify-flash``, ``read-flash``, with its flasher stub or
``--no-stub``). The facts it follows are Espressif's (docs/protocols.md "ESP32 ROM download mode"
names each source: esptool's serial-protocol documentation, its targets' register facts, the
esp-flasher-stub's command handling, RAK's and Espressif's boot logs); none of their code is here.

**Reset and straps.** At every start the chip samples GPIO0: low — held by a person (the sim's
boot pin, ``b`` + Enter), or pulled by a reset circuit — starts the ROM's download mode (it prints
``waiting for download``); high starts the flash: the ROM loads the second-stage bootloader, which
starts the app its partition table names. How the host's RTS/DTR reach EN and GPIO0 (over TCP:
RFC 2217 carries them; a pty has no modem lines, so there only a person can):

* ``usb-serial-jtag`` (ESP32-S3): the chip's own USB peripheral. DTR set with RTS clear latches a
  download-boot request (RTC_CNTL_OPTION1 bit 0, which esptool clears before its hard reset, and
  the reset button's chip reset clears with the rest of the RTC domain); RTS set with DTR clear
  holds the chip in reset; the chip starts when RTS is released — esptool's ``usb-reset`` sequence.
* ``classic`` (an ESP32 behind a USB-UART with the two-transistor circuit of Espressif's boards,
  ``SimOptions.auto_reset``): EN is low while RTS is set and DTR clear, GPIO0 low while DTR is
  set and RTS clear. EN's RC delay (10 kΩ, 1 µF: the chip leaves reset ~14 ms after EN rises)
  is when GPIO0 is sampled — esptool's classic reset drops GPIO0 within that delay.
* none (the RAK11200 as RAK documents it): only a person, with BOOT0 to GND and the reset button.

**The loader**: the ROM's SLIP command set is in ``esp32_rom.py``, the flasher stub's (once the ROM
starts it) in ``esp32_stub.py``; the chips' facts (registers, eFuses, boot logs, straps) and the SPI NOR
flash beside them are in ``esp32_chip.py``.
"""

from __future__ import annotations

import os
import threading
import time

from .. import esp_image
from ..catalog import Module
from . import esp_firmware
from .device import Mode, SimOptions, VirtualModule, new_identity
from .esp32_chip import CHIPS, Esp32S3, SpiNor
from .esp32_rom import Restart
from .esp32_stub import Loader
from .uart import PowerCut, SimUart

EN_RC_DELAY = 0.014                # EN's RC (10 kΩ, 1 µF) reaches the chip's threshold after ~1.4 τ
USB_FULL_SPEED_BAUD = 12_160_000   # the USB Serial/JTAG's bulk rate, as the virtual RAK4631's


class EspModule(VirtualModule):
    """A module with an ESP32 or ESP32-S3: ROM download mode, flasher stub, app in flash."""

    # Its flash is a SPI NOR chip beside the SoC (sectors, JEDEC id), not an MCU's own flash.
    flash: SpiNor  # type: ignore[assignment]

    def __init__(self, module: Module, options: SimOptions | None = None) -> None:
        self.module = module
        self.opts = o = options or SimOptions()
        if o.serial_number is None or o.dev_eui is None:
            serial, eui = new_identity()
            o.serial_number = o.serial_number or serial
            o.dev_eui = o.dev_eui or eui
        n = int(o.serial_number[-6:]) if o.serial_number[-6:].isdigit() else 1
        mac = bytes([0x24, 0x6F, 0x28, (n >> 16) & 0xFF, (n >> 8) & 0xFF, n & 0xFF])
        self.chip = CHIPS[module.esp_fact("chip")](mac)
        reset = module.esp_fact("reset")
        self.reset_circuit = ("usb-serial-jtag" if reset == "usb-serial-jtag"
                              else "classic" if o.auto_reset else None)
        self.native_usb = reset == "usb-serial-jtag"
        self.flash = SpiNor(module.mcu.flash.size, self.chip.jedec, o.flash_scale)
        project, version, _ = esp_firmware.DEFAULT_VERSIONS.get(module.key, ("esp32-sample", "1.0.0", "1.1.0"))
        version = o.app_version or version
        if o.state != "erased":
            for addr, data in esp_firmware.factory_flash(self.chip.chip_id, version, project,
                                                         app_size=o.app_size,
                                                         flash_mb=module.mcu.flash.size >> 20):
                self.flash.mem[addr:addr + len(data)] = data
        self.boot_pin = o.boot_pin or o.state == "bootloader"    # GPIO0 held low by a person
        self.readout_protected = False
        self.app_valid = True
        self._boot_request = False
        self.settings = {}
        self.mode: Mode | None = None
        self.resets = 0
        self.updates = 0
        self.stub_runs = 0
        self._stop = False
        self._booted_at = time.monotonic()
        self._mode_changed = threading.Condition()
        self.mode_listeners: list = []
        self._en_low = False              # EN held low by the reset circuit
        self._released_at = 0.0
        self._io0: list[tuple[float, bool]] = [(0.0, False)]    # (time, GPIO0 pulled low by the circuit)
        self._reset_cause = "poweron"
        self._lines_lock = threading.Lock()
        self._connect()

    # ------------------------------------------------------------ the port
    def _connect(self) -> None:
        o = self.opts
        if self.native_usb:
            from .nrf52 import UsbCdcUart
            if not hasattr(self, "usb_location") or self.usb_location is None:
                self.usb_location = f"sim-{os.getpid()}.esp{id(self) & 0xFFFF}"
            baud = USB_FULL_SPEED_BAUD          # USB: no baud rate of its own
            self.uart = UsbCdcUart({"vid": 0x303A, "pid": 0x1001, "product": "USB JTAG/serial debug unit",
                                    "serial_number": self.chip.mac.hex(":").upper(),
                                    "location": self.usb_location},
                                   baud=baud, latency=max(o.latency_ms, 1.0) / 1000, faults=o.faults,
                                   strict_baud=False, transport=o.transport)
        else:
            self.uart = SimUart(115200, latency=o.latency_ms / 1000, faults=o.faults,
                                strict_baud=o.strict_baud, transport=o.transport)
        self.uart.on_host_lines(self._host_lines)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sim-{self.module.key}")

    usb_location: str | None = None

    # ------------------------------------------------------------ what runs
    @property
    def app_version(self) -> str | None:
        app = self.app_in_flash()
        return app.version if app is not None else None

    @property
    def bootloader_version(self) -> str | None:
        offset = self.module.esp_fact("bootloader_offset")
        try:
            return esp_image.parse_image(self.flash.read(offset, 0x8000 - offset)).version
        except esp_image.EspImageError:
            return None

    def partition_table(self) -> esp_image.PartitionTable | None:
        try:
            return esp_image.parse_partition_table(self.flash.read(esp_image.PARTITION_TABLE_OFFSET, 0xC00))
        except esp_image.EspImageError:
            return None

    def app_in_flash(self) -> esp_image.EspAppImage | None:
        """The app the bootloader would start (the factory partition, else the first OTA slot),
        if it is a valid image for this chip."""
        table = self.partition_table()
        slot = table.first_app() if table else None
        if slot is None or not self.flash.check(slot.offset, slot.size):
            return None
        try:
            img = esp_image.parse_image(self.flash.read(slot.offset, min(slot.size, 0x800000)))
        except esp_image.EspImageError:
            return None
        if img.chip_id != self.chip.chip_id or img.problems():
            return None
        return img

    def app_present(self) -> bool:
        return self.app_in_flash() is not None

    # ------------------------------------------------------------ reset circuits
    def _host_lines(self, lines: dict[str, bool]) -> None:
        rts, dtr = lines["rts"], lines["dtr"]
        prev_rts, prev_dtr = self._lines_prev
        self._lines_prev = (rts, dtr)
        now = time.monotonic()
        if self.reset_circuit == "classic" and self.uart.transport == "tcp":
            # RFC 2217 can't carry the lines' timing: pyserial's client waits for each change to
            # be acknowledged (~50 ms apart), longer than EN's RC. As Espressif's esp_rfc2217_server
            # does for that reason, the start of esptool's sequences is played here with the
            # adapter's timing: DTR set starts a reset into download mode (the rest of that
            # sequence is taken as said), DTR cleared ends it, RTS cleared outside it is a hard reset.
            if dtr and not prev_dtr and not self._download_sequence:
                self._download_sequence = True
                threading.Thread(target=self._local_reset, args=(True,), daemon=True).start()
            elif not dtr and prev_dtr:
                self._download_sequence = False
            elif not rts and prev_rts and not self._download_sequence:
                threading.Thread(target=self._local_reset, args=(False,), daemon=True).start()
            return
        with self._lines_lock:
            if self.reset_circuit == "usb-serial-jtag":
                if dtr and not rts:
                    self.chip.regs[Esp32S3.OPTION1] = self.chip.regs.get(Esp32S3.OPTION1, 0) | 1
                held = rts and not dtr
                io0_low = False
            elif self.reset_circuit == "classic":
                held = rts and not dtr
                io0_low = dtr and not rts
            else:
                return
            if io0_low != self._io0[-1][1]:
                self._io0.append((now, io0_low))
                del self._io0[:-16]
            if held and not self._en_low:
                self._en_low = True
                self._reset_cause = "sw" if self.native_usb else "poweron"
                self.uart.cut_power()
            elif not held and self._en_low:
                self._en_low = False
                self._released_at = now

    _lines_prev = (False, False)
    _download_sequence = False

    def _local_reset(self, download: bool, hold: float = 0.1, after: float = 0.05) -> None:
        """EN low for ``hold``, released with GPIO0 low (``download``) for ``after`` more:
        esptool's classic reset (or its hard reset) with an adapter's timing."""
        with self._lines_lock:
            self._en_low = True
            self._reset_cause = "poweron"
        self.uart.cut_power()
        time.sleep(hold)
        with self._lines_lock:
            now = time.monotonic()
            self._io0.append((now, download))
            self._en_low = False
            self._released_at = now
        time.sleep(after)
        with self._lines_lock:
            self._io0.append((time.monotonic(), False))
            del self._io0[:-16]

    def gpio0_low_now(self) -> bool:
        return self.boot_pin or self._io0_low_at(time.monotonic())

    def _io0_low_at(self, t: float) -> bool:
        with self._lines_lock:
            low = False
            for when, level in self._io0:
                if when <= t:
                    low = level
            return low

    def press_reset(self) -> None:
        # The reset button pulls CHIP_PU (EN) low: a chip reset, which resets the RTC domain too —
        # the USB Serial/JTAG's download-boot latch (RTC_CNTL_OPTION1) with it. (esptool's usb-reset
        # is a core reset from the USB peripheral, which leaves that register as it is.)
        if self.native_usb:
            self.chip.regs[Esp32S3.OPTION1] = 0
        self._reset_cause = "poweron"
        self._released_at = time.monotonic() - EN_RC_DELAY
        self.uart.cut_power()

    def has_rom_bootloader(self) -> bool:
        return True

    # ------------------------------------------------------------ the MCU
    def _run(self) -> None:
        uart = self.uart
        while not self._stop:
            while self._en_low and not (self._stop or uart.closed):
                time.sleep(0.002)                   # EN held low through the adapter's lines
            if self._stop or uart.closed:
                return
            start = self._released_at + EN_RC_DELAY
            if start > time.monotonic():
                time.sleep(start - time.monotonic())
            download = self._download_strap(start)
            self._booted_at = time.monotonic()
            self.uart.flush_input()
            try:
                if download:
                    self._set_mode(Mode.ROM)
                    self.run_rom()
                else:
                    self._set_mode(Mode.APP)
                    self.run_app()
            except PowerCut:
                pass
            except Restart as r:
                if r.how == "app":
                    self._reset_cause = "sw"
                    try:
                        self._set_mode(Mode.APP)
                        self.run_app(from_rom=True)
                    except (PowerCut, Restart):
                        pass
                else:
                    self._reset_cause = "sw"
            except OSError:
                if uart.closed:
                    return
                raise
            if uart.closed:
                return
            self.resets += 1

    def _download_strap(self, start: float) -> bool:
        forced = bool(self.chip.regs.get(Esp32S3.OPTION1, 0) & 1) if self.native_usb else False
        low = self.boot_pin or self._io0_low_at(start) or forced
        if forced:
            # (the latch stays set until software clears it, as esptool does before a hard reset)
            pass
        self.chip.regs[0x3FF44038 if self.chip.chip_id == 0 else 0x60004038] = self.chip.strap(low)
        return low

    # ------------------------------------------------------------ the application
    def run_app(self, from_rom: bool = False) -> None:
        """The ROM starts the flash: the bootloader, then the app its partition table names."""
        uart = self.uart
        self._line_rate(115200)
        if not from_rom:
            uart.write(self.chip.boot_log(False, self._reset_cause))
        self._reset_cause = "poweron"
        boot_at = self.module.esp_fact("bootloader_offset")
        head = self.flash.read(boot_at, 4)
        try:
            boot = esp_image.parse_image(self.flash.read(boot_at, 0x8000 - boot_at))
        except esp_image.EspImageError:
            boot = None
        if boot is None or boot.chip_id != self.chip.chip_id or boot.problems():
            # The ROM finds no bootloader it can start and tries again (a watchdog reset each time).
            while not self._stop:
                uart.write(f"invalid header: 0x{int.from_bytes(head, 'little'):08x}\r\n".encode())
                uart.read(4096, 0.2)
            return
        uart.write(f"load:{boot.segments[0].load_address:#010x},len:{len(boot.segments[0].data)}\r\n"
                   f"entry {boot.entry:#010x}\r\n".encode())
        ms = 27
        log = [f"I ({ms}) boot: ESP-IDF {boot.bootloader_desc['idf_ver'] if boot.bootloader_desc else '?'} "
               f"2nd stage bootloader"]
        app = self.app_in_flash()
        table = self.partition_table()
        slot = table.first_app() if table is not None else None
        if app is None or slot is None:
            what = ("no valid partition table" if table is None else
                    "no app partition" if slot is None else
                    f"no valid app image at {slot.offset:#x}")
            log.append(f"E ({ms + 40}) boot: {what}; nothing to boot")
            uart.write(("\r\n".join(log) + "\r\n").encode())
            while not self._stop:
                uart.read(4096, 0.5)
            return
        d = app.app_desc or {}
        log += [f"I ({ms + 41}) boot: Loaded app from partition at offset {slot.offset:#x}",
                f"I ({ms + 210}) app_init: Application information:",
                f"I ({ms + 212}) app_init: Project name:     {d.get('project_name', '?')}",
                f"I ({ms + 213}) app_init: App version:      {d.get('version', '?')}",
                f"I ({ms + 214}) app_init: ESP-IDF:          {d.get('idf_ver', '?')}",
                f"I ({ms + 400}) main_task: Calling app_main()"]
        uart.write(("\r\n".join(log) + "\r\n").encode())
        while not self._stop:
            uart.read(4096, 0.5)          # a quiet app: what the host sends goes unanswered

    def _line_rate(self, baud: int) -> None:
        if not self.native_usb:
            self.uart.baud = baud
            self.uart.autobaud = False

    # ------------------------------------------------------------ the ROM's download mode
    def run_rom(self) -> None:
        uart = self.uart
        self._line_rate(115200)
        uart.write(self.chip.boot_log(True, self._reset_cause))
        uart.drain()
        self._reset_cause = "poweron"
        if not self.native_usb:
            self.uart.autobaud = True          # the ROM measures the host's rate from SYNC
        Loader(self).serve()
