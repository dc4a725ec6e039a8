"""``rakflash sim MODULE``: a virtual module on a pseudo-terminal or a TCP port (RFC 2217)."""

from __future__ import annotations

import queue
import re
import signal
import sys
import threading

import click

from .app import main
from .options import BAUD, PROBABILITY, Real


@main.command()
@click.argument("module_name", metavar="MODULE")
@click.option("--state", type=click.Choice(["app", "bootloader", "erased"]), default="app", show_default=True,
              help="Start in the application or in the bootloader (as after an interrupted update; an "
                   "ESP32 module: in its ROM download mode, GPIO0 held low); 'erased': an ESP32 "
                   "module with empty flash, as a RAK3112 leaves the factory.")
@click.option("--baud", type=BAUD, default=115200, show_default=True, help="The module's UART baud rate.")
@click.option("--latency-ms", type=Real(0, 1000, what="a number of milliseconds"), default=1.0, show_default=True,
              help="USB-UART turnaround latency.")
@click.option("--flash-scale", type=Real(0, 1000, what="a factor"), default=1.0, show_default=True,
              help="Multiply the datasheet flash erase/program times (0 = instant).")
@click.option("--app-version", help="Version string of the application the module starts with.")
@click.option("--bootloader-version", help="Version string of its bootloader.")
@click.option("--app-size", type=click.IntRange(512), default=96 * 1024, show_default=True,
              help="Size of the starting application (at most the module's application region).")
@click.option("--sketch", type=click.Choice(["quiet", "flooding"]), default="quiet", show_default=True,
              help="'flooding': the application prints without pause after a short start-up window.")
@click.option("--bit-error-rate", type=PROBABILITY, default=0.0,
              help="Host → module: probability that a byte arrives with a bit flipped.")
@click.option("--drop-rate", type=PROBABILITY, default=0.0, help="Host → module: probability that a byte is lost.")
@click.option("--garbage-rate", type=PROBABILITY, default=0.0,
              help="Host → module: probability that a random byte appears after a byte.")
@click.option("--bit-error-rate-to-host", type=PROBABILITY, default=0.0,
              help="Module → host: probability that a byte arrives with a bit flipped.")
@click.option("--drop-rate-to-host", type=PROBABILITY, default=0.0,
              help="Module → host: probability that a byte is lost.")
@click.option("--garbage-rate-to-host", type=PROBABILITY, default=0.0,
              help="Module → host: probability that a random byte appears after a byte.")
@click.option("--fault-seed", type=int, default=1, show_default=True,
              help="Seed of the fault generators (the same seed damages the same bytes).")
@click.option("--power-cut-after", type=click.IntRange(1), metavar="N", help="Cut the power after the module received N bytes.")
@click.option("--pull-cable-after", type=click.IntRange(1), metavar="N", help="Pull the cable (the port vanishes) after N received bytes.")
@click.option("--boot-pin", "--boot0", "boot_pin", is_flag=True,
              help="Hold the boot pin (STM32 BOOT0, Apollo3 BOOT) high: at reset the chip starts its ROM "
                   "bootloader, where it has one. 'b' + Enter toggles it on a running module.")
@click.option("--board-status/--no-board-status", default=True, show_default=True,
              help="RUI v3 (rak811, rak4270): whether the firmware names its board when asked "
                   "(at+get_config=device:status); without it, RAK811 and RAK4270 look alike.")
@click.option("--info0", "info0_file", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="RAK11720: start with this INFO0 dump (8 KiB) instead of the simulator's (BOOT on "
                   "GPIO41 active high, wired update at 115200 baud).")
@click.option("--any-baud", is_flag=True, help="Accept any host baud rate (by default a mismatch gives garbage, like a real line).")
@click.option("--serial-number",
              help="What AT+SN=? answers (and the USB serial number). Default: one of its own, as "
                   "real modules have ('rakflash info' shows it).")
@click.option("--dev-eui", type=click.STRING, metavar="HEX16",
              help="Its factory DevEUI (16 hex digits; what a settings reset restores). Default: one of its own.")
@click.option("--locked", "locked", metavar="PASSWORD",
              help="RUI3 only: the AT port starts locked (AT+LOCK) with this password (AT+PWORD, 1 to 8 "
                   "printable characters): every line but AT+LOCK=? is answered COMMAND_LOCKED until the "
                   "password alone is sent as a line.")
@click.option("--arduino", is_flag=True,
              help="RAK4631 only: the Arduino variant (Adafruit bootloader, legacy DFU) instead of RUI3.")
