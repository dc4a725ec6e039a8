"""``rakflash udev``: the Linux udev rules for every USB id rakflash knows, and ``--install``."""

from __future__ import annotations

import platform

import click

from .app import main
from .output import emit_json, err, out, reports_errors


@main.command()
@click.option("--install", is_flag=True,
              help="Write the rules to /etc/udev/rules.d/70-rakflash.rules with sudo (it may ask for "
                   "your password) and reload udev; then replug the module.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@reports_errors
def udev(install: bool, as_json: bool) -> None:
    """Print the udev rules that let you open RAK modules' serial ports (Linux).

    One rule per USB id in the catalog: access for the logged-in user, and ModemManager
    kept away. Without --install nothing is written: 'rakflash udev | sudo tee
    /etc/udev/rules.d/70-rakflash.rules' does the same by hand.
    """
    from .. import udev as _udev
    system = platform.system()
    if not install:
        text = _udev.rules()
        if as_json:
            emit_json({"rules": text, "path": _udev.RULES_PATH, "installed": False})
        else:
            click.echo(text, nl=False)
            if system != "Linux":
                err.print(f"(udev is Linux's: {system} needs none of these to open a serial port)")
        return
    step = None if as_json else (lambda c: err.print(f"running: {c}", markup=False, highlight=False))
    done = _udev.install(system, on_step=step)
    if as_json:
        emit_json({"result": "ok", "error": None, "path": _udev.RULES_PATH, "installed": True,
                   "commands": done})
        return
    out.print(f"[green]done[/]: the rules are in {_udev.RULES_PATH} and udev has reloaded them; "
              f"unplug the module and plug it in again.")
