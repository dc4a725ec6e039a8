"""ROM recovery speed: rakflash vs stm32flash on the same virtual chip, vs the protocol minimum.

    python benchmarks/rom_recovery.py [--module rak811|rak3172] [--app-kib N] [--runs N]

A virtual module at 115200 baud 8E1 (11 bits a byte), 1 ms USB-UART turnaround each way and its
MCU's datasheet erase/program times, served by `rakflash sim` in a process of its own (so neither
client shares an interpreter with the simulator). rakflash's `recover` (API, the person's BOOT0 +
reset played by the script through the simulator's 'b' and 'r' keys) writes a combined image
(bootloader + application); then `stm32flash -w FILE -v -g` writes the same file to the same chip
(RAK811 only: stm32flash 0.7 doesn't know the RAK3172's PID 0x497). Both verify by reading back.
The minimum counts every byte at 11 bits, one turnaround each way per acknowledged step, and the
flash time (flows/recover_stm32.minimum_seconds). stm32flash runs at -m 8n1: a pty carries no parity.
Medians of --runs runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from rakflash import catalog, images  # noqa: E402
from rakflash.events import Phase, Prompt, Warning  # noqa: E402
from rakflash.flows.recover import RecoveryOptions, plan_recovery, recover  # noqa: E402
from rakflash.flows.recover_stm32 import erase_pages, minimum_seconds, write_blocks  # noqa: E402
from rakflash.link import Link  # noqa: E402
from rakflash.sim import firmware  # noqa: E402

BAUD, LATENCY = 115200, 0.001
SRC = str(Path(__file__).resolve().parent.parent / "src")


class Sim:
    """`rakflash sim MODULE` in its own process; its stdin keys are the BOOT0 jumper and the reset button."""

    def __init__(self, module: str) -> None:
        env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "rakflash", "sim", module, "--baud", str(BAUD),
                                      "--latency-ms", str(LATENCY * 1000)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        first = self.proc.stdout.readline()
        if not first.startswith("port: "):
            raise SystemExit(f"rakflash sim did not start: {first!r}")
        self.port = first.split(":", 1)[1].strip()
        self.boot0 = False

    def key(self, k: str) -> None:
        self.proc.stdin.write(k + "\n")
        self.proc.stdin.flush()

    def set_boot0(self, high: bool) -> None:
        if self.boot0 != high:
            self.key("b")
            self.boot0 = high

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if text in line:
                return
        raise SystemExit(f"the simulator never said {text!r}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def one_run(m, path: Path, img, plan, options) -> dict:
    sim = Sim(m.key)
    try:
        sim.wait_for("running: app")

        marks = {}

        def person(event):
            if isinstance(event, Prompt):
                marks.setdefault("prompt", time.monotonic())
                sim.set_boot0(True)
                sim.key("r")
            if isinstance(event, Phase):
                marks.setdefault(event.phase, time.monotonic())
            if isinstance(event, Warning) and event.code == "release-boot0":
                sim.set_boot0(False)

        with Link(sim.port, BAUD) as link:
            t0 = time.monotonic()
            result = recover(link, plan, options, emit=person)
            total = time.monotonic() - t0
        # What stm32flash does too: from the handshake to Go (counted from the prompt, when the
        # script plays the person's BOOT0 + reset at once, so a reset's few milliseconds are in it).
        to_go = marks["identify-after"] - marks["prompt"]
        row = {"write": result.transfer_seconds, "verify": result.verify_seconds, "whole": total,
               "to_go": to_go}
        if m.key == "rak811" and shutil.which("stm32flash"):
            sim.set_boot0(True)
            sim.key("r")
            sim.wait_for("running: rom")
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
        options = RecoveryOptions(baud=BAUD, window=10, identify_before=False, after_timeout=15)
        plan = plan_recovery(img, m, options=options)
        rows = [one_run(m, path, img, plan, options) for _ in range(a.runs)]
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
    print(f"rakflash  to Go       {med['to_go']:7.2f} s   (handshake, Get, Get ID, erase, write, "
          f"read-back verify, Go: what stm32flash -w -v -g does)")
    print(f"rakflash  whole       {med['whole']:7.2f} s   (and then the new application identified over "
          f"the AT port, versions before → after)")
    if "stm32flash" in med:
        print(f"stm32flash -w -v -g   {med['stm32flash']:7.2f} s   (exit {rows[-1]['stm32flash_exit']}); "
              f"rakflash to Go / stm32flash {med['to_go'] / med['stm32flash']:.3f}, "
              f"whole / stm32flash {med['whole'] / med['stm32flash']:.3f}")


if __name__ == "__main__":
    main()
