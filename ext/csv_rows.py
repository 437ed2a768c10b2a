"""csv.reader for statement files: a malformed CSV line is StatementInvalid naming its line.

csv.reader raises its own `csv.Error` (a newline or NUL inside an unquoted field, a field over the
size limit), which callers of `parse_statement` do not expect: they handle `ChannelError`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable

from ext.errors import StatementInvalid


class CsvRows:
    """Iterates like csv.reader (with its `line_num`); `line_no` gives the file's line for errors."""

    def __init__(self, lines: Iterable[str], line_no: Callable[[], int] | None = None) -> None:
        self._reader = csv.reader(lines)
        self._line_no = line_no

    @property
    def line_num(self) -> int:
        return self._reader.line_num

    def __iter__(self) -> CsvRows:
        return self

    def __next__(self) -> list[str]:
        try:
            return next(self._reader)
        except csv.Error as exc:
            line_no = self._line_no() if self._line_no is not None else self._reader.line_num
            raise StatementInvalid(f"malformed CSV: {exc}", line_no=line_no) from exc
