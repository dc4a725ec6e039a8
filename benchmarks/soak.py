#!/usr/bin/env python3
"""A seeded soak: many updates, each with a fault, each checked the way an owner would.

Every run updates a virtual module (RAK3172, RAK811, RAK4270 — YMODEM —,
RAK11720 — AMOTA —, and RAK4631-R — a signed RUI3 package over Nordic Secure
DFU on native USB) through the real command line (`rakflash flash … --json`,
a subprocess, through a real pty) with one fault drawn from the simulator's
set: line noise (bit errors at several rates, lost bytes, garbage bytes)
toward the module, toward the host or both ways; the power cut at a random
byte; the cable pulled at a random byte; a sketch that floods the port, with
and without the reset press rakflash asks for; a firmware that resets the
owner's keys (also together with the flood); an old RAK811 bootloader (the
module whose rule the catalog knows); the module at another baud rate than
the one given; SIGTERM in the middle of the transfer. After a named error the
same command runs again once the cause is gone, as its hint says (the power
back, the cable in, the reset pressed, a shorter cable) — the point being that
the module was left in a state from which the re-run finishes.

The RAK4631-R meets the noise, the power cut, the pulled cable (plugged in
again), the settings-resetting firmware and SIGTERM, not the flood or the
wrong baud (see NOT_ON_NATIVE_USB). Its port is renamed at every reset and
re-plug, so its re-run goes to the port the module has now: the one the
error's hint names, else the one port-not-found's hint names when the same
command meets the port that is gone (checked to be the module's, as the
virtual USB port registry — `rakflash ports` — lists it).

A run FAILS on: a command that outlives its deadline (a hang), a traceback or
`internal-error`, a re-run that does not finish (a re-run that finds the new
firmware already running counts as finished: the first command was stopped as
it started), a wrong version (what the module runs and what its flash holds,
byte for byte, against the image — the package's firmware for the RAK4631-R),
the bootloader region touched (and the RAK4631-R's MBR and SoftDevice), a key lost or changed without a loud warning (a
`warning` event that names it), and an old bootloader not refused.

`--kind` adds the other write paths (see "the other write paths" below): `rom` and `sbl`
(`rakflash recover FULL.hex`, the person holding the boot pin and pressing reset as the prompts
say — at once, late, or to a module that starts flooding its port), `legacy-dfu` (an Arduino
RAK4631's sketch package) and `fleet` (three modules at once, one losing its power or its
cable). Those runs FAIL also on: a result line that says something false (ok, or all written,
while the chip's flash does not hold the image; "nothing was written" while the chip's write
counters moved; read-out protection claimed on a chip without it; a fleet row or report line that
does not match its module, a summary that does not add up), and a byte changed outside what the
plan said it erases.

Usage::

    nice python benchmarks/soak.py --runs 520 --seed 12 --markdown soak.md --log soak.jsonl
    python benchmarks/soak.py --runs 12 --seed 3           # a quick look (CI runs a subset too)
    nice python benchmarks/soak.py --kind rom --kind sbl --kind legacy-dfu --kind fleet --runs 200 \
        --seed 17 --markdown soak-paths.md --log soak-paths.jsonl

The table (module × fault: runs, first-try ok, named error then re-run ok,
failures) goes to standard output, and with --markdown to a file; --log keeps
one JSON line per run (seed, fault, what each command said, every check).
The run with a given --seed and --runs is the same run every time (same
modules, faults, images, keys, fault positions); the simulator's line noise is
seeded too, though where exactly an error lands can shift with the machine's
timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if SRC.is_dir():
    sys.path.insert(0, str(SRC))

from rakflash import catalog, dfu_package  # noqa: E402
from rakflash.sim import Faults, Mode, SimOptions, create, firmware  # noqa: E402
from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD  # noqa: E402

MODULES = ("rak3172", "rak811", "rak4270", "rak11720", "rak4631")
FAST = 921600
DEADLINE = 150.0        # seconds one command may take before it counts as a hang

NOISE = {
    # name: Faults fields, for the direction(s) given by the fault's suffix
    "bit-errors-1e-5": {"bit_error_rate": 1e-5},
    "bit-errors-1e-4": {"bit_error_rate": 1e-4},
    "bit-errors-1e-3": {"bit_error_rate": 1e-3},
    "drops-1e-4": {"drop_rate": 1e-4},
    "garbage-1e-4": {"garbage_rate": 1e-4},
}
DIRECTIONS = ("to-module", "to-host", "both-ways")
EVENTS = ("power-cut", "pull-cable", "flood+reset", "flood-no-reset", "settings-reset",
          "flood+settings-reset", "old-bootloader", "wrong-baud", "sigterm")
RUI_V3 = ("rak811", "rak4270")
NATIVE_USB = ("rak4631",)
# What the soak does not give a native USB port (RAK4631-R: the nRF52840 is the USB device):
# no wrong baud — it has no baud rate (any host setting works); no flooding sketch — the
# Secure DFU bootloader has no start-up window to catch after a reset press (it jumps to the
# application unless AT+BOOT set GPREGRET), so neither the simulator nor rakflash has a way
# past a flood there (a flooding RUI3 application is a case for recovery over SWD). The
# old-bootloader rule is RAK811's.
NOT_ON_NATIVE_USB = ("flood+reset", "flood-no-reset", "flood+settings-reset", "wrong-baud")


def fault_names(module: str) -> list[str]:
    """The faults a module can meet (the key faults need RUI3's settings list; the old
    bootloader rule is RAK811's)."""
    names = [f"{n} {d}" for n in NOISE for d in DIRECTIONS] + ["none"]
    for e in EVENTS:
        if e == "old-bootloader" and module != "rak811":
            continue       # the catalog's rule (3.0.0.14 needs bootloader 3.0.5) is RAK811's
        if "settings-reset" in e and module in RUI_V3:
            continue
        if e in NOT_ON_NATIVE_USB and module in NATIVE_USB:
            continue
        names.append(e)
    return names


def noise_faults(fault: str, seed: int) -> Faults:
    name, direction = fault.split()
    rates = NOISE[name]
    kw: dict = {}
    if direction in ("to-module", "both-ways"):
        kw.update(rates)
    if direction in ("to-host", "both-ways"):
        kw.update({k + "_to_host": v for k, v in rates.items()})
    # Toward the host the traffic is answers — hundreds of bytes, not the image —
    # so the same rate would hardly ever touch it: ten times the rate there.
    for k in list(kw):
        if k.endswith("_to_host"):
            kw[k] = min(0.05, kw[k] * 10)
    return Faults(seed=seed, **kw)


@dataclass
class Run:
    index: int
    seed: int
    module: str
    fault: str
    commands: list[dict] = field(default_factory=list)
    outcome: str = ""               # "first-try", "re-run", "failed"
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kind: str = "update"

    def to_dict(self) -> dict:
        return {"index": self.index, "kind": self.kind, "seed": self.seed, "module": self.module,
                "fault": self.fault,
                "outcome": self.outcome, "problems": self.problems, "seconds": round(self.seconds, 2),
                "commands": self.commands}


class Cli:
    """`rakflash flash … --json` as a subprocess with a deadline; the person's reset press on cue."""

    def __init__(self, env: dict) -> None:
        self.env = env

    def run(self, argv: list[str], on_event=None, deadline: float = DEADLINE) -> dict:
        """`rakflash ARGV… --json` with a deadline; ``on_event(event, proc)`` sees each event as it
        comes (the person at the module: a press, a pin held, a signal). Returns what the command
        said, as :meth:`flash` does."""
        cmd = [sys.executable, "-m", "rakflash", *argv, "--json"]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env)
        killed = threading.Event()

        def watchdog() -> None:
            if proc.poll() is None:
                killed.set()
                proc.kill()
        timer = threading.Timer(deadline, watchdog)
        timer.start()
        events: list[dict] = []
        stderr = ""
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    events.append({"unparsed": line[:200]})
                    continue
                events.append(event)
                if on_event:
                    on_event(event, proc)
            stderr = proc.stderr.read()
            proc.wait(10)
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result = next((e for e in reversed(events) if "result" in e and "event" not in e), None)
        return {"args": argv, "exit": proc.returncode, "seconds": round(time.monotonic() - t0, 2),
                "hung": killed.is_set(), "result": result, "stderr": stderr[-2000:],
                "warnings": [e for e in events if e.get("event") == "warning"],
                "prompts": sum(1 for e in events if e.get("event") == "prompt"),
                "events": [e for e in events if e.get("event") in ("plan", "device-result", "prompt")
                           or "result" in e and "event" not in e]}

    def flash(self, dev, port: str, image: Path, args: list[str], *, press_reset: bool = False,
              sigterm_at: int | None = None) -> dict:
        """`rakflash flash IMAGE --port PORT --yes ARGS… --json` (:meth:`run`), the person pressing
        reset at the first countdown after each prompt, and SIGTERM once ``sigterm_at`` bytes are
        acknowledged."""
        state = {"armed": False, "sigterm_at": sigterm_at}

        def person(event: dict, proc: subprocess.Popen) -> None:
            kind = event.get("event")
            if kind == "prompt":
                state["armed"] = True
            elif kind == "countdown" and state["armed"] and press_reset:
                dev.press_reset()           # the person presses reset when asked
                state["armed"] = False
            elif kind == "progress" and state["sigterm_at"] is not None and event["bytes"] >= state["sigterm_at"]:
                proc.send_signal(signal.SIGTERM)
                state["sigterm_at"] = None
        said = self.run(["flash", str(image), "--port", port, "--yes", *args], person)
        del said["events"]
        return {**said, "args": args}


