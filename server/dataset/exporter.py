"""Exporting the labeled images: a stratified split, then one of the formats in FORMATS (a
zip in the imagefolder layout, CSV, JSONL, or the report of disputed images).

Takes the rows `store.labeled_images` returns; knows nothing of Flask or SQL. The web export
and the CLI parse their parameters with the same functions, so both give the same messages,
and take the formats from the same registry: the web streams a format's chunks, the CLI
writes them to a file.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import stat
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .export_records import (  # noqa: F401 (COLUMNS, DISPUTED_COLUMNS: part of this API)
    COLUMNS,
    DISPUTED_COLUMNS,
    LABELS_NAME,
    archive_name,
    csv_chunks,
    disputed_csv,
    jsonl_chunks,
    labels_md,
)

SPLIT_NAMES = ("train", "val", "test")
# `--split keep`: no fractions, the split each image came with (a DIR/train/<class>/ import,
# what a public data set or an earlier export ships), so a fixed val/test set stays fixed.
# Images imported without one (labeled later from a pool) go to train.
KEEP_SPLIT: tuple[Fraction, ...] = ()
MISSING_NAME = "MISSING.txt"
DISPUTED_NAME = "DISPUTED.csv"  # images still waiting for a reviewer: a report, not data

# One part of a split: a decimal (0.8, .1, 1) or a ratio (1/3). Digits are bounded because a
# Fraction of '1e999999999' would take forever to build, and the text comes from a URL.
_PART = re.compile(r"\d{1,9}(\.\d{0,9})?|\.\d{1,9}|\d{1,9}/\d{1,9}")


# An image left out of an export, and why ("missing", "changed since it was imported"...).
Problem = tuple[dict, str]


class ExportError(ValueError):
    """Bad export parameters; the message is meant for the person who asked."""


def parse_split(text: str) -> tuple[Fraction, ...]:
    """'0.8,0.1,0.1' -> (4/5, 1/10, 1/10): one to three non-negative parts summing to
    exactly 1. Fractions, not floats, so 0.7,0.2,0.1 sums to 1 and the counts are exact.
    'keep' -> KEEP_SPLIT: the split each image was imported with."""
    if text.strip().lower() == "keep":
        return KEEP_SPLIT
    raw = [p.strip() for p in text.split(",")]
    if not all(_PART.fullmatch(p) for p in raw):
        raise ExportError(
            f"split {text[:40]!r} should be non-negative numbers like 0.8,0.1,0.1"
        )
    if not 1 <= len(raw) <= 3:
        raise ExportError("split takes one to three parts: train[,val[,test]]")
    try:
        parts = tuple(Fraction(p) for p in raw)
    except ZeroDivisionError as exc:
        raise ExportError(f"split {text[:40]!r} divides by zero") from exc
    if sum(parts) != 1:
        raise ExportError(f"split parts must sum to 1 (got {text[:40]!r})")
    return parts


def parse_format(text: str, reports: bool = False) -> ExportFormat:
    """The format named `text`; a report (format=disputed) only where `reports` is true (the
    web). The message names the data formats, which both the web and the CLI offer."""
    chosen = FORMATS.get(text)
    if chosen is None or (chosen.report and not reports):
        data = [name for name, f in FORMATS.items() if not f.report]
        raise ExportError(f"unknown format {text[:40]!r}; use one of {', '.join(data)}")
    return chosen


LABELS = ("human", "all")  # which labels an export holds: people's, or theirs and the model's


def parse_labels(text: str | None, default: str) -> str:
    """'human' (people's consensus labels) or 'all' (the model's auto-labels too)."""
    chosen = (text or default).strip().lower()
    if chosen not in LABELS:
        raise ExportError(f"labels {text[:20]!r}: use human (people's labels) or all (with"
                          " the model's auto-labels)")
    return chosen


def parse_seed(text: str | None, default: int) -> int:
    """A whole number; empty or missing means the project's seed."""
    if text is None or not text.strip():
        return default
    try:
        return int(text)
    except ValueError as exc:
        raise ExportError(f"seed must be a whole number (got {text[:40]!r})") from exc


