"""An ESP32 chip in its ROM download mode, through esptool: getting there, asking it, leaving.

esptool is the well-kept implementation of the ROM's protocol and of its flasher stub, so rakflash
uses its Python API (``esptool.cmds``: ``detect_chip``, ``run_stub``, ``reset_chip``; the
loader's ``read_flash``, ``read_mac``, ``flash_id``) over the port rakflash opened:

* **esptool on rakflash's port** (:func:`esptool_on`): every byte in the ``--trace`` file, a stop
  (the page's Stop, doctor's deadline) reaching esptool's reads, esptool's own printing caught
  (:class:`_Relay`) and turned into rakflash events and ``-v`` steps, never printed;
* **enter download mode** the way the module allows (:func:`connect`): esptool's reset over
  RTS/DTR — the S3's USB Serial/JTAG (``usb-reset``) or the classic two-transistor circuit —
  and, where no line reaches the chip (a RAK11200 on its WisBlock base, any chip on a port
  without modem lines), by asking the person to hold GPIO0 low and press reset, the pin named,
  with a countdown;
* **ask the chip** (:func:`read_chip`, :func:`ask`): what it is (esptool's description, MAC,
  crystal), its flash (the JEDEC id says the size), the partition table and the app and
  bootloader the flash holds (their descriptors) — what ``info`` and ``doctor`` show;
* **leave**: esptool's hard reset, or the person lets go of GPIO0 and resets; the app's version
  from its boot log (:func:`hear_the_app`).

The update itself (plan, refusals, write, verify) is :mod:`rakflash.flows.esp_update`; the
``esptool`` entry of the transfer table is :mod:`rakflash.flows.transfers.esp_rom`. This module
imports no other flow: identification (``identify.py``) asks through it.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .. import catalog as _catalog
from .. import esp_image
from ..catalog import Module
from ..errors import DownloadModeFailed, EspToolFailed, PortDisconnected, RakflashError
from ..events import Countdown, Note, Phase, Progress, Prompt, Sink, nowhere
from ..link import Link

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
            if previous is not None:
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
def esptool_on(link: Link, emit: Sink) -> Iterator[tuple[_Port, _Listener]]:
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


def fatal(exc: BaseException, doing: str) -> RakflashError:
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
    from ..ports import port_entry
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
    if mod is not None and mod.esp_fact("reset") == "usb-serial-jtag":
        return "usb-serial-jtag"
    return "classic"


def person_words(module: Module | None) -> tuple[str, str, str]:
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
    pin, reset, who = person_words(module)
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
    found = [m for m in esp_modules() if m.esp_fact("image_chip_id") == chip.chip_id]
    if named is not None and named in found:
        return named, [named]
    return (found[0] if found else None), found


def device_fields(link: Link, chip: Chip, module: Module | None, could_be: list[Module], *,
                  mode: str, notes: list[str]) -> dict[str, Any]:
    """What :class:`~rakflash.flows.identify.DeviceInfo` says of an ESP chip (its keyword
    arguments: ``DeviceInfo(**device_fields(…))``)."""
    said: list[str] = []
    if module is not None and len(could_be) > 1:
        said.append(f"the chip can't say which board it is on: {', '.join(m.name for m in could_be)} "
                    f"all carry this {chip.name} with the same flash and USB, and are updated the "
                    f"same way; rakflash takes it as a {module.name} (--module names another)")
    said += notes
    slot = chip.table.first_app() if chip.table is not None else None
    if chip.app:
        said.append(f"app {chip.app.get('project_name')!r} {chip.app.get('version')} "
                    f"(ESP-IDF {chip.app.get('idf_ver')}) at {chip.app_offset:#x}")
    elif slot is not None:
        said.append(f"no app image in its first app partition ({slot.offset:#x}): nothing runs")
    elif chip.table is not None:
        said.append("its partition table has no app partition: nothing runs")
    for p in chip.table_problems:
        said.append(f"partition table: {p}")
    return dict(port=link.port_name, baud=link.baud, mode=mode,
                dialect="esp-rom" if mode == "rom" else "esp-app", module=module, module_certain=True,
                app_version=(chip.app or {}).get("version") or None,
                bootloader_version=(f"ESP-IDF {chip.bootloader['idf_ver']}"
                                    if chip.bootloader and chip.bootloader.get("idf_ver") else None),
                hardware_model=chip.description, hardware_id=chip.name, serial_number=chip.mac,
                chip=chip.to_dict(), notes=said)


def leave(conn: Connection, link: Link, module: Module | None, emit: Sink,
           window: float = PERSON_WINDOW) -> str:
    """Start the chip's firmware again after a session: esptool's hard reset where RTS/DTR reach
    it, else the person's part (a prompt). Returns "reset" or "person"."""
    from esptool.cmds import reset_chip
    if conn.how == "reset" or (conn.how == "running" and conn.lines):
        reset_chip(conn.esp, "hard-reset")
        return "reset"
    pin, reset, _ = person_words(module)
    emit(Prompt("release-gpio0-and-reset", f"Let go of {pin} and press {reset}: the new firmware "
                f"starts.", window, {"pin": pin, "reset": reset}))
    return "person"


