"""Get a module into its bootloader, confirmed by the bootloader's own answer.

No fixed sleeps: after the boot command we wait (with a deadline) for the
bootloader's banner, and confirm with ``at+bootstatus`` → ``Boot Mode``.
A module that already waits in its bootloader (an interrupted update) is
confirmed and used as it is.
"""

from __future__ import annotations

import time
from typing import Callable

from ..at import AtConsole, looks_like_text
from ..catalog import Module
from ..errors import BootEntryFailed
from ..events import Caught, Countdown, Prompt, Sink, nowhere
from ..link import Deadline, Link
from .identify import DeviceInfo


def confirm_boot_mode(link: Link, module: Module, timeout: float = 1.0, *, tries: int = 3) -> bool:
    """True when the bootloader console answers ``at+bootstatus`` with ``Boot Mode``.

    An answer that is something else (damaged on the line either way) is asked
    again, at most ``tries`` times; silence is not.
    """
    d = module.boot_dialect
    for _ in range(tries):
        reply = AtConsole(link, d).command(d["status"], timeout)
        if reply.ok and reply.value == d["status_reply"]:
            return True
        if reply.status == "none":
            return False
    return False


def bootloader_version(link: Link, module: Module, timeout: float = 1.0) -> str | None:
    """The running bootloader's version, read until two answers agree (its rules decide what
    may be written)."""
    d = module.boot_dialect
    return AtConsole(link, d).agreed_value(d["version"], timeout)


def request_boot(link: Link, module: Module, *, timeout: float = 3.0, tries: int = 3) -> bool:
    """Send the application's boot command(s); True once the bootloader's banner or status is seen.

    A command the application refuses is sent again (at most ``tries`` times:
    one damaged byte on the line makes it an unknown command) before the next
    one of the dialect is tried.
    """
    banner = module.boot_dialect["banner"].encode()
    for command in module.dialect["boot"]:
        for _ in range(tries):
            link.discard_input()
            t0 = time.monotonic()
            link.write_line(command)
            deadline = Deadline(timeout)
            refused = False
            while not deadline.expired:
                line = link.read_line(deadline.remaining())
                if line is None:
                    break
                if banner in line:
                    link.step(f"{command} → {module.boot_dialect['banner']} ({time.monotonic() - t0:.2f} s)")
                    return confirm_boot_mode(link, module)
                if line.startswith(b"ERROR") or line == b"AT_COMMAND_NOT_FOUND":
                    refused = True     # unknown here, or damaged on the way
                    link.step(f"{command} → {line.decode('latin-1')!r} ({time.monotonic() - t0:.2f} s)")
                    break
            if not refused:
                link.step(f"{command} → no banner ({time.monotonic() - t0:.2f} s)")
            if confirm_boot_mode(link, module, 1.0):
                return True   # the banner was missed, but the bootloader answers
            if not refused:
                break
    return False


def enter_bootloader(link: Link, device: DeviceInfo, module: Module, *, timeout: float = 3.0,
                     on_flood: Callable[[str], None] | None = None) -> float:
    """Make sure the module runs its bootloader; returns the seconds it took.

    A sketch that starts flooding only after identification (it was still in
    its quiet start-up) makes the boot command go unheard: then ``on_flood(why)``
    is called, which catches the module after a reset (see :func:`catch_after_reset`).
    """
    t0 = time.monotonic()
    if device.mode == "bootloader":
        link.discard_input()
        if confirm_boot_mode(link, module):
            return time.monotonic() - t0
    elif request_boot(link, module, timeout=timeout):
        return time.monotonic() - t0
    elif on_flood is not None and _streaming(link):
        on_flood(f"{link.port_name} started streaming data without pause after it was identified, "
                 f"and {module.dialect['boot'][0]} went unheard")
        return time.monotonic() - t0
    raise BootEntryFailed(
        f"{module.name} did not enter its bootloader: no '{module.boot_dialect['banner']}' and "
        f"no answer to {module.boot_dialect['status']}",
        hint="Press the module's reset button and run the same command again; if it keeps "
             "failing, run 'rakflash info --port PORT' to see what the module says.")


def _streaming(link: Link, listen: float = 0.3) -> bool:
    """The port streams readable text without being asked (a flooding sketch)."""
    data = link.read(4096, listen)
    return len(data) >= 64 and looks_like_text(data)


def leave_bootloader(link: Link, module: Module, *, timeout: float = 2.0) -> bool:
    """Start the application again (``at+run``); True once the bootloader says it hands over."""
    d = module.boot_dialect
    link.discard_input()
    reply = AtConsole(link, d).command(d["run"], timeout)
    return reply.ok and reply.value == d["run_reply"]


def peek_bootloader_version(link: Link, module: Module) -> tuple[str | None, bool]:
    """Ask the bootloader itself for its version, for an application that can't tell it
    (RUI v3), then start the application again.

    Returns ``(version, back_in_app)``; ``(None, False)`` when the bootloader could not be
    entered (the application kept running).
    """
    if not request_boot(link, module):
        return None, False
    version = bootloader_version(link, module)
    return version, leave_bootloader(link, module)


def pulse_reset(link: Link, line: str, *, hold: float = 0.1) -> None:
    """Reset the module through a modem control line wired to its RESET pin.

    ``line`` is ``"rts"`` or ``"dtr"``. The line is asserted (which drives the
    pin low through the usual inverting adapter wiring), held, and released.
    """
    link.set_lines(**{line: True})
    time.sleep(hold)
    link.set_lines(**{line: False})


