"""Nothing is written from a file that is not firmware, by any write path (issue 17, items 1 and 8).

Random bytes, a JPEG renamed .bin, an Apollo3 INFO0 dump and another MCU's image go through
every path that writes — flash over YMODEM, AMOTA, Secure DFU and legacy DFU; recover over the
STM32 ROM, the Apollo3 secure bootloader and SWD; convert-to-rui3 — with the module named, and
the virtual module's flash is never erased or programmed (the same files inside the wrappers
each path also takes: DFU packages, an Apollo3 OTA or wired-update blob). The paths run through
the Python API as the CLI and the page call it; the CLI and the page each get a run of their own.
"""

from __future__ import annotations

import random
import struct

import pytest

from conftest import FAST_BAUD, cli_json
from rakflash import apollo3_info0, apollo3_ota, catalog, images
from rakflash import apollo3_wired as wired
from rakflash import dfu_package as dp
from rakflash.errors import NotFirmware, PlanRefused, RakflashError
from rakflash.events import Prompt
from rakflash.flows.convert import convert_to_rui3
from rakflash.flows.recover import RecoveryOptions, plan_recovery, recover
from rakflash.flows.session import FlashOptions, FlashSession
from rakflash.link import Link
from rakflash.sim import firmware
from rakflash.sim.nrf52 import USB_FULL_SPEED_BAUD

CAT = catalog.load()
KEY = dp.new_signing_key()
USB = ("rak4631-r", "rak4631-arduino")          # native USB: the line runs at USB's rate


