"""The owner's keys through a recovery: what the plan says of them, and what becomes of them.

A recovery writes over flash where the owner's LoRaWAN keys may lie. :func:`plan_keys`
decides, with the plan and before anything is written, what is done about them
(:class:`KeysPlan`): a method that can read and write the chip's memory (the STM32 ROM, SWD)
reads them before anything is erased and checks them after the verify; one that can't (the
Apollo3 wired update) says so, with whether the recovery writes where they are.
:class:`OwnerKeys` takes those steps inside :func:`~.base.recover` and says what became of
them: ``kept``, ``written-back``, ``lost`` or ``not-read`` (:data:`KEPT`, :data:`WRITTEN_BACK`,
:data:`LOST`, :data:`NOT_READ`) — with, for a chip whose read-out protection is removed (an
erase of the whole chip), the keys read over AT first and written back over AT after.

The framework (:mod:`.base`) imports this module; this one imports nothing of it (no import
circle): what it uses of the recovery's plan, session and method is named below as protocols,
which :class:`~.base.RecoveryPlan`, :class:`~.base.Session` and :class:`~.base.RecoveryMethod`
meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ...catalog import Module
from ...errors import RakflashError
from ...events import Note, Phase, Sink
from ...link import Link


class _Options(Protocol):
    """What the keys read of :class:`~.base.RecoveryOptions`."""

    @property
    def remove_protection(self) -> bool: ...
    @property
    def show_keys(self) -> bool: ...


class _Plan(Protocol):
    """What the keys read of :class:`~.base.RecoveryPlan`."""

    @property
    def module(self) -> Module: ...
    @property
    def method(self) -> str: ...
    @property
    def keys(self) -> KeysPlan | None: ...


class _Session(Protocol):
    """What the keys use of :class:`~.base.Session`."""

    keys_over_at: str | None     # set when the keys were read over AT first

    @property
    def link(self) -> Link | None: ...
    @property
    def plan(self) -> _Plan: ...
    @property
    def options(self) -> _Options: ...
    @property
    def emit(self) -> Sink: ...
    @property
    def erased_whole(self) -> str | None: ...
    def warn(self, code: str, message: str, **info: Any) -> None: ...


class _Method(Protocol):
    """What the keys use of a :class:`~.base.RecoveryMethod` (its plan and session: the framework's)."""

    @property
    def name(self) -> str: ...
    @property
    def removes_protection(self) -> bool: ...
    def memory_access(self, plan: Any) -> str | None: ...
    def touches(self, plan: Any) -> list[tuple[int, int]]: ...
    def read_memory(self, session: Any, address: int, size: int, expect: bytes | None = None) -> bytes: ...
    def write_memory(self, session: Any, address: int, data: bytes) -> None: ...


# What became of the owner's keys (RecoveryResult.keys).
KEPT = "kept"                  # read before the write and again after it: the same
WRITTEN_BACK = "written-back"  # overwritten, written back from what was read before, read back the same
LOST = "lost"                  # gone: erased before they could be read, or not read back the same
NOT_READ = "not-read"          # this way to the chip can't read them (keys_reason says why)


@dataclass
class KeysPlan:
    """What a recovery does about the owner's keys, decided with the plan (said before
    anything is written): whether they are read first (``read``) and decoded (``decoded``:
    RUI3's layout; else raw bytes), which ``regions`` hold them (name, address, size), which
    of those the recovery writes over (``overwritten``), and the sentence that says it.

    ``at_first``: the recovery may erase the whole chip before the keys can be read through it
    (``--remove-readout-protection``), and the module's firmware gives its keys over AT (RUI3):
    if its application answers when the module is first asked what runs, the keys are read over
    AT then and written back over AT once the new firmware runs."""

    read: bool
    decoded: bool
    regions: list[tuple[str, int, int]]
    overwritten: list[str]
    says: str
    at_first: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "decoded": self.decoded, "says": self.says, "at_first": self.at_first,
                "regions": [{"region": n, "address": f"0x{a:08X}", "size": size} for n, a, size in self.regions],
                "overwritten": list(self.overwritten)}


