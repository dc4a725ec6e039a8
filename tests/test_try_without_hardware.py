"""The README's "Try every flow without hardware", run as a person follows it.

The section's code blocks are read from README.md; every ``rakflash sim …`` is started as
a process of its own (the person's extra terminal), every other command is run as printed
in the same folder, and when a command asks for the reset button or the boot pin, the
keys the section names (``r``, ``b`` + Enter) are typed into that module's simulator. Each
command must end as the section says; a command the test doesn't know is a failure, so the
section and this test can't drift apart.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import SRC

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Try every flow without hardware"


def section_commands() -> list[str]:
    """The commands of the section's ``sh`` code blocks, comments dropped, in order."""
    text = README.read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.index("\n## ", start + 1)
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text[start:end], re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line:
                commands.append(line)
    return commands


# What each command must do, as the section says it: (exit status, words its output holds).
EXPECTED: dict[str, tuple[int, list[str]]] = {
    "rakflash samples try": (0, ["rak3172-full.hex", "rak11720-app.ota", "rak4631-r-app.zip",
                                 "rak4631-arduino-sketch.hex", "rui3_nrf52840_bootloader_latest.zip",
                                 "dfu-key.pem"]),
    "rakflash info --port try/rak3172": (0, ["RAK3172", "RUI_4.0.5_RAK3172-E", "application running"]),
    "rakflash doctor --port try/rak3172 --for try/rak3172-app.bin": (0, ["RUI_4.0.6_RAK3172-E"]),
    "rakflash flash try/rak3172-app.bin --port try/rak3172 --yes":
        (0, ["RUI_4.0.5_RAK3172-E → RUI_4.0.6_RAK3172-E"]),
    "rakflash doctor --port try/flooding": (5, ["prints without pause", "rakflash flash"]),
    "rakflash flash try/rak3172-app.bin --port try/flooding --yes":
        (0, ["reset button", "caught", "→ RUI_4.0.6_RAK3172-E"]),
    "rakflash doctor --port try/rak811 --for try/rak811-app.bin":
        (6, ["needs bootloader 3.0.5", "rakflash recover"]),
    "rakflash flash try/rak811-app.bin --port try/rak811 --yes":
        (6, ["3.0.5", "rakflash recover FULL.hex --port try/rak811 --module rak811"]),
    "rakflash recover try/rak811-full.hex --port try/rak811 --module rak811 --yes":
        (0, ["BOOT0", "V3.0.2 → V3.0.5", "V3.0.0.13.H → V3.0.0.14.H"]),
    "rakflash info --port try/rak811 --ask-bootloader": (0, ["V3.0.0.14.H", "V3.0.5"]),
    "rakflash flash try/rak11720-app.ota --port try/rak11720 --yes":
        (0, ["RUI_4.0.5_RAK11720 → RUI_4.0.6_RAK11720"]),
    "rakflash recover try/rak11720-full.hex --port try/rak11720 --module rak11720 --yes":
        (0, ["Hold BOOT", "Release BOOT", "RUI_4.0.6_RAK11720"]),
    "rakflash flash try/rak4631-r-app.zip --port try/rak4631 --yes":
        (0, ["RUI_4.0.5_RAK4631 → RUI_4.0.6_RAK4631"]),
    "rakflash flash try/rak4631-arduino-sketch.zip --port try/arduino --yes": (0, ["done:"]),
    "rakflash flash try/rak4631-arduino-sketch.hex --port try/arduino --yes": (0, ["done:"]),
    "rakflash convert-to-rui3 try/rui3_nrf52840_bootloader_latest.zip try/rak4631-r-app.zip "
    "--port try/arduino --yes": (0, ["RUI_4.0.6_RAK4631"]),
    "rakflash info --port try/arduino": (0, ["RAK4631-R", "RUI_4.0.6_RAK4631"]),
    "rakflash recover try/rak11720-full.hex --via swd --module rak11720 --dry-run":
        (0, ["pyocd flash -t ama3b1kk_kbr", "reset_type=emulated"]),
    "rakflash flash try/rak3172-app.bin --port try/line-1 --port try/line-2 --yes --report try/report.jsonl":
        (0, ["2 modules"]),
    "rakflash info --port try/rak11200 --module rak11200": (0, ["RAK11200", "ESP32-D0WD-V3", "ROM download mode"]),
    "rakflash flash try/rak11200-app.bin --port try/rak11200 --yes": (0, ["RAK11200 1.0.0 → 1.1.0"]),
}

# What the section tells the person to type into the simulator's terminal, by what rakflash says
# when it waits for them (a line of its own: the plan's indented steps only describe it).
KEYS = [(re.compile(r"press the module's reset button now", re.I), "r\n"),
        (re.compile(r"\bhold\b[^.]*\bBOOT0?\b", re.I), "b\nr\n"),
        (re.compile(r"\brelease BOOT0?\b", re.I), "b\n"),
        (re.compile(r"^Let go of BOOT0\b.*\bpress\b"), "b\nr\n")]      # an ESP32: GPIO0 released, reset


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[0] == "rakflash", command
    return [sys.executable, "-m", "rakflash", *words[1:]]


