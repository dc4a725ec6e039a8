"""Output shared by every command: error reporting, JSON lines, and the renderers of the event stream.

Flows report through typed events (:mod:`rakflash.events`); a command picks a
renderer — :class:`JsonEvents` (one JSON object per event) or
:class:`TerminalEvents` (a live progress bar and plain lines) — and passes it
as the flow's ``emit``. Renderers only show; they decide nothing.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, ProgressColumn, TaskID
from rich.text import Text

from .. import events as ev
from ..errors import Aborted, RakflashError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------ the process's streams

class _GuardedStdout:
    """Standard output that survives its reader going away (``rakflash … | head -c 300``).

    The first write that finds the pipe closed says so once on standard error,
    points file descriptor 1 at /dev/null (so nothing at exit fails again), and
    from then on sends what would have gone to standard output to standard
    error: a command in the middle of an update goes on and still reports how
    it ended. Everything else is the wrapped stream's.
    """

    # The exit status of a command that only reads, when its reader goes away: that of a
    # program ended by SIGPIPE (128 + 13), as 'yes | head -1' leaves it.
    CLOSED_PIPE_EXIT = 141

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.closed_early = False
        self.read_only = False      # set by read_only_command(): then a closed pipe ends it quietly

    def write(self, text: str) -> int:
        if not self.closed_early:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._reader_gone()
        return sys.stderr.write(text)

    def flush(self) -> None:
        if not self.closed_early:
            try:
                self._stream.flush()
                return
            except BrokenPipeError:
                self._reader_gone()
        sys.stderr.flush()

    def isatty(self) -> bool:
        return False if self.closed_early else self._stream.isatty()

    def _reader_gone(self) -> None:
        self.closed_early = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        if self.read_only:
            # Nothing is left undone: the reader has what it wanted ('rakflash modules | head -2').
            raise SystemExit(self.CLOSED_PIPE_EXIT)
        sys.stderr.write("warning: standard output was closed early; rakflash goes on and reports "
                         "on standard error\n")
        sys.stderr.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def prepare_streams() -> None:
    """Make the command line's output unable to end a command: characters the terminal's
    encoding lacks are escaped (an ASCII-only terminal and a file name with 'é'), and a
    standard output closed early is survived (:class:`_GuardedStdout`)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)     # (TextIO has none: a TextIOWrapper's)
        try:
            if reconfigure is not None:
                reconfigure(errors="backslashreplace")
        except (ValueError, OSError):
            pass
    if sys.stdout is not None and not isinstance(sys.stdout, _GuardedStdout):
        sys.stdout = _GuardedStdout(sys.stdout)


def read_only_command() -> None:
    """Called by a command that changes nothing (``modules``, ``inspect``, ``info`` …): when its
    standard output is closed early (``| head -2``) it ends at once, quietly, with the exit status
    of a closed pipe — there is nothing to finish, unlike an update, which goes on and reports on
    standard error (:class:`_GuardedStdout`)."""
    prepare_streams()
    if isinstance(sys.stdout, _GuardedStdout):
        sys.stdout.read_only = True


def stdout_closed_early() -> bool:
    return isinstance(sys.stdout, _GuardedStdout) and sys.stdout.closed_early


