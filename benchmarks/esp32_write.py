"""ESP32 write speed: `rakflash flash` vs esptool's own `write-flash`, whole commands, on the same virtual chip.

    python benchmarks/esp32_write.py [--module rak11200|rak3112] [--app-kib N] [--baud B] [--runs N]

A virtual module served by `rakflash sim` in a process of its own, on a pty, with a 1 ms
USB-UART turnaround each way and its flash's typical erase/program times (--flash-scale 1). A pty
has no RTS/DTR, so a person's part is played through the simulator's keys: GPIO0 held low ('b')
and reset ('r') put the chip in its ROM download mode before each command, as both tools need it.
Each run times two whole commands from start to exit, at the same baud rate:

* `esptool --port P -b B write-flash 0x10000 APP.bin` — esptool's CLI as people run it: its
  start, connect, stub upload, baud change, compressed write, its MD5 verification; its hard reset
  does nothing on a pty;
* `rakflash flash APP.bin --port P --baud B --yes --json` — the same esptool calls through its
  Python API, plus what rakflash adds: the chip read before the plan (MAC, flash size, the
  partition table and the running app's descriptor), the plan's refusals, the events, and the
  start of the new app — asked of the person here ('b' released, 'r'), its version read from its
  boot log.

The two commands write two builds (A, B) in turn, so each run writes. Reported: medians of --runs
runs of each whole command and their ratio (the goal: rakflash adds no more than 5 % to esptool's
own time), and each tool's write alone (esptool's "Wrote … in X seconds", rakflash's
transfer_seconds). No timed assertion anywhere: this script reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from rakflash import catalog  # noqa: E402
from rakflash.sim import esp_firmware  # noqa: E402
from sim_process import SRC, SimProcess  # noqa: E402  (beside this script)

LATENCY_MS = 1.0




def esptool_run(sim: SimProcess, app: Path, baud: int, env: dict) -> dict:
    sim.into_rom()
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "esptool", "--port", sim.port, "-b", str(baud),
                        "write-flash", "0x10000", str(app)], capture_output=True, text=True, env=env)
    whole = time.monotonic() - t0
    if p.returncode != 0 or "Hash of data verified." not in p.stdout:
        raise SystemExit(f"esptool failed:\n{p.stdout}\n{p.stderr}")
    wrote = float(re.search(r"Wrote \d+ bytes .* in ([\d.]+) seconds", p.stdout).group(1))
    return {"whole": whole, "write": wrote}


def rakflash_run(sim: SimProcess, app: Path, baud: int, env: dict) -> dict:
    sim.into_rom()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "flash", str(app), "--port", sim.port,
                             "--baud", str(baud), "--yes", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    result = None
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("action") == "release-gpio0-and-reset":      # the person: let go, reset
            sim.hold_boot(False)
            sim.key("r")
        result = event
    proc.wait()
    whole = time.monotonic() - t0
    if proc.returncode != 0 or not result.get("version_confirmed"):
        raise SystemExit(f"rakflash flash failed: {result}\n{proc.stderr.read()}")
    return {"whole": whole, "write": result["transfer_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", default="rak11200", choices=["rak11200", "rak3112"])
    ap.add_argument("--app-kib", type=int, default=1024)
    ap.add_argument("--baud", type=int, default=921600)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    m = catalog.load().module(a.module)
    chip = m.esp["image_chip_id"]
    with tempfile.TemporaryDirectory() as tmp:
        builds = []
        for n, version in enumerate(("2.0.0", "2.0.1")):
            path = Path(tmp) / f"app-{version}.bin"
            path.write_bytes(esp_firmware.app_image(chip, version, a.app_kib * 1024, project=f"{m.key}-bench",
                                                    flash_mb=m.mcu.flash.size >> 20, seed=n))
            builds.append(path)
        # Both tools as installed copies run: from compiled bytecode.
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for tool in (["rakflash", "--version"], ["esptool", "version"]):
            subprocess.run([sys.executable, "-m", *tool], env=env, capture_output=True)
        sim = SimProcess(m.key, ["--latency-ms", str(LATENCY_MS), "--flash-scale", "1"], env)
        try:
            sim.wait_for("running: app")
            rows = {"esptool": [], "rakflash": []}
            for run in range(a.runs):
                rows["esptool"].append(esptool_run(sim, builds[run % 2], a.baud, env))
                rows["rakflash"].append(rakflash_run(sim, builds[(run + 1) % 2], a.baud, env))
        finally:
            sim.stop()
    med = {tool: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for tool, rs in rows.items()}
    size = builds[0].stat().st_size if builds[0].exists() else a.app_kib * 1024
    print(f"{m.name} ({m.mcu.name}): a {a.app_kib} KiB app at 0x10000, {a.baud} baud"
          f"{' (USB: no line rate of its own)' if m.esp['reset'] == 'usb-serial-jtag' else ''}, "
          f"{LATENCY_MS:g} ms turnaround, typical flash times; medians of {a.runs} runs")
    print(f"esptool write-flash   {med['esptool']['whole']:7.2f} s   the whole command "
          f"(its write alone {med['esptool']['write']:.2f} s)")
    print(f"rakflash flash        {med['rakflash']['whole']:7.2f} s   the whole command, the new app's "
          f"version read from its boot log (its write alone {med['rakflash']['write']:.2f} s)")
    print(f"rakflash / esptool    {med['rakflash']['whole'] / med['esptool']['whole']:7.3f}     whole commands "
          f"(goal: at most 1.05)")
    print(f"                      {med['rakflash']['write'] / med['esptool']['write']:7.3f}     the writes alone")
    print("each run:", json.dumps(rows))
    del size


if __name__ == "__main__":
    main()
