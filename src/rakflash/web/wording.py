"""The next step in the page's own words.

The flows' hints speak to a person at a terminal ("run the same command again",
"rakflash flash FILE --port P", "--force"). On the page the same next step is a
button or a place on the page ("press Check the plan again", "pick the port in
the list above", "Options → Module"). This module adds ``page_hint`` (what to do
here) and ``page_action`` (the button that does it, if one does) to a result,
an error or a doctor finding; the CLI's own words stay in ``hint`` / ``next`` /
``command``, which the page shows folded under "on the command line".

Nothing here decides anything: it only re-words what a flow already decided.
"""

from __future__ import annotations

import re
from typing import Any

# Buttons the page has for a next step (app.js draws them):
#   check-again — "Check the plan again" (the same ports, the file on the page)
#   recover     — "Recover instead…" (write the file past the serial bootloader)
#   identify    — "Identify" in the port's row
CHECK_AGAIN, RECOVER, IDENTIFY = "check-again", "recover", "identify"

_CABLE = ("Check the cable and the module's power, then press Check the plan again and Flash: a "
          "module cut off mid-update waits in its bootloader, and the update finishes from there.")
_PORT_LIST = ("Look in the port list above (it is kept up to date): pick the module's port there — after "
              "a re-plug or a reset a native-USB module may have a new name — then press Check the plan again.")
_FULL_IMAGE = ("Drop the vendor's full image (bootloader included, e.g. the _final.hex / FULL.hex) in step 2, "
               "then use Recover instead…: it writes past the serial bootloader and names the pins to use.")

# What to do on the page after an error or a result, by its name (a flash's or a recovery's).
_BY_RESULT: dict[str, tuple[str | None, str | None]] = {
    "interrupted": ("The module waits in its bootloader if writing had begun: press Check the plan "
                    "again, then Flash, to finish the update.", CHECK_AGAIN),
    "aborted": ("Nothing was written. Press Check the plan again when you want to update.", CHECK_AGAIN),
    "transfer-timeout": (_CABLE, CHECK_AGAIN),
    "too-many-retries": (_CABLE, CHECK_AGAIN),
    "transfer-cancelled": (_CABLE, CHECK_AGAIN),
    "transfer-error": (_CABLE, CHECK_AGAIN),
    "device-restarted": (_CABLE, CHECK_AGAIN),
    "port-disconnected": ("The module's port went away mid-way: plug it in again, pick its port in the "
                          "list above, and press Check the plan again — the update finishes from where "
                          "the module waits.", CHECK_AGAIN),
    "port-not-found": (_PORT_LIST, None),
    "port-not-back": (_PORT_LIST, None),
    "port-error": ("This is not a port the module answers on: pick another one in the list above.", None),
    "permission-denied": (None, None),        # an OS matter: the CLI's words are the page's too
    "port-busy": (None, None),
    "bootloader-too-old": (_FULL_IMAGE, RECOVER),
    "touches-bootloader": ("This file includes a bootloader, which the serial bootloader can't write. "
                           + _FULL_IMAGE.split(", then ", 1)[1].capitalize(), RECOVER),
    "module-uncertain": ("Pick the module under Options → Module (the label on the module says which), "
                         "then press Check the plan again.", CHECK_AGAIN),
    "already-up-to-date": ("Nothing to do. To write it again anyway, tick \u201cWrite even if the same "
                           "version runs\u201d under Options, then press Check the plan again.", CHECK_AGAIN),
    "boot-entry-failed": ("Press Check the plan again and press the module's reset button when the page "
                          "asks; if the firmware never lets the boot command in, drop a full image and "
                          "use Recover instead…", CHECK_AGAIN),
    "no-handshake": ("Hold BOOT0 (BOOT on a RAK11720) high, press the module's reset, and press Check "
                     "the plan again within the countdown.", CHECK_AGAIN),
    "rom-silent": ("Keep BOOT0 held high, press reset, and press Check the plan again: the recovery "
                   "starts over and writes the whole image.", CHECK_AGAIN),
    "rom-nack": ("Keep BOOT0 held high, press reset, and press Check the plan again: the recovery starts "
                 "over and writes the whole image.", CHECK_AGAIN),
    "rom-garbled": ("Keep BOOT0 held high, press reset, and press Check the plan again: the recovery "
                    "starts over and writes the whole image.", CHECK_AGAIN),
    "verify-failed": ("The module answered after the update but not with the new version: press Identify "
                      "in its row to see what runs, then Check the plan again.", IDENTIFY),
    "no-response": ("Nothing answered on this port: check the wiring and power, press Identify in the "
                    "port's row, or Doctor for what to check.", IDENTIFY),
    # Keys and settings (the Keys panel): its buttons are the way to try again.
    "setting-refused": ("Check the value against the module's band (a data rate or TX power that band "
                        "doesn't have), correct it in the settings file, and press Apply settings… again: "
                        "what was applied before it stays.", None),
    "setting-not-applied": ("Check the cable and press Apply settings… again: it writes what still differs.",
                            None),
    "port-locked": ("The module's AT port is locked with a password, which the page does not ask for: "
                    "use the command line with --password (below).", None),
}
for _name in ("wrong-target", "image-too-large", "image-format", "image-empty", "image-target",
              "image-error", "image-not-a-file", "package-error", "package-mismatch", "not-supported"):
    _BY_RESULT.setdefault(_name, ("Drop the right firmware file for this module in step 2: the plan is "
                                  "checked again before anything is written.", None))

