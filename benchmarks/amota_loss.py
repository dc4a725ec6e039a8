#!/usr/bin/env python3
"""The cost of loss on an AMOTA update (RAK11720): update time against the drop rate.

AMOTA packets carry no sequence number, so a DATA packet sent again after its
reply was lost is written twice. rakflash used to start the whole image over
then (issue 12 measured up to 73 s at a drop rate of 1e-3 for an update that
takes 2 s clean). Now it asks the bootloader where it stands with the same
HEADER: Ambiq's AMOTA resumes (the reply carries its byte count), a bootloader
without that starts over and says 0 — rakflash goes on from whatever it says.

This runs `rakflash`'s update (the API the CLI is a thin layer over) against a
virtual RAK11720 at a realistic line — 115200 baud, 1 ms USB-UART turnaround,
the datasheet flash times — with bytes lost at the given rate in both
directions, for a bootloader that resumes and one that starts over, and
prints the mean and worst time against the clean update, and how often the
transfer resumed, started over, or failed with a named error.

Usage: python benchmarks/amota_loss.py [--kib 16] [--runs 5] [--rates 0,1e-4,3e-4,1e-3,3e-3] [--seed 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if SRC.is_dir():
    sys.path.insert(0, str(SRC))

from rakflash import catalog, images  # noqa: E402
from rakflash.errors import RakflashError  # noqa: E402
from rakflash.events import Retry  # noqa: E402
from rakflash.flows.identify import identify  # noqa: E402
from rakflash.flows.planning import make_plan  # noqa: E402
from rakflash.flows.update import run_update  # noqa: E402
from rakflash.link import Link  # noqa: E402
from rakflash.sim import Faults, SimOptions, create, firmware  # noqa: E402

BAUD = 115200


def one_update(path: Path, rate: float, resume: bool, seed: int) -> dict:
    faults = Faults(drop_rate=rate, drop_rate_to_host=rate, seed=seed)
    dev = create("rak11720", SimOptions(baud=BAUD, latency_ms=1.0, faults=faults))
    dev.amota_resume = resume
    dev.start()
    retries: list[str] = []
    try:
        with Link(dev.port, BAUD) as link:
            t0 = time.monotonic()
            try:
                device = identify(link, baud=BAUD, scan=False)
                plan = make_plan(images.load(path), device, keep_settings=False)
                run_update(link, plan, emit=lambda e: retries.append(e.reason) if isinstance(e, Retry) else None)
                error = None
            except RakflashError as exc:
                error = exc.name
            seconds = time.monotonic() - t0
    finally:
        dev.stop()
    return {"seconds": seconds, "error": error,
            "resumed": sum("where it stands" in r for r in retries),
            "restarts": sum("image over" in r for r in retries),
            "resends": sum("sent again" in r for r in retries)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rates", default="0,1e-4,3e-4,1e-3,3e-3")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    module = catalog.load().module("rak11720")
    rates = [float(r) for r in a.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.bin"
        path.write_bytes(firmware.app_image(module, "RUI_4.0.6_RAK11720", a.kib * 1024))
        print(f"RAK11720, {a.kib} KiB, {BAUD} baud, 1 ms turnaround, bytes lost at the rate in both "
              f"directions; {a.runs} runs each")
        print("| bootloader | drop rate | mean s | worst s | × clean | asked where it stands | "
              "started over | resent | named errors |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for resume in (True, False):
            clean = None
            for rate in rates:
                rs = [one_update(path, rate, resume, a.seed * 1000 + i) for i in range(a.runs)]
                ok = [r["seconds"] for r in rs if r["error"] is None]
                mean = statistics.mean(ok) if ok else float("nan")
                clean = clean or mean
                errors = [r["error"] for r in rs if r["error"]]
                def num(x: float | None) -> str:
                    return "—" if x is None or x != x else f"{x:.2f}"   # — where no run finished
                print(f"| {'resumes (Ambiq)' if resume else 'starts over'} | {rate:g} | {num(mean)} | "
                      f"{num(max(ok) if ok else None)} | {num(mean / clean)} | "
                      f"{sum(r['resumed'] for r in rs)} | {sum(r['restarts'] for r in rs)} | "
                      f"{sum(r['resends'] for r in rs)} | {', '.join(errors) or 0} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