_DFU_KEY: list[bytes] = []


def dfu_key() -> bytes:
    """The key the virtual RAK4631-Rs' bootloaders trust and the soak signs packages with (one
    per process: a real module carries the public half of RAK's published key)."""
    if not _DFU_KEY:
        _DFU_KEY.append(dfu_package.new_signing_key())
    return _DFU_KEY[0]


def random_keys(rng: random.Random) -> dict[str, str]:
    h = lambda n: "".join(rng.choice("0123456789ABCDEF") for _ in range(n))  # noqa: E731
    return {"DEVEUI": h(16), "APPEUI": h(16), "APPKEY": h(32), "BAND": str(rng.randrange(13))}


def one_run(index: int, seed: int, module_key: str, fault: str, tmp: Path, cli: Cli) -> Run:
    """One update with one fault, the re-run if it ended in a named error, and every check."""
    run = Run(index, seed, module_key, fault)
    rng = random.Random(seed)
    cat = catalog.load()
    module = cat.module(module_key)
    boot_v, old_v, new_v = firmware.DEFAULT_VERSIONS[module.key]
    rui3 = module_key not in RUI_V3
    opts = dict(baud=FAST, latency_ms=0.2, flash_scale=0.0, serial_number=f"SOAK{seed:08d}")
    size = rng.randrange(8, 40) * 1024 + rng.randrange(1024)
    args = ["--baud", str(FAST), "--module", module_key]
    flooding = fault.startswith("flood")
    resets = "settings-reset" in fault
    old_boot = fault == "old-bootloader"
    if flooding:
        opts.update(baud=115200, latency_ms=1.0, sketch="flooding", flood_after=0.5)
        args = ["--baud", "115200", "--module", module_key,
                "--reset-window", "3" if fault == "flood-no-reset" else "20"]
        size = rng.randrange(8, 16) * 1024
    if old_boot:
        opts["bootloader_version"] = "V3.0.2"
        size = 100 * 1024          # 3.0.0.14 grew past what the old bootloader takes
    if fault == "wrong-baud":
        # The person gives a baud rate the module does not run at; it runs at another
        # one of its catalog's (RAK11720 knows only 115200: then the person says 57600).
        others = [b for b in module.bauds if b >= 38400 and b != 115200]
        opts["baud"], given = (rng.choice(others), 115200) if others else (115200, 57600)
        opts["latency_ms"] = 1.0
        args = ["--baud", str(given), "--module", module_key]
        size = rng.randrange(4, 8) * 1024
    if fault.split()[0] in NOISE:
        opts["faults"] = noise_faults(fault, seed)
    native = module_key in NATIVE_USB
    if native:
        # No baud rate on a native USB port: the simulator runs the USB full-speed bulk rate;
        # the bootloader trusts the soak's signing key, and the package is signed with it.
        opts.update(baud=USB_FULL_SPEED_BAUD, dfu_key=dfu_key())
        args = ["--module", module_key]
    dev = create(module_key, SimOptions(**opts))
    keys = random_keys(rng)
    if rui3:                           # the owner's keys, in the module's memory before it starts
        dev.settings.update(keys)
        dev.save_settings()
    dev.start()
    try:
        if flooding:
            time.sleep(0.8)            # the sketch floods 0.5 s after the start
        data = firmware.app_image(module, new_v, size, seed=seed, new_settings_layout=resets)
        if native:             # RUI3 for the RAK4631-R comes as a signed Secure DFU package
            image = tmp / f"run{index}.zip"
            image.write_bytes(dfu_package.secure_package(data, key_pem=dfu_key(), fw_version=2))
        else:
            image = tmp / f"run{index}.bin"
            image.write_bytes(data)
        # What an application update must never write: the bootloader (and its version
        # page), and on the nRF52840 the MBR and SoftDevice below the application.
        boot_regions = [r for r in module.regions if r.name in ("bootloader", "bootloader-version",
                                                                 "softdevice")]
        boot_before = [dev.flash.read(r.start, r.size) for r in boot_regions]
        app_before = dev.flash.read(module.app.start, module.app.size)
        if fault == "power-cut":
            dev.uart.faults.power_cut_after = dev.uart.faults.received + rng.randrange(500, size)
        if fault == "pull-cable":
            dev.uart.faults.pull_cable_after = dev.uart.faults.received + rng.randrange(500, size)
        first_port = dev.port
        first = cli.flash(dev, first_port, image, args, press_reset=fault in ("flood+reset", "flood+settings-reset"),
                          sigterm_at=rng.randrange(1024, size) if fault == "sigterm" else None)
        run.commands.append(first)
        commands = [first]
        ended = (first["result"] or {}).get("result")
        if old_boot:
            _check_refused_old_bootloader(run, dev, first, app_before, old_v)
        elif ended not in ("ok",) and not first["hung"] and _named(first):
            # The cause goes away, as the hint says; then the same command again.
            port = _clear_the_cause(dev, fault)
            if flooding:
                dev.opts.flood_after = 0.5
            if native:
                port = _find_the_port_again(run, dev, cli, image, args, first, dev_port_before=first_port)
                commands.extend(run.commands[len(commands):])
            again = cli.flash(dev, port, image, args, press_reset=flooding)
            run.commands.append(again)
            commands.append(again)
            # Finished: the update, or — when the first command was stopped after the transfer,
            # as the new firmware started — the module found up to date (its version is checked).
            if (again["result"] or {}).get("result") not in ("ok", "already-up-to-date"):
                run.problems.append(f"the re-run did not finish: {_said(again)}")
        _common_checks(run, commands, DEADLINE)
        if not old_boot and not run.problems:
            _check_updated(run, dev, module, data, new_v)
        if [dev.flash.read(r.start, r.size) for r in boot_regions] != boot_before:
            run.problems.append("the bootloader region was touched")
        if rui3:
            _check_keys(run, dev, keys, commands)
        ok_first = (first["result"] or {}).get("result") == "ok" or (
            old_boot and (first["result"] or {}).get("result") == "bootloader-too-old")
        run.outcome = "failed" if run.problems else ("first-try" if ok_first else "re-run")
    finally:
        dev.stop()
    return run


