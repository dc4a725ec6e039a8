"""rakflash: firmware update and recovery for RAKwireless LoRa modules."""

__version__ = "0.1.0"
