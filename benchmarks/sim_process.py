"""`rakflash sim MODULE` in a process of its own, driven the way a person at the bench would.

The benchmarks time whole commands against a virtual module, so the simulator's own CPU must
not be counted as the command's: it runs in its own process. Its standard input takes the
simulator's keys — ``b`` toggles the boot pin (BOOT0 on an STM32, GPIO0 on an ESP32), ``r``
presses reset — and it prints ``port: …`` first and ``running: MODE`` at each start.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parent.parent / "src")


class SimProcess:
    """A started `rakflash sim MODULE ARGS…`; ``env`` defaults to this one with the checkout's src."""

    def __init__(self, module: str, args: list[str], env: dict | None = None) -> None:
        if env is None:
            env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "rakflash", "sim", module, *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        first = self.proc.stdout.readline()
        if not first.startswith("port: "):
            raise SystemExit(f"rakflash sim did not start: {first!r}")
        self.port = first.split(":", 1)[1].strip()
        self.boot_held = False

    def key(self, k: str) -> None:
        self.proc.stdin.write(k + "\n")
        self.proc.stdin.flush()

    def hold_boot(self, held: bool) -> None:
        """The boot pin held (True) or let go (False)."""
        if self.boot_held != held:
            self.key("b")
            self.boot_held = held

    def wait_for(self, text: str, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.proc.stdout.readline():
                return
        raise SystemExit(f"the simulator never said {text!r}")

    def into_rom(self) -> None:
        """The boot pin held and a reset: the chip waits in its ROM bootloader."""
        self.hold_boot(True)
        self.key("r")
        self.wait_for("running: rom")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
