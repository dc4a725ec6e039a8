"""`rakflash flash / info / inspect` with the two RAK4631 variants, end to end through the CLI.

The virtual modules run in this process; the CLI in a subprocess finds their
re-enumerated ports through the virtual USB port registry (conftest points
RAKFLASH_VIRTUAL_PORTS at a folder of this test's own).
"""

from __future__ import annotations

import json

import pytest

from conftest import cli_json, run_cli, signal_when
from rakflash import dfu_package as dp
from rakflash import ports
from rakflash.errors import PortNotBack
from rakflash.sim import firmware
from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD

KEY = dp.new_signing_key()


@pytest.fixture
def rak4631(virtual):
    """conftest's ``virtual`` with a native USB port's line, and the key its bootloader trusts."""
    def make(name="rak4631", **kw):
        kw.setdefault("baud", USB_FULL_SPEED_BAUD)
        if name in ("rak4631", "rak3401"):
            kw.setdefault("dfu_key", KEY)
        return virtual(name, **kw)

    return make


def rui3_package(tmp_path, dev, version="RUI_4.0.6_RAK4631", size=24_000, **kw):
    """A signed RUI3 package (``dev``: a virtual module, or the catalog module itself)."""
    kw.setdefault("key_pem", KEY)
    kw.setdefault("fw_version", 2)
    path = tmp_path / f"{version}.zip"
    module = getattr(dev, "module", dev)
    path.write_bytes(dp.secure_package(firmware.app_image(module, version, size), **kw))
    return str(path)


def arduino_package(tmp_path, module, version="ARDUINO_SKETCH_1.1", size=16_000):
    path = tmp_path / f"{version}.zip"
    path.write_bytes(dp.legacy_package(firmware.app_image(module, version, size)))
    return str(path)


def events(proc):
    return [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]


@pytest.mark.parametrize("name, board", [("rak4631", "RAK4631"), ("rak3401", "RAK3401")])
def test_flash_a_rui3_package_end_to_end(rak4631, tmp_path, name, board):
    """The RAK4631-R, and the RAK3401 (RUI3 on the same chip, bootloader and DFU; its own image)."""
    dev = rak4631(name)
    pkg = rui3_package(tmp_path, dev, version=f"RUI_4.0.6_{board}")
    proc = run_cli("flash", pkg, "--port", dev.port, "--yes", "--json", timeout=90)
    evs = events(proc)
    result = evs[-1]
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert (result["result"], result["app_version_before"], result["app_version_after"]) == \
        ("ok", f"RUI_4.0.5_{board}", f"RUI_4.0.6_{board}")
    assert result["settings_kept"] is True
    notes = [e["message"] for e in evs if e.get("event") == "note"]
    assert any("re-enumerated as its bootloader" in n for n in notes)
    assert any("re-enumerated as its application" in n for n in notes)
    progress = [e for e in evs if e.get("event") == "progress"]
    assert progress[-1]["bytes"] == progress[-1]["total"] == 24_000
    assert dev.updates == 1 and dev.app_version == f"RUI_4.0.6_{board}"


def test_an_update_cut_mid_object_is_finished_by_running_it_again(rak4631, tmp_path):
    dev = rak4631()
    pkg = rui3_package(tmp_path, dev, size=40_000)
    # The power goes during the sixth 4 KiB object, counted from the bytes the module takes in.
    dev.opts.faults.power_cut_after = dev.opts.faults.received + 6 * 4096 + 2500
    code, out = cli_json("flash", pkg, "--port", dev.port, "--yes", timeout=90)
    assert code == 4 and out["error"] == "port-disconnected"
    assert "run the same command again" in out["hint"]
    boot = ports.wait_for_port("rak4631-r", "bootloader", timeout=5)
    proc = run_cli("flash", pkg, "--port", boot.device, "--yes", "--json", timeout=90)
    evs = events(proc)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert evs[-1]["app_version_after"] == "RUI_4.0.6_RAK4631"
    resumed = [e["message"] for e in evs if e.get("event") == "note" and "resumed at byte" in e["message"]]
    assert resumed and "of 40,000" in resumed[0]
    first = next(e for e in evs if e.get("event") == "progress")
    assert first["bytes"] >= 4 * 4096                  # it did not start over
    # The result says what this run sent, and where it resumed: not the whole image as if sent now.
    result = evs[-1]
    assert result["bytes"] == 40_000 and result["resumed_at"] == first["bytes"]
    assert result["bytes_sent"] == 40_000 - first["bytes"]
    assert result["bytes_per_second"] == pytest.approx(result["bytes_sent"] / result["transfer_seconds"],
                                                       rel=0.05)


