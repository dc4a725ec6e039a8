"""ESP32 modules (RAK3112, RAK3212, RAK3312, RAK11200): their ROM download mode, through esptool.

esptool is the well-kept implementation of the ROM's protocol and of its flasher stub, so rakflash
uses its Python API (``esptool.cmds``: ``detect_chip``, ``run_stub``, ``attach_flash``,
``write_flash``, ``reset_chip``; the loader's ``read_flash`` and ``flash_md5sum``) over the port
rakflash opened, and keeps its own contract around it:

1. **identify** — enter download mode and ask the chip: what it is (esptool's description, MAC,
   crystal), its flash (the JEDEC id says the size), the partition table and the app and
   bootloader the flash holds (their descriptors);
2. **plan and refuse** before writing: an image built for another chip (its header's chip id),
   for another chip revision, larger than the flash or than its app partition, a partition table
   that doesn't fit the flash, a damaged image, the same bytes already there;
3. **enter download mode** the way the module allows: esptool's reset over RTS/DTR — the S3's
   USB Serial/JTAG (``usb-reset``) or the classic two-transistor circuit — and, where no line
   reaches the chip (a RAK11200 on its WisBlock base, any chip on a port without modem lines),
   by asking the person to hold GPIO0 low and press reset, the pin named, with a countdown;
4. **write** with esptool's ``write_flash`` (its stub, compressed), progress from esptool's own
   progress reports as rakflash events;
5. **verify** by the MD5 the chip computes over each region written (esptool asks for it after
   writing; rakflash keeps the chip's answer and compares it with the image's);
6. **start** the new firmware (esptool's hard reset, or the person releases GPIO0 and resets)
   and read the app's version from its boot log.

Everything is said through rakflash's one event stream; esptool's own printing is caught
(:class:`_Relay`) and turned into events and ``-v`` steps, never printed.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from ... import catalog as _catalog
from ... import esp_image
from ...catalog import Module
from ...errors import (AlreadyUpToDate, Aborted, DownloadModeFailed, EspToolFailed, ImageFormatError,
                       ImageTooLarge, PartitionTableInvalid, PortDisconnected, RakflashError,
                       VerifyFailed, WrongTarget)
from ...events import (Countdown, DeviceFound, Note, Phase, PlanReady, Progress, Prompt, Sink,
                       Warning, nowhere)
from ...link import Link

if TYPE_CHECKING:
    from ..identify import DeviceInfo
    from ..session import FlashSession

ROM_BAUD = 115200            # the ROM syncs at 115200 (esptool: ESP_ROM_BAUD; it measures the rate)
FLASH_BAUD = 460800          # rakflash's write rate over a USB-UART unless --baud says otherwise
CONNECT_ATTEMPTS = 2         # esptool connect attempts with a reset before asking the person
PERSON_WINDOW = 60.0         # seconds the person has to hold GPIO0 and press reset
BOOT_LOG_WAIT = 3.0          # seconds to hear the new app's version in its boot log
STUB_BYTES = 12 * 1024       # about what esptool uploads as its flasher stub (text + data)
SYNC_SECONDS = 0.01          # the ROM answers SYNC within a turnaround


# ------------------------------------------------------------------ esptool on rakflash's port

class _Port:
    """rakflash's open port as esptool sees it: pyserial's object, every byte recorded in the
    ``--trace`` file. Anything else esptool asks of the port (timeouts, baud rate, RTS/DTR, its
    file descriptor for the atomic line changes) goes to pyserial's object itself."""

    def __init__(self, link: Link, serial) -> None:
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_serial", serial)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._serial, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._serial, name, value)

    def _check(self) -> None:
        """A link that can be stopped (the page's Stop button, doctor's deadline) stops esptool too."""
        check = getattr(self._link, "_check", None)
        if check is not None:
            check()

    def read(self, size: int = 1) -> bytes:
        self._check()
        data = self._serial.read(size)
        if data and self._link.trace:
            self._link.trace.data("rx", data)
        return data

    def write(self, data: bytes) -> int | None:
        self._check()
        if self._link.trace:
            self._link.trace.data("tx", bytes(data))
        return self._serial.write(data)


class _Relay:
    """Installed once as esptool's logger: on a thread that runs an ESP session, what esptool
    says goes to that session (:class:`_Listener`); elsewhere to the logger it replaced."""

    _installed = False
    _lock = threading.Lock()
    local = threading.local()

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if cls._installed:
                return
            from esp_pylib.logger import EspLog, EspLogBase

            class Relay(EspLogBase):
                def __init__(self, previous) -> None:
                    self.previous = previous

                def _to(self):
                    return getattr(cls.local, "listener", None)

                def _say(self, kind: str, *args: Any, **kw: Any) -> None:
                    listener = self._to()
                    text = " ".join(str(a) for a in args)
                    if listener is not None:
                        listener.said(kind, text)
                    elif self.previous is not None:
                        getattr(self.previous, kind)(*args, **kw)

                def print(self, *args, **kw):
                    kw.pop("end", None)
                    self._say("print", *args)

                def err(self, *args, suggestion=None):
                    self._say("err", *args)

                def warn(self, *args, suggestion=None):
                    self._say("warn", *args)

                def note(self, *args):
                    self._say("note", *args)

                def hint(self, *args):
                    self._say("hint", *args)

                def debug(self, *args):
                    if self._to() is None and self.previous is not None:
                        self.previous.debug(*args)

                def stage(self, finish=False):
                    if self._to() is None and self.previous is not None:
                        self.previous.stage(finish=finish)

                def set_verbosity(self, mode):
                    if self.previous is not None:
                        self.previous.set_verbosity(mode)

                def progress_bar(self, cur_iter, total_iters, prefix="", suffix="", bar_length=30):
                    listener = self._to()
                    if listener is not None:
                        listener.progress(cur_iter, total_iters, prefix)
                    elif self.previous is not None:
                        self.previous.progress_bar(cur_iter, total_iters, prefix, suffix, bar_length)

                def __getattr__(self, name):          # esptool's own extras (warning, error, …)
                    if name in ("warning", "error"):
                        return self.warn if name == "warning" else self.err
                    return getattr(self.previous, name)

            import esptool  # noqa: F401  - installs esptool's logger first, which we wrap
            previous = EspLog.instance
            # esptool bound a few of its warnings to that logger before we came (its reset's
            # "Chip was NOT reset" PrintOnce): silenced, so nothing prints past the event stream.
            previous.set_verbosity("silent")
            EspLog.instance = Relay(previous)
            cls._installed = True


