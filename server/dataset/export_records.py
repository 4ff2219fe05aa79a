"""What each exported image's row says (the CSV and JSONL records, the imagefolder path),
the report of the disputed images, and LABELS.md: where the labels came from and how right
the model's were measured. Pure: rows in, text out."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import csv_writer

COLUMNS = ("path", "sha256", "label", "split", "status", "votes", "agreement", "voters", "file",
           "source", "confidence", "spot_check")
DISPUTED_COLUMNS = ("path", "sha256", "leading_label", "status", "votes", "agreement", "voters")
LABELS_NAME = "LABELS.md"

_UNSAFE_IN_NAME = re.compile(r'[\x00-\x1f\\/:*?"<>|]')


def _safe_part(text: str) -> str:
    """One path segment that unzips to itself on every system: separators (both kinds),
    drive colons, wildcards and control characters become '_'; '.' and '..' cannot occur."""
    part = _UNSAFE_IN_NAME.sub("_", str(text))
    return "_" if part in {"", ".", ".."} else part


def archive_name(row: dict) -> str:
    """Where an image goes in the imagefolder layout: split/label/id-filename. The id keeps
    two originals with the same file name apart."""
    name = _safe_part(f"{row['id']}-{Path(row['path']).name}")
    return f"{row['split']}/{_safe_part(row['label'])}/{name}"


def _agreement(row: dict) -> float | None:
    value = row.get("agreement")
    return None if value is None else round(value, 4)


def _record(row: dict) -> dict:
    return {
        "path": row["path"],
        "sha256": row["sha256"],
        "label": row["label"],
        "split": row["split"],
        "status": row.get("status"),
        "votes": row["votes"],
        "agreement": _agreement(row),
        # Who said what: {"ann": "cat", "bob": "dog"}; JSON, so any name survives the CSV.
        "voters": json.dumps(row.get("voters", {}), ensure_ascii=False),
        "file": archive_name(row),
        # human: a person's consensus (or the import's); model: an auto-label, with its
        # calibrated confidence and what the spot checks measured of its class's labels.
        "source": row.get("source", "human"),
        "confidence": _rounded(row.get("confidence")),
        "spot_check": _rounded(row.get("spot_check")),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def disputed_csv(rows: Iterable[dict]) -> str:
    """The report of images no export contains because their votes disagree and no reviewer
    has settled them yet."""
    buffer = io.StringIO()
    writer = csv_writer.DictWriter(buffer, fieldnames=DISPUTED_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({
            "path": row["path"], "sha256": row["sha256"], "leading_label": row.get("label") or "",
            "status": row.get("status"), "votes": row["votes"], "agreement": _agreement(row),
            "voters": json.dumps(row.get("voters", {}), ensure_ascii=False),
        })
    return buffer.getvalue()


def csv_chunks(rows: Iterable[dict]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv_writer.DictWriter(buffer, fieldnames=COLUMNS)
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


def labels_md(rows: list[dict]) -> str:
    """LABELS.md: per class, the labels by source and, for the model's, the accuracy the
    spot checks measured (with its 90 % interval and the images checked) beside their mean
    calibrated confidence; in all, the model's accuracy as the classes' measured accuracies
    weighted by their model labels."""
    by_class: dict[str, list[dict]] = {}
    for row in rows:  # one pass: an export may hold a million rows
        by_class.setdefault(row["label"], []).append(row)
    lines = ["# Where these labels came from", "",
             f"{len(rows)} images: {sum(r.get('source', 'human') == 'human' for r in rows)}"
             " labeled by people (consensus, adjudicated or imported),"
             f" {sum(r.get('source') == 'model' for r in rows)} by the model (auto-labels).", ""]
    model = [r for r in rows if r.get("source") == "model"]
    if not model:
        lines.append("This export holds no auto-labels (`labels=human`, the default, leaves"
                     " them out; `labels=all` adds them).")
        return "\n".join(lines) + "\n"
    lines += ["| class | people | model | model measured (spot check) | model's mean confidence |",
              "| --- | --- | --- | --- | --- |"]
    weighted, measured_labels = 0.0, 0
    for name in sorted(by_class):
        mine = by_class[name]
        auto = [r for r in mine if r.get("source") == "model"]
        measured = "-"
        if auto and auto[0].get("spot_check") is not None:
            first = auto[0]
            measured = (f"{first['spot_check']:.1%} ({first['spot_check_low']:.1%}-"
                        f"{first['spot_check_high']:.1%}, {first['spot_checked']} checked)")
            weighted += first["spot_check"] * len(auto)
            measured_labels += len(auto)
        confidence = (f"{sum(r['confidence'] for r in auto) / len(auto):.1%}"
                      if auto else "-")
        lines.append(f"| {name} | {len(mine) - len(auto)} | {len(auto)} | {measured} |"
                     f" {confidence} |")
    lines.append("")
    if measured_labels:
        lines.append(f"The model's labels, as measured: {weighted / measured_labels:.1%} right"
                     f" (the classes with a spot check: {measured_labels} of {len(model)}"
                     " labels). Intervals are 90 %.")
    else:
        lines.append("No spot check has been answered yet: the model's labels are unmeasured.")
    return "\n".join(lines) + "\n"
