"""The page for people who don't live in a terminal: what it does when the server goes away, when two
tabs want one port, for the keyboard, a narrow screen and a screen reader (axe-core), and its clutter.

Real Chromium through Playwright, as tests/test_web_browser.py (its browser and page fixtures).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SRC
from test_web_browser import drop, expect, finished, pick, shot
from web_support import OLD, firmware_file, need, wait_for, web  # noqa: F401  (web is a fixture)

pytestmark = pytest.mark.xdist_group("browser")


def _plan_waiting(page, server, dev, image: Path):
    page.goto(server.url)
    pick(page, dev.port)
    page.set_input_files("#file", str(image))
    card = page.locator(".job").first
    expect(card.locator(".job-state")).to_have_text("waiting for you")
    return card


def test_a_server_that_is_gone_is_said_not_waited_for(page, web, virtual):
    dev = virtual("rak3172", baud=115200)
    server = web(dev)
    page.goto(server.url)
    row = page.locator(f'tr[data-port="{dev.port}"]')
    expect(row).to_contain_text("virtual RAK3172")
    server.stop()                                          # Ctrl-C'd, crashed, or the laptop slept
    row.get_by_role("button", name="Identify").click()
    device = page.locator("#device")
    expect(device).to_contain_text("rakflash web can't be reached", timeout=15_000)
    expect(device).to_contain_text("start it again and reload this page")
    expect(device).not_to_contain_text("Identifying the module")
    page.locator("#other-port").fill("/dev/ttyUSB5")
    page.get_by_role("button", name="Add port").click()
    expect(page.locator("#notice")).to_contain_text("can't be reached")
    # No uncaught "Failed to fetch": the page fixture fails the test on any script error.


def test_a_second_tab_is_told_the_port_is_taken_and_the_first_why_its_plan_ended(page, web, virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=115200)
    image = firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat)
    server = web(dev)
    first = _plan_waiting(page, server, dev, image)
    job = next(iter(server.board.jobs.values()))

    other = page.context.new_page()
    other.goto(server.url)
    pick(other, dev.port)
    other.set_input_files("#file", str(image))
    said = other.locator("#check-error")
    expect(said).to_contain_text(f"{dev.port} is busy: a plan for {image.name} waits for its confirmation")
    assert job.state == "confirm"                          # the first tab's plan still stands
    expect(first.locator(".job-state")).to_have_text("waiting for you")

    # Someone cancels it from the second tab, on purpose: the first tab says where it went.
    other.locator(f'tr[data-port="{dev.port}"]').get_by_role("button", name="Cancel plan").click()
    result = first.locator(".result")
    expect(result).to_contain_text("Not written")
    expect(result).to_contain_text("cancelled in another tab or window")
    assert dev.updates == 0


def test_a_waiting_plan_is_called_what_it_is_and_can_be_cancelled_from_its_row(page, web, virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=115200)
    server = web(dev)
    card = _plan_waiting(page, server, dev, firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat))
    row = page.locator(f'tr[data-port="{dev.port}"]')
    expect(row.locator(".seen")).to_contain_text("a plan for RAK3172_4.0.6.bin waits for its confirmation")
    expect(row.locator(".seen")).not_to_contain_text("runs on it")
    expect(row.get_by_role("button", name="Identify")).to_be_disabled()
    row.get_by_role("button", name="Cancel plan").click()
    expect(card.locator(".result")).to_contain_text("Not written")
    expect(card.locator(".result")).not_to_contain_text("another tab")     # this tab cancelled it
    expect(row.get_by_role("button", name="Identify")).to_be_enabled()
    assert dev.updates == 0


def test_the_keyboard_keeps_its_place_and_enter_twice_writes_nothing(page, web, virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=115200)
    server = web(dev)
    page.goto(server.url)
    box = page.locator(f'tr[data-port="{dev.port}"] input[type=checkbox]')
    box.focus()
    page.keyboard.press("Space")                           # the table is drawn anew: focus stays
    expect(box).to_be_checked()
    assert page.evaluate("document.activeElement.closest('tr')?.dataset.port") == dev.port
    page.set_input_files("#file", str(firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat)))
    card = page.locator(".job")
    card.locator("button.flash").click()
    expect(page.locator("#confirm")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"
    page.keyboard.press("Enter")                           # "Not now"
    expect(page.locator("#confirm")).to_be_hidden()
    page.keyboard.press("Enter")                           # back on "Flash": the question again
    expect(page.locator("#confirm")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"
    page.keyboard.press("Enter")
    expect(page.locator("#confirm")).to_be_hidden()
    expect(card.locator(".job-state")).to_have_text("waiting for you")
    assert dev.updates == 0 and card.locator(".progress").is_hidden()

    card.locator("button.flash").click()
    page.locator("#confirm-write").click()
    bar = card.locator("progress")
    expect(bar).to_have_attribute("aria-label", re.compile("progress"))
    assert finished(card).startswith("Done: RAK3172")
    expect(card.locator(".progress-text")).to_contain_text("100 %")
    expect(page.locator("#announce")).to_have_attribute("aria-live", "polite")
    expect(page.locator("#announce")).to_contain_text("Done")


def test_at_400_pixels_every_button_is_on_screen(browser, web, virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=115200)
    server = web(dev)
    context = browser.new_context(viewport={"width": 400, "height": 860})
    page = context.new_page()
    try:
        page.goto(server.url)
        row = page.locator(f'tr[data-port="{dev.port}"]')
        expect(row).to_contain_text("virtual RAK3172")
        for name in ("Identify", "Doctor"):
            b = row.get_by_role("button", name=name).bounding_box()
            assert b and b["x"] >= 0 and b["x"] + b["width"] <= 400, (name, b)
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
        page.locator("#options summary").click()
        assert page.locator("#opt-baud").get_attribute("placeholder") == "auto"
        expect(page.locator("#baud-help")).to_be_visible()
        shot(page, "narrow", full_page=True)
        pick(page, dev.port)
        page.set_input_files("#file", str(firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat)))
        expect(page.locator(".job .job-state")).to_have_text("waiting for you")
        assert page.evaluate("document.documentElement.scrollWidth") <= 400
    finally:
        context.close()


def test_ports_added_by_hand_can_be_removed_and_finished_jobs_dismissed(page, web, virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=115200)
    server = web(dev)
    page.goto(server.url)
    page.locator("#other-port").fill("<script>alert(1)</script>")
    page.get_by_role("button", name="Add port").click()
    expect(page.locator("#notice")).to_contain_text("is not a serial port")
    expect(page.locator("#ports")).not_to_contain_text("<script>")
    page.locator("#notice").get_by_role("button", name="OK").click()

    page.locator("#other-port").fill("/dev/ttyUSB42")
    page.get_by_role("button", name="Add port").click()
    added = page.locator('tr[data-port="/dev/ttyUSB42"]')
    expect(added).to_contain_text("added by hand")
    expect(page.locator(f'tr[data-port="{dev.port}"] .remove-port')).to_have_count(0)   # not the page's
    added.get_by_role("button", name=re.compile("remove")).click()
    expect(added).to_have_count(0)
    other = page.context.new_page()
    other.goto(server.url)
    expect(other.locator(f'tr[data-port="{dev.port}"]')).to_be_visible()
    expect(other.locator('tr[data-port="/dev/ttyUSB42"]')).to_have_count(0)

    card = _plan_waiting(page, server, dev, firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat))
    card.locator("button.cancel").click()
    expect(card.locator(".result")).to_contain_text("Not written")
    card.get_by_role("button", name="Dismiss").click()
    expect(page.locator(".job")).to_have_count(0)
    expect(other.locator(".job")).to_have_count(0)           # gone from every tab
    page.reload()
    expect(page.locator(f'tr[data-port="{dev.port}"]')).to_be_visible()
    expect(page.locator(".job")).to_have_count(0)            # and stays gone


def test_no_serious_accessibility_violation_on_any_screen(page, web, virtual, tmp_path, cat):
    """axe-core (through axe-playwright-python, which bundles it) on each screen a person meets."""
    axe_mod = need("axe_playwright_python.sync_playwright", "axe-core for the accessibility checks")
    axe = axe_mod.Axe()

    def check(screen: str) -> None:
        results = axe.run(page)
        bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
        assert not bad, f"{screen}: " + "; ".join(
            f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}" for v in bad)

    dev = virtual("rak3172", baud=115200)
    rom = virtual("rak811", baud=115200)
    server = web(dev, rom)
    page.goto(server.url)
    expect(page.locator(f'tr[data-port="{dev.port}"]')).to_be_visible()
    check("first screen")
    page.locator(f'tr[data-port="{dev.port}"]').get_by_role("button", name="Doctor").click()
    expect(page.locator("#doctor .findings")).to_be_visible()
    check("doctor")
    card = _plan_waiting(page, server, dev, firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat,
                                                          size=48 * 1024))
    check("plan")
    card.locator("button.flash").click()
    check("confirmation")
    page.locator("#confirm-write").click()
    expect(card.locator(".progress")).to_be_visible()
    check("progress")
    finished(card)
    check("result")
    drop(page, firmware_file(tmp_path / "huge.bin", cat, size=250 * 1024))
    expect(page.locator(".job .result").first).to_contain_text("Refused before writing")
    check("error")


def _served(*args: str):
    """`rakflash web --no-browser ARGS` in a subprocess: (process, its address)."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "web", "--no-browser", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return proc, proc.stdout.readline().split(": ", 1)[1].strip()