class _Listener:
    """One session's ear on esptool: its words become ``-v`` steps, its progress reports events."""

    WRITING = re.compile(r"Writing at (0x[0-9a-fA-F]+)")
    ERASING = re.compile(r"Flash will be erased from (0x[0-9a-fA-F]+)")
    WROTE = re.compile(r"Wrote (\d+) bytes")

    def __init__(self, link: Link, emit: Sink) -> None:
        self.link, self.emit = link, emit
        self.lines: list[tuple[str, str]] = []
        self.no_lines = False             # esptool said the port can't set RTS/DTR
        self.total = 0                    # image bytes of this write
        self.done_before = 0              # bytes of the parts written before the current one
        self.current_start: int | None = None
        self.last = -1
        self.writing_since: float | None = None     # esptool's own write interval: from its
        self.write_seconds = 0.0                    # "Compressed …" to its "Wrote …"

    def said(self, kind: str, text: str) -> None:
        text = text.strip()
        if not text or set(text) == {"."}:
            return
        self.lines.append((kind, text))
        self.link.step(f"esptool: {text}")
        m = self.ERASING.search(text)
        if m:
            self.current_start = int(m.group(1), 16)
        if text.startswith(("Compressed ", "Erasing flash")) and self.writing_since is None:
            self.writing_since = time.monotonic()
        m = self.WROTE.search(text)
        if m and self.current_start is not None:
            self.done_before += int(m.group(1))
            self.current_start = None
        if m and self.writing_since is not None:
            self.write_seconds += time.monotonic() - self.writing_since
            self.writing_since = None
        if text.startswith("Verifying written data"):
            self.emit(Phase("verify", "verifying: the chip computes the MD5 of what it holds",
                            {"bytes": self.total}))

    def progress(self, cur: int, total: int, prefix: str) -> None:
        m = self.WRITING.search(prefix)
        if m is None or self.current_start is None or not self.total:
            return
        done = min(self.total, self.done_before + int(m.group(1), 16) - self.current_start)
        if done != self.last:
            self.last = done
            self.emit(Progress(done, self.total, "write"))


def _has_lines(serial) -> bool:
    """Whether the port carries modem lines (a pty has none: reading them fails with ENOTTY)."""
    try:
        _ = serial.cts
        return True
    except (OSError, ValueError) as exc:
        import errno
        return getattr(exc, "errno", None) not in (errno.ENOTTY, errno.EINVAL)
    except Exception:
        return True


@contextmanager
def _esptool_on(link: Link, emit: Sink) -> Iterator[tuple[_Port, _Listener]]:
    """esptool's view of ``link`` for the length of a session, and what it says meanwhile."""
    _Relay.install()
    listener = _Listener(link, emit)
    serial = link.raw_serial()
    listener.no_lines = not _has_lines(serial)
    before = serial.timeout
    serial.timeout = 3.0          # esptool reads between its commands (OHAI) at the port's timeout
    previous = getattr(_Relay.local, "listener", None)
    _Relay.local.listener = listener
    try:
        yield _Port(link, serial), listener
    finally:
        _Relay.local.listener = previous
        try:
            serial.timeout = before
        except Exception:         # a port that went away: the session's error says so
            pass


def _fatal(exc: BaseException, doing: str) -> RakflashError:
    """esptool's FatalError (or a serial error under it) as rakflash's named error."""
    import serial
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    if isinstance(exc, (serial.SerialException, OSError)):
        return PortDisconnected(f"the port went away while {doing}: {text}")
    return EspToolFailed(f"esptool stopped while {doing}: {text}")


# ------------------------------------------------------------------ which module, which way in

def esp_modules(cat=None) -> list[Module]:
    cat = cat or _catalog.load()
    return [m for m in cat.modules.values() if m.esp is not None]


def port_module(link: Link) -> Module | None:
    """The ESP module the port's USB id says (the S3's USB Serial/JTAG 303A:1001), if any."""
    from ...ports import port_entry
    try:
        entry = port_entry(link.port_name)
    except Exception:
        return None
    if entry is None or entry.module is None:
        return None
    module = _catalog.load().modules.get(entry.module)
    return module if module is not None and module.esp is not None else None


def claims(module: Module | None, image: Any, link: Link | None) -> bool:
    """Whether a flash of ``image`` on ``link`` is an ESP module's: named so, an ESP image, or a
    port whose USB id is an ESP chip's."""
    if module is not None:
        return module.esp is not None
    if image is not None and getattr(image, "esp", None) is not None:
        return True
    return link is not None and port_module(link) is not None


