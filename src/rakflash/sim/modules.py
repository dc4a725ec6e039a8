"""The concrete virtual modules, one class per module family."""

from __future__ import annotations

from .. import catalog
from .device import Rui3Module, RuiV3Module, SimOptions, VirtualModule


class Rak3172(Rui3Module):
    """RAK3172 (STM32WLE5): RUI3 app, RUI bootloader, YMODEM update."""


class Rak811(RuiV3Module):
    """RAK811 / RAK4270 (STM32L1/L0): RUI v3 app, bootloader with YMODEM update."""


MODULES: dict[str, type[VirtualModule]] = {
    "rak3172": Rak3172,
    "rak811": Rak811,
    "rak4270": Rak811,
}


def create(name: str, options: SimOptions | None = None) -> VirtualModule:
    """A virtual module by catalog name (not started yet)."""
    module = catalog.load().module(name)
    if module.key not in MODULES:
        raise KeyError(f"no virtual {module.name} yet (have: {', '.join(sorted(MODULES))})")
    return MODULES[module.key](module, options)
