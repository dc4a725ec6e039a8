"""``rakflash web``: a local web page that does what the CLI does.

A thin layer, like :mod:`rakflash.cli`: the page (plain HTML/CSS/JS in
``static/``, no build step) calls a small JSON API (:mod:`.server`) whose
handlers call the same flows as the commands (:mod:`.operations`); updates run
as server-side jobs (:mod:`.jobs`) that outlive the browser tab and report the
typed event stream to the page as server-sent events. Only this run's page may
use the server (:mod:`.guard`).

Needs the optional ``web`` extra (Starlette and uvicorn): ``pip install 'rakflash[web]'``.
"""

from __future__ import annotations

__all__ = ["WebServer"]


def __getattr__(name: str):
    if name == "WebServer":
        from .server import WebServer
        return WebServer
    raise AttributeError(name)