@dataclass
class Connection:
    esp: Any                     # esptool's loader (the ROM's, then the stub's)
    how: str                     # "reset" (RTS/DTR reached it), "held" (GPIO0 held by a person), "running"
    lines: bool                  # whether the port sets RTS/DTR at all
    seconds: float
    listener: _Listener


def reset_kind(module: Module | None, link: Link) -> str:
    """How the host resets this chip into download mode: "usb-serial-jtag" or "classic"."""
    mod = module or port_module(link)
    if mod is not None and mod.esp["reset"] == "usb-serial-jtag":
        return "usb-serial-jtag"
    return "classic"


def _person_words(module: Module | None) -> tuple[str, str, str]:
    """(pin, reset, who) for the prompt: the module's GPIO0 and reset, as the catalog names them."""
    if module is not None:
        pin = module.rom_access.get("boot0", "GPIO0")
        reset = module.rom_access.get("reset", "the reset button")
        return pin, reset, module.name
    return "GPIO0 (BOOT)", "the reset button", "the module"


GPIO_IN = {0: 0x3FF4403C, 9: 0x6000403C}      # GPIO_IN_REG (the chips' TRMs): bit 0 is GPIO0 now


def _how(esp, listener: _Listener) -> str:
    """How the chip came to answer: "running" (a stub left from an earlier session), "held"
    (GPIO0 is low now — a person holds it — or the port has no lines, so no reset reached it),
    "reset" (esptool's RTS/DTR reset did it, and a hard reset will start the firmware again)."""
    if esp.sync_stub_detected:
        return "running"
    if listener.no_lines:
        return "held"
    try:
        level = esp.read_reg(GPIO_IN[esp.IMAGE_CHIP_ID]) & 1
    except Exception:
        return "reset"
    return "held" if level == 0 else "reset"


def _detect(port: _Port, mode: str, attempts: int):
    """esptool's detect_chip on rakflash's port, which esptool closes when it gives up: opened
    again, for the next try and for the error to be said on it."""
    from esptool.cmds import detect_chip
    try:
        return detect_chip(port, ROM_BAUD, mode, connect_attempts=attempts)
    finally:
        if not port.is_open:
            port.open()


def connect(link: Link, port: _Port, listener: _Listener, module: Module | None, *, emit: Sink,
            window: float = PERSON_WINDOW) -> Connection:
    """Get the chip's ROM (or a stub left running) to answer: esptool's reset over RTS/DTR first,
    then a person holding GPIO0 low and pressing reset. :class:`DownloadModeFailed` past the window."""
    from esptool.util import FatalError
    t0 = time.monotonic()
    mode = "usb-reset" if reset_kind(module, link) == "usb-serial-jtag" else "default-reset"
    if link.baud != ROM_BAUD:
        link.baud = ROM_BAUD
    link.note(f"esptool: connect with its {mode} ({CONNECT_ATTEMPTS} attempts)")
    try:
        esp = _detect(port, mode, CONNECT_ATTEMPTS)
        return Connection(esp, _how(esp, listener), not listener.no_lines, time.monotonic() - t0,
                          listener)
    except FatalError as exc:
        first = exc
    pin, reset, who = _person_words(module)
    chip = module.mcu.name.split(" (")[0] if module else "ESP32"
    why = ("this port has no RTS/DTR lines to reset it with" if listener.no_lines else
           f"esptool's {'USB Serial/JTAG' if mode == 'usb-reset' else 'RTS/DTR'} reset did not "
           f"bring it there ({str(first).splitlines()[0]})")
    message = (f"Hold {pin} low (to GND) and press {reset}: the {chip} then starts its ROM download "
               f"mode. ({who}: {why}.) Keep holding it until rakflash says to let go.")
    emit(Prompt("hold-gpio0-and-reset", message, window,
                {"pin": pin, "reset": reset, "cause": "download-mode"}))
    deadline = time.monotonic() + window
    next_tick = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() >= next_tick:
            emit(Countdown(round(deadline - time.monotonic()), "hold-gpio0-and-reset"))
            next_tick = time.monotonic() + 1.0
        try:
            esp = _detect(port, "no-reset", 1)
        except FatalError:
            continue
        emit(Note(f"the ROM's download mode answers (waited {time.monotonic() - t0:.1f} s)"))
        return Connection(esp, _how(esp, listener), not listener.no_lines, time.monotonic() - t0,
                          listener)
    raise DownloadModeFailed(
        f"the {chip}'s ROM download mode did not answer on {link.port_name}: {why}, and no "
        f"download mode started within {window:.0f} s",
        hint=f"Hold {pin} low (to GND), press {reset}, and run the same command again (it waits "
             f"{window:.0f} s for that); check that {link.port_name} is the module's port "
             f"('rakflash ports').", pin=pin, module=who)


# ------------------------------------------------------------------ what the chip holds

@dataclass
class Chip:
    """What the chip and its flash say, read in download mode."""

    name: str                       # esptool's CHIP_NAME: "ESP32", "ESP32-S3"
    chip_id: int                    # the image chip id it boots
    description: str
    features: list[str]
    mac: str
    crystal_mhz: int | None
    revision: int                   # major * 100 + minor
    flash_id: int | None
    flash_size: int | None          # bytes, from the JEDEC id
    table: esp_image.PartitionTable | None
    table_problems: list[str]
    app: dict | None                # the app descriptor of the first app partition's image
    app_offset: int | None
    bootloader: dict | None
    stub: bool = False

    @property
    def flash_size_text(self) -> str:
        return f"{self.flash_size >> 20} MB" if self.flash_size else "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {"chip": self.name, "description": self.description, "features": self.features,
                "mac": self.mac, "crystal_mhz": self.crystal_mhz, "flash_id": self.flash_id,
                "flash_size": self.flash_size, "revision": f"v{self.revision // 100}.{self.revision % 100}",
                "partition_table": self.table.to_dict() if self.table else None,
                "partition_table_problems": self.table_problems,
                "app": self.app, "app_offset": self.app_offset, "bootloader": self.bootloader}


