"""Production end to end (issue 21): `rakflash flash … --provision`, `rakflash provision`, `rakflash ledger`,
on virtual RAK3172s, each with its own serial number."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from conftest import FAST_BAUD, SRC, run_cli
from provision_support import postgres_database, rows, write_batch  # noqa: F401  (a fixture)
from rakflash.provision.ledger import default_path, open_ledger
from rakflash.sim import Mode, firmware

NEW = "RUI_4.0.6_RAK3172-E"
OLD = "RUI_4.0.5_RAK3172-E"
SIZE = 24 * 1024
BLANK = "0" * 32


@pytest.fixture
def modules(virtual):
    """modules(n, prefix) -> n virtual RAK3172s with serial numbers PREFIX-0 … and factory keys."""
    def make(n, prefix="SN"):
        return [virtual("rak3172", serial_number=f"{prefix}-{i}") for i in range(n)]
    return make


@pytest.fixture
def new_app(tmp_path, cat):
    p = tmp_path / "rak3172_new.bin"
    p.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, SIZE))
    return p


def cli(*args, timeout=120):
    proc = run_cli(*args, "--json", timeout=timeout)
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return proc, lines


def ports(devs):
    return [a for d in devs for a in ("--port", d.port)]


def results(lines):
    return {e["port"]: e for e in lines if e.get("event") == "device-result"}


def keys(dev):
    return (dev.settings["DEVEUI"], dev.settings["APPEUI"], dev.settings["APPKEY"])


def row_keys(r):
    return (r["DevEUI"], r["AppEUI"], r["AppKey"])


def show(batch, *extra):
    proc, lines = cli("ledger", "show", str(batch), *extra)
    assert proc.returncode == 0, proc.stderr
    return lines[-1]


def test_provision_gives_each_module_its_own_row_and_the_report_says_which(modules, tmp_path):
    devs = modules(3)
    r = rows(4)
    batch = write_batch(tmp_path / "batch.csv", r)
    report = tmp_path / "report.jsonl"
    proc, lines = cli("provision", str(batch), *ports(devs), "--baud", str(FAST_BAUD), "--yes",
                      "--report", str(report))
    assert proc.returncode == 0, (proc.stderr, lines[-1:])
    given = {keys(d) for d in devs}
    assert len(given) == 3 and given <= {row_keys(x) for x in r}      # three different rows, from the batch
    records = {x["port"]: x for x in map(json.loads, report.read_text().splitlines())}
    for d in devs:
        p = records[d.port]["provision"]
        assert (p["result"], p["dev_eui"]) == ("written", d.settings["DEVEUI"])
        assert records[d.port]["dev_eui"] == d.settings["DEVEUI"]
        assert r[p["line"] - 2]["DevEUI"] == d.settings["DEVEUI"]       # the line it names is its row
    everything = proc.stdout + proc.stderr + report.read_text()
    assert not any(x["AppKey"] in everything.upper() for x in r)      # never a key, only its hash
    s = show(batch)
    assert (s["total"], s["written"], s["left"]) == (4, 3, 1)
    assert {x["serial_number"] for x in s["rows"] if x["state"] == "written"} == {"SN-0", "SN-1", "SN-2"}

    # Again: each module keeps its row, nothing new is claimed.
    proc, lines = cli("provision", str(batch), *ports(devs), "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0
    assert {e["provision"]["result"] for e in results(lines).values()} == {"already-written"}
    assert {keys(d) for d in devs} == given and show(batch)["left"] == 1


def test_a_module_with_keys_of_its_own_is_refused_unless_forced(modules, tmp_path):
    dev, = modules(1)
    dev.settings.update(DEVEUI="70B3D57ED0001234", APPKEY="11" * 16)
    dev.save_settings()                   # (kept in its flash: its application loads them at start)
    before = keys(dev)
    batch = write_batch(tmp_path / "batch.csv", rows(2))
    proc, lines = cli("provision", str(batch), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 11
    assert results(lines)[dev.port]["result"] == "keys-present"
    assert keys(dev) == before and show(batch)["claimed"] == 0     # nothing claimed, nothing written
    proc, lines = cli("provision", str(batch), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", "--force")
    assert proc.returncode == 0, lines[-1]
    p = results(lines)[dev.port]["provision"]
    assert p["replaced"]["dev_eui"] == "70B3D57ED0001234" and keys(dev)[0] == p["dev_eui"]


def test_a_bad_batch_is_refused_by_line_before_any_module_is_touched(modules, tmp_path):
    dev, = modules(1)
    r = rows(3)
    r[1]["AppKey"] = r[1]["AppKey"][:-1]
    r[2]["DevEUI"] = r[0]["DevEUI"]
    batch = write_batch(tmp_path / "batch.csv", r)
    proc, lines = cli("provision", str(batch), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 12
    assert lines[-1]["error"] == "batch-invalid"
    assert [p.split(":")[0] for p in lines[-1]["problems"]] == ["line 3", "line 4"]
    assert keys(dev)[2] == BLANK and not (tmp_path / "batch.csv.ledger.sqlite").exists()


def test_a_crash_between_claim_and_write_then_a_rerun_leaves_no_duplicate_and_no_orphan(modules, tmp_path):
    devs = modules(2)
    r = rows(3)
    batch = write_batch(tmp_path / "batch.csv", r)
    env = dict(__import__("os").environ, PYTHONPATH=SRC)
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "provision", str(batch), "--port", devs[0].port,
                             "--baud", str(FAST_BAUD), "--yes", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:                     # SIGKILL the moment its claim is committed
        e = json.loads(line)
        if e.get("event") == "phase" and e.get("claimed"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with open_ledger(None, str(batch)) as led:
        claims = led.claims("batch.csv")
    assert [(c.serial_number, c.result) for c in claims] == [("SN-0", "claimed")]
    claimed = claims[0].dev_eui
    # The re-run, with the other module too: SN-0 finishes its own row, SN-1 gets the next one.
    proc, lines = cli("provision", str(batch), *ports(devs), "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, lines[-1]
    assert devs[0].settings["DEVEUI"] == claimed and devs[1].settings["DEVEUI"] != claimed
    assert results(lines)[devs[0].port]["provision"]["claimed_now"] is False
    s = show(batch)
    written = [x for x in s["rows"] if x["state"] == "written"]
    assert sorted(x["serial_number"] for x in written) == ["SN-0", "SN-1"] and s["claimed"] == 2
    assert {keys(d) for d in devs} == {row_keys(x) for x in r if x["DevEUI"] in {w["dev_eui"] for w in written}}


def test_flash_provision_updates_then_gives_rows_and_reruns_finish_the_cut_off_ones(modules, new_app, tmp_path):
    devs = modules(8)
    pulled, faulty = devs[2], devs[5]
    pulled.uart.faults.pull_cable_after = pulled.uart.faults.received + SIZE // 3
    faulty.uart.faults.power_cut_after = faulty.uart.faults.received + SIZE // 2
    r = rows(10)
    batch = write_batch(tmp_path / "batch.csv", r)
    report = tmp_path / "report.jsonl"
    proc, lines = cli("flash", str(new_app), *ports(devs), "--baud", str(FAST_BAUD), "--yes",
                      "--provision", str(batch), "--report", str(report), timeout=240)
    assert proc.returncode == 11, proc.stderr
    done = results(lines)
    assert done[pulled.port]["result"] == "port-disconnected"
    assert done[faulty.port]["result"] == "device-restarted"
    # Their rows were claimed before their updates began: the ledger knows which row each will get.
    claimed = {d.opts.serial_number: done[d.port]["provision"] for d in (pulled, faulty)}
    assert {c["result"] for c in claimed.values()} == {"claimed"}
    assert pulled.settings["APPKEY"] == faulty.settings["APPKEY"] == BLANK
    ok = [d for d in devs if d not in (pulled, faulty)]
    for d in ok:
        assert done[d.port]["result"] == "ok" and done[d.port]["provision"]["result"] == "written"
        assert d.app_version == NEW and keys(d) in {row_keys(x) for x in r}
    assert len({keys(d) for d in ok}) == 6
    s = show(batch)
    assert (s["written"], s["not_written"], s["left"]) == (6, 2, 2)
    assert lines[-1]["provisioned"] == 6                      # the two claimed rows are not counted
    again = pulled.plug_in()
    assert pulled.wait_mode(Mode.BOOTLOADER)
    proc, lines = cli("flash", str(new_app), *ports(d for d in devs if d is not pulled), "--port", again,
                      "--baud", str(FAST_BAUD), "--yes", "--provision", str(batch), "--report", str(report),
                      timeout=240)
    assert proc.returncode == 0, lines[-1]
    assert all(d.app_version == NEW for d in devs)
    given = [keys(d) for d in devs]
    assert len(set(given)) == 8 and set(given) <= {row_keys(x) for x in r}
    for d in (pulled, faulty):                   # finished with the rows claimed for them before
        assert d.settings["DEVEUI"] == claimed[d.opts.serial_number]["dev_eui"]
    s = show(batch)
    assert (s["written"], s["left"], s["not_written"]) == (8, 2, 0)
    records = [json.loads(x) for x in report.read_text().splitlines()]
    assert len(records) == 16 and all("provision" in x for x in records)


def ports_of(devs):
    return [a for d in devs for a in ("--port", d.port)]


def test_two_stations_on_one_postgresql_ledger_share_a_batch_of_16_modules(virtual, tmp_path, postgres_database):
    url = postgres_database()
    east = [virtual("rak3172", serial_number=f"EAST-{i}") for i in range(8)]
    west = [virtual("rak3172", serial_number=f"WEST-{i}") for i in range(8)]
    r = rows(14, bound={13: "WEST-7"})        # two short: the last modules find the batch used up
    batch = write_batch(tmp_path / "batch.csv", r)
    env = dict(__import__("os").environ, PYTHONPATH=SRC)
    procs = [subprocess.Popen([sys.executable, "-m", "rakflash", "provision", str(batch), *ports_of(devs),
                               "--baud", str(FAST_BAUD), "--yes", "--json", "--ledger", url, "--station", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for name, devs in (("east", east), ("west", west))]
    outs = [p.communicate(timeout=240) for p in procs]
    done = {}
    for out, _ in outs:
        done.update(results([json.loads(x) for x in out.splitlines() if x.startswith("{")]))
    written = [d for d in east + west if done[d.port]["result"] == "ok"]
    used_up = [d for d in east + west if done[d.port]["result"] == "batch-used-up"]
    assert len(written) == 14 and len(used_up) == 2, {p: x["result"] for p, x in done.items()}
    assert len({keys(d) for d in written}) == 14                 # every row used once
    assert west[7] in written and west[7].settings["DEVEUI"] == r[13]["DevEUI"]   # its bound row
    assert all(d.settings["APPKEY"] == BLANK for d in used_up)
    with open_ledger(url, str(batch)) as led:
        claims = led.claims("batch.csv")
    assert {c.station for c in claims} == {"east", "west"}
    assert sorted(c.serial_number for c in claims) == sorted(d.opts.serial_number for d in written)
    assert all(c.result == "written" for c in claims)


def test_ledger_export_writes_the_network_servers_import_files(modules, tmp_path):
    devs = modules(2)
    r = rows(3)
    batch = write_batch(tmp_path / "batch.csv", r)
    proc, _ = cli("provision", str(batch), *ports(devs), "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0
    by_eui = {x["DevEUI"]: x for x in r}
    out = run_cli("ledger", "export", str(batch), "--format", "tts-csv").stdout.splitlines()
    assert out[0] == "id;dev_eui;join_eui;name;app_key" and len(out) == 3
    for line in out[1:]:
        id_, dev_eui, join_eui, name, app_key = line.split(";")
        assert by_eui[dev_eui]["AppKey"] == app_key and id_ in ("rak-sn-0", "rak-sn-1")
    target = tmp_path / "tts.json"
    assert run_cli("ledger", "export", str(batch), "--format", "tts-json", "-o", str(target)).returncode == 0
    objs = list(_json_stream(target.read_text()))
    assert {o["ids"]["dev_eui"] for o in objs} == {d.settings["DEVEUI"] for d in devs}
    assert all(o["root_keys"]["app_key"]["key"] == by_eui[o["ids"]["dev_eui"]]["AppKey"] for o in objs)
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    cs = run_cli("ledger", "export", str(batch), "--format", "chirpstack").stdout.splitlines()
    assert cs[0] == "dev_eui,name,join_eui,nwk_key" and len(cs) == 3


def _json_stream(text):
    dec = json.JSONDecoder()
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return
        obj, i = dec.raw_decode(text, i)
        yield obj


def test_ledger_show_without_a_ledger_says_there_is_none(tmp_path):
    batch = write_batch(tmp_path / "batch.csv", rows(2))
    proc = run_cli("ledger", "show", str(batch))
    assert proc.returncode == 12 and "no ledger" in proc.stderr
    assert default_path(str(batch)).endswith("batch.csv.ledger.sqlite")


def test_keys_that_do_not_read_back_keep_the_row_for_the_module_and_the_rerun_writes_it(modules, tmp_path):
    dev, = modules(1)
    answer = dev.handle_app_line

    def ignores_the_key(line, version):          # firmware that answers OK and keeps its old key
        if line.upper().startswith("AT+APPKEY=") and not line.endswith("?"):
            dev.app_reply("OK")
            return None
        return answer(line, version)
    dev.handle_app_line = ignores_the_key
    r = rows(2)
    batch = write_batch(tmp_path / "batch.csv", r)
    proc, lines = cli("provision", str(batch), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 11
    done = results(lines)[dev.port]
    assert done["result"] == "keys-not-written" and done["provision"]["result"] == "failed"
    assert dev.settings["APPKEY"] == BLANK and dev.settings["DEVEUI"] == r[0]["DevEUI"]   # half written
    s = show(batch)
    assert [(x["serial_number"], x["state"]) for x in s["rows"] if x["state"] != "left"] == [("SN-0", "failed")]
    dev.handle_app_line = answer                  # (a good cable, a firmware that takes it)
    proc, lines = cli("provision", str(batch), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 0, lines[-1]
    assert keys(dev) == row_keys(r[0]) and results(lines)[dev.port]["provision"]["claimed_now"] is False
    assert show(batch)["written"] == 1 and show(batch)["left"] == 1


def test_two_modules_that_say_the_same_serial_number_never_share_a_row(virtual, tmp_path):
    a, b = virtual("rak3172", serial_number="CLONE"), virtual("rak3172", serial_number="CLONE")
    batch = write_batch(tmp_path / "batch.csv", rows(3))
    proc, lines = cli("provision", str(batch), "--port", a.port, "--port", b.port, "--baud", str(FAST_BAUD),
                      "--yes")
    assert proc.returncode == 11
    done = results(lines)
    assert sorted(x["result"] for x in done.values()) == ["not-provisionable", "ok"]
    first, second = (a, b) if done[a.port]["result"] == "ok" else (b, a)
    assert second.settings["APPKEY"] == BLANK and first.settings["APPKEY"] != BLANK
    # Another run, the other one alone: the ledger has CLONE's row written and read back, and this
    # module does not hold it — refused, not given the same keys.
    proc, lines = cli("provision", str(batch), "--port", second.port, "--baud", str(FAST_BAUD), "--yes")
    assert proc.returncode == 11 and results(lines)[second.port]["result"] == "keys-present"
    assert second.settings["APPKEY"] == BLANK and show(batch)["claimed"] == 1


def test_flash_provision_refuses_a_module_with_keys_of_its_own_before_writing_anything(modules, new_app, tmp_path):
    keep, fresh = modules(2)
    keep.settings.update(APPKEY="22" * 16)
    keep.save_settings()
    batch = write_batch(tmp_path / "batch.csv", rows(2))
    proc, lines = cli("flash", str(new_app), *ports([keep, fresh]), "--baud", str(FAST_BAUD), "--yes",
                      "--provision", str(batch))
    assert proc.returncode == 11
    done = results(lines)
    assert done[keep.port]["result"] == "keys-present" and done[keep.port]["provision"]["result"] == "failed"
    assert keep.app_version == OLD and keep.settings["APPKEY"] == "22" * 16      # no firmware, no keys
    assert done[fresh.port]["result"] == "ok" and fresh.app_version == NEW
    assert done[fresh.port]["provision"]["result"] == "written"


def test_a_row_claimed_before_an_update_its_plan_refuses_goes_back_to_the_batch(virtual, new_app, tmp_path):
    other = virtual("rak11720", serial_number="APOLLO-1")     # RUI3 with key commands; RAK3172 firmware won't do
    batch = write_batch(tmp_path / "batch.csv", rows(2))
    proc, lines = cli("flash", str(new_app), "--port", other.port, "--baud", str(FAST_BAUD), "--yes",
                      "--provision", str(batch))
    assert proc.returncode == 11
    done = results(lines)[other.port]
    assert done["result"] == "wrong-target" and done["provision"]["result"] == "released"
    assert any(e.get("claimed") for e in lines if e.get("event") == "phase")      # it had been claimed
    assert show(batch)["claimed"] == 0 and other.settings["APPKEY"] == BLANK and other.updates == 0
