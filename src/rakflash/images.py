"""Firmware images: load ``.bin`` / Intel ``.hex`` / Apollo3 OTA blobs, and say what they are.

Loading gives an :class:`Image`: segments of bytes at absolute addresses.
:func:`analyse` then answers what a person wants to know before flashing:
which MCU and module the image targets (from its vector table), which regions
of that module's flash map it covers, and which version strings it carries.

Intel HEX parsing is done by the ``intelhex`` library (strict record checksums,
extended segment/linear address records, start records, typed errors with line
numbers). On top of it we only add what it does not check: a missing end-of-file
record, which is how a truncated download usually looks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import intelhex

from . import catalog as _catalog
from . import esp_image
from .catalog import Catalog, Mcu, Module
from .errors import ImageEmpty, ImageFormatError, ImageTargetError, NotFirmware
from .firmware_file import max_file_size, read_file, short_path
from .vector_table import vector_at

if TYPE_CHECKING:
    from .apollo3_ota import OtaHeader
    from .apollo3_wired import Block
    from .dfu_package import DfuPackage


@dataclass(frozen=True)
class Segment:
    start: int
    data: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Image:
    """Bytes at addresses, and where they came from."""

    path: str
    format: str                      # "bin", "hex" or "apollo3-ota"
    segments: list[Segment]
    sha256: str
    file_size: int
    start_address: int | None = None  # from a hex start record
    base_source: str = "file"         # for .bin: "--address", "catalog" (the application base),
                                      # "bootloader" (its reset vector points there), or "default"
    ota_header: OtaHeader | None = None      # an Apollo3 OTA blob's header
    package: DfuPackage | None = None        # an nRF52 DFU package (.zip)
    wired_blocks: list[Block] | None = None  # an Apollo3 wired-update blob's blocks
    parts: tuple[Image, ...] = ()            # the files a combined image was made of (bootloader, --app)
    esp: esp_image.EspFile | None = None     # an ESP32 file: its images and partition table (esp_image.py)

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def low(self) -> int:
        return self.segments[0].start

    @property
    def high(self) -> int:
        return self.segments[-1].end

    def read(self, addr: int, size: int, fill: int = 0xFF) -> bytes:
        """``size`` bytes from ``addr``; gaps are ``fill``."""
        out = bytearray([fill]) * size
        for s in self.segments:
            lo, hi = max(addr, s.start), min(addr + size, s.end)
            if lo < hi:
                out[lo - addr:hi - addr] = s.data[lo - s.start:hi - s.start]
        return bytes(out)

    def covered(self, start: int, end: int) -> int:
        """How many bytes of [start, end) the image holds."""
        return sum(max(0, min(end, s.end) - max(start, s.start)) for s in self.segments)

    def slice(self, start: int, end: int) -> Image:
        """The part of the image inside [start, end), as a new image."""
        segs = []
        for s in self.segments:
            lo, hi = max(start, s.start), min(end, s.end)
            if lo < hi:
                segs.append(Segment(lo, s.data[lo - s.start:hi - s.start]))
        return Image(self.path, self.format, segs, self.sha256, self.file_size,
                     self.start_address, self.base_source)

    def contiguous(self, start: int, end: int | None = None, fill: int = 0xFF) -> bytes:
        """The bytes from ``start`` to the image's last byte below ``end``, gaps filled."""
        top = min(self.high, end) if end is not None else self.high
        return self.read(start, max(0, top - start), fill)


# ------------------------------------------------------------------ loading

def load(path: str | Path, *, address: int | None = None,
         module: Module | None = None, cat: Catalog | None = None) -> Image:
    """Load a firmware file. A ``.bin`` is placed at ``address``, else at the
    application base of the module it targets (``module`` or detected)."""
    cat = cat or _catalog.load()
    raw = read_file(path, max_file_size(cat))
    if not raw:
        raise ImageEmpty(f"{short_path(path)} is empty")
    digest = hashlib.sha256(raw).hexdigest()
    if raw[:4] == b"PK\x03\x04" or Path(path).suffix.lower() == ".zip":
        return _load_package(str(path), raw, module, cat)
    if _looks_like_hex(Path(path), raw):
        return _load_hex(str(path), raw, digest)
    esp = esp_image.place(str(path), raw, address)   # ESP32 images, partition tables, merged binaries
    if esp is not None:
        return Image(str(path), esp_image.FORMATS[esp.kind], [Segment(esp.base, raw)], digest, len(raw),
                     base_source="--address" if esp.base_source == "--address" else "esp", esp=esp)
    return _load_bin(str(path), raw, digest, address, module, cat)


