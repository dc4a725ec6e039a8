"""One exception hierarchy for everything rakflash can refuse or fail at.

Every error carries a short machine name (``name``, used as the JSON ``error``
value), a one-line message saying what went wrong, and a ``hint`` saying what
to do next. The CLI prints ``error: <message>`` and ``hint: <hint>`` and exits
with the class's ``exit_code``; it never shows a traceback for these.

Exit codes (documented in the README):

==  =====================================================================
0   success
1   unexpected internal error (a bug: please report it with ``--trace``)
2   usage error (bad command-line arguments)
3   image problem (missing, unreadable, malformed, wrong target)
4   serial port problem (missing, busy, disconnected)
5   device problem (silent, flooding, garbage, unknown, a chip's ROM bootloader answers)
6   plan refused before anything was written
7   transfer failed (timeout, cancelled, too many retries)
8   verification failed after the transfer
9   could not enter the bootloader
10  confirmation needed but nobody can answer (use ``--yes``)
130 interrupted by the user (Ctrl-C)
==  =====================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .catalog import Module


class RakflashError(Exception):
    """Base of all errors rakflash reports to a person."""

    name = "error"
    exit_code = 1
    hint = "Run again with --trace FILE and report the problem with that file attached."

    def __init__(self, message: str, *, hint: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        self.details = details

    def to_dict(self) -> dict:
        return {"error": self.name, "message": self.message, "hint": self.hint, **self.details}


# --- images ---------------------------------------------------------------

class UsageError(RakflashError):
    """An option the command can't act on (e.g. a --trace file that can't be written)."""
    name = "usage"
    exit_code = 2


class ReportFailed(UsageError):
    """The --report file stopped taking lines during the run (a full disk, a FIFO whose reader left):
    the modules' results are in the output, the report misses some of them."""
    name = "report-failed"
    hint = ("Free space or give --report a file you can write to. The output above has every "
            "module's result; add the missing lines to the report from it, or run the same command "
            "again (modules already done say already-up-to-date and get their line).")


class ImageError(RakflashError):
    name = "image-error"
    exit_code = 3
    hint = "Check that the file is the firmware you meant (.bin or Intel .hex)."


class ImageNotFound(ImageError):
    name = "image-not-found"
    hint = "Check the path; give the firmware file itself, not its folder."


class ImageEmpty(ImageError):
    name = "image-empty"
    hint = "The file has no data: download the firmware again."


class ImageFormatError(ImageError):
    """The file is not a well-formed .bin / .hex / blob."""

    name = "image-format"
    hint = "The file is damaged or not firmware: download it again and compare its SHA-256."


class ImageTargetError(ImageError):
    """The image is for another MCU or module, or its target can't be told."""

    name = "image-target"
    hint = "Use the firmware built for this module, or name the module with --module."


# --- ports and links ------------------------------------------------------

class PortError(RakflashError):
    name = "port-error"
    exit_code = 4
    hint = "Run 'rakflash ports' to see which serial ports exist."


class PortNotFound(PortError):
    name = "port-not-found"
    hint = "Run 'rakflash ports' to list serial ports, and check the cable."


class PortBusy(PortError):
    name = "port-busy"
    hint = ("Close it — the serial monitor, terminal program, IDE (Arduino IDE, PlatformIO), "
            "WisToolBox or other rakflash that has the port open — then run the same command again: "
            "two programs reading one port each get part of the bytes.")


class PortPermission(PortError):
    """The OS refuses this user the port (Linux: not in the device's group; no udev rule)."""
    name = "permission-denied"
    hint = ("Linux: add yourself to the group that owns the port (usually 'dialout': "
            "sudo usermod -aG dialout $USER, then log out and in), or 'rakflash udev --install'. "
            "'rakflash doctor --port PORT' names the exact group or udev rule for this port.")


