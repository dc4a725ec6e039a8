"""The ``rakflash`` command group; every command module registers itself on :data:`main`."""

from __future__ import annotations

import sys
from typing import Any, Sequence

import click

from .. import __version__
from ..errors import Aborted
from .options import verbosity_options
from .output import emit_json, err, prepare_streams, read_only_command


class _Rakflash(click.Group):
    """The command group; a usage error under ``--json`` is a JSON line too."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        # (standalone_mode is taken and left out: this method ends usage errors itself)
        prepare_streams()
        argv = args or sys.argv[1:]
        if any(a in ("-h", "--help", "--version") for a in argv):
            read_only_command()      # help read through '| head' ends quietly too
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            argv = args or sys.argv[1:]
            if "--json" in argv:
                emit_json({"result": "usage", "error": "usage", "message": exc.format_message(),
                           "hint": "See 'rakflash COMMAND --help'."})
            else:
                # One line, like every other error: what is wrong, and where the options are.
                ctx = getattr(exc, "ctx", None)
                where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                err.print(f"error: {exc.format_message().rstrip('.')}{where}.", markup=False)
            sys.exit(exc.exit_code)
        except click.Abort:
            err.print("aborted")
            sys.exit(Aborted.exit_code)


@click.group(cls=_Rakflash, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rakflash")
@verbosity_options
def main() -> None:
    """Firmware update and recovery for RAKwireless LoRa modules."""
