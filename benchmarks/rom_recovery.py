"""ROM recovery speed: rakflash vs stm32flash on the same virtual chip, vs the protocol minimum.

    python benchmarks/rom_recovery.py [--module rak811|rak3172] [--app-kib N]

A virtual module at 115200 baud 8E1 (11 bits a byte), 1 ms USB-UART turnaround each way and its
MCU's datasheet erase/program times. rakflash's `recover` (API, the person's BOOT0 + reset played by
the script) writes a combined image (bootloader + application); then `stm32flash -w FILE -v -g` writes
the same file to the same chip (RAK811 only: stm32flash 0.7 doesn't know the RAK3172's PID 0x497).
The minimum counts every byte at 11 bits, one turnaround each way per acknowledged step, and the
flash time (flows/recover_stm32.minimum_seconds). stm32flash runs at -m 8n1: a pty carries no parity.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from rakflash import catalog, images  # noqa: E402
from rakflash.events import Prompt, Warning  # noqa: E402
from rakflash.flows.recover import RecoveryOptions, plan_recovery, recover  # noqa: E402
from rakflash.flows.recover_stm32 import erase_pages, minimum_seconds, write_blocks  # noqa: E402
from rakflash.link import Link  # noqa: E402
from rakflash.sim import Mode, SimOptions, create, firmware  # noqa: E402

BAUD, LATENCY = 115200, 0.001


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", default="rak811", choices=["rak811", "rak3172"])
    ap.add_argument("--app-kib", type=int, default=None)
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
        dev = create(m.key, SimOptions(baud=BAUD, latency_ms=LATENCY * 1000, boot_pin=False)).start()

        def person(event):
            if isinstance(event, Prompt):
                dev.set_boot_pin(True)
                dev.press_reset()
            if isinstance(event, Warning) and event.code == "release-boot0":
                dev.set_boot_pin(False)

        with Link(dev.port, BAUD) as link:
            t0 = time.monotonic()
            result = recover(link, plan, options, emit=person)
            total = time.monotonic() - t0
        blocks, pages = write_blocks(plan.image, m), erase_pages(plan.image, m)
        minimum_write = minimum_seconds(m, blocks, pages, BAUD, LATENCY, verify_bytes=0)
        minimum_all = minimum_seconds(m, blocks, pages, BAUD, LATENCY, verify_bytes=img.size)
        print(f"{m.name}: {img.size:,} bytes in {len(img.segments)} segments, {plan.bytes:,} written")
        print(f"rakflash  erase+write {result.transfer_seconds:7.2f} s   minimum {minimum_write:7.2f} s"
              f"   ratio {result.transfer_seconds / minimum_write:.3f}")
        print(f"rakflash  whole       {total:7.2f} s   (verify {result.verify_seconds:.2f} s "
              f"{result.verify}; minimum incl. verify {minimum_all:.2f} s)")
        if m.key == "rak811" and shutil.which("stm32flash"):
            dev.set_boot_pin(True)
            dev.press_reset()
            dev.wait_mode(Mode.ROM)
            t0 = time.monotonic()
            p = subprocess.run(["stm32flash", "-m", "8n1", "-b", str(BAUD), "-w", str(path), "-v", "-g",
                                "0x08000000", dev.port], capture_output=True, text=True)
            s = time.monotonic() - t0
            dev.set_boot_pin(False)
            print(f"stm32flash -w -v -g   {s:7.2f} s   (exit {p.returncode}); rakflash/stm32flash "
                  f"{total / s:.3f}")
        dev.stop()


if __name__ == "__main__":
    main()
