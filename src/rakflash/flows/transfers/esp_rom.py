"""The ``esptool`` entry of the transfer table: ESP32 modules (RAK3112, RAK3212, RAK3312, RAK11200).

An ESP module's whole flash session runs in :mod:`rakflash.flows.esp_update` (even identifying
the chip goes through its ROM download mode, :mod:`rakflash.flows.esp_chip`); this entry gives
what planning and the renderers ask of a transfer — its steps and its time — and ``claims``,
which tells ``FlashSession`` that a module, file or port is an ESP chip's.
"""

from __future__ import annotations

import zlib
from typing import Any

from ...catalog import Module
from ..esp_chip import ROM_BAUD, STUB_BYTES, claims

# ------------------------------------------------------------------ the transfer

class EspRomTransfer:
    """The ``esptool`` entry of :data:`~rakflash.flows.transfers.TRANSFERS` (the session itself:
    :func:`rakflash.flows.esp_update.run`)."""

    name = "esptool"
    reports_phases = True
    claims = staticmethod(claims)

    def steps(self, plan: Any) -> list[str]:      # an esp_update.EspPlan
        m = plan.module
        how = {"usb-serial-jtag": "esptool's USB Serial/JTAG reset (RTS/DTR on the chip's own USB)",
               "hold-boot": f"esptool's RTS/DTR reset, else you hold {m.rom_access.get('boot0', 'GPIO0')} "
                            f"low and press {m.rom_access.get('reset', 'reset')}"}[m.esp_fact("reset")]
        writes = "; ".join(f"{len(d):,} bytes at {a:#x}" for a, d in plan.parts)
        return [f"enter the {plan.chip.name}'s ROM download mode: {how}",
                "run esptool's flasher stub (it answers OHAI), "
                + (f"{plan.baud} baud" if plan.baud != ROM_BAUD else "at the ROM's rate"),
                f"write, compressed, erasing as it goes: {writes}",
                "verify: the chip computes the MD5 of each region; it must be the image's",
                "start the new firmware (esptool's hard reset, or you let go of GPIO0 and reset) and "
                f"read {plan.app_version or 'its version'} from its boot log"]

    def minimum_seconds(self, module: Module, payload, baud: int, latency: float) -> float:
        """Stub upload at the ROM's rate, the compressed image at ``baud`` in 16 KiB blocks (a
        turnaround each), the flash's erase (64 KiB blocks) and programming, the chip's MD5."""
        data = payload if isinstance(payload, (bytes, bytearray)) else b"\0" * int(payload)
        native = module.esp_fact("reset") == "usb-serial-jtag"
        line = 1_216_000 if native else baud / 10            # bytes per second on the wire
        rom_line = 1_216_000 if native else ROM_BAUD / 10
        compressed = len(zlib.compress(bytes(data), 1))
        blocks = -(-compressed // 0x4000)
        erase = -(-len(data) // 0x10000) * 0.15
        program = -(-len(data) // 256) * 0.0006
        return (STUB_BYTES / rom_line + compressed / line + blocks * 2 * latency
                + erase + program + len(data) / 5e6)

    def send(self, link, plan, emit):
        raise NotImplementedError("an ESP module's session runs whole: rakflash.flows.esp_update.run")


TRANSFER = EspRomTransfer()
