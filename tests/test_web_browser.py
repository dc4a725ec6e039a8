"""`rakflash web` in a real browser: headless Chromium (Debian's) driven through Playwright.

Each test does what a person does on the page — pick a port, identify, drop a
file, read the plan or the refusal, confirm, watch the progress, press reset
when asked — against a virtual module on a real pty, and asserts what the page
shows. One browser serves all tests (a fresh context each). Every wait is for a
state of the page, with Playwright's deadline (30 s: the machine may be loaded).

Set RAKFLASH_SCREENSHOTS=DIR to keep a screenshot of each main state (the ones in
docs/ were made so).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SRC, fake_usb_port
from web_support import NEW, OLD, firmware_file, need, wait_for, web  # noqa: F401  (web is a fixture)

sync_api = need("playwright.sync_api", "drives the browser")
pytestmark = pytest.mark.xdist_group("browser")      # one worker, one Chromium for all of them
expect = sync_api.expect

SHOTS = os.environ.get("RAKFLASH_SCREENSHOTS")


def shot(page, name: str, element=None, *, full_page: bool = False) -> None:
    """Keep a screenshot of this state when RAKFLASH_SCREENSHOTS names a folder."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        path = str(Path(SHOTS) / f"web-{name}.png")
        if element is not None:
            element.screenshot(path=path)
        else:
            page.screenshot(path=path, full_page=full_page)


def finished(card, timeout: float = 90_000) -> str:
    """Wait for the job's result (a whole update may take a while on a loaded machine); its text."""
    result = card.locator(".result")
    expect(result).to_be_visible(timeout=timeout)
    return result.inner_text()


def press_while_asked(card, press, *, until_result: bool = False, timeout: float = 90) -> list[float]:
    """Press the module's reset whenever the page asks for it, as a person would — again if a press
    did not take within 3 s (a loaded host can miss the start-up window) — until the page stops
    asking (``until_result``: until the job has ended). Returns when each press was (seconds from
    the call), for the message of a failure that follows."""
    prompt, result = card.locator(".prompt"), card.locator(".result")
    t0 = time.monotonic()
    end = t0 + timeout
    pressed = 0.0
    presses: list[float] = []
    while not result.is_visible():
        asking = prompt.is_visible()
        if not asking and not until_result:
            return presses
        if asking and time.monotonic() - pressed > 3:
            press()
            pressed = time.monotonic()
            presses.append(round(pressed - t0, 2))
        if time.monotonic() > end:
            raise AssertionError(f"the job did not go on; it shows: {card.inner_text()}")
        time.sleep(0.1)
    return presses


def pick(page, port: str) -> None:
    page.locator(f'tr[data-port="{port}"] input[type=checkbox]').check()


def drop(page, path: Path) -> None:
    """Drag a file from the desktop onto the drop zone (a real drop event with a DataTransfer)."""
    data = page.evaluate_handle(
        """([name, b64]) => {
             const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
             const dt = new DataTransfer();
             dt.items.add(new File([bytes], name));
             return dt;
           }""", [path.name, base64.b64encode(path.read_bytes()).decode()])
    page.dispatch_event("#drop", "dragover", {"dataTransfer": data})
    page.dispatch_event("#drop", "drop", {"dataTransfer": data})


def test_ports_come_and_go_live_and_identify_shows_what_info_shows(page, web, virtual, monkeypatch):
    from rakflash import ports
    plugged: list = []
    monkeypatch.setattr(ports.list_ports, "comports", lambda: list(plugged))
    dev = virtual("rak3172", baud=115200)
    server = web(dev)
    page.goto(server.url)
    row = page.locator(f'tr[data-port="{dev.port}"]')
    expect(row).to_contain_text("virtual RAK3172")
    expect(page.locator("#link-state")).to_have_text("connected")

    plugged.append(fake_usb_port("/dev/ttyUSB7", 0x10C4, 0xEA60, "CP2102 USB to UART"))
    adapter = page.locator('tr[data-port="/dev/ttyUSB7"]')
    expect(adapter).to_contain_text("10C4:EA60")          # plugged in: listed without a reload
    expect(adapter).to_contain_text("CP2102 USB to UART")
    expect(adapter).to_contain_text("UART module")
    plugged.clear()
    expect(adapter).to_have_count(0)                      # pulled out: gone again

    row.get_by_role("button", name="Identify").click()
    device = page.locator("#device")
    for text in ("RAK3172", "application running", OLD, "RUI_BOOT_0.8_STM32WLE5CC", dev.opts.serial_number,
                 f"{dev.port} at 115200 baud"):
        expect(device).to_contain_text(text)
    expect(row.locator(".seen")).to_have_text(f"RAK3172 · {OLD}")
    shot(page, "identify")


