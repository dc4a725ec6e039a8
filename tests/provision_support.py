"""Helpers of the production tests (issue 21): batch files, and a PostgreSQL database per test."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

REQUIRED = os.environ.get("RAKFLASH_REQUIRE_PEERS") == "1"
POSTGRES_URL = os.environ.get("RAKFLASH_POSTGRES_URL")


def rows(n: int, *, bound: dict[int, str] | None = None) -> list[dict]:
    """``n`` rows of fresh, random keys; ``bound`` maps a row index to a serial number."""
    bound = bound or {}
    return [{"DevEUI": "AC1F09FFFE" + secrets.token_hex(3).upper(), "AppEUI": "AC1F09FFF9153172",
             "AppKey": secrets.token_hex(16).upper(), "serial_number": bound.get(i, "")} for i in range(n)]


def write_batch(path: Path, batch_rows: list[dict], *, delimiter: str = ",") -> Path:
    header = ["DevEUI", "AppEUI", "AppKey", "serial_number"]
    lines = [delimiter.join(header)] + [delimiter.join(r[h] for h in header) for r in batch_rows]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def postgres_database():
    """Factory: a fresh, empty database on the test cluster (.ci/postgres starts it); its URL.
    Skips outside CI, fails under RAKFLASH_REQUIRE_PEERS=1 when there is none; dropped after the test."""
    made: list[str] = []

    def make() -> str:
        if not POSTGRES_URL:
            reason = ("no PostgreSQL to test the shared ledger on: RAKFLASH_POSTGRES_URL is not set "
                      "(.ci/run starts a throwaway cluster and sets it)")
            if REQUIRED:
                pytest.fail(reason)
            pytest.skip(reason)
        try:
            import psycopg
        except ImportError:
            if REQUIRED:
                pytest.fail("psycopg is not installed (pip install 'rakflash[postgres]')")
            pytest.skip("psycopg is not installed (pip install 'rakflash[postgres]')")
        name = "rakflash_test_" + secrets.token_hex(6)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        made.append(name)
        base, _, _ = POSTGRES_URL.rpartition("/")
        return f"{base}/{name}"

    yield make
    if made:
        import psycopg
        with psycopg.connect(POSTGRES_URL, autocommit=True) as db:
            for name in made:
                db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