class UdevInstallFailed(PortPermission):
    """``rakflash udev --install`` could not write the rules or reload udev."""
    name = "udev-install-failed"
    hint = ("Run 'rakflash udev' to see the rules, write them to /etc/udev/rules.d/70-rakflash.rules "
            "as root, then: sudo udevadm control --reload-rules && sudo udevadm trigger")


class NotASerialPort(PortError):
    """The path exists but is something else: a file, a folder, a device that is not a terminal."""
    name = "not-a-serial-port"
    hint = ("Name the module's serial port: 'rakflash ports' lists them (Linux /dev/ttyUSB0 or "
            "/dev/ttyACM0, macOS /dev/cu.usbserial-…, Windows COM3).")


class PortDisconnected(PortError):
    name = "port-disconnected"
    hint = ("The port went away (cable pulled, or the module reset its USB). Reconnect it and run "
            "the same command again; if an update was under way, the module waits in its "
            "bootloader and the re-run finishes it.")


# --- devices --------------------------------------------------------------

class DeviceError(RakflashError):
    name = "device-error"
    exit_code = 5


class NoResponse(DeviceError):
    name = "no-response"
    hint = ("Check the wiring (TX to RX, RX to TX, common GND), that the module is powered, "
            "and the baud rate (--baud); press the module's reset button and retry.")


class Flooding(DeviceError):
    name = "flooding"
    hint = ("The firmware on the module prints without pause, so it can't hear commands. "
            "'rakflash flash' gets past it: it asks you to press the module's reset button and "
            "catches the bootloader as the module starts. Or add a delay at the start of setup() "
            "in your sketch.")


class GarbageReply(DeviceError):
    name = "garbage"
    hint = ("The answers are not readable text: the baud rate is probably wrong (try --baud), "
            "or the wiring is noisy.")


class ChipBootloader(DeviceError):
    """The chip's own bootloader answers where the module's firmware should: a boot pin was held
    at its last reset. The hint says how to leave it and the recovery command (flows/rom_probe.py)."""
    name = "chip-bootloader"
    hint = "Release the boot pin and reset the module: it starts its firmware again."


class InRomBootloader(ChipBootloader):
    """An STM32 ROM bootloader (AN3155) answers: BOOT0 was high at reset."""
    name = "rom-bootloader"


class InSecureBootloader(ChipBootloader):
    """The Apollo3 secure bootloader answers HELLO: BOOT was held at reset, a wired update waits."""
    name = "apollo3-sbl"


class UnknownDevice(DeviceError):
    name = "unknown-device"
    hint = "Name the module with --module (see 'rakflash modules')."


class PortLocked(DeviceError):
    """A RUI3 module whose AT port is locked (AT+LOCK): every line but AT+LOCK=? is answered
    COMMAND_LOCKED until its password (AT+PWORD) is sent alone on a line."""
    name = "port-locked"
    hint = ("Its AT port is locked with a password (AT+LOCK, set with AT+PWORD): run the same command "
            "with --password PASSWORD, or in a terminal, where rakflash asks for it without showing "
            "it. rakflash opens the port, does its job and locks it again; the password never appears "
            "in its output, a --trace file or a report.")


class PasswordRefused(PortLocked):
    """The password sent did not open the locked AT port."""
    name = "password-refused"
    hint = ("The AT port stays locked: check the password (1 to 8 characters, as set with AT+PWORD; "
            "letters are case-sensitive) and run the same command again. Nothing was written.")


class EchoingPort(DeviceError):
    """Every line sent comes straight back and nothing else answers: TX and RX are bridged."""
    name = "echoing-port"
    hint = ("Nothing but an echo answers: the adapter's TX and RX are probably connected to each "
            "other (a jumper or loopback) and no module is attached, or it is unpowered. Wire "
            "adapter TX to module RX, adapter RX to module TX and GND to GND, power the module, "
            "and run the same command again.")


# --- plans ------------------------------------------------------------------