def emit_json(obj: dict) -> None:
    """One JSON line on standard output (standard error once standard output is gone)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


# The keys every result line of a command that writes firmware (flash, recover) has, however it
# ends — success, refusal, failure, --dry-run, Ctrl-C — null when unknown. ``written``: nothing,
# part or all (see rakflash.written), from what went out and was acknowledged.
RESULT_KEYS = ("result", "module", "port", "app_version_before", "app_version_after", "bytes", "seconds",
               "error", "written")


def emit_result(result: dict, port: str | None) -> None:
    """A command's result line when it did not fail: the result's keys, the port, ``error: null``."""
    emit_json({**{k: None for k in RESULT_KEYS}, **result, "port": port, "error": None})


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stopped like Ctrl-C, with the signal's name and exit code."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _stop_signals_like_ctrl_c() -> dict:
    """SIGTERM and SIGHUP raise :class:`Terminated`, so the flows cancel what they are doing
    (a transfer session) on the way out, as they do for Ctrl-C. Returns the handlers replaced."""
    replaced: dict = {}
    if threading.current_thread() is not threading.main_thread():
        return replaced
    for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) in (signal.SIG_DFL, None):
            replaced[sig] = signal.signal(sig, _terminate)
    return replaced


# -1 quiet (-q), 0 normal, 1 verbose (-v): set from the command line, read by the renderers.
verbosity = 0

# What a command has learnt so far (e.g. the version running before an update),
# so that a JSON error line still carries it.
known: dict[str, Any] = {}


def reports_errors(fn: Callable | None = None, *, json_keys: tuple[str, ...] = ()) -> Callable:
    """Turn rakflash errors into one clear line and an exit code.

    With ``--json`` the error is a JSON object; ``json_keys`` are always
    present in it (null when unknown), so scripts can read one shape.
    """
    if fn is None:
        return functools.partial(reports_errors, json_keys=json_keys)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        known.clear()
        prepare_streams()
        replaced = _stop_signals_like_ctrl_c()
        try:
            return _run(*args, **kwargs)
        finally:
            for sig, handler in replaced.items():
                signal.signal(sig, handler)

    def _run(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)

        def base(result: str) -> dict:
            b: dict[str, Any] = {k: None for k in json_keys}
            if "port" in kwargs:
                b["port"] = kwargs["port"]
            b.update({k: v for k, v in known.items() if k in b or k == "module"})
            if "result" in b:
                b["result"] = result
            return b

        try:
            try:
                return fn(*args, **kwargs)
            except click.Abort:        # Ctrl-C or Ctrl-D at a confirmation prompt
                raise Aborted("update not confirmed (the prompt was closed)") from None
        except RakflashError as exc:
            if exc.exit_code == 0:      # nothing to do is not a failure
                if as_json:
                    emit_json({**base(exc.name), **exc.details, "message": exc.message, "error": None})
                else:
                    out.print(f"{exc.message}. {exc.hint}")
                sys.exit(0)
            if as_json:
                emit_json({**base(exc.name), **_error_json(exc)})
            else:
                # escape(): a message or hint may hold brackets ("pip install 'rakflash[swd]'")
                err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True)
                if exc.hint:
                    err.print(f"[bold]hint:[/] {escape(exc.hint)}", markup=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException):
            raise                  # click's own ways out keep their meaning
        except Exception as exc:   # a bug in rakflash: one line and the way to report it
            if os.environ.get("RAKFLASH_DEBUG"):
                raise
            message = f"internal error: {exc.__class__.__name__}: {exc}"
            hint = ("This is a bug in rakflash. Please report it with the command, its output and "
                    "a --trace file (RAKFLASH_DEBUG=1 shows the traceback).")
            if as_json:
                emit_json({**base("internal-error"), "error": "internal-error", "message": message,
                           "hint": hint})
            else:
                err.print(f"error: {message}", markup=False)
                err.print(f"hint: {hint}", markup=False)
            sys.exit(1)
        except KeyboardInterrupt as exc:
            if known.get("written_hint"):       # a write path that knows what the device holds now
                hint = known["written_hint"]
            elif known.get("sent"):
                hint = ("The new firmware was sent and was starting: run the same command again — it "
                        "confirms which firmware runs and checks the LoRaWAN keys.")
            elif known.get("writing"):
                hint = ("The update was cut off: the module waits in its bootloader; run the same "
                        "command again to finish it.")
            elif known.get("written", "nothing") == "nothing":
                hint = "Nothing was written to the module."
            else:
                hint = "Part of the firmware was written: run the same command again to finish it."
            if known.get("writing"):
                hint += moved_hint(known.get("port"), known.get("moved_to"))
            how = f"stopped by {exc.name}" if isinstance(exc, Terminated) else "Ctrl-C"
            if as_json:
                emit_json({**base("interrupted"), "error": "interrupted",
                           "message": f"interrupted ({how})", "hint": hint})
            else:
                err.print(f"interrupted ({how}). {hint}", markup=False)
            sys.exit(128 + exc.signum if isinstance(exc, Terminated) else 130)

    return wrapper


def moved_hint(given: str | None, now: str | None) -> str:
    """A sentence for a hint when the module's port is no longer the one the command was given:
    a native USB port is renamed when the module restarts into its bootloader or application,
    so "the same command again" needs the new one (empty when the port did not move or is gone)."""
    from ..ports import port_exists
    if not now or now == given or not port_exists(now):
        return ""
    return (f" The module's port is now {now} (a native USB port is renamed when the module "
            f"restarts): give --port {now}.")


def ask_yes_no(question: str) -> bool:
    """A y/N question on the terminal. Ctrl-C stays an interrupt (exit 130, as anywhere else);
    Ctrl-D (the prompt closed) is :class:`~rakflash.errors.Aborted`."""
    while True:
        click.echo(f"{question} [y/N]: ", nl=False)
        try:
            answer = input().strip().lower()
        except EOFError:
            click.echo()
            raise Aborted("update not confirmed (the prompt was closed)") from None
        if answer in ("y", "yes"):
            return True
        if answer in ("", "n", "no"):
            return False


def ask_module(uncertain: Any) -> Any:
    """Which module it is, when the device can't say (a :class:`~rakflash.errors.ModuleUncertain`):
    the person picks one of the candidates, or none (then the refusal stands)."""
    choices = {m.key: m for m in uncertain.modules}
    err.print(f"[yellow]{uncertain.message}.[/]")
    keys = "/".join(choices)
    while True:
        click.echo(f"Which module is it? The label on it says. [{keys}, or Enter to stop]: ", nl=False)
        try:
            answer = input().strip().lower()
        except EOFError:
            click.echo()
            return None
        if not answer:
            return None
        for m in choices.values():
            if answer in (m.key, m.name.lower(), *m.aliases):
                return m


def _error_json(exc: RakflashError) -> dict:
    d: dict[str, object] = {"error": exc.name, "message": exc.message, "hint": exc.hint}
    d.update({k: v for k, v in exc.details.items() if k not in d})
    return d


# ------------------------------------------------------------------ renderers of the event stream

class Renderer:
    """What a command passes as a flow's ``emit``, in a ``with``: one of the two below (so a
    command choosing between them has one type of renderer, a callable)."""

    def __call__(self, event: ev.Event) -> None:
        raise NotImplementedError

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class JsonEvents(Renderer):
    """Every event as one JSON line on standard output."""

    def __call__(self, event: ev.Event) -> None:
        if not stdout_closed_early():     # the events' reader is gone; the result line still goes out
            emit_json(event.to_dict())

    def __enter__(self) -> JsonEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class TerminalEvents(Renderer):
    """Events for people: plan and notes as lines, a live progress bar once writing starts that
    names its phase (erasing, writing, verifying, starting) and counts what was sent again,
    the reset prompt and its countdown (whole lines when standard error is a log file).

    ``level`` (default: the command line's ``-v``/``-q``): -1 shows only warnings (and
    what the command itself prints at the end), 1 adds a line for every phase with the time
    since the start and every retry with its reason.
    """

    LABELS = {"identify": "identifying", "settings": "reading settings", "boot": "entering bootloader",
              "connect": "connecting", "erase": "erasing", "write": "writing", "verify": "verifying",
              "start": "starting new firmware", "settings-check": "checking settings",
              "settings-write": "writing settings",
              "identify-after": "identifying again"}

    # What a countdown waits for, by the prompt's action (default: a reset).
    WAITING = {"release-boot": "restarting the module", "release-boot-and-reset": "waiting for BOOT "
               "to be released and a reset", "hold-gpio0-and-reset": "waiting for GPIO0 held low and a "
               "reset", "release-gpio0-and-reset": "waiting for GPIO0 to be released and a reset"}

    def __init__(self, level: int | None = None) -> None:
        self.verbosity = verbosity if level is None else level
        self._bar: Progress | None = None
        self._task = TaskID(0)       # the bar's one task, once there is a bar
        self._label = ""
        self._retries = 0
        self._total: int | None = None
        self._t0 = time.monotonic()

    def __enter__(self) -> TerminalEvents:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    @property
    def _live(self) -> bool:
        """A live bar: on a terminal, unless quiet."""
        return err.is_terminal and self.verbosity >= 0

    def _ensure_bar(self) -> None:
        if self._bar is not None or not self._live:
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
        self._bar = Progress("[progress.description]{task.description}", BarColumn(),
                             DownloadColumn(binary_units=True), _KibPerSecond(), TimeRemainingColumn(),
                             console=err, transient=False)
        self._bar.start()
        self._task = self._bar.add_task(self._text(), total=self._total)

    def _text(self) -> str:
        return self._label + (f" · {self._retries} sent again" if self._retries else "")

    def _describe(self, label: str) -> None:
        self._label = label
        if self._bar is not None:
            self._bar.update(self._task, description=self._text())

    def _line(self, text: str) -> None:
        """A whole line (above the live bar, if there is one)."""
        if self.verbosity > 0:
            text = f"[{time.monotonic() - self._t0:6.2f} s] {text}"
        err.print(text, markup=False, highlight=False)

    def step(self, text: str) -> None:
        """With ``-v``: one thing the command just did on the line (an AT command and its
        answer, a baud rate tried), timed; nothing otherwise. Given to ``Link.on_step``."""
        if self.verbosity > 0:
            self._line(f"  {text}")

    def __call__(self, event: ev.Event) -> None:
        quiet, verbose = self.verbosity < 0, self.verbosity > 0
        if isinstance(event, ev.PlanReady):
            if not quiet:
                show_plan(event.info)
        elif isinstance(event, ev.Phase):
            label = self.LABELS.get(event.phase, event.phase)
            if verbose:
                self._line(_phase_text(label, event.message))
            if event.phase == "identify":
                return                       # quick, and says nothing a person needs
            total = event.info.get("bytes")
            if total:
                self._total = total
            if not self._live and not quiet and not verbose and label != self._label:
                self._line(f"{label}…")      # a log gets one whole line per phase (said once)
            self._ensure_bar()
            if total and self._bar is not None:
                self._bar.update(self._task, total=total)
            self._describe(label)
            if self._bar is not None:
                self._bar.refresh()    # drawn now: a phase shorter than the bar's refresh is still seen
        elif isinstance(event, ev.Progress):
            self._ensure_bar()
            if self._bar is not None:
                self._bar.update(self._task, completed=event.bytes, total=event.total)
        elif isinstance(event, ev.Retry):
            self._retries = event.retries
            if verbose:
                self._line(f"sent again ({event.retries} so far): {event.reason}")
            elif not self._live and not quiet:
                self._line(f"  {self._label}: {event.retries} sent again so far ({event.reason})")
            self._describe(self._label)
        elif isinstance(event, ev.Prompt):
            self._prompt(event)
        elif isinstance(event, ev.Countdown):
            what = self.WAITING.get(event.action, "waiting for the reset")
            if self._bar is not None:
                self._bar.update(self._task, description=f"{what} ({event.seconds_left} s left)")
            elif err.is_terminal:
                err.print(f"  {what}: {event.seconds_left} s left ", end="\r")
            elif event.seconds_left % 5 == 0:      # a log file gets a line every 5 s, not a smear
                err.print(f"  {what}: {event.seconds_left} s left")
        elif isinstance(event, ev.Caught):
            if self._bar is None:
                err.print(("\n" if err.is_terminal else "") + "caught the module in its bootloader")
            else:
                self._describe("entering bootloader")
        elif isinstance(event, ev.Warning):
            err.print(f"[yellow]warning:[/] {event.message}")
        elif isinstance(event, ev.Note):
            if not quiet:
                out.print(f"[yellow]note:[/] {event.message}")
        elif isinstance(event, ev.Keys):
            # Before the write: what was found (the result line says what became of it).
            if event.when == "before" and not quiet:
                for line in keys_lines(event.info):
                    out.print(line, markup=False)
            elif verbose:
                self._line(f"keys after the write: {event.state}")

    def _prompt(self, event: ev.Prompt) -> None:
        if event.action == "press-reset":
            err.print(f"[yellow]{event.message}.[/]")
            line = event.info.get("reset_line")
            if line:
                err.print(f"Pulsing {line.upper()} to reset the module, then sending the boot command in a burst.")
            else:
                err.print("[bold]Press the module's reset button now.[/] rakflash sends the boot command "
                          "in a burst and catches the module as it starts.")
        else:
            err.print(f"[bold]{event.message}[/]")


SECRET_LABELS = (("app_key", "AppKey"), ("app_skey", "AppSKey"), ("nwk_skey", "NwkSKey"))


def keys_lines(info: dict[str, Any]) -> list[str]:
    """A ``keys`` event read before a recovery's write, for people: where it was read, what it
    holds (the keys masked unless shown), and where the copy is kept."""
    where = ", ".join(f"{r['region']} at {r['address']}" for r in info.get("regions", [])) or \
        ("over AT, while the application answered" if info.get("read_via") == "at" else "")
    lines = [f"keys read before the write ({where}" + (f", config layout {info['layout_version']}"
                                                       if info.get("layout_version") else "") + "):"]
    if info.get("decoded"):
        parts = []
        for key, label in (("dev_eui", "DevEUI"), ("app_eui", "AppEUI")):
            if info.get(key):
                parts.append(f"{label} {info[key]}")
        if info.get("band") is not None:
            parts.append(f"band {info['band']}" + (f" ({info['region']})" if info.get("region") else ""))
        for key, label in (("class", "class"), ("join_mode", "join mode")):
            if info.get(key):
                parts.append(f"{label} {info[key]}")
        for key, label in SECRET_LABELS:
            blank = info.get(f"{key}_blank")
            if blank is None:
                continue
            value = info.get(key) if info.get("keys_shown") else None
            parts.append(f"{label} " + (value if value is not None else
                                        "all zeros (not set)" if blank else "set (hidden; --show-keys shows it)"))
        if info.get("serial_number"):
            parts.append(f"serial number {info['serial_number']}")
        lines.append("  " + ", ".join(parts))
    lines += [f"  note: {n}" for n in info.get("notes", [])]
    if info.get("kept_in"):
        lines.append(f"  a copy is kept in {info['kept_in']} (readable by you only) until the chip is "
                     "checked after the write")
    return lines


def _phase_text(label: str, message: str | None) -> str:
    """A phase's line under -v: its message when that says the same thing in more words
    ('erasing: the bootloader erases …', not 'erasing: erasing: …'), else 'label: message'."""
    if not message:
        return label
    if message.split()[0].lower() == label.split()[0].lower():
        return message
    if message.lower().startswith(label.lower() + ":"):
        return message
    return f"{label}: {message}"


class _KibPerSecond(ProgressColumn):
    """The transfer rate in KiB/s, the one unit every output of rakflash uses for rates
    (rich's own column says kB/s, decimal)."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-.- KiB/s" if speed is None else f"{speed / 1024:.1f} KiB/s",
                    style="progress.data.speed")


