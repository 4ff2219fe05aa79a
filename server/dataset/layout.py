"""How an image folder's layout is read: which folders hold classes, which hold images not
sorted yet or doubtful ones, and which are a data set's train/val/test split.

    DIR/x.png                    unlabeled (as every image directly in DIR)
    DIR/<class>/...              labeled <class> (an 'import' label), at any depth below
    DIR/<class>/maybe/...        an 'unsure' answer, <class> kept as its hint
    DIR/maybe/..., DIR/unsure/   an 'unsure' answer (DIR/maybe/<class>/...: with that hint)
    DIR/pool/ and the other UNLABELED_FOLDERS, or a --unlabeled-folder: unlabeled
    DIR/<other>/...              unlabeled, and named in the report as not a class
    DIR/train/<class>/..., DIR/val/..., DIR/test/...: the same rules below each, the split
                                 kept on the image (what an exported imagefolder, and most
                                 public data sets, look like)

Folder names are matched without regard to case, except a class's, which is exact; a folder
named exactly like a class is that class, whatever else its name looks like (the report
warns), unless the person named it with --unlabeled-folder for this import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePath

# Documented in the README; compared casefolded.
UNLABELED_FOLDERS = ("unlabeled", "unlabelled", "_unlabeled", "unsorted", "pool", "todo", "new")
MAYBE_FOLDERS = ("maybe", "unsure")
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test"}


class ImportFailed(Exception):
    """The import as a whole cannot run (no such folder, a bad label file); single bad
    files never raise. Nothing in the project has changed when it is raised."""


def shown(path: str | Path) -> str:
    """A path as people (and SQLite) can take it: bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def undecodable(path: str | Path) -> bool:
    """os.walk turns name bytes that are not UTF-8 into lone surrogates. Such a path cannot
    be stored (SQLite wants UTF-8), printed or shown in a page, so it cannot be imported."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def subfolders(folder: Path) -> list[str]:
    """The sub-folders an import enters, sorted: hidden and linked ones, and names that are
    not UTF-8, are left out, as scan() leaves them out."""
    return sorted(
        p.name for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not p.is_symlink()
        and not undecodable(p.name)
    )


def folded(names) -> frozenset[str]:
    return frozenset(name.casefold() for name in names)


def is_unlabeled_name(name: str, extra: frozenset[str] = frozenset()) -> bool:
    return name.casefold() in UNLABELED_FOLDERS or name.casefold() in extra


def is_maybe_name(name: str) -> bool:
    return name.casefold() in MAYBE_FOLDERS


def split_folders(root: Path, class_names=(), extra_unlabeled=frozenset()) -> frozenset[str]:
    """DIR's first-level folders that are a split: named like one and not a class, once one
    of them holds a sub-folder that is not a pool or maybe folder (then a flat `test/` of
    unlabeled images beside `train/<class>/` is a split too). A vehicle class `train/` of
    images, even with its own `train/maybe/`, stays a class."""
    named = [name for name in subfolders(root)
             if name.casefold() in SPLIT_FOLDERS and name not in class_names]
    if any(not is_unlabeled_name(inner, extra_unlabeled) and not is_maybe_name(inner)
           for name in named for inner in subfolders(root / name)):
        return frozenset(named)
    return frozenset()


def class_folders(folder: str | Path, unlabeled=()) -> list[str]:
    """The classes a folder's layout names: its first-level sub-folders, or below split
    folders the second level; folders of unlabeled or doubtful images are not classes."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ImportFailed(f"{shown(folder)} is not a folder")
    extra = folded(unlabeled)
    splits = split_folders(root, (), extra)
    names: set[str] = set()
    for name in subfolders(root):
        for candidate in subfolders(root / name) if name in splits else [name]:
            if not is_unlabeled_name(candidate, extra) and not is_maybe_name(candidate):
                names.add(candidate)
    return sorted(names)


@dataclass(frozen=True)
class Placement:
    """What the layout says of one image."""

    answer: str | None  # 'label', 'unsure', or None: unlabeled
    class_id: int | None  # the label, or an unsure answer's hint
    split: str | None  # train | val | test, from a split folder
    folder: str | None  # the folder that decided, relative to DIR ('pool', 'train/3/maybe')
    unmatched: bool = False  # a folder named like no class, nor like a pool or maybe folder


@dataclass(frozen=True)
class Layout:
    class_ids: dict[str, int]
    extra_unlabeled: frozenset[str] = frozenset()  # --unlabeled-folder names, casefolded
    splits: frozenset[str] = frozenset()  # DIR's first-level folders that are a split

    @classmethod
    def of(cls, root: Path, class_ids: dict[str, int], unlabeled=()) -> Layout:
        extra = folded(unlabeled)
        return cls(class_ids, extra, split_folders(root, class_ids, extra))

    def place(self, rel: PurePath) -> Placement:
        """Where the image at `rel` (relative to DIR) belongs; see the module docstring."""
        folders = rel.parts[:-1]
        split, skip = None, 0
        if folders and folders[0] in self.splits:
            split, skip = SPLIT_FOLDERS[folders[0].casefold()], 1
        inner = folders[skip:]

        def where(depth: int) -> str | None:
            return "/".join(folders[: skip + depth]) or None

        if not inner:  # directly in DIR, or in a split folder
            return Placement(None, None, split, where(0))
        first = inner[0]

        if first.casefold() in self.extra_unlabeled:
            return Placement(None, None, split, where(1))
        if first in self.class_ids:
            class_id = self.class_ids[first]
            if len(inner) > 1 and is_maybe_name(inner[1]):
                return Placement("unsure", class_id, split, where(2))
            return Placement("label", class_id, split, where(1))
        if is_unlabeled_name(first):
            return Placement(None, None, split, where(1))
        if is_maybe_name(first):
            hint = self.class_ids.get(inner[1]) if len(inner) > 1 else None
            return Placement("unsure", hint, split, where(1))
        return Placement(None, None, split, where(1), unmatched=True)