# ------------------------------------------------------------------ asking (info, doctor)

While = Callable[["Connection", Chip, "Module | None", dict[str, Any]], None]


def ask(link: Link, module: Module | None = None, *, emit: Sink = nowhere,
        window: float = PERSON_WINDOW, while_there: While | None = None) -> dict[str, Any]:
    """What ESP chip answers on ``link`` and what its flash holds, as
    :func:`device_fields`; then its app runs again where a reset can start it. ``while_there``
    is called with the chip still in download mode (doctor's check of a file: its plan and the
    chip's MD5). Nothing is written."""
    from esptool.cmds import reset_chip, run_stub
    from esptool.util import FatalError
    with esptool_on(link, emit) as (port, listener):
        conn = connect(link, port, listener, module, emit=emit, window=window)
        try:
            conn.esp = run_stub(conn.esp)
            chip = read_chip(conn.esp, module)
        except (FatalError, OSError) as exc:
            raise fatal(exc, "reading the chip") from None
        named, could_be = chip_module(chip, module)
        notes = []
        if module is not None and named is not module:
            notes.append(f"--module says {module.name}, but the chip is an {chip.name}")
        if while_there is not None:
            while_there(conn, chip, named, device_fields(link, chip, named, could_be, mode="rom", notes=[]))
        mode = "app"
        if conn.how == "reset" or (conn.how == "running" and conn.lines):
            try:
                reset_chip(conn.esp, "hard-reset")
                notes.append("rakflash reset it into its ROM download mode to ask, and reset it "
                             "back into its firmware")
            except (FatalError, OSError):
                mode = "rom"
        else:
            mode = "rom"
            pin, reset, _ = person_words(named)
            notes.append(f"it waits in its ROM download mode ({'GPIO0 held low' if conn.how == 'held' else 'a stub left running'}): "
                         f"let go of {pin} and press {reset} to start its firmware")
        fields = device_fields(link, chip, named, could_be, mode=mode, notes=[])
        fields["notes"] = ([n for n in notes if n.startswith("--module")] + fields["notes"]
                           + [n for n in notes if not n.startswith("--module")])
        if link.baud != ROM_BAUD:
            link.baud = ROM_BAUD
        return fields


def answers_sync(link: Link, tries: int = 2) -> bool:
    """Whether an ESP ROM (or stub) in download mode answers SYNC on ``link`` now, without a reset:
    a few SLIP frames, which an application takes as noise."""
    from esptool.loader import ESPLoader
    from esptool.util import FatalError
    with esptool_on(link, nowhere) as (port, _):
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


def leave_quietly(conn: Connection, link: Link) -> None:
    """Nothing is written: start the firmware again where a reset can (a dry run, a refusal)."""
    if conn.how == "reset" or (conn.how == "running" and conn.lines):
        try:
            from esptool.cmds import reset_chip
            reset_chip(conn.esp, "hard-reset")
        except Exception:
            pass



APP_VERSION = re.compile(rb"App version:\s+(\S+)")


def hear_the_app(link: Link, conn: Connection, how: str, emit: Sink,
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