def _named(c: dict) -> bool:
    r = c["result"] or {}
    return bool(r.get("error")) and r.get("result") not in ("internal-error",)


def _said(c: dict) -> str:
    r = c["result"] or {}
    return f"{r.get('result')} (exit {c['exit']}): {r.get('message', '')[:160]}"


def _clear_the_cause(dev, fault: str) -> str:
    """What the person does before running the same command again; returns the port."""
    f = dev.uart.faults
    for name in ("bit_error_rate", "drop_rate", "garbage_rate", "bit_error_rate_to_host",
                 "drop_rate_to_host", "garbage_rate_to_host"):
        setattr(f, name, 0.0)
    f.power_cut_after = None
    if not dev.uart.closed:
        f.pull_cable_after = None             # armed, but the first command ended before it
    if dev.uart.closed:                       # the cable was pulled: plug it back in
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                return dev.plug_in()
            except RuntimeError:
                time.sleep(0.05)
    return dev.port


def _find_the_port_again(run: Run, dev, cli: Cli, image: Path, args: list[str], first: dict,
                         dev_port_before: str) -> str:
    """A native USB port is renamed at every reset and re-plug. The error's hint names the
    port the module is on when rakflash knows it (it followed the module into its bootloader);
    else the person runs the same command, and as its port is gone, takes the port that
    port-not-found's hint names (`rakflash ports` lists the same). Returns the port to re-run
    on (the module's, as the port registry lists it); a hint that does not lead there is a
    problem of the run."""
    port = _port_of(dev)
    if port == dev_port_before or port in _ports_named((first["result"] or {}).get("hint")):
        return port
    # The port it was given is gone — but a pty's number is soon taken by another
    # pseudo-terminal (maybe another program's), so the soak names the gone port by a path
    # that can't exist rather than run on whatever holds that number now.
    gone = cli.flash(dev, dev_port_before + ".gone", image, args)
    run.commands.append(gone)
    r = gone["result"] or {}
    if r.get("result") != "port-not-found":
        run.problems.append(f"the same command on the port that is gone said {_said(gone)}")
    elif port not in _ports_named(r.get("hint")):
        run.problems.append(f"port-not-found's hint does not lead to the module's port {port}: "
                            f"{(r.get('hint') or '')[:200]}")
    return port


def _ports_named(hint: str | None) -> list[str]:
    """The ports a hint tells to give with --port."""
    return re.findall(r"--port (\S+?)[,;.)]?(?:\s|$)", hint or "")


def _port_of(dev, timeout: float = 10.0) -> str:
    """The module's port as the port registry lists it (by its USB serial number), once it is
    back after a reset (as `rakflash ports` shows it)."""
    from rakflash import ports
    deadline = time.monotonic() + timeout
    while True:
        mine = [e.device for e in ports.list_serial_ports()
                if e.virtual and e.serial_number == dev.opts.serial_number]
        if len(mine) == 1 or time.monotonic() >= deadline:
            return mine[0] if mine else dev.port
        time.sleep(0.05)


def _check_updated(run: Run, dev, module, data: bytes, new_v: str) -> None:
    result = run.commands[-1]["result"] or {}
    if result.get("app_version_after") != new_v:
        run.problems.append(f"reported version {result.get('app_version_after')!r}, not {new_v!r}")
    if not dev.wait_mode(Mode.APP, 5):
        run.problems.append(f"the module runs its {dev.mode} after the update")
    if dev.app_version != new_v:
        run.problems.append(f"the module runs {dev.app_version!r}, not {new_v!r}")
    if dev.flash.read(module.app.start, len(data)) != data:
        run.problems.append("the application region does not hold the image byte for byte")


