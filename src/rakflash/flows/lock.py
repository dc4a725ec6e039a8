"""A RUI3 module's locked AT port: named, opened with its password, and locked again.

Facts (RAK-STM32-RUI ``cores/STM32WLE/component/udrv/serial/udrv_serial.c``
``udrv_serial_wlock_handler``, ``udrv_serial_lock``/``unlock``; ``service/mode/cli/
atcmd_serial_port.c`` ``At_Lock``/``At_Pword``; the same in RAK-APOLLO3-RUI and RAK-nRF52-RUI):

* ``AT+LOCK`` locks every open serial port and stores that in the config block;
  ``AT+PWORD=<1-8 printable characters>`` sets the password (default ``00000000``).
* A locked port echoes each character it keeps (at most 9) and, at the end of a line,
  answers ``AT+LOCK=?`` with ``AT+LOCK=locked`` and ``OK``; the password alone on the
  line opens every locked port (stored "open", so it stays open across a reset, and a
  tool that opened it must lock it again); anything else gets ``COMMAND_LOCKED``.
* An open port answers ``AT+LOCK=?`` with ``AT+LOCK=unlocked`` and ``OK``.

The password and the module's echo of it are kept out of a ``--trace`` file
(:meth:`~rakflash.link.Link.hidden`), out of ``-v`` (the step line says it was sent,
not what) and out of every event and result.
"""

from __future__ import annotations

from typing import Callable

from .. import catalog as _catalog
from ..at import AtConsole
from ..errors import PasswordRefused, PortLocked, RakflashError, UsageError
from ..events import Sink, Warning, nowhere
from ..link import Link

LOCKED = "COMMAND_LOCKED"          # what a locked port answers to every other line
QUERY = "AT+LOCK=?"
Ask = Callable[[], "str | None"]   # asks the person for the password (None: no answer)


def says_locked(lines: list[str]) -> bool:
    """Whether a reply's lines are a locked port's."""
    return any(line.strip() == LOCKED for line in lines)


def lock_state(link: Link, timeout: float = 1.0) -> str | None:
    """``"locked"`` or ``"unlocked"`` as ``AT+LOCK=?`` answers, or None (no such answer)."""
    reply = AtConsole(link, _catalog.load().dialects["rui3"]).command(QUERY, timeout)
    return reply.value if reply.ok and reply.value in ("locked", "unlocked") else None


def locked_error(port: str, baud: int) -> PortLocked:
    """The locked port, at the rate it answered (a command to open it must name that rate)."""
    return PortLocked(f"the AT port on {port} is locked: the module answers every command with "
                      f"{LOCKED}, and AT+LOCK=? says locked", port=port, baud=baud)


def check_password(password: str) -> str:
    """A password RUI3 can hold (AT+PWORD: 1 to 8 printable ASCII characters), or a usage error."""
    if not 1 <= len(password) <= 8 or not all(" " <= c <= "~" for c in password):
        raise UsageError("--password: a RUI3 lock password is 1 to 8 printable ASCII characters "
                         "(as AT+PWORD sets it)",
                         hint="Give the password the port was locked with.")
    return password


def unlock(link: Link, password: str, *, timeout: float = 1.0) -> None:
    """Send the password alone on a line; raises :class:`PasswordRefused` unless the port then
    says it is open. Nothing of the password reaches the trace, ``-v`` or an event."""
    check_password(password)
    link.discard_input()
    with link.hidden("the AT port's lock password and its echo"):
        link.write(password.encode("ascii") + b"\r\n")
        link.read_line(timeout)              # the echo of the password, up to the module's CR LF
    link.step("sent the AT port's lock password (not shown)")
    if lock_state(link, timeout) != "unlocked":
        raise PasswordRefused(f"the password did not open the AT port on {link.port_name}: "
                              f"it still answers {LOCKED}", port=link.port_name)


def lock(link: Link, *, timeout: float = 1.0) -> bool:
    """``AT+LOCK``, confirmed by ``AT+LOCK=?`` answering locked."""
    AtConsole(link, _catalog.load().dialects["rui3"]).command("AT+LOCK", timeout)
    return lock_state(link, timeout) == "locked"


def opening(link: Link, identify: Callable[[], object], password: str | None, ask: Ask | None):
    """``identify()``; when it finds the port locked, open it with ``password`` (or what
    ``ask()`` answers) and identify again. Returns (what identify returned, whether rakflash
    opened the port — then it must lock it again: :func:`lock_again`)."""
    try:
        return identify(), False
    except PortLocked:
        given = password if password is not None else (ask() if ask is not None else None)
        if not given:
            raise
        unlock(link, given)
    return identify(), True


def lock_again(link: Link, emit: Sink = nowhere, *, why_not: str | None = None) -> bool:
    """Lock the port rakflash opened; a ``lock-not-restored`` warning when it can't
    (``why_not``: the module is known not to run its application, and why)."""
    done = False
    if why_not is None:
        try:
            done = lock(link)
        except (RakflashError, OSError) as exc:     # a port gone, a module that stopped answering
            why_not = f"it did not answer ({exc})"
        else:
            why_not = None if done else "AT+LOCK=? did not say locked afterwards"
    if not done:
        emit(Warning("lock-not-restored",
                     f"rakflash opened the locked AT port on {link.port_name} and could not lock it "
                     f"again ({why_not}): it stays open until you send AT+LOCK once the module runs "
                     f"its application", {"port": link.port_name}))
    return done
