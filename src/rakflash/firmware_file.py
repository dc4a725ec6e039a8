"""Reading a firmware file: a regular file of sane size, or a named error that says why not.

Every file rakflash is given as firmware (``.bin``, ``.hex``, DFU package, Apollo3 blob),
and an INFO0 dump, is read by :func:`read_file`. It stands below :mod:`rakflash.images`
and :mod:`rakflash.dfu_package`, which both take their bytes from it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from . import catalog as _catalog
from .catalog import Catalog
from .errors import ImageError, ImageFormatError, ImageNotAFile, ImageNotFound


def max_file_size(cat: Catalog | None = None) -> int:
    """The most a firmware file can hold: the largest flash in the catalog, four times over
    (Intel HEX text takes up to ~3.5 bytes per byte of data, with short records) — of the
    chips whose firmware comes as HEX; an ESP32's comes as binary, at most its whole flash."""
    cat = cat or _catalog.load()
    return max(max(4 * m.flash.size for m in cat.mcus.values() if not m.core.startswith("xtensa")),
               max(m.flash.size for m in cat.mcus.values()))


def short_path(path: str | Path, limit: int = 120) -> str:
    """A path for a message: whole if short, else its start and end."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:40]}…{text[-(limit - 41):]}"


def read_file(path: str | Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; named errors for anything else.

    A FIFO, a device (``/dev/zero``) or a socket is refused before it is read
    (it could block forever, or never end); a file larger than ``limit`` is
    refused from its size; at most ``limit`` bytes are ever read (a file that
    grows while it is read included). A name too long for the OS is named so.
    """
    name = short_path(path)
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageNotFound(f"{name}: no such file") from None
    except OSError as exc:
        raise _os_error(name, exc) from None
    except ValueError:        # an embedded NUL
        raise ImageNotFound(f"{name}: not a valid file name") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageNotFound(f"{name} is a folder, not a firmware file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageNotAFile(f"{name} is not a regular file ({_kind(st.st_mode)})")
    if st.st_size > limit:
        raise ImageFormatError(f"{name} is {st.st_size:,} bytes: larger than any firmware for the "
                               f"modules rakflash knows (at most {limit:,} bytes, even as Intel HEX)",
                               hint="Check that it is the firmware file you meant.")
    try:
        # O_NONBLOCK: should the path have become a FIFO since the stat, opening it can't hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise _os_error(name, exc) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ImageNotAFile(f"{name} is not a regular file")
        try:
            raw = f.read(limit + 1)
        except OSError as exc:
            raise _os_error(name, exc) from None
    if len(raw) > limit:
        raise ImageFormatError(f"{name} grew past {limit:,} bytes while it was read",
                               hint="Check that it is the firmware file you meant.")
    return raw


def _os_error(name: str, exc: OSError) -> ImageError:
    if exc.errno == errno.ENAMETOOLONG:
        return ImageNotFound(f"{name}: the name is too long for the file system",
                             hint="Shorten the file's name or its folders' names, or move it nearer "
                                  "the root of the file system.")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return ImageNotFound(f"{name}: no such file")
    return ImageError(f"{name}: cannot read: {exc.strerror or exc}")


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a file"
