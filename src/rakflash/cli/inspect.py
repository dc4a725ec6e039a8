"""``rakflash inspect FILE``: what a firmware file is."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from .. import images
from ..apollo3_ota import OtaHeader
from ..vector_table import vector_at
from .app import main
from .options import IntParam, load_image, lookup_module, module_option
from .output import emit_json, out, read_only_command, reports_errors


@main.command()
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--address", type=IntParam(), help="Base address of a .bin (default: the target module's application base).")
@module_option()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@reports_errors
def inspect(file: str, address: int | None, module_name: str | None, as_json: bool) -> None:
    """Say what a firmware file is: format, segments, target, regions, versions."""
    read_only_command()        # '| head' ends it quietly: it changes nothing
    module = lookup_module(module_name)
    img = load_image(file, address, module)
    info = images.analyse(img, module=module)
    if as_json:
        emit_json(info.to_dict())
        return
    if getattr(info, "esp", None) is not None:
        _print_esp(info)
        return
    if img.package is not None:
        _print_package(img.package)
        out.print()
    _print_inspect(info)


def _print_esp(info) -> None:
    """An ESP file (esp_image.py): what it is, where each part goes, what each part says."""
    img, esp = info.image, info.esp
    kinds = {"app": "ESP-IDF app image", "bootloader": "ESP-IDF second-stage bootloader image",
             "partition-table": "ESP-IDF partition table", "merged": "merged binary (esptool merge-bin)"}
    out.print(f"file      {img.path}")
    out.print(f"format    {kinds[esp.kind]}, {img.file_size:,} bytes")
    out.print(f"sha256    {img.sha256}")
    how = "given with --address" if esp.base_source == "--address" else esp.base_source
    out.print(f"base      {esp.base:#010x} ({how})")
    if info.module:
        out.print(f"target    {info.module.name} ({esp.chip}, from the image header's chip id)")
    elif esp.chip:
        out.print(f"target    {esp.chip}, which no RAK module in the catalog has")
    else:
        out.print("target    any ESP chip (a partition table says no chip)")
    for offset, part in esp.images:
        size = esp_image_flash_size(part)
        out.print(f"{part.kind:<11}{offset:#010x}: {part.length:,} bytes for the {part.chip}, "
                  f"{len(part.segments)} segments, entry {part.entry:#010x}, flash "
                  f"{esp_image_mode(part)} {size}, checksum {'ok' if part.checksum_ok else 'WRONG'}"
                  + ("" if part.sha256_ok is None else f", SHA-256 {'ok' if part.sha256_ok else 'WRONG'}"))
        if part.app_desc:
            d = part.app_desc
            out.print(f"           app {d['project_name']!r} version {d['version']}, ESP-IDF {d['idf_ver']}, "
                      f"built {d['date']} {d['time']}")
        if part.bootloader_desc:
            out.print(f"           bootloader of ESP-IDF {part.bootloader_desc['idf_ver']}")
    if esp.table is not None:
        offset, table = esp.table
        out.print(f"partitions at {offset:#010x}" + ("" if table.md5_ok is None else
                                                   f" (MD5 {'ok' if table.md5_ok else 'WRONG'})") + ":")
        for p in table.partitions:
            out.print(f"  {p.label:<16}{p.type_name}/{p.subtype_name:<10}{p.offset:#010x}  "
                      f"{p.size:>10,} bytes")
    problems = esp.problems(info.mcu.flash.size if info.mcu else None)
    for problem in problems:
        out.print(f"[red]problem[/]   {escape(problem)}")
    out.print(f"versions  application: {info.app_version or '-'}; bootloader: {info.bootloader_version or '-'}")


def esp_image_flash_size(part) -> str:
    return part.flash_size or "?"


def esp_image_mode(part) -> str:
    from ..esp_image import FLASH_MODES
    return FLASH_MODES.get(part.flash_mode, str(part.flash_mode))


def _print_package(pkg) -> None:
    """A DFU package: its family, each image, and what its init packet requires."""
    out.print(f"package   {pkg.path}: {pkg.family_name}")
    for i in pkg.images:
        init = i.init
        out.print(f"  {i.kind:<12}{i.bin_file}: {len(i.firmware):,} bytes, CRC-32 {i.crc32:#010x}; "
                  f"init packet {i.dat_file} ({len(i.init_bytes)} bytes)")
        needs = [f"type {init.fw_type}",
                 f"firmware version {init.fw_version if init.fw_version is not None else 'not set'}"]
        if init.hw_version is not None:
            needs.append(f"hardware version {init.hw_version}")
        if init.device_type is not None:
            needs.append(f"device type {init.device_type:#06x}")
        if init.sd_req:
            needs.append("SoftDevice " + " or ".join(f"{x:#06x}" for x in init.sd_req))
        if init.hash_type:
            needs.append(f"hash {init.hash_type}")
        if init.crc16 is not None:
            needs.append(f"CRC-16 {init.crc16:#06x}")
        needs.append(f"signed ({init.signature_type})" if init.signed else "not signed")
        out.print(f"  {'':<12}requires: {', '.join(needs)}")
    linked = pkg.linked_elsewhere()
    if linked is not None:
        out.print(f"[bold red]wrong base:[/] {escape(linked.describe())}; 'rakflash flash' refuses it")
        out.print(f"  hint: {escape(linked.next_step())}")


def _print_inspect(info: images.ImageInfo) -> None:
    img = info.image
    names = {"bin": "raw binary", "hex": "Intel HEX", "apollo3-ota": "Apollo3 OTA blob (48-byte header + application)",
             "dfu-package": "nRF52 DFU package (.zip)",
             "apollo3-wired": "Apollo3 secure-bootloader wired-update blob"}
    out.print(f"file      {img.path}")
    out.print(f"format    {names.get(img.format, img.format)}, {img.file_size:,} bytes on disk, {img.size:,} bytes of data")
    out.print(f"sha256    {img.sha256}")
    if img.format != "hex":
        how = {"--address": "given with --address",
               "catalog": f"{info.module.name}'s application base, from the catalog" if info.module else "",
               "bootloader": _bootloader_base(info),
               "blob header": "the blob header's load address",
               "package": "where the package's bootloader family puts it",
               "default": "not firmware: nothing to place" if info.not_firmware else
                          "unknown target: assumed 0; give --address"}[img.base_source]
        out.print(f"base      {img.low:#010x} ({how})")
    if img.start_address is not None:
        out.print(f"start     {img.start_address:#010x} (start address record)")
    if info.not_firmware:
        out.print(f"[red]target    none: this does not look like firmware: {info.not_firmware}[/]",
                  highlight=False)
        out.print("          rakflash won't write it to any module; pick the firmware file itself "
                  "(the .hex, .bin or DFU .zip built for the module)")
    elif info.module:
        vec = f"SP {info.vector[0]:#010x}, reset {info.vector[1]:#010x}" if info.vector else "no vector table"
        out.print(f"target    {info.module.name} ({info.module.mcu.name}) — from the vector table: {vec}")
    elif info.mcu:
        out.print(f"target    {info.mcu.name}, no module in the catalog")
    else:
        out.print("target    unknown: no Cortex-M vector table of a known MCU at the start of the image")
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("segment start")
    table.add_column("end")
    table.add_column("size", justify="right")
    for s in img.segments:
        table.add_row(f"{s.start:#010x}", f"{s.end:#010x}", f"{s.size:,}")
    out.print(table)
    if info.regions:
        rt = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        rt.add_column("region")
        rt.add_column("range")
        rt.add_column("covered", justify="right")
        for r in info.regions:
            rt.add_row(r.name, f"{r.start:#010x}-{r.end:#010x}", f"{r.bytes:,} of {r.end - r.start:,}")
        out.print(rt)
        if info.outside:
            out.print(f"[yellow]{info.outside:,} bytes lie outside the module's known regions[/]")
    out.print(f"versions  application: {info.app_version or '-'}; bootloader: {info.bootloader_version or '-'}")
    if isinstance(img.ota_header, OtaHeader):     # (the only kind there is)
        h = img.ota_header
        out.print(f"ota       load {h.load_address:#x}, length {h.length:,}, crc {h.crc:#010x} (checked), "
                  f"version {h.version}, binary type {h.binary_type}, storage type {h.storage_type}, "
                  f"{'encrypted' if h.encrypted else 'not encrypted'}")
    for n, block in enumerate(img.wired_blocks or [], 1):
        out.print(f"block {n}   {block.describe()}")


def _bootloader_base(info: images.ImageInfo) -> str:
    """Why a .bin was placed at the start of flash: it is built for the bootloader's address."""
    module, vector = info.module, info.vector
    if module is None or vector is None or not module.has_region("bootloader"):
        return "built for the bootloader's address"
    boot, app = module.region("bootloader"), module.app
    app_vector = vector_at(info.image.read(app.start, 8), 0)
    then = ("a full image: 'rakflash flash' sends only its application part"
            if app_vector is not None and app_vector[1] in app else
            "a bootloader: 'rakflash flash' won't send it, the serial bootloader writes applications only")
    return (f"built for the bootloader's address: its reset vector {vector[1]:#010x} lies in "
            f"{module.name}'s bootloader region {boot.start:#010x}-{boot.end:#010x}, not in the "
            f"application region from {app.start:#010x}; {then}")