# ------------------------------------------------------------------ shared printouts

def print_device(dev: Any) -> None:
    """What ``info`` shows about a device (a :class:`~rakflash.flows.identify.DeviceInfo`)."""
    rows = [("port", f"{dev.port} at {dev.baud} baud"),
            ("module", " or ".join(m.name for m in dev.could_be) if not dev.module_certain and dev.could_be
             else (dev.module.name if dev.module else "unknown")),
            ("mode", "application running" if dev.mode == "app" else "in its bootloader"),
            ("application", dev.app_version or ("-" if dev.mode == "app" else "- (the bootloader can't tell)")),
            ("bootloader", dev.bootloader_version or (
                "- (the application can't tell: --ask-bootloader asks the bootloader)"
                if dev.mode == "app" and dev.dialect == "rui-v3" else "-")),
            ("hardware", dev.hardware_model or "-"), ("hardware id", dev.hardware_id or "-"),
            ("serial number", dev.serial_number or "-"), ("AT dialect", dev.dialect)]
    if getattr(dev, "variant", None):
        rows.insert(2, ("variant", f"{dev.variant}, USB {dev.usb}"))
    chip = getattr(dev, "chip", None)
    if chip:                        # an ESP chip, asked in its ROM download mode
        rows = rows[:2] + [
            ("mode", "application running" if dev.mode == "app" else "in its ROM download mode"),
            ("chip", chip["description"]), ("features", ", ".join(chip["features"])),
            ("MAC", chip["mac"]),
            ("flash", f"{chip['flash_size'] >> 20} MB (JEDEC id {chip['flash_id']:06X})"
             if chip["flash_size"] else "size unknown"),
            ("application", dev.app_version or "-"), ("bootloader", dev.bootloader_version or "-")]
        table = chip.get("partition_table")
        if table:
            rows.append(("partitions", ", ".join(f"{p['label']} ({p['type']}/{p['subtype']}) "
                                                 f"{p['offset']:#x}+{p['size'] // 1024} KiB"
                                                 for p in table["partitions"])))
    for k, v in rows:
        out.print(f"{k:<14}{v}")
    for n in dev.notes if verbosity >= 0 else []:
        out.print(f"[yellow]note:[/] {n}")