def _flash_size(esp) -> tuple[int | None, int | None]:
    from esptool.cmds import detect_flash_size
    from esptool.util import flash_size_bytes
    flash_id = esp.flash_id()
    size = detect_flash_size(esp)
    return flash_id, (flash_size_bytes(size) if size else None)


def read_chip(esp, module: Module | None) -> Chip:
    """Ask the chip (the stub running) what it is and what its flash holds."""
    mac = ":".join(f"{b:02x}" for b in esp.read_mac("BASE_MAC"))
    try:
        crystal = esp.get_crystal_freq()
    except Exception:                     # (a chip whose stub can't tell; not needed to flash)
        crystal = None
    flash_id, size = _flash_size(esp)
    if size:
        esp.flash_set_parameters(size)
    table = None
    problems: list[str] = []
    raw = esp.read_flash(esp_image.PARTITION_TABLE_OFFSET, esp_image.PARTITION_TABLE_MAX)
    try:
        table = esp_image.parse_partition_table(raw)
        problems = table.problems(size)
    except esp_image.EspImageError as exc:
        problems = [f"no partition table at {esp_image.PARTITION_TABLE_OFFSET:#x} ({exc})"]
    app = app_offset = None
    slot = table.first_app() if table else None
    if slot is not None and (size is None or slot.offset + 0x400 <= size):
        head = esp_image.peek(esp.read_flash(slot.offset, 0x400))
        app_offset = slot.offset
        app = (head or {}).get("app")
    boot_at = esp.BOOTLOADER_FLASH_OFFSET
    boot = esp_image.peek(esp.read_flash(boot_at, 0x200))
    return Chip(esp.CHIP_NAME, esp.IMAGE_CHIP_ID, esp.get_chip_description(), esp.get_chip_features(),
                mac, crystal, esp.get_chip_revision(), flash_id, size, table, problems, app, app_offset,
                (boot or {}).get("bootloader"), stub=esp.IS_STUB)


def chip_module(chip: Chip, named: Module | None) -> tuple[Module | None, list[Module]]:
    """The module for this chip: the one named (if its chip), else the catalog's with this chip —
    (module, every module it could be)."""
    found = [m for m in esp_modules() if m.esp["image_chip_id"] == chip.chip_id]
    if named is not None and named in found:
        return named, [named]
    return (found[0] if found else None), found


def device_info(link: Link, chip: Chip, module: Module | None, could_be: list[Module], *, mode: str,
                notes: list[str]) -> "DeviceInfo":
    from ..identify import DeviceInfo
    info = DeviceInfo(link.port_name, link.baud, mode, "esp-rom" if mode == "rom" else "esp-app",
                      module=module, module_certain=True,
                      app_version=(chip.app or {}).get("version") or None,
                      bootloader_version=(f"ESP-IDF {chip.bootloader['idf_ver']}"
                                          if chip.bootloader and chip.bootloader.get("idf_ver") else None),
                      hardware_model=chip.description, hardware_id=chip.name, serial_number=chip.mac)
    info.chip = chip.to_dict()
    if module is not None and len(could_be) > 1:
        info.notes.append(f"the chip can't say which board it is on: {', '.join(m.name for m in could_be)} "
                          f"all carry this {chip.name} with the same flash and USB, and are updated the "
                          f"same way; rakflash takes it as a {module.name} (--module names another)")
    info.notes += notes
    if chip.app:
        info.notes.append(f"app {chip.app.get('project_name')!r} {chip.app.get('version')} "
                          f"(ESP-IDF {chip.app.get('idf_ver')}) at {chip.app_offset:#x}")
    elif chip.table is not None and chip.table.first_app() is not None:
        info.notes.append(f"no app image in its first app partition ({chip.table.first_app().offset:#x}): "
                          f"nothing runs")
    elif chip.table is not None:
        info.notes.append("its partition table has no app partition: nothing runs")
    for p in chip.table_problems:
        info.notes.append(f"partition table: {p}")
    return info


def _leave(conn: Connection, link: Link, module: Module | None, emit: Sink,
           window: float = PERSON_WINDOW) -> str:
    """Start the chip's firmware again after a session: esptool's hard reset where RTS/DTR reach
    it, else the person's part (a prompt). Returns "reset" or "person"."""
    from esptool.cmds import reset_chip
    if conn.how == "reset" or (conn.how == "running" and conn.lines):
        reset_chip(conn.esp, "hard-reset")
        return "reset"
    pin, reset, _ = _person_words(module)
    emit(Prompt("release-gpio0-and-reset", f"Let go of {pin} and press {reset}: the new firmware "
                f"starts.", window, {"pin": pin, "reset": reset}))
    return "person"


# ------------------------------------------------------------------ identify (info, doctor)

def identify(link: Link, module: Module | None = None, *, emit: Sink = nowhere,
             window: float = PERSON_WINDOW) -> "DeviceInfo":
    """What ESP chip answers on ``link`` (and what its flash holds), then its app runs again
    where a reset can start it."""
    return examine(link, module, emit=emit, window=window)[0]


