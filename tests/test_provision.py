"""Production (issue 21): the batch file's checks and the ledger's claims, in SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import SRC
from provision_support import postgres_database, rows, write_batch  # noqa: F401  (a fixture)
from rakflash.errors import BatchInvalid, BatchUsedUp
from rakflash.provision.batch import parse_batch, read_batch
from rakflash.provision.ledger import check_against, default_path, open_ledger

HEADER = "DevEUI,AppEUI,AppKey\n"
KEY = "2B7E151628AED2A6ABF7158809CF4F3C"


# ------------------------------------------------------------------ the batch file

def test_a_good_batch_reads_with_either_delimiter_and_any_case(tmp_path):
    r = rows(3, bound={1: "SN-42"})
    for delimiter in (",", ";", "\t"):
        b = read_batch(str(write_batch(tmp_path / "b.csv", r, delimiter=delimiter)))
        assert [x.dev_eui for x in b.rows] == [x["DevEUI"] for x in r]
        assert [x.line for x in b.rows] == [2, 3, 4]
        assert b.rows[1].serial_number == "SN-42" and b.rows[0].serial_number is None
    b = parse_batch("join_eui,app_key,dev_eui\n" f"ac1f09fff9153172,{KEY.lower()},ac1f09fffe000abc\n")
    assert (b.rows[0].dev_eui, b.rows[0].app_eui, b.rows[0].app_key) == ("AC1F09FFFE000ABC", "AC1F09FFF9153172", KEY)


def test_every_bad_line_is_named_by_its_number():
    text = (HEADER
            + f"AC1F09FFFE000001,AC1F09FFF9153172,{KEY}\n"          # line 2: good
            + f"AC1F09FFFE00001,AC1F09FFF9153172,{KEY}\n"           # line 3: 15 digits
            + f"AC1F09FFFE000003,AC1F09FFF915317Z,{KEY}\n"          # line 4: not hex
            + "AC1F09FFFE000004,AC1F09FFF9153172,00000000000000000000000000000000\n"   # line 5: blank key
            + f"ac1f09fffe000001,AC1F09FFF9153172,{KEY}\n"          # line 6: duplicate of line 2
            + "AC1F09FFFE000006,AC1F09FFF9153172\n"                # line 7: a field short
            + "\n"
            + f"AC1F09FFFE000008,AC1F09FFF9153172,{KEY[:-2]}\n")    # line 9: short key (after a blank line)
    with pytest.raises(BatchInvalid) as e:
        parse_batch(text, path="b.csv")
    problems = e.value.details["problems"]
    assert [p.split(":")[0] for p in problems] == ["line 3", "line 4", "line 5", "line 6", "line 7", "line 9"]
    assert "already on line 2" in problems[3]
    assert "nothing was written" in e.value.message


def test_a_missing_column_and_a_serial_bound_twice_are_named():
    with pytest.raises(BatchInvalid) as e:
        parse_batch("DevEUI,AppKey\n")
    assert e.value.details["problems"] == ["line 1: no AppEUI column (the header names 'DevEUI', 'AppKey')"]
    with pytest.raises(BatchInvalid) as e:
        parse_batch("DevEUI,AppEUI,AppKey,SN\n"
                    f"AC1F09FFFE000001,AC1F09FFF9153172,{KEY},A1\n"
                    f"AC1F09FFFE000002,AC1F09FFF9153172,{KEY},A1\n")
    assert e.value.details["problems"] == ["line 3: serial number A1 is already bound to the row on line 2"]
    with pytest.raises(BatchInvalid) as e:      # only separators (found by the fuzzer: it read as no rows)
        parse_batch(";;\n;;\n")
    assert e.value.details["problems"] == ["line 1: no header row naming DevEUI, AppEUI and AppKey"]


# ------------------------------------------------------------------ the ledger, one process

@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_spec(request, postgres_database):
    return None if request.param == "sqlite" else postgres_database()


def test_a_claim_is_found_again_by_its_serial_number_and_never_given_twice(tmp_path, ledger_spec):
    path = write_batch(tmp_path / "batch.csv", rows(3, bound={2: "BOUND"}))
    batch = read_batch(str(path))
    with open_ledger(ledger_spec, str(path)) as ledger:
        a = ledger.claim(batch, "A", station="s1")
        again = ledger.claim(batch, "A", station="s1")        # a re-run after a crash
        bound = ledger.claim(batch, "BOUND", station="s1")
        b = ledger.claim(batch, "B", station="s1")
        assert a.new and not again.new and again.dev_eui == a.dev_eui == batch.rows[0].dev_eui
        assert bound.dev_eui == batch.rows[2].dev_eui          # its own row, not the next one
        assert b.dev_eui == batch.rows[1].dev_eui
        with pytest.raises(BatchUsedUp):
            ledger.claim(batch, "C", station="s1")
        ledger.record(a, "written", firmware="RUI_4.0.6_RAK3172-E")
        claims = {c.serial_number: c for c in ledger.claims(batch.name)}
    assert claims["A"].result == "written" and claims["A"].firmware == "RUI_4.0.6_RAK3172-E"
    assert claims["B"].result == "claimed"
    assert all(KEY not in json.dumps(c.to_dict()) for c in claims.values())
    assert {c.app_key_sha256 for c in claims.values()} == {r.app_key_hash for r in batch.rows}
    if ledger_spec is None:
        assert os.path.exists(default_path(str(path)))


def test_a_batch_whose_rows_the_ledger_gave_otherwise_is_refused_line_by_line(tmp_path, ledger_spec):
    r = rows(3)
    path = write_batch(tmp_path / "batch.csv", r)
    batch = read_batch(str(path))
    with open_ledger(ledger_spec, str(path)) as ledger:
        ledger.claim(batch, "A", station="s1")       # row 1 (line 2)
        ledger.claim(batch, "B", station="s1")       # row 2 (line 3)
        check_against(batch, ledger)                 # the same file again: fine
        r[0]["serial_number"] = "Z"                  # bound to another module than the one that has it
        r[1]["AppKey"] = "11" * 16                   # a key changed after its row was claimed
        changed = read_batch(str(write_batch(tmp_path / "batch.csv", r)))
        with pytest.raises(BatchInvalid) as e:
            check_against(changed, ledger)
        other = read_batch(str(write_batch(tmp_path / "other.csv", [r[2], r[0]])))
        other_claims = ledger.claim(other, "C", station="s1")       # row 3 claimed in the other batch
        with pytest.raises(BatchInvalid) as e2:
            check_against(read_batch(str(path)), ledger)
    assert [p.split(":")[0] for p in e.value.details["problems"]] == ["line 2", "line 3"]
    assert "claimed by the module A" in e.value.details["problems"][0]
    assert other_claims.dev_eui == r[2]["DevEUI"]
    assert e2.value.details["problems"][-1].startswith("line 4: DevEUI")
    assert "other.csv" in e2.value.details["problems"][-1]


# ------------------------------------------------------------------ two stations racing

RACER = r"""
import json, sys
from rakflash.errors import BatchUsedUp
from rakflash.provision.batch import read_batch
from rakflash.provision.ledger import open_ledger
batch_path, spec, station, n = sys.argv[1], sys.argv[2] or None, sys.argv[3], int(sys.argv[4])
batch = read_batch(batch_path)
got = []
with open_ledger(spec, batch_path) as ledger:
    print("ready", flush=True)
    sys.stdin.readline()          # the start line: both begin together
    for i in range(n):
        try:
            got.append(ledger.claim(batch, f"{station}-{i}", station=station).dev_eui)
        except BatchUsedUp:
            got.append(None)