def _load_package(path: str, raw: bytes, module: Module | None, cat: Catalog) -> Image:
    """An nRF52 DFU package: its images placed where they go on the module its family serves
    (Secure DFU: RAK4631-R, legacy: the Arduino RAK4631), so plans and regions work as for a .hex."""
    from . import dfu_package
    pkg = dfu_package.load(path, raw=raw)
    if module is None:
        module = cat.module("rak4631-r" if pkg.family == dfu_package.SECURE else "rak4631-arduino")
    where = {"application": module.app.start,
             "bootloader": module.region("bootloader").start if module.has_region("bootloader") else 0,
             "softdevice": 0x1000, "softdevice_bootloader": 0x1000}
    segs = sorted((Segment(where[i.kind], i.firmware) for i in pkg.images), key=lambda s: s.start)
    return Image(path, "dfu-package", segs, pkg.sha256, pkg.file_size, base_source="package",
                 package=pkg)


def _looks_like_hex(p: Path, raw: bytes) -> bool:
    if p.suffix.lower() in (".hex", ".ihex", ".ihx"):
        return True
    return raw.lstrip()[:1] == b":" and all(32 <= b < 127 or b in (9, 10, 13) for b in raw[:4096])


def _load_hex(path: str, raw: bytes, digest: str) -> Image:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ImageFormatError(f"{path} is not an Intel HEX file: it contains non-text bytes") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ImageEmpty(f"{path} is empty")
    ih = intelhex.IntelHex()
    try:
        ih.loadhex(io.StringIO(text))
    except intelhex.IntelHexError as exc:
        line = getattr(exc, "line", None) or (getattr(exc, "kw", {}) or {}).get("line")
        if line == len(lines) and not text.endswith(("\n", "\r")):
            raise ImageFormatError(f"{path} is truncated: it ends inside the record at line {line}",
                                   hint="The download was cut short: download the firmware again.") from None
        raise ImageFormatError(f"{path}: {exc}") from None
    if lines[-1].upper() != ":00000001FF":
        raise ImageFormatError(f"{path} is truncated: it has no end-of-file record "
                               f"(last record at line {len(lines)})",
                               hint="The download was cut short: download the firmware again.")
    segs = [Segment(lo, bytes(ih.tobinarray(start=lo, end=hi - 1))) for lo, hi in ih.segments()]
    if not segs:
        raise ImageEmpty(f"{path} holds no data records")
    start = None
    if ih.start_addr:
        sa = ih.start_addr
        start = sa["EIP"] if "EIP" in sa else (sa["CS"] << 4) + sa["IP"]
    return Image(path, "hex", segs, digest, len(raw), start_address=start)


def _load_bin(path: str, raw: bytes, digest: str, address: int | None,
              module: Module | None, cat: Catalog) -> Image:
    from . import apollo3_ota, apollo3_wired
    if address is None and apollo3_wired.looks_like_blob(raw):
        return _load_wired_blob(path, raw, digest)
    header, payload, fmt = None, raw, "bin"
    if apollo3_ota.looks_like_blob(raw):
        header, payload = apollo3_ota.parse_blob(raw)
        fmt = "apollo3-ota"
    if address is not None:
        base, source = address, "--address"
    elif header is not None:
        base, source = header.load_address, "blob header"
    else:
        target = module or _guess_module(vector_at(payload, 0), cat)
        if target is None:
            base, source = 0, "default"
        else:
            base = _bin_base(target, vector_at(payload, 0))
            source = "catalog" if base == target.app.start else "bootloader"
    img = Image(path, fmt, [Segment(base, payload)], digest, len(raw), base_source=source)
    img.ota_header = header
    return img


