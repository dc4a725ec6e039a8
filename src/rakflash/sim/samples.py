"""Sample firmware for trying every flow on the virtual modules: ``rakflash samples DIR``.

One file per module and per path a person meets — an application ``.bin``, a
full ``.hex`` (bootloader included, for ``recover``), the RAK11720's Apollo3 OTA
blob, the RAK4631-R's signed Secure DFU package, the Arduino RAK4631's legacy
package and sketch ``.hex``, and the legacy package carrying RUI3's bootloader
that ``convert-to-rui3`` takes — built by the same builders the tests use
(:mod:`rakflash.sim.firmware`, :mod:`rakflash.dfu_package`). Each application
carries the "newer" version of :data:`firmware.DEFAULT_VERSIONS`, so a virtual
module started with its defaults takes it as an update.

The RAK4631-R package is signed with a key written beside it (``dfu-key.pem``),
which ``rakflash sim rak4631 --dfu-key DIR/dfu-key.pem`` makes the virtual
bootloader trust — the same relation as a real RAK4631-R's bootloader and
RAK's published key. A key already in ``DIR`` is kept and reused, so running
``samples`` again never invalidates a simulator started with it. These files
are synthetic: they run only on the simulator, never on a real module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import catalog as _catalog
from .. import dfu_package as dp
from ..apollo3_ota import build_blob
from . import firmware

APP_SIZE = 24 * 1024          # small enough that every flow takes seconds at 115200 baud
KEY_FILE = "dfu-key.pem"


@dataclass
class Sample:
    name: str          # file name inside the folder
    module: str        # catalog key
    what: str          # what it is, for people
    use: str           # the command it is for (DIR stands for the folder)

    def to_dict(self) -> dict:
        return {"file": self.name, "module": self.module, "what": self.what, "use": self.use}


def write_samples(folder: str | Path) -> list[Sample]:
    """Write every sample file into ``folder`` (made if missing); returns what was written."""
    cat = _catalog.load()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    key_path = out / KEY_FILE
    if key_path.exists():
        key = key_path.read_bytes()
        dp.public_key_bytes(key)            # a damaged key is an error here, not a refusal later
    else:
        key = dp.new_signing_key()
        key_path.write_bytes(key)
        key_path.chmod(0o600)
    written: list[Sample] = []

    def put(name: str, data: bytes | str, module: str, what: str, use: str) -> None:
        path = out / name
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        written.append(Sample(name, module, what, use))

    for key_name in ("rak3172", "rak811", "rak4270", "rak11720"):
        m = cat.module(key_name)
        boot_v, _, new_v = firmware.DEFAULT_VERSIONS[m.key]
        app = firmware.app_image(m, new_v, APP_SIZE)
        put(f"{m.key}-app.bin", app, m.key, f"{m.name} application {new_v}",
            f"rakflash flash DIR/{m.key}-app.bin --port PORT")
        if m.key == "rak11720":
            put(f"{m.key}-app.ota", build_blob(app), m.key,
                f"{m.name} application {new_v} as an Apollo3 OTA blob (48-byte header + .bin)",
                f"rakflash flash DIR/{m.key}-app.ota --port PORT")
        put(f"{m.key}-full.hex", firmware.combined_hex(m, boot_v, new_v, APP_SIZE), m.key,
            f"{m.name} bootloader {boot_v} + application {new_v}",
            f"rakflash recover DIR/{m.key}-full.hex --port PORT --module {m.key}")

    rui3 = cat.module("rak4631-r")
    boot_v, _, new_v = firmware.DEFAULT_VERSIONS[rui3.key]
    app = firmware.app_image(rui3, new_v, APP_SIZE)
    put("rak4631-r-app.zip", dp.secure_package(app, key_pem=key, fw_version=2), rui3.key,
        f"{rui3.name} application {new_v}, Nordic Secure DFU package signed with {KEY_FILE}",
        "rakflash flash DIR/rak4631-r-app.zip --port PORT")
    put("rak4631-r-full.hex", firmware.combined_hex(rui3, boot_v, new_v, APP_SIZE), rui3.key,
        f"{rui3.name} bootloader {boot_v} + application {new_v} (SWD only)",
        "rakflash recover DIR/rak4631-r-full.hex --via swd --module rak4631-r")
    put("rui3_nrf52840_bootloader_latest.zip", rui3_bootloader_package(cat, boot_v), rui3.key,
        f"RUI3's Secure DFU bootloader {boot_v} as a legacy (Adafruit) bootloader package",
        "rakflash convert-to-rui3 DIR/rui3_nrf52840_bootloader_latest.zip DIR/rak4631-r-app.zip --port PORT")

    ard = cat.module("rak4631-arduino")
    _, _, new_v = firmware.DEFAULT_VERSIONS[ard.key]
    put("rak4631-arduino-sketch.zip", dp.legacy_package(firmware.app_image(ard, new_v, APP_SIZE)), ard.key,
        f"{ard.name} sketch {new_v}, Adafruit legacy DFU package (adafruit-nrfutil dfu genpkg)",
        "rakflash flash DIR/rak4631-arduino-sketch.zip --port PORT")
    put("rak4631-arduino-sketch.hex",
        firmware.to_hex({ard.app.start: firmware.app_image(ard, new_v, APP_SIZE, seed=1)}), ard.key,
        f"{ard.name} sketch {new_v} as the Arduino IDE's .hex", "rakflash flash DIR/rak4631-arduino-sketch.hex --port PORT")
    written.append(Sample(KEY_FILE, rui3.key, "the ECDSA P-256 key the RAK4631-R package is signed with",
                          f"rakflash sim rak4631 --dfu-key DIR/{KEY_FILE}"))

    # The ESP32 modules: an ESP-IDF app .bin, and a merged binary (bootloader, partition table,
    # app) for a chip whose flash holds nothing yet (a new RAK3112).
    from . import esp_firmware
    for key_name in ("rak11200", "rak3112"):
        m = cat.module(key_name)
        project, _, new_v = esp_firmware.DEFAULT_VERSIONS[m.key]
        chip, mb = m.esp_fact("image_chip_id"), m.mcu.flash.size >> 20
        app = esp_firmware.app_image(chip, new_v, 4 * APP_SIZE, project=project, flash_mb=mb)
        put(f"{m.key}-app.bin", app, m.key, f"{m.name} ESP-IDF app {new_v} ({m.mcu.name.split(' (')[0]})",
            f"rakflash flash DIR/{m.key}-app.bin --port PORT")
        put(f"{m.key}-merged.bin", esp_firmware.merged(chip, app), m.key,
            f"{m.name} bootloader, partition table and app {new_v}, merged (esptool merge-bin)",
            f"rakflash flash DIR/{m.key}-merged.bin --port PORT")
    return written


def rui3_bootloader_package(cat: _catalog.Catalog, version: str) -> bytes:
    """What RAK's rui3_nrf52840_bootloader_latest.zip is to the Adafruit bootloader: a legacy
    bootloader package carrying RUI3's Secure DFU bootloader (here the simulator's image of one)."""
    rui3 = cat.module("rak4631-r")
    segs = firmware.bootloader_image(rui3, version)
    start = rui3.region("bootloader").start
    image = bytearray(b"\xff" * (max(a + len(d) for a, d in segs.items()) - start))
    for a, d in segs.items():
        image[a - start:a - start + len(d)] = d
    data = bytes(image)
    return dp.make_package(data, dp.legacy_init_packet(data), legacy=True, kind="bootloader",
                           name="bootloader")