def _check_refused_old_bootloader(run: Run, dev, first: dict, app_before: bytes, old_v: str) -> None:
    r = first["result"] or {}
    if r.get("result") != "bootloader-too-old":
        run.problems.append(f"an old bootloader was not refused: {_said(first)}")
    if dev.flash.read(dev.module.app.start, dev.module.app.size) != app_before:
        run.problems.append("the application was written although the plan was refused")
    if not dev.wait_mode(Mode.APP, 5) or dev.app_version != old_v:
        run.problems.append("after the refusal the module does not run its application again")


def _check_keys(run: Run, dev, keys: dict, commands: list[dict]) -> None:
    """Every key as it was, or a warning event that names the one that is not."""
    now = dev.load_settings()
    warned = " ".join(w.get("message", "") + " " + " ".join(w.get("settings", []) or [])
                      for c in commands for w in c["warnings"]
                      if w.get("code", "").startswith("settings-"))
    for name, value in keys.items():
        if now.get(name) != value and name not in warned:
            run.problems.append(f"{name} was lost or changed without a warning")


# ====================================================================== the other write paths
# Four more kinds of run, each through the real command line too, each checked against the
# virtual chip's flash and its write counters afterwards:
#
# - rom: `rakflash recover FULL.hex` of a RAK811 / RAK3172 over the STM32 ROM bootloader;
# - sbl: the same of a RAK11720 over the Apollo3 secure bootloader;
#   in both, the person is played from the prompt events: holds the boot pin and presses reset
#   at once, or late (a random moment inside the window), and the module may start with a
#   sketch that floods its port;
# - legacy-dfu: `rakflash flash SKETCH.zip` of an Arduino RAK4631 (Adafruit legacy DFU);
# - fleet: `rakflash flash FILE --port A --port B --port C --report F`, one of the three losing
#   its power or its cable, and every row of the report and of the JSON checked against the
#   module it names.

KINDS = ("update", "rom", "sbl", "legacy-dfu", "fleet")
KIND_MODULES = {"update": MODULES, "rom": ("rak811", "rak3172"), "sbl": ("rak11720",),
                "legacy-dfu": ("rak4631-arduino",), "fleet": ("rak3172", "rak811", "rak11720")}
# The person at the module, for the recoveries: "prompt" holds the boot pin and presses reset as
# soon as asked; "late" does it at a random moment inside the window; "flood-…" the same with a
# module whose application floods its port from the start (the seed case of the recovery).
PERSONS = ("prompt", "late", "flood-prompt", "flood-late")
LINE_NOISE = ("bit-errors-1e-4", "bit-errors-1e-3", "drops-1e-4", "garbage-1e-4")
LINE_EVENTS = ("power-cut", "pull-cable", "sigterm", "none")
WINDOW = 3.0             # --window of the recoveries: the person's delays are drawn inside it
RECOVER_DEADLINE = 60.0  # the bound on one recovery command (a window, a small image, a fast line)
FLEET_NOISE = ("none", "bit-errors-1e-4 to-module", "bit-errors-1e-4 to-host", "bit-errors-1e-4 both-ways")


def kind_faults(kind: str, module: str) -> list[str]:
    """The faults a run of ``kind`` can meet (for ``update``: :func:`fault_names`)."""
    if kind == "update":
        return fault_names(module)
    line = [f"{n} {d}" for n in LINE_NOISE for d in DIRECTIONS] + list(LINE_EVENTS)
    if kind in ("rom", "sbl"):
        return [f"{p} / {f}" for p in PERSONS for f in line]
    if kind == "legacy-dfu":
        return line
    if kind == "fleet":
        return [f"{cut} / {noise}" for cut in ("power-cut", "pull-cable") for noise in FLEET_NOISE]
    raise ValueError(kind)


class Writes:
    """The virtual chip's write counters: every erase and program its firmware (ROM, bootloader)
    does, outside the boot-request flag page (the application's own ``AT+BOOT``)."""

    def __init__(self, dev) -> None:
        self.count = 0
        self.ranges: list[tuple[int, int]] = []
        m = dev.module
        self._skip = [(r.start, r.end) for r in m.regions if r.name in ("flag",)]
        flash = dev.flash
        erase, program = flash.erase, flash.program

        def counted_erase(start: int, end: int) -> None:
            self._note(start, end)
            erase(start, end)

        def counted_program(addr: int, data: bytes) -> None:
            self._note(addr, addr + len(data))
            program(addr, data)
        flash.erase, flash.program = counted_erase, counted_program

    def _note(self, start: int, end: int) -> None:
        if any(a <= start and end <= b for a, b in self._skip):
            return
        self.count += 1
        self.ranges.append((start, end))


def _said_nothing_written(result: dict) -> bool:
    """Whether a result line claims that nothing was written (in words or in a field)."""
    text = " ".join(str(result.get(k) or "") for k in ("message", "hint")).lower()
    return ("nothing was written" in text or "nothing was changed" in text
            or result.get("written") in ("nothing", False, "none"))


def _said_all_written(result: dict) -> bool:
    return result.get("written") in ("all", True)


def _check_claims(run: Run, c: dict, writes_during: int, holds_image: bool, label: str,
                  read=None) -> None:
    """What one command's result line said about the chip, against what the chip saw
    (``read(address, n)``: the chip's flash now, for a claim about one byte of it)."""
    r = c["result"] or {}
    said = re.search(r"the chip holds 0x([0-9A-Fa-f]{2}) at (0x[0-9A-Fa-f]+)", r.get("message") or "")
    if said and read is not None:
        claimed, address = int(said.group(1), 16), int(said.group(2), 16)
        actual = read(address, 1)[0]
        if actual != claimed:
            run.problems.append(f"{label} said the chip holds 0x{claimed:02X} at {address:#x}; "
                                f"it holds 0x{actual:02X}: {_said(c)}")
    if _said_nothing_written(r) and writes_during:
        run.problems.append(f"{label} said nothing was written, but the chip saw {writes_during} "
                            f"erase/program steps: {_said(c)}")
    # Every block acknowledged and yet the flash differs is what a verify failure is: a block damaged
    # on its way in can still match AN3155's XOR checksum (two flips in one bit position). The
    # result must then name a byte the chip really holds (checked just above), not claim success.
    named = bool(said) and r.get("result") == "verify-failed"
    if _said_all_written(r) and not holds_image and not named:
        run.problems.append(f"{label} said all was written, but the flash does not hold the image")
    if r.get("result") == "ok" and not holds_image:
        run.problems.append(f"{label} said ok, but the flash does not hold the image")