def _load_wired_blob(path: str, raw: bytes, digest: str) -> Image:
    """An Apollo3 secure-bootloader wired-update blob (``create_cust_wireupdate_blob.py``):
    its segments are where its bytes end up — a block written in place at its load
    address, a block installed by OTA at its Ambiq image's install address."""
    from . import apollo3_wired
    blocks = apollo3_wired.parse_blocks(raw, source=path)
    segs = []
    for n, block in enumerate(blocks, 1):
        h = block.header
        if h.image_type == apollo3_wired.IMAGETYPE_INFO0_NOOTA:
            continue                     # INFO0, not flash
        if h.ota:
            img = apollo3_wired.parse_image(block.data)
            if img is None:
                raise ImageFormatError(f"{path}: block {n} asks for an OTA install but holds no "
                                       "Ambiq image")
            if not img.crc_ok:
                raise ImageFormatError(f"{path}: the image in block {n} fails its CRC check: the "
                                       "file is damaged")
            segs.append(Segment(img.install_address, img.code))
        else:
            segs.append(Segment(h.load_address, block.data[:h.size]))
    if not segs:
        raise ImageFormatError(f"{path} holds only INFO0 blocks, no firmware",
                               hint="rakflash writes INFO0 with 'rakflash info0 write FILE'.")
    segs.sort(key=lambda s: s.start)
    image = Image(path, "apollo3-wired", segs, digest, len(raw), base_source="blob header")
    image.wired_blocks = blocks
    return image


def _bin_base(module: Module, vector: tuple[int, int] | None) -> int:
    """Application base, unless the reset vector says the image starts with the bootloader."""
    if vector and module.has_region("bootloader"):
        boot = module.region("bootloader")
        if vector[1] in boot and vector[1] not in module.app:
            return min(r.start for r in module.regions if r.start in module.mcu.flash)
    return module.app.start


# ------------------------------------------------------------------ analysis

def mcus_for_vector(vector: tuple[int, int] | None, cat: Catalog) -> list[Mcu]:
    """MCUs whose RAM holds the initial SP and whose flash holds the reset vector,
    best first: the MCU whose RAM ends exactly at the SP, then the smallest RAM."""
    if vector is None:
        return []
    sp, reset = vector
    fits = [m for m in cat.mcus.values()
            if m.ram.start < sp <= m.ram.end and reset in m.flash]
    return sorted(fits, key=lambda m: (m.ram.end != sp, m.ram.size))


# Files people pick by mistake, told by their first bytes, so a refusal can say what the file
# is: JPEG (ITU-T T.81 B.1.1.3: the SOI marker FF D8, then a marker segment FF xx), PNG (its
# 8-byte signature, RFC 2083 3.1), ELF (e_ident starts 7F 'E' 'L' 'F', System V ABI), PDF
# ('%PDF-', ISO 32000-1 7.5.2), gzip (1F 8B, RFC 1952 2.3.1), and an Apollo3 INFO0 dump (its
# valid signature words, apollo3_info0.SIGNATURE_VALID).
_FILE_TYPES = (
    (b"\xff\xd8\xff", "a JPEG image", ""),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", ""),
    (b"\x7fELF", "an ELF file", ": the linker's output, from which the firmware .hex or .bin is made "
                               "(arm-none-eabi-objcopy -O ihex)"),
    (b"%PDF-", "a PDF document", ""),
    (b"\x1f\x8b", "a gzip archive", ""),
    (struct.pack("<4I", 0x48EAAD88, 0xC9705737, 0x0A6B8458, 0xE41A9D74), "an Apollo3 INFO0 dump",
     ": INFO0's signature words; it holds the secure bootloader's settings, not flash contents "
     "('rakflash info0 write FILE' writes it)"),
)


def _what_file(data: bytes) -> str | None:
    """What a file that is not firmware is, when its first bytes tell."""
    for magic, what, then in _FILE_TYPES:
        if data.startswith(magic):
            return f"{what} (it starts {data[:4].hex(' ').upper()}){then}"
    head = data[:512]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        if b"<html" in head.lower() or b"<!doctype html" in head.lower():
            return "an HTML page (a web page saved instead of the firmware file)"
        return "text, not a binary image"
    return None


