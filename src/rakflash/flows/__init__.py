"""The decisions: identify, plan, enter the bootloader, update, verify — as readable steps."""
