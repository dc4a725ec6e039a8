"""RUI3's application on a virtual module (RAK3172, RAK11720, RAK4631): its AT console, the config
block where it keeps the owner's settings (issue 19: the layout of :mod:`rakflash.protocols.rui3_config`
at the catalog's ``config`` region), and the AT port's lock. The facts are RUI3's sources and AT
manual (docs/protocols.md "RUI3's config block"); the base module is :mod:`rakflash.sim.device`.
"""

from __future__ import annotations

from . import firmware
from .device import DEFAULT_SETTINGS, VirtualModule


class Rui3Module(VirtualModule):
    """An application speaking the RUI3 AT set (DESIGN.md §2, RUI3 sources).

    Its settings live where RUI3 keeps them: a config block in the layout of
    :mod:`rakflash.protocols.rui3_config` at the catalog's ``config`` region, rewritten
    (page erased, block programmed) by every setting that changes; with none there it
    starts from the ``factory-defaults`` block (programmed with the module's DevEUI and
    serial number, as a factory would), and with neither from RUI3's compiled-in
    defaults (``service_nvm_set_default_config_to_nvm``), whose DevEUI is all zeros. So a
    ROM or SWD read sees the real bytes, an erase of the config page loses what the owner
    set, and a serial update, which erases only the application region, leaves them.

    The AT port's lock (``AT+LOCK``, ``AT+PWORD``; ``SimOptions(locked=PASSWORD)``) is
    the block's too, served as RUI3's ``udrv_serial_wlock_handler`` does: while locked,
    each character is echoed (at most 9 kept), and at the line's end ``AT+LOCK=?`` is
    answered ``AT+LOCK=locked`` and ``OK``, the password alone opens every locked port
    (stored "open"), and anything else is ``COMMAND_LOCKED``.
    """

    HWID = {"stm32wle5cc": "stm32wle5xx", "apollo3": "ambiq-apollo3", "nrf52840": "nrf52840"}

    # AT settings the simulated firmware takes, and the values it accepts (RUI3 AT manual /
    # atcmd.c help texts; DR and TXP are checked per region by RUI3, here by their widest range).
    RANGES = {"BAND": range(0, 13), "NJM": range(0, 2), "ADR": range(0, 2), "DR": range(0, 16),
              "CFM": range(0, 2), "RETY": range(0, 8), "TXP": range(0, 16), "PNM": range(0, 2),
              "JN1DL": range(1, 15), "JN2DL": range(2, 16), "RX1DL": range(1, 16),
              "RX2DL": range(2, 17), "RX2DR": range(0, 16), "LINKCHECK": range(0, 3)}

    # -- the config block -------------------------------------------------------
    @property
    def config_platform(self):
        from ..protocols import rui3_config
        key = self.module.config_layout
        return rui3_config.PLATFORMS[key] if key else None

    def _default_block(self, *, identity: bool):
        """RUI3's compiled-in defaults; with ``identity`` the factory's DevEUI and serial number too."""
        from ..protocols import rui3_config as rc
        p = self.config_platform
        boot = self.bootloader_version or ""
        defaults: dict[str, rc.Value] = {
            "lora_work_mode": 1, "p2p.frequency": 868_000_000, "p2p.spreadfact": 7, "p2p.preamlen": 8,
            "p2p.powerdbm": 14, "p2p.bitrate": 4915, "p2p.deviation": 5000, "p2p.fsk_rxbw": 20000,
            "lora.join_mode": 1, "lora.adr": 1, "lora.dutycycle_enable": 1, "lora.jn1dl": 5000, "lora.jn2dl": 6000,
            "lora.rx1dl": 1000, "lora.rx2dl": 2000, "lora.pub_nwk_mode": 1, "lora.auto_join_period": 8,
            "baudrate": 115200, "serial_passwd": b"00000000\0", "ex.lbt_rssi": -80,
            "ex.lbt_scantime": 5, "ex.auto_sleep_level": 1, "ex.syncword": 0x1424,
            "hwmodel": (self.module.hardware_models or (self.module.key,))[0].encode()[:32].ljust(32, b"\0"),
            "cli_ver": boot.encode()[:32].ljust(32, b"\0")}
        block = rc.new(p, rc.LATEST, **defaults)
        block = rc.with_at_values(block, {k: v for k, v in DEFAULT_SETTINGS.items() if k != "DEVEUI"})
        if identity:
            assert self.opts.dev_eui is not None and self.opts.serial_number is not None  # __init__ made them
            block = rc.with_at_values(block, {"DEVEUI": self.opts.dev_eui.upper()})
            block = block.replace(sn=self.opts.serial_number.encode()[:18].ljust(18, b"\0"))
        return block

    def factory_data(self) -> None:
        """The factory-default block and a config block (the AT port locked, with ``--locked``)."""
        if self.config_platform is None:
            return
        from ..protocols import rui3_config as rc
        block = self._default_block(identity=True)
        self.flash.load(self.module.region("factory-defaults").start, rc.encode(block))
        if self.opts.locked is not None:
            pw = self.opts.locked
            if not 1 <= len(pw) <= 8 or not all(32 <= ord(c) < 127 for c in pw):
                raise ValueError("a RUI3 lock password is 1 to 8 printable ASCII characters (AT+PWORD)")
            block = block.replace(serial_passwd=pw.encode().ljust(9, b"\0"), **{
                f"serial_lock_status[{i}]": 1 for i in range(len(block.platform.ports))})
        self.flash.load(self.module.region("config").start, rc.encode(block))

    def read_config(self):
        """The block the firmware starts from: the config region's, else the factory defaults',
        else the compiled-in defaults."""
        from ..protocols import rui3_config as rc
        p = self.config_platform
        for region in ("config", "factory-defaults"):
            r = self.module.region(region)
            try:
                return rc.decode(self.flash.read(r.start, rc.size(p)), p)
            except rc.ConfigError:
                continue
        return self._default_block(identity=False)

    def write_config(self, block) -> None:
        """Erase the config page and program ``block`` (RUI3's udrv_flash_write)."""
        from ..protocols import rui3_config as rc
        raw = rc.encode(block)
        r = self.module.region("config")
        self.flash.erase(r.start, r.start + len(raw))
        self.flash.program(r.start, raw)
        self.config = block

    def load_settings(self) -> dict[str, str]:
        if self.config_platform is None:
            return super().load_settings()
        from ..protocols import rui3_config as rc
        self.config = self.read_config()
        return rc.at_values(self.config)

    def save_settings(self, layout: str | None = None) -> None:
        if self.config_platform is None:
            return super().save_settings(layout)
        from ..protocols import rui3_config as rc
        current = self.read_config()
        self.write_config(rc.with_at_values(current, self.settings))

    @property
    def default_settings(self) -> dict[str, str]:
        if self.config_platform is None:
            assert self.opts.dev_eui is not None                 # VirtualModule.__init__ made one
            return {**DEFAULT_SETTINGS, "DEVEUI": self.opts.dev_eui.upper()}
        from ..protocols import rui3_config as rc
        return rc.at_values(self._default_block(identity=True))

    @default_settings.setter
    def default_settings(self, value: dict[str, str]) -> None:
        pass         # (VirtualModule sets it; a RUI3 module's come from its default block)

    def first_start(self, code: bytes, version: str | None) -> None:
        """A firmware whose settings storage changed resets them at its first start: it
        finds another firmware's version in the block (``firmware_ver``), starts from the
        factory defaults, and writes its own version there."""
        if self.config_platform is None:
            return super().first_start(code, version)
        if not firmware.carries(code, version, firmware.SETTINGS_LAYOUT_MARK):
            return
        if "firmware_ver" in self.config.values and self.config.text("firmware_ver") == version:
            return
        mine = self.config.replace(firmware_ver=(version or "").encode()[:32].ljust(32, b"\0"))
        from ..protocols import rui3_config as rc
        self.write_config(rc.with_at_values(mine, self.default_settings))
        self.settings = rc.at_values(self.config)

    # -- the AT port's lock ----------------------------------------------------------
    def serial_locked(self) -> bool:
        from ..protocols import rui3_config as rc
        return self.config_platform is not None and rc.lock_state(self.config) == "locked"

    @property
    def locked(self) -> bool:
        """Whether the AT port is locked now, as the flash holds it (for tests)."""
        from ..protocols import rui3_config as rc
        return self.config_platform is not None and rc.lock_state(self.read_config()) == "locked"

    def _set_locks(self, was: int, now: int) -> None:
        block = self.read_config()
        n = len(block.platform.ports)
        changes = {f"serial_lock_status[{i}]": now for i in range(n)
                   if block[f"serial_lock_status[{i}]"] == was}
        if changes:
            self.write_config(block.replace(**changes))

    def serve_locked(self) -> None:
        from ..protocols import rui3_config as rc
        password = rc.password(self.config).encode("latin-1")
        kept = bytearray()
        count = 0
        while not self._stop and self.serial_locked():
            ch = self.uart.read(1, 0.05)
            if not ch:
                continue
            if ch in (b"\x08", b"\x7f"):
                if kept:
                    kept.pop()
                    count -= 1
            elif ch in (b"\r", b"\n"):
                if count:
                    self.uart.write(b"\r\n")
                    if count == 9 and bytes(kept).lower() == b"at+lock=?":
                        self.uart.write(b"AT+LOCK=locked\r\nOK\r\n")
                    elif count == len(password) and bytes(kept) == password:
                        self._set_locks(1, 0)          # every locked port opens, stored "open"
                    else:
                        self.uart.write(b"COMMAND_LOCKED\r\n")
                kept.clear()
                count = 0
            else:
                if len(kept) < 9:
                    kept += ch
                    self.uart.write(ch)                # echoed while locked
                count += 1

    # -- the AT console ---------------------------------------------------------
    def handle_app_line(self, line: str, version: str | None) -> str | None:
        upper = line.upper()
        if not upper.startswith("AT"):
            if upper == "":
                return None
            self.app_reply("AT_COMMAND_NOT_FOUND")
            return None
        queries = {
            "AT+VER=?": version or "",
            "AT+BOOTVER=?": self.bootloader_version or "",
            "AT+HWMODEL=?": (self.module.hardware_models or (self.module.key.split("-")[0],))[0],
            "AT+HWID=?": self.HWID.get(self.module.mcu.key, self.module.mcu.key),
            "AT+SN=?": self.opts.serial_number,
            "AT+BAUD=?": str(self.opts.baud),
        }
        if upper == "AT":
            self.app_reply("OK")
        elif upper in queries:
            self.app_reply(f"{line[:-2]}={queries[upper]}", "OK")
        elif upper == "AT+BOOT":
            # The app writes the boot request flag and resets (DESIGN.md §2).
            self.boot_request = True
            self.uart.drain()
            return "reset"
        elif upper == "ATZ":
            self.uart.drain()
            return "reset"
        elif self.config_platform is not None and upper.startswith(("AT+LOCK", "AT+PWORD")):
            self._lock_command(line)
        elif "=" in upper and upper.split("=", 1)[0][3:] in self.settings:
            key, value = upper[3:].split("=", 1)
            if value == "?":
                self.app_reply(f"AT+{key}={self.settings[key]}", "OK")
            elif self._takes(key, value):
                self.settings[key] = value
                self.save_settings()
                self.app_reply("OK")
            else:
                self.app_reply("AT_PARAM_ERROR")
        else:
            self.app_reply("AT_COMMAND_NOT_FOUND")
        return None

    def _takes(self, key: str, value: str) -> bool:
        """Whether ``AT+key=value`` is a value the firmware stores."""
        if key in self.RANGES:
            return value.isdigit() and len(value) <= 3 and int(value) in self.RANGES[key]
        if key == "CLASS":
            return value in ("A", "B", "C")
        current = self.settings[key]          # a key or EUI: hex of the same length
        return all(c in "0123456789ABCDEF" for c in value) and len(value) == len(current)

    def _lock_command(self, line: str) -> None:
        """AT+LOCK=? / AT+LOCK / AT+PWORD=? / AT+PWORD=… (atcmd_serial_port.c)."""
        from ..protocols import rui3_config as rc
        upper = line.upper()
        if upper == "AT+LOCK=?":
            self.app_reply("AT+LOCK=unlocked", "OK")       # a locked port never gets here
        elif upper == "AT+LOCK":
            self._set_locks(0, 1)
            self.app_reply("OK")
        elif upper == "AT+PWORD=?":
            self.app_reply(f"AT+PWORD={rc.password(self.read_config())}", "OK")
        elif upper.startswith("AT+PWORD="):
            pw = line.split("=", 1)[1]
            if not 1 <= len(pw) <= 8 or not all(32 <= ord(c) < 127 for c in pw):
                self.app_reply("AT_PARAM_ERROR")
                return
            self.write_config(self.read_config().replace(serial_passwd=pw.encode().ljust(9, b"\0")))
            self.app_reply("OK")
        else:
            self.app_reply("AT_PARAM_ERROR")