def test_the_done_line_of_a_resumed_update_says_what_was_sent():
    from rakflash.cli.flash import done_line
    from rakflash.flows.update import UpdateResult
    result = UpdateResult("ok", "RAK4631-R", None, "RUI_4.0.6_RAK4631", 122_880, 3.0, 0.0, 2.0,
                          resumed_at=57_344)
    line = done_line(result, None)
    assert "65,536 bytes sent, resumed at byte 57,344 of 122,880" in line
    assert "122,880 bytes in" not in line
    assert result.to_dict()["bytes_sent"] == 65_536 and result.to_dict()["resumed_at"] == 57_344
    assert "32.0 KiB/s" in line                       # 65,536 bytes in the 2 s of transfer


@pytest.mark.parametrize("make, words", [
    (lambda tmp, dev: arduino_package(tmp, dev.module), "Arduino package"),
    (lambda tmp, dev: rui3_package(tmp, dev, sd_req=(0x00B6,)), "Extended Error 0x07"),
    (lambda tmp, dev: rui3_package(tmp, dev, key_pem=None), "not signed"),
])
def test_rui3_module_refuses_wrong_packages_before_sending(rak4631, tmp_path, make, words):
    dev = rak4631()
    code, out = cli_json("flash", make(tmp_path, dev), "--port", dev.port, "--yes", timeout=60)
    assert code == 6 and out["error"] == "package-mismatch" and words in out["message"]
    assert "nothing was sent" in out["message"] and out["hint"]
    assert dev.resets == 0 and dev.mode.value == "app" and dev.app_version == "RUI_4.0.5_RAK4631"


def test_arduino_module_refuses_a_rui3_package_before_the_bootloader_erases_its_sketch(rak4631, tmp_path, cat):
    dev = rak4631("rak4631-arduino")
    pkg = rui3_package(tmp_path, cat.module("rak4631-r"))
    code, out = cli_json("flash", pkg, "--port", dev.port, "--yes", timeout=60)
    assert code == 6 and out["error"] == "package-mismatch" and "RUI3 package" in out["message"]
    # The way there is rakflash's own command, with this package and this port — not another tool.
    assert "bootloader must be replaced first" in out["hint"]
    assert f"rakflash convert-to-rui3 rui3_nrf52840_bootloader_latest.zip {pkg} --port {dev.port}" \
        in out["hint"]
    assert "adafruit-nrfutil …" not in out["hint"] and "--singlebank" not in out["hint"]
    assert dev.resets == 0 and dev.app_version == "ARDUINO_SKETCH_1.0"


def test_flash_an_arduino_sketch_package_with_the_1200_baud_touch(rak4631, tmp_path):
    dev = rak4631("rak4631-arduino")
    proc = run_cli("flash", arduino_package(tmp_path, dev.module), "--port", dev.port, "--yes", "--json",
                   timeout=90)
    evs = events(proc)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert evs[-1]["result"] == "ok" and evs[-1]["app_version_after"] is None
    assert evs[-1]["version_confirmed"] is False
    assert any("can't be asked for its version" in e.get("message", "") for e in evs)
    assert dev.updates == 1 and dev.app_version == "ARDUINO_SKETCH_1.1"
    assert ports.port_entry(dev.port).pid == 0x8029


def test_an_arduino_update_says_only_what_it_can_confirm(rak4631, tmp_path):
    """A sketch can't be asked its version: the plan doesn't promise to, and `done:` says why
    instead of pointing at a warning that was never printed."""
    dev = rak4631("rak4631-arduino")
    proc = run_cli("flash", arduino_package(tmp_path, dev.module), "--port", dev.port, "--yes", timeout=90)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout + proc.stderr
    assert "confirm it answers with" not in text
    assert "the sketch coming back on its port confirms the update" in text
    done = next(ln for ln in proc.stdout.splitlines() if ln.startswith("done:"))
    assert "see the warning" not in done and "warning:" not in text
    assert "a sketch can't be asked its version" in done