def test_a_dropped_file_that_does_not_fit_is_refused_before_anything_is_written(page, web, virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=115200)
    huge = firmware_file(tmp_path / "RAK3172_huge.bin", cat, size=250 * 1024)
    server = web(dev)
    page.goto(server.url)
    pick(page, dev.port)
    drop(page, huge)
    expect(page.locator("#inspect")).to_contain_text("256,000 bytes of data")
    card = page.locator(".job")
    result = card.locator(".result")
    expect(result).to_contain_text("Refused before writing")
    expect(result).to_contain_text("RAK3172's application region holds 200,704")
    expect(result).to_contain_text("next: This firmware does not fit")
    expect(result).to_contain_text("Nothing was written to the module.")
    expect(result).to_contain_text("error: image-too-large")
    expect(card.locator("button.flash")).to_be_hidden()
    shot(page, "refused", card)
    assert dev.updates == 0 and dev.app_version == OLD


def test_a_dropped_file_that_is_not_firmware_is_refused_as_such_with_no_recovery_offered(page, web, virtual,
                                                                                          tmp_path):
    """A JPEG renamed .bin: the page said 'raw binary … target unknown' in a normal box, offered
    'Recover instead…', and the plan then refused it with touches-bootloader and a hint about an
    --address field the page does not have."""
    from test_not_firmware import jpeg
    dev = virtual("rak3172", baud=115200)
    photo = tmp_path / "photo.bin"
    photo.write_bytes(jpeg())
    server = web(dev)
    page.goto(server.url)
    pick(page, dev.port)
    drop(page, photo)
    inspect = page.locator("#inspect")
    expect(inspect).to_contain_text("photo.bin does not look like firmware: it is a JPEG image")
    expect(inspect).to_have_class(re.compile(r"\berror\b"))          # the refusal's look, not a normal box
    expect(inspect).to_contain_text("rakflash won't write this file to any module")
    expect(page.locator("#jobs-empty")).to_contain_text("That file is not firmware")
    expect(page.locator("#recover-bar")).to_be_hidden()
    page.wait_for_timeout(1500)        # past the page's 400 ms wait before it asks for a plan
    expect(page.locator(".job")).to_have_count(0)                     # no plan was even asked for
    assert not server.board.jobs
    assert (dev.flash.erases, dev.flash.programs, dev.updates) == (0, 0, 0)


def test_flash_with_live_progress_to_the_end_even_when_the_tab_is_closed(page, web, virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=115200)
    new = firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat, size=48 * 1024)
    server = web(dev)
    page.goto(server.url)
    pick(page, dev.port)
    page.set_input_files("#file", str(new))
    card = page.locator(".job")
    plan = card.locator(".plan")
    expect(plan).to_contain_text("YMODEM-1K: 49,152 bytes to 0x08006000")
    expect(plan).to_contain_text(f"application {OLD}, bootloader RUI_BOOT_0.8_STM32WLE5CC")
    expect(card.locator(".job-state")).to_have_text("waiting for you")
    shot(page, "plan", card)
    assert dev.updates == 0                                # nothing written before the confirmation

    card.locator("button.flash").click()
    expect(page.locator("#confirm-text")).to_have_text(f"Write 49,152 bytes to RAK3172 on {dev.port}?")
    page.locator("#confirm-write").click()
    progress = card.locator(".progress-text")
    expect(progress).to_have_text(re.compile(r"^write: \d+ % · [\d,]+ of 49,152 bytes · [\d.]+ KiB/s · \d+ s left$"))
    expect(card.locator(".phases li.now")).to_have_text("write")
    shot(page, "progress", card)
    shot(page, "page", full_page=True)

    job = next(iter(server.board.jobs.values()))
    assert job.state == "running"
    page.close()                                           # the tab goes away mid-update

    again = page.context.new_page()
    again.goto(server.url)
    card = again.locator(f'.job[data-job="{job.id}"]')
    result = card.locator(".result")
    assert finished(card).startswith("Done: RAK3172"), result.inner_text()
    expect(result.locator(".before")).to_have_text(OLD)
    expect(result.locator(".after")).to_have_text(NEW)
    expect(result.locator(".settings")).to_have_text("settings: DEVEUI, APPEUI, APPKEY, BAND kept.")
    expect(card.locator(".progress-text")).to_have_text("write: 100 % · 49,152 of 49,152 bytes")
    expect(card.locator(".job-state")).to_have_text("finished")
    shot(again, "done", card)
    assert dev.app_version == NEW and dev.updates == 1


