"""The ``stm32-rom`` recovery as a command of stm32flash, printed beside rakflash's own.

For people who have stm32flash: the plan of ``rakflash recover --via stm32-rom`` shows the
same recovery as stm32flash runs it (:func:`stm32flash_command`) — the same files written at the
same addresses, the same lines driving RESET and BOOT0, Go at the flash base — with what a
person must know first on a chip some stm32flash releases don't know (:func:`stm32flash_note`,
which ``rakflash modules`` shows too). Nothing here talks to a device; :mod:`.stm32_rom` is the
method itself.
"""

from __future__ import annotations

from ...catalog import Module
from ...images import ImageInfo
from .base import RecoveryOptions

# stm32flash 0.7 (the Debian/Ubuntu package) answers "Unknown/unsupported device (Device ID:
# 0x497)" to the STM32WL: its dev_table.c lists the chip only after 0.7. Seen against the
# virtual RAK3172 (tests/test_printed_commands.py).
STM32FLASH_NEEDS = {0x497: "stm32flash newer than 0.7: 0.7 does not know the STM32WL (product ID 0x497)"}


def stm32flash_command(module: Module, image: ImageInfo, options: RecoveryOptions,
                       port: str = "PORT") -> str:
    """The same recovery with stm32flash, for people who have it (read-back verify, Go).

    It writes what rakflash writes, where rakflash writes it: a .hex at its own
    addresses (stm32flash reads them from the file), a .bin at the address rakflash
    places it with ``-S`` (without it stm32flash writes at the flash base — an
    application there would overwrite the RUI bootloader), a bootloader file and an
    ``--app`` file as two runs (stm32flash takes one file; the second run syncs again,
    which the ROM answers NACK and stm32flash takes as "already synced"), Go at the
    flash base only after the last. stm32flash erases only the pages it writes, as
    rakflash does; between a .hex's segments it writes 0xFF (rakflash leaves those
    bytes alone).

    ``port``: the port, when rakflash knows it. A pseudo-terminal (a virtual module)
    carries no parity, so rakflash talks 8N1 to it (:class:`rakflash.link.Link`), and
    so does the command: ``-m 8n1`` (stm32flash's default 8E1 fails on a pty,
    "Failed to set terminal flags"); a real adapter gets stm32flash's 8E1.
    """
    import shlex

    from ...link import _is_pty
    mode = " -m 8n1" if port != "PORT" and _is_pty(port) else ""
    seq = ""
    if options.reset_with or options.boot0_with:
        from ..lines import stm32flash_sequence
        seq = f" -i {shlex.quote(stm32flash_sequence(options.reset_with, options.boot0_with))}"
    where = port if port == "PORT" else shlex.quote(port)
    runs = []
    files = _files(image, module)
    for i, (path, fmt, start) in enumerate(files):
        at = f" -S {start:#010x}" if fmt == "bin" else ""
        go = f" -g {module.mcu.flash.start:#010x}" if i == len(files) - 1 else ""
        runs.append(f"stm32flash{mode} -b {options.baud}{seq} -w {shlex.quote(path)} -v{at}{go} {where}")
    return " && ".join(runs)


def stm32flash_note(module: Module) -> str | None:
    """What a person must know before running :func:`stm32flash_command` on this chip, if anything."""
    need = STM32FLASH_NEEDS.get(module.mcu.rom.pid) if module.mcu.rom else None
    return f"needs {need}" if need else None


def _files(image: ImageInfo, module: Module) -> list[tuple[str, str, int]]:
    """(path, format, first address) of each file the image came from: one, or a bootloader
    file and its ``--app`` (the parts :func:`flows.recover.combine` keeps)."""
    img = image.image
    return [(p.path, p.format, p.low) for p in (img.parts or (img,))]