def test_a_module_already_in_its_dfu_bootloader_gets_a_plan_that_says_so(rak4631, tmp_path):
    dev = rak4631(state="bootloader")
    proc = run_cli("flash", rui3_package(tmp_path, dev), "--port", dev.port, "--dry-run", "--json", timeout=60)
    plan = next(e for e in events(proc) if e.get("event") == "plan")
    steps = " | ".join(plan["steps"])
    assert "re-enumerates as the DFU bootloader" not in steps, steps
    assert "already waits in its bootloader" in steps


def test_flash_an_arduino_hex_gets_the_init_packet_adafruit_nrfutil_would_make(rak4631, tmp_path):
    dev = rak4631("rak4631-arduino")
    image = firmware.app_image(dev.module, "ARDUINO_SKETCH_2.0", 9000)
    hexfile = tmp_path / "sketch.hex"
    hexfile.write_text(firmware.to_hex({dev.module.app.start: image}))
    code, out = cli_json("flash", str(hexfile), "--port", dev.port, "--yes", timeout=90)
    assert code == 0 and out["result"] == "ok"
    assert dev.app_version == "ARDUINO_SKETCH_2.0"


@pytest.mark.parametrize("name, state, module, mode, variant", [
    ("rak4631", "app", "RAK4631-R", "app", "RUI3 (Nordic Secure DFU bootloader)"),
    ("rak4631", "bootloader", "RAK4631-R", "bootloader", "RUI3 (Nordic Secure DFU bootloader)"),
    ("rak4631-arduino", "app", "RAK4631 (Arduino)", "app", "Arduino (Adafruit nRF52 bootloader)"),
    ("rak4631-arduino", "bootloader", "RAK4631 (Arduino)", "bootloader", "Arduino (Adafruit nRF52 bootloader)"),
])
def test_info_names_the_variant(rak4631, name, state, module, mode, variant):
    dev = rak4631(name, state=state)
    code, out = cli_json("info", "--port", dev.port, timeout=60)
    assert code == 0 and (out["module"], out["mode"], out["variant"]) == (module, mode, variant)
    assert out["serial_number"] == dev.opts.serial_number


def test_inspect_says_what_a_package_carries_and_requires(rak4631, tmp_path):
    dev = rak4631()
    code, out = cli_json("inspect", rui3_package(tmp_path, dev, fw_version=7), timeout=60)
    assert code == 0 and out["format"] == "dfu-package" and out["module"] == "RAK4631-R"
    assert out["app_version"] == "RUI_4.0.6_RAK4631"
    image = out["package"]["images"][0]
    assert image["kind"] == "application" and image["size"] == 24_000
    assert image["init"]["fw_version"] == 7 and image["init"]["hw_version"] == 52
    assert image["init"]["sd_req"] == ["0x0100"] and image["init"]["signed"] is True
    text = run_cli("inspect", arduino_package(tmp_path, dev.module), timeout=60).stdout
    assert "Adafruit legacy DFU" in text and "device type 0x0052" in text and "not signed" in text
    assert "firmware version not set" in text and "4294967295" not in text

    assert out["package"]["application_linked_elsewhere"] is None     # linked where it is written


def test_a_package_whose_application_is_linked_for_the_other_bootloader_is_named_and_refused(
        rak4631, tmp_path, cat):
    """An Arduino sketch (linked for 0x26000) inside a signed RUI3 package, which RUI3's bootloader
    writes at 0x27000: the reset vector points below the image. inspect said nothing of it, and
    flash refused it only as "built for another address … give the right --address" (a package
    has no --address). inspect names it; the plan refuses it as a package mismatch, with the way
    to package each build for its own bootloader, before the module is touched."""
    dev = rak4631()
    sketch = firmware.app_image(cat.module("rak4631-arduino"), "RUI_4.0.6_RAK4631", 24_000)
    pkg = tmp_path / "rui3-with-a-sketch.zip"
    pkg.write_bytes(dp.secure_package(sketch, key_pem=KEY, fw_version=2))
    code, out = cli_json("inspect", str(pkg), timeout=60)
    linked = out["package"]["application_linked_elsewhere"]
    assert code == 0 and (linked["placed_at"], linked["linked_for"]) == (0x27000, 0x26000), out
    assert linked["linked_for_family"] == "legacy-dfu" and "below the image" in linked["message"]
    text = run_cli("inspect", str(pkg), timeout=60).stdout
    assert "linked for 0x26000" in text and "would not start it" in text and "adafruit-nrfutil" in text
    code, out = cli_json("flash", str(pkg), "--port", dev.port, "--yes", timeout=60)
    assert (code, out["error"]) == (6, "package-mismatch"), out
    assert "linked for 0x26000" in out["message"] and "writes it at 0x27000" in out["message"]
    assert "nothing was sent" in out["message"] and "--address" not in out["hint"]
    assert "adafruit-nrfutil dfu genpkg" in out["hint"] and "nrfutil pkg generate" in out["hint"]
    assert dev.resets == 0 and dev.mode.value == "app" and dev.app_version == "RUI_4.0.5_RAK4631"