def not_firmware(image: Image, cat: Catalog | None = None) -> str | None:
    """Why ``image`` is not firmware for any chip in the catalog; None when it looks like firmware.

    Every chip rakflash writes is a Cortex-M, and Cortex-M firmware starts with its vector
    table (ARMv7-M Architecture Reference Manual B1.5.3 "The vector table", ARMv6-M B1.5.3):
    word 0 is the initial main stack pointer, word 1 the reset handler's address with bit 0
    set, as every vector on these Thumb-only cores must have (a clear bit 0 faults at reset).
    So the image's first bytes must hold a stack pointer inside some catalog MCU's RAM and an
    odd reset address inside that MCU's flash (:func:`mcus_for_vector`); whether that MCU is
    the module's, and whether the reset handler lies inside the image, :func:`analyse` says.
    The start of the image is its first segment; for a DFU package, each image it carries
    (its own structure — manifest, init packet, CRC — is checked by its reader).
    """
    cat = cat or _catalog.load()
    if image.esp is not None:
        return None                   # an ESP image (esp_image.py): firmware, but no Cortex-M's
    starts = image.segments if image.format == "dfu-package" else image.segments[:1]
    for seg in starts:
        head = seg.data[:8]
        known = _what_file(seg.data)
        if known:
            return f"it is {known}"
        if len(head) < 8:
            return (f"it holds {len(head)} byte{'s' if len(head) != 1 else ''} at "
                    f"{seg.start:#010x}: too few for the vector table firmware starts with")
        sp, reset = struct.unpack("<II", head)
        shown = f"its first two words (SP {sp:#010x}, reset {reset:#010x})"
        if sp in (0, 0xFFFFFFFF) or reset in (0, 0xFFFFFFFF):
            return (f"{shown} are {'erased flash' if 0xFFFFFFFF in (sp, reset) else 'zero'}, "
                    f"not the vector table firmware starts with")
        if not reset & 1:
            return (f"{shown} are not a Cortex-M vector table: that reset address is even, and "
                    f"a Cortex-M reset handler's is odd (Thumb code)")
        if not mcus_for_vector((sp, reset & ~1), cat):
            return (f"{shown} are not the vector table of any chip rakflash knows: the stack "
                    f"pointer must lie in the chip's RAM and the reset handler in its flash")
    return None


def check_firmware(image: Image, module: Module | None = None, *, cat: Catalog | None = None,
                   reason: str | None = None) -> None:
    """:class:`~rakflash.errors.NotFirmware` when ``image`` is not firmware (:func:`not_firmware`);
    ``module``, when known, is named in the next step."""
    reason = reason or not_firmware(image, cat)
    if reason:
        raise NotFirmware(f"{short_path(image.path)} does not look like firmware: {reason}",
                          hint=f"Use the firmware built for {module.name if module else 'the module'} "
                               f"(its .hex, .bin or DFU .zip); 'rakflash inspect FILE' says what a "
                               f"file holds.")


def application_start_problem(image: Image, module: Module) -> str | None:
    """Why what ``image`` writes at ``module``'s application base can't be an application: None
    when it writes nothing there, erased flash (a dump without an application), or a vector
    table of the module's MCU whose reset handler lies in the application region (the
    bootloader jumps through it: see :func:`not_firmware`)."""
    app = module.app
    if image.covered(app.start, app.start + 8) < 8:
        return None
    head = image.read(app.start, 8)
    vector = vector_at(head, 0)
    if head == b"\xff" * 8 or (vector is not None and module.mcu.ram.start < vector[0] <= module.mcu.ram.end
                                and vector[1] in app):
        return None
    return (f"what it puts at {module.name}'s application base {app.start:#010x} "
            f"({head.hex(' ').upper()}) is no {module.name} application's vector table")


def _guess_module(vector: tuple[int, int] | None, cat: Catalog) -> Module | None:
    for mcu in mcus_for_vector(vector, cat):
        mods = cat.modules_with_mcu(mcu)
        if mods:
            return mods[0]
    return None


