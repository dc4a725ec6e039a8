"""RUI v3's application on a virtual module (RAK811, RAK4270): its AT console, ``OK<info>`` /
``ERROR: <code>`` (docs/protocols.md, the RUI v3 rows); the base module is :mod:`rakflash.sim.device`.
"""

from __future__ import annotations

from .device import VirtualModule


class RuiV3Module(VirtualModule):
    """An application speaking RUI v3 (RAK811, RAK4270): ``OK<info>`` / ``ERROR: <code>``.

    ``at+get_config=device:status`` names the board, its MCU and LoRa chip, as the
    AT command manuals show; with ``SimOptions(board_status=False)`` the firmware
    doesn't know the command (``ERROR: 1``), so it can't tell which module it is.
    """

    BOARDS = {"rak811": ("RAK811", "STM32L151CBU6A", "SX1276"),
              "rak4270": ("RAK4270", "STM32L071KB", "SX1262")}

    def handle_app_line(self, line: str, version: str | None) -> str | None:
        cmd = line.lower()
        if cmd == "at+version":
            self.app_reply(f"OK {version or ''}")
        elif cmd in ("at+set_config=device:boot", "at+boot"):
            self.app_reply("OK")
            self.boot_request = True
            self.uart.drain()
            return "reset"
        elif cmd == "at+set_config=device:restart":
            self.uart.drain()
            return "reset"
        elif cmd == "at+get_config=device:status" and self.opts.board_status:
            board, mcu, radio = self.BOARDS[self.module.key]
            self.app_reply(f"OK Board Core:{board}", f"MCU:{mcu}", f"LoRa chip:{radio}")
        elif cmd.startswith("at+get_config=lora:status"):
            self.app_reply("OK Work Mode: LoRaWAN", f"DevEui: {self.settings['DEVEUI']}")
        elif cmd.startswith("at"):
            self.app_reply("ERROR: 1")
        return None