def test_sim_command_prints_the_new_port_when_the_module_re_enumerates(tmp_path):
    """`rakflash sim rak4631`: a person watching it sees where the port went after AT+BOOT."""
    import os
    import subprocess
    import sys
    import time

    from conftest import SRC
    from rakflash.link import Link
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "sim", "rak4631", "--flash-scale", "0"],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()
        assert first.startswith("port: ")
        key_line = proc.stdout.readline()
        assert key_line.startswith("dfu key: ")
        with Link(first.split()[1]) as link:
            link.write(b"AT+BOOT\r\n")
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline and "re-enumerated" not in line:
            line = proc.stdout.readline()
        assert "re-enumerated as USB 1915:521F \"Open DFU Bootloader\"" in line
        os.unlink(key_line.split()[2])
    finally:
        proc.terminate()
        proc.wait(10)


def conversion_package(tmp_path, cat):
    """What RAK's rui3_nrf52840_bootloader_latest.zip is to the Adafruit bootloader: a legacy
    bootloader package carrying RUI3's Secure DFU bootloader (here the simulator's image of one)."""
    rui3 = cat.module("rak4631-r")
    segs = firmware.bootloader_image(rui3, "RUI_BOOT_0.6_RAK4631")
    start = rui3.region("bootloader").start
    image = bytearray(b"\xff" * (max(a + len(d) for a, d in segs.items()) - start))
    for a, d in segs.items():
        image[a - start:a - start + len(d)] = d
    image = bytes(image)
    path = tmp_path / "rui3_nrf52840_bootloader_latest.zip"
    path.write_bytes(dp.make_package(image, dp.legacy_init_packet(image), legacy=True, kind="bootloader",
                                     name="bootloader"))
    return str(path)


def test_convert_an_arduino_rak4631_to_rui3_in_one_command(rak4631, tmp_path, cat):
    dev = rak4631("rak4631-arduino", dfu_key=KEY)      # the key RUI3's bootloader will trust
    app = rui3_package(tmp_path, cat.module("rak4631-r"))
    proc = run_cli("convert-to-rui3", conversion_package(tmp_path, cat), app, "--port", dev.port, "--yes",
                   "--json", timeout=120)
    evs = events(proc)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert evs[-1]["result"] == "ok" and evs[-1]["app_version_after"] == "RUI_4.0.6_RAK4631"
    assert dev.module.key == "rak4631-r" and dev.bootloader_version == "RUI_BOOT_0.6_RAK4631"
    entry = ports.port_entry(dev.port)
    assert (entry.vid, entry.pid, entry.description) == (0x1915, 0x521F, "Rak4631 Serial COM")


def test_convert_refuses_swapped_packages_before_sending(rak4631, tmp_path, cat):
    dev = rak4631("rak4631-arduino", dfu_key=KEY)
    code, out = cli_json("convert-to-rui3", rui3_package(tmp_path, cat.module("rak4631-r")),
                         conversion_package(tmp_path, cat),
                         "--port", dev.port, "--yes", timeout=60)
    assert code == 6 and out["error"] == "package-mismatch" and "nothing was sent" in out["message"]
    assert dev.resets == 0 and dev.module.key == "rak4631-arduino"


