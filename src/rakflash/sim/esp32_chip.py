"""The silicon of the virtual ESP32 and ESP32-S3 modules (sim/esp32.py): each chip's facts as its
ROM and registers show them (magic value, eFuse MAC and revision words, SPI registers, the RAM a
loader may fill, GPIO0's input register, boot logs and strapping values), and the SPI NOR flash
beside it, with typical datasheet times. The facts are Espressif's and GigaDevice's
(docs/protocols.md "ESP32 ROM download mode"); none of their code is here.
"""

from __future__ import annotations

import time

# SPI NOR timing (typical values of GigaDevice GD25Q32C/GD25Q128C datasheets; approximate).
SECTOR, BLOCK, PAGE = 0x1000, 0x10000, 0x100
SECTOR_ERASE_S, BLOCK_ERASE_S, PAGE_PROGRAM_S = 0.045, 0.15, 0.0006
FLASH_READ_BPS = 10e6              # DIO at 40 MHz


class Chip:
    """One chip's facts as its ROM and registers show them (esptool targets/esp32*.py)."""

    name = ""
    chip_id = 0
    magic = 0
    rom_flash_begin_words = 4       # the ESP32 ROM takes 4 words at FLASH_BEGIN, later ROMs 5
    has_security_info = False
    spi_base = 0
    spi: dict[str, int] = {}        # register offsets: cmd, addr, usr, usr1, usr2, mosi, miso, w0
    spi_addr_msb = True
    ram: tuple[tuple[int, int], ...] = ()   # (start, end) ranges MEM_BEGIN may load into
    jedec = (0xC8, 0x40, 0x16)
    gpio_in = 0                     # GPIO_IN_REG: bit 0 is GPIO0's level now

    def __init__(self, mac: bytes) -> None:
        self.mac = mac
        self.regs: dict[int, int] = {}

    def boot_log(self, download: bool, reset_cause: str) -> bytes:
        raise NotImplementedError

    def strap(self, download: bool) -> int:
        raise NotImplementedError


class Esp32(Chip):
    name, chip_id, magic = "ESP32", 0, 0x00F01D83
    spi_base = 0x3FF42000
    spi = {"cmd": 0x00, "addr": 0x04, "usr": 0x1C, "usr1": 0x20, "usr2": 0x24, "mosi": 0x28,
           "miso": 0x2C, "w0": 0x80}
    spi_addr_msb = True
    ram = ((0x3FFAE000, 0x40000000), (0x40070000, 0x400C0000), (0x3FF80000, 0x3FF82000))
    jedec = (0xC8, 0x40, 0x16)        # GD25Q32: 4 MB
    gpio_in = 0x3FF4403C

    def __init__(self, mac: bytes) -> None:
        super().__init__(mac)
        efuse = 0x3FF5A000
        crc = 0x5A                        # (the MAC's CRC byte is not checked by esptool)
        r = self.regs
        r[0x40001000] = self.magic
        r[efuse + 4] = int.from_bytes(mac[2:6], "big")                   # BLK0 word 1
        r[efuse + 8] = (crc << 16) | int.from_bytes(mac[0:2], "big")     # word 2
        # word 3: package 1 (D0WD), revision bit 0, rated 240 MHz; word 5: revision bit 1; the
        # APB_CTL_DATE bit 31: revision bit 2 — an ESP32-D0WD-V3 revision v3.0 (as on a WROVER-E/B).
        r[efuse + 12] = (1 << 9) | (1 << 13) | (1 << 15)
        r[efuse + 16] = 80                # CK8M frequency calibration (word 4, low byte)
        r[efuse + 20] = 1 << 20
        r[0x3FF6607C] = 0x80000000 | 0x16042000
        r[0x3FF5F06C] = 1280 << 7         # RTC calibration: the ROM's crystal estimate is 40 MHz
        r[0x3FF40014] = 40_000_000 // 115200

    def boot_log(self, download: bool, reset_cause: str) -> bytes:
        rst = {"poweron": "rst:0x1 (POWERON_RESET)", "sw": "rst:0xc (SW_CPU_RESET)"}[reset_cause]
        if download:
            return (f"ets Jun  8 2016 00:22:57\r\n\r\n{rst},boot:0x3 "
                    f"(DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\nwaiting for download\r\n").encode()
        return (f"ets Jun  8 2016 00:22:57\r\n\r\n{rst},boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
                "configsip: 0, SPIWP:0xee\r\n"
                "clk_drv:0x00,q_drv:0x00,d_drv:0x00,cs0_drv:0x00,hd_drv:0x00,wp_drv:0x00\r\n"
                "mode:DIO, clock div:2\r\n").encode()

    def strap(self, download: bool) -> int:
        return 0x03 if download else 0x13