def jpeg() -> bytes:
    """A whole baseline JPEG (an 8x8 grey picture a browser shows): SOI, JFIF APP0, one
    quantisation table, SOF0, one-code DC and AC Huffman tables, SOS, the entropy-coded
    block (DC difference 0, end of block), EOI — ITU-T T.81 Annex B."""
    def seg(marker: int, body: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body
    return (b"\xff\xd8" + seg(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0")
            + seg(0xDB, b"\0" + b"\x01" * 64)
            + seg(0xC0, b"\x08\0\x08\0\x08\x01\x01\x11\0")
            + seg(0xC4, b"\x00" + bytes([1] + [0] * 15) + b"\x00")
            + seg(0xC4, b"\x10" + bytes([1] + [0] * 15) + b"\x00")
            + seg(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x3f" + b"\xff\xd9")


def other_mcus_image(module) -> bytes:
    """An application built for the first module in the catalog with another MCU."""
    other = next(m for m in CAT.modules.values() if m.mcu is not module.mcu)
    return firmware.app_image(other, firmware.DEFAULT_VERSIONS[other.key][2], 8 * 1024)


FILES = {
    "noise-small": lambda m: random.Random(f"{m.key}:small").randbytes(700),
    "noise-large": lambda m: random.Random(f"{m.key}:large").randbytes(48 * 1024),
    "jpeg": lambda m: jpeg(),
    "info0": lambda m: apollo3_info0.rak11720_default().raw,
    "other-mcu": other_mcus_image,
}


# The container each path also takes, by (path, module): a DFU package, an Apollo3 OTA blob,
# an Apollo3 wired-update blob (written in place at RUI's bootloader address).
WRAPPERS = {
    ("flash", "rak4631-r"): lambda data: dp.secure_package(data, key_pem=KEY, fw_version=2),
    ("convert-app", "rak4631-arduino"): lambda data: dp.secure_package(data, key_pem=KEY, fw_version=2),
    ("flash", "rak4631-arduino"): dp.legacy_package,
    ("convert-bootloader", "rak4631-arduino"): lambda data: dp.make_package(
        data, dp.legacy_init_packet(data), legacy=True, kind="bootloader", name="bootloader"),
    ("flash", "rak11720"): apollo3_ota.build_blob,
    ("recover-apollo3-sbl", "rak11720"): lambda data: b"".join(b.raw for b in wired.build_blocks(data, 0xC000)),
}


# Every write path with every module it writes.
PATHS = ([("flash", m.key) for m in CAT.modules.values()]
         + [(f"recover-{method}", m.key) for m in CAT.modules.values() for method in m.recovery
            if method in ("stm32-rom", "apollo3-sbl", "swd")]
         + [(f"recover-{method}+app", m.key) for m in CAT.modules.values() for method in m.recovery
            if method in ("stm32-rom", "apollo3-sbl")]       # the file as --app, beside a bootloader image
         + [("convert-bootloader", "rak4631-arduino"), ("convert-app", "rak4631-arduino")])
CASES = [pytest.param(path, key, kind, wrap, id=f"{path}-{key}-{kind}{'-wrapped' if wrap else ''}")
         for path, key in PATHS for kind in FILES for wrap in (False, True)
         if not wrap or (path, key) in WRAPPERS]


def person(dev):
    """Does what the prompts say: hold the boot pin and reset; release it."""
    def act(event) -> None:
        if isinstance(event, Prompt):
            if event.action.startswith("release"):
                dev.set_boot_pin(False)
                if event.action.endswith("reset"):
                    dev.press_reset()
            else:
                dev.set_boot_pin(True)
                dev.press_reset()
    return act


def good_packages(tmp_path):
    """RAK's two conversion packages (the simulator's images of them)."""
    rui3 = CAT.module("rak4631-r")
    segs = firmware.bootloader_image(rui3, "RUI_BOOT_0.6_RAK4631")
    start = rui3.region("bootloader").start
    boot = bytearray(b"\xff" * (max(a + len(d) for a, d in segs.items()) - start))
    for a, d in segs.items():
        boot[a - start:a - start + len(d)] = d
    bl = tmp_path / "rui3_nrf52840_bootloader_latest.zip"
    bl.write_bytes(dp.make_package(bytes(boot), dp.legacy_init_packet(bytes(boot)), legacy=True,
                                   kind="bootloader", name="bootloader"))
    app = tmp_path / "RUI_4.0.6_RAK4631.zip"
    app.write_bytes(dp.secure_package(firmware.app_image(rui3, "RUI_4.0.6_RAK4631", 16_000),
                                      key_pem=KEY, fw_version=2))
    return str(bl), str(app)


def write_through(path: str, module, dev, file: str, tmp_path, monkeypatch) -> None:
    """What the command (and the page) does for ``path``: load, plan, and write if planned."""
    baud = USB_FULL_SPEED_BAUD if module.key in USB else FAST_BAUD
    if path == "flash":
        with Link(dev.port, baud) as link:
            FlashSession(link, images.load(file, module=module),
                         FlashOptions(module=module, baud=baud, keep_settings=False)).run()
    elif path.startswith("recover-"):
        method = path[len("recover-"):].removesuffix("+app")
        options = RecoveryOptions(baud=FAST_BAUD, window=5.0, after_timeout=5.0, release_wait=0.1)
        image, app = images.load(file, module=module), None
        if path.endswith("+app"):
            boot = tmp_path / "BOOT.hex"
            boot_v = firmware.DEFAULT_VERSIONS[module.key][0]
            boot.write_text(firmware.to_hex(firmware.bootloader_image(module, boot_v)))
            image, app = images.load(boot, module=module), image
        plan = plan_recovery(image, module, method=method, app=app, options=options)
        if method == "swd":
            from fake_pyocd import FakePyOCD
            from rakflash import swd_link
            monkeypatch.setattr(swd_link, "pyocd_api", lambda: FakePyOCD(dev))
            recover(None, plan, options)
        else:
            with Link(dev.port, baud) as link:
                recover(link, plan, options, emit=person(dev))
    else:
        bl, app = good_packages(tmp_path)
        bl, app = (file, app) if path == "convert-bootloader" else (bl, file)
        with Link(dev.port, baud) as link:
            convert_to_rui3(link, images.load(bl), images.load(app))


@pytest.mark.parametrize("path,key,kind,wrap", CASES)
def test_nothing_is_written_from_a_file_that_is_not_firmware(virtual, tmp_path, monkeypatch,
                                                             path, key, kind, wrap):
    module = CAT.module(key)
    data = FILES[kind](module)
    if wrap:
        data = WRAPPERS[path, key](data)
    suffix = ".zip" if data[:4] == b"PK\x03\x04" else ".bin"
    file = tmp_path / f"{'photo' if kind == 'jpeg' else kind}{suffix}"
    file.write_bytes(data)
    if path == "recover-swd":
        from fake_pyocd import FakeWorld
        dev = FakeWorld(flash_base=module.mcu.flash.start, flash_size=module.mcu.flash.size,
                        installed={module.swd_target})
    else:
        kw = {"baud": USB_FULL_SPEED_BAUD, "dfu_key": KEY} if key in USB else {}
        if path.startswith("recover-apollo3-sbl"):
            kw["info0"] = apollo3_info0.rak11720_default().replace(uart_baud=FAST_BAUD).raw
        dev = virtual(key, **kw)
        if path.startswith("recover-"):      # the boot pin already held: the ROM waits
            dev.set_boot_pin(True)
            dev.press_reset()
        before = (dev.flash.erases, dev.flash.programs, bytes(dev.flash.mem))
    with pytest.raises(RakflashError) as refused:
        write_through(path, module, dev, str(file), tmp_path, monkeypatch)
    exc = refused.value
    if kind == "other-mcu":          # firmware, but for another chip (or not a package where one is due)
        assert isinstance(exc, PlanRefused), exc
    else:
        assert isinstance(exc, NotFirmware), exc
        assert "does not look like firmware" in exc.message and exc.exit_code == 3
        # (an ESP chip's firmware starts with an ESP image header, the others' with a vector table)
        assert {"jpeg": "JPEG image", "info0": "INFO0 dump"}.get(
            kind, "ESP image" if module.esp else "vector table") in exc.message
    if path == "recover-swd":
        assert dev.written == [] and dev.opened == []       # the probe was never even opened
    else:
        assert (dev.flash.erases, dev.flash.programs) == before[:2], "the flash was written"
        assert bytes(dev.flash.mem) == before[2]


@pytest.mark.parametrize("key", list(CAT.modules))
def test_genuine_images_are_still_taken(tmp_path, key):
    """An application .bin, a full image and a bootloader-only image pass the same check, and the
    full and bootloader-only images are planned by each recovery method the module has."""
    from rakflash.flows.recover import METHODS
    module = CAT.module(key)
    if module.esp is not None:           # an ESP chip: its app, merged and bootloader images
        from rakflash.sim import esp_firmware
        chip = module.esp["image_chip_id"]
        app_bytes = esp_firmware.app_image(chip, "1.1.0", 16 * 1024)
        for name, data in (("app.bin", app_bytes), ("merged.bin", esp_firmware.merged(chip, app_bytes)),
                           ("boot.bin", esp_firmware.bootloader_image(chip))):
            (tmp_path / name).write_bytes(data)
            assert images.analyse(images.load(tmp_path / name)).not_firmware is None
            assert images.analyse(images.load(tmp_path / name, module=module), module=module).module is module
        return
    boot_v, _, app_v = firmware.DEFAULT_VERSIONS[key]
    app = tmp_path / "app.bin"
    app.write_bytes(firmware.app_image(module, app_v, 16 * 1024))
    full = tmp_path / "FULL.hex"
    full.write_text(firmware.combined_hex(module, boot_v, app_v, 16 * 1024))
    boot = tmp_path / "BOOT.hex"
    boot.write_text(firmware.to_hex(firmware.bootloader_image(module, boot_v)))
    for f in (app, full, boot):
        assert images.analyse(images.load(f)).not_firmware is None
        assert images.analyse(images.load(f, module=module), module=module).module is module
    for method in (m for m in module.recovery if m in METHODS):
        for f in (full, boot):
            plan = plan_recovery(images.load(f, module=module), module, method=method,
                                 options=RecoveryOptions(baud=FAST_BAUD))
            assert plan.bytes > 0
        plan = plan_recovery(images.load(boot, module=module), module, method=method,      # --app
                             app=images.load(app, module=module), options=RecoveryOptions(baud=FAST_BAUD))
        assert plan.image.includes_app and plan.image.includes_bootloader


def test_flash_refuses_it_before_the_port_is_touched(virtual, tmp_path):
    """A module whose sketch floods the port: for a file that is not firmware, flash asks for no
    reset press and sends nothing (it used to catch the bootloader first, then refuse)."""
    from rakflash.events import Phase, Recorder
    dev = virtual("rak3172", sketch="flooding", flood_after=0.2)
    photo = tmp_path / "photo.bin"
    photo.write_bytes(jpeg())
    events = Recorder()
    with Link(dev.port, FAST_BAUD) as link, pytest.raises(NotFirmware):
        FlashSession(link, images.load(str(photo)), FlashOptions(baud=FAST_BAUD, reset_window=3.0),
                     emit=events).run()
    assert not events.of(Prompt) and not events.of(Phase), events.events
    assert (dev.resets, dev.flash.erases, dev.flash.programs) == (0, 0, 0)


def test_a_hex_without_an_application_start_is_not_told_to_check_address(tmp_path):
    """A .hex carries its own addresses (and the page has no --address): when its application
    region holds no vector table, the next step is the right image, not '--address'."""
    from rakflash.errors import TouchesBootloader
    from rakflash.flows.identify import DeviceInfo
    from rakflash.flows.planning import make_plan
    module = CAT.module("rak3172")
    segs = firmware.bootloader_image(module, "RUI_BOOT_0.8_STM32WLE5CC")
    segs[module.app.start] = random.Random("app").randbytes(4096)          # no vector table there
    path = tmp_path / "FULL_damaged.hex"
    path.write_text(firmware.to_hex(segs))
    device = DeviceInfo("/dev/ttyUSB0", 115200, "app", "rui3", module=module, app_version="RUI_4.0.5_RAK3172-E")
    with pytest.raises(TouchesBootloader) as refused:
        make_plan(images.load(path), device)
    assert "does not start an application at 0x08006000" in refused.value.message
    assert "--address" not in refused.value.hint and "RAK3172" in refused.value.hint
    # a .bin placed with --address keeps the hint that fits it
    app = tmp_path / "app.bin"
    app.write_bytes(firmware.app_image(module, "RUI_4.0.6_RAK3172-E", 48 * 1024))
    with pytest.raises(TouchesBootloader) as refused:
        make_plan(images.load(app, address=0x08000000), device)
    assert "Check --address (a RAK3172 application .bin goes to 0x08006000)" in refused.value.hint


@pytest.mark.parametrize("key", [m.key for m in CAT.modules.values() if m.recovery and m.esp is None])
def test_a_full_image_whose_application_part_is_not_firmware_is_not_recovered_with(tmp_path, key):
    """A genuine bootloader, and random bytes where the application starts: the check of the
    image's first bytes alone passed it. Erased flash there (a dump without an application) is
    still taken."""
    from rakflash.flows.recover import METHODS
    module = CAT.module(key)
    segs = firmware.bootloader_image(module, firmware.DEFAULT_VERSIONS[key][0])
    for method in (m for m in module.recovery if m in METHODS):
        segs[module.app.start] = random.Random(key).randbytes(4096)
        bad = tmp_path / "FULL_bad_app.hex"
        bad.write_text(firmware.to_hex(segs))
        with pytest.raises(PlanRefused) as refused:
            plan_recovery(images.load(bad, module=module), module, method=method)
        # where the bootloader lies above the application (nRF52), the file starts with those bytes
        assert (f"application base {module.app.start:#010x}" in refused.value.message
                if module.region("bootloader").start < module.app.start else
                isinstance(refused.value, NotFirmware)), refused.value
        if module.region("bootloader").start < module.app.start:     # the file starts with the bootloader
            segs[module.app.start] = b"\xff" * 4096
            erased = tmp_path / "FULL_no_app.hex"
            erased.write_text(firmware.to_hex(segs))
            assert plan_recovery(images.load(erased, module=module), module, method=method).bytes > 0


# ------------------------------------------------------------------ the command line

def test_recover_refuses_a_jpeg_renamed_bin_with_boot0_held(virtual, tmp_path):
    """The issue's run: `recover photo.bin --port P --module rak3172 --yes`, BOOT0 held, wrote
    the JPEG to 0x08006000 and said 'written and verified'."""
    dev = virtual("rak3172")
    dev.set_boot_pin(True)
    dev.press_reset()
    before = (dev.flash.erases, dev.flash.programs, bytes(dev.flash.mem))
    photo = tmp_path / "photo.bin"
    photo.write_bytes(jpeg())
    code, out = cli_json("recover", str(photo), "--port", dev.port, "--module", "rak3172", "--yes",
                         "--baud", str(FAST_BAUD), "--window", "5")
    assert (code, out["error"]) == (3, "not-firmware"), out
    assert "photo.bin does not look like firmware: it is a JPEG image" in out["message"]
    assert "RAK3172" in out["hint"]
    assert (dev.flash.erases, dev.flash.programs, bytes(dev.flash.mem)) == before


@pytest.mark.parametrize("args", [(), ("--address", "0x08006000"), ("--module", "rak3172")],
                         ids=["as-given", "at-the-application-address", "module-named"])
def test_flash_says_a_jpeg_is_not_firmware(virtual, tmp_path, args):
    """Not 'starts at 0x00000000 … name the module with --module', nor 'Check --address (a
    RAK3172 application .bin goes to 0x08006000)' when that is the address given."""
    dev = virtual("rak3172")
    photo = tmp_path / "photo.bin"
    photo.write_bytes(jpeg())
    code, out = cli_json("flash", str(photo), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes", *args)
    assert (code, out["error"]) == (3, "not-firmware"), out
    assert "does not look like firmware: it is a JPEG image (it starts FF D8 FF E0)" in out["message"]
    assert "--address" not in out["hint"] and "--module" not in out["hint"]
    assert (dev.flash.erases, dev.flash.programs, dev.updates, dev.resets) == (0, 0, 0, 0)


def test_inspect_says_what_the_file_is_instead_of_firmware(tmp_path):
    photo = tmp_path / "photo.bin"
    photo.write_bytes(jpeg())
    code, out = cli_json("inspect", str(photo))
    assert code == 0 and out["not_firmware"].startswith("it is a JPEG image"), out
    from conftest import run_cli
    text = run_cli("inspect", str(photo)).stdout
    assert "does not look like firmware: it is a JPEG image" in text, text


# ------------------------------------------------------------------ the web page's operations

from web_support import wait_for, web  # noqa: E402,F401  (web is a fixture)


@pytest.mark.parametrize("operation", ["flash", "recover"])
def test_the_pages_flash_and_recovery_refuse_it_before_writing(virtual, web, tmp_path, operation):
    """The page's own calls (as a script, or a page that offered them anyway): refused as not
    firmware, the page's 'Refused before writing', nothing written."""
    from web_support import need
    httpx = need("httpx", "the web tests' HTTP client")
    dev = virtual("rak3172")
    if operation == "recover":
        dev.set_boot_pin(True)
        dev.press_reset()
    before = (dev.flash.erases, dev.flash.programs, bytes(dev.flash.mem))
    server = web(dev)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        up = c.post("api/images", content=jpeg(), headers={"X-File-Name": "photo.bin"}).json()
        assert up["inspect"]["not_firmware"].startswith("it is a JPEG image"), up
        job = c.post(f"api/{operation}", json={"port": dev.port, "image": up["image"], "module": "rak3172",
                                               "baud": FAST_BAUD, "window": 5}).json()["job"]
        result = wait_for(lambda: next(j for j in c.get("api/jobs").json()["jobs"] if j["id"] == job)
                          .get("result"), what="the job's result")
    assert (result["outcome"], result["error"], result["written"]) == ("refused", "not-firmware", "nothing"), result
    assert "photo.bin does not look like firmware" in result["message"]
    assert (dev.flash.erases, dev.flash.programs, bytes(dev.flash.mem)) == before
