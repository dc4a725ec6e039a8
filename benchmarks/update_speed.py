#!/usr/bin/env python3
"""How close does a serial update come to the protocol's limit on the same link?

Runs a full `rakflash` update against a virtual module served on a real pty
at a realistic line (115200 baud, 1 ms USB-UART turnaround, datasheet flash
erase/program times) and prints:

* wall time of the transfer and of the whole update (boot entry + transfer +
  confirmation of the new version);
* the protocol's minimum for the same bytes on the same link: every byte at
  line rate, one turnaround per acknowledged packet each way, and the MCU's
  flash time (``rakflash.flows.planning.minimum_transfer_seconds``);
* their ratio (1.00 = the limit; the target is ≤ 1.05);
* the time to enter the bootloader from a running application (target < 0.5 s).

Usage: python benchmarks/update_speed.py [--module rak3172] [--size-kib 190] [--runs 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rakflash import catalog, images
from rakflash.flows.identify import identify
from rakflash.flows.planning import make_plan, minimum_transfer_seconds
from rakflash.flows.update import run_update
from rakflash.link import Link
from rakflash.sim import SimOptions, create, firmware

DEFAULT_SIZE_KIB = {"rak3172": 190, "rak11720": 300, "rak811": 100}


def one_run(module_key: str, size: int, baud: int, latency_ms: float) -> dict:
    module = catalog.load().module(module_key)
    boot_v, old_v, new_v = firmware.DEFAULT_VERSIONS[module.key]
    with create(module.key, SimOptions(baud=baud, latency_ms=latency_ms, app_version=old_v)) as dev, \
            tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "new.bin"
        path.write_bytes(firmware.app_image(module, new_v, size))
        with Link(dev.port, baud) as link:
            t0 = time.monotonic()
            device = identify(link, module=module, baud=baud, scan=False)
            t_identify = time.monotonic() - t0
            plan = make_plan(images.load(path, module=module), device, module=module)
            result = run_update(link, plan)
            total = time.monotonic() - t0
        assert dev.app_version == new_v, "the virtual module does not run the new firmware"
        flash_busy = dev.flash.busy_seconds
    minimum = minimum_transfer_seconds(module, len(plan.payload), baud, latency_ms / 1000)
    return {"identify": t_identify, "boot": result.boot_seconds, "transfer": result.transfer_seconds,
            "total": total, "minimum": minimum, "bytes": len(plan.payload), "flash_busy": flash_busy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module", default="rak3172", choices=sorted(DEFAULT_SIZE_KIB))
    ap.add_argument("--size-kib", type=int)
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--latency-ms", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    size = (args.size_kib or DEFAULT_SIZE_KIB[args.module]) * 1024
    runs = [one_run(args.module, size, args.baud, args.latency_ms) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"module            {args.module}, {size // 1024} KiB application, {args.baud} baud, "
          f"{args.latency_ms} ms latency, datasheet flash timing, {args.runs} run(s), medians")
    print(f"identify          {med['identify']:.3f} s")
    print(f"enter bootloader  {med['boot']:.3f} s   (target < 0.5 s)")
    print(f"transfer          {med['transfer']:.2f} s wall")
    print(f"protocol minimum  {med['minimum']:.2f} s   (line rate + turnarounds + "
          f"{med['flash_busy']:.2f} s modelled flash)")
    print(f"ratio             {med['transfer'] / med['minimum']:.3f}   (target <= 1.05)")
    print(f"whole update      {med['total']:.2f} s (identify + boot + transfer + new version confirmed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
