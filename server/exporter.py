"""Exporting the labeled images: a stratified split, then a zip (imagefolder), CSV or JSONL.

Takes the rows `store.labeled_images` returns; knows nothing of Flask or SQL.
"""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path

FORMATS = ("imagefolder", "csv", "jsonl")
SPLIT_NAMES = ("train", "val", "test")
COLUMNS = ("path", "sha256", "label", "split", "votes", "file")


class ExportError(ValueError):
    """Bad export parameters; the message is meant for the person who asked."""


def parse_split(text: str) -> tuple[float, ...]:
    """'0.8,0.1,0.1' -> (0.8, 0.1, 0.1): one to three non-negative parts summing to 1."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError as exc:
        raise ExportError(f"split {text!r} should be numbers like 0.8,0.1,0.1") from exc
    if not 1 <= len(parts) <= 3:
        raise ExportError("split takes one to three parts: train[,val[,test]]")
    if any(p < 0 or p != p for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
        raise ExportError(f"split parts must be non-negative and sum to 1 (got {text!r})")
    return parts


def parse_format(text: str) -> str:
    if text not in FORMATS:
        raise ExportError(f"unknown format {text!r}; use one of {', '.join(FORMATS)}")
    return text


def assign_splits(rows: list[dict], fractions: tuple[float, ...], seed: int) -> list[dict]:
    """Split each class on its own (stratified), reproducibly for a seed: the same seed and
    the same labels give the same split."""
    by_label: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    out: list[dict] = []
    for label in sorted(by_label):
        members = sorted(by_label[label], key=lambda r: r["sha256"])
        random.Random(f"{seed}:{label}").shuffle(members)
        n = len(members)
        counts = [round(n * f) for f in fractions[:-1]]
        counts.append(n - sum(counts))
        if counts[-1] < 0:  # rounding overshot: take it from the largest part
            counts[counts.index(max(counts))] += counts[-1]
            counts[-1] = 0
        start = 0
        for name, count in zip(SPLIT_NAMES, counts):
            for row in members[start : start + count]:
                out.append({**row, "split": name})
            start += count
    return sorted(out, key=lambda r: r["id"])


def archive_name(row: dict) -> str:
    """Where an image goes in the imagefolder layout: split/label/id-filename."""
    return f"{row['split']}/{row['label']}/{row['id']}-{Path(row['path']).name}"


def _record(row: dict) -> dict:
    return {
        "path": row["path"],
        "sha256": row["sha256"],
        "label": row["label"],
        "split": row["split"],
        "votes": row["votes"],
        "file": archive_name(row),
    }


def csv_chunks(rows: Iterable[dict]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow(_record(row))
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def jsonl_chunks(rows: Iterable[dict]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(_record(row), ensure_ascii=False) + "\n"


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


def zip_chunks(rows: list[dict]) -> Iterator[bytes]:
    """The imagefolder zip: train/<class>/<file> ..., plus labels.csv, streamed. Images whose
    original file has gone missing are listed in MISSING.txt instead."""
    pipe = _Pipe()
    missing = []
    present = []
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED) as archive:
        for row in rows:
            if not Path(row["path"]).is_file():
                missing.append(row)
                continue
            archive.write(row["path"], archive_name(row))
            present.append(row)
            yield pipe.drain()
        archive.writestr("labels.csv", "".join(csv_chunks(present)))
        if missing:
            archive.writestr(
                "MISSING.txt",
                "".join(f"{r['path']}\t{r['label']}\n" for r in missing),
            )
    yield pipe.drain()


def write_export(rows: list[dict], fmt: str, out: Path) -> Path:
    """Write an export to disk: imagefolder as a .zip (if OUT ends in .zip) or a folder
    tree; csv and jsonl as one file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with out.open("w", encoding="utf-8", newline="") as handle:
            handle.writelines(csv_chunks(rows))
    elif fmt == "jsonl":
        with out.open("w", encoding="utf-8") as handle:
            handle.writelines(jsonl_chunks(rows))
    elif out.suffix == ".zip":
        with out.open("wb") as handle:
            for chunk in zip_chunks(rows):
                handle.write(chunk)
    else:
        present = []
        for row in rows:
            source = Path(row["path"])
            if source.is_file():
                target = out / archive_name(row)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
                present.append(row)
        (out / "labels.csv").write_text("".join(csv_chunks(present)), encoding="utf-8")
    return out