def examine(link: Link, module: Module | None = None, *, image=None, emit: Sink = nowhere,
            window: float = PERSON_WINDOW) -> "tuple[DeviceInfo, EspPlan | None, RakflashError | None]":
    """:func:`identify`, and — given ``image`` — the plan ``flash`` would make for it, or its
    refusal (doctor's ``--for``). Nothing is written."""
    from esptool.util import FatalError
    with _esptool_on(link, emit) as (port, listener):
        conn = connect(link, port, listener, module, emit=emit, window=window)
        try:
            from esptool.cmds import run_stub
            conn.esp = run_stub(conn.esp)
            chip = read_chip(conn.esp, module)
        except (FatalError, OSError) as exc:
            raise _fatal(exc, "reading the chip") from None
        named, could_be = chip_module(chip, module)
        notes = []
        if module is not None and named is not module:
            notes.append(f"--module says {module.name}, but the chip is an {chip.name}")
        info = device_info(link, chip, named, could_be, mode="rom", notes=[])
        plan = refusal = None
        if image is not None and named is not None:
            try:
                plan = make_plan(image, chip, info, named, baud=link.baud)
                if _same_bytes(conn.esp, plan):
                    refusal = AlreadyUpToDate(f"{named.name} already holds exactly these bytes (the "
                                              f"chip's MD5 of each region matches {plan.name})",
                                              module=named.name, app_version_after=plan.app_version,
                                              bytes=0, seconds=0.0)
                    plan = None
            except RakflashError as exc:
                refusal = exc
            except (FatalError, OSError) as exc:
                refusal = _fatal(exc, "checking the image against the chip")
        info.mode = "app"
        if conn.how == "reset" or (conn.how == "running" and conn.lines):
            try:
                from esptool.cmds import reset_chip
                reset_chip(conn.esp, "hard-reset")
                notes.append("rakflash reset it into its ROM download mode to ask, and reset it "
                             "back into its firmware")
            except (FatalError, OSError):
                info.mode = "rom"
        else:
            info.mode = "rom"
            pin, reset, _ = _person_words(named)
            notes.append(f"it waits in its ROM download mode ({'GPIO0 held low' if conn.how == 'held' else 'a stub left running'}): "
                         f"let go of {pin} and press {reset} to start its firmware")
        info.dialect = "esp-rom" if info.mode == "rom" else "esp-app"
        info.notes = ([n for n in notes if n.startswith("--module")] + info.notes
                      + [n for n in notes if not n.startswith("--module")])
        if link.baud != ROM_BAUD:
            link.baud = ROM_BAUD
        return info, plan, refusal


def answers_sync(link: Link, tries: int = 2) -> bool:
    """Whether an ESP ROM (or stub) in download mode answers SYNC on ``link`` now, without a reset:
    a few SLIP frames, which an application takes as noise."""
    from esptool.loader import ESPLoader
    from esptool.util import FatalError
    with _esptool_on(link, nowhere) as (port, _):
        loader = ESPLoader(port, link.baud)
        for _ in range(tries):
            try:
                loader.flush_input()
                loader.sync()
                return True
            except (FatalError, StopIteration):
                continue
            except Exception:
                return False
    return False


# ------------------------------------------------------------------ the plan

@dataclass
class EspPlan:
    """What an ESP write will do (the :class:`~rakflash.flows.plan.Plan` shape, for the renderers)."""

    module: Module
    image: Any                       # images.ImageInfo (esp_image.EspImageInfo)
    device: "DeviceInfo"
    chip: Chip
    parts: list[tuple[int, bytes]]   # (flash offset, bytes) to write
    baud: int
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    app_version: str | None = None
    force: bool = False

    @property
    def payload(self) -> bytes:
        return b"".join(d for _, d in self.parts)

    @property
    def address(self) -> int:
        return self.parts[0][0]

    @property
    def protocol(self) -> str:
        return "esptool"

    @property
    def name(self) -> str:
        return self.image.image.path.replace("\\", "/").rsplit("/", 1)[-1]

    def estimate_seconds(self, baud: int | None = None, latency: float = 0.002) -> float:
        return TRANSFER.minimum_seconds(self.module, self.payload, baud or self.baud, latency)

    def to_dict(self, baud: int | None = None) -> dict:
        d = self.device
        return {"port": d.port, "mode": d.mode, "image": self.image.image.path, "module": self.module.name,
                "protocol": "esptool", "address": self.address, "bytes": len(self.payload),
                "name": self.name, "app_version_before": d.app_version, "app_version_new": self.app_version,
                "bootloader_version": d.bootloader_version,
                "estimated_seconds": round(self.estimate_seconds(baud), 2), "baud": baud or self.baud,
                "steps": self.steps, "notes": self.notes, "warnings": self.warnings,
                "chip": self.chip.name, "mac": self.chip.mac, "flash_size": self.chip.flash_size,
                "parts": [{"address": a, "bytes": len(b)} for a, b in self.parts]}


