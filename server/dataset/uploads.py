"""Uploaded files and zips, received into a fresh folder that the importer then reads.

Every name is made safe before a byte is written (letters, digits, '_', '-', '.'; hidden
files passed over; a clash gets a numbered name). A zip is checked whole before one entry
is unpacked: no absolute or '..' names (zip slip), a bounded number of entries, a bounded
declared size and compression ratio, room on the disk; unpacking stops when the real bytes
pass what was declared. The upload is refused unless at least one file decodes as an image.
Anything refused raises UploadRefused, and the caller discards the folder: nothing of a
refused upload stays on disk.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from .imaging import EXTENSIONS
from .importer import check_file

MB = 1000 * 1000  # sizes are told in decimal units, as the page's filesizeformat tells them
GB = 1000 * MB
CHUNK = 1024 * 1024
UPLOADS = "uploads"  # PROJECT/uploads/<time>-<n>/: one folder per upload
DISK_RESERVE = 250 * MB  # left free after unpacking, for the database and the image cache
ZIP_DIRECTORY_BYTES_PER_ENTRY = 1024  # generous: a long name and the usual extra fields
REASONS_SHOWN = 10
MAX_DEPTH = 8  # folder levels kept from a zip; no image layout needs more


@dataclass(frozen=True)
class UploadLimits:
    """How much one upload may hold (app.config["UPLOAD_LIMITS"]). Past these, the CLI's
    `activelabel import` of a folder has no limits but the disk's."""

    # Below waitress's own 1 GiB request limit, so a larger upload is told ours, in words.
    max_bytes: int = GB
    # Files sent plus the entries of the zips, counted together: a dataset of more is
    # better copied to the server and imported from its folder.
    max_files: int = 50_000
    max_unpacked_bytes: int = 4 * GB  # what the zips unpack to, all of them together
    # Unpacked / packed size of one zip entry: photos (JPEG, PNG) hardly compress, and even
    # a flat BMP scan stays well under this; deflate's own ceiling is about 1,030.
    max_ratio: int = 200
    ratio_from_bytes: int = MB  # entries smaller than this may compress as they like


class UploadRefused(Exception):
    """The upload as a whole is refused; the message names the file and says why."""

    status = 400


class UploadTooLarge(UploadRefused):
    """Past one of the UploadLimits (or the free disk)."""

    status = 413


