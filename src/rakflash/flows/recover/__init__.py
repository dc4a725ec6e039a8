"""Recovery: write a full image (bootloader included) past a serial bootloader that can't help.

The steps every recovery takes — check the image, plan, ask what runs, guide the
person, connect, write, verify, start, ask again — are written once in
:mod:`.base`; what differs is how the chip is reached and written, one module per
*recovery method*, found by its name (the catalog's ``recovery`` list, ``--via``)
through one table, :data:`METHODS`.

Adding a method is one new module in this package (a
:class:`~.base.RecoveryMethod` subclass) and one entry in :data:`METHODS`.
"""

from __future__ import annotations

from .base import (
                   METHODS,
                   RecoveryMethod,
                   RecoveryOptions,
                   RecoveryPlan,
                   RecoveryResult,
                   Session,
                   check_image,
                   combine,
                   default_method,
                   interrupted_hint,
                   method_for,
                   plan_recovery,
                   recover,
)

__all__ = ["METHODS", "RecoveryMethod", "RecoveryOptions", "RecoveryPlan", "RecoveryResult", "Session",
           "check_image", "combine", "default_method", "interrupted_hint", "method_for",
           "plan_recovery", "recover"]
