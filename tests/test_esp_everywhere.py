"""The ESP32 modules in `modules`, `doctor`, fleet mode and the web page (issue 24.5)."""

from __future__ import annotations

import json

from conftest import cli_json, run_cli
from rakflash.sim import Mode, esp_firmware
from web_support import need, wait_for, web  # noqa: F401  (web is a fixture)

ESP = ("rak3112", "rak3212", "rak3312", "rak11200")


def app(chip: int = 9, version: str = "1.1.0", size: int = 48 * 1024) -> bytes:
    return esp_firmware.app_image(chip, version, size, project="sample", flash_mb=16 if chip == 9 else 4)


# ------------------------------------------------------------------ modules

def test_modules_lists_them_with_their_sources_and_way_in():
    code, out = cli_json("modules")
    assert code == 0, out
    rows = {r["key"]: r for r in out["modules"]}
    for key in ESP:
        r = rows[key]
        assert r["protocol"] == "esptool" and r["sources"] and r["swd_command"] is None
        assert r["esptool_command"].startswith(f"esptool --chip {r['esp']['chip']} --port PORT write-flash")
    assert rows["rak3112"]["mcu"].startswith("ESP32-S3") and rows["rak11200"]["mcu"].startswith("ESP32 ")
    assert rows["rak3112"]["esp"]["reset"] == "usb-serial-jtag" and rows["rak11200"]["esp"]["reset"] == "hold-boot"
    assert rows["rak3312"]["variant_of"] == "rak3112" and rows["rak3212"]["inferred"]
    human = run_cli("modules").stdout
    assert "rak11200" in human and "ROM download mode" in human


# ------------------------------------------------------------------ doctor

def findings(out: dict) -> dict:
    return {f["code"]: f for f in out["findings"]}


def test_doctor_says_the_chip_waits_in_download_mode(virtual):
    dev = virtual("rak11200", boot_pin=True)
    code, out = cli_json("doctor", "--port", dev.port, "--module", "rak11200")
    f = findings(out)["esp-download-mode"]
    assert code == 0 and f["level"] == "action" and "let go of GPIO0" in f["next"]
    assert f["mac"] == dev.chip.mac.hex(":") and f["command"] == f"rakflash flash FIRMWARE.bin --port {dev.port}"
    assert "silent" not in findings(out) and "application" not in findings(out)


def test_doctor_asks_a_chip_it_can_reset_and_checks_a_file(virtual, tmp_path):
    dev = virtual("rak3112", transport="tcp")
    (tmp_path / "ok.bin").write_bytes(app())
    (tmp_path / "esp32.bin").write_bytes(app(chip=0))
    code, out = cli_json("doctor", "--port", dev.port, "--for", str(tmp_path / "ok.bin"))
    assert code == 0, out
    f = findings(out)
    assert f["esp-chip"]["level"] == "ok" and f["image-fits"]["command"].startswith("rakflash flash")
    assert dev.wait_mode("app") and dev.flash.programs == 0
    code, out = cli_json("doctor", "--port", dev.port, "--for", str(tmp_path / "esp32.bin"))
    assert code == 6 and findings(out)["wrong-target"]["level"] == "problem"


def test_doctor_names_the_pin_when_nothing_reaches_the_rom(virtual):
    dev = virtual("rak3112")                # a pty: no RTS/DTR, the app runs
    assert dev.wait_mode("app")
    code, out = cli_json("doctor", "--port", dev.port)
    f = findings(out)["download-mode-failed"]
    assert code == 5 and "GPIO0 (the BOOT pad)" in f["next"] and dev.mode == Mode.APP


def test_doctor_on_a_chip_with_no_firmware_says_to_write_a_merged_binary(virtual):
    dev = virtual("rak3112", state="erased", boot_pin=True)
    code, out = cli_json("doctor", "--port", dev.port, "--module", "rak3112")
    f = findings(out)["esp-no-firmware"]
    assert code == 0 and f["level"] == "action"          # something for the person to do, not a fault
    assert "MERGED.bin" in f["command"] and "no partition table" in f["finding"]


# ------------------------------------------------------------------ fleet

def test_several_esp_modules_at_once_with_a_report(virtual, tmp_path):
    devs = [virtual("rak3112", transport="tcp") for _ in range(2)]
    (tmp_path / "app.bin").write_bytes(app())
    ports = [a for d in devs for a in ("--port", d.port)]
    proc = run_cli("flash", str(tmp_path / "app.bin"), *ports, "--yes", "--report", str(tmp_path / "r.jsonl"),
                   timeout=180)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert sorted(r["port"] for r in records) == sorted(d.port for d in devs)
    assert all(r["result"] == "ok" and r["app_version_after"] == "1.1.0" for r in records)
    assert {r["serial_number"] for r in records} == {d.chip.mac.hex(":") for d in devs}   # the MAC
    assert all(d.wait_mode("app") and d.app_version == "1.1.0" for d in devs)


# ------------------------------------------------------------------ the web page

def test_the_page_inspects_identifies_and_flashes_an_esp_module(web, virtual, tmp_path):
    httpx = need("httpx", "the web tests' HTTP client")
    dev = virtual("rak3112", transport="tcp")
    server = web(dev)
    (tmp_path / "app.bin").write_bytes(app())
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert {"rak3112", "rak11200"} <= {m["key"] for m in c.get("api/modules").json()["modules"]}
        port = next(p for p in c.get("api/ports").json()["ports"] if p["port"] == dev.port)
        assert port["controls"]["boot_pin"] == "GPIO0" and port["controls"]["boot_level"] == "low"
        up = c.post("api/images", content=(tmp_path / "app.bin").read_bytes(), headers={"X-File-Name": "app.bin"})
        assert up.status_code == 200 and up.json()["inspect"]["format"] == "esp-app", up.text
        ident = c.post("api/identify", json={"port": dev.port})
        assert ident.status_code == 200 and ident.json()["chip"]["chip"] == "ESP32-S3", ident.text
        job = c.post("api/flash", json={"port": dev.port, "image": up.json()["image"]}).json()["job"]
        state = lambda: next(j for j in c.get("api/jobs").json()["jobs"] if j["id"] == job)   # noqa: E731
        wait_for(lambda: state()["state"] == "confirm", what="the plan to wait for confirmation")
        assert dev.flash.programs == 0
        c.post(f"api/jobs/{job}/answer", json={"write": True})
        done = wait_for(lambda: (s := state())["state"] == "done" and s, timeout=60, what="the update")
    result = done["result"]
    assert (result["outcome"], result["written"], result["app_version_after"]) == ("ok", "all", "1.1.0")
    assert result["verified"] and dev.app_version == "1.1.0"