def size_text(count: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if count >= size:
            return f"{count / size:,.1f} {unit}"
    return f"{count} bytes"


_UNSAFE = re.compile(r"[^\w.-]+")


def safe_name(name: str, limit: int = 100, folder: bool = False) -> str:
    """One path component reduced to word characters, '-' and '.': no separator, no
    leading dot or dash, never empty, at most `limit` characters with a file's extension
    kept (lower-cased). A folder's name keeps its case: the importer reads folder names."""
    name = unicodedata.normalize("NFKC", name)
    stem, dot, extension = name.rpartition(".")
    if folder or not dot or not re.fullmatch(r"\w{1,10}", extension):
        stem, extension = name, ""  # no extension, or text after a dot that is none
    stem = _UNSAFE.sub("_", stem).strip("._-") or ("folder" if folder else "file")
    suffix = f".{extension.lower()}" if extension else ""
    return stem[: limit - len(suffix)] + suffix


def _fresh_folder(parent: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 10_000):
        folder = parent / f"{stamp}-{attempt}"
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue  # an upload in the same second
        except FileNotFoundError:
            continue  # a refused upload removed the empty parent meanwhile: make it again
        return folder
    raise UploadRefused(f"no free upload folder name under {parent}")


class UploadFolder:
    """One upload's folder under PROJECT/uploads/. Files are written through start_file,
    write and end_file; finish unpacks the zips and returns the folder to import. Folders
    named like a class keep their name, so their images arrive labeled as with
    `activelabel import` of the same folder."""

    def __init__(self, parent: Path, limits: UploadLimits, class_names: Iterable[str] = ()):
        self.parent = parent
        self.limits = limits
        self.class_names = set(class_names)
        self._path: Path | None = None  # made with the first file, after the token's check
        self.zips: list[tuple[str, Path]] = []  # (name as sent, where it lies until unpacked)
        self.files = 0  # files sent and zip entries, against limits.max_files
        self.unpacked = 0  # bytes written out of zips, against limits.max_unpacked_bytes
        self._current: BinaryIO | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = _fresh_folder(self.parent)
        return self._path

    def discard(self) -> None:
        """Remove everything this upload wrote, and PROJECT/uploads/ if it made it."""
        self.end_file()
        if self._path is None:
            return
        shutil.rmtree(self._path, ignore_errors=True)
        try:
            self.parent.rmdir()
        except OSError:
            pass  # it holds earlier uploads (or one running now): theirs to keep

    def _count(self, files: int, what: str) -> None:
        self.files += files
        if self.files > self.limits.max_files:
            raise UploadTooLarge(f"{what}; one upload takes at most {self.limits.max_files:,}"
                                 " files, zip entries counted")

    def start_file(self, filename: str) -> None:
        """Begin one sent file. Browsers send a bare name; older ones a whole path, of which
        only the last part counts. A hidden file (.DS_Store) or a nameless part is dropped."""
        self.end_file()
        name = re.split(r"[/\\]", filename)[-1]
        if not name or name.startswith("."):
            return
        self._count(1, f"it holds more than {self.limits.max_files:,} files")
        if name.lower().endswith(".zip"):
            # Kept in a hidden folder, which the importer never enters, until unpacked.
            target = self.path / ".zips" / f"{len(self.zips) + 1}.zip"
            target.parent.mkdir(exist_ok=True)
            self.zips.append((name, target))
        else:
            target = self._place([name])
        self._current = target.open("xb")

    def write(self, data: bytes) -> None:
        if self._current is not None:
            self._current.write(data)

    def end_file(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    def finish(self, max_pixels: int) -> Path:
        """Unpack the zips, then make sure at least one file is an image; the folder."""
        self.end_file()
        if not self.files:
            raise UploadRefused("it holds no files: choose images, or a zip of them")
        for name, path in self.zips:
            self._unpack(name, path)
            path.unlink()
        shutil.rmtree(self.path / ".zips", ignore_errors=True)
        _require_an_image(self.path, max_pixels)
        return self.path

    def _place(self, parts: list[str]) -> Path:
        """A new file's path for a name given as its parts. The folders are kept (the
        importer reads classes, splits and pool folders from them), each made safe unless
        it is named exactly like a class, to MAX_DEPTH levels: deeper ones are merged."""
        here = self.path
        for part in parts[:-1][:MAX_DEPTH]:
            folder = part if part in self.class_names else safe_name(part, folder=True)
            if (here / folder).exists() and not (here / folder).is_dir():
                folder = f"{folder}-folder"  # a file of that name came first
            here = here / folder
        here.mkdir(parents=True, exist_ok=True)
        name = safe_name(parts[-1])
        stem, extension = os.path.splitext(name)
        number = 1
        while (here / name).exists():  # files are created as they are named: no race here
            number += 1
            name = f"{stem}-{number}{extension}"
        return here / name

    def _unpack(self, name: str, path: Path) -> None:
        entries, directory_bytes = _declared_directory(name, path)
        self._count(entries, f"{name} holds {entries:,} entries")
        if directory_bytes > self.limits.max_files * ZIP_DIRECTORY_BYTES_PER_ENTRY:
            raise UploadTooLarge(f"{name}: its table of contents is {size_text(directory_bytes)},"
                                 " too large for the entries one upload may hold")
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error) as exc:
            raise UploadRefused(f"{name} is not a readable zip ({exc})") from None
        with archive:
            infos = archive.infolist()
            if len(infos) > entries:  # the end record undercounted: count again, honestly
                self._count(len(infos) - entries, f"{name} holds {len(infos):,} entries")
            members = self._check_members(name, infos)
            for info, parts in members:
                self._extract(name, archive, info, parts)

    def _check_members(self, name: str, infos: list[zipfile.ZipInfo]):
        """The entries to unpack, with their path parts, once the whole zip passed."""
        members = []
        for info in infos:
            parts = _member_parts(name, info.filename)
            if info.flag_bits & 0x1:
                raise UploadRefused(f"{name}: entry {info.filename!r} is encrypted")
            if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16):
                continue  # folders come with their files; links are not followed
            if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
                continue  # hidden, as the importer passes hidden files over
            members.append((info, parts))
        declared = sum(info.file_size for info, _ in members)
        if self.unpacked + declared > self.limits.max_unpacked_bytes:
            raise UploadTooLarge(
                f"{name} declares {size_text(self.unpacked + declared)} unpacked; one upload"
                f" takes at most {size_text(self.limits.max_unpacked_bytes)}")
        free = shutil.disk_usage(self.path).free
        if declared + DISK_RESERVE > free:
            raise UploadTooLarge(f"{name} unpacks to {size_text(declared)}, and the server's"
                                 f" disk has {size_text(free)} free")
        for info, _ in members:
            packed = max(info.compress_size, 1)
            if info.file_size >= self.limits.ratio_from_bytes and (
                    info.file_size > self.limits.max_ratio * packed):
                raise UploadTooLarge(
                    f"{name}: entry {info.filename!r} unpacks to {info.file_size / packed:,.0f}"
                    f" times its packed size (a zip bomb?); at most {self.limits.max_ratio}×"
                    " is taken")
        # One folder around everything (a zipped folder): its contents are the upload.
        tops = {parts[0] for _, parts in members if len(parts) > 1}
        if len(tops) == 1 and all(len(parts) > 1 for _, parts in members) and (
                not tops & self.class_names):
            members = [(info, parts[1:]) for info, parts in members]
        return members

    def _extract(self, name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo,
                 parts: list[str]) -> None:
        target = self._place(parts)
        written = 0
        try:
            with archive.open(info) as source, target.open("xb") as sink:
                while chunk := source.read(CHUNK):
                    written += len(chunk)
                    self.unpacked += len(chunk)
                    # zipfile stops at the declared size itself; this holds if it ever won't.
                    if written > info.file_size or (
                            self.unpacked > self.limits.max_unpacked_bytes):
                        raise UploadTooLarge(
                            f"{name}: entry {info.filename!r} unpacks to more than the"
                            f" {size_text(info.file_size)} it declares")
                    sink.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
                RuntimeError, ValueError) as exc:
            raise UploadRefused(f"{name}: entry {info.filename!r} cannot be unpacked ({exc});"
                                " the zip is damaged") from None


