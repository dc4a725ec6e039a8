"""The virtual RUI3 modules keep the owner's settings where RUI3 does: a config block in flash.

Keys are set the way a person sets them (AT commands through the pty); then the flash is read
the ways a recovery reads it (the STM32 ROM bootloader's Read Memory, the flash model an SWD
read sees) and decoded with the codec; an erase loses them, a serial update leaves them.
"""

from __future__ import annotations

import time

import pytest
import serial

from conftest import FAST_BAUD, cli_json
from rakflash.link import Link
from rakflash.protocols import rui3_config as rc
from rakflash.protocols.stm32_rom import RomClient, RomTimeouts
from rakflash.sim import Mode, firmware
from test_flash import at_exchange

KEYS = {"DEVEUI": "AC1F09FFFE0A0B0C", "APPEUI": "70B3D57ED0001234",
        "APPKEY": "2B7E151628AED2A6ABF7158809CF4F3C", "BAND": "5", "CLASS": "C", "NJM": "0"}


def set_keys(dev, keys=KEYS) -> None:
    for name, value in keys.items():
        assert at_exchange(dev.port, f"AT+{name}={value}")[-1] == "OK", name


def block_in_flash(dev, cat) -> rc.ConfigBlock:
    m = cat.module(dev.module.key)
    r = m.region("config")
    return rc.decode(dev.flash.read(r.start, r.size), rc.PLATFORMS[m.config_layout])


@pytest.mark.parametrize("name", ["rak3172", "rak11720", "rak4631-r", "rak3172-sip"])
def test_keys_set_over_at_are_in_the_config_block_in_flash(virtual, cat, name):
    dev = virtual(name)
    set_keys(dev)
    block = block_in_flash(dev, cat)
    assert block.version == 4
    assert rc.at_values(block, list(KEYS)) == KEYS
    assert rc.describe(block)["serial_number"] == dev.opts.serial_number
    # and the firmware starts from them again after a reset
    dev.press_reset()
    assert dev.wait_mode(Mode.APP)
    time.sleep(0.1)
    assert at_exchange(dev.port, "AT+APPKEY=?")[0] == f"AT+APPKEY={KEYS['APPKEY']}"


def _rom(dev):
    """The chip's ROM bootloader, as recovery reaches it: BOOT0 held, reset, handshake."""
    dev.set_boot_pin(True)
    dev.press_reset()
    assert dev.wait_mode(Mode.ROM)
    link = Link(dev.port, FAST_BAUD, parity="E")
    client = RomClient(link, RomTimeouts(answer=1.0, write=1.0, erase_page=0.1, erase_base=1.0,
                                         mass_erase=2.0))
    client.handshake(3.0)
    return link, client


def _read(client, address, size) -> bytes:
    return b"".join(client.read_memory(a, min(256, address + size - a)) for a in range(address, address + size, 256))


def test_the_rom_bootloader_reads_the_real_bytes_and_an_erase_loses_them(virtual, cat):
    dev = virtual("rak3172")
    set_keys(dev)
    m = cat.module("rak3172")
    config, factory = m.region("config"), m.region("factory-defaults")
    link, client = _rom(dev)
    with link:
        raw = _read(client, config.start, rc.size(rc.PLATFORMS["stm32wle5"]))
        assert raw == dev.flash.read(config.start, len(raw))
        assert rc.at_values(rc.decode(raw, rc.PLATFORMS["stm32wle5"]), list(KEYS)) == KEYS
        page = (config.start - m.mcu.flash.start) // m.mcu.page_size
        client.erase_pages([page])                       # the config page only
        assert _read(client, config.start, 64) == b"\xff" * 64
        client.go(m.mcu.flash.start)
    dev.set_boot_pin(False)
    assert dev.wait_mode(Mode.APP)
    time.sleep(0.1)
    # The owner's values are gone: the firmware starts from the factory defaults (its DevEUI)
    assert at_exchange(dev.port, "AT+APPKEY=?")[0] == "AT+APPKEY=" + "0" * 32
    assert at_exchange(dev.port, "AT+DEVEUI=?")[0] == f"AT+DEVEUI={dev.opts.dev_eui.upper()}"
    assert at_exchange(dev.port, "AT+BAND=?")[0] == "AT+BAND=4"
    # … and a mass erase takes the factory defaults too: RUI3's compiled-in DevEUI is zeros
    link, client = _rom(dev)
    with link:
        client.mass_erase()
        assert _read(client, factory.start, 16) == b"\xff" * 16
    assert dev.read_config()["lora.dev_eui"] == bytes(8)


