"""Shared by the web tests: a `rakflash web` server on loopback beside virtual modules.

The web extra (Starlette, uvicorn) and the browser are optional on a developer's
machine — the tests skip without them — but not in CI: .ci/run sets
RAKFLASH_REQUIRE_PEERS, and then a missing piece fails the run instead.
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path

import pytest

REQUIRED = bool(os.environ.get("RAKFLASH_REQUIRE_PEERS"))
OLD = "RUI_4.0.5_RAK3172-E"
NEW = "RUI_4.0.6_RAK3172-E"


def need(module: str, why: str):
    """Import ``module``; skip the test without it (fail in CI)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if REQUIRED:
            pytest.fail(f"{module} is missing ({why}); .ci/run installs it with pip install -e '.[test]'")
        pytest.skip(f"{module} is not installed ({why}): pip install -e '.[test]'")


@pytest.fixture
def web():
    """Factory: web(*virtual_modules, **WebServer kwargs) -> a started WebServer (stopped after the test)."""
    need("starlette", "the web extra")
    need("uvicorn", "the web extra")
    from rakflash.web.server import WebServer
    servers = []

    def start(*virtual, **kw):
        server = WebServer(virtual=list(virtual), **kw).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def firmware_file(path: Path, cat, module: str = "rak3172", version: str = NEW, size: int = 16 * 1024) -> Path:
    """A firmware .bin as the vendor ships it, with ``version`` inside."""
    from rakflash.sim import firmware
    path.write_bytes(firmware.app_image(cat.module(module), version, size))
    return path


def wait_for(condition, timeout: float = 30.0, what: str = "the condition"):
    """Poll ``condition()`` until it is truthy (returned) or the deadline passes (assertion error)."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
