"""What an import did and what it understood of the folder, in words for the person who ran
it: the CLI prints it, the admin page shows the same from the stored run.

`understood` is what the layout (and a label file) said of every image the import could read,
new or already in the project: the classes with their images, the unlabeled and the maybe
(doubtful) ones, the splits. The warnings catch the layouts that import without an error and
go wrong later: a class that is really a pool of unsorted images, one class far larger than
the others.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from statistics import median

from .layout import is_maybe_name, is_unlabeled_name

OUTSIZED = 10  # a class over this many times the median of the others gets a warning


@dataclass
class Understood:
    # class name -> images labeled so, every class of the project in its order
    classes: Counter = field(default_factory=Counter)
    unlabeled: int = 0
    maybe: int = 0
    splits: Counter = field(default_factory=Counter)
    unlabeled_folders: set[str] = field(default_factory=set)  # '' for DIR itself
    maybe_folders: set[str] = field(default_factory=set)
    class_folders: set[str] = field(default_factory=set)  # class names given by a folder
    label_file: str | None = None
    label_rows: int = 0
    from_label_file: int = 0  # images whose label the label file gave
    answered_known: int = 0  # images already in the project, unanswered, answered now

    def as_dict(self) -> dict:
        """What the store keeps (JSON) and the admin page shows."""
        return {
            "classes": dict(self.classes),
            "unlabeled": self.unlabeled,
            "maybe": self.maybe,
            "splits": {name: self.splits[name] for name in ("train", "val", "test")
                       if self.splits[name]},
            "unlabeled_folders": sorted(_folder(f) for f in self.unlabeled_folders),
            "maybe_folders": sorted(_folder(f) for f in self.maybe_folders),
            "label_file": self.label_file,
            "label_rows": self.label_rows,
            "from_label_file": self.from_label_file,
            "answered_known": self.answered_known,
        }


def _folder(name: str) -> str:
    return f"{name}/" if name else "the top level"


def warnings(understood: Understood) -> list[str]:
    """Layouts that import cleanly and then go wrong: a class folder named like a pool or
    maybe folder, and a class with over OUTSIZED times the median of the other classes."""
    found = []
    for name in sorted(understood.class_folders):
        if is_unlabeled_name(name) or is_maybe_name(name):
            kind = "unlabeled" if is_unlabeled_name(name) else "doubtful ('maybe')"
            found.append(
                f"class {name!r} is named like a folder of {kind} images, and its"
                f" {understood.classes[name]} images were imported labeled {name!r}; if it is"
                f" not a class, leave it out of --classes (or import with --unlabeled-folder"
                f" {name})"
            )
    counts = {name: n for name, n in understood.classes.items() if n}
    for name, n in sorted(counts.items()):
        others = [m for other, m in counts.items() if other != name]
        if others and n > OUTSIZED * median(others):
            found.append(
                f"class {name!r} holds {n} images, more than {OUTSIZED}x the median of the"
                f" other classes ({median(others):g}): is it a pool of unsorted images?"
            )
    return found


def understood_lines(understood: dict) -> list[str]:
    """The stored `understood` as lines of text (the CLI prints them; the page shows them)."""
    lines = []
    classes = understood.get("classes", {})
    if any(classes.values()):
        lines.append(f"{len(classes)} classes: "
                     + ", ".join(f"{name} ({n})" for name, n in classes.items()))
    if understood.get("unlabeled"):
        lines.append(f"{understood['unlabeled']} unlabeled (in "
                     + ", ".join(understood.get("unlabeled_folders", [])) + ")")
    if understood.get("maybe"):
        lines.append(f"{understood['maybe']} maybe (in "
                     + ", ".join(understood.get("maybe_folders", []))
                     + "): an 'unsure' answer each, for review; they train nothing until"
                       " someone decides")
    if understood.get("splits"):
        lines.append("Splits kept: " + ", ".join(
            f"{name} {n}" for name, n in understood["splits"].items()))
    if understood.get("label_file"):
        lines.append(f"Label file {understood['label_file']}: {understood['label_rows']} rows,"
                     f" {understood['from_label_file']} images labeled by it")
    if understood.get("answered_known"):
        lines.append(f"{understood['answered_known']} images already in the project had no"
                     " answer and got this import's; images with answers kept theirs")
    return lines


@dataclass
class ImportReport:
    import_id: int
    source: str
    found: int = 0
    added: int = 0
    labeled: int = 0  # new images labeled from class folders
    from_label_file: int = 0  # new images labeled by the label file
    ignored: int = 0
    issues: list[dict] = field(default_factory=list)  # {path, kind, reason}
    unmatched_folders: list[str] = field(default_factory=list)
    understood: Understood = field(default_factory=Understood)
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[dict]:
        return [i for i in self.issues if i["kind"] == "skipped"]

    @property
    def duplicates(self) -> list[dict]:
        return [i for i in self.issues if i["kind"] == "duplicate"]

    def summary(self) -> str:
        from_file = f", {self.from_label_file} from the label file" if self.from_label_file \
            else ""
        text = (
            f"{self.added} images added ({self.labeled} labeled from class folders{from_file}),"
            f" {len(self.duplicates)} duplicates, {len(self.skipped)} skipped,"
            f" {self.ignored} other files ignored"
        )
        if self.unmatched_folders:
            text += (
                "; folders that are not classes (imported unlabeled): "
                + ", ".join(sorted(self.unmatched_folders))
            )
        return text

    def understood_lines(self) -> list[str]:
        return understood_lines(self.understood.as_dict())