def test_the_rak811s_settings_are_in_its_data_eeprom_which_the_rom_reads(virtual, cat):
    dev = virtual("rak811")
    eeprom = cat.module("rak811").region("user-data")
    assert not eeprom.start < cat.module("rak811").mcu.flash.end      # outside the flash
    dev.settings["APPKEY"] = KEYS["APPKEY"]
    dev.save_settings()
    link, client = _rom(dev)
    with link:
        raw = _read(client, eeprom.start, eeprom.size)
        mcu = cat.module("rak811").mcu                # its ROM has no mass erase: every page
        client.erase_pages(list(range(mcu.flash.size // mcu.page_size)))
        assert _read(client, mcu.flash.start, 256) == b"\xff" * 256
        assert _read(client, eeprom.start, eeprom.size) == raw     # the data EEPROM is not flash
    assert KEYS["APPKEY"].encode() in raw


@pytest.mark.parametrize("name,new", [("rak3172", "RUI_4.0.6_RAK3172-E"), ("rak11720", "RUI_4.0.6_RAK11720")])
def test_a_serial_update_leaves_the_config_block(virtual, cat, tmp_path, name, new):
    dev = virtual(name)
    set_keys(dev)
    r = cat.module(name).region("config")
    before = dev.flash.read(r.start, r.size)
    path = tmp_path / "app.bin"
    path.write_bytes(firmware.app_image(cat.module(name), new, 12 * 1024))
    code, out = cli_json("flash", str(path), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes")
    assert (code, out["app_version_after"]) == (0, new), out
    assert dev.flash.read(r.start, r.size) == before
    assert rc.at_values(block_in_flash(dev, cat), list(KEYS)) == KEYS


def test_a_firmware_with_a_new_settings_layout_resets_them_once(virtual, cat, tmp_path):
    dev = virtual("rak3172")
    set_keys(dev)
    path = tmp_path / "reset.bin"
    path.write_bytes(firmware.app_image(cat.module("rak3172"), "RUI_4.0.6_RAK3172-E", 8 * 1024,
                                        new_settings_layout=True))
    code, out = cli_json("flash", str(path), "--port", dev.port, "--baud", str(FAST_BAUD), "--yes",
                         "--no-keep-settings")
    assert code == 0, out
    block = block_in_flash(dev, cat)
    assert rc.at_value(block, "APPKEY") == "0" * 32 and block.text("firmware_ver") == "RUI_4.0.6_RAK3172-E"
    set_keys(dev)
    dev.press_reset()                                   # its next start keeps them
    assert dev.wait_mode(Mode.APP)
    time.sleep(0.1)
    assert at_exchange(dev.port, "AT+APPKEY=?")[0] == f"AT+APPKEY={KEYS['APPKEY']}"


def _typed(port: str, text: str, wait: float = 0.3) -> bytes:
    """What comes back for one line typed into a terminal."""
    with serial.serial_for_url(port, FAST_BAUD, timeout=wait) as ser:
        ser.write(text.encode() + b"\r\n")
        time.sleep(wait)
        return ser.read(4096)


def test_a_locked_port_answers_as_rui3s_lock_handler(virtual, cat):
    dev = virtual("rak3172", locked="s3cret")
    assert dev.locked and rc.lock_state(block_in_flash(dev, cat)) == "locked"
    assert _typed(dev.port, "AT") == b"AT\r\nCOMMAND_LOCKED\r\n"            # echoed, then refused
    assert _typed(dev.port, "AT+VER=?").endswith(b"COMMAND_LOCKED\r\n")
    assert _typed(dev.port, "at+lock=?") == b"at+lock=?\r\nAT+LOCK=locked\r\nOK\r\n"
    assert _typed(dev.port, "wrong").endswith(b"COMMAND_LOCKED\r\n")
    assert _typed(dev.port, "s3cret") == b"s3cret\r\n"                      # opens; says nothing more
    assert not dev.locked and rc.lock_state(block_in_flash(dev, cat)) == "open"   # stored "open"
    assert at_exchange(dev.port, "AT+LOCK=?")[:2] == ["AT+LOCK=unlocked", "OK"]
    assert at_exchange(dev.port, "AT+PWORD=?")[0] == "AT+PWORD=s3cret"
    assert at_exchange(dev.port, "AT+LOCK")[-1] == "OK"
    assert dev.locked
    dev.press_reset()                                   # the lock is the flash's: it outlives a reset
    assert dev.wait_mode(Mode.APP)
    time.sleep(0.1)
    assert _typed(dev.port, "AT") == b"AT\r\nCOMMAND_LOCKED\r\n"
