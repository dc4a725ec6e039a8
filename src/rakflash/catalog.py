"""The module catalog: MCUs, AT dialects, modules and USB ids, loaded from ``modules.toml``.

Everything module-specific lives in the TOML file so that a new module, or a
correction from a real device's trace, is a data change. This module only
turns the file into typed, read-only objects and answers look-ups.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class Range:
    start: int
    size: int

    @property
    def end(self) -> int:
        """First address after the range."""
        return self.start + self.size

    def __contains__(self, addr: object) -> bool:
        return isinstance(addr, int) and self.start <= addr < self.end


@dataclass(frozen=True)
class Region(Range):
    name: str = ""


@dataclass(frozen=True)
class RomFacts:
    """The chip's STM32 ROM bootloader (AN3155) as its Get and Get ID describe it."""

    pid: int
    version: int
    commands: tuple[int, ...]
    mass_erase: bool
    inferred: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mcu:
    key: str
    name: str
    core: str
    flash: Range
    ram: Range
    page_size: int
    page_erase_ms: float
    program_unit: int
    program_unit_us: float
    rom: RomFacts | None = None      # the STM32 ROM bootloader, where the chip has one

    def erase_seconds(self, size: int) -> float:
        """Datasheet time to erase the pages ``size`` bytes span (from a page start)."""
        return -(-size // self.page_size) * self.page_erase_ms / 1000

    def program_seconds(self, size: int) -> float:
        """Datasheet time to program ``size`` bytes, in whole program units."""
        return -(-size // self.program_unit) * self.program_unit_us / 1e6


@dataclass(frozen=True)
class Dialect:
    key: str
    data: dict[str, Any]

    def __getitem__(self, item: str) -> Any:
        return self.data[item]

    def get(self, item: str, default: Any = None) -> Any:
        return self.data.get(item, default)


@dataclass(frozen=True)
class UsbId:
    vid: int
    pid: int
    name: str
    probably: str
    module: str | None = None
    mode: str | None = None
    kind: str = "module"            # "module", "bridge" (USB-UART adapter) or "probe" (a SWD probe's COM port)
    product: str | None = None     # the USB product string, where it tells modes apart (same VID:PID)


@dataclass(frozen=True)
class Rule:
    """Firmware at or above ``firmware_min`` needs a bootloader at or above ``bootloader_min``."""

    firmware_min: str
    bootloader_min: str
    why: str
    source: str


@dataclass(frozen=True)
class Module:
    key: str
    name: str
    family: str
    mcu: Mcu
    dialect: Dialect
    boot_dialect: Dialect
    protocol: str
    bauds: tuple[int, ...]
    app_version_pattern: str
    bootloader_version_pattern: str
    swd_target: str
    regions: tuple[Region, ...]
    rules: tuple[Rule, ...] = ()
    aliases: tuple[str, ...] = ()
    swd_options: dict[str, Any] = field(default_factory=dict)
    inferred: tuple[str, ...] = ()
    boot_flag: int | None = None     # byte the app writes at the flag region to request the bootloader
    receiver: str | None = None      # the bootloader's kind of receiver, e.g. "st-iap" for YMODEM
    receiver_timeout: float | None = None   # s the receiver waits for each read (a whole packet's rest)
    update_reply: str | None = None  # what the bootloader answers to its update command, if anything
    recovery: tuple[str, ...] = ()   # recovery methods (flows/recover/: METHODS) in order of preference
    rom_access: dict[str, Any] = field(default_factory=dict)  # pins reaching the ROM bootloader
    extra: dict[str, Any] = field(default_factory=dict)   # protocol-specific facts (gpregret, hw_version, …)
    variant_of: str | None = None    # the module whose facts this variant shares (modules.toml)
    hardware_models: tuple[str, ...] = ()   # what AT+HWMODEL=? answers on it
    image_names: tuple[str, ...] = ()       # the <name> its own images' "RUI_<version>_<name>" carries
    takes_images_of: tuple[str, ...] = ()   # other modules whose images RUI3 itself builds for it
    sources: tuple[str, ...] = ()
    companion: dict[str, Any] = field(default_factory=dict)   # a second chip beside the MCU (RAK11160)
    config_layout: str | None = None   # RUI3: whose config block layout (protocols/rui3_config.py PLATFORMS)

    def swd_command(self, image: str = "FULL.hex") -> str:
        """The pyOCD command that writes a full image over SWD (CMSIS-DAP such as RAKDAP1, or J-Link)
        as ``rakflash recover --via swd`` does (swd_link.py ``SwdPlan.pyocd_command``): only the
        sectors the image covers are erased, and what the image leaves out of them is kept
        (pyOCD's own default, ``keep_unwritten`` false, leaves those bytes erased)."""
        options = "".join(f" -O {k}={v}" for k, v in self.swd_options.items())
        return f"pyocd flash -t {self.swd_target} -e sector -O keep_unwritten=true{options} {image}"

    def rom_uart_command(self, image: str = "FULL.hex", port: str = "PORT") -> str | None:
        """The stm32flash command for the STM32 ROM bootloader (AN3155) over the same UART, if the MCU has one."""
        if not self.mcu.key.startswith("stm32"):
            return None
        return f"stm32flash -w {image} -v -g {self.mcu.flash.start:#010x} {port}"

    def recover_command(self, image: str = "FULL.hex", port: str = "PORT") -> str | None:
        """The ``rakflash recover`` command that writes a full image without a probe (a boot pin
        held at reset: the STM32 ROM bootloader, the Apollo3 secure bootloader), if rakflash has a way."""
        if not {"stm32-rom", "apollo3-sbl"} & set(self.recovery):
            return None
        return f"rakflash recover {image} --port {port} --module {self.key}"

    @property
    def esp(self) -> dict[str, Any] | None:
        """An ESP32 module's facts for esptool (``[module.X.esp]``: chip, image chip id, offsets,
        how it enters download mode); None for the others."""
        return self.extra.get("esp")

    def esp_fact(self, key: str) -> Any:
        """One of an ESP32 module's facts (:attr:`esp`); KeyError for a module that has none."""
        facts = self.esp
        if facts is None:
            raise KeyError(f"{self.key} is not an ESP32 module: it has no {key!r}")
        return facts[key]

    def esptool_command(self, image: str = "FULL.bin", port: str = "PORT", address: int = 0) -> str | None:
        """The esptool command that writes an image through the chip's ROM download mode."""
        if self.esp is None:
            return None
        return f"esptool --chip {self.esp_fact('chip')} --port {port} write-flash {address:#x} {image}"

    def recovery_advice(self, image: str = "FULL.hex", port: str = "PORT") -> str:
        """One sentence naming the exact commands that restore a full image (bootloader included)."""
        if self.esp is not None:
            image = "FULL.bin" if image == "FULL.hex" else image
            pin = self.rom_access.get("boot0", "GPIO0")
            return (f"through the chip's ROM download mode, which no firmware can break: 'rakflash "
                    f"flash {image} --port {port} --module {self.key}' (esptool: "
                    f"'{self.esptool_command(image, port)}'); where the USB lines can't reset it into "
                    f"that mode, hold {pin} low while you reset it")
        advice = []
        rec = self.recover_command(image, port)
        if rec:
            pin = "BOOT0" if "stm32-rom" in self.recovery else "BOOT"
            advice.append(f"with no probe ({pin} held high at reset; it tells you which pins): '{rec}'")
        swd = (f"'rakflash recover {image} --via swd --module {self.key}' (pyOCD: "
               f"'{self.swd_command(image)}')" if "swd" in self.recovery
               else f"'{self.swd_command(image)}'")
        advice.append(f"with an SWD probe: {swd}")
        return ", or ".join(advice)

    @property
    def unconfirmed_note(self) -> str | None:
        """What a plan says of a RUI3 variant's facts not confirmed from public sources (None: none)."""
        if self.variant_of is None or not self.inferred:
            return None
        return (f"not confirmed from public sources for the {self.name} ('rakflash modules' lists "
                f"them): {'; '.join(self.inferred)}")

    def image_name(self, version: str | None) -> str | None:
        """The board a RUI3 version string names: ``RUI_4.2.4_RAK3172-F`` → ``RAK3172-F``."""
        m = re.fullmatch(r"RUI_\d+(?:\.\d+)*_([A-Za-z0-9-]+)", (version or "").strip())
        return m.group(1) if m else None

    def same_flash_as(self, other: Module) -> bool:
        """The same chip and the same flash map: an image placed for one lands the same on the other."""
        return self.mcu.key == other.mcu.key and self.regions == other.regions

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(f"{self.name} has no region {name!r}")

    def has_region(self, name: str) -> bool:
        return any(r.name == name for r in self.regions)

    @property
    def app(self) -> Region:
        return self.region("application")

    def region_at(self, addr: int) -> Region | None:
        for r in self.regions:
            if addr in r:
                return r
        return None

    def find_app_version(self, data: bytes) -> str | None:
        """The first application version string in ``data`` (see ``app_version_pattern``)."""
        m = re.search(self.app_version_pattern.encode(), data)
        return m.group(0).decode() if m else None

    def find_bootloader_version(self, data: bytes) -> str | None:
        m = re.search(self.bootloader_version_pattern.encode(), data)
        return m.group(0).decode() if m else None


class Catalog:
    """All known modules, MCUs, dialects and USB ids."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.mcus = {k: _mcu(k, v) for k, v in raw["mcu"].items()}
        self.dialects = {k: Dialect(k, v) for k, v in raw["dialect"].items()}
        self.modules: dict[str, Module] = {}
        self.usb_ids: list[UsbId] = []
        for key, m in raw["module"].items():
            m = _with_base(raw["module"], m)
            module = Module(
                key=key, name=m["name"], family=m["family"], mcu=self.mcus[m["mcu"]],
                dialect=self.dialects[m["dialect"]], boot_dialect=self.dialects[m["boot_dialect"]],
                protocol=m["protocol"], bauds=tuple(m["bauds"]),
                app_version_pattern=m["app_version_pattern"],
                bootloader_version_pattern=m["bootloader_version_pattern"],
                swd_target=m["swd_target"],
                regions=tuple(Region(r["start"], r["size"], r["name"]) for r in m["region"]),
                rules=tuple(Rule(r["firmware_min"], r["bootloader_min"], r["why"], r["source"])
                            for r in m.get("rule", [])),
                aliases=tuple(m.get("aliases", [])), swd_options=dict(m.get("swd_options", {})),
                inferred=tuple(m.get("inferred", [])), boot_flag=m.get("boot_flag"),
                receiver=m.get("receiver"), receiver_timeout=m.get("receiver_timeout"),
                update_reply=m.get("update_reply"),
                recovery=tuple(m.get("recovery", [])), rom_access=dict(m.get("rom_access", {})),
                extra={k: m[k] for k in ("gpregret", "hw_version", "sd_req", "device_type", "esp") if k in m},
                variant_of=m.get("variant_of"), hardware_models=tuple(m.get("hardware_models", [])),
                image_names=tuple(m.get("image_names", [])),
                takes_images_of=tuple(m.get("takes_images_of", [])),
                sources=tuple(m.get("sources", [])), companion=dict(m.get("companion", {})),
                config_layout=m.get("config_layout"),
            )
            self.modules[key] = module
            for u in m.get("usb_id", []):
                self.usb_ids.append(UsbId(u["vid"], u["pid"], f"{module.name} ({u['note']})",
                                          f"{module.name}, {u['mode']} mode", key, u["mode"],
                                          product=u.get("product")))
        for b in raw.get("usb_bridge", []):
            self.usb_ids.append(UsbId(b["vid"], b["pid"], b["name"], b["probably"],
                                      kind=b.get("kind", "bridge")))
        self.rom_pids = {int(k, 0): v for k, v in raw.get("rom_pid", {}).items()}

    def chip_name(self, pid: int) -> str:
        """What an STM32 product ID (from the ROM's Get ID) is, as far as the catalog knows."""
        return self.rom_pids.get(pid, f"an STM32 with product ID 0x{pid:03X}")

    def module(self, name: str) -> Module:
        """Look a module up by key, name or alias (case-insensitive)."""
        want = name.strip().lower()
        for m in self.modules.values():
            if want in (m.key, m.name.lower(), *m.aliases):
                return m
        raise KeyError(name)

    def usb(self, vid: int | None, pid: int | None, product: str | None = None) -> UsbId | None:
        """What a USB id is; where one VID:PID serves two modes, the product string decides."""
        found = [u for u in self.usb_ids if u.vid == vid and u.pid == pid]
        if product is not None:
            same = [u for u in found if u.product and u.product.lower() == product.strip().lower()]
            if len({u.module for u in same}) > 1:
                # One id and product string for several boards (the RAK4631-R's and the RAK3401's
                # bootloaders): the first stands for them, and what it probably is names them all.
                names = " or ".join(self.modules[u.module].name for u in same if u.module in self.modules)
                return dataclasses.replace(same[0], probably=f"{names}, {same[0].mode} mode")
            if same:
                return same[0]
        generic = [u for u in found if u.product is None]
        return next(iter(generic or found), None)

    def by_hardware_model(self, model: str | None) -> Module | None:
        """The module whose RUI3 firmware answers AT+HWMODEL=? with ``model`` (exactly, any case)."""
        want = (model or "").strip().lower()
        return next((m for m in self.modules.values()
                     if want and want in (h.lower() for h in m.hardware_models)), None)

    def by_image_name(self, version: str | None) -> Module | None:
        """The module whose own RUI3 images carry ``version``'s board name (``RUI_x.y.z_<name>``)."""
        for m in self.modules.values():
            name = m.image_name(version)
            if name is not None:
                return next((n for n in self.modules.values()
                             if name.lower() in (i.lower() for i in n.image_names)), None)
        return None

    def variants(self, module: Module) -> list[Module]:
        """``module`` and every module that shares its base's facts (the RAK3172 and its variants)."""
        base = module.variant_of or module.key
        return [m for m in self.modules.values() if (m.variant_of or m.key) == base]

    def modules_with_mcu(self, mcu: Mcu) -> list[Module]:
        return [m for m in self.modules.values() if m.mcu.key == mcu.key]


# What a variant never takes from its base: its own names, identity, USB ids and sources.
_OWN = {"variant_of", "name", "aliases", "usb_id", "hardware_models", "image_names",
        "takes_images_of", "sources", "companion", "inferred"}


def _with_base(modules: dict[str, Any], m: dict[str, Any]) -> dict[str, Any]:
    """A module's raw facts, with those it does not give taken from the module it is a variant of;
    what is not confirmed of the base is not confirmed of the variant either."""
    base_key = m.get("variant_of")
    if base_key is None:
        return m
    base = modules[base_key]
    merged = {k: v for k, v in base.items() if k not in _OWN}
    merged.update(m)
    merged["inferred"] = [*m.get("inferred", []), *base.get("inferred", [])]
    return merged


def _mcu(key: str, v: dict[str, Any]) -> Mcu:
    return Mcu(key=key, name=v["name"], core=v["core"],
               flash=Range(v["flash"]["start"], v["flash"]["size"]),
               ram=Range(v["ram"]["start"], v["ram"]["size"]),
               page_size=v["page_size"], page_erase_ms=v["page_erase_ms"],
               program_unit=v["program_unit"], program_unit_us=v["program_unit_us"],
               rom=_rom(v.get("rom")))


def _rom(v: dict[str, Any] | None) -> RomFacts | None:
    if not v:
        return None
    return RomFacts(pid=v["pid"], version=v["version"], commands=tuple(v["commands"]),
                    mass_erase=v["mass_erase"], inferred=tuple(v.get("inferred", [])))


@lru_cache(maxsize=1)
def load() -> Catalog:
    """The catalog shipped with rakflash."""
    text = resources.files("rakflash").joinpath("modules.toml").read_text(encoding="utf-8")
    return Catalog(tomllib.loads(text))


def version_tuple(text: str) -> tuple[int, ...]:
    """The first dotted number in a version string: ``V3.0.0.14.H`` → ``(3, 0, 0, 14)``,
    ``RUI_BOOT_0.8_STM32WLE5CC`` → ``(0, 8)``."""
    m = re.search(r"\d+(?:\.\d+)*", text)
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()
