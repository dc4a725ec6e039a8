"""A Cortex-M vector table's first two words: the initial stack pointer and the reset handler.

Every chip rakflash writes is a Cortex-M, whose firmware starts with its vector table
(ARMv7-M Architecture Reference Manual B1.5.3, ARMv6-M B1.5.3): :mod:`rakflash.images`
tells a firmware's chip and module by it, :mod:`rakflash.dfu_package` where a package's
application is linked, the plan and the simulator whether an application would start.
"""

from __future__ import annotations

import struct


def vector_at(data: bytes, offset: int) -> tuple[int, int] | None:
    """(initial SP, reset handler address) from a Cortex-M vector table at ``offset``."""
    if len(data) < offset + 8:
        return None
    sp, reset = struct.unpack_from("<II", data, offset)
    if sp in (0, 0xFFFFFFFF) or reset in (0, 0xFFFFFFFF) or not reset & 1:
        return None  # erased flash, or not a Thumb reset vector
    return sp, reset & ~1
