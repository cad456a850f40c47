"""The rows of a bulk send's CSV file: streamed, checked, numbered.

The file is UTF-8 (a byte-order mark is skipped) with a header row; each data row becomes a
dict from column name to text, the template's context. Rows are read one at a time, never the
whole file, so a file of millions of rows costs the memory of one.

Anything wrong with the file is :class:`~fluxmail.cli.common.BadFlagsError` (exit 1) naming
the line: bulk mail must not go out from a file whose columns may be shifted.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from fluxmail.cli.common import BadFlagsError

if TYPE_CHECKING:
    from _csv import Reader as CsvReader

# MessageTemplate.render(to, **context) takes these names itself, so a column with one of them
# cannot reach the template (Python raises TypeError: "got multiple values for argument").
RESERVED_COLUMNS = frozenset({"to", "self"})


class Row(dict[str, str]):
    """One data row, column name to text. ``number`` is its place among the data rows (the
    first row after the header is 1); it is an attribute, not an item, so it stays out of the
    template's context."""

    def __init__(self, number: int, items: dict[str, str]) -> None:
        super().__init__(items)
        self.number = number


class CsvRows:
    """A CSV file whose header has been checked; :meth:`__iter__` streams its rows.

    Raises BadFlagsError if the file cannot be read, has no header, repeats a column name,
    lacks ``to_column`` or has a column the template cannot take (see RESERVED_COLUMNS).
    """

    def __init__(self, path: Path, to_column: str) -> None:
        self.path = path
        self.to_column = to_column
        with self._open() as file:
            self.header = self._read_header(csv.reader(self._decoded(file)))

    def __iter__(self) -> Iterator[Row]:
        """Every data row, in order. BadFlagsError for a row whose field count differs from
        the header's, or text that is not UTF-8 or not CSV."""
        with self._open() as file:
            reader = csv.reader(self._decoded(file))
            self._next(reader)  # the header, checked in __init__
            number = 0
            while (fields := self._next(reader)) is not None:
                if not fields:
                    continue  # a blank line, skipped as csv.DictReader would
                number += 1
                if len(fields) != len(self.header):
                    raise self._bad(
                        reader.line_num,
                        f"{len(fields)} fields where the header has {len(self.header)}",
                    )
                yield Row(number, dict(zip(self.header, fields, strict=True)))

    def _open(self) -> BinaryIO:
        try:
            return self.path.open("rb")
        except OSError as exc:
            raise BadFlagsError(f"cannot read --csv {self.path}: {exc.strerror or exc}") from None

    def _decoded(self, file: BinaryIO) -> Iterator[str]:
        """The file's lines as text, line endings kept (what csv.reader wants).

        Decoded line by line rather than through a text wrapper, which decodes ahead in
        blocks: this way a decoding error names the line it is on.
        """
        for number, line in enumerate(file, 1):
            try:
                yield (line.removeprefix(codecs.BOM_UTF8) if number == 1 else line).decode()
            except UnicodeDecodeError:
                raise self._bad(number, "not UTF-8 text") from None

    def _read_header(self, reader: CsvReader) -> list[str]:
        header = self._next(reader)
        if not header:
            raise BadFlagsError(f"--csv {self.path} has no header row (column names first)")
        for name in header:
            if header.count(name) > 1:
                raise self._bad(1, f"the column {name!r} appears twice in the header")
        if self.to_column not in header:
            raise BadFlagsError(
                f"--csv {self.path} has no column {self.to_column!r} for the addresses "
                f"(its columns: {', '.join(header)}); name the right one with --to-column"
            )
        if reserved := RESERVED_COLUMNS.intersection(header):
            raise self._bad(
                1,
                f"a column cannot be named {sorted(reserved)[0]!r}, a name the template "
                "renderer takes for itself; rename the column (and --to-column)",
            )
        return header

    def _next(self, reader: CsvReader) -> list[str] | None:
        """The next record, None at the end; decoding and CSV errors become BadFlagsError."""
        try:
            return next(reader, None)
        except csv.Error as exc:
            raise self._bad(reader.line_num, str(exc)) from None
        except OSError as exc:
            raise BadFlagsError(f"cannot read --csv {self.path}: {exc.strerror or exc}") from None

    def _bad(self, line: int, problem: str) -> BadFlagsError:
        return BadFlagsError(f"cannot use --csv {self.path}: line {line}: {problem}")