def _outside(snapshot: bytes, now: bytes, base: int, allowed: list[tuple[int, int]]) -> list[int]:
    """Addresses (first few) where ``now`` differs from ``snapshot`` outside ``allowed`` ranges."""
    bad = []
    a = memoryview(snapshot)
    b = memoryview(now)
    step = 4096
    for off in range(0, len(snapshot), step):
        if a[off:off + step] == b[off:off + step]:
            continue
        for i in range(off, min(off + step, len(snapshot))):
            if a[i] != b[i]:
                addr = base + i
                if not any(s <= addr < e for s, e in allowed):
                    bad.append(addr)
                    if len(bad) >= 4:
                        return bad
    return bad


class Person:
    """The person at a module during `rakflash recover`, played from the command's events.

    At the prompt to hold the boot pin and reset: holds it and presses reset, at once or after
    ``delay`` seconds (a timer: a person does not wait for the next countdown line) — unless
    told to release the pin first. Releases the pin when told; presses reset too when told to
    (the Apollo3's "release and reset").
    ``sigterm_at``: SIGTERM once the write's progress reaches that many bytes."""

    def __init__(self, dev_ref, delay: float = 0.0, sigterm_at: int | None = None) -> None:
        self.dev_ref = dev_ref            # a callable: the module now (it changes with a re-plug)
        self.delay = delay
        self.sigterm_at = sigterm_at
        self.presses = 0
        self.timers: list[threading.Timer] = []

    def _hold_and_reset(self) -> None:
        dev = self.dev_ref()
        dev.set_boot_pin(True)
        dev.press_reset()
        self.presses += 1

    def __call__(self, e: dict, proc) -> None:
        kind, action = e.get("event"), e.get("action", "")
        if kind == "prompt" and action.startswith("hold-boot"):
            if self.delay > 0:
                t = threading.Timer(self.delay, self._hold_and_reset)
                t.daemon = True
                self.timers.append(t)
                t.start()
            else:
                self._hold_and_reset()
        elif kind == "prompt" and action.startswith("release-boot"):
            self.done()                   # told to release: a press still pending is not made
            self.dev_ref().set_boot_pin(False)
            if action == "release-boot-and-reset":
                self.dev_ref().press_reset()
        elif kind == "warning" and e.get("code") == "release-boot0":
            self.done()
            self.dev_ref().set_boot_pin(False)
        elif kind == "progress" and self.sigterm_at is not None and e.get("phase") == "write" \
                and e.get("bytes", 0) >= self.sigterm_at:
            proc.send_signal(signal.SIGTERM)
            self.sigterm_at = None

    def done(self) -> None:
        for t in self.timers:
            t.cancel()
        self.timers.clear()


def _arm(dev, fault: str, rng: random.Random, size: int) -> None:
    """The fault of the first command: noise on the line (seeded), or a power cut / a pulled
    cable at a random byte of the transfer (the module started; counted from now)."""
    if fault.split()[0] in LINE_NOISE:
        f = dev.uart.faults
        f._rng.seed(rng.randrange(1 << 30))
        f._rng_to_host.seed(rng.randrange(1 << 30))
        for k, v in noise_faults_line(fault).items():
            setattr(f, k, v)
    if fault == "power-cut":
        dev.uart.faults.power_cut_after = dev.uart.faults.received + rng.randrange(300, size)
    if fault == "pull-cable":
        dev.uart.faults.pull_cable_after = dev.uart.faults.received + rng.randrange(300, size)


def noise_faults_line(fault: str) -> dict:
    """The Faults fields of a noise fault of the other kinds (bit errors up to 1e-3)."""
    name, direction = fault.split()
    rate_name, rate = re.fullmatch(r"(.+)-(\d+e-\d+)", name).groups()
    rate = float(rate)
    field_name = {"bit-errors": "bit_error_rate", "drops": "drop_rate", "garbage": "garbage_rate"}[rate_name]
    kw: dict = {}
    if direction in ("to-module", "both-ways"):
        kw[field_name] = rate
    if direction in ("to-host", "both-ways"):
        kw[field_name + "_to_host"] = min(0.05, rate * 10)
    return kw


def _clear(dev) -> str:
    """The cause goes away: a clean line, the power back, the cable in. Returns the port."""
    return _clear_the_cause(dev, "")


def _common_checks(run: Run, commands: list[dict], deadline: float) -> None:
    for c in commands:
        if c["hung"]:
            run.problems.append(f"hung past {deadline:.0f} s: {' '.join(c['args'][:1])}")
        if "Traceback" in c["stderr"] or (c["result"] or {}).get("result") == "internal-error":
            run.problems.append(f"internal error: {_said(c)}")
        if c["result"] is None and not c["hung"]:
            run.problems.append(f"no result line (exit {c['exit']}): {c['stderr'][-300:]}")


def _holds(dev, segments) -> bool:
    return all(dev.flash.read(s.start, len(s.data)) == bytes(s.data) for s in segments)


