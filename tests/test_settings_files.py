"""``rakflash settings save|apply``: one module's settings (never its keys) as a file, applied to
others — only what differs, each value read back, a refused value named. Against virtual
modules through real ptys."""

from __future__ import annotations

import json

from conftest import FAST_BAUD, cli_json, run_cli
from test_flash import at_exchange

CHOSEN = {"BAND": "5", "CLASS": "C", "ADR": "0", "DR": "3", "CFM": "1", "RETY": "2", "JN1DL": "6"}


def set_all(dev, values) -> None:
    for name, value in values.items():
        assert at_exchange(dev.port, f"AT+{name}={value}")[-1] == "OK", name


def on(dev, names) -> dict[str, str]:
    return {n: at_exchange(dev.port, f"AT+{n}=?")[0].split("=", 1)[1] for n in names}


def test_settings_saved_from_one_module_apply_to_another(virtual, tmp_path):
    a, b = virtual("rak3172"), virtual("rak11720")
    set_all(a, CHOSEN)
    set_all(a, {"APPKEY": "2B7E151628AED2A6ABF7158809CF4F3C"})
    path = tmp_path / "fleet.json"
    code, out = cli_json("settings", "save", str(path), "--port", a.port, "--baud", str(FAST_BAUD))
    assert (code, out["result"]) == (0, "ok"), out
    saved = json.loads(path.read_text())["settings"]
    assert {k: saved[k] for k in CHOSEN} == CHOSEN and saved["NJM"] == "1"
    text = path.read_text()
    assert "APPKEY" not in text and "2B7E1516" not in text and a.opts.dev_eui.upper() not in text
    dev_eui_before = on(b, ["DEVEUI"])
    code, out = cli_json("settings", "apply", str(path), "--port", b.port, "--baud", str(FAST_BAUD))
    assert (code, out["result"]) == (0, "ok"), out
    assert set(out["changed"]) == set(CHOSEN) and "NJM" in out["same"]
    assert on(b, CHOSEN) == CHOSEN and on(b, ["DEVEUI"]) == dev_eui_before
    code, out = cli_json("settings", "apply", str(path), "--port", b.port, "--baud", str(FAST_BAUD))
    assert (code, out["changed"]) == (0, [])                        # only what differs is written


def test_a_value_the_module_refuses_is_named(virtual, tmp_path):
    dev = virtual("rak3172")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"rakflash_settings": 1, "settings": {"BAND": "6", "RETY": "9"}}))
    code, out = cli_json("settings", "apply", str(path), "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (code, out["error"]) == (8, "setting-refused"), out
    assert "AT+RETY=9" in out["message"] and "AT_PARAM_ERROR" in out["message"]
    assert out["changed"] == ["BAND"] and on(dev, ["BAND"]) == {"BAND": "6"}     # what came before stays


def test_a_file_with_keys_in_it_is_refused_before_any_module_is_touched(virtual, tmp_path):
    dev = virtual("rak3172")
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"rakflash_settings": 1, "settings": {"APPKEY": "00" * 16}}))
    code, out = cli_json("settings", "apply", str(path), "--port", dev.port)
    assert (code, out["error"]) == (2, "usage") and "APPKEY" in out["message"]
    assert dev.resets == 0 and dev.settings["APPKEY"] == "0" * 32


def test_several_modules_get_one_line_each_and_a_summary(virtual, tmp_path):
    a, b = virtual("rak3172"), virtual("rak3172", locked="pw7Q")
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"rakflash_settings": 1, "settings": {"CLASS": "B", "ADR": "0"}}))
    proc = run_cli("settings", "apply", str(path), "--port", a.port, "--port", b.port, "--baud",
                   str(FAST_BAUD), "--password", "pw7Q", "--json")
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{") and "event" not in ln]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [ln["port"] for ln in lines[:2]] == [a.port, b.port] and all(ln["error"] is None for ln in lines[:2])
    assert lines[-1] == {"summary": True, "result": "ok", "modules": 2, "failed": 0, "error": None}
    assert on(a, ["CLASS", "ADR"]) == {"CLASS": "B", "ADR": "0"}
    assert b.locked and b.settings["CLASS"] == "B" and "pw7Q" not in proc.stdout + proc.stderr
