"""``rakflash doctor``: what is wrong with a module, and what to type next.

The public names, for the CLI, the web page and the tests; see :mod:`.rules`.
"""

from .rules import (BUDGET, LEVELS, RULES, Finding, Observation, Report, diagnose, examine,
                    findings_for, permission_advice)

__all__ = ["BUDGET", "LEVELS", "RULES", "Finding", "Observation", "Report", "diagnose", "examine",
           "findings_for", "permission_advice"]