def recovery_run(index: int, seed: int, kind: str, module_key: str, fault: str, tmp: Path, cli: Cli) -> Run:
    """One recovery (``rom`` or ``sbl``) with one person and one line fault, the re-run after a
    named error, and every check."""
    from rakflash import images
    run = Run(index, seed, module_key, fault, kind=kind)
    rng = random.Random(seed)
    module = catalog.load().module(module_key)
    boot_v, old_v, new_v = firmware.DEFAULT_VERSIONS[module.key]
    person, line = fault.split(" / ")
    flooding = person.startswith("flood")
    opts = dict(baud=FAST, latency_ms=0.2, flash_scale=0.0, serial_number=f"SOAK{seed:08d}")
    if flooding:
        opts.update(sketch="flooding", flood_after=0.3)
    if kind == "sbl":
        from rakflash.apollo3_info0 import rak11720_default
        opts["info0"] = rak11720_default().replace(uart_baud=FAST).raw
    dev = create(module_key, SimOptions(**opts))
    writes = Writes(dev)
    dev.start()
    try:
        size = rng.randrange(4, 16) * 1024
        path = tmp / f"run{index}_FULL.hex"
        path.write_text(firmware.combined_hex(module, boot_v, new_v, size))
        segments = images.load(path).segments
        before = dev.flash.read(dev.flash.base, len(dev.flash.mem))
        if flooding:
            time.sleep(0.5)                       # the sketch floods 0.3 s after the start
        argv = ["recover", str(path), "--port", dev.port, "--module", module_key, "--baud", str(FAST),
                "--yes", "--window", str(WINDOW)]
        if kind == "sbl":
            argv += ["--release-wait", "0.5"]
        late = person.endswith("late")

        def a_person(sigterm_at=None) -> Person:
            # late: a random moment inside the window, leaving the chip time to answer in it
            delay = rng.uniform(0.3, 0.7) * WINDOW if late else 0.0
            return Person(lambda: dev, delay, sigterm_at)
        plan_bytes = size + 8192
        _arm(dev, line, rng, plan_bytes)
        p = a_person(rng.randrange(512, size) if line == "sigterm" else None)
        w0 = writes.count
        first = cli.run(argv, p, RECOVER_DEADLINE)
        p.done()
        first["person_presses"] = p.presses
        run.commands.append(first)
        _check_claims(run, first, writes.count - w0, _holds(dev, segments), "the first command",
                      dev.flash.read)
        ended = (first["result"] or {}).get("result")
        if (first["result"] or {}).get("error") == "readout-protected" and not dev.readout_protected:
            run.problems.append("claimed read-out protection on a chip that has none")
        if ended != "ok" and not first["hung"] and _named(first):
            port = _clear(dev)
            argv[argv.index("--port") + 1] = port
            p = a_person()
            w0 = writes.count
            again = cli.run(argv, p, RECOVER_DEADLINE)
            p.done()
            again["person_presses"] = p.presses
            run.commands.append(again)
            _check_claims(run, again, writes.count - w0, _holds(dev, segments), "the re-run",
                          dev.flash.read)
            if (again["result"] or {}).get("result") != "ok":
                run.problems.append(f"the re-run did not finish: {_said(again)}")
        _common_checks(run, run.commands, RECOVER_DEADLINE)
        final = run.commands[-1]
        if not run.problems and (final["result"] or {}).get("result") == "ok":
            r = final["result"]
            if not _holds(dev, segments):
                run.problems.append("the flash does not hold the image byte for byte")
            dev.set_boot_pin(False)
            if not dev.wait_mode(Mode.APP, 5):
                run.problems.append(f"the module runs its {dev.mode} after the recovery")
            if dev.app_version != new_v:
                run.problems.append(f"the module runs {dev.app_version!r}, not {new_v!r}")
            if r.get("version_confirmed") and r.get("app_version_after") != new_v:
                run.problems.append(f"reported version {r.get('app_version_after')!r}, not {new_v!r}")
        # No byte changed outside what the plan said it erases (the first plan event says it).
        plan = next((e for c in run.commands for e in c.get("events", []) if e.get("event") == "plan"), None)
        if plan:
            allowed = [(e["start"], e["end"]) for e in plan.get("erase", [])]
            allowed += [(r.start, r.end) for r in module.regions if r.name == "flag"]
            bad = _outside(before, dev.flash.read(dev.flash.base, len(dev.flash.mem)), dev.flash.base, allowed)
            if bad:
                run.problems.append("bytes changed outside what the plan erases: "
                                    + ", ".join(f"{a:#x}" for a in bad))
        run.outcome = "failed" if run.problems else ("first-try" if ended == "ok" else "re-run")
    finally:
        dev.stop()
    return run


def legacy_dfu_run(index: int, seed: int, module_key: str, fault: str, tmp: Path, cli: Cli) -> Run:
    """`rakflash flash SKETCH.zip` of an Arduino RAK4631 over the Adafruit legacy DFU with one
    line fault; the re-run (on the port the module has now) after a named error; every check."""
    run = Run(index, seed, module_key, fault, kind="legacy-dfu")
    rng = random.Random(seed)
    module = catalog.load().module(module_key)
    boot_v, old_v, new_v = firmware.DEFAULT_VERSIONS[module.key]
    dev = create(module_key, SimOptions(baud=USB_FULL_SPEED_BAUD, latency_ms=0.2, flash_scale=0.0,
                                        serial_number=f"SOAK{seed:08d}"))
    writes = Writes(dev)
    dev.start()
    try:
        size = rng.randrange(8, 32) * 1024 + rng.randrange(1024)
        data = firmware.app_image(module, new_v, size, seed=seed)
        pkg = tmp / f"run{index}_sketch.zip"
        pkg.write_bytes(dfu_package.legacy_package(data))
        boot_regions = [r for r in module.regions if r.name in ("bootloader", "bootloader-version",
                                                                 "softdevice", "mbr")]
        boot_before = [dev.flash.read(r.start, r.size) for r in boot_regions]
        _arm(dev, fault, rng, size)
        sig = {"at": rng.randrange(1024, size) if fault == "sigterm" else None}

        def on_event(e: dict, proc) -> None:
            if e.get("event") == "progress" and sig["at"] is not None and e.get("bytes", 0) >= sig["at"]:
                proc.send_signal(signal.SIGTERM)
                sig["at"] = None
        first_port = dev.port
        w0 = writes.count
        first = cli.run(["flash", str(pkg), "--port", first_port, "--yes"], on_event, DEADLINE)
        run.commands.append(first)
        _check_claims(run, first, writes.count - w0, dev.flash.read(module.app.start, size) == data,
                      "the first command")
        ended = (first["result"] or {}).get("result")
        if ended != "ok" and not first["hung"] and _named(first):
            _clear_the_cause(dev, fault)
            port = _port_of(dev)
            w0 = writes.count
            again = cli.run(["flash", str(pkg), "--port", port, "--yes"], None, DEADLINE)
            run.commands.append(again)
            _check_claims(run, again, writes.count - w0, dev.flash.read(module.app.start, size) == data,
                          "the re-run")
            if (again["result"] or {}).get("result") not in ("ok", "already-up-to-date"):
                run.problems.append(f"the re-run did not finish: {_said(again)}")
        _common_checks(run, run.commands, DEADLINE)
        if not run.problems:
            if not dev.wait_mode(Mode.APP, 5):
                run.problems.append(f"the module runs its {dev.mode} after the update")
            if dev.app_version != new_v:
                run.problems.append(f"the module runs {dev.app_version!r}, not {new_v!r}")
            if dev.flash.read(module.app.start, size) != data:
                run.problems.append("the sketch region does not hold the image byte for byte")
        if [dev.flash.read(r.start, r.size) for r in boot_regions] != boot_before:
            run.problems.append("the bootloader region (or MBR/SoftDevice) was touched")
        run.outcome = "failed" if run.problems else ("first-try" if ended == "ok" else "re-run")
    finally:
        dev.stop()
    return run


FLEET_SIZE = 3