def _region_words(name: str, address: int, size: int) -> str:
    return {"config": f"RUI3's config block at 0x{address:08X}",
            "factory-defaults": f"its factory defaults at 0x{address:08X}",
            "user-data": f"the data EEPROM at 0x{address:08X} ({size:,} bytes)"}.get(name, f"{name} at 0x{address:08X}")


def _regions_words(regions: list[tuple[str, int, int]], names: list[str] | None = None) -> str:
    said = [_region_words(*r) for r in regions if names is None or r[0] in names]
    return " and ".join(said) if len(said) < 3 else ", ".join(said[:-1]) + " and " + said[-1]


def plan_keys(plan: _Plan, method: _Method, options: _Options | None = None) -> KeysPlan:
    """What the recovery ``plan`` does about the owner's keys with ``method``, before anything is
    written: read them first and check them after (a method that reads the chip's memory), or
    say that it can't — and, when it can't, whether the recovery writes where they are. With
    ``options.remove_protection`` (a method that removes read-out protection), also what happens
    to them if the chip turns out protected (:func:`_protection_words`)."""
    keys = _plan_keys(plan, method)
    if options is not None and options.remove_protection and method.removes_protection and keys.regions:
        keys.at_first = plan.module.dialect.key == "rui3" and bool(plan.module.config_layout)
        keys.says = f"{keys.says}. {_protection_words(keys.at_first)}"
    return keys


# What the plan says, with --remove-readout-protection, when the keys can be read over AT first
# (the application answers) and when they can't: the run says which holds once it has asked.
AT_FIRST_WORDS = ("the application answers: rakflash reads the keys over AT first and writes them back "
                  "over AT once the new firmware runs")
CANT_BE_SAVED = ("removing the protection erases the whole chip, keys and settings included, and they "
                 "can't be saved")


def _protection_words(at_first: bool) -> str:
    """The plan's sentence about the keys if the chip has read-out protection on."""
    backup = ("back them up over AT first while the application answers ('rakflash keys backup FILE "
              "--port PORT')")
    said = ("If the chip has read-out protection on, its ROM refuses every read, so rakflash can't read "
            "the keys through it before removing the protection")
    if at_first:
        return (f"{said}; but the protection blocks only the ROM's and a debugger's reads, and the chip's "
                f"application still runs. If, when "
                f"rakflash first asks what runs (before you hold BOOT0), {AT_FIRST_WORDS}, each read back. "
                f"If it doesn't answer (it floods its port, waits in its bootloader, or its AT port is "
                f"locked), {CANT_BE_SAVED}: {backup}. rakflash asks once more before it removes the protection")
    return f"{said}, and {CANT_BE_SAVED}: {backup}. rakflash asks once more before it removes the protection"


def _plan_keys(plan: _Plan, method: _Method) -> KeysPlan:
    from ..keys import memory_regions
    module = plan.module
    regions = memory_regions(module)
    if not regions:
        return KeysPlan(False, False, [], [], f"{module.name}'s firmware keeps no keys where rakflash "
                        "knows to find them: nothing is read or checked")
    touched = method.touches(plan)
    over = [n for n, a, size in regions if any(lo < a + size and a < hi for lo, hi in touched)]
    where = _regions_words(regions)
    are = "is" if len(regions) == 1 else "are"
    why_not = method.memory_access(plan)
    if why_not:
        if over:
            says = (f"{why_not}, so rakflash can't read the keys or keep a copy, and this image covers "
                    f"{_regions_words(regions, over)}: writing it overwrites them. Back them up first while "
                    f"the application answers ('rakflash keys backup FILE --port PORT')"
                    + (", or recover with --via swd, which reads them first and writes them back"
                       if "swd" in module.recovery and method.name != "swd" else ""))
        else:
            joined: list[tuple[int, int]] = []
            for a, b in sorted(touched):
                if joined and a <= joined[-1][1]:
                    joined[-1] = (joined[-1][0], max(b, joined[-1][1]))
                else:
                    joined.append((a, b))
            spans = ", ".join(f"{a:#010x}-{b:#010x}" for a, b in joined)
            says = (f"{why_not}, so rakflash can't read the keys; it writes only the image's pages "
                    f"({spans}), so {where} {are} not touched")
    elif module.config_layout:
        says = (f"read {where} (DevEUI, AppEUI, band, class) before anything is written, keep a copy, "
                f"and read them again after the write: "
                + (f"the image covers {_regions_words(regions, over)}, so rakflash writes back what it "
                   f"read and reads it back" if over else "the image doesn't cover them, so they should be "
                                                            "unchanged"))
    else:
        says = (f"{module.name} runs RUI v3, which publishes no layout of its settings: rakflash keeps a "
                f"raw copy of {where} before anything is written (the keys are inside, but can't be "
                f"decoded) and compares it after the write"
                + (f"; the image covers {_regions_words(regions, over)}, so rakflash writes the copy back"
                   if over else ""))
    return KeysPlan(not why_not, bool(module.config_layout), regions, over, says)


