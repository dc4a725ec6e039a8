"""Apollo3 INFO0: the customer info block the secure bootloader (SBL) configures itself from.

INFO0 is 8 KiB of flash outside the main array (at 0x50020000 on the bus). The
SBL reads it at every reset: whether it is valid at all (a 128-bit signature),
which GPIO forces a wired update (the *override* pin and its level), which
interface and UART settings that update uses and how long it waits, where the
main firmware starts, and the security policy. A module whose INFO0 says
something else than the person expects is the usual reason the wired update
"never answers" — so rakflash decodes it and says what each value means for the
SBL and for RAK's RUI bootloader.

Facts (word offsets, bit fields, signature values, the INFO0 programming key):
RAKWireless/RAK-APOLLO3-RUI ``security/apollo3_scripts/create_info0.py``,
``apollo3_info0.py``, ``am_defines.py`` and Ambiq's ``am_mcu_apollo3_info0.h``
in the bundled SDK; see docs/protocols.md for the details and the open questions.

This module is pure data: decode a dump into fields, build one, compare two.
Reading and writing INFO0 on a chip is the SWD link's job (:mod:`rakflash.swd_link`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from .errors import ImageFormatError, ImageNotAFile, ImageNotFound

SIZE = 8 * 1024
BASE = 0x50020000                 # where INFO0 sits on the Apollo3's bus
PROGRAM_KEY = 0xD894E09E          # the key the ROM's INFO0 helpers want (keys_info.py INFO_KEY)

SIGNATURE_VALID = (0x48EAAD88, 0xC9705737, 0x0A6B8458, 0xE41A9D74)
SIGNATURE_UNINITIALISED = (0x5B75A5FA, 0x7B9C8674, 0x869A96FE, 0xAEC90860)

# Word offsets (am_mcu_apollo3_info0.h; create_info0.py writes the main pointer at 0xC00).
SECURITY = 0x10
CUSTOMER_TRIM = 0x14
CUSTOMER_TRIM2 = 0x18
OVERRIDE = 0x20
WIRED_CFG = 0x24
UART_CFG0 = 0x28
UART_CFG1 = 0x2C
UART_CFG2 = 0x30                  # .. 0x3C: raw pad configuration of the UART pins
VERSION = 0x40
SRAM_RESERVED = 0x50
WRITE_PROTECT = 0x1F8             # L, H: 1 bit per 16 KiB, 0 = protected
COPY_PROTECT = 0x200
MAIN_PTR = 0xC00
MAIN_PTR2 = 0xC04
KEY_REVOKED = 0xC08
AUTH_REVOKED = 0xC0C
OTA_DESCRIPTOR = 0xC10
CUSTOMER_ID = 0x1A20

OVERRIDE_DISABLED = 0x7F
WIRED_UART, WIRED_SPI, WIRED_I2C = 1, 2, 4
PROTECT_CHUNK = 16 * 1024

# The RAK11720's pins, as far as they are public: the module's BOOT pin is Apollo3
# GPIO41 (shared with SWO), its AT UART is UART0 on pads 39 (TX) / 40 (RX)
# (RAK-APOLLO3-RUI variants/WisCore_RAK11720_Board/variant.h). RUI's own
# bootloader starts at 0xC000 (the SBL's default non-secure main, am_defines.py).
RAK11720_BOOT_GPIO = 41
RAK11720_UART_PADS = (40, 39)
RUI_BOOTLOADER_START = 0xC000


def _bits(word: int, shift: int, width: int) -> int:
    return (word >> shift) & ((1 << width) - 1)


def _switch(value: int) -> str:
    """SECURITY's 3-bit switches: create_info0.py writes 0x2 for on and 0x5 for off."""
    return {0x2: "on", 0x5: "off"}.get(value, f"unknown value {value}")


@dataclass(frozen=True)
class Finding:
    """One thing INFO0 means for a person: ``level`` is ``blocks`` (stops something
    from working), ``warning`` or ``note``; ``stops`` names what it stops
    (``wired-update``, ``rui-bootloader``, ``swd``, ``info0-write``) when it does."""

    level: str
    message: str
    stops: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "message": self.message, "stops": self.stops}