def fleet_run(index: int, seed: int, module_key: str, fault: str, tmp: Path, cli: Cli) -> Run:
    """Three modules at once (`flash FILE --port A --port B --port C --report F`), one of them
    losing its power or its cable at a random byte, maybe noise on every line; every row of the
    JSON and of the report checked against its module; the re-run with the pulled one plugged in
    again must finish all three."""
    run = Run(index, seed, module_key, fault, kind="fleet")
    rng = random.Random(seed)
    module = catalog.load().module(module_key)
    boot_v, old_v, new_v = firmware.DEFAULT_VERSIONS[module.key]
    cut, noise = fault.split(" / ")
    devs = []
    for i in range(FLEET_SIZE):
        dev = create(module_key, SimOptions(baud=FAST, latency_ms=0.2, flash_scale=0.0,
                                            serial_number=f"SOAK{seed % 10**6:06d}-{i}"))
        dev.settings["DEVEUI"] = f"AC1F09FFFE{seed % 10**5:05d}{i}"
        dev.save_settings()
        devs.append(dev)
    writes = [Writes(d) for d in devs]
    for d in devs:
        d.start()
    try:
        size = rng.randrange(8, 24) * 1024 + rng.randrange(1024)
        data = firmware.app_image(module, new_v, size, seed=seed)
        image = tmp / f"run{index}.bin"
        image.write_bytes(data)
        report = tmp / f"run{index}.jsonl"
        boot_regions = [r for r in module.regions if r.name in ("bootloader", "bootloader-version")]
        boot_before = [[d.flash.read(r.start, r.size) for r in boot_regions] for d in devs]
        eui = [d.settings["DEVEUI"] for d in devs]
        failing = rng.randrange(FLEET_SIZE)
        if noise != "none":
            for d in devs:
                _arm(d, noise, rng, size)
        _arm(devs[failing], cut, rng, size)
        ports_now = [d.port for d in devs]

        def command(ports: list[str]) -> list[str]:
            argv = ["flash", str(image), "--baud", str(FAST), "--module", module_key, "--yes",
                    "--report", str(report)]
            for p in ports:
                argv += ["--port", p]
            return argv
        w0 = [w.count for w in writes]
        first = cli.run(command(ports_now), None, DEADLINE)
        run.commands.append(first)
        _check_fleet_claims(run, first, devs, ports_now, [w.count - c for w, c in zip(writes, w0, strict=False)],
                            data, new_v, eui, report, 0, "the first command")
        ended = (first["result"] or {}).get("result")
        if ended != "ok" and not first["hung"] and (first["result"] or {}).get("failed"):
            for d in devs:
                _clear_the_cause(d, "")
            ports_now = [d.port for d in devs]
            rows_before = len(_report_rows(report))
            w0 = [w.count for w in writes]
            again = cli.run(command(ports_now), None, DEADLINE)
            run.commands.append(again)
            _check_fleet_claims(run, again, devs, ports_now, [w.count - c for w, c in zip(writes, w0, strict=False)],
                                data, new_v, eui, report, rows_before, "the re-run")
            if (again["result"] or {}).get("result") != "ok":
                run.problems.append(f"the re-run did not finish: {_said(again)}")
        _common_checks(run, run.commands, DEADLINE)
        if not run.problems:
            for i, d in enumerate(devs):
                if not d.wait_mode(Mode.APP, 5) or d.app_version != new_v:
                    run.problems.append(f"module {i} runs {d.mode} {d.app_version!r}, not {new_v!r}")
                if d.flash.read(module.app.start, size) != data:
                    run.problems.append(f"module {i}'s application region does not hold the image")
        for i, d in enumerate(devs):
            if [d.flash.read(r.start, r.size) for r in boot_regions] != boot_before[i]:
                run.problems.append(f"module {i}'s bootloader region was touched")
            if d.load_settings().get("DEVEUI") != eui[i]:
                run.problems.append(f"module {i}'s DevEUI changed")
        run.outcome = "failed" if run.problems else ("first-try" if ended == "ok" else "re-run")
    finally:
        for d in devs:
            d.stop()
    return run


def _report_rows(path: Path) -> list[dict]:
    try:
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError:
        return []


def _check_fleet_claims(run: Run, c: dict, devs, ports: list[str], writes: list[int], data: bytes,
                        new_v: str, eui: list[str], report: Path, skip_rows: int, label: str) -> None:
    """Each module's device-result and report row against the module; the summary against the rows."""
    if c["hung"] or c["result"] is None:
        return
    rows = {e["port"]: e for e in c["events"] if e.get("event") == "device-result"}
    records = {r.get("port"): r for r in _report_rows(report)[skip_rows:]}
    summary = c["result"]
    oks = 0
    for i, (d, port) in enumerate(zip(devs, ports, strict=False)):
        row, rec = rows.get(port), records.get(port)
        if row is None or rec is None:
            run.problems.append(f"{label}: module {i} ({port}) has no "
                                f"{'device-result' if row is None else 'report row'}")
            continue
        holds = d.flash.read(d.module.app.start, len(data)) == data
        result = row.get("result")
        if result in ("ok", "already-up-to-date"):
            oks += 1
            if not holds:
                run.problems.append(f"{label}: module {i} reported {result}, but its flash does not "
                                    f"hold the image")
            if rec.get("app_version_after") != new_v:
                run.problems.append(f"{label}: module {i}'s report row says "
                                    f"{rec.get('app_version_after')!r}, not {new_v!r}")
        elif not row.get("error") and result != "failed":
            run.problems.append(f"{label}: module {i}'s row has no named error: {row}")
        if result != rec.get("result"):
            run.problems.append(f"{label}: module {i}: the JSON says {result}, the report {rec.get('result')}")
        if rec.get("serial_number") not in (None, d.opts.serial_number):
            run.problems.append(f"{label}: module {i}'s report names serial {rec.get('serial_number')!r}")
        if rec.get("dev_eui") not in (None, eui[i]):
            run.problems.append(f"{label}: module {i}'s report names DevEUI {rec.get('dev_eui')!r}")
        # A RUI3 module tells both (RUI v3 firmware is not asked: its rows say null, not a guess).
        if result == "ok" and d.module.key not in RUI_V3 and \
                (rec.get("serial_number"), rec.get("dev_eui")) != (d.opts.serial_number, eui[i]):
            run.problems.append(f"{label}: module {i} done, but its row lacks its serial or DevEUI")
        if _said_nothing_written(row) and writes[i]:
            run.problems.append(f"{label}: module {i} said nothing was written, but it saw {writes[i]} "
                                f"erase/program steps")
    if summary.get("ok") != oks or summary.get("modules") != len(devs):
        run.problems.append(f"{label}: the summary says {summary.get('ok')} of {summary.get('modules')} "
                            f"ok, the rows {oks} of {len(devs)}")
    if (summary.get("result") == "ok") != (oks == len(devs)):
        run.problems.append(f"{label}: the summary says {summary.get('result')} with {oks} of "
                            f"{len(devs)} ok")