def test_a_port_that_is_gone_names_where_the_module_may_be_now(rak4631, tmp_path):
    """A native USB port is renamed when the module restarts into its bootloader or is plugged in
    again (ttyACM0 becomes ttyACM1): the port-not-found error names the port that looks like it."""
    dev = rak4631(state="bootloader")
    pkg = rui3_package(tmp_path, dev)
    code, out = cli_json("flash", pkg, "--port", "/dev/ttyACM-gone", "--yes")
    assert (code, out["error"]) == (4, "port-not-found"), out
    assert f"--port {dev.port}" in out["hint"] and "RAK4631" in out["hint"], out["hint"]
    code, out = cli_json("flash", pkg, "--port", dev.port, "--yes", timeout=90)
    assert code == 0 and out["app_version_after"] == "RUI_4.0.6_RAK4631", out


def test_a_package_refused_at_its_init_packet_leaves_the_module_running_its_application(rak4631, tmp_path):
    """Signed with a key the bootloader does not trust: refused at the init packet, after AT+BOOT,
    before anything was erased. The module was left in its bootloader without a word; now its
    application runs again, the result says so, and the hint names the port it is on now (the
    port the command was given is gone: found by the soak, the same command met port-not-found)."""
    dev = rak4631()
    given = dev.port
    pkg = rui3_package(tmp_path, dev, key_pem=dp.new_signing_key())     # a key it does not trust
    code, out = cli_json("flash", pkg, "--port", given, "--yes", timeout=90)
    assert code != 0 and out["error"] == "dfu-rejected", out
    assert "nothing was written" in out["message"] and "runs its application again" in out["message"]
    assert dev.wait_mode("app") and dev.app_version == "RUI_4.0.5_RAK4631" and dev.updates == 0
    app = ports.wait_for_port("rak4631-r", "app", timeout=5).device
    assert app in out["message"]
    assert app == given or f"--port {app}" in out["hint"], out["hint"]    # (a pty path may come back)


def test_a_package_like_one_its_bootloader_refused_is_refused_before_at_boot(rak4631, tmp_path):
    """rakflash remembers what this module's bootloader accepted: the key that signed it, the
    fw_version it installed. The next package signed with another key, or older, is refused
    before AT+BOOT (its bootloader would refuse it after), the module never leaving its application."""
    dev = rak4631()
    code, out = cli_json("flash", rui3_package(tmp_path, dev, fw_version=3), "--port", dev.port, "--yes",
                         timeout=90)
    assert (code, out["result"]) == (0, "ok"), out
    port, resets = dev.port, dev.resets
    other_key = rui3_package(tmp_path, dev, version="RUI_4.0.7_RAK4631", key_pem=dp.new_signing_key(),
                             fw_version=4)
    code, out = cli_json("flash", other_key, "--port", port, "--yes", timeout=60)
    assert (code, out["error"]) == (6, "package-mismatch"), out
    assert "another key" in out["message"] and "nothing was sent" in out["message"]
    older = rui3_package(tmp_path, dev, version="RUI_4.0.7_RAK4631", fw_version=2)
    code, out = cli_json("flash", older, "--port", port, "--yes", timeout=60)
    assert (code, out["error"]) == (6, "package-mismatch"), out
    assert "fw_version" in out["message"] and "downgrade" in out["message"] and "--force" in out["hint"]
    assert (dev.resets, dev.port, dev.mode.value) == (resets, port, "app")      # never left its application
    # --force sends it: the bootloader refuses it, and the application runs again.
    code, out = cli_json("flash", older, "--port", port, "--yes", "--force", timeout=90)
    assert out["error"] == "dfu-rejected" and out["reason"] == "fw-version", out
    assert dev.wait_mode("app") and dev.app_version == "RUI_4.0.6_RAK4631"
    # The same key and a newer version go through.
    newer = rui3_package(tmp_path, dev, version="RUI_4.0.7_RAK4631", fw_version=4)
    code, out = cli_json("flash", newer, "--port", dev.port, "--yes", timeout=90)
    assert (code, out["result"]) == (0, "ok"), out