def split_counts(n: int, fractions: tuple[Fraction, ...]) -> list[int]:
    """How many of a class's n images each part gets (the largest-remainder rule): every part
    gets floor(n * fraction); the images left over go one each to the parts with the largest
    remainders, ties to the earlier part (train before val before test)."""
    exact = [n * Fraction(f) for f in fractions]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _order_key(seed: int, label: str, sha256: str) -> bytes:
    """A seeded position that depends only on the image, not on which other images are
    labeled, so labeling more images moves few of the earlier ones to another part."""
    return hashlib.sha256(f"{seed}\x00{label}\x00{sha256}".encode()).digest()


def assign_splits(rows: list[dict], fractions: tuple[Fraction, ...], seed: int,
                  groups: Iterable[Iterable[int]] = ()) -> list[dict]:
    """Split each class on its own (stratified), reproducibly for a seed: the same seed and
    the same labels give the same split. `groups` (image ids of near-duplicates) never
    straddle parts: every member follows the split of the group's lowest id that is
    exported, so a copy of a training image cannot leak into val or test. Returns the
    rows (by image id) with a 'split'. With KEEP_SPLIT each row keeps its `kept_split`
    (train when it has none), groups or not: the data set's own split is what was asked."""
    if fractions == KEEP_SPLIT:
        return [{**row, "split": row.get("kept_split") or "train"} for row in rows]
    split = _stratified(rows, fractions, seed)
    by_id = {row["id"]: row for row in split}
    for group in groups:
        members = sorted(i for i in group if i in by_id)
        for image_id in members[1:]:
            by_id[image_id]["split"] = by_id[members[0]]["split"]
    return split


def _stratified(rows: list[dict], fractions: tuple[Fraction, ...], seed: int) -> list[dict]:
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    out: list[dict] = []
    for label, members in by_label.items():
        members.sort(key=lambda r: _order_key(seed, label, r["sha256"]))
        start = 0
        # One to three parts: zip stops at the last part the split names.
        for name, count in zip(SPLIT_NAMES, split_counts(len(members), fractions), strict=False):
            out.extend({**row, "split": name} for row in members[start : start + count])
            start += count
    return sorted(out, key=lambda r: r["id"])


def read_original(row: dict) -> bytes | str:
    """The original file's bytes, or why they cannot be exported: the file is gone, cannot
    be read, or no longer has the content that was labeled."""
    try:
        data = Path(row["path"]).read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if hashlib.sha256(data).hexdigest() != row["sha256"]:
        return "changed since it was imported"
    return data


def missing_text(problems: list[Problem]) -> str:
    """MISSING.txt: one line per image left out, tab-separated path, label and reason."""
    return "".join(f"{row['path']}\t{row['label']}\t{reason}\n" for row, reason in problems)


