"""``doctor`` for the ESP32 modules (RAK3112 family, RAK11200): the rules for what the chip said
in its ROM download mode, and what to type next.

An ESP chip has no console rakflash knows: :func:`~.observe.examine` asks it in its ROM download
mode through esptool (:func:`rakflash.flows.esp_update.examine`), which a reset over RTS/DTR
reaches (the S3's USB Serial/JTAG, an adapter with the auto-reset circuit) — and then resets back
into its firmware — or a person holding GPIO0 at reset (doctor never asks for that: it says so).
These rules replace the AT modules' for such a port (:func:`rules_for`); the port's own (busy,
gone, out of time) stay.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Callable

from ... import catalog as _catalog
from ...catalog import Module
from ...errors import AlreadyUpToDate, BootEntryFailed
from .report import Finding

if TYPE_CHECKING:
    from .observe import Observation

Rule = Callable[["Observation"], "Finding | None"]
ESP_RULES: list[Rule] = []
PORT_RULES = ("port_vanished", "out_of_time")      # the generic rules that still apply to such a port


def esp_rule(fn: Rule) -> Rule:
    ESP_RULES.append(fn)
    return fn


def _module(o: Observation) -> Module | None:
    if o.device is not None and o.device.module is not None and o.device.module.esp is not None:
        return o.device.module
    if o.module is not None and o.module.esp is not None:
        return o.module
    entry = o.entry
    mod = _catalog.load().modules.get(entry.module) if entry is not None and entry.module else None
    if mod is not None and mod.esp is not None:
        return mod
    return None


def is_esp(o: Observation) -> bool:
    return o.esp or (o.device is not None and o.device.chip is not None)


def rules_for(o: Observation, generic: list[Rule]) -> list[Rule]:
    """The rules for ``o``: an ESP chip's, and the port's own; else the AT modules' (``generic``)."""
    if not is_esp(o):
        return generic
    return [r for r in generic if r.__name__ in PORT_RULES] + ESP_RULES


def _q(text: str) -> str:
    return shlex.quote(text)


def _flash(o: Observation, file: str | None = None) -> str:
    return f"rakflash flash {_q(file or o.image_path or 'FIRMWARE.bin')} --port {_q(o.port or 'PORT')}"


@esp_rule
def unreachable(o: Observation):
    e = o.identify_error
    if not isinstance(e, BootEntryFailed):
        return None
    module = _module(o)
    pin = module.rom_access.get("boot0", "GPIO0") if module else "GPIO0 (BOOT)"
    reset = module.rom_access.get("reset", "the reset button") if module else "the reset button"
    return Finding("download-mode-failed", "problem",
                    f"the {module.name if module else 'ESP'} chip on {o.port} does not answer in its ROM "
                    f"download mode", "no RTS/DTR line reached it (a RAK11200 on its WisBlock base has no "
                    "reset circuit, a port without modem lines has none) and GPIO0 was not held low at its "
                    "last reset; its firmware answers no AT command",
                    f"Hold {pin} low (to GND), press {reset}, and check again — or update it now: "
                    f"'rakflash flash' asks you for that and waits:", _flash(o), port=o.port, exit_code=5,
                    details={"pin": pin})


@esp_rule
def chip_answers(o: Observation):
    dev = o.device
    if dev is None or dev.chip is None:
        return None
    chip = dev.chip
    name = dev.module.name if dev.module else chip["chip"]
    flash = f"{chip['flash_size'] >> 20} MB flash" if chip["flash_size"] else "flash of unknown size"
    runs = (f"its flash holds {chip['app']['project_name']!r} {chip['app']['version']}" if chip["app"]
            else "its flash holds no app the bootloader can start")
    what = f"{name}: {chip['description']}, MAC {chip['mac']}, {flash}; {runs}"
    if dev.mode == "rom":
        nxt = ("It waits in its ROM download mode (GPIO0 was held low at its last reset): let go of "
               "GPIO0 and press reset to run its firmware" + ("." if o.image is not None else
                                                                "; or update it now:"))
        return Finding("esp-download-mode", "action", what,
                        "the chip's ROM answers instead of its firmware until the next reset with GPIO0 "
                        "high", nxt, None if o.image is not None else _flash(o), port=o.port,
                        details={"chip": chip["chip"], "mac": chip["mac"]})
    return Finding("esp-chip", "ok", what,
                    "the chip's ROM answered after a reset over RTS/DTR, and its firmware runs again",
                    "The firmware check is the other finding for this port." if o.image is not None
                    else "To update it (doctor --for FILE checks a firmware first):",
                    None if o.image is not None else _flash(o), port=o.port,
                    details={"chip": chip["chip"], "mac": chip["mac"]})


@esp_rule
def no_firmware(o: Observation):
    dev = o.device
    if dev is None or dev.chip is None or dev.chip["app"]:
        return None
    table = dev.chip["partition_table"]
    why = ("there is no partition table at 0x8000" if table is None else
           "the first app partition holds no valid app image")
    return Finding("esp-no-firmware", "action",
                    f"the {dev.module.name if dev.module else dev.chip['chip']} has no firmware to run: {why}",
                    "a new RAK3112 leaves the factory without firmware; an app alone needs the partition "
                    "table and bootloader that only a merged binary (or a first write of all three) brings",
                    "Write a merged binary (bootloader, partition table and app):",
                    _flash(o, o.image_path or "MERGED.bin"), port=o.port)


@esp_rule
def partition_table_problem(o: Observation):
    dev = o.device
    if dev is None or dev.chip is None or not dev.chip["partition_table_problems"] or dev.chip["partition_table"] is None:
        return None
    first = dev.chip["partition_table_problems"][0]
    return Finding("esp-partition-table", "action", f"the partition table on {o.port}: {first}",
                    "the bootloader reads it at every start: a partition past the flash or overlapping "
                    "another is where updates and data go wrong",
                    "Write a merged binary with a table for this flash:", _flash(o, "MERGED.bin"),
                    port=o.port)


@esp_rule
def image_fits(o: Observation):
    p = o.esp_plan
    if p is None:
        return None
    where = "; ".join(f"{len(d):,} bytes at {a:#x}" for a, d in p.parts)
    notes = "".join(f"; note: {n}" for n in p.notes)
    return Finding("image-fits", "ok",
                    f"{o.image_path} fits: {p.app_version or p.image.image.format} for the {p.chip.name} "
                    f"({where}){notes}",
                    f"nothing stands in the way: esptool's stub writes it, about "
                    f"{p.estimate_seconds():.0f} s", "Write it:", _flash(o), port=o.port,
                    details={"notes": p.notes})


@esp_rule
def image_already_there(o: Observation):
    if not isinstance(o.plan_error, AlreadyUpToDate):
        return None
    return Finding("already-up-to-date", "ok", o.plan_error.message,
                    "writing the same bytes again changes nothing", "Nothing to do; to write it anyway:",
                    _flash(o) + " --force", port=o.port)


@esp_rule
def image_refused(o: Observation):
    e = o.plan_error
    if e is None or isinstance(e, AlreadyUpToDate):
        return None
    hint = (e.hint or "").replace("--port PORT", f"--port {_q(o.port or 'PORT')}")
    return Finding(e.name, "problem", e.message,
                    "flash would refuse it before writing anything", hint,
                    f"rakflash inspect {_q(o.image_path or 'FIRMWARE.bin')}", port=o.port,
                    exit_code=e.exit_code)