@dataclass
class RegionCover:
    name: str
    start: int
    end: int
    bytes: int

    @property
    def full(self) -> bool:
        return self.bytes == self.end - self.start


@dataclass
class ImageInfo:
    """What an image is, as far as its bytes and the catalog can tell."""

    image: Image
    mcu: Mcu | None = None
    module: Module | None = None
    vector: tuple[int, int] | None = None
    regions: list[RegionCover] = field(default_factory=list)
    outside: int = 0                     # bytes outside every known region
    app_version: str | None = None
    bootloader_version: str | None = None
    includes_bootloader: bool = False
    includes_app: bool = False
    not_firmware: str | None = None      # why the file is not firmware (see not_firmware())
    esp: esp_image.EspFile | None = None  # an ESP32 file's parts (_analyse_esp)

    def to_dict(self) -> dict[str, Any]:
        img = self.image
        d = {
            "path": img.path, "format": img.format, "file_size": img.file_size, "sha256": img.sha256,
            "size": img.size,
            "segments": [{"start": s.start, "end": s.end, "size": s.size} for s in img.segments],
            "start_address": img.start_address, "base_source": img.base_source,
            "mcu": self.mcu.name if self.mcu else None,
            "module": self.module.name if self.module else None,
            "family": self.module.family if self.module else None,
            "vector": {"sp": self.vector[0], "reset": self.vector[1]} if self.vector else None,
            "regions": [{"name": r.name, "start": r.start, "end": r.end, "bytes": r.bytes,
                         "full": r.full} for r in self.regions],
            "outside_regions": self.outside,
            "app_version": self.app_version, "bootloader_version": self.bootloader_version,
            "includes_bootloader": self.includes_bootloader, "includes_app": self.includes_app,
            "not_firmware": self.not_firmware,
        }
        if img.ota_header is not None:
            d["ota_header"] = dataclasses.asdict(img.ota_header)
        if img.package is not None:
            d["package"] = img.package.to_dict()
        if img.wired_blocks:
            d["wired_blocks"] = [{"load_address": b.header.load_address, "size": b.header.size,
                                  "image_type": b.header.type_name, "ota": b.header.ota}
                                 for b in img.wired_blocks]
        if self.esp is not None:
            d["esp"] = self.esp.to_dict()
            d["esp_problems"] = self.esp.problems(self.mcu.flash.size if self.mcu else None)
        return d