class _Pipe(io.RawIOBase):
    """A write-only, unseekable sink whose bytes are drained as they come, so the zip is
    streamed to the client instead of built in memory."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def _zip_entry(name: str) -> zipfile.ZipInfo:
    """A stored, world-readable regular file: writestr's default (0600, no file type) would
    leave the unzipped images readable by their owner only."""
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    # Images are compressed already; storing them costs no CPU and deflate saves nothing.
    info.compress_type = zipfile.ZIP_STORED
    return info


def zip_chunks(
    rows: list[dict], problems: list[Problem] | None = None,
    disputed: list[dict] | None = None,
) -> Iterator[bytes]:
    """The imagefolder zip: train/<class>/<file> ..., plus labels.csv, streamed. Images whose
    original file is missing, unreadable or changed are listed in MISSING.txt instead (and
    appended to `problems` if given): one bad file never breaks a download under way."""
    pipe = _Pipe()
    problems = [] if problems is None else problems
    present = []
    with zipfile.ZipFile(pipe, "w") as archive:
        for row in rows:
            data = read_original(row)
            if isinstance(data, str):
                problems.append((row, data))
                continue
            archive.writestr(_zip_entry(archive_name(row)), data)
            present.append(row)
            yield pipe.drain()
        archive.writestr(_zip_entry("labels.csv"), "".join(csv_chunks(present)))
        archive.writestr(_zip_entry(LABELS_NAME), labels_md(present))
        if problems:
            archive.writestr(_zip_entry(MISSING_NAME), missing_text(problems))
        if disputed:
            archive.writestr(_zip_entry(DISPUTED_NAME), disputed_csv(disputed))
    yield pipe.drain()


def _check_target(out: Path) -> None:
    """Never write over an earlier export or anything else already there."""
    if out.is_dir() and any(out.iterdir()):
        raise ExportError(f"{out} is a folder that is not empty; choose a new path")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} already exists; choose a new path")


def _write_tree(rows: list[dict], out: Path, problems: list[Problem],
                disputed: list[dict] | None = None) -> None:
    present = []
    for row in rows:
        data = read_original(row)
        if isinstance(data, str):
            problems.append((row, data))
            continue
        target = out / archive_name(row)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        present.append(row)
    out.mkdir(parents=True, exist_ok=True)
    # Bytes, as in the zip: text mode would turn the csv module's \r\n into \r\r\n on Windows.
    (out / "labels.csv").write_bytes("".join(csv_chunks(present)).encode("utf-8"))
    (out / LABELS_NAME).write_bytes(labels_md(present).encode("utf-8"))
    if problems:
        (out / MISSING_NAME).write_bytes(missing_text(problems).encode("utf-8"))
    if disputed:
        (out / DISPUTED_NAME).write_bytes(disputed_csv(disputed).encode("utf-8"))


def _utf8(chunks: Iterable[str]) -> Iterator[bytes]:
    """Text chunks as the bytes the web sends and the CLI writes: the same on every system,
    where a file in text mode would change the line ends on Windows."""
    for chunk in chunks:
        yield chunk.encode("utf-8")


# (rows, disputed, problems) -> the export's bytes, chunk by chunk; appends to `problems` each
# image it leaves out (an original file missing, unreadable or changed).
Chunks = Callable[[list[dict], list[dict], list[Problem]], Iterator[bytes]]


@dataclass(frozen=True)
class ExportFormat:
    """One way to export: how it is named, sent and written. The web streams `chunks`; the
    CLI writes them to OUT (or calls `write_folder`)."""

    name: str
    suffix: str  # of the file the web sends
    mimetype: str
    chunks: Chunks
    description: str
    # A report on the data (the web's format=disputed), not the data set: the CLI writes it
    # into the imagefolder export instead, and the admin is not offered it as a format.
    report: bool = False
    # Written as a folder, not one file, when the CLI's OUT does not end in the suffix.
    write_folder: Callable[[list[dict], Path, list[Problem], list[dict]], None] | None = None


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "imagefolder", "zip", "application/zip",
            lambda rows, disputed, problems: zip_chunks(rows, problems, disputed),
            "train/<class>/<file>... with labels.csv, LABELS.md, MISSING.txt and DISPUTED.csv",
            write_folder=_write_tree,
        ),
        ExportFormat(
            "csv", "csv", "text/csv; charset=utf-8",
            lambda rows, disputed, problems: _utf8(csv_chunks(rows)),
            "one row per labeled image: path, sha256, label, split, votes...",
        ),
        ExportFormat(
            "jsonl", "jsonl", "application/x-ndjson; charset=utf-8",
            lambda rows, disputed, problems: _utf8(jsonl_chunks(rows)),
            "one JSON object per labeled image, with the CSV's fields",
        ),
        ExportFormat(
            "disputed", "csv", "text/csv; charset=utf-8",
            lambda rows, disputed, problems: _utf8([disputed_csv(disputed)]),
            "the images still disputed (DISPUTED.csv alone)",
            report=True,
        ),
    )
}


def write_export(rows: list[dict], fmt: ExportFormat, out: Path,
                 disputed: list[dict] | None = None) -> list[Problem]:
    """Write an export to disk: one file (imagefolder as a .zip), or for imagefolder a folder
    tree when OUT does not end in .zip. Returns the images left out and why (csv and jsonl
    need no image files)."""
    _check_target(out)
    problems: list[Problem] = []
    disputed = disputed or []
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt.write_folder is not None and out.suffix.lower() != f".{fmt.suffix}":
        fmt.write_folder(rows, out, problems, disputed)
        return problems
    with out.open("wb") as handle:
        for chunk in fmt.chunks(rows, disputed, problems):
            handle.write(chunk)
    return problems