@pytest.mark.parametrize("then", ["finish", "stop"])
def test_ctrl_c_on_the_server_keeps_the_page_told_until_the_update_ends(page, tmp_path, cat, then):
    """Ctrl-C in the server's terminal mid-update: the page says what happens, keeps its live
    progress and its Stop button, shows the result — and only then is the server gone."""
    from test_cli import SimProcess
    sim = SimProcess("rak3172", "--flash-scale", "0", "--latency-ms", "0.2")
    proc, url = _served("--port", sim.port)
    try:
        page.goto(url)
        pick(page, sim.port)
        page.set_input_files("#file", str(firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat, size=96 * 1024)))
        card = page.locator(".job")
        card.locator("button.flash").click()
        page.locator("#confirm-write").click()
        expect(card.locator(".progress-text")).to_contain_text(re.compile(r"write: [1-9]\d? %"))
        proc.send_signal(signal.SIGINT)
        banner = page.locator("#server-state")
        expect(banner).to_contain_text(f"lets the running update on {sim.port} finish, then stops")
        expect(card.locator(".job-state")).to_have_text("running")
        if then == "stop":
            page.once("dialog", lambda d: d.accept())
            card.get_by_role("button", name="Stop").click()
            assert finished(card).startswith("Stopped")
            assert proc.wait(30) == 0
        else:
            before = card.locator("progress").evaluate("b => b.value")
            expect(card.locator("progress")).not_to_have_attribute("value", str(before))   # still moving
            assert finished(card).startswith("Done: RAK3172")
            assert proc.wait(30) == 0
        expect(page.locator("#link-state")).to_have_text("rakflash web has stopped")
        expect(banner).to_contain_text("has stopped. Start it again")
        assert "waiting for 1 running operation" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sim.stop()