@click.option("--dfu-key", type=click.Path(exists=True, dir_okay=False), metavar="PEM",
              help="RAK4631 only: the ECDSA P-256 key (private or public, PEM) whose signatures its "
                   "Secure DFU bootloader accepts (with --arduino: the RUI3 bootloader that "
                   "convert-to-rui3 installs). Default: a new key, saved beside and named in the output.")
@click.option("--transport", type=click.Choice(["pty", "tcp"]), default=None,
              help="Serve the port on a pseudo-terminal (/dev/pts/N; Linux, macOS) or over TCP on this "
                   "computer (rfc2217://127.0.0.1:PORT, which rakflash and pyserial open; carries the "
                   "baud rate and RTS/DTR). Default: $RAKFLASH_SIM_TRANSPORT, else pty where the "
                   "system has them, else tcp (Windows).")
@click.option("--reset-with", "reset_with", metavar="LINE",
              help="With --transport tcp: the adapter's line wired to RESET (rts, dtr, or -rts/-dtr when "
                   "active low), so 'rakflash flash/recover --reset-with LINE' resets the module.")
@click.option("--boot0-with", "boot0_with", metavar="LINE",
              help="With --transport tcp: the adapter's line wired to BOOT0 (STM32) / BOOT (Apollo3), "
                   "for 'rakflash recover --boot0-with LINE'.")
@click.option("--auto-reset", is_flag=True,
              help="RAK11200 (ESP32 behind a USB-UART): the adapter's RTS/DTR reach EN and GPIO0 through "
                   "the two-transistor circuit of Espressif's boards, so esptool's reset enters the ROM's "
                   "download mode (with --transport tcp; without it, as RAK documents the RAK11200, a "
                   "person holds BOOT0 to GND and resets: 'b' + Enter, 'r' + Enter).")
@click.option("--link", "link_path", type=click.Path(dir_okay=False, writable=True), metavar="PATH",
              help="Also reach the port as PATH: a symbolic link that follows the port when it changes "
                   "(a native-USB module's reset, a cable plugged in again), removed at exit — so other "
                   "commands can name the port before it exists, as socat's link= does.")