def test_a_stop_mid_transfer_names_the_bootloaders_port_for_the_re_run(rak4631, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from conftest import SRC
    dev = rak4631()
    pkg = rui3_package(tmp_path, dev, size=400_000)
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "flash", pkg, "--port", dev.port, "--yes",
                             "--json"], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=SRC))
    lines = signal_when(proc, lambda e: e.get("event") == "progress" and 0 < e["bytes"] < e["total"],
                        signal.SIGTERM)
    assert proc.wait(30) == 143
    last = lines[-1]
    assert last["result"] == "interrupted", last
    boot = ports.wait_for_port("rak4631-r", "bootloader", timeout=5).device
    assert f"--port {boot}" in last["hint"], last["hint"]
    code, out = cli_json("flash", pkg, "--port", boot, "--yes", timeout=90)
    assert code == 0 and out["app_version_after"] == "RUI_4.0.6_RAK4631", out


def test_convert_refuses_an_application_linked_for_the_arduino_base_before_replacing_the_bootloader(
        rak4631, tmp_path, cat):
    """The plan's refusal of an Arduino sketch in a RUI3 package comes only after the conversion
    has replaced the bootloader: the conversion checks it with its packages, before anything."""
    dev = rak4631("rak4631-arduino", dfu_key=KEY)
    sketch = firmware.app_image(cat.module("rak4631-arduino"), "RUI_4.0.6_RAK4631", 24_000)
    app = tmp_path / "rui3-with-a-sketch.zip"
    app.write_bytes(dp.secure_package(sketch, key_pem=KEY, fw_version=2))
    code, out = cli_json("convert-to-rui3", conversion_package(tmp_path, cat), str(app),
                         "--port", dev.port, "--yes", timeout=60)
    assert (code, out["error"]) == (6, "package-mismatch"), out
    assert "linked for 0x26000" in out["message"] and "nothing was sent" in out["message"]
    assert dev.resets == 0 and dev.module.key == "rak4631-arduino"


def start_sim_cli(*args: str):
    """`rakflash sim …` in a subprocess; (process, its first port)."""
    import os
    import subprocess
    import sys

    from conftest import SRC
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "sim", *args], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=SRC))
    first = proc.stdout.readline()
    assert first.startswith("port: "), proc.stderr.read() if proc.poll() is not None else first
    return proc, first.split()[1]


def test_sim_arduino_with_a_dfu_key_converts_to_rui3_with_packages_signed_by_it(tmp_path, cat):
    """`rakflash sim rak4631 --arduino --dfu-key key.pem`: the RUI3 bootloader that the conversion
    installs trusts that key, so the whole conversion of packages signed with it succeeds (the key
    was dropped when --arduino renamed the module: 'extended error 0x0c' at the RUI3 step)."""
    key = tmp_path / "key.pem"
    key.write_bytes(KEY)
    proc, port = start_sim_cli("rak4631", "--arduino", "--dfu-key", str(key), "--flash-scale", "0")
    try:
        app = rui3_package(tmp_path, cat.module("rak4631-r"))
        conv = run_cli("convert-to-rui3", conversion_package(tmp_path, cat), app, "--port", port, "--yes",
                       "--json", timeout=120)
        out = events(conv)[-1]
        assert conv.returncode == 0, conv.stderr + conv.stdout
        assert out["result"] == "ok" and out["app_version_after"] == "RUI_4.0.6_RAK4631", out
    finally:
        proc.terminate()
        proc.wait(10)


def test_sim_arduino_without_a_key_names_the_key_its_rui3_bootloader_will_trust(tmp_path):
    import os
    proc, _ = start_sim_cli("rak4631", "--arduino", "--flash-scale", "0")
    try:
        line = proc.stdout.readline()
        assert line.startswith("dfu key: ") and "convert-to-rui3" in line, line
        os.unlink(line.split()[2])
    finally:
        proc.terminate()
        proc.wait(10)


def test_sim_refuses_a_dfu_key_for_a_module_that_checks_none(tmp_path):
    key = tmp_path / "key.pem"
    key.write_bytes(KEY)
    proc = run_cli("sim", "rak3172", "--dfu-key", str(key), timeout=30)
    assert proc.returncode == 2 and "--dfu-key" in proc.stderr


# ------------------------------------------------------------------ following the right module

