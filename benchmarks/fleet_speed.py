#!/usr/bin/env python3
"""Many modules at once: does updating 8 take longer than updating 1, and what does it cost the host?

Starts N virtual RAK3172s as separate processes (``rakflash sim … --baud 115200
--latency-ms 1``, datasheet flash times), so the simulators' own CPU is not
counted as the host's, then updates them through this process's
:class:`rakflash.flows.fleet.Fleet` — first one module, then all N at once —
and prints, per run:

* the wall time of one module, and of N at once, and their ratio (target: N=8
  at most 1.15 × one module);
* the host's CPU time (this process: user + system, all its threads) per
  megabyte sent (target: at most 0.3 CPU-seconds per MB), and the simulators'
  CPU time for comparison;
* each module's whole update (identify, settings, bootloader entry, transfer,
  start, settings check) as the fleet reports it.

Every run writes the image (``force``) so each module does the same work each
time; the application region is erased and written again by the bootloader.

``--provision``: each run also updates the N modules at once with a batch of keys
(``flash … --provision``: a fresh batch and SQLite ledger per run, ``--force`` since
the modules hold the last run's keys) and prints what provisioning adds to each
module's whole update (target: at most 1 s per module).

Usage: python benchmarks/fleet_speed.py [--modules 8] [--size-kib 128] [--runs 3] [--provision]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rakflash import catalog, images
from rakflash.flows.fleet import Fleet
from rakflash.flows.session import FlashOptions
from rakflash.sim import firmware


def start_sims(n: int, baud: int, latency_ms: float) -> list[tuple[subprocess.Popen, str]]:
    sims = []
    for i in range(n):
        p = subprocess.Popen([sys.executable, "-m", "rakflash", "sim", "rak3172", "--baud", str(baud),
                              "--latency-ms", str(latency_ms), "--serial-number", f"BENCH{i:04d}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True)
        first = p.stdout.readline()
        if not first.startswith("port: "):
            raise SystemExit(f"rakflash sim did not start: {first!r}")
        sims.append((p, first.split(":", 1)[1].strip()))
    return sims


def cpu_seconds(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run(ports: list[str], image: images.Image, baud: int, provisioning=None) -> tuple[float, float, list]:
    """Update ``ports`` at once; (wall seconds, this process's CPU seconds, outcomes)."""
    fleet = Fleet(ports, image, FlashOptions(baud=baud, force=True), provisioning=provisioning)
    cpu0, t0 = cpu_seconds(resource.RUSAGE_SELF), time.monotonic()
    outcomes = fleet.run()
    wall, cpu = time.monotonic() - t0, cpu_seconds(resource.RUSAGE_SELF) - cpu0
    bad = [o for o in outcomes if o.result != "ok"
           or (provisioning is not None and (o.provision or {}).get("result") != "written")]
    if bad:
        raise SystemExit(f"an update failed: {bad[0].port}: {bad[0].result}: {bad[0].message}")
    return wall, cpu, outcomes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modules", type=int, default=8)
    ap.add_argument("--size-kib", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--latency-ms", type=float, default=1.0)
    ap.add_argument("--provision", action="store_true", help="also measure updates with a batch of keys")
    args = ap.parse_args()
    module = catalog.load().module("rak3172")
    size = args.size_kib * 1024
    os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="rakflash-bench-"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "new.bin"
        path.write_bytes(firmware.app_image(module, firmware.DEFAULT_VERSIONS["rak3172"][2], size))
        image = images.load(path, module=module)
        sims = start_sims(args.modules, args.baud, args.latency_ms)
        ports = [port for _, port in sims]
        print(f"{args.modules} virtual RAK3172 (separate processes) at {args.baud} baud, "
              f"{args.latency_ms} ms latency, datasheet flash times; image {size:,} bytes; "
              f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
        rows = []
        try:
            for r in range(args.runs):
                w1, c1, _ = run(ports[:1], image, args.baud)
                wn, cn, outs = run(ports, image, args.baud)
                mb1, mbn = size / 1e6, args.modules * size / 1e6
                row = {"one": w1, "all": wn, "ratio": wn / w1, "cpu_mb_one": c1 / mb1,
                       "cpu_mb_all": cn / mbn, "cpu_one": c1, "cpu_each": cn / args.modules,
                       "slowest": max(o.seconds for o in outs), "fastest": min(o.seconds for o in outs)}
                if args.provision:
                    wp, _, outp = run(ports, image, args.baud, batch_for(Path(tmp), r, args.modules))
                    row["provision_adds"] = statistics.median(o.provision["seconds"] for o in outp)
                    row["provision_max"] = max(o.provision["seconds"] for o in outp)
                    print(f"run {r + 1}: {args.modules} at once with keys {wp:.2f} s; the keys took "
                          f"{row['provision_adds']:.2f} s per module (median; at most "
                          f"{row['provision_max']:.2f} s), each module's whole run "
                          f"{statistics.median(o.seconds for o in outp) - statistics.median(o.seconds for o in outs):+.2f} s "
                          f"(median) against the update alone", flush=True)
                rows.append(row)
                print(f"run {r + 1}: 1 module {w1:.2f} s; {args.modules} at once {wn:.2f} s (each "
                      f"{row['fastest']:.2f}-{row['slowest']:.2f} s) → ratio {row['ratio']:.3f}; host CPU "
                      f"{c1:.2f} s for {mb1:.3f} MB ({row['cpu_mb_one']:.3f} s/MB), {cn:.2f} s for "
                      f"{mbn:.3f} MB ({row['cpu_mb_all']:.3f} s/MB)", flush=True)
        finally:
            for p, _ in sims:
                p.terminate()
            for p, _ in sims:
                p.wait(10)
        sim_cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    total_mb = args.runs * (1 + args.modules) * size / 1e6
    print(f"median of {args.runs}: ratio {med['ratio']:.3f} (target ≤ 1.15); host CPU "
          f"{med['cpu_mb_all']:.3f} s/MB with {args.modules} at once, {med['cpu_mb_one']:.3f} s/MB with one "
          f"(target ≤ 0.3); the {args.modules} simulators used {sim_cpu:.1f} CPU-s "
          f"({sim_cpu / total_mb:.2f} s/MB) in their own processes")
    print(f"host CPU per module: {med['cpu_one']:.3f} s alone, {med['cpu_each']:.3f} s each of "
          f"{args.modules} at once (what running them side by side in threads costs on top: the difference)")
    ok = med["ratio"] <= 1.15 and med["cpu_mb_all"] <= 0.3
    if args.provision:
        print(f"provisioning adds {med['provision_adds']:.2f} s to each module's update (reading, claiming, "
              f"writing and reading back its keys), median of {args.runs}; at most {med['provision_max']:.2f} s "
              f"(target ≤ 1 s)")
        ok = ok and med["provision_adds"] <= 1.0
    return 0 if ok else 1


def batch_for(folder: Path, run_no: int, n: int):
    """A fresh batch of ``n`` rows and its own SQLite ledger (the modules hold the last run's keys: --force)."""
    import secrets

    from rakflash.provision.batch import read_batch
    from rakflash.provision.keys import Provisioning
    from rakflash.provision.ledger import open_ledger
    path = folder / f"batch-{run_no}.csv"
    path.write_text("DevEUI,AppEUI,AppKey\n" + "".join(
        f"AC1F09FFFE{secrets.token_hex(3).upper()},AC1F09FFF9153172,{secrets.token_hex(16).upper()}\n"
        for _ in range(n)))
    return Provisioning(read_batch(str(path)), open_ledger(None, str(path)), "benchmark", force=True)


if __name__ == "__main__":
    sys.exit(main())