class PlanRefused(RakflashError):
    name = "plan-refused"
    exit_code = 6


class WrongTarget(PlanRefused):
    name = "wrong-target"
    hint = "Use the firmware built for this module."


class NotFirmware(ImageTargetError, PlanRefused):
    """The file is not firmware for any chip rakflash knows (no Cortex-M vector table at its
    start): refused by every command that would write it, before the device is touched. An
    image problem (exit code 3) that is also a refusal before writing (the web page's
    "refused")."""
    name = "not-firmware"
    hint = "Pick the firmware file itself: the .hex, .bin or DFU .zip built for the module."


class ModuleUncertain(PlanRefused):
    """The device can't say which of several modules it is, and the image is built for one of them."""
    name = "module-uncertain"
    hint = "Name the module with --module (the label on the module says which). Nothing was written."
    modules: list[Module]       # the modules it could be (set by the plan that raises it)
    fits: list[Module]          # those the image is built for


class ImageTooLarge(PlanRefused):
    name = "image-too-large"
    hint = "This firmware does not fit the module's application region: build a smaller one or pick the right module."


class TouchesBootloader(PlanRefused):
    name = "touches-bootloader"
    hint = "Over the serial bootloader only the application can be written; a bootloader image needs an SWD probe (pyocd flash) or the STM32 ROM bootloader (stm32flash)."


class BootloaderTooOld(PlanRefused):
    name = "bootloader-too-old"


class BaudTooLow(PlanRefused):
    """At this baud rate no packet of the update protocol reaches the bootloader within its wait."""
    name = "baud-too-low"
    hint = ("Set the module's UART to a faster rate (9600 baud or more), then run again with that "
            "--baud. Nothing was written.")


class UnsupportedUpdate(PlanRefused):
    name = "not-supported"
    hint = "Nothing was sent."


class AlreadyUpToDate(PlanRefused):
    name = "already-up-to-date"
    exit_code = 0
    hint = "Nothing to do. Use --force to write it again anyway."


# --- transfers --------------------------------------------------------------

class TransferError(RakflashError):
    name = "transfer-error"
    exit_code = 7
    hint = ("The module stays in its bootloader: run the same command again to finish the update.")


class TransferTimeout(TransferError):
    name = "transfer-timeout"


class TransferCancelled(TransferError):
    name = "transfer-cancelled"


class TooManyRetries(TransferError):
    name = "too-many-retries"


class DeviceRestarted(TransferError):
    """The module rebooted mid-transfer (power lost, reset pressed): its bootloader is in charge."""

    name = "device-restarted"
    hint = ("The module restarted during the transfer (power or reset) and now waits in its "
            "bootloader: run the same command again to finish the update.")


class DeviceRejected(TransferError):
    """The device answered with an error status (AMOTA status codes and alike)."""

    name = "device-rejected"


class VerifyFailed(RakflashError):
    name = "verify-failed"
    exit_code = 8
    hint = "Run the same command again; if it fails twice, run 'rakflash info --port PORT' to see what the module says."


class VersionUnconfirmed(VerifyFailed):
    """The image was written and accepted, but the new firmware floods the port and can't be asked."""
    name = "version-unconfirmed"
    hint = ("Nothing needs redoing. To replace that firmware, run 'rakflash flash' with another one: "
            "it will ask you to press reset to get past the flood.")


class BootEntryFailed(RakflashError):
    name = "boot-entry-failed"
    exit_code = 9


class ConfirmationNeeded(RakflashError):
    name = "confirmation-needed"
    exit_code = 10
    hint = "Run again with --yes to confirm without a prompt."


class Aborted(RakflashError):
    name = "aborted"
    exit_code = 10
    hint = "Nothing was written."


# --- recovery over a ROM bootloader (STM32 AN3155; see flows/recover/stm32_rom.py)

