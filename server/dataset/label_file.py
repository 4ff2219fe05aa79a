"""A label file for an import: CSV with a header naming the columns `file` and `label`, or
JSONL lines `{"file": ..., "label": ...}`; each file relative to the image folder.

The whole file is read and checked before the import writes anything, so a label file that
is not UTF-8, has no header, repeats a file with another label or points outside the folder
changes nothing in the project: the message names the line. A row naming a file that is not
among the folder's images is no error; the import reports it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .csv_writer import read_cell
from .layout import ImportFailed, shown

COLUMNS = ("file", "label")


@dataclass(frozen=True)
class LabelFile:
    path: Path
    rows: dict[str, tuple[str, int]]  # file relative to DIR (posix) -> (label, line number)

    @property
    def classes(self) -> list[str]:
        """The labels it names, in the order first met."""
        return list(dict.fromkeys(label for label, _line in self.rows.values()))

    @property
    def name(self) -> str:
        return shown(self.path.name)


def _text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImportFailed(f"label file {shown(path)} does not exist") from exc
    except IsADirectoryError as exc:
        raise ImportFailed(f"label file {shown(path)} is a folder, not a file") from exc
    try:
        text = data.decode("utf-8-sig")  # -sig: a spreadsheet's byte order mark is no label
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFailed(
            f"label file {shown(path)} is not UTF-8 text (byte 0x{data[exc.start]:02x} on"
            f" line {line}); save it as UTF-8"
        ) from exc
    if not text.strip():
        raise ImportFailed(f"label file {shown(path)} is empty; expected a header line"
                           " `file,label` and a row per image")
    return text


def _csv_rows(path: Path, text: str):
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        columns = [cell.strip().casefold() for cell in header]
        if not all(name in columns for name in COLUMNS):
            raise ImportFailed(
                f"label file {shown(path)}: the first line must be a header naming the columns"
                f" `file` and `label` (it is {','.join(header)[:80]!r})"
            )
        where = [columns.index(name) for name in COLUMNS]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(where):
                raise ImportFailed(f"label file {shown(path)} line {reader.line_num}: expected"
                                   f" {len(columns)} columns, found {len(row)}")
            # read_cell: our own export's labels.csv quotes cells a spreadsheet would run.
            yield reader.line_num, read_cell(row[where[0]]), read_cell(row[where[1]])
    except csv.Error as exc:
        raise ImportFailed(f"label file {shown(path)} line {reader.line_num}: {exc}") from exc


def _jsonl_rows(path: Path, text: str):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImportFailed(f"label file {shown(path)} line {number} is not JSON:"
                               f" {exc.msg}") from exc
        if not isinstance(record, dict) or not all(k in record for k in COLUMNS):
            raise ImportFailed(f"label file {shown(path)} line {number}: expected an object"
                               ' with "file" and "label"')
        if not all(isinstance(record[k], str) for k in COLUMNS):
            raise ImportFailed(f"label file {shown(path)} line {number}: \"file\" and"
                               ' "label" must be text')
        yield number, record["file"], record["label"]


def _relative(path: Path, root: Path, line: int, name: str) -> str:
    """The file a row names, relative to root, without following links: normpath settles
    '..' first, so a row cannot climb out of the folder."""
    target = Path(os.path.normpath(root / name))
    if not target.is_relative_to(root) or target == root:
        raise ImportFailed(f"label file {shown(path)} line {line}: {name!r} points outside"
                           f" the image folder {shown(root)}")
    return target.relative_to(root).as_posix()


def read_label_file(path: str | Path, root: Path) -> LabelFile:
    """Read and check a label file for the images below `root` (resolved); raises
    ImportFailed with the line at fault. CSV or JSONL is told by the first character."""
    path = Path(path).expanduser()
    text = _text(path)
    parse = _jsonl_rows if text.lstrip().startswith("{") else _csv_rows
    rows: dict[str, tuple[str, int]] = {}
    for line, name, label in parse(path, text):
        label = label.strip()
        if not name or not label:
            raise ImportFailed(f"label file {shown(path)} line {line}: the file or the"
                               " label is empty")
        rel = _relative(path, root, line, name)
        earlier = rows.get(rel)
        if earlier is not None and earlier[0] != label:
            raise ImportFailed(f"label file {shown(path)} line {line} labels {rel!r}"
                               f" {label!r}, line {earlier[1]} labels it {earlier[0]!r}")
        rows.setdefault(rel, (label, line))
    return LabelFile(path, rows)


def unknown_classes(labels: LabelFile, known, add: bool) -> list[str]:
    """The label file's classes the project lacks, to be added (with `add`); without `add`
    any such class is an error that names them."""
    missing = [name for name in labels.classes if name not in known]
    if missing and not add:
        raise ImportFailed(
            f"label file {labels.name} names classes the project does not have:"
            f" {', '.join(missing)}; pass --add-classes to add them"
        )
    return missing
