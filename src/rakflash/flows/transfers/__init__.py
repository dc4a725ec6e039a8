"""Serial transfers: from the catalog's protocol name to the module that sends a planned image.

The update flow (:mod:`rakflash.flows.update`) does the same steps for every
module — enter the bootloader, transfer, confirm the new version, check the
settings — and only the transfer differs. Each transfer module here knows, for
its protocol, what the plan should say it will do, the least time it can take
on a link (for ``--dry-run`` and the benchmarks), and how to send a plan's
payload over a link whose bootloader is ready, reporting progress as events.

Adding a protocol is one new module in this package and one entry in
:data:`TRANSFERS`.
"""

from __future__ import annotations

from . import amota, esp_rom, legacy_dfu, nordic_dfu, ymodem
from .base import Transfer

TRANSFERS: dict[str, Transfer] = {
    "ymodem": ymodem.TRANSFER,
    "amota": amota.TRANSFER,
    "nordic-dfu": nordic_dfu.TRANSFER,
    "legacy-dfu": legacy_dfu.TRANSFER,
    "esptool": esp_rom.TRANSFER,        # ESP32 modules: the whole session (flows/esp_update.py), through esptool
}


def for_protocol(name: str) -> Transfer | None:
    """The transfer for a catalog protocol name, or None when rakflash has none."""
    return TRANSFERS.get(name)


def running_whole_session(module, image, link) -> Transfer | None:
    """The transfer that runs a whole flash session itself (its ``claims`` says so for this module,
    image or port: an ESP chip, identified through its ROM), or None for the AT-identified modules."""
    for transfer in TRANSFERS.values():
        claims = getattr(transfer, "claims", None)
        if claims is not None and claims(module, image, link):
            return transfer
    return None


__all__ = ["TRANSFERS", "Transfer", "for_protocol", "running_whole_session"]