def test_an_update_follows_its_own_module_not_another_with_the_same_serial_number(rak4631, tmp_path):
    """Two RAK4631-Rs with one serial number, B already waiting in its bootloader: `flash --port A`
    must follow A to its bootloader (a port that appeared after AT+BOOT, at A's USB location),
    not B's port that was there before — which it wrote, saying 'done', leaving A in its bootloader."""
    a = rak4631(serial_number="SAME-SN")
    b = rak4631(serial_number="SAME-SN", state="bootloader")
    assert b.wait_mode("bootloader")
    b_port = b.port
    code, out = cli_json("flash", rui3_package(tmp_path, a), "--port", a.port, "--yes", timeout=90)
    assert (code, out["result"]) == (0, "ok"), out
    # (The new firmware's port is listed a moment before the simulated MCU says it runs: on a
    # loaded host, wait for the mode rather than sample it once.)
    assert a.updates == 1 and a.app_version == "RUI_4.0.6_RAK4631" and a.wait_mode("app", timeout=10)
    assert b.updates == 0 and b.mode.value == "bootloader" and b.port == b_port     # left alone


def test_an_arduino_touch_follows_its_own_module_not_another_with_the_same_serial_number(rak4631, tmp_path):
    a = rak4631("rak4631-arduino", serial_number="SAME-SN")
    b = rak4631("rak4631-arduino", serial_number="SAME-SN", state="bootloader")
    assert b.wait_mode("bootloader")
    code, out = cli_json("flash", arduino_package(tmp_path, a.module), "--port", a.port, "--yes", timeout=90)
    assert (code, out["result"]) == (0, "ok"), out
    assert a.updates == 1 and a.app_version == "ARDUINO_SKETCH_1.1" and a.wait_mode("app", timeout=10)
    assert b.updates == 0 and b.mode.value == "bootloader"


def test_a_conversion_follows_its_own_module_not_a_rak4631_r_with_the_same_serial_number(rak4631, tmp_path,
                                                                                        cat):
    a = rak4631("rak4631-arduino", serial_number="SAME-SN", dfu_key=KEY)
    b = rak4631(serial_number="SAME-SN", state="bootloader")
    assert b.wait_mode("bootloader")
    app = rui3_package(tmp_path, cat.module("rak4631-r"))
    code, out = cli_json("convert-to-rui3", conversion_package(tmp_path, cat), app, "--port", a.port, "--yes",
                         timeout=120)
    assert (code, out["result"]) == (0, "ok"), out
    assert a.module.key == "rak4631-r" and a.app_version == "RUI_4.0.6_RAK4631"
    assert b.updates == 0 and b.mode.value == "bootloader"


def test_two_new_ports_that_both_look_like_the_module_are_a_named_error(tmp_path):
    """No USB location to tell them apart, the same serial number, both new: rakflash can't know
    which is the module it reset, so it says so instead of picking one."""
    from rakflash.errors import PortAmbiguous
    before = ports.snapshot()
    for name in ("ttyACM5", "ttyACM6"):
        dev = tmp_path / name
        dev.touch()
        ports.register_virtual_port(str(dev), vid=0x1915, pid=0x521F, product="Open DFU Bootloader",
                                    serial_number="SAME-SN")
    with pytest.raises(PortAmbiguous) as caught:
        ports.wait_for_port("rak4631-r", "bootloader", serial_number="SAME-SN", before=before, timeout=1)
    assert "ttyACM5" in caught.value.message and "ttyACM6" in caught.value.message
    assert "--port" in caught.value.hint
    # A port that was already there before the reset is never the one that came back.
    with pytest.raises(PortNotBack):
        ports.wait_for_port("rak4631-r", "bootloader", serial_number="SAME-SN", before=ports.snapshot(),
                            timeout=0.3)


