"""Per-class label counts, with warnings for classes the export or a model will struggle with.

Two rules, each documented where it is applied:

- too small for the split: the export splits every class on its own with the largest-
  remainder rule (server/exporter.split_counts); a class is too small when that rule leaves
  some part the split asks for (a fraction above zero) without a single image of it. The
  smallest count that fills every part is reported, so the warning says how many to add.
- far below the others: fewer than RARE_FRACTION (10 %) of the median class count, among
  the classes that have labels. The median, not the mean or the largest class, so one huge
  class does not make every other one look rare. Classes the project defines that have no
  label at all are listed too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from statistics import median

from ..dataset.exporter import SPLIT_NAMES, split_counts

RARE_FRACTION = 0.10


@dataclass
class ClassCount:
    label: Hashable
    count: int
    share: float  # of all labels
    split: list[int]  # images per export part (train, val, test), as the export would cut
    warnings: list[str] = field(default_factory=list)


@dataclass
class BalanceReport:
    classes: list[ClassCount]  # largest first
    total: int
    median: float
    min_for_split: int  # the fewest labels that put one image in every part of the split
    warnings: list[str] = field(default_factory=list)  # every class's, in order


def min_count_for_split(fractions: Sequence[Fraction | float]) -> int:
    """The smallest class size that gives every part with a fraction above zero at least one
    image under the export's largest-remainder rule."""
    fractions = tuple(Fraction(f).limit_denominator(10**9) for f in fractions)
    wanted = [f > 0 for f in fractions]
    n = sum(wanted)
    # Enough is always reached by 1 / (smallest part) + the number of parts; search up to it.
    smallest = min(f for f in fractions if f > 0)
    for count in range(max(n, 1), int(1 / smallest) + len(fractions) + 2):
        parts = split_counts(count, fractions)
        if all(c > 0 for c, w in zip(parts, wanted, strict=True) if w):
            return count
    raise AssertionError("unreachable: the bound always fills every part")


def check_balance(
    labels: Iterable[Hashable] | Mapping[Hashable, int],
    split: Sequence[Fraction | float] = (Fraction(8, 10), Fraction(1, 10), Fraction(1, 10)),
    classes: Iterable[Hashable] = (),
    rare_fraction: float = RARE_FRACTION,
) -> BalanceReport:
    """Counts per class from `labels` (one label per image, or a mapping label -> count),
    with warnings. `split`: the export's fractions (train, val, test); `classes`: every
    class the project defines, so one with no labels yet is reported as well."""
    counts = Counter(labels) if not isinstance(labels, Mapping) else Counter(dict(labels))
    for label in classes:
        counts.setdefault(label, 0)
    fractions = tuple(Fraction(f).limit_denominator(10**9) for f in split)
    if sum(fractions) != 1:
        raise ValueError(f"split fractions must sum to 1 (got {[str(f) for f in fractions]})")
    total = sum(counts.values())
    labeled = [c for c in counts.values() if c > 0]
    middle = float(median(labeled)) if labeled else 0.0
    needed = min_count_for_split(fractions)
    parts = [name for name, f in zip(SPLIT_NAMES, fractions, strict=False) if f > 0]
    rows = []
    for label, count in sorted(counts.items(), key=lambda item: (-item[1], str(item[0]))):
        row = ClassCount(
            label, count, count / total if total else 0.0, split_counts(count, fractions)
        )
        if count == 0:
            row.warnings.append(f"class {label!r} has no labels")
        elif count < needed:
            empty = [
                name
                for name, c, f in zip(SPLIT_NAMES, row.split, fractions, strict=False)
                if f > 0 and c == 0
            ]
            row.warnings.append(
                f"class {label!r} has {count} label{'s' * (count != 1)}: too few to put one in "
                f"each of {', '.join(parts)} ({', '.join(empty)} would get none); "
                f"{needed} needed"
            )
        if 0 < count < rare_fraction * middle:
            row.warnings.append(
                f"class {label!r} has {count} label{'s' * (count != 1)}, under "
                f"{rare_fraction:.0%} of the median class ({middle:g})"
            )
        rows.append(row)
    return BalanceReport(
        classes=rows,
        total=total,
        median=middle,
        min_for_split=needed,
        warnings=[w for row in rows for w in row.warnings],
    )
