"""Virtual RAK modules on pseudo-terminals or TCP ports: ``rakflash sim`` and the test suite's devices."""

from .device import Mode, SimOptions, VirtualModule
from .modules import create
from .uart import Faults, Rewrite

__all__ = ["Mode", "SimOptions", "VirtualModule", "Faults", "Rewrite", "create"]