class Sim:
    """A ``rakflash sim`` in its own terminal: its port's link, its standard input for the buttons."""

    def __init__(self, command: str, cwd: Path, env: dict) -> None:
        self.command = command
        self.link = shlex.split(command)[shlex.split(command).index("--link") + 1]
        self.proc = subprocess.Popen(argv(command), cwd=cwd, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.SimpleQueue = queue.SimpleQueue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_line(20)
        assert first.startswith("port: "), (command, first, self.seen)
        assert os.path.islink(cwd / self.link), command

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float) -> str:
        line = self.lines.get(timeout=timeout)
        self.seen.append(line)
        return line

    def type(self, keys: str) -> None:
        for key in keys.splitlines(keepends=True):     # a person types one key, then Enter
            self.proc.stdin.write(key)
            self.proc.stdin.flush()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)          # Ctrl-C
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_as_printed(command: str, cwd: Path, env: dict, sims: dict[str, Sim], timeout: float = 150):
    """Run one command as printed; type into a simulator's terminal what the section says when
    rakflash asks for a button. Returns (exit status, everything it printed)."""
    proc = subprocess.Popen(argv(command), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    words = shlex.split(command)
    ports = [words[i + 1] for i, w in enumerate(words) if w == "--port"]
    sim = sims.get(ports[0]) if ports else None
    lines: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    output: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{command!r} still runs after {timeout} s:\n" + "".join(output)) from None
            if line is None:
                break
            output.append(line)
            for pattern, keys in KEYS:
                if not line[:1].isspace() and pattern.search(line) and sim is not None:
                    sim.type(keys)
                    break
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(output)


def test_every_command_of_the_section_works_as_printed(tmp_path):
    commands = section_commands()
    unknown = [c for c in commands if not c.startswith("rakflash sim ") and c not in EXPECTED]
    assert not unknown, f"commands in the README section this test doesn't know: {unknown}"
    assert set(EXPECTED) <= set(commands), set(EXPECTED) - set(commands)
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("COLUMNS", None)
    # When no later command names a simulator's port, the person is done with it (Ctrl-C).
    last_use = {}
    for i, c in enumerate(commands):
        for w in shlex.split(c):
            last_use[w] = i
    sims: dict[str, Sim] = {}
    try:
        for i, command in enumerate(commands):
            if command.startswith("rakflash sim "):
                sim = Sim(command, tmp_path, env)
                sims[sim.link] = sim
                continue
            code, output = run_as_printed(command, tmp_path, env, sims)
            want_code, words = EXPECTED[command]
            assert code == want_code, f"{command!r} ended {code}, not {want_code}:\n{output}"
            for w in words:
                assert w in output, f"{command!r} did not say {w!r}:\n{output}"
            for link, sim in list(sims.items()):
                if last_use.get(link, -1) <= i:
                    sim.stop()
                    del sims[link]
    finally:
        for sim in sims.values():
            sim.stop()
    report = [json.loads(ln) for ln in (tmp_path / "try" / "report.jsonl").read_text().splitlines()]
    assert [r["result"] for r in report] == ["ok", "ok"], report
    assert {r["port"] for r in report} == {"try/line-1", "try/line-2"}


def test_samples_are_what_they_say_and_keep_their_key(tmp_path):
    """Each sample is what 'inspect' calls a file for its module; the RUI3 package is signed with
    the key written beside it, and running 'samples' again keeps that key (a simulator started
    with it still accepts the new package)."""
    from conftest import cli_json
    from rakflash import dfu_package as dp
    from rakflash import images
    code, out = cli_json("samples", str(tmp_path / "try"))
    assert code == 0
    files = {f["file"]: f for f in out["files"]}
    for name, f in files.items():
        if name.endswith(".pem"):
            continue
        info = images.analyse(images.load(tmp_path / "try" / name))
        assert info.module is not None and info.module.key == f["module"], (name, info.module)
    assert images.load(tmp_path / "try" / "rak11720-app.ota").format == "apollo3-ota"
    assert images.analyse(images.load(tmp_path / "try" / "rak3172-full.hex")).includes_bootloader
    key = (tmp_path / "try" / "dfu-key.pem").read_bytes()
    pkg = dp.load(tmp_path / "try" / "rak4631-r-app.zip")
    init = pkg.application.init
    assert init.signed and dp.verify(init.command_bytes, init.signature, dp.public_key_bytes(key))
    assert cli_json("samples", str(tmp_path / "try"))[0] == 0
    assert (tmp_path / "try" / "dfu-key.pem").read_bytes() == key