def analyse(image: Image, *, module: Module | None = None, cat: Catalog | None = None) -> ImageInfo:
    """Tell the MCU, module, regions covered and version strings of ``image``.

    With ``module`` given, the image must fit that module's MCU, else
    :class:`~rakflash.errors.ImageTargetError` — :class:`~rakflash.errors.NotFirmware` for a
    file that is not firmware at all. This is the check every command that writes goes
    through before it touches the device (the plans of ``flash``, ``recover`` and
    ``convert-to-rui3``, on the command line and the web page). Without ``module``, a file
    that is not firmware is told in :attr:`ImageInfo.not_firmware`.
    """
    cat = cat or _catalog.load()
    if image.esp is not None or (module is not None and module.esp is not None):
        return _analyse_esp(image, module, cat)      # ESP32 images are told by their own headers
    info = ImageInfo(image)
    info.not_firmware = not_firmware(image, cat)
    if module is not None:
        check_firmware(image, module, cat=cat, reason=info.not_firmware)
    # The vector table that decides the target: the first one in the image.
    first = image.segments[0]
    info.vector = vector_at(first.data, 0)
    candidates = mcus_for_vector(info.vector, cat)
    if module is not None:
        best = candidates[0] if candidates else None
        exact = best is not None and info.vector is not None and best.ram.end == info.vector[0]
        if exact and best is not None and best is not module.mcu:
            candidates = [best]     # the stack top fits another MCU's RAM exactly
        if info.vector is not None and candidates and module.mcu not in candidates:
            raise ImageTargetError(
                f"{image.path} is built for {candidates[0].name}, but {module.name} has "
                f"{module.mcu.name}", hint=f"Use the firmware built for {module.name}.")
        if info.vector is not None and not image.low <= info.vector[1] < image.high:
            raise ImageTargetError(
                f"{image.path} placed at {image.low:#010x} has its reset handler at "
                f"{info.vector[1]:#010x}, outside the image: it is built for another address "
                f"or module than {module.name}",
                hint=f"Use the firmware built for {module.name}, or give the right --address.")
        if image.low not in module.mcu.flash and image.format != "apollo3-ota":
            raise ImageTargetError(
                f"{image.path} starts at {image.low:#010x}, outside {module.name}'s flash "
                f"({module.mcu.flash.start:#010x}-{module.mcu.flash.end:#010x})")
        info.module, info.mcu = module, module.mcu
    else:
        info.module = _module_for(image, candidates, cat)
        info.mcu = info.module.mcu if info.module else (candidates[0] if candidates else None)
    if info.module is None:
        for m in cat.modules.values():  # still report version strings of an unknown image
            data = b"".join(s.data for s in image.segments)
            info.app_version = info.app_version or m.find_app_version(data)
        return info
    mod = info.module
    inside = 0
    for r in sorted(mod.regions, key=lambda r: r.start):
        n = image.covered(r.start, r.end)
        if n:
            info.regions.append(RegionCover(r.name, r.start, r.end, n))
            inside += n
    info.outside = image.size - inside
    names = {r.name for r in info.regions}
    info.includes_bootloader = "bootloader" in names
    info.includes_app = "application" in names
    if mod.has_region("bootloader-version") and "bootloader-version" in names:
        r = mod.region("bootloader-version")
        info.bootloader_version = mod.find_bootloader_version(image.read(r.start, r.size, 0))
    if info.bootloader_version is None and info.includes_bootloader:
        r = mod.region("bootloader")
        info.bootloader_version = mod.find_bootloader_version(image.read(r.start, r.size, 0))
    if info.includes_app:
        app = mod.app
        info.app_version = mod.find_app_version(image.read(app.start, app.size, 0))
    if module is None:
        # The chip's first module stands for every board with that chip and flash map; the
        # version string says which board RUI3 built the image for (RAK3172-SiP, RAK3401, …).
        named = cat.by_image_name(info.app_version)
        if named is not None and named.same_flash_as(mod):
            info.module = named
    return info


def _analyse_esp(image: Image, module: Module | None, cat: Catalog) -> ImageInfo:
    """An ESP file (esp_image.py): its chip from its image header; for an ESP ``module``, a file
    that is no ESP file at all is :class:`NotFirmware`."""
    esp = image.esp
    if esp is None:
        assert module is not None
        data = image.segments[0].data if image.segments else b""
        raise esp_image.not_esp_firmware(image.path, data, module, _what_file(data))
    info = ImageInfo(image, esp=esp)
    info.module = esp_image.target(esp, image.path, module, cat)
    info.mcu = info.module.mcu if info.module else None
    if info.module is not None:
        inside = 0
        for r in sorted(info.module.regions, key=lambda r: r.start):
            n = image.covered(r.start, r.end)
            if n:
                info.regions.append(RegionCover(r.name, r.start, r.end, n))
                inside += n
        info.outside = image.size - inside
    app, boot = esp.app, esp.bootloader
    info.includes_app, info.includes_bootloader = app is not None, boot is not None
    info.app_version = app.version if app else None
    info.bootloader_version = boot.version if boot else None
    return info


def target_module(image: Image) -> Module | None:
    """The module an image's vector table points to, if it points to one."""
    try:
        return analyse(image).module
    except ImageTargetError:
        return None


def _module_for(image: Image, candidates: list[Mcu], cat: Catalog) -> Module | None:
    """Among modules with a candidate MCU, the one whose flash map places the image best."""
    best, best_score = None, -1
    for mcu in candidates:
        for mod in cat.modules_with_mcu(mcu):
            starts = {r.start for r in mod.regions}
            score = (image.low in starts) * 2 + (image.low in mod.mcu.flash)
            if score > best_score:
                best, best_score = mod, score
    return best