def make_plan(image, chip: Chip, device: "DeviceInfo", module: Module, *, baud: int,
              force: bool = False) -> EspPlan:
    """Check the image against the chip before anything is written; the parts to write."""
    from ...errors import ImageTargetError, NotFirmware
    from ...images import analyse
    try:
        info = analyse(image, module=module)
    except NotFirmware:
        raise
    except ImageTargetError as exc:
        raise WrongTarget(exc.message, hint=exc.hint, **exc.details) from None
    esp: esp_image.EspFile = image.esp
    file = info.image.path
    if esp.chip_id is not None and esp.chip_id >= 0 and esp.chip_id != chip.chip_id:
        raise WrongTarget(f"{file} is built for the {esp.chip} (its image header says chip id "
                          f"{esp.chip_id}), but the chip on {device.port} is an {chip.name}",
                          hint=f"Use the firmware built for the {module.name} ({chip.name}). Nothing "
                               f"was written.", chip_id=esp.chip_id)
    damaged = [p for o, i in esp.images for p in i.problems()]
    if damaged:
        raise ImageFormatError(f"{file}: {damaged[0]}",
                               hint="Download or build the firmware again and compare its SHA-256. "
                                    "Nothing was written.")
    for offset, img in esp.images:
        top = img.max_rev_full if img.max_rev_full not in (0, 0xFFFF) else None
        if img.max_rev_full and (chip.revision < img.min_rev_full or (top is not None and chip.revision > top)):
            wanted = (f"v{img.min_rev_full // 100}.{img.min_rev_full % 100}"
                      + (f" to v{top // 100}.{top % 100}" if top is not None else " or later"))
            raise WrongTarget(f"the {img.kind} in {file} needs chip revision {wanted}; this "
                              f"{chip.name} is revision v{chip.revision // 100}.{chip.revision % 100}",
                              hint="Use a build for this chip revision. Nothing was written.")
    flash = chip.flash_size or module.mcu.flash.size
    parts: list[tuple[int, bytes]] = [(s.start, s.data) for s in image.segments]
    notes: list[str] = []
    warnings: list[str] = []
    if esp.kind == "app":
        # A lone app goes where the chip's own partition table puts its app: that table decides
        # what the bootloader starts.
        table = chip.table
        slot = table.first_app() if table else None
        if slot is None:
            raise PartitionTableInvalid(
                f"{file} is an app alone, and the {chip.name} on {device.port} has "
                f"{'no partition table' if table is None else 'no app partition in its partition table'}, "
                f"so nothing would start it",
                hint=f"Write the merged binary (bootloader, partition table and app: 'esptool "
                     f"merge-bin', or your build's *.merged.bin) with 'rakflash flash MERGED.bin --port "
                     f"{device.port}'. Nothing was written.")
        if image.segments[0].start != slot.offset and info.image.base_source != "--address":
            notes.append(f"the app goes to {slot.offset:#x}, the chip's {slot.label!r} partition "
                         f"(its partition table says so)")
            parts = [(slot.offset, image.segments[0].data)]
        target = next((p for p in table.apps if p.offset == parts[0][0]), None)
        if target is None:
            raise PartitionTableInvalid(
                f"{parts[0][0]:#x} is the start of no app partition of the chip's partition table "
                f"({', '.join(f'{p.label} at {p.offset:#x}' for p in table.apps)})",
                hint="Leave out --address: rakflash puts an app in the chip's first app partition. "
                     "Nothing was written.")
        app_len = esp.app.length
        if app_len > target.size:
            raise ImageTooLarge(f"{file}'s app is {app_len:,} bytes; the chip's {target.label!r} partition "
                                f"holds {target.size:,}", image_bytes=app_len, region_bytes=target.size,
                                hint="Build it smaller, or write a merged binary with a partition table "
                                     "that gives the app more room. Nothing was written.")
        for p in chip.table_problems:
            warnings.append(f"the chip's partition table: {p}")
        if any(p.subtype_name == "ota" for p in table.partitions):
            notes.append("the partition table has OTA data: the bootloader starts the slot it names, "
                         "which after an over-the-air update may be another one")
    if esp.table is not None:
        problems = esp.table[1].problems(flash)
        if problems:
            raise PartitionTableInvalid(f"{file}'s partition table can't work on this {chip.name} "
                                        f"({chip.flash_size_text} of flash): {problems[0]}")
    for offset, data in parts:
        if offset + len(data) > flash:
            raise ImageTooLarge(f"{file} reaches {offset + len(data):#x} ({offset:#x} + {len(data):,} "
                                f"bytes), past the {chip.flash_size_text} of flash on {device.port}",
                                image_bytes=offset + len(data), region_bytes=flash,
                                hint=f"Use the firmware built for the {module.name} "
                                     f"({module.mcu.flash.size >> 20} MB flash). Nothing was written.")
    file_problems = [p for p in esp.problems(flash) if "partition table" not in p]
    if file_problems:
        raise PartitionTableInvalid(f"{file}: {file_problems[0]}")
    if esp.bootloader is not None:
        notes.append("this rewrites the second-stage bootloader: the chip's ROM stays, so an "
                      "interrupted write is finished by running the same command again")
    for o, img in esp.images:
        size = (img.flash_size_freq & 0xF0)
        header_mb = int(esp_image.FLASH_SIZES.get(size, "0MB")[:-2])
        if img.kind == "bootloader" and chip.flash_size and header_mb and (header_mb << 20) > chip.flash_size:
            warnings.append(f"the bootloader's header says {header_mb} MB of flash; the chip has "
                            f"{chip.flash_size_text}")
    if module.unconfirmed_note:
        notes.append(module.unconfirmed_note)
    plan = EspPlan(module, info, device, chip, parts, baud, notes=notes, warnings=warnings,
                   app_version=info.app_version, force=force)
    plan.steps = TRANSFER.steps(plan)
    return plan


def _same_bytes(esp, plan: EspPlan) -> bool:
    """Whether every part is already on the chip, byte for byte (the chip's MD5 says)."""
    app = plan.chip.app or {}
    new = plan.image.esp.app
    if new is not None and new.app_desc and app.get("app_elf_sha256") != new.app_desc.get("app_elf_sha256"):
        return False              # another build: no need to ask the chip
    for offset, data in plan.parts:
        if esp.flash_md5sum(offset, len(data)) != hashlib.md5(data).hexdigest():
            return False
    return True


# ------------------------------------------------------------------ the transfer