class Esp32S3(Chip):
    name, chip_id, magic = "ESP32-S3", 9, 0x00000009
    rom_flash_begin_words = 5
    has_security_info = True
    spi_base = 0x60002000
    spi = {"cmd": 0x00, "addr": 0x04, "usr": 0x18, "usr1": 0x1C, "usr2": 0x20, "mosi": 0x24,
           "miso": 0x28, "w0": 0x58}
    spi_addr_msb = False
    ram = ((0x3FC88000, 0x3FD00000), (0x40370000, 0x403E0000), (0x600FE000, 0x60100000))
    jedec = (0xC8, 0x40, 0x18)        # GD25Q128: 16 MB
    gpio_in = 0x6000403C
    OPTION1 = 0x6000812C              # RTC_CNTL_OPTION1_REG: bit 0 forces download boot

    def __init__(self, mac: bytes) -> None:
        super().__init__(mac)
        base = 0x60007000
        r = self.regs
        r[0x40001000] = self.magic
        r[base + 0x44] = int.from_bytes(mac[2:6], "big")                 # MAC, low 32 bits
        r[base + 0x48] = int.from_bytes(mac[0:2], "big")                 # MAC, high 16 bits
        # BLOCK1 word 3: package 0 (QFN56), minor revision 2, block version minor 1; word 4:
        # embedded PSRAM 8 MB (AP_3v3); BLOCK2 word 4: block version major 1 — "ESP32-S3 (QFN56)
        # (revision v0.2)" with 8 MB PSRAM, as an ESP32-S3R8.
        r[base + 0x50] = (2 << 18) | (1 << 24)
        r[base + 0x54] = (1 << 3) | (1 << 7)
        r[base + 0x6C] = 1
        r[0x60000014] = 80_000_000 // 115200
        r[self.OPTION1] = 0

    def boot_log(self, download: bool, reset_cause: str) -> bytes:
        rst = {"poweron": "rst:0x1 (POWERON)", "sw": "rst:0x15 (USB_UART_CHIP_RESET)"}[reset_cause]
        head = f"ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\n{rst},"
        if download:
            return (head + "boot:0x0 (DOWNLOAD(USB/UART0))\r\nwaiting for download\r\n").encode()
        return (head + "boot:0x8 (SPI_FAST_FLASH_BOOT)\r\nSPIWP:0xee\r\nmode:DIO, clock div:1\r\n").encode()

    def strap(self, download: bool) -> int:
        return 0x00 if download else 0x08


CHIPS = {"esp32": Esp32, "esp32s3": Esp32S3}


class SpiNor:
    """The module's SPI NOR flash: bytes erased to 0xFF, programming clears bits only, typical
    datasheet times (scaled by ``time_scale``; 0 makes it instant)."""

    def __init__(self, size: int, jedec: tuple[int, int, int], time_scale: float) -> None:
        self.mem = bytearray(b"\xff") * size
        self.size = size
        self.jedec = jedec
        self.time_scale = time_scale
        self.busy_seconds = 0.0
        self.erases = self.programs = 0

    def spend(self, seconds: float) -> None:
        seconds *= self.time_scale
        self.busy_seconds += seconds
        if seconds > 0:
            time.sleep(seconds)

    def check(self, addr: int, size: int) -> bool:
        return 0 <= addr and addr + size <= self.size

    def read(self, addr: int, size: int) -> bytes:
        return bytes(self.mem[addr:addr + size])

    def erase_range(self, start: int, end: int) -> None:
        """Erase the sectors [start, end) touches, 64 KiB blocks where whole ones fit."""
        addr = start - start % SECTOR
        while addr < end:
            if addr % BLOCK == 0 and addr + BLOCK <= end:
                self.erase(addr, BLOCK)
                addr += BLOCK
            else:
                self.erase(addr, SECTOR)
                addr += SECTOR

    def erase(self, addr: int, size: int) -> None:
        self.mem[addr:addr + size] = b"\xff" * size
        self.erases += 1
        self.spend(BLOCK_ERASE_S if size == BLOCK else SECTOR_ERASE_S)

    def program(self, addr: int, data: bytes) -> bool:
        """Program (AND into what is there, as NOR flash does); True when it reads back as ``data``."""
        end = addr + len(data)
        self.mem[addr:end] = bytes(a & b for a, b in zip(self.mem[addr:end], data, strict=True))
        self.programs += 1
        self.spend(-(-len(data) // PAGE) * PAGE_PROGRAM_S)
        return self.mem[addr:end] == data

    def blank(self, addr: int, size: int) -> bool:
        return self.mem[addr:addr + size].count(0xFF) == size