# Doctor's findings, by code: what to do about each on the page.
_BY_FINDING: dict[str, tuple[str, str | None]] = {
    "application": ("Drop the firmware file in step 2 and pick this port: the plan is checked before "
                    "anything is written.", None),
    "in-bootloader": ("Drop the firmware file in step 2 and pick this port: the update finishes it.", None),
    "flooding": ("Drop the fixed firmware in step 2 and pick this port: the page asks you to press the "
                 "module's reset button at the right moment.", None),
    "image-fits": ("Pick this port (the file is on the page): the plan is checked, then Flash writes it.", None),
    "already-up-to-date": ("Nothing to do: this version already runs.", None),
    "rom-bootloader": ("Write the full image now: drop it in step 2, pick this port, and use Recover "
                       "instead…; or let go of BOOT0 and press reset to run the firmware.", RECOVER),
    "apollo3-sbl": ("Write the full image now: drop it in step 2, pick this port, and use Recover "
                    "instead…; or let go of BOOT and press reset to run the firmware.", RECOVER),
    "bootloader-too-old": (_FULL_IMAGE, RECOVER),
    "touches-bootloader": (_FULL_IMAGE, RECOVER),
    "port-moved": (_PORT_LIST, None),
    "port-not-found": (_PORT_LIST, None),
    "module-uncertain": ("Pick the module under Options → Module (the label on the module says which).", None),
}

# Whole-phrase re-wordings of a CLI hint that has no entry above: option names become the
# page's own boxes, commands become its buttons.
_PHRASES = [
    (r"run the same command again", "press Check the plan again"),
    (r"[Rr]un '?rakflash ports'?", "look in the port list above"),
    (r"'?rakflash flash'? finishes the job", "Check the plan again and Flash finish the job"),
    (r"--force", "\u201cWrite even if…\u201d under Options"),
    (r"--module(?: [A-Za-z0-9-]+)?", "Options → Module"),
    (r"--baud(?: \d+| RATE)?", "Options → Baud rate"),
    (r"--reset-window(?: \d+)?", "Options → Wait for a reset press"),
    (r"--reset-with(?: rts\|dtr| rts| dtr)?", "Options → Reset line"),
    (r"--remove-readout-protection", "Options → remove the protection"),
]
_COMMAND = re.compile(r"'?rakflash [a-z0-9-]+[^'.;]*'?")
# Words meant for a terminal: a command, an option, "the same command".
_TERMINAL = re.compile(r"rakflash [a-z]|(?<![\w-])--[a-z]|same command|stm32flash|pyocd|nrfutil")


def _reword(text: str) -> str:
    for pattern, words in _PHRASES:
        text = re.sub(pattern, words, text)
    return text


def for_page(data: dict[str, Any], kind: str = "flash") -> dict[str, Any]:
    """``data`` (a job's result, or an error as the API returns it) with ``page_hint`` and
    ``page_action``: what to do on the page, in its words. ``kind``: "flash", "recover" or
    "fleet" — a recovery's re-run is its own button."""
    name = data.get("error") or data.get("result")
    hint = data.get("hint")
    if not name or name == "ok" or not (hint or name in _BY_RESULT):
        return data
    words, action = _BY_RESULT.get(name, (None, None))
    if action is None and not (hint and _TERMINAL.search(hint)):
        return data                           # no button to offer, and its words do for the page
    if name == "interrupted" and kind == "recover":
        words = ("Keep BOOT0 held high (BOOT on a RAK11720) and press Check the plan again, then "
                 "Recover: the recovery writes the whole image again.")
    if words is None:
        words = _reword(hint) if hint else None
        if words is not None and _COMMAND.search(words):
            words = _COMMAND.sub("the same from the page", words)
    return {**data, "page_hint": words, "page_action": action}


def finding_for_page(finding: dict[str, Any]) -> dict[str, Any]:
    """A doctor finding with ``page_next`` / ``page_action``: its next step on the page."""
    nxt = finding.get("next") or ""
    if not (_COMMAND.search(nxt) or finding.get("command")):
        reworded = _reword(nxt)               # no command in it: its words do for the page
        return {**finding, "page_next": reworded if reworded != nxt else None, "page_action": None}
    words, action = _BY_FINDING.get(finding.get("code") or "", (None, None))
    return {**finding, "page_next": words, "page_action": action}


def report_for_page(report: dict[str, Any]) -> dict[str, Any]:
    """Doctor's report with each finding's page wording."""
    return {**report, "findings": [finding_for_page(f) for f in report.get("findings", [])]}
