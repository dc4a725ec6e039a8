"""A virtual module: flash, a UART (on a pty or over TCP), an application and a bootloader.

The module runs in its own thread like an MCU: at reset its bootloader decides
(boot request flag, application valid?) whether to stay or to jump to the
application; the application speaks its AT dialect; ``AT+BOOT`` requests the
bootloader and resets. The bootloader speaks the RUI bootloader console and,
on ``at+update``, runs the module's update protocol (subclasses provide it).

Which firmware "runs" is decided by the flash contents: the application
reports the first version string of the catalog's pattern found in its
region, and the bootloader the string at its version address. Flash the
bytes of another version and the module becomes that version.

The application dialects are subclasses: RUI3's (its AT console, config block and port lock) in
``rui3.py``, RUI v3's in ``rui_v3.py``.

Facts modelled here come from DESIGN.md §2 (RUI3 sources). The boot request
flag is kept in flash where its encoding is known (RAK11720: 0xAA at 0xFE000),
and as module state instead of invented bytes elsewhere.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field

from ..catalog import Module
from . import firmware
from .flash import Flash
from .uart import Faults, PowerCut, SimUart

DEFAULT_SETTINGS = {
    "DEVEUI": "AC1F09FFFE000001", "APPEUI": "0000000000000000",
    "APPKEY": "00000000000000000000000000000000", "BAND": "4",
}   # the factory values; each virtual module has its own DEVEUI (see new_identity)

_identities: set[int] = set()
_identities_lock = threading.Lock()


def new_identity() -> tuple[str, str]:
    """A serial number and a DevEUI no other virtual module made in this process has, and
    (drawn at random) very unlikely any in another: real modules each have their own, and
    a fleet report or the kept-settings store of several virtual modules must tell them apart.
    The DevEUI is under RAK's OUI (AC1F09), as on the modules' labels."""
    import secrets
    with _identities_lock:
        while True:
            n = secrets.randbelow(1 << 24)
            if n not in _identities:
                _identities.add(n)
                return f"SIM{n:08d}", f"AC1F09FFFE{n:06X}"


class Mode(str, enum.Enum):
    APP = "app"
    BOOTLOADER = "bootloader"
    ROM = "rom"            # the chip's own ROM bootloader (boot pin held at reset)


@dataclass
class SimOptions:
    """How to build a virtual module (each maps to a ``rakflash sim`` flag)."""

    baud: int = 115200
    latency_ms: float = 1.0
    state: str = "app"
    flash_scale: float = 1.0
    strict_baud: bool = True
    bootloader_version: str | None = None
    app_version: str | None = None
    app_size: int = 96 * 1024
    sketch: str = "quiet"                 # the starting application's sketch: "quiet" or "flooding"
    flood_after: float = 0.8              # seconds a flooding sketch stays quiet after reset
    faults: Faults = field(default_factory=Faults)
    serial_number: str | None = None      # what AT+SN=? answers (and the USB serial); None: a new one
    dev_eui: str | None = None            # the factory DevEUI (AT+DEVEUI=?); None: a new one
    boot_pin: bool = False                # BOOT0 (STM32) / BOOT override pin (Apollo3) held high
    readout_protected: bool = False       # the chip's read-out protection is active (STM32 RDP level 1)
    info0: bytes | None = None            # Apollo3 INFO0 the chip starts with (None: the module's default)
    dfu_key: bytes | None = None          # nRF52 Secure DFU: PEM key whose signatures the bootloader accepts
    board_status: bool = True             # RUI v3: the firmware names its board (at+get_config=device:status)
    transport: str | None = None          # "pty" or "tcp" (RFC 2217); None: sim.transport.default_transport()
    reset_with: str | None = None         # the adapter's line wired to RESET: "rts", "dtr", "-rts", "-dtr"
    boot0_with: str | None = None         # … and to BOOT0 (STM32) / BOOT (Apollo3); over TCP only
    auto_reset: bool = False              # ESP32 behind a USB-UART: RTS/DTR reach EN/GPIO0 through
                                          # the two-transistor circuit of Espressif's boards (sim/esp32.py)
    usb_product: bool = True              # a native-USB port lists its product string (pyserial on
                                          # Windows does not: False lists it as Windows does)
    locked: str | None = None             # RUI3: the AT port starts locked with this password (AT+PWORD)


class VirtualModule:
    """Base of the virtual modules; see :mod:`rakflash.sim.modules` for the concrete ones."""

    app_line_max = 256
    boot_line_max = 64   # RUI bootloader line buffer (DESIGN.md §2)

    def __init__(self, module: Module, options: SimOptions | None = None) -> None:
        self.module = module
        self.opts = options or SimOptions()
        o = self.opts
        if o.serial_number is None or o.dev_eui is None:
            serial, dev_eui = new_identity()
            o.serial_number = o.serial_number or serial
            o.dev_eui = o.dev_eui or dev_eui
        self.default_settings = {**DEFAULT_SETTINGS, "DEVEUI": o.dev_eui.upper()}
        self.flash = Flash(module.mcu, time_scale=o.flash_scale)
        boot_v, app_v, _ = firmware.DEFAULT_VERSIONS[module.key]
        self._boot_version_default = _as_version(module.find_bootloader_version, o.bootloader_version) or boot_v
        for addr, data in firmware.bootloader_image(module, self._boot_version_default).items():
            self.flash.load(addr, data)
        self.flash.load(module.app.start, firmware.app_image(
            module, _as_version(module.find_app_version, o.app_version) or app_v, o.app_size,
            flooding=o.sketch == "flooding"))
        self.app_valid = True        # set by a completed update, cleared when one starts
        self._boot_request = False
        self.boot_request = o.state == Mode.BOOTLOADER.value
        # Memory for the owner's LoRaWAN keys and settings: RUI3 keeps them in its config
        # block in flash (Rui3Module); RUI v3 in the data EEPROM (the catalog's "user-data"
        # region outside the flash: RAK811's STM32L151, RAK4270's STM32L071), which the
        # chip's ROM bootloader reads and writes too.
        self._eeprom = bytearray(b"\xff" * self._eeprom_size())
        self.factory_data()
        self.settings: dict[str, str] = self.load_settings()
        self.boot_pin = o.boot_pin   # sampled at every reset, as the chip does
        self.readout_protected = o.readout_protected
        self.mode: Mode | None = None
        self.resets = 0
        self.updates = 0
        self._stop = False
        self._booted_at = time.monotonic()
        self._mode_changed = threading.Condition()
        self.mode_listeners: list = []      # called with the Mode at every start of firmware
        self._connect()

    def _connect(self) -> None:
        """A cable (a new pty at the module's line settings) and the MCU thread that will use it."""
        o = self.opts
        self.uart = SimUart(o.baud, latency=o.latency_ms / 1000, faults=o.faults,
                            strict_baud=o.strict_baud, transport=o.transport)
        self.uart.on_host_lines(self._host_lines)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sim-{self.module.key}")

    # ------------------------------------------------------------ control
    @property
    def port(self) -> str:
        return self.uart.path

    def start(self) -> VirtualModule:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop = True
        self.uart.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> VirtualModule:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def plug_in(self) -> str:
        """Plug the cable back in after it was pulled; returns the port's new path.

        The module was unpowered meanwhile (USB-powered, as on RAK's boards), so it
        starts afresh: in its bootloader if an update was cut off, else in its
        application. A pseudo-terminal can't come back under its old name, so the
        path changes (a real adapter usually gets its old /dev/ttyUSBn back).
        """
        if not self.uart.closed:
            raise RuntimeError("the cable is plugged in")
        self._thread.join(timeout=5)   # the old power-up ends at its next UART call
        if self._thread.is_alive():
            raise RuntimeError("the module did not power down")
        self.opts.faults.pull_cable_after = None
        self._connect()
        self._stop = False
        self._thread.start()
        return self.port

    _held_in_reset = False

    def _host_lines(self, lines: dict[str, bool]) -> None:
        """The USB-UART adapter's RTS/DTR as wired to the module (``SimOptions.reset_with``,
        ``boot0_with``, in rakflash's --reset-with notation: ``rts`` means the pin is active while
        RTS is set, ``-rts`` while it is reset). RESET held stops the MCU; its release starts it."""
        o = self.opts
        if o.boot0_with:
            self.boot_pin = _line_active(o.boot0_with, lines)
        if o.reset_with:
            held = _line_active(o.reset_with, lines)
            if held and not self._held_in_reset:
                self._held_in_reset = True
                self.uart.cut_power()
            elif not held:
                self._held_in_reset = False

    def press_reset(self) -> None:
        """The reset button: the MCU restarts wherever it is."""
        self.uart.cut_power()

    def set_boot_pin(self, high: bool) -> None:
        """Hold the boot pin (BOOT0 / Apollo3 BOOT override) high or low; the chip
        samples it at its next reset, so press reset afterwards to take effect."""
        self.boot_pin = high

    def has_rom_bootloader(self) -> bool:
        """Whether the chip starts its own ROM bootloader when the boot pin is held at reset."""
        return type(self).run_rom is not VirtualModule.run_rom

    def run_rom(self) -> None:
        """The chip's ROM bootloader (subclasses): runs until the next reset, or hands
        over to the firmware in flash by calling :meth:`run_main`."""
        raise NotImplementedError

    def starts_rom(self) -> bool:
        """Whether the chip starts its ROM bootloader at this reset. By default: the
        boot pin is held and there is one; a chip whose ROM decides from more than a
        pin (the Apollo3's INFO0) says so itself."""
        return self.boot_pin and self.has_rom_bootloader()

    def main_mode(self) -> Mode:
        """What the flash holds runs: the RUI bootloader when asked for or when no
        application is present, else the application."""
        return Mode.BOOTLOADER if (self.boot_request or not self.app_present()) else Mode.APP

    def run_main(self, mode: Mode | None = None) -> None:
        """Run the firmware in flash: ``mode`` as :meth:`next_mode` chose it, else :meth:`main_mode`."""
        mode = mode or self.main_mode()
        self._set_mode(mode)
        if mode is Mode.BOOTLOADER:
            self.run_bootloader()     # clears the request when it hands over
        else:
            self.run_app()

    def wait_mode(self, mode: Mode | str, timeout: float = 5.0) -> bool:
        """Wait until the module runs ``mode`` (for tests)."""
        end = time.monotonic() + timeout
        with self._mode_changed:
            while self.mode != Mode(mode):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._mode_changed.wait(left)
        return True

    def _set_mode(self, mode: Mode) -> None:
        with self._mode_changed:
            self.mode = mode
            self._mode_changed.notify_all()
        for listener in self.mode_listeners:
            listener(mode)

    # ------------------------------------------------------------ what runs
    @property
    def app_version(self) -> str | None:
        app = self.module.app
        return self.module.find_app_version(self.flash.read(app.start, app.size))

    @property
    def bootloader_version(self) -> str | None:
        m = self.module
        r = m.region("bootloader-version") if m.has_region("bootloader-version") else m.region("bootloader")
        return m.find_bootloader_version(self.flash.read(r.start, r.size))

    def app_present(self) -> bool:
        """The application region starts with a vector table the bootloader would jump to."""
        head = self.flash.read(self.module.app.start, 8)
        return self.app_valid and head != b"\xff" * 8

    # ------------------------------------------------------------ the boot request flag
    @property
    def boot_request(self) -> bool:
        """Whether the bootloader was asked to stay at the next reset.

        Where the catalog knows the flag's encoding (RAK11720: 0xAA at the flag
        region) it lives in flash, as on the module; elsewhere it is module state.
        """
        flag = self.module.boot_flag
        if flag is None:
            return self._boot_request
        return self.flash.read(self.module.region("flag").start, 1)[0] == flag

    @boot_request.setter
    def boot_request(self, value: bool) -> None:
        flag = self.module.boot_flag
        if flag is None:
            self._boot_request = value
            return
        if self.boot_request == value:
            return
        r = self.module.region("flag")
        self.flash.erase(r.start, r.start + 1)
        if value:
            self.flash.program(r.start, bytes([flag]))

    # ------------------------------------------------------------ the owner's data
    def eeprom_region(self):
        """The catalog's "user-data" region when it lies outside the flash: the chip's data
        EEPROM (RAK811, RAK4270), or None."""
        m = self.module
        if not m.has_region("user-data"):
            return None
        r = m.region("user-data")
        return None if m.mcu.flash.start <= r.start < m.mcu.flash.end else r

    def _eeprom_size(self) -> int:
        r = self.eeprom_region()
        return r.size if r is not None else 512

    def factory_data(self) -> None:
        """What the factory's programmer leaves besides the firmware (subclasses)."""

    def _stored_record(self) -> dict[str, str]:
        text = bytes(self._eeprom).split(b"\0", 1)[0].split(b"\xff", 1)[0].decode("ascii", "replace")
        return dict(item.split("=", 1) for item in text.split(";") if "=" in item)

    def load_settings(self) -> dict[str, str]:
        """The keys and settings as the firmware finds them at start-up: ``KEY=value;…`` records
        in the data EEPROM (RUI v3: its layout is not public, so this one is the simulator's)."""
        stored = self._stored_record()
        return {**self.default_settings, **{k: v for k, v in stored.items() if k in DEFAULT_SETTINGS}}

    def save_settings(self, layout: str | None = None) -> None:
        """Write the settings back, as AT+KEY=… does."""
        layout = layout or self._stored_record().get("LAYOUT")
        fields = {**self.settings, **({"LAYOUT": layout} if layout else {})}
        record = ";".join(f"{k}={v}" for k, v in fields.items()).encode() + b"\0"
        self._eeprom[:] = record.ljust(len(self._eeprom), b"\xff")

    def first_start(self, code: bytes, version: str | None) -> None:
        """A firmware whose settings storage changed resets the settings at its first start."""
        if firmware.carries(code, version, firmware.SETTINGS_LAYOUT_MARK) \
                and self._stored_record().get("LAYOUT") != "2":
            self.settings = dict(self.default_settings)
            self.save_settings(layout="2")

    def serial_locked(self) -> bool:
        """Whether the AT port is locked (RUI3's AT+LOCK): subclasses that have the lock."""
        return False

    def serve_locked(self) -> None:
        """The AT port while it is locked (subclasses); returns once it is open again."""

    # ------------------------------------------------------------ the MCU
    def _run(self) -> None:
        uart = self.uart      # this power-up's UART: a pulled cable ends the thread
        while not self._stop:
            while self._held_in_reset and not (self._stop or uart.closed):
                time.sleep(0.002)          # RESET held low through the adapter's line
            self._booted_at = time.monotonic()
            self.uart.flush_input()
            mode = self.next_mode()
            try:
                if mode is Mode.ROM:
                    self._set_mode(mode)
                    self.run_rom()
                else:
                    self.run_main(mode)
            except PowerCut:
                pass
            except OSError:
                if uart.closed:
                    return
                raise
            if uart.closed:
                return
            self.resets += 1

    def next_mode(self) -> Mode:
        """What the chip runs at this start: its ROM bootloader if it starts one (see
        :meth:`starts_rom`), else the RUI bootloader (asked to stay, or no application)
        or the application."""
        if self.starts_rom():
            return Mode.ROM
        return self.main_mode()

    # ------------------------------------------------------------ application
    def app_reply(self, *lines: str) -> None:
        self.uart.write("".join(line + "\r\n" for line in lines).encode())

    def run_app(self) -> None:
        """The application: an AT console (and the sketch, if it floods)."""
        version = self.app_version
        app = self.module.app
        code = self.flash.read(app.start, app.size)
        self.settings = self.load_settings()
        self.first_start(code, version)
        flooding = firmware.sketch_floods(code, version)
        while not self._stop:
            if flooding and time.monotonic() - self._booted_at > self.opts.flood_after:
                self._flood()
            if self.serial_locked():
                self.serve_locked()
                continue
            line = self.uart.readline(0.05, max_len=self.app_line_max)
            if line is None:
                continue
            if self.handle_app_line(line.decode("latin-1").strip(), version) == "reset":
                return

    def _flood(self) -> None:
        """A sketch whose loop() prints without pause: the AT parser never gets a turn."""
        n = 0
        while not self._stop:
            self.uart.write(f"sensor reading {n}: temperature=21.5 humidity=40\r\n".encode())
            self.uart.read(4096, 0)   # whatever arrives is lost in the sketch's own handling
            n += 1

    def handle_app_line(self, line: str, version: str | None) -> str | None:
        raise NotImplementedError

    # ------------------------------------------------------------ bootloader
    def run_bootloader(self) -> None:
        """The RUI bootloader console (DESIGN.md §2): banner, at+ lines, no OK."""
        d = self.module.boot_dialect
        self.uart.write(f"{d['banner']}\r\n".encode())
        while not self._stop:
            line = self.uart.readline(0.5, max_len=self.boot_line_max)
            if line is None:
                continue
            text = line.decode("latin-1").strip()
            if text.lower() == "at+update":
                if self.run_update():
                    return
            elif self.boot_console_line(text):
                return

    def boot_console_line(self, text: str) -> bool:
        """Answer one console line other than ``at+update``; True when the bootloader hands
        over to the application or resets."""
        d = self.module.boot_dialect
        cmd = text.lower()
        if cmd in ("at+version", "at+ver=?", "at+bootver=?"):
            self.app_reply(self.bootloader_version or "")
        elif cmd == "at+bootstatus":
            self.app_reply(d["status_reply"])
        elif cmd == "at+run":
            if self.app_present():
                self.app_reply(d["run_reply"])
                self.boot_request = False
                self.uart.drain()
                return True
            self.app_reply("Jump failed. No legal application detected.")
        elif cmd == "at+reset":
            self.uart.drain()
            return True
        else:                    # not an at+ line, or one this bootloader does not know
            self.app_reply(d["unsupported"])
        return False

    def run_update(self) -> bool:
        """The update protocol after ``at+update``; True when the module leaves the bootloader."""
        self.app_reply(self.module.boot_dialect["unsupported"])
        return False


def _line_active(spec: str, lines: dict[str, bool]) -> bool:
    """Whether a pin wired as ``spec`` (``rts``, ``-dtr`` …) is active with the host's ``lines``."""
    return lines[spec.lstrip("-")] != spec.startswith("-")


def _as_version(find, text: str | None) -> str | None:
    """Accept '3.0.2' where the module's version strings read 'V3.0.2'."""
    if not text or find(text.encode()) == text:
        return text
    if find(("V" + text).encode()) == "V" + text:
        return "V" + text
    raise ValueError(f"{text!r} does not look like a version string of this module")
