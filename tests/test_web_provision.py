"""The page's production batch (issue 21 item 5), without a browser: the batch and its ledger, and
a fleet job that gives each module its row after its update."""

from __future__ import annotations

import pytest

from conftest import FAST_BAUD
from provision_support import rows, write_batch
from web_support import NEW, firmware_file, need, wait_for, web  # noqa: F401  (web is a fixture)

httpx = need("httpx", "the web tests' HTTP client")


def client(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def job_state(c, job_id: str) -> dict:
    return next(j for j in c.get("api/jobs").json()["jobs"] if j["id"] == job_id)


def test_the_page_shows_a_batch_then_updates_and_provisions_with_one_confirmation(web, virtual, tmp_path, cat):
    a, b = virtual("rak3172", serial_number="SIMA"), virtual("rak3172", serial_number="SIMB")
    server = web(a, b)
    r = rows(3)
    batch = write_batch(tmp_path / "batch.csv", r)
    with client(server) as c:
        s = c.post("api/batch", json={"path": str(batch)}).json()
        assert (s["total"], s["left"], s["ledger_exists"]) == (3, 3, False)
        assert all("app_key" not in x for x in s["rows"]) and r[0]["AppKey"] not in str(s)
        image = c.post("api/images", content=firmware_file(tmp_path / "new.bin", cat).read_bytes(),
                       headers={"X-File-Name": "new.bin"}).json()["image"]
        job = c.post("api/flash", json={"ports": [a.port, b.port], "image": image, "baud": FAST_BAUD,
                                        "batch": str(batch)}).json()["job"]
        wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the plans")
        prompt = [e for e in server.board.jobs[job].events if e["event"] == "prompt"][-1]
        assert prompt["message"] == f"Write new.bin to the modules on {a.port}, {b.port} and give each a row of batch.csv?"
        assert c.post("api/batch", json={"path": str(batch)}).json()["claimed"] == 0   # the plans claim nothing
        c.post(f"api/jobs/{job}/answer", json={"write": True})
        result = wait_for(lambda: (st := job_state(c, job))["state"] == "done" and st["result"], timeout=60,
                          what="the fleet")
        assert (result["outcome"], result["ok"]) == ("ok", 2), result
        given = {d["serial_number"]: d["provision"] for d in result["devices"]}
        assert {p["result"] for p in given.values()} == {"written"}
        assert a.settings["DEVEUI"] == given["SIMA"]["dev_eui"] and b.settings["DEVEUI"] == given["SIMB"]["dev_eui"]
        assert a.app_version == b.app_version == NEW
        s = c.post("api/batch", json={"path": str(batch)}).json()
        assert (s["written"], s["left"]) == (2, 1)
        assert {x["serial_number"] for x in s["rows"] if x["state"] == "written"} == {"SIMA", "SIMB"}


def test_a_bad_batch_is_named_by_line_on_the_page_and_a_job_with_it_writes_nothing(web, virtual, tmp_path, cat):
    dev = virtual("rak3172", serial_number="SIMA")
    server = web(dev)
    r = rows(2)
    r[1]["DevEUI"] = "XYZ"
    batch = write_batch(tmp_path / "batch.csv", r)
    with client(server) as c:
        s = c.post("api/batch", json={"path": str(batch)}).json()
        assert s["error"] == "batch-invalid" and s["problems"] == ["line 3: DevEUI 'XYZ' is not 16 hex digits"]
        assert c.post("api/batch", json={"path": str(tmp_path / "none.csv")}).status_code == 400
        image = c.post("api/images", content=firmware_file(tmp_path / "new.bin", cat).read_bytes(),
                       headers={"X-File-Name": "new.bin"}).json()["image"]
        job = c.post("api/flash", json={"port": dev.port, "image": image, "baud": FAST_BAUD,
                                        "batch": str(batch)}).json()["job"]
        result = wait_for(lambda: (st := job_state(c, job))["state"] == "done" and st["result"], what="the job")
        assert result["error"] == "batch-invalid" and result["written"] == "nothing"
    assert dev.updates == 0


# ------------------------------------------------------------------ in the browser

@pytest.mark.xdist_group("browser")    # the browser tests share one worker and one Chromium
def test_on_the_page_a_batch_is_shown_and_its_rows_go_to_the_modules_live(page, web, virtual, tmp_path, cat):
    from playwright.sync_api import expect
    a, b = (virtual("rak3172", baud=115200, serial_number=s) for s in ("SIMA", "SIMB"))   # the page's baud
    server = web(a, b)
    r = rows(3)
    batch = write_batch(tmp_path / "batch.csv", r)
    page.goto(server.url)
    page.locator("#production summary").click()
    page.fill("#opt-batch", str(batch))
    page.get_by_role("button", name="Show the batch").click()
    expect(page.locator("#batch .batch-counts")).to_have_text("batch.csv: 3 rows, 0 written, 0 claimed and not written, 3 left")
    for dev in (a, b):
        page.locator(f'tr[data-port="{dev.port}"] input[type=checkbox]').check()
    page.set_input_files("#file", str(firmware_file(tmp_path / "new.bin", cat)))
    card = page.locator(".job")
    card.get_by_role("button", name="Flash these modules").click()
    expect(page.locator("#confirm-text")).to_have_text(
        f"Write new.bin to the modules on {a.port}, {b.port} and give each a row of batch.csv?")
    page.locator("#confirm-write").click()
    for dev in (a, b):
        keys = card.locator(f'tr[data-port="{dev.port}"] .f-keys')
        expect(keys).to_contain_text("(written and read back)", timeout=60_000)
        assert f"DevEUI {dev.settings['DEVEUI']} " in keys.inner_text()        # the row it holds now
    expect(page.locator("#batch .batch-counts")).to_have_text("batch.csv: 3 rows, 2 written, 0 claimed and not written, 1 left")
    expect(page.locator('#batch tr[data-state="written"]')).to_have_count(2)
    assert not any(x["AppKey"] in page.content().upper() for x in r)
    axe = need("axe_playwright_python.sync_playwright", "axe-core for the accessibility checks").Axe()
    bad = [v for v in axe.run(page).response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, [(v["id"], [n["target"] for n in v["nodes"]][:3]) for v in bad]


@pytest.mark.xdist_group("browser")
def test_on_the_page_a_bad_batch_is_named_by_line_in_its_panel_and_in_the_job(page, web, virtual, tmp_path, cat):
    from playwright.sync_api import expect
    dev = virtual("rak3172", baud=115200, serial_number="SIMA")
    server = web(dev)
    r = rows(2)
    r[0]["AppKey"] = "0" * 32
    batch = write_batch(tmp_path / "batch.csv", r)
    page.goto(server.url)
    page.locator("#production summary").click()
    page.fill("#opt-batch", str(batch))
    page.get_by_role("button", name="Show the batch").click()
    expect(page.locator("#batch .problems li")).to_have_text(
        ["line 2: AppKey is all zeros (the blank key every module has from the factory)"])
    page.locator(f'tr[data-port="{dev.port}"] input[type=checkbox]').check()
    page.set_input_files("#file", str(firmware_file(tmp_path / "new.bin", cat)))
    result = page.locator(".job .result")
    expect(result).to_contain_text("line 2: AppKey is all zeros")
    expect(result).to_contain_text("Nothing was written to the module.")
    assert dev.updates == 0