class RomNoHandshake(BootEntryFailed):
    """The chip's ROM bootloader never answered the handshake (BOOT0 not high at reset, wiring)."""
    name = "no-handshake"
    hint = ("Hold BOOT0 high, press the module's reset button (or power it up) and run the same "
            "command again; check that TX goes to RX and RX to TX.")


class RomNack(DeviceRejected):
    """The ROM bootloader answered NACK to a step."""
    name = "rom-nack"


class RomSilent(TransferTimeout):
    """The ROM bootloader stopped answering in the middle of a command."""
    name = "rom-silent"


class RomGarbled(TransferError):
    """The ROM bootloader answered with a byte that is neither ACK nor NACK."""
    name = "rom-garbled"


class WrongChip(PlanRefused):
    """The chip's ROM reports another product ID than the module's MCU has."""
    name = "wrong-chip"
    hint = "Check --module and the port: this is not the chip rakflash expected. Nothing was written."


class ReadoutProtected(PlanRefused):
    """Read-out protection is active: only a full erase (which removing it does) unlocks the chip."""
    name = "readout-protected"


class RecoveryUnavailable(PlanRefused):
    """The module offers no way for this recovery method (e.g. no BOOT0 pin on its pads)."""
    name = "recovery-unavailable"

# --- SWD probes (pyOCD) -------------------------------------------------------

class ProbeError(PortError):
    """A debug probe problem (exit code 4, like a port problem)."""

    name = "probe-error"
    hint = "Run 'rakflash probes' to see the probes pyOCD finds, and check the USB cable."


class SwdUnavailable(ProbeError):
    """pyOCD, the optional extra SWD recovery needs, is not installed.

    One rule for every missing optional part (an extra, ``[swd]`` or ``[web]``): a named
    ``…-unavailable`` error with exit code 4 — what this installation can't reach the module
    through, like a missing port or probe; not a usage mistake (2)."""

    name = "swd-unavailable"
    hint = "Install it with: pip install 'rakflash[swd]'"


class WebUnavailable(PortError):
    """Starlette or uvicorn, the optional extra 'rakflash web' needs, is not installed (the
    rule of :class:`SwdUnavailable`)."""

    name = "web-unavailable"
    hint = "Install it with: pip install 'rakflash[web]'"


class ProbeNotFound(ProbeError):
    name = "probe-not-found"
    hint = ("Plug in the probe (RAKDAP1 or another CMSIS-DAP probe, or a J-Link) and run "
            "'rakflash probes'; on Linux, pyOCD's udev rules give you access to it.")


class ProbeBusy(ProbeError):
    name = "probe-busy"
    hint = "Close the other program using the probe (another pyocd, a debugger, an IDE), then retry."


class PackMissing(ProbeError):
    """pyOCD does not know the target: its CMSIS device pack is not installed."""

    name = "pack-missing"


class TargetNotResponding(DeviceError):
    name = "target-not-responding"
    hint = ("Check the SWD wiring (SWDIO, SWCLK, GND, and the probe's VTref to the module's 3V3), "
            "that the module is powered, and try again; hold the module's reset if its firmware "
            "sleeps or reuses the SWD pins.")


class TransferFault(TransferError):
    """The probe reached the chip, but a memory access or flash operation failed."""

    name = "transfer-fault"



# --- nRF52 DFU packages and bootloaders (RAK4631) ----------------------------

class PackageError(ImageFormatError):
    """A DFU package (.zip) that can't be used: no manifest, a missing file, an init packet that doesn't parse."""

    name = "package-error"
    hint = ("The package is damaged or not a DFU package: download it again, or make it again with "
            "'nrfutil pkg generate' (RUI3) / 'adafruit-nrfutil dfu genpkg' (Arduino).")


class PackageMismatch(PlanRefused):
    """A package made for the other nRF52 bootloader family (Secure DFU vs Adafruit legacy DFU)."""

    name = "package-mismatch"