def catch_start_up_window(link: Link, module: Module, *, window: float = 30.0,
                          reset_line: str | None = None,
                          tick: Callable[[float], None] | None = None) -> str:
    """Send the boot command in a tight burst until the bootloader answers.

    For firmware that floods the port: its ``loop()`` never lets a command
    through, but right after a reset its start-up code still does. The person
    presses reset (or ``reset_line`` pulses it) and the next burst lands.
    Returns ``"caught"`` once the bootloader's banner is seen and its console
    then answers. A banner whose console stays silent (its answers lost on the
    line, or a second press restarted the module under it) does not end the
    wait: the next press is caught the same way. When ``window`` seconds pass:
    ``"no-reset"`` if no banner came at all, ``"no-answer"`` if one did.
    ``tick(seconds_left)`` is called about once a second.
    """
    banner = module.boot_dialect["banner"].encode()
    status = module.boot_dialect["status_reply"].encode()
    command = (module.dialect["boot"][0] + "\r\n").encode()
    if reset_line:
        pulse_reset(link, reset_line)
    deadline = Deadline(window)
    next_tick = 0.0
    seen = bytearray()
    banners = sent = 0
    t0 = time.monotonic()
    gap = max(0.01, 40 * 10 / link.baud)   # a few dozen byte times between bursts
    while not deadline.expired:
        if tick and time.monotonic() >= next_tick:
            tick(deadline.remaining())
            next_tick = time.monotonic() + 1.0
        link.write(command)
        sent += 1
        seen += link.read(65536, gap)
        if banner in seen or status in seen:
            # -v: the burst as one line, not one per copy sent
            link.step(f"{module.dialect['boot'][0]} × {sent} (a burst) → "
                      f"{module.boot_dialect['banner']} after {time.monotonic() - t0:.2f} s")
            if _settle_into_bootloader(link, module):
                return "caught"
            banners += 1
            seen.clear()     # that banner is spent: wait for the next start
            continue
        del seen[:-64]     # keep a tail so a banner split across reads is still found
    link.step(f"{module.dialect['boot'][0]} × {sent} (a burst) → no bootloader that answered "
              f"within {window:.0f} s")
    return "no-answer" if banners else "no-reset"


def _settle_into_bootloader(link: Link, module: Module) -> bool:
    """After the banner: drain what the flood left in the buffers, then confirm."""
    for _ in range(3):
        drain = Deadline(1.0)
        while link.read_available(0.05) and not drain.expired:
            pass
        if confirm_boot_mode(link, module, 1.0):
            return True
    return False


def identify_or_catch(link: Link, *, module: Module | None, baud: int | None = None,
                      fallback: Module | None = None, reset_window: float = 30.0,
                      reset_line: str | None = None, emit: Sink = nowhere) -> DeviceInfo:
    """Identify the device; if its firmware floods the port, catch it in its start-up window.

    ``fallback`` is the module to assume when the flood hides which one it is
    (the flash session passes the image's target). ``emit`` gets the
    ``press-reset`` prompt, the countdown and the catch (see :func:`catch_after_reset`).
    """
    from ..errors import Flooding
    from .identify import identify
    named = module
    try:
        return identify(link, module=module, baud=baud)
    except Flooding as exc:
        module = module or fallback
        if module is None:
            raise Flooding(exc.message + "; rakflash can catch it after a reset, but needs to "
                           "know the module", hint="Run again with --module MODULE.") from None
        # Catch it at the rate its flood reads at; a flood unreadable at every rate gets the
        # asked one, else the module's usual one (the scan left the link at its last rate).
        said = exc.details.get("baud")
        flood_baud = (said if isinstance(said, int) else None) or baud or module.bauds[0]
        if link.baud != flood_baud:
            link.baud = flood_baud
        catch_after_reset(link, module, exc.message, window=reset_window, reset_line=reset_line,
                          emit=emit)
        # Caught, the bootloader says what it can; the image's target (a fallback, to
        # know the boot command) is no word on which module this is.
        info = identify(link, module=named, baud=link.baud, scan=False)
        info.caught = True
        return info


def catch_after_reset(link: Link, module: Module, why: str, *, window: float = 30.0,
                      reset_line: str | None = None, emit: Sink = nowhere) -> None:
    """Tell the person to press reset (or pulse ``reset_line``), then catch the bootloader.

    ``emit`` gets a ``press-reset`` :class:`Prompt` (its message is ``why``), a
    :class:`Countdown` about once a second and :class:`Caught` at the end.
    Raises :class:`BootEntryFailed` with the two ways out when the window passes.
    """
    t0 = time.monotonic()
    emit(Prompt("press-reset", why, window, {"reset_line": reset_line, "cause": "flooding"}))
    outcome = catch_start_up_window(link, module, window=window, reset_line=reset_line,
                                    tick=lambda left: emit(Countdown(round(left))))
    if outcome != "caught":
        seen = (f"no reset was seen within {window:.0f} s" if outcome == "no-reset" else
                f"its bootloader started within the {window:.0f} s but its console did not answer "
                f"{module.boot_dialect['status']} (line noise, or reset again at once)")
        raise BootEntryFailed(
            f"{module.name}'s firmware prints without pause, so {module.dialect['boot'][0]} "
            f"never gets through, and {seen}",
            hint=(f"Either add a pause at the start of setup() (e.g. delay(5000)) so the "
                  f"module listens after a reset, or press reset during the next try "
                  f"(--reset-window to wait longer); or, bypassing the serial bootloader, "
                  f"write a fixed firmware .hex {module.recovery_advice('FIRMWARE.hex', link.port_name)}."),
            cause="flooding", module=module.name)       # what the message calls it, for a report too
    emit(Caught(round(time.monotonic() - t0, 3)))
