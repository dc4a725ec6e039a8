"""``rakflash doctor``: what is wrong with a module, and what to type next.

Two steps, kept apart so each reads on its own, each in its own file:

1. :func:`~.observe.examine` (``observe.py``) looks at one port and writes down what it
   saw in an :class:`~.observe.Observation`: whether the port opens (and who else holds
   it), what answers at which baud rate (and the raw bytes heard), whether the port went
   away meanwhile, and — given an image (``--for FILE``) — the update plan or the refusal
   (``image_check.py``). It never writes firmware. Two things it does change, both undone
   or harmless: identification ends a transfer session an interrupted update left open,
   and to check a firmware against a bootloader the application can't name (RUI v3), it
   starts the bootloader for a moment, asks its version and starts the application again.
2. :data:`~.rules.RULES` (``rules.py``, the rule book) turn an observation into
   :class:`~.report.Finding`\\ s. Each rule is a short function: when it applies, it says
   the finding, why it matters and the next command (worded by ``commands.py``).

:func:`~.run.diagnose` (``run.py``) puts them together: every port examined side by side,
each within :data:`~.observe.BUDGET` seconds (its link stops itself at that deadline, see
:class:`~rakflash.stoppable.StoppableLink`), the rules applied, one :class:`~.report.Report`.
Typical: about a second for a module that answers (most of it waiting for an STM32 ROM
bootloader's answer to its handshake), about six seconds for a silent port (every catalog
baud rate is tried).
"""

from .observe import BUDGET, Observation, examine
from .report import LEVELS, Finding, Report
from .rules import RULES, permission_advice
from .run import diagnose, findings_for

__all__ = ["BUDGET", "LEVELS", "RULES", "Finding", "Observation", "Report", "diagnose", "examine",
           "findings_for", "permission_advice"]