def test_flooding_firmware_prompt_countdown_and_reset_press(page, web, virtual, tmp_path, cat):
    dev = virtual("rak3172", baud=115200, sketch="flooding", flood_after=0.5)
    new = firmware_file(tmp_path / "RAK3172_fixed_sketch.bin", cat)
    time.sleep(0.7)                                        # past the sketch's quiet start-up: it floods now
    server = web(dev)
    page.goto(server.url)
    pick(page, dev.port)
    page.set_input_files("#file", str(new))
    card = page.locator(".job")
    prompt = card.locator(".prompt")
    expect(prompt).to_contain_text("Press the module's reset button now.")
    expect(prompt).to_contain_text("prints without pause")
    countdown = card.locator(".countdown")
    expect(countdown).to_have_text(re.compile(r"^\d+ s left$"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first)              # it counts down
    assert int(countdown.inner_text().split()[0]) < int(first.split()[0])
    shot(page, "flood", card)
    assert dev.updates == 0

    presses = press_while_asked(card, dev.press_reset)   # the person presses the module's reset button
    expect(card.locator(".notes"), f"pressed at {presses} s; the module restarted {dev.resets} times, "
           f"runs {dev.mode}").to_contain_text("Caught the module in its bootloader.")
    expect(prompt).to_be_hidden()
    expect(card.locator(".plan")).to_contain_text("in its bootloader")
    card.locator("button.flash").click()
    page.locator("#confirm-write").click()
    # Its keys are read in the application's quiet start-up window; when that was too short the
    # page asks for one more reset press.
    press_while_asked(card, dev.press_reset, until_result=True)
    result = card.locator(".result")
    assert finished(card).startswith("Done: RAK3172"), result.inner_text()
    expect(result.locator(".after")).to_have_text(NEW)
    # The keys were read in the application's start-up window after the catch and checked after —
    # or, when even a second press found the window too short, the page warns that they were not.
    settings, notes = result.locator(".settings").inner_text(), card.locator(".notes").inner_text()
    assert (settings == "settings: DEVEUI, APPEUI, APPKEY, BAND kept."
            or "keys and settings (DEVEUI, APPEUI, APPKEY, BAND) could not be read" in notes), (settings, notes)
    assert dev.app_version == NEW


def test_the_command_end_to_end_virtual_reset_button_and_cancel(page, tmp_path, cat):
    """`rakflash web --sim … --sim-sketch flooding` as a person starts it; the page's own reset button."""
    need("uvicorn", "the web extra")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "rakflash", "web", "--no-browser", "--sim", "rak3172",
                             "--sim-sketch", "flooding"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        port = proc.stdout.readline().split(" on ", 1)[1].strip()
        started = time.monotonic()
        url = proc.stdout.readline().split(": ", 1)[1].strip()
        page.goto(url)
        time.sleep(max(0.0, started + 1.2 - time.monotonic()))    # past the sketch's quiet start-up
        row = page.locator(f'tr[data-port="{port}"]')
        row.get_by_role("button", name="Identify").click()
        expect(page.locator("#device")).to_contain_text("streams data without pause")
        expect(page.locator("#device")).to_contain_text("gets past it")

        page.locator("#options summary").click()
        page.locator("#opt-window").fill("90")              # --reset-window: room for a loaded host
        pick(page, port)
        page.set_input_files("#file", str(firmware_file(tmp_path / "new.bin", cat)))
        card = page.locator(".job")
        expect(card.locator(".prompt")).to_contain_text("Press the module's reset button now.")
        expect(card.locator(".countdown")).to_have_text(re.compile(r"^\d+ s left$"))
        assert int(card.locator(".countdown").inner_text().split()[0]) > 30   # the option took
        press_while_asked(card, card.locator(".prompt").get_by_role("button", name="Press reset").click)
        expect(card.locator(".notes")).to_contain_text("Caught the module in its bootloader.")
        expect(card.locator(".job-state")).to_have_text("waiting for you")
        card.get_by_role("button", name="Cancel").click()
        result = card.locator(".result")
        expect(result).to_contain_text("Not written: update not confirmed")
        expect(result).to_contain_text("Nothing was written to the module.")
        expect(row.get_by_role("button", name="Identify")).to_be_enabled()     # the port is free again
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_seed_case_doctor_refusal_then_recovery_through_the_rom_bootloader(page, web, virtual, tmp_path, cat):
    """RAK811 with bootloader 3.0.2 and firmware 3.0.0.14: doctor and flash say why not; the page's
    recovery writes the vendor's combined .hex through the STM32 ROM bootloader, guided pin by pin."""
    from rakflash.sim import firmware
    dev = virtual("rak811", baud=115200, bootloader_version="3.0.2", app_version="V3.0.0.13.H")
    full = tmp_path / "RAK811_FULL_3.0.0.14.hex"
    full.write_text(firmware.combined_hex(cat.module("rak811"), "V3.0.5", "V3.0.0.14.H", 8 * 1024))
    server = web(dev)
    page.goto(server.url)
    page.set_input_files("#file", str(full))
    expect(page.locator("#inspect")).to_contain_text("bootloader: V3.0.5")
    row = page.locator(f'tr[data-port="{dev.port}"]')
    row.get_by_role("button", name="Doctor").click()
    problem = page.locator("#doctor .finding.problem")
    expect(problem).to_contain_text("needs bootloader 3.0.5 or later; this one has V3.0.2")
    expect(problem.locator(".command")).to_have_text(f"rakflash recover FULL.hex --port {dev.port} --module rak811")
    shot(page, "doctor", page.locator("#doctor"))

    pick(page, dev.port)
    card = page.locator(".job")
    card.locator("button.flash").click()                   # RUI v3 can't tell its bootloader: flash looks
    page.locator("#confirm-write").click()
    refused = card.locator(".result")
    expect(refused).to_contain_text("Refused before writing: RAK811 firmware V3.0.0.14.H needs bootloader 3.0.5")
    expect(refused).to_contain_text("Nothing was written to the module.")

    page.locator("#recover").click()                       # (the refusal's next step has one too)
    card = page.locator(".job").first                      # the newest operation comes first
    expect(card.locator(".plan")).to_contain_text("Hold pin 17 (BOOT0) high: connect it to 3.3 V.")
    expect(card.locator(".plan")).to_contain_text("RAK811 pins 6 and 7")
    # what becomes of the owner's settings, said before anything is written
    expect(card.locator(".plan .keys-plan")).to_contain_text("raw copy of the data EEPROM at 0x08080000")
    card.get_by_role("button", name="Recover").click()
    expect(page.locator("#confirm-text")).to_have_text(re.compile(
        rf"^Rewrite RAK811's flash \([\d,]+ bytes, bootloader included\) over {re.escape(dev.port)}\?$"))
    page.locator("#confirm-write").click()
    prompt = card.locator(".prompt")
    expect(prompt).to_contain_text("Start the chip's ROM bootloader now")
    expect(card.locator(".countdown")).to_have_text(re.compile(r"^\d+ s left$"))
    shot(page, "recover", card)
    assert dev.bootloader_version == "V3.0.2"

    dev.set_boot_pin(True)                                 # the person holds BOOT0 high …
    dev.press_reset()                                      # … and resets the module
    notes, result = card.locator(".notes"), card.locator(".result")
    wait_for(lambda: "release BOOT0" in notes.inner_text() or result.is_visible(), timeout=90,
             what="the recovery to write, verify and start the chip")
    assert "release BOOT0" in notes.inner_text(), card.inner_text()
    dev.set_boot_pin(False)
    assert finished(card).startswith("Done: RAK811"), result.inner_text()
    expect(result.locator(".boot-before")).to_have_text("V3.0.2")
    expect(result.locator(".boot-after")).to_have_text("V3.0.5")
    expect(result.locator(".before")).to_have_text("V3.0.0.13.H")
    expect(result.locator(".after")).to_have_text("V3.0.0.14.H")
    expect(result).to_contain_text("written and verified (read-back)")
    expect(notes).to_contain_text("keys: a raw copy of user-data at 0x08080000 was kept")
    expect(result.locator(".keys")).to_contain_text("keys: kept")
    expect(result.locator(".keys")).to_contain_text("the data EEPROM at 0x08080000 (4,096 bytes) is unchanged")
    assert (dev.bootloader_version, dev.app_version) == ("V3.0.5", "V3.0.0.14.H")


@pytest.mark.parametrize("appkey", ["read clean", "its answers damaged"])
def test_keys_a_new_firmware_reset_are_written_back_and_the_page_says_so(page, web, virtual, tmp_path, cat,
                                                                        appkey):
    """…and a key whose answers always arrive damaged can't be checked: the page says it may
    have changed (as the CLI does), never that it was kept."""
    from conftest import FAST_BAUD
    from rakflash.sim import Rewrite, firmware
    from test_flash import KEYS, keys_on, set_keys
    dev = virtual("rak3172")                               # at 921600 baud: set in Options, as --baud
    set_keys(dev)
    damaged = appkey != "read clean"
    if damaged:
        dev.uart.faults.rewrite_to_host.append(Rewrite(b"AT+APPKEY=", b"AT+APPKEY\x7f=", times=10_000))
    new = tmp_path / "RAK3172_new_layout.bin"
    new.write_bytes(firmware.app_image(cat.module("rak3172"), NEW, 16 * 1024, new_settings_layout=True))
    server = web(dev)
    page.goto(server.url)
    page.locator("#options summary").click()
    page.locator("#opt-baud").fill(str(FAST_BAUD))
    pick(page, dev.port)
    page.set_input_files("#file", str(new))
    card = page.locator(".job")
    expect(card.locator(".plan")).to_contain_text(f"at {FAST_BAUD} baud")
    card.locator("button.flash").click()
    page.locator("#confirm-write").click()
    result = card.locator(".result")
    assert finished(card).startswith("Done: RAK3172"), result.inner_text()
    expect(result.locator(".after")).to_have_text(NEW)
    if not damaged:
        expect(result.locator(".settings")).to_have_text(
            "settings: the new firmware had reset DEVEUI, APPEUI, APPKEY; rakflash wrote back the values "
            "from before the update.")
        assert keys_on(dev) == KEYS
        return
    expect(result.locator(".settings")).to_have_text(
        "settings: the new firmware had reset DEVEUI, APPEUI; rakflash wrote back the values from before "
        "the update. settings: APPKEY may have changed: rakflash could not confirm its value after the "
        "update (see the warning).")


def test_a_module_that_cannot_say_which_it_is_is_asked_about_not_guessed(page, web, virtual, tmp_path, cat):
    """RUI v3 firmware that names no board: RAK811 or RAK4270? The page asks, as flash does on a terminal."""
    dev = virtual("rak4270", baud=115200, board_status=False)
    image = firmware_file(tmp_path / "RAK4270_V3.0.0.15.bin", cat, module="rak4270", version="V3.0.0.15.H",
                          size=8 * 1024)
    server = web(dev)
    page.goto(server.url)
    pick(page, dev.port)
    page.set_input_files("#file", str(image))
    card = page.locator(".job")
    choose = card.locator(".choose")
    expect(choose).to_contain_text("does not say whether it is a RAK811 or a RAK4270")
    expect(choose).to_contain_text("The file is built for: RAK4270.")
    expect(card.locator("button.flash")).to_be_hidden()
    shot(page, "choose", card)
    assert dev.updates == 0
    choose.get_by_role("button", name="It is a RAK4270").click()
    expect(card.locator(".notes")).to_contain_text("the module is a RAK4270, as you said")
    expect(card.locator(".plan")).to_contain_text("RAK4270 on")
    card.locator("button.flash").click()
    page.locator("#confirm-write").click()
    assert finished(card).startswith("Done: RAK4270"), card.inner_text()
    expect(card.locator(".result .after")).to_have_text("V3.0.0.15.H")
    assert dev.app_version == "V3.0.0.15.H"


def test_a_rak4631_dfu_package_over_its_re_enumerating_usb_port(page, web, tmp_path):
    """The page finds the native-USB module by its USB ids, inspects the package, and follows the
    module to its bootloader's port and back (the port list changes as it goes)."""
    from rakflash.sim import SimOptions, create
    from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD
    from test_rak4631 import KEY, rui3_package
    dev = create("rak4631", SimOptions(baud=USB_FULL_SPEED_BAUD, latency_ms=0.2, flash_scale=0.0,
                                       dfu_key=KEY)).start()
    try:
        pkg = Path(rui3_package(tmp_path, dev))
        server = web()                                       # no --port: discovery finds it
        page.goto(server.url)
        row = page.locator(f'tr[data-port="{dev.port}"]')
        expect(row).to_contain_text("1915:521F")
        expect(row).to_contain_text("RAK4631-R")
        pick(page, dev.port)
        page.set_input_files("#file", str(pkg))
        inspect = page.locator("#inspect")
        expect(inspect).to_contain_text("nRF52 DFU package (.zip)")
        expect(inspect).to_contain_text(re.compile(r"application \S+\.bin: 24,000 bytes"))
        card = page.locator(".job")
        expect(card.locator(".plan")).to_contain_text("RAK4631-R")
        card.locator("button.flash").click()
        page.locator("#confirm-write").click()
        assert finished(card).startswith("Done: RAK4631-R"), card.inner_text()
        expect(card.locator(".result .before")).to_have_text("RUI_4.0.5_RAK4631")
        expect(card.locator(".result .after")).to_have_text("RUI_4.0.6_RAK4631")
        expect(card.locator(".notes")).to_contain_text("re-enumerated as its bootloader")
        expect(card.locator(".progress-text")).to_have_text("write: 100 % · 24,000 of 24,000 bytes")
        assert dev.app_version == "RUI_4.0.6_RAK4631"
    finally:
        dev.stop()


def test_several_modules_at_once_with_one_confirmation_and_a_report(page, web, virtual, tmp_path, cat):
    a, b = (virtual("rak3172", baud=115200, serial_number=s) for s in ("SIMA", "SIMB"))
    other = virtual("rak811", baud=115200)                   # RAK3172 firmware won't do for it
    new = firmware_file(tmp_path / "RAK3172_4.0.6.bin", cat, size=16 * 1024)
    server = web(a, b, other)
    page.goto(server.url)
    for dev in (a, b, other):
        pick(page, dev.port)
    page.set_input_files("#file", str(new))
    card = page.locator(".job")
    rows = {dev.port: card.locator(f'table.fleet tr[data-port="{dev.port}"]') for dev in (a, b, other)}
    for dev in (a, b):
        expect(rows[dev.port].locator(".f-result")).to_contain_text(f"plan: 16,384 bytes, {OLD} → {NEW}")
    expect(rows[a.port].locator(".f-serial")).to_have_text("SIMA")
    expect(rows[other.port].locator(".f-result")).to_contain_text("wrong-target:")
    flash = card.get_by_role("button", name="Flash these modules")
    flash.click()
    expect(page.locator("#confirm-text")).to_have_text(
        f"Write RAK3172_4.0.6.bin to the modules on {a.port}, {b.port}?")
    assert a.updates == b.updates == other.updates == 0
    page.locator("#confirm-write").click()
    assert finished(card).startswith("2 of 3 modules updated or up to date; 1 not (see its row)."), card.inner_text()
    for dev in (a, b):
        expect(rows[dev.port].locator(".after")).to_have_text(NEW)
    shot(page, "fleet", card)
    with page.expect_download() as download:
        card.get_by_role("link", name="Download the report").click()
    lines = [json.loads(ln) for ln in Path(download.value.path()).read_text().splitlines()]
    assert sorted((r["serial_number"], r["result"], r["app_version_after"]) for r in lines) == \
        [("SIMA", "ok", NEW), ("SIMB", "ok", NEW)]
    assert a.app_version == b.app_version == NEW and other.updates == 0


def test_an_esp32_without_a_reset_circuit_guided_through_gpio0_on_the_page(page, web, virtual, tmp_path):
    """A RAK11200 (nothing on RTS/DTR reaches it, as RAK documents it): the page asks to hold GPIO0
    low and reset, the virtual board's buttons do it, esptool writes, the chip's MD5 is shown, and
    the page asks to let go and reset; the new app's boot log says its version."""
    from rakflash.sim import Mode, esp_firmware
    dev = virtual("rak11200", baud=115200)
    app = tmp_path / "rak11200-app.bin"
    app.write_bytes(esp_firmware.app_image(0, "1.1.0", 48 * 1024, project="sample", flash_mb=4))
    server = web(dev)
    page.goto(server.url)
    pick(page, dev.port)
    drop(page, app)
    expect(page.locator("#inspect")).to_contain_text("ESP-IDF app image")
    card = page.locator(".job")
    prompt = card.locator(".prompt")
    expect(prompt).to_contain_text("Start the chip's ROM download mode now:", timeout=60_000)
    expect(prompt).to_contain_text("Hold BOOT0 (ESP32 GPIO0")
    hands = prompt.locator(".virtual-controls")
    hands.get_by_role("button", name="Hold GPIO0 low").click()
    hands.get_by_role("button", name="Press reset").click()
    expect(card.locator(".plan")).to_contain_text("1.1.0", timeout=60_000)
    assert dev.mode == Mode.ROM and dev.flash.programs == 0             # nothing before the confirmation
    card.locator("button.flash").click()
    page.locator("#confirm-write").click()
    expect(prompt).to_contain_text("Start the new firmware now:", timeout=60_000)
    expect(prompt).to_contain_text("Let go of BOOT0")
    hands.get_by_role("button", name="Release GPIO0").click()
    hands.get_by_role("button", name="Press reset").click()
    result = card.locator(".result")
    assert finished(card).startswith("Done: RAK11200"), result.inner_text()
    expect(result.locator(".before")).to_have_text("1.0.0")
    expect(result.locator(".after")).to_have_text("1.1.0")
    expect(result.locator(".verified")).to_have_text(re.compile(
        r"^verified: the chip's MD5 of 0x00010000\+[\d,]+ is the image's$"))
    assert not [w for w in result.locator(".note").all_inner_texts() if "version" in w]
    assert dev.mode == Mode.APP and dev.app_version == "1.1.0"


def test_keys_shown_masked_backup_and_settings_as_downloads_and_a_template_applied(page, web, virtual, tmp_path):
    from test_flash import at_exchange
    from test_keys_backup import KEYS
    from test_settings_files import CHOSEN

    def on(dev, names) -> dict[str, str]:
        return {n: at_exchange(dev.port, f"AT+{n}=?", 115200)[0].split("=", 1)[1] for n in names}

    a, b = virtual("rak3172", baud=115200), virtual("rak3172", baud=115200)
    for name, value in {**KEYS, **CHOSEN}.items():
        assert at_exchange(a.port, f"AT+{name}={value}", 115200)[-1] == "OK", name
    server = web(a, b)
    page.goto(server.url)
    page.locator(f'tr[data-port="{a.port}"]').get_by_role("button", name="Keys").click()
    panel = page.locator("#keys")
    for text in (KEYS["DEVEUI"], KEYS["APPEUI"], "5 (US915)", "OTAA", a.opts.serial_number, "set (hidden)"):
        expect(panel).to_contain_text(text)
    assert KEYS["APPKEY"] not in page.content()           # the page never holds the key itself
    with page.expect_download() as download:
        panel.get_by_role("button", name="Download keys backup").click()
    assert download.value.suggested_filename == f"keys-rak3172-{a.opts.serial_number}.json"
    assert json.loads(Path(download.value.path()).read_text())["settings"]["APPKEY"] == KEYS["APPKEY"]
    expect(panel.locator(".keys-result")).to_contain_text("saved: keys-rak3172-")
    assert KEYS["APPKEY"] not in page.content()
    with page.expect_download() as download:
        panel.get_by_role("button", name="Save settings").click()
    template = tmp_path / "field-trial.json"
    download.value.save_as(template)
    assert json.loads(template.read_text())["settings"]["DR"] == CHOSEN["DR"]
    shot(page, "keys", panel)

    page.locator(f'tr[data-port="{b.port}"]').get_by_role("button", name="Keys").click()
    expect(panel).to_contain_text(f"Keys of the module on {b.port}")
    with page.expect_file_chooser() as chooser:
        panel.get_by_role("button", name="Apply settings…").click()
    chooser.value.set_files(str(template))
    result = panel.locator(".keys-result")
    expect(result).to_contain_text(f"applied: field-trial.json to RAK3172 on {b.port}")
    for name in CHOSEN:
        expect(result.locator(".changed")).to_contain_text(name)
    expect(result.locator(".same")).to_contain_text("NJM")
    assert on(b, CHOSEN) == CHOSEN
