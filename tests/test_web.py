"""`rakflash web` without a browser: who may use it, one operation per port, jobs that outlive the page.

Every request goes over a real loopback socket to the real server (uvicorn), as
a browser's or another web site's would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import FAST_BAUD, SRC, cli_json, run_cli
from web_support import NEW, OLD, firmware_file, need, wait_for, web  # noqa: F401  (web is a fixture)

httpx = need("httpx", "the web tests' HTTP client")


def client(server, **headers) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers=headers)


def upload(c, path) -> dict:
    r = c.post("api/images", content=path.read_bytes(), headers={"X-File-Name": path.name})
    assert r.status_code == 200, r.text
    return r.json()


def job_state(c, job_id: str) -> dict:
    return next(j for j in c.get("api/jobs").json()["jobs"] if j["id"] == job_id)


# ------------------------------------------------------------------ who may use it

def test_every_request_needs_this_runs_secret(web):
    server = web()
    root = f"http://127.0.0.1:{server.port}"
    with httpx.Client(timeout=30) as c:
        for path in ("/", "/api/ports", "/static/app.js", f"/{'x' * len(server.token)}/api/ports",
                     f"/{server.token}x/api/ports", f"/{server.token[:-1]}/"):
            r = c.get(root + path)
            assert r.status_code == 403, path
            assert "secret" in r.text and "open the address it printed" in r.text
        assert c.post(root + "/api/flash", json={"port": "/dev/null", "image": "x"}).status_code == 403
        page = c.get(server.url)
        assert page.status_code == 200 and "<title>rakflash</title>" in page.text
        assert c.get(server.url + "static/app.js").status_code == 200
        assert c.get(server.url + "api/ports").json()["ports"] is not None
        assert c.get(root + f"/{server.token}", follow_redirects=True).url == server.url
        # Kept out of frames (clickjacking), caches, and Referer headers.
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"


def test_a_host_other_than_the_loopback_one_is_refused(web):
    """DNS rebinding: a web site that points its own name at 127.0.0.1 is still refused."""
    server = web()
    p = server.port
    with client(server) as c:
        for host in (f"evil.example:{p}", f"localhost.evil.example:{p}", f"127.0.0.1.nip.io:{p}",
                     f"127.0.0.1:{p + 1}", "127.0.0.1"):
            r = c.get("api/ports", headers={"Host": host})
            assert r.status_code == 403, host
            assert "Host" in r.text and host in r.text
        for host in (f"127.0.0.1:{p}", f"localhost:{p}", f"LOCALHOST:{p}"):
            assert c.get("api/ports", headers={"Host": host}).status_code == 200, host


def test_a_foreign_origin_is_refused_before_it_touches_a_port(web, virtual):
    dev = virtual("rak3172")
    server = web(dev)
    p = server.port
    body = {"port": dev.port, "baud": FAST_BAUD}
    with client(server) as c:
        for origin in ("http://evil.example", "null", f"http://localhost:{p + 1}", f"https://127.0.0.1:{p}"):
            r = c.post("api/identify", json=body, headers={"Origin": origin})
            assert r.status_code == 403, origin
            assert "other web sites" in r.text
            assert c.post("api/flash", json={**body, "image": "x"}, headers={"Origin": origin}).status_code == 403
            assert c.get("api/events", headers={"Origin": origin}).status_code == 403
        # A request the browser marks as coming from another site, even without an Origin.
        assert c.post("api/identify", json=body, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert server.seen == {} and server.board.jobs == {}       # nothing was run
        # The page itself (its own origin, as the browser sends it) is served.
        r = c.post("api/identify", json=body, headers={"Origin": f"http://127.0.0.1:{p}",
                                                       "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 200 and (r.json()["module"], r.json()["app_version"]) == ("RAK3172", OLD)


def test_binds_loopback_only_by_default(web):
    server = web()
    assert server.sock.getsockname()[0] == "127.0.0.1"
    assert server.url.startswith(f"http://127.0.0.1:{server.port}/")
    proc = run_cli("web", "--host", "0.0.0.0", "--no-browser", timeout=30)
    assert proc.returncode == 2
    assert "every address" in proc.stderr and "--host" in proc.stderr


def test_every_spelling_of_all_interfaces_is_refused():
    """'0', '0.0', '000.000.000.000' are 0.0.0.0 to the socket layer (inet_aton), and
    '::ffff:0.0.0.0' is its IPv4-mapped form: each would listen on every interface."""
    from rakflash.web.guard import AddressRefused, listen_address
    for host in ("0", "0.0", "000.000.000.000", "0.0.0.0", "::", "::ffff:0.0.0.0", "0:0:0:0:0:0:0:0"):
        with pytest.raises(AddressRefused):
            listen_address(host)
    assert listen_address("127.1")[1] == "127.0.0.1"
    for host in ("0", "000.000.000.000", "::ffff:0.0.0.0"):
        proc = run_cli("web", "--host", host, "--no-browser", timeout=30)
        assert proc.returncode == 2, (host, proc.stdout, proc.stderr)
        assert "every address" in proc.stderr, host


def test_host_must_name_the_address_the_server_really_listens_on(web):
    """Served on 127.0.0.2 (another address of this computer), a request that says it called
    127.0.0.1 or localhost — which cannot reach this socket — is refused."""
    server = web(host="127.0.0.2")
    assert server.sock.getsockname()[0] == "127.0.0.2"
    p = server.port
    with httpx.Client(timeout=30) as c:
        url = f"http://127.0.0.2:{p}/{server.token}/api/ports"
        assert c.get(url).status_code == 200
        for host in (f"127.0.0.1:{p}", f"localhost:{p}", f"[::1]:{p}"):
            r = c.get(url, headers={"Host": host})
            assert r.status_code == 403, host


def test_a_json_body_is_bounded_and_must_say_it_is_json(web, virtual):
    server = web()
    dev = virtual("rak3172")
    with client(server) as c:
        huge = b'{"port": "' + b"x" * (8 << 20) + b'"}'
        r = c.post("api/identify", content=huge, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "KiB" in r.json()["message"]

        def chunks():                      # no Content-Length: refused once it passes the bound
            for _ in range(1024):
                yield b" " * 65536
        r = c.post("api/identify", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        r = c.post("api/identify", content=json.dumps({"port": dev.port, "baud": FAST_BAUD}),
                   headers={"Content-Type": "text/plain"})
        assert r.status_code == 415 and "application/json" in r.json()["message"]
        assert server.seen == {}                                          # nothing was opened
        assert c.post("api/identify", json={"port": dev.port, "baud": FAST_BAUD}).json()["module"] == "RAK3172"


def test_the_page_opens_only_what_looks_like_a_serial_port(web, tmp_path):
    server = web(ports=["socket://192.0.2.1:4000"])      # the person's own command line may
    with client(server) as c:
        for port in ("/etc/passwd", "/dev/zero", "/dev/tty", "hwgrep://.*", "loop://", "spy:///dev/pts/1",
                     "socket://192.0.2.7:4000", "socket://nohost", str(tmp_path)):
            for path, body in (("api/ports", {"port": port}), ("api/identify", {"port": port}),
                               ("api/doctor", {"port": port}),
                               ("api/flash", {"ports": [port, "/dev/ttyUSB9"], "image": "x"})):
                r = c.post(path, json=body)
                assert r.status_code == 400, (path, port, r.text)
                assert "serial" in r.json()["message"] or "computer" in r.json()["message"] \
                    or "host" in r.json()["message"], r.text
        listed = [e["port"] for e in c.get("api/ports").json()["ports"]]
        assert "/etc/passwd" not in listed and "socket://192.0.2.1:4000" in listed
        # What looks like a port on this computer may still be added (it may be plugged in later).
        for port in ("/dev/ttyUSB9", "COM7", "socket://127.0.0.1:4000"):
            assert c.post("api/ports", json={"port": port}).status_code == 200, port


def test_the_command_prints_its_address_serves_and_stops_on_ctrl_c():
    need("uvicorn", "the web extra")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "web", "--no-browser", "--sim", "rak3172"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        virtual_line = proc.stdout.readline()
        url_line = proc.stdout.readline()
        assert virtual_line.startswith(("virtual RAK3172 on /dev/pts/", "virtual RAK3172 on rfc2217://")), \
            virtual_line     # (not stderr: it stays open while the server runs)
        assert url_line.startswith("rakflash web: http://127.0.0.1:"), url_line
        port = virtual_line.split(" on ", 1)[1].strip()
        url = url_line.split(": ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=30) as c:
            listed = wait_for(lambda: _get_ok(c, "api/ports"), what="the server to answer")
            assert any(e["port"] == port and e["resettable"] and e["probably"] == "RAK3172" for e in listed["ports"])
            info = c.post("api/identify", json={"port": port}).json()
            assert (info["module"], info["mode"], info["app_version"]) == ("RAK3172", "app", OLD)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _get_ok(c, path):
    try:
        r = c.get(path)
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


# ------------------------------------------------------------------ what it does

def test_a_dropped_file_is_inspected_as_inspect_does(web, tmp_path, cat):
    server = web()
    with client(server) as c:
        d = upload(c, firmware_file(tmp_path / "RAK3172_new.bin", cat))
        i = d["inspect"]
        assert d["error"] is None and d["name"] == "RAK3172_new.bin"
        assert (i["path"], i["module"], i["app_version"]) == ("RAK3172_new.bin", "RAK3172", NEW)
        assert i["regions"][0]["name"] == "application" and i["regions"][0]["start"] == 0x08006000
        for sneaky in ("..", "../../etc/passwd", "a/b\\..\\.."):
            r = c.post("api/images", content=b"\x00" * 64, headers={"X-File-Name": sneaky})
            assert r.status_code == 200 and "/" not in r.json()["name"] and r.json()["name"] not in ("..", ".")
        cut = tmp_path / "cut.hex"
        cut.write_text(":020000040800F2\n:10000000000001200D0100080D0100080D010008B2\n")
        bad = upload(c, cut)
        assert bad["inspect"] is None and bad["error"].startswith("image-") and bad["hint"]


def test_one_operation_per_port_and_nothing_written_until_confirmed(web, virtual, tmp_path, cat):
    dev = virtual("rak3172")
    server = web(dev)
    with client(server) as c:
        image = upload(c, firmware_file(tmp_path / "new.bin", cat))["image"]
        r = c.post("api/flash", json={"port": dev.port, "image": image, "baud": FAST_BAUD})
        assert r.status_code == 202
        job = r.json()["job"]
        wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the plan to wait for confirmation")
        assert dev.updates == 0 and dev.app_version == OLD
        busy = c.post("api/identify", json={"port": dev.port, "baud": FAST_BAUD})
        assert busy.status_code == 409
        assert busy.json()["error"] == "port-busy" and "a plan for new.bin waits for its confirmation" in busy.json()["message"]
        again = c.post("api/flash", json={"port": dev.port, "image": image, "baud": FAST_BAUD})
        assert again.status_code == 409 and again.json()["error"] == "port-busy"
        assert c.post(f"api/jobs/{job}/answer", json={"write": False}).status_code == 200
        done = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s, what="the job to end")
        result = done["result"]
        assert (result["outcome"], result["error"], result["written"]) == ("aborted", "aborted", "nothing")
        assert result["app_version_before"] == OLD
        assert c.post(f"api/jobs/{job}/answer", json={"write": True}).status_code == 409
        assert dev.updates == 0 and dev.wait_mode("app")
        ok = c.post("api/identify", json={"port": dev.port, "baud": FAST_BAUD})
        assert ok.status_code == 200 and ok.json()["app_version"] == OLD


def test_an_update_runs_without_any_page_watching_and_replays_its_story(web, virtual, tmp_path, cat):
    """The job belongs to the server: no tab is needed while it runs, and a later one sees it all."""
    dev = virtual("rak3172")
    server = web(dev)
    with client(server) as c:
        image = upload(c, firmware_file(tmp_path / "new.bin", cat))["image"]
        job = c.post("api/flash", json={"port": dev.port, "image": image, "baud": FAST_BAUD}).json()["job"]
        wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the confirmation")
        c.post(f"api/jobs/{job}/answer", json={"write": True})
        wait_for(lambda: job_state(c, job)["state"] == "done", what="the update to end")
        assert dev.app_version == NEW
        events = []
        with c.stream("GET", "api/events") as stream:
            kind = "message"
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
                    last, kind = events[-1], "message"
                    if last[0] == "message" and last[1]["event"] == "job" and last[1]["state"] == "done":
                        break
    assert any(k == "ports" and any(p["port"] == dev.port for p in d) for k, d in events)
    story = [d for k, d in events if k == "message"]
    kinds = [d["event"] for d in story]
    assert kinds[0] == "job" and kinds[-2:] == ["result", "job"]
    assert [d["phase"] for d in story if d["event"] == "phase"][:1] == ["identify"]
    order = [kinds.index(k) for k in ("plan", "prompt", "progress", "result")]
    assert order == sorted(order)
    prompt = next(d for d in story if d["event"] == "prompt")
    assert prompt["action"] == "confirm-write" and f"bytes to RAK3172 on {dev.port}" in prompt["message"]
    progress = [d for d in story if d["event"] == "progress"]
    assert progress[-1]["bytes"] == progress[-1]["total"] == 16 * 1024
    result = story[-2]
    assert (result["result"], result["app_version_before"], result["app_version_after"]) == ("ok", OLD, NEW)
    assert result["settings_kept"] is True and result["written"] == "all"
    assert [d["seq"] for d in story] == sorted(d["seq"] for d in story)


def test_requests_the_page_never_sends_get_a_clear_400(web, virtual, tmp_path, cat):
    dev = virtual("rak3172")
    server = web(dev)
    with client(server) as c:
        image = upload(c, firmware_file(tmp_path / "new.bin", cat))["image"]
        for body in ({"image": image}, {"port": dev.port}, {"port": dev.port, "image": "gone"},
                     {"port": dev.port, "image": image, "baud": "fast"},
                     {"port": dev.port, "image": image, "reset_line": "cts"}):
            r = c.post("api/flash", json=body)
            assert r.status_code == 400 and r.json()["error"] == "usage", body
        r = c.post("api/flash", json={"port": dev.port, "image": image, "module": "rak9999"})
        assert r.status_code == 400 and r.json()["error"] == "unknown-device" and "rak3172" in r.json()["hint"]
        assert c.post("api/identify", content=b"not json",
                      headers={"Content-Type": "application/json"}).status_code == 400
        assert c.post("api/identify", content=b"not json").status_code == 415     # not said to be JSON
        assert c.post("api/virtual/reset", json={"port": "/dev/ttyS0"}).status_code == 400
        assert server.board.jobs == {}


def test_doctor_on_the_page_is_doctor_for_the_dropped_file(web, virtual, tmp_path, cat):
    dev = virtual("rak3172")
    server = web(dev)
    with client(server) as c:
        image = upload(c, firmware_file(tmp_path / "RAK3172 new.bin", cat))["image"]
        report = c.post("api/doctor", json={"port": dev.port, "image": image, "baud": FAST_BAUD}).json()
        fits = next(f for f in report["findings"] if f["code"] == "image-fits")
        assert fits["level"] == "ok" and fits["finding"].startswith("RAK3172 new.bin fits")
        # The command names the file as the person knows it, not where the server keeps it.
        assert fits["command"] == f"rakflash flash 'RAK3172 new.bin' --port {dev.port} --baud {FAST_BAUD}"
        assert "rakflash-web-" not in json.dumps(report)
        assert report["result"] == "ok" and report["devices"][0]["app_version"] == OLD
        listed = next(p for p in c.get("api/ports").json()["ports"] if p["port"] == dev.port)
        assert listed["seen"]["app_version"] == OLD


def test_recovery_waits_for_its_confirmation_and_refuses_what_it_cannot_do(web, virtual, tmp_path, cat,
                                                                            monkeypatch):
    from fake_pyocd import FakePyOCD, FakeWorld
    from rakflash import swd_link
    from rakflash.sim import firmware
    # The probe on the desk, and which CMSIS packs this computer's pyOCD has (changed below).
    world = FakeWorld(installed={cat.module("rak4270").swd_target})
    monkeypatch.setattr(swd_link, "pyocd_api", lambda: FakePyOCD(world))
    dev = virtual("rak811", bootloader_version="3.0.2", app_version="V3.0.0.13.H")
    server = web(dev)
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak811"), "V3.0.5", "V3.0.0.14.H", 4096))
    with client(server) as c:
        image = upload(c, full)["image"]
        resets = dev.resets
        job = c.post("api/recover", json={"port": dev.port, "image": image, "baud": FAST_BAUD,
                                          "window": 2}).json()["job"]
        wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the recovery's confirmation")
        assert dev.bootloader_version == "V3.0.2" and dev.resets == resets   # untouched so far
        c.post(f"api/jobs/{job}/answer", json={"write": False})
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"], what="the end")
        assert (result["outcome"], result["error"], result["written"]) == ("aborted", "aborted", "nothing")
        assert result["module"] == "RAK811"
        # A module with no BOOT0 pin on its pads: the ROM way is refused with the way that works
        # (SWD, which is the RAK4270's own way: planned and confirmed like any other).
        rak4270 = tmp_path / "RAK4270_FULL.hex"
        rak4270.write_text(firmware.combined_hex(cat.module("rak4270"), "V3.0.5", "V3.0.0.14.H", 4096))
        other = upload(c, rak4270)["image"]
        job = c.post("api/recover", json={"port": dev.port, "image": other, "module": "rak4270",
                                          "method": "stm32-rom"}).json()["job"]
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"], what="the end")
        assert (result["outcome"], result["error"]) == ("refused", "recovery-unavailable")
        assert result["written"] == "nothing" and "pyocd flash -t stm32l071kbux" in result["hint"]
        job = c.post("api/recover", json={"port": dev.port, "image": other, "module": "rak4270"}).json()["job"]
        wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the SWD recovery's confirmation")
        c.post(f"api/jobs/{job}/answer", json={"write": False})
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"], what="the end")
        assert (result["outcome"], result["written"]) == ("aborted", "nothing")
        # Without the target's pack (or without pyOCD), the page says so before the plan and its
        # confirmation, as `rakflash recover` does — not once the person has confirmed.
        world.installed = set()
        job = c.post("api/recover", json={"port": dev.port, "image": other, "module": "rak4270"}).json()["job"]
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"], what="the end")
        assert (result["error"], result["written"]) == ("pack-missing", "nothing"), result
        assert "pyocd pack install stm32l071kbux" in result["hint"]
        assert "plan" not in [e["event"] for e in server.board.jobs[job].events]
        def no_pyocd():
            raise swd_link.SwdUnavailable("SWD needs pyOCD, which is not installed")
        monkeypatch.setattr(swd_link, "pyocd_api", no_pyocd)
        job = c.post("api/recover", json={"port": dev.port, "image": other, "module": "rak4270"}).json()["job"]
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"], what="the end")
        assert result["error"] == "swd-unavailable" and "rakflash[swd]" in result["hint"], result
        assert c.post("api/recover", json={"port": dev.port, "image": image, "reset_with": "cts"}).status_code == 400
    assert dev.bootloader_version == "V3.0.2" and dev.updates == 0 and dev.resets == resets


def test_stop_ends_the_update_cleanly_and_the_next_check_finishes_it(web, virtual, tmp_path, cat):
    """The page's Stop is the command's Ctrl-C: the transfer session is ended, the module waits in
    its bootloader, and checking the plan again and flashing finishes the job."""
    dev = virtual("rak3172", baud=115200)
    server = web(dev)
    with client(server) as c:
        image = upload(c, firmware_file(tmp_path / "new.bin", cat, size=64 * 1024))["image"]

        def flash_confirmed() -> str:
            job = c.post("api/flash", json={"port": dev.port, "image": image}).json()["job"]
            wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the confirmation")
            c.post(f"api/jobs/{job}/answer", json={"write": True})
            return job

        job = flash_confirmed()
        wait_for(lambda: any(e["event"] == "progress" and 0 < e["bytes"] < e["total"]
                             for e in server.board.jobs[job].events), what="the transfer to be under way")
        assert c.post(f"api/jobs/{job}/stop").status_code == 200
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"], what="the stop")
        assert (result["result"], result["outcome"], result["written"]) == ("interrupted", "stopped", "part")
        assert "waits in its bootloader" in result["hint"] and result["app_version_before"] == OLD
        assert c.post(f"api/jobs/{job}/stop").status_code == 409
        assert dev.wait_mode("bootloader") and dev.updates == 0

        job = flash_confirmed()                       # the re-run finds it waiting and finishes
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"],
                          timeout=60, what="the second update")
        assert (result["result"], result["app_version_after"]) == ("ok", NEW), result
        plan = next(e for e in server.board.jobs[job].events if e["event"] == "plan")
        assert plan["mode"] == "bootloader"
    assert dev.app_version == NEW and dev.updates == 1


def test_a_question_takes_only_an_answer_that_fits_it(web, virtual, tmp_path, cat):
    dev = virtual("rak4270", board_status=False)
    server = web(dev)
    with client(server) as c:
        image = upload(c, firmware_file(tmp_path / "fw.bin", cat, module="rak4270", version="V3.0.0.15.H"))["image"]
        job = c.post("api/flash", json={"port": dev.port, "image": image, "baud": FAST_BAUD}).json()["job"]
        wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the question")
        prompt = [e for e in server.board.jobs[job].events if e["event"] == "prompt"][-1]
        assert prompt["action"] == "choose-module"
        assert [m["key"] for m in prompt["candidates"]] == ["rak811", "rak4270"]
        for wrong in ({"module": "rak3172"}, {"write": True}, {"module": 7}):
            assert c.post(f"api/jobs/{job}/answer", json=wrong).status_code in (400, 409), wrong
        assert c.post(f"api/jobs/{job}/answer", json={"module": "rak4270"}).status_code == 200
        wait_for(lambda: [e for e in server.board.jobs[job].events if e["event"] == "prompt"][-1]["action"]
                 == "confirm-write", what="the confirmation")
        c.post(f"api/jobs/{job}/answer", json={"write": False})
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"], what="the end")
        assert (result["outcome"], result["module"]) == ("aborted", "RAK4270")
    assert dev.updates == 0


def test_several_modules_at_once_plans_first_then_one_confirmation_and_a_report(web, virtual, tmp_path, cat):
    a, b = virtual("rak3172", serial_number="SIMA"), virtual("rak3172", serial_number="SIMB")
    other = virtual("rak811")                       # RAK3172 firmware: refused before anything is written
    server = web(a, b, other)
    ports = [a.port, b.port, other.port]
    with client(server) as c:
        image = upload(c, firmware_file(tmp_path / "fleet.bin", cat))["image"]
        job = c.post("api/flash", json={"ports": ports, "image": image, "baud": FAST_BAUD}).json()["job"]
        wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the plans")
        events = server.board.jobs[job].events
        plans = {e["port"] for e in events if e["event"] == "plan"}
        assert plans == {a.port, b.port} and a.updates == b.updates == other.updates == 0
        refused = next(e for e in events if e["event"] == "device-result" and e["port"] == other.port)
        assert refused["result"] == "wrong-target"
        prompt = [e for e in events if e["event"] == "prompt"][-1]
        assert prompt["message"] == f"Write fleet.bin to the modules on {a.port}, {b.port}?"
        for p in ports:                              # every port is held while the job runs
            assert c.post("api/identify", json={"port": p, "baud": FAST_BAUD}).status_code == 409
        assert c.get(f"api/jobs/{job}/report").status_code == 404
        c.post(f"api/jobs/{job}/answer", json={"write": True})
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"],
                          timeout=60, what="the fleet")
        assert (result["outcome"], result["written"], result["ok"], result["failed"]) == ("failed", "part", 2, 1)
        by_port = {d["port"]: d for d in result["devices"]}
        assert by_port[a.port]["app_version_after"] == by_port[b.port]["app_version_after"] == NEW
        assert by_port[other.port]["error"] == "wrong-target"
        lines = [json.loads(ln) for ln in c.get(f"api/jobs/{job}/report").text.splitlines()]
        assert sorted((r["port"], r["serial_number"], r["result"]) for r in lines) == \
            sorted([(a.port, "SIMA", "ok"), (b.port, "SIMB", "ok")])
        assert all(r["image"] == "fleet.bin" and r["image_sha256"] and r["dev_eui"] for r in lines)
    assert a.app_version == b.app_version == NEW and other.updates == 0


def test_ctrl_c_twice_stops_a_running_update_cleanly(tmp_path, cat):
    """Ctrl-C on the server waits for a running update; a second one stops it as Ctrl-C stops
    'flash': the transfer session ends, the module waits in its bootloader for the next run."""
    need("uvicorn", "the web extra")
    from test_cli import SimProcess
    sim = SimProcess("rak3172", "--flash-scale", "0", "--latency-ms", "0.2")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "web", "--no-browser", "--port", sim.port],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = proc.stdout.readline().split(": ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=30) as c:
            # ~17 s of writing at 115200 baud: still under way when the Ctrl-Cs come, even on a
            # loaded machine (the second one ends it within a second or two).
            image = upload(c, firmware_file(tmp_path / "new.bin", cat, size=190 * 1024))["image"]
            job = c.post("api/flash", json={"port": sim.port, "image": image}).json()["job"]
            wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the confirmation")
            c.post(f"api/jobs/{job}/answer", json={"write": True})
            wait_for(lambda: c.get("api/jobs").json() and _writing(c, url, job), what="the transfer")
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "waiting for 1 running operation" in proc.stderr.readline(), what="the notice")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 130
        said = proc.stderr.read()
        assert f"{sim.port}: interrupted stopped by Ctrl-C on the server" in said, said
        code, info = cli_json("info", "--port", sim.port)
        assert (code, info["mode"], info["app_version"]) == (0, "bootloader", None), info
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sim.stop()


def _writing(c, url, job) -> bool:
    """The job's write phase has begun (its story, as the page gets it, shows a write phase)."""
    with c.stream("GET", "api/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: ") and f'"job": "{job}"' in line:
                event = json.loads(line[6:])
                if event.get("event") == "progress" and event.get("bytes", 0) > 0:
                    return True
                if event.get("event") == "result":
                    return False
            elif line.startswith(": "):        # a keep-alive: the story so far is told
                return False
    return False


def test_a_recovery_that_never_got_a_handshake_wrote_nothing(web, virtual, tmp_path, cat):
    # Issue 17.4, the other way round: the page said written: true once the person had confirmed.
    from rakflash.sim import firmware
    dev = virtual("rak811")
    server = web(dev)
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(cat.module("rak811"), "V3.0.5", "V3.0.0.14.H", 4096))
    with client(server) as c:
        image = upload(c, full)["image"]
        job = c.post("api/recover", json={"port": dev.port, "image": image, "baud": FAST_BAUD,
                                          "window": 1}).json()["job"]
        wait_for(lambda: job_state(c, job)["state"] == "confirm", what="the recovery's confirmation")
        c.post(f"api/jobs/{job}/answer", json={"write": True})       # …and nobody holds BOOT0
        result = wait_for(lambda: (s := job_state(c, job))["state"] == "done" and s["result"],
                          timeout=60, what="the end")
    assert (result["outcome"], result["error"], result["written"]) == ("failed", "no-handshake", "nothing")
    assert dev.updates == 0 and dev.rom_sessions == 0
