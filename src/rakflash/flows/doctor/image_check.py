"""Doctor's image check (``--for FILE``): the plan ``flash`` would make for the file on the
module doctor found, or the refusal — the same check ``flash`` makes, nothing written.

RUI v3 applications don't tell their bootloader's version; when the firmware needs a
recent bootloader, the check starts the bootloader for a moment, asks it, and starts the
application again (what was read, and whether the application runs again, is written down
in the observation for the rules to report).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...catalog import version_tuple
from ...errors import BootloaderTooOld, RakflashError
from ...stoppable import StoppableLink
from .. import boot
from ..plan import check_compatibility
from ..planning import make_plan

if TYPE_CHECKING:
    from .observe import Observation


def check_image(link: StoppableLink, o: Observation) -> None:
    """The plan ``flash`` would make, or its refusal; reads a bootloader version the app can't tell."""
    dev = o.device
    assert dev is not None and o.image is not None     # examine() checks an image only on a module it found
    try:
        o.plan = make_plan(o.image, dev, module=o.module)
    except RakflashError as exc:      # a refusal (PlanRefused), or an image that doesn't fit the module
        o.plan_error = exc
        return
    plan = o.plan
    rule_applies = [r for r in plan.module.rules if plan.app_version
                    and version_tuple(plan.app_version) >= version_tuple(r.firmware_min)]
    if not rule_applies or dev.bootloader_version or dev.mode != "app":
        return
    # RUI v3 applications don't tell their bootloader's version, and this firmware
    # needs a recent one: ask the bootloader itself, then start the application again.
    if not boot.request_boot(link, plan.module):
        return
    o.peeked = boot.bootloader_version(link, plan.module)
    o.peek_left_app = boot.leave_bootloader(link, plan.module)
    try:
        check_compatibility(plan.module, plan.app_version, o.peeked)
    except BootloaderTooOld as exc:
        o.plan, o.plan_error = None, exc
