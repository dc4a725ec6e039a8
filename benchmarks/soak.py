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

Usage::

    nice python benchmarks/soak.py --runs 520 --seed 12 --markdown soak.md --log soak.jsonl
    python benchmarks/soak.py --runs 12 --seed 3           # a quick look (CI runs a subset too)

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

    def to_dict(self) -> dict:
        return {"index": self.index, "seed": self.seed, "module": self.module, "fault": self.fault,
                "outcome": self.outcome, "problems": self.problems, "seconds": round(self.seconds, 2),
                "commands": self.commands}


class Cli:
    """`rakflash flash … --json` as a subprocess with a deadline; the person's reset press on cue."""

    def __init__(self, env: dict) -> None:
        self.env = env

    def flash(self, dev, port: str, image: Path, args: list[str], *, press_reset: bool = False,
              sigterm_at: int | None = None) -> dict:
        cmd = [sys.executable, "-m", "rakflash", "flash", str(image), "--port", port, "--yes", "--json",
               *args]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env)
        killed = threading.Event()

        def watchdog() -> None:
            if proc.poll() is None:
                killed.set()
                proc.kill()
        timer = threading.Timer(DEADLINE, watchdog)
        timer.start()
        events: list[dict] = []
        armed = False
        try:
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    events.append({"unparsed": line[:200]})
                    continue
                events.append(event)
                kind = event.get("event")
                if kind == "prompt":
                    armed = True
                elif kind == "countdown" and armed and press_reset:
                    dev.press_reset()           # the person presses reset when asked
                    armed = False
                elif kind == "progress" and sigterm_at is not None and event["bytes"] >= sigterm_at:
                    proc.send_signal(signal.SIGTERM)
                    sigterm_at = None
            stderr = proc.stderr.read()
            proc.wait(10)
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result = next((e for e in reversed(events) if "result" in e), None)
        return {"args": args, "exit": proc.returncode, "seconds": round(time.monotonic() - t0, 2),
                "hung": killed.is_set(), "result": result, "stderr": stderr[-2000:],
                "warnings": [e for e in events if e.get("event") == "warning"],
                "prompts": sum(1 for e in events if e.get("event") == "prompt")}


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
        for c in commands:
            if c["hung"]:
                run.problems.append(f"hung past {DEADLINE:.0f} s")
            if "Traceback" in c["stderr"] or (c["result"] or {}).get("result") == "internal-error":
                run.problems.append(f"internal error: {_said(c)}")
            if c["result"] is None and not c["hung"]:
                run.problems.append(f"no result line (exit {c['exit']}): {c['stderr'][-300:]}")
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


def plan_runs(n: int, seed: int, modules=MODULES, faults: list[str] | None = None) -> list[tuple]:
    """(index, run seed, module, fault) for ``n`` runs: modules in turn, faults drawn from each
    module's set so that every fault comes up about equally often."""
    rng = random.Random(seed)
    decks: dict[str, list[str]] = {}
    out = []
    for i in range(n):
        m = modules[i % len(modules)]
        if not decks.get(m):
            deck = [f for f in fault_names(m) if faults is None or f in faults or f.split()[0] in faults]
            rng.shuffle(deck)
            decks[m] = deck
        out.append((i, rng.randrange(1 << 30), m, decks[m].pop()))
    return out


def cli_env(tmp: Path) -> dict:
    """The command line's environment: this checkout's package, its own cache folder."""
    return dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                XDG_CACHE_HOME=str(Path(tmp) / "cache"))


def soak(n: int, seed: int, *, modules=MODULES, faults: list[str] | None = None,
         log: Path | None = None, progress=print) -> list[Run]:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        # The virtual RAK4631s register their USB ports in a folder of this soak's own, so
        # neither side sees another simulator's ports (the simulators here, the CLI there).
        os.environ["RAKFLASH_VIRTUAL_PORTS"] = str(Path(tmp) / "virtual-ports")
        cli = Cli(cli_env(Path(tmp)))
        logf = open(log, "w") if log else None
        try:
            for index, run_seed, module, fault in plan_runs(n, seed, modules, faults):
                t0 = time.monotonic()
                run = one_run(index, run_seed, module, fault, Path(tmp), cli)
                run.seconds = time.monotonic() - t0
                runs.append(run)
                if logf:
                    logf.write(json.dumps(run.to_dict()) + "\n")
                    logf.flush()
                if progress:
                    progress(f"{index + 1:4d}/{n} {module:9s} {fault:26s} {run.outcome:9s} "
                             f"{run.seconds:6.1f} s {'; '.join(run.problems)}")
        finally:
            if logf:
                logf.close()
    return runs


def table(runs: list[Run]) -> str:
    """module × fault: runs, first-try ok, named error then re-run ok, failures."""
    rows: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in runs:
        rows[(r.module, r.fault)][r.outcome] += 1
    lines = ["| module | fault | runs | first-try ok | named error, then re-run ok | failures |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    total = Counter()
    for (m, f), c in sorted(rows.items(), key=lambda kv: (MODULES.index(kv[0][0]), kv[0][1])):
        n = sum(c.values())
        total.update(c)
        lines.append(f"| {m} | {f} | {n} | {c['first-try']} | {c['re-run']} | {c['failed']} |")
    lines.append(f"| **all** | | **{sum(total.values())}** | **{total['first-try']}** | "
                 f"**{total['re-run']}** | **{total['failed']}** |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=520)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--module", action="append", choices=MODULES, help="only these modules")
    ap.add_argument("--fault", action="append", help="only these faults (a name, or a noise kind)")
    ap.add_argument("--markdown", type=Path, help="write the table here too")
    ap.add_argument("--log", type=Path, help="one JSON line per run")
    a = ap.parse_args()
    t0 = time.monotonic()
    runs = soak(a.runs, a.seed, modules=tuple(a.module or MODULES), faults=a.fault, log=a.log)
    text = table(runs)
    fails = [r for r in runs if r.outcome == "failed"]
    summary = (f"{len(runs)} updates, seed {a.seed}: {sum(r.outcome == 'first-try' for r in runs)} "
               f"first-try ok, {sum(r.outcome == 're-run' for r in runs)} named error then re-run ok, "
               f"{len(fails)} failures; {time.monotonic() - t0:.0f} s")
    print()
    print(text)
    print()
    print(summary)
    if a.markdown:
        a.markdown.write_text(text + "\n\n" + summary + "\n")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