def test_an_arduino_update_stopped_mid_transfer_is_finished_by_the_same_command(rak4631, tmp_path):
    """SIGTERM mid-DATA leaves the Adafruit bootloader in that session; the same command, given the
    bootloader's port (the result names it), restarts the session and finishes."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import SRC
    dev = rak4631("rak4631-arduino")
    pkg = arduino_package(tmp_path, dev.module, size=400_000)
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "flash", pkg, "--port", dev.port, "--yes",
                             "--json"], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=SRC))
    lines = signal_when(proc, lambda e: e.get("event") == "progress" and 0 < e["bytes"] < e["total"] // 2,
                        signal.SIGTERM)
    assert proc.wait(30) == 143 and lines[-1]["result"] == "interrupted", lines[-1]
    boot = ports.wait_for_port("rak4631-arduino", "bootloader", timeout=5).device
    assert f"--port {boot}" in lines[-1]["hint"], lines[-1]["hint"]
    code, out = cli_json("flash", pkg, "--port", boot, "--yes", timeout=120)
    assert (code, out["result"]) == (0, "ok"), out
    assert dev.app_version == "ARDUINO_SKETCH_1.1" and dev.wait_mode("app", timeout=10)


def test_a_conversion_cut_in_its_bootloader_step_is_finished_by_the_same_command(rak4631, tmp_path, cat):
    from test_legacy_dfu import abandon_a_session, touch_1200
    dev = rak4631("rak4631-arduino", dfu_key=KEY)
    boot = touch_1200(dev)
    abandon_a_session(boot, firmware.app_image(dev.module, "ARDUINO_SKETCH_0.9", 20_000), 5)
    app = rui3_package(tmp_path, cat.module("rak4631-r"))
    code, out = cli_json("convert-to-rui3", conversion_package(tmp_path, cat), app, "--port", boot, "--yes",
                         timeout=120)
    assert (code, out["result"]) == (0, "ok"), out
    assert dev.module.key == "rak4631-r" and dev.app_version == "RUI_4.0.6_RAK4631"


@pytest.mark.parametrize("content", [b"", b"[]", b"\xff\xfe", b'{"module": "rak4631-r"}',
                                     b'{"module": "rak4631-r", "serial_number": "SN", "signers": ["zz"]}',
                                     b'{"module": "rak4631-r", "serial_number": "SN", "signers": 5, '
                                     b'"fw_version": "9"}', b"fifo"],
                         ids=["empty", "list", "binary", "no-serial", "bad-hex", "wrong-types", "fifo"])
def test_a_damaged_memory_of_what_a_bootloader_accepted_never_refuses_a_package(tmp_path, cat, content):
    """The file is untrusted input: damaged, it is as if nothing were known (the bootloader decides)."""
    from rakflash.flows.identify import DeviceInfo
    from rakflash.flows.transfers import nordic_dfu as nd
    from rakflash.images import load as load_image
    module = cat.module("rak4631-r")
    path = nd._seen_file(module, "SN")
    path.parent.mkdir(parents=True, exist_ok=True)
    if content == b"fifo":
        import os
        os.mkfifo(path)                   # never read: it could block
    else:
        path.write_bytes(content)
    image = load_image(rui3_package(tmp_path, module, key_pem=dp.new_signing_key(), fw_version=0))
    device = DeviceInfo("PORT", 115200, "app", module.dialect.key, module=module, serial_number="SN")
    nd.check_device(image, module, device)          # no refusal, no exception


def test_a_refused_package_for_a_module_with_no_application_says_it_stays_in_its_bootloader(rak4631,
                                                                                             tmp_path):
    """An earlier update erased the application; the package now given is refused at its init
    packet: there is nothing to start again, and the message says so instead of 'press reset'."""
    dev = rak4631(state="bootloader")
    dev.app_valid = False                    # what a cut-off update leaves (single bank)
    pkg = rui3_package(tmp_path, dev, key_pem=dp.new_signing_key())
    code, out = cli_json("flash", pkg, "--port", dev.port, "--yes", timeout=90)
    assert out["error"] == "dfu-rejected", out
    assert "nothing was written" in out["message"] and "no application to start" in out["message"], out
    assert "press its reset button" not in out["message"]
    assert dev.mode.value == "bootloader" and dev.updates == 0


def test_an_update_follows_the_module_where_the_system_lists_no_product_string(rak4631, tmp_path):
    """pyserial on Windows lists 1915:521F with no product string, so the port alone can't say
    application or bootloader: rakflash follows the one new port with the module's serial number
    and USB location, and its answers — not the product string — confirm what it reached."""
    dev = rak4631(usb_product=False)
    listed = ports.port_entry(dev.port)
    assert listed.module == "rak4631-r" and listed.mode is None      # as Windows lists it
    code, out = cli_json("flash", rui3_package(tmp_path, dev), "--port", dev.port, "--yes", timeout=90)
    assert (code, out["result"]) == (0, "ok"), out
    assert dev.updates == 1 and dev.app_version == "RUI_4.0.6_RAK4631" and dev.wait_mode("app", timeout=10)