def sim(module_name: str, state: str, baud: int, latency_ms: float, flash_scale: float,
        app_version: str | None, bootloader_version: str | None, app_size: int, sketch: str,
        bit_error_rate: float, drop_rate: float, garbage_rate: float, bit_error_rate_to_host: float,
        drop_rate_to_host: float, garbage_rate_to_host: float, fault_seed: int,
        power_cut_after: int | None,
        pull_cable_after: int | None, boot_pin: bool, board_status: bool, info0_file: str | None,
        any_baud: bool, serial_number: str | None, dev_eui: str | None, locked: str | None, arduino: bool,
        dfu_key: str | None, transport: str | None, reset_with: str | None, boot0_with: str | None,
        auto_reset: bool, link_path: str | None) -> None:
    """Serve a virtual module on a pseudo-terminal or TCP port until interrupted.

    The first line printed is 'port: /dev/pts/N' (or 'port: rfc2217://127.0.0.1:PORT'
    with --transport tcp), what to give other commands as --port. Press the module's reset
    button with 'r' + Enter on standard input or with SIGUSR1; 'b' + Enter
    toggles the boot pin (takes effect at the next reset); after
    --pull-cable-after, 'p' + Enter plugs the cable back in (a new port).
    """
    from .. import catalog as _catalog
    from ..sim import Faults, SimOptions, create
    try:
        chosen = _catalog.load().module(module_name)
        family, secure_dfu = chosen.key, chosen.protocol == "nordic-dfu"    # RAK4631-R, RAK3401
    except KeyError:
        family, secure_dfu = None, False   # named below, with the virtual modules there are
    # The key belongs to RUI3's Secure DFU bootloader: the RAK4631-R has it, and an Arduino
    # RAK4631 gets it once convert-to-rui3 installs that bootloader. Decided before --arduino
    # renames the module, or the key would be dropped without a word.
    takes_dfu_key = secure_dfu or family == "rak4631-arduino"
    if dfu_key and not takes_dfu_key:
        raise click.BadParameter("only the RAK4631 (its RUI3 Secure DFU bootloader) checks a DFU key",
                                 param_hint="'--dfu-key'")
    if arduino:
        try:
            if _catalog.load().module(module_name).key != "rak4631-r":
                raise KeyError(module_name)
        except KeyError:
            raise click.BadParameter("only the RAK4631 has an Arduino variant", param_hint="'--arduino'") from None
        module_name = "rak4631-arduino"
    try:
        app_region = _catalog.load().module(module_name).app
    except KeyError:
        app_region = None        # named below, with the virtual modules there are
    if app_region is not None and app_size > app_region.size:
        raise click.BadParameter(f"{app_size:,} bytes do not fit the module's application region "
                                 f"({app_region.size:,} bytes)", param_hint="'--app-size'")
    from ..sim.transport import default_transport, has_ptys
    try:
        transport = transport or default_transport()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if transport == "pty" and not has_ptys():
        raise click.BadParameter("this system has no pseudo-terminals: use --transport tcp",
                                 param_hint="'--transport'")
    from ..errors import UsageError as _UsageError
    from ..flows.lines import check_line
    for value, option in ((reset_with, "--reset-with"), (boot0_with, "--boot0-with")):
        if value is None:
            continue
        try:
            check_line(value, option)
        except _UsageError as exc:
            raise click.BadParameter(exc.message, param_hint=f"'{option}'") from None
        if transport != "tcp":
            raise click.BadParameter("a pseudo-terminal has no RTS/DTR lines to wire: add "
                                     "--transport tcp", param_hint=f"'{option}'")
    esp = chosen.esp if family is not None else None
    if auto_reset and (esp is None or esp["reset"] != "hold-boot"):
        raise click.BadParameter("only an ESP32 module behind a USB-UART (rak11200) has a reset circuit "
                                 "to wire", param_hint="'--auto-reset'")
    if auto_reset and transport != "tcp":
        raise click.BadParameter("a pseudo-terminal has no RTS/DTR lines to wire: add --transport tcp",
                                 param_hint="'--auto-reset'")
    if state == "erased" and esp is None:
        raise click.BadParameter("only an ESP32 module starts with erased flash", param_hint="'--state'")
    if link_path and transport == "tcp":
        raise click.BadParameter("a TCP port is a URL, not a file a link can point at: give other "
                                 "commands the URL printed as 'port:'", param_hint="'--link'")
    info0 = None
    if info0_file:
        from ..apollo3_info0 import Info0
        from ..errors import RakflashError
        try:
            mcu = _catalog.load().module(module_name).mcu.key
        except KeyError:
            mcu = None
        if mcu != "apollo3":
            raise click.BadParameter("only the RAK11720 (Apollo3) has an INFO0", param_hint="'--info0'")
        try:
            info0 = Info0.load(info0_file).raw
        except RakflashError as exc:
            raise click.BadParameter(exc.message, param_hint="'--info0'") from None
    if dev_eui is not None and not re.fullmatch(r"[0-9A-Fa-f]{16}", dev_eui):
        raise click.BadParameter(f"{dev_eui!r} is not 16 hex digits", param_hint="'--dev-eui'")
    if serial_number is not None and not re.fullmatch(r"[!-~]{1,17}", serial_number):
        raise click.BadParameter(f"{serial_number!r}: 1 to 17 printable characters, no spaces",
                                 param_hint="'--serial-number'")
    if locked is not None:
        config_layout = None
        try:
            config_layout = _catalog.load().module(module_name).config_layout
        except KeyError:
            pass
        if config_layout is None:
            raise click.BadParameter("only a RUI3 module (rak3172 and its variants, rak11720, rak4631, "
                                     "rak3401) has the AT port lock", param_hint="'--locked'")
        if not re.fullmatch(r"[ -~]{1,8}", locked):
            raise click.BadParameter("a RUI3 lock password is 1 to 8 printable ASCII characters "
                                     "(AT+PWORD)", param_hint="'--locked'")
    opts = SimOptions(baud=baud, latency_ms=latency_ms, state=state, flash_scale=flash_scale, locked=locked,
                      bootloader_version=bootloader_version, app_version=app_version, info0=info0,
                      app_size=app_size, sketch=sketch, strict_baud=not any_baud, boot_pin=boot_pin,
                      board_status=board_status, serial_number=serial_number, dev_eui=dev_eui,
                      transport=transport, auto_reset=auto_reset,
                      reset_with=reset_with and reset_with.strip().lower(),
                      boot0_with=boot0_with and boot0_with.strip().lower(),
                      faults=Faults(bit_error_rate=bit_error_rate, drop_rate=drop_rate,
                                    garbage_rate=garbage_rate,
                                    bit_error_rate_to_host=bit_error_rate_to_host,
                                    drop_rate_to_host=drop_rate_to_host,
                                    garbage_rate_to_host=garbage_rate_to_host, seed=fault_seed,
                                    power_cut_after=power_cut_after, pull_cable_after=pull_cable_after))
    key_note = None
    if takes_dfu_key:
        from .. import dfu_package
        if dfu_key:
            opts.dfu_key = open(dfu_key, "rb").read()
        else:
            import os
            import tempfile
            opts.dfu_key = dfu_package.new_signing_key()
            fd, path = tempfile.mkstemp(prefix="rakflash-sim-dfu-key-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(opts.dfu_key)
            key_note = path
        try:
            dfu_package.public_key_bytes(opts.dfu_key)
        except (ValueError, TypeError) as exc:
            raise click.BadParameter(f"{dfu_key}: not an ECDSA P-256 key in PEM ({exc})",
                                     param_hint="'--dfu-key'") from None
    try:
        dev = create(module_name, opts)
    except KeyError as exc:
        from ..sim.modules import MODULES
        what = "no virtual" if str(exc.args[0]).startswith("no virtual") else "no module called"
        raise click.UsageError(f"{what} {module_name!r}; virtual modules: {', '.join(sorted(MODULES))}") from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    # Every start of firmware is queued as it happens (a bootloader may run for a tenth of a
    # second: a poll of dev.mode would miss it) and printed by the loop below.
    started: queue.SimpleQueue = queue.SimpleQueue()
    dev.mode_listeners.append(lambda mode: started.put(_running_line(dev, mode)))
    dev.start()
    try:
        link = _PortLink(link_path, dev.port) if link_path else None
    except click.BadParameter:
        dev.stop()
        raise
    click.echo(f"port: {dev.port}" + (f" (also {link_path})" if link else ""))
    if key_note:
        whose = ("the RUI3 bootloader convert-to-rui3 installs" if module_name == "rak4631-arduino"
                 else "its Secure DFU bootloader")
        click.echo(f"dfu key: {key_note} ({whose} accepts packages signed with it: "
                   f"nrfutil pkg generate … --key-file {key_note})")
    sys.stdout.flush()
    last_port = dev.port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    if hasattr(signal, "SIGUSR1"):
        def reset_pressed(*_: object) -> None:
            dev.press_reset()
            click.echo("reset pressed")
        signal.signal(signal.SIGUSR1, reset_pressed)

    def stdin_buttons() -> None:
        for line in sys.stdin:
            key = line.strip().lower()
            if key == "r":
                dev.press_reset()
                click.echo("reset pressed")
            elif key == "b":
                dev.set_boot_pin(not dev.boot_pin)
                if getattr(dev.module, "esp", None):      # an ESP chip's strap: GPIO0 held low
                    click.echo(f"GPIO0 {'held low' if dev.boot_pin else 'released'} (press reset to take effect)")
                else:
                    click.echo(f"boot pin {'high' if dev.boot_pin else 'low'} (press reset to take effect)")
            elif key == "p" and dev.uart.closed:
                new_port = dev.plug_in()
                if link:
                    link.point_at(new_port)
                click.echo(f"cable plugged in again; port: {new_port}")
            sys.stdout.flush()

    if sys.stdin is not None and not sys.stdin.closed:
        threading.Thread(target=stdin_buttons, daemon=True).start()
    unplugged = False
    try:
        while not stop.wait(0.2):
            if dev.uart.closed:
                if not unplugged:
                    click.echo("cable pulled: the port is gone ('p' + Enter plugs it back in)")
                    sys.stdout.flush()
                    unplugged = True
                continue
            unplugged = False
            if dev.port != last_port:
                # A native-USB module re-enumerated: the same device on a new port.
                ident = getattr(dev.uart, "identity", None) or {}
                click.echo(f"port: {dev.port} (re-enumerated"
                           + (f" as USB {ident['vid']:04X}:{ident['pid']:04X} \"{ident.get('product')}\"" if ident else "")
                           + ")")
                sys.stdout.flush()
                last_port = dev.port
                if link:
                    link.point_at(dev.port)
            while not started.empty():
                click.echo(started.get())
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
        if link:
            link.remove()


class _PortLink:
    """A symbolic link at a path the person chose, pointing at the simulator's current port."""

    def __init__(self, path: str, port: str) -> None:
        import os
        self.path = path
        if os.path.lexists(path) and not os.path.islink(path):
            raise click.BadParameter(f"{path} exists and is not a symbolic link: name another path",
                                     param_hint="'--link'")
        self.point_at(port)

    def point_at(self, port: str) -> None:
        """Re-point the link in one step (a new link renamed over the old), so a command that
        opens the path never finds it missing."""
        import os
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.symlink(port, tmp)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise click.BadParameter(f"can't make the link {self.path}: {exc.strerror or exc}",
                                     param_hint="'--link'") from None

    def remove(self) -> None:
        import os
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _running_line(dev, mode) -> str:
    """What a person watching the module would want to know: what runs now."""
    running = {"app": dev.app_version, "bootloader": dev.bootloader_version,
               "rom": "(the chip's ROM download mode)" if getattr(dev.module, "esp", None)
               else "(the chip's ROM bootloader)"}.get(mode.value)
    return (f"running: {mode.value} {running or '-'}"
            + (f" (updates so far: {dev.updates})" if dev.updates else ""))
