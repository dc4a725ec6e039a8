"""Synthetic firmware images that look like the real ones to rakflash and to the simulator.

An application image starts with a Cortex-M vector table that fits the
module's MCU (initial SP at the top of RAM, reset handler inside the
application region), carries its version string the way real builds do
(somewhere in its read-only data), and is filled with deterministic
pseudo-random bytes up to the requested size. The simulator runs whichever
version string it finds, so these images "are" that firmware.
"""

from __future__ import annotations

import io
import random
import struct

import intelhex

from ..catalog import Module

DEFAULT_VERSIONS = {
    # module key: (bootloader version, running app version, a newer app version)
    "rak3172": ("RUI_BOOT_0.8_STM32WLE5CC", "RUI_4.0.5_RAK3172-E", "RUI_4.0.6_RAK3172-E"),
    "rak11720": ("RUI_BOOT_0.3_RAK11720", "RUI_4.0.5_RAK11720", "RUI_4.0.6_RAK11720"),
    "rak4631-r": ("RUI_BOOT_0.6_RAK4631", "RUI_4.0.5_RAK4631", "RUI_4.0.6_RAK4631"),
    "rak4631-arduino": ("ADAFRUIT_BOOT_0.6.1_RAK4631", "ARDUINO_SKETCH_1.0", "ARDUINO_SKETCH_1.1"),
    "rak811": ("V3.0.5", "V3.0.0.13.H", "V3.0.0.14.H"),
    "rak4270": ("V3.0.5", "V3.0.0.13.H", "V3.0.0.14.H"),
    # The RUI3 variants (image names from RAK-STM32-RUI / RAK-nRF52-RUI variants/*/version.c;
    # one STM32WLE5 bootloader for all; the RAK3172-F from RUI3 4.2.4, the RAK11160 from 4.2.1).
    "rak3172-sip": ("RUI_BOOT_0.8_STM32WLE5CC", "RUI_4.0.5_RAK3272-SiP", "RUI_4.0.6_RAK3272-SiP"),
    "rak3172lp-sip": ("RUI_BOOT_0.8_STM32WLE5CC", "RUI_4.0.5_RAK3272LP-SiP", "RUI_4.0.6_RAK3272LP-SiP"),
    "rak3172-t": ("RUI_BOOT_0.8_STM32WLE5CC", "RUI_4.0.5_RAK3172-T", "RUI_4.0.6_RAK3172-T"),
    "rak3172-f": ("RUI_BOOT_0.8_STM32WLE5CC", "RUI_4.2.4_RAK3172-F", "RUI_4.2.5_RAK3172-F"),
    "rak11160": ("RUI_BOOT_0.8_STM32WLE5CC", "RUI_4.2.3_RAK11160", "RUI_4.2.4_RAK11160"),
    "rak3401": ("RUI_BOOT_0.6_RAK3401", "RUI_4.0.5_RAK3401", "RUI_4.0.6_RAK3401"),
}


FLOODING_MARK = b"\0sketch: loop() prints without pause\0"
# Firmware whose settings storage changed: at its first start it resets the
# keys and settings an older firmware kept (what the owner must not lose).
SETTINGS_LAYOUT_MARK = b"\0settings: layout 2, older records reset\0"


def app_image(module: Module, version: str, size: int = 64 * 1024, *, seed: int = 0,
              flooding: bool = False, new_settings_layout: bool = False) -> bytes:
    """An application ``.bin`` for ``module`` carrying ``version``, ``size`` bytes long.

    ``flooding`` builds in a sketch whose ``loop()`` prints without pause: the
    simulator runs an image that carries the mark right after its version
    string that way (see :func:`sketch_floods`). ``new_settings_layout``
    builds a firmware that resets the stored settings at its first start.
    """
    if size < 0x200:
        raise ValueError("an application image needs at least 512 bytes")
    app = module.app
    rng = random.Random(f"{module.key}:{version}:{seed}")
    body = bytearray(rng.randbytes(size))
    vector = struct.pack("<II", module.mcu.ram.end, app.start + 0x1C1)   # reset handler, Thumb
    body[0:8] = vector
    # Fill the rest of a 48-entry vector table with plausible handler addresses.
    for i in range(2, 48):
        struct.pack_into("<I", body, 4 * i, app.start + 0x1C1 + 4 * (i % 7))
    tag = (_version_tag(version) + (FLOODING_MARK if flooding else b"")
           + (SETTINGS_LAYOUT_MARK if new_settings_layout else b""))
    at = min(len(body) - len(tag), 0x400 + len(body) // 3)
    body[at:at + len(tag)] = tag
    return bytes(body)


def _version_tag(version: str) -> bytes:
    return b"\0firmware " + version.encode() + b"\0"


def carries(app_region: bytes, version: str | None, mark: bytes) -> bool:
    """Whether the application that reports ``version`` carries ``mark``.

    A mark counts only right after that application's own version string:
    bytes an earlier, longer image left beyond a shorter new one (a bootloader
    erases only the pages it writes) are not the new firmware's.
    """
    if not version:
        return False
    tag = _version_tag(version)
    at = app_region.find(tag)
    if at < 0:
        return False
    after = app_region[at + len(tag):at + len(tag) + len(FLOODING_MARK) + len(SETTINGS_LAYOUT_MARK)]
    return mark in after


def sketch_floods(app_region: bytes, version: str | None) -> bool:
    """Whether the application that reports ``version`` is a flooding sketch."""
    return carries(app_region, version, FLOODING_MARK)


def bootloader_image(module: Module, version: str) -> dict[int, bytes]:
    """Segments of a bootloader for ``module``: code with a vector table, and its version string."""
    boot = module.region("bootloader")
    rng = random.Random(f"{module.key}:boot:{version}")
    code = bytearray(rng.randbytes(min(boot.size, 0x2000)))
    struct.pack_into("<II", code, 0, module.mcu.ram.end, boot.start + 0x101)
    segs = {boot.start: bytes(code)}
    if module.has_region("bootloader-version"):
        segs[module.region("bootloader-version").start] = version.encode() + b"\0"
    else:
        segs[boot.start + len(code) - 64] = version.encode() + b"\0"
    return segs


def to_hex(segments: dict[int, bytes], start: int | None = None) -> str:
    """Intel HEX text for ``segments`` (address → bytes)."""
    ih = intelhex.IntelHex()
    for addr, data in segments.items():
        ih.puts(addr, data)
    if start is not None:
        ih.start_addr = {"EIP": start}
    out = io.StringIO()
    ih.write_hex_file(out)
    return out.getvalue()


def combined_hex(module: Module, boot_version: str, app_version: str, app_size: int = 64 * 1024) -> str:
    """A factory image: bootloader + flag page + version string + application, as the module's map lays them out."""
    segs = bootloader_image(module, boot_version)
    if module.has_region("flag"):
        # A factory image's flag page holds no boot request: where the request byte
        # is known (RAK11720's 0xAA) the page is erased; elsewhere the first word
        # is the simulator's own "application valid" marker.
        first = b"\xff" * 4 if module.boot_flag is not None else b"\x5a\xa5\x5a\xa5"
        segs[module.region("flag").start] = first + b"\xff" * 12
    segs[module.app.start] = app_image(module, app_version, app_size)
    return to_hex(segs)