def read_dump(path: str) -> bytes:
    """The bytes of an INFO0 dump file (at most 8 KiB), read as firmware files are read
    (:func:`rakflash.firmware_file.read_file`): a FIFO or a device such as ``/dev/zero`` is refused
    before it is read (``image-not-a-file``), never waited on or read without end."""
    from .firmware_file import read_file
    try:
        return read_file(path, SIZE)
    except ImageNotFound as exc:
        exc.hint = "Check the path of the INFO0 dump."
        raise
    except ImageNotAFile as exc:
        exc.hint = ("Give the INFO0 dump file itself: rakflash reads only regular files (not a FIFO, "
                    "a device such as /dev/zero, or a socket).")
        raise
    except ImageFormatError:               # read_file's words are about firmware; these are INFO0's
        raise ImageFormatError(f"{path} is larger than an Apollo3 INFO0 dump ({SIZE:,} bytes)",
                               hint="Give the 8 KiB dump of INFO0 itself.") from None


@dataclass(frozen=True)
class Info0:
    """A decoded INFO0 block. ``raw`` is the whole 8 KiB; the properties read its fields."""

    raw: bytes

    # -------------------------------------------------------------- construction
    @classmethod
    def parse(cls, data: bytes, *, source: str = "INFO0") -> Info0:
        """Decode a dump. Shorter than 8 KiB (but a whole number of words, at least
        the configuration words up to 0xC14) is padded with erased flash."""
        if len(data) > SIZE:
            raise ImageFormatError(f"{source} is {len(data):,} bytes; an Apollo3 INFO0 dump is "
                                   f"{SIZE:,} bytes", hint="Give the 8 KiB dump of INFO0 itself.")
        if len(data) < OTA_DESCRIPTOR + 4 or len(data) % 4:
            raise ImageFormatError(f"{source} is {len(data):,} bytes: too short for an INFO0 dump "
                                   f"(it needs the words up to {OTA_DESCRIPTOR + 4:#x})",
                                   hint="Give the 8 KiB dump of INFO0 (e.g. from 'rakflash info0 "
                                        "show --probe ID --save FILE').")
        return cls(bytes(data) + b"\xff" * (SIZE - len(data)))

    @classmethod
    def load(cls, path: str) -> Info0:
        return cls.parse(read_dump(path), source=path)

    @classmethod
    def build(cls, *, valid: bool = True, override_gpio: int = OVERRIDE_DISABLED,
              override_high: bool = False, wired_interfaces: int = WIRED_UART,
              wired_timeout_ms: int = 20000, uart_baud: int | None = 115200,
              uart_pads: tuple[int, int] = RAK11720_UART_PADS,
              main_ptr: int = RUI_BOOTLOADER_START, secure_boot: bool = False,
              security_policy: int = 0, debugger_allowed: bool = True,
              info0_program_quadrants: int = 0xF, info0_erase: bool = True,
              write_protect: int = 0xFFFFFFFFFFFFFFFF, version: int = 0) -> Info0:
        """An INFO0 block laid out as ``create_info0.py`` lays one out (its defaults
        unless told otherwise): erased flash, the signature, then the fields."""
        buf = bytearray(b"\xff" * SIZE)
        sig = SIGNATURE_VALID if valid else SIGNATURE_UNINITIALISED
        struct.pack_into("<4I", buf, 0, *sig)
        if valid:
            security = (((security_policy & 0x7) << 24) | (0x2 << 16)
                        | ((0x2 if secure_boot else 0x5) << 12) | (1 << 10) | (1 << 9)
                        | (int(info0_erase) << 8) | ((info0_program_quadrants & 0xF) << 4)
                        | (1 << 3) | (1 << 2) | (1 << 1) | int(debugger_allowed))
            words = {
                SECURITY: security,
                OVERRIDE: (int(override_high) << 7) | (override_gpio & 0x7F),
                WIRED_CFG: (wired_interfaces & 0x7) | (4 << 3) | (0x20 << 9)
                           | ((wired_timeout_ms & 0xFFFF) << 16),
                VERSION: version, SRAM_RESERVED: 0, MAIN_PTR: main_ptr,
                WRITE_PROTECT: write_protect & 0xFFFFFFFF, WRITE_PROTECT + 4: write_protect >> 32,
            }
            if uart_baud is not None:
                # 8 data bits, UART instance 0 (bit 0; SparkFun's Artemis INFO0 uses 0x1C200C0)
                words[UART_CFG0] = ((uart_baud & 0xFFFFF) << 8) | (3 << 6)
                words[UART_CFG1] = 0xFFFF0000 | (uart_pads[1] << 8) | uart_pads[0]
                for off in range(UART_CFG2, UART_CFG2 + 16, 4):
                    words[off] = 0
            for off, w in words.items():
                struct.pack_into("<I", buf, off, w)
        return cls(bytes(buf))

    def replace(self, **changes: Any) -> Info0:
        """A copy with some fields rebuilt (same names as :meth:`build`), the rest kept."""
        fresh = Info0.build(**{**self.build_args(), **changes})
        buf = bytearray(self.raw)
        for off in (0, 4, 8, 12, SECURITY, OVERRIDE, WIRED_CFG, UART_CFG0, UART_CFG1, MAIN_PTR,
                    WRITE_PROTECT, WRITE_PROTECT + 4, VERSION):
            buf[off:off + 4] = fresh.raw[off:off + 4]
        return Info0(bytes(buf))

    def build_args(self) -> dict[str, Any]:
        return {"valid": self.signature == "valid", "override_gpio": self.override_gpio,
                "override_high": self.override_high, "wired_interfaces": self.wired_interfaces,
                "wired_timeout_ms": self.wired_timeout_ms, "uart_baud": self.uart_baud,
                "uart_pads": self.uart_pads[:2], "main_ptr": self.main_ptr,
                "secure_boot": self.secure_boot == "on", "security_policy": self.security_policy,
                "debugger_allowed": self.debugger_allowed,
                "info0_program_quadrants": self.info0_program_quadrants,
                "info0_erase": self.info0_erase_allowed, "write_protect": self.write_protect,
                "version": self.version}

    # -------------------------------------------------------------- fields
    def word(self, offset: int) -> int:
        return struct.unpack_from("<I", self.raw, offset)[0]

    @property
    def signature(self) -> str:
        """``valid``, ``uninitialised`` or ``invalid``: only a valid INFO0 is used by the SBL."""
        words = tuple(self.word(o) for o in (0, 4, 8, 12))
        if words == SIGNATURE_VALID:
            return "valid"
        if words == SIGNATURE_UNINITIALISED:
            return "uninitialised"
        return "invalid"

    @property
    def security(self) -> int:
        return self.word(SECURITY)

    @property
    def security_policy(self) -> int:
        """Bit 0 authentication, bit 1 encryption, bit 2 version rollback protection."""
        return _bits(self.security, 24, 3)

    @property
    def secure_boot(self) -> str:
        return _switch(_bits(self.security, 12, 3))

    @property
    def secure_boot_on_soft_reset(self) -> str:
        return _switch(_bits(self.security, 16, 3))

    @property
    def debugger_allowed(self) -> bool:
        """SECURITY bit 0 (DEBUG_PROT): 1 leaves the debugger (SWD) unlocked."""
        return bool(self.security & 1)

    @property
    def info0_program_quadrants(self) -> int:
        """SECURITY bits 4-7: INFO0 may be programmed, one bit per 2 KiB quadrant."""
        return _bits(self.security, 4, 4)

    @property
    def info0_erase_allowed(self) -> bool:
        return bool(self.security & (1 << 8))

    @property
    def override_gpio(self) -> int:
        return _bits(self.word(OVERRIDE), 0, 7)

    @property
    def override_high(self) -> bool:
        """Polarity: True when the pin forces the wired update at a high level."""
        return bool(self.word(OVERRIDE) & 0x80)

    @property
    def override_enabled(self) -> bool:
        return self.override_gpio != OVERRIDE_DISABLED

    @property
    def wired_interfaces(self) -> int:
        return _bits(self.word(WIRED_CFG), 0, 3)

    @property
    def wired_timeout_ms(self) -> int:
        return _bits(self.word(WIRED_CFG), 16, 16)

    @property
    def uart_instance(self) -> int:
        """UART_CFG0 bit 0: which of the Apollo3's UARTs (0 or 1) the wired update uses."""
        return self.word(UART_CFG0) & 1

    @property
    def uart_baud(self) -> int | None:
        """The wired update's baud rate (UART_CFG0 bits 8-27), None when not configured."""
        w = self.word(UART_CFG0)
        baud = _bits(w, 8, 20)
        return baud if w != 0xFFFFFFFF and baud not in (0, 0xFFFFF) else None

    @property
    def uart_framing(self) -> str:
        w = self.word(UART_CFG0)
        bits = 5 + _bits(w, 6, 2)
        parity = "N" if not w & 0x8 else ("E" if w & 0x10 else "O")
        stop = 2 if w & 0x20 else 1
        flow = " RTS/CTS" if w & 0x6 else ""
        return f"{bits}{parity}{stop}{flow}"

    @property
    def uart_pads(self) -> tuple[int, int, int, int]:
        return tuple(self.raw[UART_CFG1:UART_CFG1 + 4])   # type: ignore[return-value]

    @property
    def main_ptr(self) -> int:
        return self.word(MAIN_PTR)

    @property
    def ota_descriptor(self) -> int:
        return self.word(OTA_DESCRIPTOR)

    @property
    def version(self) -> int:
        return self.word(VERSION)

    @property
    def write_protect(self) -> int:
        """64 bits, one per 16 KiB of flash; a 0 bit protects that chunk for good."""
        return self.word(WRITE_PROTECT) | (self.word(WRITE_PROTECT + 4) << 32)

    def protected_ranges(self) -> list[tuple[int, int]]:
        """Flash ranges [start, end) that INFO0 write-protects."""
        out: list[tuple[int, int]] = []
        wp = self.write_protect
        for i in range(64):
            if not wp >> i & 1:
                lo, hi = i * PROTECT_CHUNK, (i + 1) * PROTECT_CHUNK
                if out and out[-1][1] == lo:
                    out[-1] = (out[-1][0], hi)
                else:
                    out.append((lo, hi))
        return out

    # -------------------------------------------------------------- what it means
    def wired_update_reachable(self, boot_gpio: int = RAK11720_BOOT_GPIO, *,
                               pin_high: bool = True) -> bool:
        """Whether holding ``boot_gpio`` at ``pin_high`` at reset starts the SBL's wired update."""
        return (self.signature == "valid" and self.override_gpio == boot_gpio
                and self.override_high == pin_high)

    def findings(self, *, boot_gpio: int = RAK11720_BOOT_GPIO, boot_level_high: bool = True,
                 catalog_baud: int = 115200) -> list[Finding]:
        """What these values mean for the wired update, the RUI bootloader and SWD, worst first."""
        f: list[Finding] = []
        level = "high" if boot_level_high else "low"
        if self.signature != "valid":
            f.append(Finding("blocks", f"the INFO0 signature is {self.signature}: the secure "
                             "bootloader ignores every other INFO0 field, so no pin forces a wired "
                             "update", "wired-update"))
            return f + self._swd_findings()
        if not self.override_enabled:
            f.append(Finding("blocks", "the override pin is disabled (0x7F): holding BOOT at reset "
                             "does nothing, the secure bootloader never takes a wired update",
                             "wired-update"))
        elif self.override_gpio != boot_gpio:
            f.append(Finding("blocks", f"the override pin is GPIO{self.override_gpio}, not the BOOT "
                             f"pin (GPIO{boot_gpio}): holding BOOT at reset does nothing",
                             "wired-update"))
        elif self.override_high != boot_level_high:
            f.append(Finding("blocks", f"the override pin acts when {'high' if self.override_high else 'low'}"
                             f", not {level}: BOOT must be held "
                             f"{'high (to VDD)' if self.override_high else 'low (to GND)'} at reset "
                             "instead", "wired-update"))
        if not self.wired_interfaces & WIRED_UART:
            f.append(Finding("blocks", "the wired update's UART interface is off (interface mask "
                             f"{self.wired_interfaces:#x})", "wired-update"))
        elif self.uart_baud is None:
            f.append(Finding("blocks", "the wired update's UART is not configured (UART config word "
                             f"{self.word(UART_CFG0):#010x})", "wired-update"))
        elif self.uart_baud != catalog_baud:
            f.append(Finding("warning", f"the wired update listens at {self.uart_baud} baud, not "
                             f"{catalog_baud}: run recover with --baud {self.uart_baud}"))
        if self.wired_interfaces & WIRED_UART and self.wired_timeout_ms < 1000:
            f.append(Finding("warning", f"the wired update waits only {self.wired_timeout_ms} ms "
                             "after reset: hard to catch (SparkFun found 250 ms unreliable at 115200)"))
        if self.security_policy & 0x3:
            wants = " and ".join(w for bit, w in ((1, "authenticated"), (2, "encrypted"))
                                 if self.security_policy & bit)
            f.append(Finding("blocks", f"the security policy asks for {wants} images (policy "
                             f"{self.security_policy:#x}: {_policy(self.security_policy)}): rakflash's "
                             "unsigned wired blobs are refused", "wired-update"))
        elif self.secure_boot == "on":
            # Said as the field list says it: the policy is none, secure boot is what is on.
            f.append(Finding("blocks", "secure boot is on (security policy none): the secure bootloader "
                             "checks images' signatures, so rakflash's unsigned wired blobs are refused",
                             "wired-update"))
        if self.main_ptr != RUI_BOOTLOADER_START:
            f.append(Finding("blocks", f"the secure bootloader starts the firmware at "
                             f"{self.main_ptr:#x}, not at RUI's bootloader ({RUI_BOOTLOADER_START:#x}): "
                             "neither the RUI bootloader nor the application will start",
                             "rui-bootloader"))
        for lo, hi in self.protected_ranges():
            if hi > RUI_BOOTLOADER_START:
                f.append(Finding("blocks", f"flash {max(lo, RUI_BOOTLOADER_START):#07x}-{hi:#07x} is "
                                 "write-protected for good: neither the RUI bootloader nor the wired "
                                 "update can rewrite it", "rui-bootloader"))
        if self.ota_descriptor not in (0xFFFFFFFF, 0):
            f.append(Finding("note", f"an OTA descriptor is registered at {self.ota_descriptor:#x}"))
        return f + self._swd_findings()

    def _swd_findings(self) -> list[Finding]:
        f = []
        if self.signature == "valid" and not self.debugger_allowed:
            f.append(Finding("blocks", "the debugger is locked (SECURITY bit 0): an SWD probe "
                             "can't reach the chip", "swd"))
        if self.signature == "valid" and self.info0_program_quadrants == 0:
            f.append(Finding("warning", "INFO0 may not be programmed again (program bits 0)",
                             "info0-write"))
        return f

    # -------------------------------------------------------------- presentation
    def fields(self) -> list[tuple[str, str, Any]]:
        """(key, label, shown value) for every field rakflash decodes, in INFO0 order."""
        valid = self.signature == "valid"
        rows: list[tuple[str, str, Any]] = [("signature", "signature", self.signature)]
        if not valid:
            return rows
        pads = self.uart_pads
        rows += [
            ("security", "security word", f"{self.security:#010x}"),
            ("secure_boot", "secure boot", self.secure_boot),
            ("security_policy", "security policy", _policy(self.security_policy)),
            ("debugger", "debugger (SWD)", "allowed" if self.debugger_allowed else "locked"),
            ("info0_programmable", "INFO0 programmable",
             f"quadrants {self.info0_program_quadrants:#x}, erase "
             f"{'allowed' if self.info0_erase_allowed else 'not allowed'}"),
            ("override", "override pin",
             "disabled" if not self.override_enabled else
             f"GPIO{self.override_gpio}, acts when {'high' if self.override_high else 'low'}"),
            ("wired_interfaces", "wired interfaces", _interfaces(self.wired_interfaces)),
            ("wired_timeout_ms", "wired timeout", f"{self.wired_timeout_ms} ms"),
            ("uart", "wired UART",
             f"UART{self.uart_instance}, {self.uart_baud} baud {self.uart_framing}, "
             f"pads {pads[0]}, {pads[1]}"
             if self.uart_baud else "not configured"),
            ("main_ptr", "main pointer", f"{self.main_ptr:#x}"),
            ("ota_descriptor", "OTA descriptor",
             "none" if self.ota_descriptor in (0xFFFFFFFF, 0) else f"{self.ota_descriptor:#x}"),
            ("write_protect", "write-protected",
             ", ".join(f"{lo:#07x}-{hi:#07x}" for lo, hi in self.protected_ranges()) or "nothing"),
            ("version", "version", f"{self.version:#x}"),
        ]
        return rows

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"signature": self.signature}
        if self.signature == "valid":
            d.update({
                "security": self.security, "secure_boot": self.secure_boot,
                "security_policy": self.security_policy, "debugger_allowed": self.debugger_allowed,
                "override_gpio": None if not self.override_enabled else self.override_gpio,
                "override_level": None if not self.override_enabled else
                ("high" if self.override_high else "low"),
                "wired_interfaces": self.wired_interfaces, "wired_timeout_ms": self.wired_timeout_ms,
                "uart_baud": self.uart_baud, "uart_framing": self.uart_framing,
                "uart_pads": list(self.uart_pads[:2]), "main_ptr": self.main_ptr,
                "ota_descriptor": self.ota_descriptor,
                "write_protected": [[lo, hi] for lo, hi in self.protected_ranges()],
                "version": self.version,
            })
        return d


