"""Which serial ports may have a RAK module behind them.

``rakflash flash --all`` writes to them and ``rakflash doctor`` (without
``--port``) checks them: ports whose USB ids the catalog knows as a module's
own (RAK4631's native USB) or as a USB-UART bridge a bare module sits behind
(CH340, CP210x, FT232). A SWD probe's COM port and ports with ids the catalog
doesn't know (a built-in ``ttyS0``, a 3D printer) are left alone: rakflash
sends nothing to a device it has no reason to think is a module.
"""

from __future__ import annotations

from .. import catalog as _catalog
from ..ports import PortEntry, list_serial_ports


def may_be_module(entry: PortEntry, cat: _catalog.Catalog | None = None) -> bool:
    """Whether ``entry``'s USB ids are a module's or a USB-UART bridge's."""
    if entry.vid is None:
        return False
    usb = (cat or _catalog.load()).usb(entry.vid, entry.pid)
    return usb is not None and usb.kind in ("module", "bridge")


def module_ports(entries: list[PortEntry] | None = None) -> list[PortEntry]:
    """The ports (of ``entries``, default: all the OS lists) that may have a module behind them."""
    cat = _catalog.load()
    entries = list_serial_ports() if entries is None else entries
    return [e for e in entries if may_be_module(e, cat)]