class EspRomTransfer:
    """The ``esptool`` entry of :data:`~rakflash.flows.transfers.TRANSFERS`: an ESP module's whole
    flash session runs here (:meth:`run_session`), since even identifying the chip goes through
    its ROM download mode."""

    name = "esptool"
    reports_phases = True
    claims = staticmethod(claims)

    def steps(self, plan: EspPlan) -> list[str]:
        m = plan.module
        how = {"usb-serial-jtag": "esptool's USB Serial/JTAG reset (RTS/DTR on the chip's own USB)",
               "hold-boot": f"esptool's RTS/DTR reset, else you hold {m.rom_access.get('boot0', 'GPIO0')} "
                            f"low and press {m.rom_access.get('reset', 'reset')}"}[m.esp["reset"]]
        writes = "; ".join(f"{len(d):,} bytes at {a:#x}" for a, d in plan.parts)
        return [f"enter the {plan.chip.name}'s ROM download mode: {how}",
                "run esptool's flasher stub (it answers OHAI), "
                + (f"{plan.baud} baud" if plan.baud != ROM_BAUD else "at the ROM's rate"),
                f"write, compressed, erasing as it goes: {writes}",
                "verify: the chip computes the MD5 of each region; it must be the image's",
                "start the new firmware (esptool's hard reset, or you let go of GPIO0 and reset) and "
                f"read {plan.app_version or 'its version'} from its boot log"]

    def minimum_seconds(self, module: Module, payload, baud: int, latency: float) -> float:
        """Stub upload at the ROM's rate, the compressed image at ``baud`` in 16 KiB blocks (a
        turnaround each), the flash's erase (64 KiB blocks) and programming, the chip's MD5."""
        data = payload if isinstance(payload, (bytes, bytearray)) else b"\0" * int(payload)
        native = module.esp["reset"] == "usb-serial-jtag"
        line = 1_216_000 if native else baud / 10            # bytes per second on the wire
        rom_line = 1_216_000 if native else ROM_BAUD / 10
        compressed = len(zlib.compress(bytes(data), 1))
        blocks = -(-compressed // 0x4000)
        erase = -(-len(data) // 0x10000) * 0.15
        program = -(-len(data) // 256) * 0.0006
        return (STUB_BYTES / rom_line + compressed / line + blocks * 2 * latency
                + erase + program + len(data) / 5e6)

    def send(self, link, plan, emit):          # (the flash session runs whole: run_session)
        raise NotImplementedError

    # -- the whole flash -------------------------------------------------------------------
    def run_session(self, session: "FlashSession"):
        return _run_flash(session)


TRANSFER = EspRomTransfer()


def _run_flash(session: "FlashSession"):
    from esptool.cmds import run_stub, write_flash
    from esptool.util import FatalError
    from ...images import analyse
    from ..session import DryRun
    o, link, emit = session.options, session.link, session.emit
    t0 = time.monotonic()
    image = session.image
    named = o.module
    if named is None and getattr(image, "esp", None) is not None:
        info = analyse(image)
        named = info.module
    if named is None:
        named = port_module(link)
    # A file that is no ESP image, or an image for a non-ESP module, is refused before the port
    # is touched (as check_firmware does for the others).
    if named is not None:
        from ...errors import ImageTargetError, NotFirmware
        try:
            analyse(image, module=named)
        except NotFirmware:
            raise
        except ImageTargetError as exc:
            raise WrongTarget(exc.message, hint=exc.hint, **exc.details) from None
    emit(Phase("identify", f"identifying the ESP chip on {link.port_name} (its ROM download mode)"))
    with _esptool_on(link, emit) as (port, listener):
        emit(Phase("boot", "entering the ROM download mode"))
        conn = connect(link, port, listener, named, emit=emit, window=o.reset_window)
        try:
            conn.esp = run_stub(conn.esp)
            native = (named or port_module(link)) is not None and reset_kind(named, link) == "usb-serial-jtag"
            baud = ROM_BAUD if native else (o.baud or FLASH_BAUD)
            if baud != ROM_BAUD:
                conn.esp.change_baud(baud)
            chip = read_chip(conn.esp, named)
        except (FatalError, OSError) as exc:
            raise _fatal(exc, "reading the chip") from None
        module, could_be = chip_module(chip, named)
        if module is None:
            raise WrongTarget(f"the chip on {link.port_name} is an {chip.name}, which no module "
                              f"rakflash knows has", hint="See 'rakflash modules'. Nothing was written.")
        if named is not None and named.esp["image_chip_id"] != chip.chip_id:
            raise WrongTarget(f"--module says {named.name} ({named.mcu.name}), but the chip on "
                              f"{link.port_name} is an {chip.name}",
                              hint="Check --module and the port. Nothing was written.")
        dev = device_info(link, chip, module, could_be, mode="rom", notes=[])
        session.device = dev
        emit(DeviceFound({k: v for k, v in dev.to_dict().items() if k != "error"}))
        plan = make_plan(image, chip, dev, module, baud=link.baud, force=o.force)
        session.plan = plan
        if not o.force and _same_bytes(conn.esp, plan):
            _leave_quietly(conn, link)
            raise AlreadyUpToDate(f"{module.name} already holds exactly these bytes (the chip's MD5 of "
                                  f"each region matches {plan.name})", module=module.name,
                                  app_version_after=plan.app_version or dev.app_version, bytes=0,
                                  seconds=0.0)
        emit(PlanReady(plan.to_dict(link.baud)))
        if o.dry_run:
            _leave_quietly(conn, link)
            return DryRun(plan, link.baud)
        if session.confirm is not None and not session.confirm(plan):
            _leave_quietly(conn, link)
            raise Aborted("update not confirmed")
        session._writing = True
        digests: dict[tuple[int, int], str] = {}
        esp = conn.esp
        asked = esp.flash_md5sum

        def kept_md5(addr: int, size: int) -> str:        # the chip's own answer, as esptool gets it
            digest = asked(addr, size)
            digests[(addr, size)] = digest
            return digest
        esp.flash_md5sum = kept_md5
        listener.total = len(plan.payload)
        emit(Phase("write", "writing (esptool's stub erases as it goes)", {"bytes": listener.total}))
        session._data_sent = True
        t1 = time.monotonic()
        try:
            write_flash(esp, [(a, d) for a, d in plan.parts], flash_size="keep")
        except (FatalError, OSError) as exc:
            if "MD5 of file does not match" in str(exc) or "Write failed, the written flash region is empty" in str(exc):
                raise VerifyFailed(f"the chip's MD5 of what it holds is not the image's: {exc}",
                                   bytes=len(plan.payload)) from None
            raise _fatal(exc, "writing") from None
        finally:
            del esp.flash_md5sum
        # The write itself, as esptool times it (compressed data on the wire and the flash work);
        # the flash parameters before it and the MD5 after it are in the whole run's seconds.
        transfer_seconds = listener.write_seconds or (time.monotonic() - t1)
        verified = _check_digests(plan, digests)
        session._sent = True
        emit(Phase("start", "starting the new firmware"))
        try:
            how = _leave(conn, link, module, emit, o.reset_window)
        except (FatalError, OSError) as exc:
            raise _fatal(exc, "resetting the chip") from None
    wait = o.reset_window if how == "person" else BOOT_LOG_WAIT
    after, _heard = _hear_the_app(link, conn, how, emit, wait)
    warnings = []
    if plan.app_version and after is None:
        warnings.append({"code": "version-unconfirmed",
                         "message": f"the new firmware's boot log did not say its version within "
                                    f"{wait:.0f} s"
                                    + (" (let go of GPIO0 and press reset to start it)" if how == "person" else "")})
        emit(Warning(warnings[-1]["code"], warnings[-1]["message"]))
    elif plan.app_version and after != plan.app_version:
        raise VerifyFailed(f"after the write the {module.name}'s boot log says app version {after!r}, "
                           f"but the image carries {plan.app_version!r}", bytes=len(plan.payload))
    result = _result_class()("ok", module.name, dev.app_version, after or plan.app_version,
                             len(plan.payload), time.monotonic() - t0, conn.seconds, transfer_seconds,
                             None, warnings, version_confirmed=after is not None and after == plan.app_version)
    result.chip = chip.to_dict()
    result.verified = verified
    result.parts = [{"address": a, "bytes": len(d)} for a, d in plan.parts]
    result.started_by = how
    return result


def _leave_quietly(conn: Connection, link: Link) -> None:
    """Nothing is written: start the firmware again where a reset can (a dry run, a refusal)."""
    if conn.how == "reset" or (conn.how == "running" and conn.lines):
        try:
            from esptool.cmds import reset_chip
            reset_chip(conn.esp, "hard-reset")
        except Exception:
            pass


def _check_digests(plan: EspPlan, digests: dict[tuple[int, int], str]) -> list[dict]:
    """The chip's MD5 of each region written, against the image's: "verified" only from these."""
    out = []
    for addr, data in plan.parts:
        padded = data + b"\xff" * (-len(data) % 4)
        want = hashlib.md5(padded).hexdigest()
        got = digests.get((addr, len(padded))) or digests.get((addr, len(data)))
        if got is None:
            raise VerifyFailed(f"esptool did not ask the chip for the MD5 of {addr:#x}+{len(data):,}: "
                               f"rakflash can't say the write was verified", bytes=len(plan.payload))
        if got != want:
            raise VerifyFailed(f"the chip's MD5 of {addr:#x}+{len(padded):,} is {got}, the image's "
                               f"{want}", bytes=len(plan.payload))
        out.append({"address": addr, "bytes": len(padded), "md5": got})
    return out


APP_VERSION = re.compile(rb"App version:\s+(\S+)")


def _hear_the_app(link: Link, conn: Connection, how: str, emit: Sink,
                  wait: float) -> tuple[str | None, bool]:
    """The new app's version from its boot log (it starts at the ROM's 115200 baud)."""
    if link.baud != ROM_BAUD:
        link.baud = ROM_BAUD
    if how == "person":
        link.discard_input()
    end = time.monotonic() + wait
    seen = b""
    next_tick = time.monotonic() + 1.0
    while time.monotonic() < end:
        seen += link.read(4096, 0.05)
        m = APP_VERSION.search(seen)
        if m:
            return m.group(1).decode("ascii", "replace"), True
        if how == "person" and time.monotonic() >= next_tick:
            emit(Countdown(round(end - time.monotonic()), "release-gpio0-and-reset"))
            next_tick = time.monotonic() + 1.0
        seen = seen[-4096:]
    return None, False


_RESULT_CLASS = None


def _result_class():
    """:class:`~rakflash.flows.update.UpdateResult` of an ESP write, with the chip and the chip's
    MD5 of each region (made on first use: update imports this package)."""
    global _RESULT_CLASS
    if _RESULT_CLASS is None:
        from ..update import UpdateResult

        class EspUpdateResult(UpdateResult):
            chip: dict | None = None
            verified: list | None = None
            parts: list | None = None
            started_by: str | None = None

            def to_dict(self) -> dict:
                d = super().to_dict()
                d.update(chip=self.chip, verified=self.verified, parts=self.parts,
                         started_by=self.started_by)
                return d
        _RESULT_CLASS = EspUpdateResult
    return _RESULT_CLASS