def _policy(p: int) -> str:
    names = [n for bit, n in ((1, "authentication"), (2, "encryption"), (4, "rollback protection"))
             if p & bit]
    return ", ".join(names) if names else "none"


def _interfaces(mask: int) -> str:
    names = [n for bit, n in ((WIRED_UART, "UART"), (WIRED_SPI, "SPI"), (WIRED_I2C, "I2C")) if mask & bit]
    return ", ".join(names) if names else "none"


@dataclass(frozen=True)
class FieldChange:
    key: str
    label: str
    before: Any
    after: Any


def diff(old: Info0, new: Info0) -> list[FieldChange]:
    """The decoded fields that differ, plus a line for other changed bytes (keys, trims)."""
    before = {k: (label, v) for k, label, v in old.fields()}
    after = {k: (label, v) for k, label, v in new.fields()}
    changes = []
    for key in list(dict.fromkeys([*before, *after])):
        b, a = before.get(key, (None, None)), after.get(key, (None, None))
        if b[1] != a[1]:
            changes.append(FieldChange(key, a[0] or b[0] or key, b[1], a[1]))   # (one has the key)
    decoded = {0, 4, 8, 12, SECURITY, OVERRIDE, WIRED_CFG, UART_CFG0, UART_CFG1, MAIN_PTR,
               OTA_DESCRIPTOR, WRITE_PROTECT, WRITE_PROTECT + 4, VERSION}
    other = [off for off in range(0, SIZE, 4)
             if off not in decoded and old.raw[off:off + 4] != new.raw[off:off + 4]]
    if other:
        changes.append(FieldChange("other", "other words", f"{len(other)} differ",
                                   "first at " + ", ".join(f"{o:#06x}" for o in other[:4])))
    return changes


def rak11720_default() -> Info0:
    """The INFO0 the simulated RAK11720 starts with: ``create_info0.py``'s defaults with
    the override pin on BOOT (GPIO41, high), the wired update on UART0 at 115200 baud
    and the main pointer at RUI's bootloader. RAK's factory INFO0 is not public: these
    values are the simulator's assumption (docs/protocols.md)."""
    return Info0.build(override_gpio=RAK11720_BOOT_GPIO, override_high=True)


