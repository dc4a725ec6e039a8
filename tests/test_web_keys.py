"""`rakflash web`'s keys and settings: the keys shown masked, the backup and the settings template
as downloads (the files `keys backup` and `settings save` write), a template applied to another
module — over a real loopback socket to the real server, against virtual modules."""

from __future__ import annotations

import json

from conftest import FAST_BAUD, cli_json
from test_keys_backup import KEYS, set_keys
from test_settings_files import CHOSEN, on, set_all
from web_support import need, web  # noqa: F401  (web is a fixture)

httpx = need("httpx", "the web tests' HTTP client")


def client(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60)


def test_keys_are_shown_masked_and_the_backup_is_the_file_keys_backup_writes(web, virtual, tmp_path):
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    server = web(dev)
    with client(server) as c:
        r = c.post("api/keys", json={"port": dev.port, "baud": FAST_BAUD})
        assert r.status_code == 200, r.text
        shown = r.json()
        assert (shown["result"], shown["dev_eui"], shown["app_eui"], shown["band"], shown["class"],
                shown["join_mode"]) == ("ok", KEYS["DEVEUI"], KEYS["APPEUI"], "5", "C", "OTAA")
        assert shown["app_key"] is None and shown["app_key_blank"] is False and not shown["keys_shown"]
        assert KEYS["APPKEY"] not in r.text                  # the page never gets the key itself

        r = c.post("api/keys/backup", json={"port": dev.port, "baud": FAST_BAUD})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.headers["content-disposition"] == \
            f'attachment; filename="keys-rak3172-{dev.opts.serial_number}.json"'
        assert r.headers["cache-control"] == "no-store"     # through the guard, as every answer
        served = r.json()
    assert served["settings"]["APPKEY"] == KEYS["APPKEY"]   # a backup holds the keys: its point
    path = tmp_path / "keys.json"
    code, out = cli_json("keys", "backup", str(path), "--port", dev.port, "--baud", str(FAST_BAUD))
    assert (code, out["result"]) == (0, "ok"), out
    written = json.loads(path.read_text())
    assert r.text.endswith("}\n") and {**served, "read_at": None} == {**written, "read_at": None}


def test_settings_saved_on_the_page_apply_to_another_module(web, virtual):
    a, b = virtual("rak3172"), virtual("rak3172")
    set_all(a, CHOSEN)
    set_keys(a, KEYS)
    server = web(a, b)
    with client(server) as c:
        r = c.post("api/settings/save", json={"port": a.port, "baud": FAST_BAUD})
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"].startswith('attachment; filename="settings-rak3172-')
        template = r.json()
        assert template["rakflash_settings"] == 1 and {k: template["settings"][k] for k in CHOSEN} == CHOSEN
        assert KEYS["APPKEY"] not in r.text and KEYS["DEVEUI"] not in r.text
        dev_eui_before = on(b, ["DEVEUI"])
        r = c.post("api/settings/apply", json={"port": b.port, "baud": FAST_BAUD, "file": template,
                                               "name": "field-trial.json"})
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["result"] == "ok" and set(done["changed"]) == set(CHOSEN) and "NJM" in done["same"]
        assert on(b, CHOSEN) == CHOSEN and on(b, ["DEVEUI"]) == dev_eui_before
        again = c.post("api/settings/apply", json={"port": b.port, "baud": FAST_BAUD, "file": template}).json()
        assert again["changed"] == [] and set(CHOSEN) <= set(again["same"])
        # A value the module refuses is named, with what was applied before it.
        bad = {**template, "settings": {"CLASS": "A", "RETY": "9"}}
        refused = c.post("api/settings/apply", json={"port": b.port, "baud": FAST_BAUD, "file": bad}).json()
        assert refused["error"] == "setting-refused" and refused["setting"] == "RETY", refused
        assert refused["changed"] == ["CLASS"] and refused["answer"] == "AT_PARAM_ERROR"
        assert "Apply settings" in refused["page_hint"] and "same command" in refused["hint"]
        # Not a settings file (a keys backup, say): refused before the module is touched.
        r = c.post("api/settings/apply", json={"port": b.port, "file": {"settings": {"APPKEY": "00"}},
                                               "name": "keys.json"})
        assert r.status_code == 400 and "keys.json is not a settings file" in r.json()["message"], r.text
        assert server.board.holder(b.port) is None


def test_keys_and_settings_need_the_secret_and_a_json_body(web, virtual):
    dev = virtual("rak3172")
    set_keys(dev, KEYS)
    server = web(dev)
    root = f"http://127.0.0.1:{server.port}"
    body = {"port": dev.port, "baud": FAST_BAUD}
    with httpx.Client(timeout=30) as c:
        for path in ("api/keys", "api/keys/backup", "api/settings/save", "api/settings/apply"):
            r = c.post(f"{root}/{path}", json=body)
            assert r.status_code == 403 and "secret" in r.text, path
            assert KEYS["APPKEY"] not in r.text
            r = c.post(f"{root}/{'x' * len(server.token)}/{path}", json=body)
            assert r.status_code == 403, path
            r = c.post(server.url + path, json=body, headers={"Origin": "http://evil.example"})
            assert r.status_code == 403, path
            r = c.post(server.url + path, content=json.dumps(body), headers={"Content-Type": "text/plain"})
            assert r.status_code == 415, path
        r = c.post(server.url + "api/settings/apply",
                   json={**body, "file": {"settings": {"BAND": "5"}, "pad": "x" * 70_000}})
        assert r.status_code == 413
    assert server.board.jobs == {} and server.board.holder(dev.port) is None