def plan_runs(n: int, seed: int, modules=None, faults: list[str] | None = None,
              kind: str = "update") -> list[tuple]:
    """(index, run seed, module, fault) for ``n`` runs of ``kind``: modules in turn, faults drawn
    from each module's set so that every fault comes up about equally often. ``faults`` narrows
    the set: a fault's name, or any of its words (a noise kind, a person, ``power-cut``)."""
    modules = modules or KIND_MODULES[kind]
    rng = random.Random(seed)
    decks: dict[str, list[str]] = {}
    out = []
    for i in range(n):
        m = modules[i % len(modules)]
        if not decks.get(m):
            deck = [f for f in kind_faults(kind, m)
                    if faults is None or f in faults or set(f.replace(" / ", " ").split()) & set(faults)]
            rng.shuffle(deck)
            decks[m] = deck
        out.append((i, rng.randrange(1 << 30), m, decks[m].pop()))
    return out


def one_of_kind(kind: str, index: int, seed: int, module: str, fault: str, tmp: Path, cli: Cli) -> Run:
    """One run of ``kind``, with its fault, its re-run and its checks."""
    if kind == "update":
        run = one_run(index, seed, module, fault, tmp, cli)
    elif kind in ("rom", "sbl"):
        run = recovery_run(index, seed, kind, module, fault, tmp, cli)
    elif kind == "legacy-dfu":
        run = legacy_dfu_run(index, seed, module, fault, tmp, cli)
    elif kind == "fleet":
        run = fleet_run(index, seed, module, fault, tmp, cli)
    else:
        raise ValueError(kind)
    run.kind = kind
    return run


def cli_env(tmp: Path) -> dict:
    """The command line's environment: this checkout's package, its own cache folder."""
    return dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                XDG_CACHE_HOME=str(Path(tmp) / "cache"))


def soak(n: int, seed: int, *, kind: str = "update", modules=None, faults: list[str] | None = None,
         log: Path | None = None, progress=print) -> list[Run]:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        # The virtual RAK4631s register their USB ports in a folder of this soak's own, so
        # neither side sees another simulator's ports (the simulators here, the CLI there).
        os.environ["RAKFLASH_VIRTUAL_PORTS"] = str(Path(tmp) / "virtual-ports")
        cli = Cli(cli_env(Path(tmp)))
        logf = open(log, "a") if log else None
        try:
            for index, run_seed, module, fault in plan_runs(n, seed, modules, faults, kind):
                t0 = time.monotonic()
                run = one_of_kind(kind, index, run_seed, module, fault, Path(tmp), cli)
                run.seconds = time.monotonic() - t0
                runs.append(run)
                if logf:
                    logf.write(json.dumps(run.to_dict()) + "\n")
                    logf.flush()
                if progress:
                    progress(f"{kind:10s} {index + 1:4d}/{n} {module:15s} {fault:34s} {run.outcome:9s} "
                             f"{run.seconds:6.1f} s {'; '.join(run.problems)}")
        finally:
            if logf:
                logf.close()
    return runs


ORDER = ("rak3172", "rak811", "rak4270", "rak11720", "rak4631", "rak4631-arduino")


def table(runs: list[Run], by: str = "fault") -> str:
    """module × fault (``by="fault"``), or module × the person / the line fault of a recovery
    (``by="person"`` / ``"line"``): runs, first-try ok, named error then re-run ok, failures."""
    def key(r: Run) -> str:
        if by == "person":
            return r.fault.split(" / ")[0]
        if by == "line":
            return r.fault.split(" / ")[-1]
        return r.fault
    rows: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in runs:
        rows[(r.module, key(r))][r.outcome] += 1
    name = {"fault": "fault", "person": "person", "line": "line fault"}[by]
    lines = [f"| module | {name} | runs | first-try ok | named error, then re-run ok | failures |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    total = Counter()
    for (m, f), c in sorted(rows.items(), key=lambda kv: (ORDER.index(kv[0][0]), kv[0][1])):
        n = sum(c.values())
        total.update(c)
        lines.append(f"| {m} | {f} | {n} | {c['first-try']} | {c['re-run']} | {c['failed']} |")
    lines.append(f"| **all** | | **{sum(total.values())}** | **{total['first-try']}** | "
                 f"**{total['re-run']}** | **{total['failed']}** |")
    return "\n".join(lines)


def failures_list(runs: list[Run]) -> str:
    """One line per failed run: kind, index, seed, module, fault, what went wrong."""
    return "\n".join(f"- {r.kind} run {r.index} (seed {r.seed}) {r.module}, {r.fault}: "
                     + "; ".join(r.problems) for r in runs if r.outcome == "failed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=520, help="runs of each kind")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--kind", action="append", choices=KINDS,
                    help="which write path: update (the default), rom, sbl, legacy-dfu, fleet")
    ap.add_argument("--module", action="append", choices=ORDER, help="only these modules")
    ap.add_argument("--fault", action="append", help="only these faults (a name, or any word of one)")
    ap.add_argument("--markdown", type=Path, help="write the tables here too")
    ap.add_argument("--log", type=Path, help="one JSON line per run (appended)")
    a = ap.parse_args()
    texts, fails = [], []
    for kind in a.kind or ["update"]:
        t0 = time.monotonic()
        modules = tuple(m for m in KIND_MODULES[kind] if not a.module or m in a.module)
        runs = soak(a.runs, a.seed, kind=kind, modules=modules or None, faults=a.fault, log=a.log)
        parts = [table(runs)] if kind in ("update", "legacy-dfu", "fleet") else \
            [table(runs, "person"), table(runs, "line")]
        failed = [r for r in runs if r.outcome == "failed"]
        fails += failed
        summary = (f"{kind}: {len(runs)} runs, seed {a.seed}: "
                   f"{sum(r.outcome == 'first-try' for r in runs)} first-try ok, "
                   f"{sum(r.outcome == 're-run' for r in runs)} named error then re-run ok, "
                   f"{len(failed)} failures; {time.monotonic() - t0:.0f} s")
        text = "\n\n".join(parts + [summary] + ([failures_list(runs)] if failed else []))
        print()
        print(text)
        texts.append(f"### {kind}\n\n{text}")
    if a.markdown:
        a.markdown.write_text("\n\n".join(texts) + "\n")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