class DfuRejected(DeviceRejected):
    """The nRF52 bootloader answered a DFU request with an error result or extended error."""

    name = "dfu-rejected"


class PortNotBack(PortError):
    """The module's USB port went away (it entered its bootloader) and did not come back in time."""

    name = "port-not-back"
    hint = ("Run 'rakflash ports' to see where it went: if a port with the bootloader's USB id is "
            "listed, run the same command with --port set to it. Otherwise unplug and re-plug the "
            "module (double-press reset on an Arduino RAK4631) and run the same command again.")


class PortAmbiguous(PortError):
    """After a re-enumeration, more than one new port looks like the module that was reset."""

    name = "port-ambiguous"
    hint = ("Unplug the other modules of that kind (or let them finish what they are doing), run "
            "'rakflash ports' to see which port is in its bootloader now, and run the same command "
            "again with --port set to it.")


class ImageNotAFile(ImageError):
    """A FIFO, a device, a socket: reading it could block forever or never end."""

    name = "image-not-a-file"
    hint = ("Give the firmware file itself: rakflash reads only regular files (not a FIFO, a "
            "device such as /dev/zero, or a socket). Save the firmware to a file first.")


# --- production: a batch of LoRaWAN keys and its ledger (issue 21) -----------

class ProvisionError(RakflashError):
    """A batch file or its ledger that provisioning can't work with."""

    name = "provision-error"
    exit_code = 12


class BatchInvalid(ProvisionError):
    """The batch CSV has rows that can't be written (each named by its line); nothing was written."""

    name = "batch-invalid"
    hint = ("Correct the lines named above in the batch file and run the same command again; "
            "nothing was claimed and nothing was written to any module.")


class LedgerError(ProvisionError):
    """The ledger can't be opened, read or written (a locked or damaged file, a database away)."""

    name = "ledger-error"


class BatchUsedUp(ProvisionError):
    """Every row of the batch is claimed: there are no keys left for this module."""

    name = "batch-used-up"
    hint = ("Add rows to the batch (or use the next batch file); 'rakflash ledger show BATCH' "
            "lists which module has which row.")


class KeysPresent(PlanRefused):
    """The module holds LoRaWAN keys of its own (not a row of this batch claimed for it)."""

    name = "keys-present"
    hint = ("If this module is meant to get a row of this batch anyway, run the same command "
            "with --force: its keys are then replaced. Nothing was claimed or written.")


class NotProvisionable(PlanRefused):
    """The module can't be given keys over AT by rakflash (no key commands, no serial number, not running its application)."""

    name = "not-provisionable"


class KeysNotWritten(VerifyFailed):
    """The keys were written but did not read back consistently."""

    name = "keys-not-written"
    hint = ("The row stays claimed for this module (its serial number): check the cable and run the "
            "same command again, which writes the same row again.")


# --- ESP32 modules through esptool (flows/esp_chip.py, esp_update.py) ----

class DownloadModeFailed(BootEntryFailed):
    """The ESP chip's ROM download mode did not answer: no reset reached it, and GPIO0 was not held."""
    name = "download-mode-failed"
    hint = ("Hold GPIO0 low (BOOT0 / BOOT to GND), press the module's reset button, and run the same "
            "command again; check that the port is the module's ('rakflash ports').")


class PartitionTableInvalid(PlanRefused):
    """The partition table that would be on the chip after the write can't work there."""
    name = "partition-table"
    hint = ("Build the firmware with a partition table for this module's flash (ESP-IDF: 'idf.py "
            "menuconfig' → Partition Table; Arduino: Tools → Partition Scheme), or write the merged "
            "binary that carries a fitting one. Nothing was written.")


class EspToolFailed(TransferError):
    """esptool stopped with an error while talking to the chip (its words are in the message)."""
    name = "esptool-failed"
    hint = ("The chip's ROM can't be harmed: run the same command again. If it keeps failing, lower "
            "--baud (a long cable or a slow adapter) and check the cable.")
