"""ROM recovery speed: `rakflash recover` vs `stm32flash -w -v -g`, whole commands, on the same virtual chip.

    python benchmarks/rom_recovery.py [--module rak811|rak3172] [--app-kib N] [--runs N]

A virtual module at 115200 baud 8E1 (11 bits a byte), 1 ms USB-UART turnaround each way and its
MCU's datasheet erase/program times, served by `rakflash sim` in a process of its own. Each run puts
the chip in its ROM bootloader (BOOT0 high, reset: the simulator's 'b' and 'r' keys), as stm32flash
needs it, then times two whole commands from start to exit, each on a chip waiting in its ROM:

* `rakflash recover FULL.hex --port P --baud 115200 --module M --yes --json` — what a person runs:
  Python's start (from compiled bytecode, as an installed copy starts), the plan, the look for a ROM that already answers, handshake, Get, Get ID, the
  protection probe, erase, write, read-back verify, Go, and the new application identified over
  the AT port (versions before → after);
* `stm32flash -m 8n1 -b 115200 -w FULL.hex -v -g 0x08000000 P` (RAK811 only: stm32flash 0.7 doesn't
  know the RAK3172's PID 0x497; -m 8n1: a pty carries no parity).

Also rakflash's erase+write and write+verify (from its result line) against the protocol minimum:
every byte at 11 bits, one turnaround each way per acknowledged step, the flash time
(flows/recover/stm32_rom.minimum_seconds). Medians of --runs runs. No timed assertion anywhere: this
script reports.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from rakflash import catalog, images  # noqa: E402
from rakflash.flows.recover import RecoveryOptions, plan_recovery  # noqa: E402
from rakflash.flows.recover.stm32_rom import erase_pages, minimum_seconds, write_blocks  # noqa: E402
from rakflash.sim import firmware  # noqa: E402
from sim_process import SRC, SimProcess  # noqa: E402  (beside this script)

BAUD, LATENCY = 115200, 0.001




def one_run(m, path: Path, env: dict) -> dict:
    sim = SimProcess(m.key, ["--baud", str(BAUD), "--latency-ms", str(LATENCY * 1000)])
    try:
        sim.wait_for("running: app")
        sim.into_rom()
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "rakflash", "recover", str(path), "--port", sim.port,
                            "--baud", str(BAUD), "--module", m.key, "--yes", "--json"],
                           capture_output=True, text=True, env=env)
        whole = time.monotonic() - t0
        result = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("{")][-1])
        if p.returncode != 0:
            raise SystemExit(f"rakflash recover failed: {result}")
        row = {"write": result["transfer_seconds"], "verify": result["verify_seconds"], "whole": whole}
        if m.key == "rak811" and shutil.which("stm32flash"):
            sim.into_rom()
            t0 = time.monotonic()
            p = subprocess.run(["stm32flash", "-m", "8n1", "-b", str(BAUD), "-w", str(path), "-v", "-g",
                                "0x08000000", sim.port], capture_output=True, text=True)
            row["stm32flash"] = time.monotonic() - t0
            row["stm32flash_exit"] = p.returncode
        return row
    finally:
        sim.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", default="rak811", choices=["rak811", "rak3172"])
    ap.add_argument("--app-kib", type=int, default=None)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    m = catalog.load().module(a.module)
    kib = a.app_kib or (100 if a.module == "rak811" else 190)
    boot_v, _, new_v = firmware.DEFAULT_VERSIONS[m.key]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "FULL.hex"
        path.write_text(firmware.combined_hex(m, boot_v, new_v, kib * 1024))
        img = images.load(path)
        plan = plan_recovery(img, m, options=RecoveryOptions(baud=BAUD))
        # rakflash as an installed copy runs: from compiled bytecode (pip writes it at install;
        # a checkout run with PYTHONDONTWRITEBYTECODE compiles every module at each start).
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "rakflash", "--version"], env=env, capture_output=True)
        rows = [one_run(m, path, env) for _ in range(a.runs)]
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    blocks, pages = write_blocks(plan.image, m), erase_pages(plan.image, m)
    minimum_write = minimum_seconds(m, blocks, pages, BAUD, LATENCY, verify_bytes=0)
    minimum_all = minimum_seconds(m, blocks, pages, BAUD, LATENCY, verify_bytes=img.size)
    print(f"{m.name}: {img.size:,} bytes in {len(img.segments)} segments, {plan.bytes:,} written; "
          f"medians of {a.runs}")
    print(f"rakflash  erase+write {med['write']:7.2f} s   minimum {minimum_write:7.2f} s"
          f"   ratio {med['write'] / minimum_write:.3f}")
    print(f"rakflash  write+verify{med['write'] + med['verify']:7.2f} s   minimum {minimum_all:7.2f} s"
          f"   ratio {(med['write'] + med['verify']) / minimum_all:.3f}")
    print(f"rakflash recover      {med['whole']:7.2f} s   the whole command, start to exit (and the new "
          f"application identified over the AT port)")
    if "stm32flash" in med:
        print(f"stm32flash -w -v -g   {med['stm32flash']:7.2f} s   the whole command (exit "
              f"{rows[-1]['stm32flash_exit']}); rakflash / stm32flash {med['whole'] / med['stm32flash']:.3f}")


if __name__ == "__main__":
    main()
