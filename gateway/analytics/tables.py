"""Report tables and their renderings: the terminal, CSV and Parquet (for a warehouse), JSON.

A :class:`Table` is a name, typed columns and rows of plain values. The dashboard, ``voicegw
report`` and the exports all render the same tables, so the numbers agree wherever they are read.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

ColumnType = Literal["text", "int", "float", "number", "percent", "seconds"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = "text"


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]

    def column(self, name: str) -> list[Any]:
        index = [c.name for c in self.columns].index(name)
        return [row[index] for row in self.rows]

    def as_dicts(self) -> list[dict[str, Any]]:
        names = [c.name for c in self.columns]
        return [dict(zip(names, row)) for row in self.rows]


def table(name: str, title: str, columns: Sequence[tuple[str, ColumnType]], rows: Sequence[Sequence[Any]]) -> Table:
    return Table(name, title, tuple(Column(n, t) for n, t in columns), tuple(tuple(r) for r in rows))


def cell(value: Any, kind: ColumnType) -> str:
    """A value as a person reads it: percentages with one decimal, seconds with three."""
    if value is None:
        return "-"
    if kind == "percent":
        return f"{value * 100:.1f} %"
    if kind == "seconds":
        return f"{value:.3f} s"
    if kind == "float":
        return f"{value:.2f}"
    if kind == "number":
        return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
    return str(value)


def render_text(tables: Sequence[Table]) -> str:
    """Aligned plain-text tables for the terminal."""
    out: list[str] = []
    for t in tables:
        header = [c.name for c in t.columns]
        body = [[cell(v, c.type) for v, c in zip(row, t.columns)] for row in t.rows]
        widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]
        out.append(t.title)
        out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        out.append("  ".join("-" * w for w in widths))
        if not body:
            out.append("(none)")
        for r in body:
            out.append("  ".join(v.rjust(w) if c.type != "text" else v.ljust(w)
                                 for v, w, c in zip(r, widths, t.columns)).rstrip())
        out.append("")
    return "\n".join(out)


def to_csv(t: Table) -> str:
    """One table as CSV: a header row, then raw values (fractions, not percentages)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.name for c in t.columns])
    writer.writerows(["" if v is None else v for v in row] for row in t.rows)
    return buffer.getvalue()


_ARROW_TYPES = {"text": "string", "int": "int64", "float": "float64", "number": "float64", "percent": "float64",
                "seconds": "float64"}


def write_parquet(t: Table, path: Path) -> None:
    """One table as a Parquet file with typed columns (pyarrow)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c.name, getattr(pa, _ARROW_TYPES[c.type])()) for c in t.columns])
    columns = {c.name: [row[i] for row in t.rows] for i, c in enumerate(t.columns)}
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path)


def export(tables: Sequence[Table], directory: Path, fmt: Literal["csv", "parquet"]) -> list[Path]:
    """Every table into ``directory`` as ``<name>.csv`` or ``<name>.parquet``; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for t in tables:
        path = directory / f"{t.name}.{fmt}"
        if fmt == "csv":
            path.write_text(to_csv(t), encoding="utf-8")
        else:
            write_parquet(t, path)
        written.append(path)
    return written
