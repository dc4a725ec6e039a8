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

from . import amota, legacy_dfu, nordic_dfu, ymodem
from .base import Transfer

TRANSFERS: dict[str, Transfer] = {
    "ymodem": ymodem.TRANSFER,
    "amota": amota.TRANSFER,
    "nordic-dfu": nordic_dfu.TRANSFER,
    "legacy-dfu": legacy_dfu.TRANSFER,
}


def for_protocol(name: str) -> Transfer | None:
    """The transfer for a catalog protocol name, or None when rakflash has none."""
    return TRANSFERS.get(name)


__all__ = ["TRANSFERS", "Transfer", "for_protocol"]
