"""The ``rakflash`` command line: a thin layer over the Python API.

One module per command (``inspect``, ``ports``, ``modules``, ``info``,
``flash``, ``sim``, ``demo`` …), each parsing its arguments, calling the API
and rendering the result as text for people or JSON (``--json``) for machines.
Shared pieces: :mod:`.app` (the command group), :mod:`.options` (option types
and common options), :mod:`.output` (error reporting, JSON, and the renderers
of the event stream). Errors from :mod:`rakflash.errors` become one ``error:``
line and one ``hint:`` line (or a JSON object) and the documented exit code;
never a traceback.
"""

from __future__ import annotations

from . import (  # noqa: F401,E402  (each registers its command)
    convert,
    demo,
    doctor,
    flash,
    info,
    info0,
    inspect,
    keys,
    modules,
    ports,
    probes,
    provision,
    recover,
    samples,
    settings_files,
    sim,
    udev,
    web,
)
from .app import main

__all__ = ["main"]