print(json.dumps(got))
"""


def test_two_stations_racing_for_the_last_rows_never_both_win_one(tmp_path, ledger_spec):
    n_rows, each = 40, 30
    path = write_batch(tmp_path / "batch.csv", rows(n_rows))
    env = dict(os.environ, PYTHONPATH=SRC)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(path), ledger_spec or "", s, str(each)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for s in ("east", "west")]
    for p in procs:                # both connected and waiting …
        assert p.stdout.readline() == "ready\n", p.stderr.read()
    for p in procs:                # … let them go at once
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [r[1] for r in results]
    got = [json.loads(out) for out, _ in results]
    won = [d for g in got for d in g if d]
    assert len(won) == n_rows and len(set(won)) == n_rows      # every row given once, none twice
    assert sum(d is None for g in got for d in g) == 2 * each - n_rows
    with open_ledger(ledger_spec, str(path)) as ledger:
        claims = ledger.claims("batch.csv")
    assert sorted(c.dev_eui for c in claims) == sorted(won)
    assert len({c.serial_number for c in claims}) == n_rows


# ------------------------------------------------------------------ the batch reader, fuzzed

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st

from rakflash.errors import RakflashError  # noqa: E402

fuzz = settings(max_examples=int(os.environ.get("RAKFLASH_FUZZ_EXAMPLES", "60")), deadline=None,
                derandomize="RAKFLASH_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
GOOD = ("DevEUI;AppEUI;AppKey;serial_number\n" + "".join(
    f"AC1F09FFFE0000{i:02X};AC1F09FFF9153172;{KEY[:-2]}{i:02X};{f'SN{i}' if i % 2 else ''}\n" for i in range(6)))


def _only_named_errors_or_good_rows(call):
    """A batch file ends in checked rows or a named error; rows that pass are all well-formed."""
    try:
        batch = call()
    except RakflashError as exc:
        assert exc.name in ("batch-invalid", "usage") and exc.message and exc.hint
        return
    euis = [r.dev_eui for r in batch.rows]
    assert batch.rows and len(set(euis)) == len(euis)
    for r in batch.rows:
        assert len(r.dev_eui) == len(r.app_eui) == 16 and len(r.app_key) == 32 and int(r.app_key, 16)


@fuzz
@given(st.text(alphabet=st.sampled_from(list("0123456789ABCDEFabcdefXYZ ,;\t\n\r\"'\\é\x00")), max_size=400))
def test_any_text_is_checked_rows_or_a_named_error(text):
    _only_named_errors_or_good_rows(lambda: parse_batch(text, path="fuzz.csv"))


@fuzz
@given(st.lists(st.tuples(st.integers(0, len(GOOD) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_a_damaged_batch_file_is_checked_rows_or_a_named_error(tmp_path, damage):
    raw = bytearray(GOOD.encode())
    for at, byte in damage:
        raw[at] = byte
    path = tmp_path / "damaged.csv"
    path.write_bytes(bytes(raw))
    _only_named_errors_or_good_rows(lambda: read_batch(str(path)))