def test_a_recovery_is_played_on_a_virtual_module_with_its_own_buttons(page, web, virtual, tmp_path, cat):
    """The virtual RAK811's BOOT0 and reset are buttons on the page, beside the prompt: the whole
    ROM recovery can be tried without hardware — and axe finds nothing serious on the prompt."""
    from rakflash.sim import firmware
    dev = virtual("rak811", baud=115200, bootloader_version="3.0.2", app_version="V3.0.0.13.H")
    full = tmp_path / "RAK811_FULL_3.0.0.14.hex"
    full.write_text(firmware.combined_hex(cat.module("rak811"), "V3.0.5", "V3.0.0.14.H", 8 * 1024))
    server = web(dev)
    page.goto(server.url)
    pick(page, dev.port)
    page.set_input_files("#file", str(full))
    expect(page.locator('.job[data-kind="flash"] .job-state')).to_have_text(re.compile("waiting for you|finished"))
    page.locator("#recover").click()
    card = page.locator('.job[data-kind="recover"]')
    card.get_by_role("button", name="Recover").click()
    page.locator("#confirm-write").click()
    prompt = card.locator(".prompt")
    expect(prompt).to_contain_text("Start the chip's ROM bootloader now")
    expect(card.locator(".phases li.now")).to_have_text("waiting for you")
    hands = prompt.locator(".virtual-controls")
    expect(hands).to_contain_text("A virtual module: its buttons are here.")
    need("axe_playwright_python.sync_playwright", "axe-core")
    from axe_playwright_python.sync_playwright import Axe
    bad = [v["id"] for v in Axe().run(page).response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, f"recovery prompt: {bad}"
    shot(page, "recover-virtual", card)

    hands.get_by_role("button", name="Hold BOOT0 high").click()
    expect(hands.get_by_role("button", name="Release BOOT0")).to_be_visible()    # the row redraws
    assert dev.boot_pin is True
    hands.get_by_role("button", name="Press reset").click()
    notes, result = card.locator(".notes"), card.locator(".result")
    wait_for(lambda: "release BOOT0" in notes.inner_text() or result.is_visible(), timeout=90,
             what="the recovery to write, verify and start the chip")
    page.locator(f'tr[data-port="{dev.port}"]').get_by_role("button", name="Release BOOT0").click()
    assert finished(card).startswith("Done: RAK811"), result.inner_text()
    expect(result.locator(".boot-after")).to_have_text("V3.0.5")
    assert (dev.bootloader_version, dev.app_version, dev.boot_pin) == ("V3.0.5", "V3.0.0.14.H", False)


def test_a_pulled_cable_is_plugged_back_in_from_the_page(page, web, virtual):
    dev = virtual("rak3172", baud=115200)
    server = web(dev)
    page.goto(server.url)
    old = dev.port
    expect(page.locator(f'tr[data-port="{old}"]')).to_be_visible()
    dev.uart.close()                                       # the cable is pulled
    row = page.locator(f'tr[data-port="{old}"]')
    row.get_by_role("button", name="Plug the cable back in").click()
    wait_for(lambda: not dev.uart.closed, what="the cable to be plugged back in")   # the click's request
    new = page.locator(f'tr[data-port="{dev.port}"]')       # a new pty (its number may be the old one's)
    expect(new.get_by_role("button", name="Press reset")).to_be_visible()
    new.get_by_role("button", name="Identify").click()
    expect(page.locator("#device")).to_contain_text("RAK3172")


# ------------------------------------------------------------------ the page's own language

_TERMINAL = re.compile(r"rakflash (flash|recover|ports|doctor|info)\b|run the same command|--force|--module")


def _visible_advice(locator) -> str:
    """What the page says, less what it keeps folded under "on the command line"."""
    return locator.evaluate("""el => { const c = el.cloneNode(true);
        c.querySelectorAll('details.cli').forEach((d) => d.remove()); return c.innerText; }""")


def test_doctor_and_a_stopped_update_say_what_to_do_on_the_page(page, web, virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=115200)
    server = web(dev)
    new = firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat, size=120 * 1024)
    page.goto(server.url)
    page.set_input_files("#file", str(new))
    row = page.locator(f'tr[data-port="{dev.port}"]')
    row.get_by_role("button", name="Doctor").click()
    findings = page.locator("#doctor .findings")
    expect(findings).to_contain_text(re.compile("pick this port", re.I))
    assert not _TERMINAL.search(_visible_advice(findings)), _visible_advice(findings)
    fold = findings.locator('[data-code="image-fits"] details.cli')
    fold.locator("summary").click()
    expect(fold).to_contain_text(f"rakflash flash {new.name} --port {dev.port}")   # for who wants it

    pick(page, dev.port)
    card = page.locator(".job")
    card.locator("button.flash").click()
    page.locator("#confirm-write").click()
    expect(card.locator(".progress-text")).to_contain_text(re.compile(r"write: [1-9]\d? %"))
    page.once("dialog", lambda d: d.accept())
    card.get_by_role("button", name="Stop").click()
    result = card.locator(".result")
    expect(result).to_contain_text("Stopped")
    assert not _TERMINAL.search(_visible_advice(result)), _visible_advice(result)
    expect(row.locator(".seen")).to_contain_text("changed by a stopped update: Identify to see")
    expect(row.locator(".seen")).not_to_contain_text(OLD)
    result.get_by_role("button", name="Check the plan again").click()     # the hint is a button
    again = page.locator('.job[data-kind="flash"]').first
    expect(again.locator(".plan")).to_contain_text("in its bootloader")
    again.locator("button.flash").click()
    page.locator("#confirm-write").click()
    assert finished(again).startswith("Done: RAK3172")
    expect(row.locator(".seen")).to_contain_text("RUI_4.0.6")


def test_big_files_are_named_as_the_person_knows_them(page, web, tmp_path):
    server = web()
    page.goto(server.url)
    big = tmp_path / "photos.bin"
    big.write_bytes(b"\x5a" * (17 << 20))      # over the largest flash (an ESP32-S3's 16 MB)
    page.set_input_files("#file", str(big))
    inspect = page.locator("#inspect")
    expect(inspect).to_contain_text("photos.bin is 17,825,792 bytes")
    expect(inspect).not_to_contain_text("rakflash-web-")                # no server folder
    huge = tmp_path / "backup.tar"
    with huge.open("wb") as f:
        f.truncate(40 << 20)
    page.set_input_files("#file", str(huge))
    expect(inspect).to_contain_text("backup.tar is 40.0 MiB: over 32 MiB")
    expect(inspect).to_contain_text("Drop the firmware file itself")
