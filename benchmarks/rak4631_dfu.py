#!/usr/bin/env python3
"""RAK4631 updates over USB CDC: how close to the line's limit, and against the other clients.

The virtual modules' port models USB full speed, because that is what a
RAK4631's native USB port is: no baud rate, bulk transfers of at most 19 × 64
bytes per 1 ms frame (1,216,000 bytes/s), and a device's answer seen by the
host at the next frame (1 ms turnaround). Flash erase and program take the
nRF52840's datasheet times (85 ms per 4 KiB page, 41 µs per word).

For each variant it prints the transfer's wall time, the protocol's minimum on
that line (every byte at the bulk rate, one USB frame per answer each way, the
flash time; ``Transfer.minimum_seconds``), and their ratio (1.00 = the limit):

* RAK4631-R, Nordic Secure DFU: rakflash's client; and the independent
  reference client from the tests, which takes nrfutil's steps (nrfutil's own
  serial client does not install on Python 3.11, see docs/protocols.md);
* Arduino RAK4631, Adafruit legacy DFU: rakflash's client, and
  ``adafruit-nrfutil dfu serial`` (when installed) on the same virtual device.

Usage: python benchmarks/rak4631_dfu.py [--size-kib 190] [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rakflash import catalog
from rakflash import dfu_package as dp
from rakflash.flows.transfers import for_protocol
from rakflash.link import Link
from rakflash.protocols import legacy_dfu, nordic_dfu
from rakflash.sim import SimOptions, create, firmware
from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD, USB_LATENCY_MS

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent / "tests" / "nrf_secure_dfu_reference.py"


def _sim(name: str, state: str, key: bytes | None = None):
    return create(name, SimOptions(baud=USB_FULL_SPEED_BAUD, latency_ms=USB_LATENCY_MS, state=state,
                                   dfu_key=key)).start()


def secure(size: int, client: str) -> tuple[float, float]:
    """(wall seconds of the transfer, protocol minimum) for one Secure DFU update."""
    module = catalog.load().module("rak4631-r")
    key = dp.new_signing_key()
    fw = firmware.app_image(module, "RUI_4.0.6_RAK4631", size)
    init = dp.secure_init_packet(fw, key_pem=key, fw_version=2)
    dev = _sim("rak4631", "bootloader", key)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pkg = Path(tmp) / "p.zip"
            pkg.write_bytes(dp.make_package(fw, init))
            t0 = time.monotonic()
            if client == "rakflash":
                with Link(dev.port) as link:
                    nordic_dfu.SecureDfuClient(link).send(init, fw)
            else:
                subprocess.run([sys.executable, str(REFERENCE), dev.port, str(pkg), "--prn", "0"],
                               check=True, capture_output=True, timeout=600)
            wall = time.monotonic() - t0
        assert dev.wait_mode("app", 10) and dev.app_version == "RUI_4.0.6_RAK4631", "update did not take"
    finally:
        dev.stop()
    minimum = for_protocol("nordic-dfu").minimum_seconds(module, size, USB_FULL_SPEED_BAUD, USB_LATENCY_MS / 1000)
    return wall, minimum


def legacy(size: int, client: str) -> tuple[float, float]:
    module = catalog.load().module("rak4631-arduino")
    fw = firmware.app_image(module, "ARDUINO_SKETCH_1.1", size)
    dev = _sim("rak4631-arduino", "bootloader")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            pkg = Path(tmp) / "p.zip"
            pkg.write_bytes(dp.legacy_package(fw))
            t0 = time.monotonic()
            if client == "rakflash":
                with Link(dev.port) as link:
                    legacy_dfu.LegacyDfuClient(link).send(dp.legacy_init_packet(fw), fw)
            else:
                subprocess.run(["adafruit-nrfutil", "dfu", "serial", "--package", str(pkg), "-p", dev.port,
                                "-b", "115200", "--singlebank", "--touch", "1200"],
                               check=True, capture_output=True, timeout=600)
            wall = time.monotonic() - t0
        assert dev.wait_mode("app", 10) and dev.app_version == "ARDUINO_SKETCH_1.1", "update did not take"
    finally:
        dev.stop()
    minimum = for_protocol("legacy-dfu").minimum_seconds(module, size, USB_FULL_SPEED_BAUD, USB_LATENCY_MS / 1000)
    return wall, minimum


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-kib", type=int, default=190)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    size = args.size_kib * 1024
    rows = [("RAK4631-R Secure DFU", "rakflash", secure, "rakflash"),
            ("RAK4631-R Secure DFU", "reference client", secure, "reference"),
            ("Arduino RAK4631 legacy DFU", "rakflash", legacy, "rakflash")]
    if shutil.which("adafruit-nrfutil"):
        rows.append(("Arduino RAK4631 legacy DFU", "adafruit-nrfutil 0.5.3", legacy, "adafruit-nrfutil"))
    print(f"{args.size_kib} KiB application; USB full speed (1,216,000 B/s bulk, 1 ms frame); "
          f"nRF52840 datasheet flash timing; medians of {args.runs} run(s)\n")
    print(f"{'update':<28}{'client':<26}{'transfer':>10}{'minimum':>10}{'ratio':>8}")
    for what, label, fn, client in rows:
        runs = [fn(size, client) for _ in range(args.runs)]
        wall = statistics.median(r[0] for r in runs)
        minimum = runs[0][1]
        print(f"{what:<28}{label:<26}{wall:>9.2f}s{minimum:>9.2f}s{wall / minimum:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