def _member_parts(name: str, member: str) -> list[str]:
    """An entry's path as parts; a name that would land outside the folder is refused."""
    path = member.replace("\\", "/")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if path.startswith("/") or re.match(r"[A-Za-z]:", path) or ".." in parts:
        raise UploadRefused(
            f"{name}: entry {member!r} names a place outside the zip's own folder (an absolute"
            " path or '..'), which could overwrite other files; such zips are refused whole")
    return parts


_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END64_LOCATOR = struct.Struct("<4sLQL")
_END64 = struct.Struct("<4sQ2H2L4Q")


def _declared_directory(name: str, path: Path) -> tuple[int, int]:
    """(entries, bytes of the table of contents) as the zip's end record declares them, read
    before zipfile, which would hold a table of millions of entries in memory whole."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - _END.size - 0xFFFF))  # the record, then a comment of ≤ 64 KiB
        tail = handle.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _END.size:
            raise UploadRefused(f"{name} is not a readable zip (no end-of-archive record:"
                                " not a zip, or cut short)")
        _, _, _, _, entries, directory_bytes, _, _ = _END.unpack_from(tail, at)
        locator = at - _END64_LOCATOR.size
        if (entries == 0xFFFF or directory_bytes == 0xFFFFFFFF) and locator >= 0 and (
                tail[locator:locator + 4] == b"PK\x06\x07"):
            _, _, offset, _ = _END64_LOCATOR.unpack_from(tail, locator)
            handle.seek(offset)
            record = handle.read(_END64.size)
            if len(record) == _END64.size and record[:4] == b"PK\x06\x06":
                entries, directory_bytes = _END64.unpack(record)[7:9]
    return entries, directory_bytes


def _require_an_image(root: Path, max_pixels: int) -> None:
    """Refuse an upload in which no file is an image that decodes. Checking stops at the
    first good one: the import checks every file again and reports the bad ones."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise UploadRefused("it holds no files to import, only folders or hidden files")
    reasons = []
    for path in files:
        shown = path.relative_to(root).as_posix()
        if path.suffix.lower() not in EXTENSIONS:
            kind = path.suffix or "no extension"
            reasons.append(f"{shown}: not an image file ({kind}; images are "
                           f"{', '.join(sorted(EXTENSIONS))})")
            continue
        facts = check_file(path, max_pixels)
        if "reason" not in facts:
            return
        reasons.append(f"{shown}: {facts['reason']}")
    more = len(reasons) - REASONS_SHOWN
    raise UploadRefused("nothing in it is an image that can be imported: "
                        + "; ".join(reasons[:REASONS_SHOWN])
                        + (f"; and {more:,} more" if more > 0 else ""))
