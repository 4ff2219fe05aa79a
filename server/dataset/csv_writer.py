"""The one CSV writer the product uses: cells that a spreadsheet would run as a formula get a
leading quote.

Excel, LibreOffice and Google Sheets read a cell that starts with = + - @ as a formula (and
skip a leading tab or carriage return before looking), so a class named =HYPERLINK(...) or a
file named @SUM(...) would run in the admin's spreadsheet. OWASP's advice is a single quote
in front, which shows the text as text: that is what `safe_cell` does. Only str cells are
touched: a number the code writes (a score of -0.5) is a number, and a quote would make it
text; a name that looks like a number ('-1') is still text a person typed, so it is quoted.
A number the code formats into a str itself (f"{score:.4f}") is text here; that is fine
only while it cannot be negative, so write the float itself where it can.

`read_cell` undoes it, for the places that read our own CSVs back. A value that already
starts with quotes before such a character gets one more, so every str round-trips exactly.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """The value as a spreadsheet should show it: a str that starts a formula, quoted."""
    if isinstance(value, str) and value.lstrip("'").startswith(FORMULA_START):
        return "'" + value
    return value


def read_cell(value: str) -> str:
    """The value `safe_cell` was given, from what it wrote."""
    if value.startswith("'") and value.lstrip("'").startswith(FORMULA_START):
        return value[1:]
    return value


class Writer:
    """csv.writer with every cell through `safe_cell`."""

    def __init__(self, file, **fmtparams: Any) -> None:
        self._writer = csv.writer(file, **fmtparams)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(value) for value in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(file, **fmtparams: Any) -> Writer:
    return Writer(file, **fmtparams)


class DictWriter(csv.DictWriter):
    """csv.DictWriter with every value through `safe_cell`; writerows goes through writerow,
    where the standard one would write past it."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow({key: safe_cell(value) for key, value in rowdict.items()})

    def writerows(self, rowdicts: Iterable[Mapping[str, Any]]) -> None:
        for rowdict in rowdicts:
            self.writerow(rowdict)