def show_plan(plan: dict) -> None:
    """A plan (its ``to_dict()``) for people: device, image, notes, steps, estimate."""
    out.print(f"device    {plan['module']} on {plan['port']}, {plan['mode']}, application "
              f"{plan['app_version_before'] or '-'}, bootloader {plan['bootloader_version'] or '-'}")
    out.print(f"image     {plan['image']}: application {plan['app_version_new'] or '-'}, "
              f"{plan['bytes']:,} bytes to {plan['address']:#010x}")
    for n in plan["notes"]:
        out.print(f"[yellow]note:[/] {n}")
    for w in plan.get("warnings", []):
        err.print(f"[yellow]warning:[/] {w}")
    out.print("plan:")
    for i, step in enumerate(plan["steps"], 1):
        out.print(f"  {i}. {step}")
    out.print(f"estimate  {plan['estimated_seconds']:.1f} s at {plan['baud']} baud")


def show_settings(check: Any, *, unchecked_reason: str | None = None) -> None:
    """What happened to the owner's keys and settings (a :class:`~rakflash.flows.settings.SettingsCheck`).

    Settings lost or not checked are said by the flow's warnings (shown as they
    come, and in ``--json``); this adds the summary of the ones that are fine.
    """
    if check is None:
        if unchecked_reason:
            out.print(f"settings: not checked ({unchecked_reason}).")
        return
    if not check.names:
        return
    earlier = " (the values read by the earlier, interrupted run)" if check.from_earlier_run else ""
    unknown = check.may_have_changed
    fine = [n for n in check.names if n not in unknown and n not in check.lost and n not in check.restored]
    if check.restored:
        out.print(f"settings: the new firmware had reset {', '.join(check.restored)}; rakflash wrote "
                  f"back the values from before the update{earlier}.")
    elif fine:
        out.print(f"settings: {', '.join(fine)} kept{earlier}.")
    if check.lost:
        out.print(f"settings: [red]{', '.join(check.lost)} lost[/]: the new firmware changed "
                  f"{'it' if len(check.lost) == 1 else 'them'} and rakflash could not write "
                  f"{'it' if len(check.lost) == 1 else 'them'} back (see the warning).")
    if unknown:
        out.print(f"settings: [yellow]{', '.join(unknown)} may have changed[/]: rakflash could not "
                  f"confirm {'its value' if len(unknown) == 1 else 'their values'} after the update "
                  f"(see the warning).")