class OwnerKeys:
    """The owner's keys through a recovery, in two steps :func:`recover` takes around the write,
    through the method's memory reader and writer:

    * :meth:`read_before` (after ``connect``, before anything is erased): read what
      :class:`KeysPlan` names, show it (a ``keys`` event: DevEUI, AppEUI, band, class; the
      keys masked unless ``show_keys``) and keep a copy (:func:`rakflash.flows.keys.keep_copy`);
    * :meth:`check_after` (after ``verify``, before ``start``): read it again. The same:
      ``kept``. Not the same (the image covered it, or an erase took it): say so, write back
      what was read (whole pages, the image's own bytes around it kept), read it again —
      ``written-back`` when it reads back the same, else ``lost`` with the copy named.

    Where the method can't read, or the chip was erased whole before it could be read
    (read-out protection removed), ``state`` says ``not-read`` or ``lost`` and ``reason`` why —
    unless the keys were read over AT first (:attr:`KeysPlan.at_first`):

    * :meth:`read_over_at_first` (at the identify step, before the person is asked to reach the
      chip): the application answers, so its keys are read over AT (each value until two reads
      agree), shown and kept as a copy; a chip that turns out unprotected is then read and checked
      through its memory as above, and that copy goes;
    * :meth:`write_back_over_at` (once the new firmware is identified over AT): the chip was erased
      whole, so they are written back over AT, each read back — ``written-back``, else ``lost``
      with the copy and the ``keys restore`` command named.
    """

    def __init__(self, session: _Session, method: _Method) -> None:
        self.session, self.method = session, method
        self.before: Any = None            # the Backup read before the write
        self.copy: Any = None              # its KeptCopy
        self.state: str | None = None
        self.reason: str | None = None
        self.over_at: Any = None           # the Backup read over AT first (at_first), until checked
        self.no_app: str | None = None     # why they could not be read over AT first (at_first)

    @property
    def kept_in(self) -> str | None:
        return str(self.copy.path) if self.copy is not None and self.copy.path is not None else None

    def read_over_at_first(self, link: Link, device: Any, why_not: str | None) -> None:
        """With :attr:`KeysPlan.at_first`: while the module's application answers (``device``, just
        identified over ``link``; else ``why_not`` says why it doesn't), read its keys over AT —
        read-out protection blocks only the ROM's and a debugger's reads, and removing it erases the
        chip — show them (masked unless ``show_keys``) and keep a copy. A note says which of the
        plan's two cases holds."""
        from ...events import Keys
        from ..keys import keep_copy, read_over_at
        s, kp = self.session, self._plan
        if kp is None or not kp.at_first:
            return
        module = s.plan.module
        if device is not None and device.mode != "app":
            why_not = f"{module.name} waits in its RUI bootloader: no application answers AT"
        if device is None or why_not:
            self._cant_read_over_at(why_not or "the application does not answer over AT")
            return
        s.emit(Note(f"keys: {AT_FIRST_WORDS}, if the chip has read-out protection on (removing it "
                    f"erases them)"))
        try:
            backup = read_over_at(link, module, emit=s.emit)
        except RakflashError as exc:
            self._cant_read_over_at(f"reading them over AT failed ({exc.message})")
            return
        backup.serial_number = backup.serial_number or device.serial_number
        if not backup.settings:
            self._cant_read_over_at("none of them read the same twice over AT")
            return
        self.over_at = backup
        self.copy = keep_copy(backup)
        where = (f"a copy is in {self.kept_in}" if self.kept_in else
                 f"no copy could be kept on this computer ({self.copy.why_not})")
        s.keys_over_at = (f"rakflash read the keys over AT while the application answered ({where}) and "
                          f"writes them back over AT once the new firmware runs"
                          + (f"; {', '.join(backup.unreadable)} never read the same twice, so "
                             f"{'that one' if len(backup.unreadable) == 1 else 'those'} can't be saved"
                             if backup.unreadable else ""))
        s.emit(Keys("before", None, self._shown(backup)))
        if self.copy.path is None:
            s.warn("keys-copy-not-kept", f"no copy of the keys read over AT could be kept on this computer "
                   f"({self.copy.why_not}); rakflash still writes them back after the recovery")
        if backup.unreadable:
            s.warn("keys-not-read", f"{', '.join(backup.unreadable)} never read the same twice over AT: if "
                   f"removing read-out protection erases the chip, rakflash can't write "
                   f"{'it' if len(backup.unreadable) == 1 else 'them'} back", names=list(backup.unreadable))

    def _cant_read_over_at(self, why: str) -> None:
        self.no_app = why
        self.session.emit(Note(f"keys: {why}, so rakflash can't read the keys over AT first: if the chip "
                               f"has read-out protection on, {CANT_BE_SAVED}"
                               + (" (open the port and back them up first: 'rakflash keys backup FILE "
                                  "--port PORT --password PW')" if "locked" in why else "")))

    def write_back_over_at(self, link: Link | None, device: Any) -> None:
        """The chip was erased whole after the keys were read over AT (:meth:`read_over_at_first`)
        and the new firmware was identified over ``link`` (``device``): write them back over AT,
        each read back until two reads agree (:func:`rakflash.flows.keys.restore`)."""
        from ...events import Keys
        from ..keys import restore
        s, backup = self.session, self.over_at
        if backup is None or self.state is not None or link is None or not s.erased_whole:
            return
        module = s.plan.module
        erased = f"{s.erased_whole}, {self._where()} included"
        if device.mode != "app":
            self._lost_over_at(f"{erased}; rakflash had read the keys over AT before, but {module.name} waits "
                               f"in its bootloader after the recovery, so they could not be written back over AT")
            return
        if backup.serial_number and device.serial_number and backup.serial_number != device.serial_number:
            self._lost_over_at(f"{erased}; rakflash had read the keys over AT from {module.name} "
                               f"{backup.serial_number}, but serial number {device.serial_number} answers "
                               f"now: they were not written back")
            return
        try:
            # The keys were read from this module over this port in this run; the erase reset the
            # DevEUI that restore's other-module check compares, so it is passed over here.
            restore(link, module, backup, force=True, emit=s.emit)
        except (RakflashError, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            self._lost_over_at(f"{erased}; rakflash had read the keys over AT before, but writing them "
                               f"back over AT did not work: {message}")
            return
        who = f", DevEUI {backup.dev_eui}" if backup.dev_eui else ""
        if backup.unreadable:
            self._lost_over_at(f"{erased}; rakflash wrote back over AT what it had read over AT before and "
                               f"read each back the same{who}, but {', '.join(backup.unreadable)} never read "
                               f"the same twice before the removal, so "
                               f"{'it was' if len(backup.unreadable) == 1 else 'they were'} not written back")
            return
        self.state = WRITTEN_BACK
        self.reason = (f"{erased}; rakflash had read the keys over AT before, while the application answered, "
                       f"wrote them back over AT once the new firmware ran and read each back the same{who} "
                       f"({', '.join(backup.settings)}; other settings — ADR, data rate, TX power… — were not "
                       f"read and start from the firmware's defaults)")
        self.copy.forget(backup)
        s.emit(Keys("after", WRITTEN_BACK, self._shown(backup)))

    def _lost_over_at(self, why: str) -> None:
        from ...events import Keys
        s = self.session
        self.state = LOST
        copy = self.kept_in
        port = s.link.port_name if s.link is not None else "PORT"
        self.reason = why + (f": the copy is in {copy}; 'rakflash keys restore {copy} --port {port} --force' "
                             f"writes it back once the module runs its application (--force: the erase may "
                             f"have reset the DevEUI that restore compares with the copy's)" if copy else
                             ": no copy could be kept on this computer")
        s.warn("keys-lost", self.reason)
        s.emit(Keys("after", LOST, self._shown(self.over_at)))

    @property
    def _plan(self) -> KeysPlan | None:
        return self.session.plan.keys

    def _where(self) -> str:
        kp = self._plan
        return _regions_words(kp.regions) if kp else "the keys"

    def _read(self, expect: Any = None):
        from ..keys import read_from_memory
        known = {int(r["address"], 16): bytes.fromhex(r["hex"]) for r in expect.raw} if expect else {}
        s = self.session
        return read_from_memory(lambda a, n: self.method.read_memory(s, a, n, known.get(a)),
                                s.plan.module, s.plan.method)

    def _shown(self, backup: Any) -> dict[str, Any]:
        shown = backup.shown(self.session.options.show_keys)
        shown["regions"] = [{"region": r["region"], "address": r["address"], "size": len(r["hex"]) // 2}
                            for r in backup.raw]
        shown["kept_in"] = self.kept_in
        return shown

    def read_before(self) -> None:
        from ...events import Keys
        from ..keys import keep_copy
        s, kp = self.session, self._plan
        if kp is None or not kp.read:
            self.state = NOT_READ
            self.reason = kp.says if kp else "no plan for the keys was made"
            return
        module = s.plan.module
        if s.erased_whole and self.over_at is not None:
            s.emit(Note(f"{s.erased_whole}, {self._where()} included: rakflash writes back the keys it read "
                        f"over AT once the new firmware runs"))
            return
        if s.erased_whole:
            flash = module.mcu.flash
            if all(flash.start <= a < flash.end for _, a, _ in kp.regions):
                self.state = LOST
                self.reason = (f"{s.erased_whole}, and rakflash could not read {self._where()} before (the "
                               f"chip refused every read while protected"
                               + (f"; {self.no_app}, so they could not be read over AT either" if self.no_app
                                  else "") +
                               "): the keys and settings it held are gone. Set them again from a backup "
                               "('rakflash keys restore FILE --port PORT' once the module runs) or from your "
                               "network server")
            else:
                self.state = NOT_READ
                self.reason = (f"{s.erased_whole}; rakflash could not read {self._where()} before (the chip "
                               f"refused every read while protected), so it can't say whether the keys there "
                               f"are still the ones the module had")
            s.warn("keys-not-read", self.reason)
            return
        s.emit(Phase("settings", f"reading {self._where()} before anything is written"))
        self.before = self._read()
        if self.over_at is not None:
            # The chip was not protected: its memory is read and checked, so the copy read over AT
            # first goes (before this one is kept: the kept-settings store holds one module's values once).
            self.copy.forget(self.over_at)
            self.over_at = None
        self.copy = keep_copy(self.before)
        s.emit(Keys("before", None, self._shown(self.before)))
        if self.copy.path is None:
            s.warn("keys-copy-not-kept", f"no copy of what was read could be kept on this computer "
                   f"({self.copy.why_not}); rakflash still checks it after the write")

    def check_after(self) -> None:
        from ...events import Keys
        s = self.session
        before = self.before
        if before is None:
            return
        kp = self._plan
        assert kp is not None          # read_before read only with a plan
        s.emit(Phase("settings-check", f"reading {self._where()} again"))
        after = self._read(before)
        changed = _changed_regions(before, after)
        blank = [r for r in changed if set(bytes.fromhex(r["hex"])) <= {0xFF}]
        redo = [r for r in changed if r not in blank]
        untouched = ""
        if blank:
            untouched = (f"; {_regions_words(kp.regions, [r['region'] for r in blank])} held nothing "
                         f"before (erased) and {'holds' if len(blank) == 1 else 'hold'} what the image "
                         f"wrote there now")
        who = (f", DevEUI {before.dev_eui}" if before.dev_eui else "")
        if not redo:
            self.state = KEPT
            self.reason = (f"read before the write and again after it: {self._where()} "
                           f"{'is' if len(kp.regions) == 1 else 'are'} unchanged{who}{untouched}")
            self.copy.forget(before)
            s.emit(Keys("after", KEPT, self._shown(after)))
            return
        names = [r["region"] for r in redo]
        said = _regions_words(kp.regions, names)
        covered = all(n in kp.overwritten for n in names)
        why = ("the image covers " + ("it" if len(names) == 1 else "them") if covered else
               s.erased_whole or "something changed it during the recovery, though the image does not cover it")
        s.warn("keys-overwritten", f"{said} no longer {'holds' if len(names) == 1 else 'hold'} what was read "
               f"before the write ({why}): rakflash writes back what it read", regions=names)
        s.emit(Phase("settings-write", f"writing back {said}"))
        for r in redo:
            self._write_back(int(r["address"], 16), bytes.fromhex(r["hex"]))
        again = self._read(before)
        still = [r["region"] for r in _changed_regions(before, again) if r["region"] in names]
        if not still:
            self.state = WRITTEN_BACK
            self.reason = (f"{said} had been overwritten ({why}); rakflash wrote back what it read before "
                           f"the write and read it back the same{who}{untouched}")
            self.copy.forget(before)
        else:
            self.state = LOST
            self.reason = (f"{said} had been overwritten ({why}); rakflash wrote back what it read before, "
                           f"but {_regions_words(kp.regions, still)} reads back differently"
                           + (f": the copy is in {self.kept_in}" if self.kept_in else ""))
            s.warn("keys-lost", self.reason)
        s.emit(Keys("after", self.state, self._shown(again)))

    def _write_back(self, address: int, data: bytes) -> None:
        """Write ``data`` back at ``address``: in flash, the whole pages it lies in, as the chip
        holds them now with ``data`` put in its place (so bytes of the image in those pages stay)."""
        s = self.session
        mcu = s.plan.module.mcu
        if not mcu.flash.start <= address < mcu.flash.end:
            self.method.write_memory(s, address, data)
            return
        page, base = mcu.page_size, mcu.flash.start
        lo = address - (address - base) % page
        hi = address + len(data) + (-(address + len(data) - base) % page)
        pages = bytearray(self.method.read_memory(s, lo, hi - lo))
        pages[address - lo:address - lo + len(data)] = data
        self.method.write_memory(s, lo, bytes(pages))

    def say_where_the_copy_is(self, exc: RakflashError) -> None:
        """A recovery that failed after the keys were read: where the copy is (it stays)."""
        read = self.before if self.before is not None else self.over_at
        if self.kept_in and "keys_kept_in" not in exc.details:
            exc.details["keys_kept_in"] = self.kept_in
            what = "the keys read before" if read is not None and read.decoded \
                else "a raw copy of the settings read before"
            exc.hint = (f"{exc.hint or ''} {what[0].upper()}{what[1:]} are kept in {self.kept_in}"
                        + (" ('rakflash keys restore' writes them back once the module runs)."
                           if read is not None and read.decoded else ".")).strip()


def _changed_regions(before: Any, after: Any) -> list[dict[str, str]]:
    """The raw regions ``before`` holds that ``after`` does not hold byte for byte."""
    now = {r["region"]: r["hex"] for r in after.raw}
    return [r for r in before.raw if now.get(r["region"]) != r["hex"]]
