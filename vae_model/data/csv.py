"""CSV sources: `csv:PATH` or a path ending .csv / .csv.gz; one image per row (see vae_model.data)."""
from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass

import numpy as np

from vae_model.data.dataset import checked_split, square_side
from vae_model.data.files import GZIP_MAGIC, is_url, one_line, opener
from vae_model.errors import DataError

KIND = "csv"


def claims(path: str) -> bool:
    return path.lower().endswith((".csv", ".csv.gz"))


def read(path, unlabeled_value, as_test: bool = False):
    """(train, None): the whole file is the train split."""
    return checked_split(path, *read_arrays(path), unlabeled_value), None


def read_arrays(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Fast path with pyarrow and strict column types; on failure a slow scan finds the bad cell."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    source = opener(path)  # local or gs:// (fetched once)
    with source() as f:
        gz = f.read(2) == GZIP_MAGIC
    layout = _csv_layout(path, gz, source)
    names = [f"c{i}" for i in range(layout.ncols)]
    types = {n: pa.uint8() for n in names}
    if layout.label_col is not None:
        types[names[layout.label_col]] = pa.int64()
    try:
        with pa.input_stream(source() if is_url(path) else str(path), compression="gzip" if gz else None) as stream:
            table = pcsv.read_csv(
                stream,
                read_options=pcsv.ReadOptions(column_names=names, skip_rows=0 if layout.header is None else 1),
                convert_options=pcsv.ConvertOptions(column_types=types, null_values=[""],
                                                    strings_can_be_null=False, quoted_strings_can_be_null=False))
    except (pa.ArrowException, OSError, ValueError, EOFError) as e:
        problem = _find_csv_problem(path, gz, layout, source)
        raise DataError(problem or f"{path}: cannot parse CSV ({one_line(e)}); "
                                   f"check it is comma-separated with {layout.describe()}") from e
    pixel_names = [n for i, n in enumerate(names) if i != layout.label_col]
    if table.num_rows == 0:
        raise DataError(f"{path}: has no data rows; pass a CSV with at least one image")
    if any(table.column(n).null_count for n in pixel_names):
        raise DataError(_find_csv_problem(path, gz, layout, source) or f"{path}: has empty pixel cells; fill them in")
    images = np.stack([table.column(n).to_numpy() for n in pixel_names], axis=1)
    labels = None
    if layout.label_col is not None:
        labels = pc.fill_null(table.column(names[layout.label_col]), -1).to_numpy()
    return images.reshape(-1, layout.side, layout.side), labels


@dataclass(frozen=True)
class _CsvLayout:
    header: list[str] | None
    ncols: int
    label_col: int | None
    side: int

    def describe(self) -> str:
        pixels = f"{self.side * self.side} pixel columns"
        return f"a label column and {pixels}" if self.label_col is not None else pixels


def _csv_layout(path, gz: bool, source) -> _CsvLayout:
    try:
        with _open_text(source, gz) as f:
            first = next(csv.reader(f), None)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read CSV ({one_line(e)}); check the file") from e
    if not first:
        raise DataError(f"{path}: is empty; expected a header row and one image per row")
    cells = [c.strip().lstrip("\ufeff").strip('"').strip() for c in first]
    numeric = all(re.fullmatch(r"[+-]?\d+", c) for c in cells)
    # some exports name the pixel columns 0..N-1 or 1..N: that row is a header, not an image
    counting = numeric and [int(c) for c in cells] in (list(range(len(cells))), list(range(1, len(cells) + 1)))
    header = None if numeric and not counting else cells
    ncols = len(cells)
    if header is not None:
        lowered = [c.lower() for c in header]
        label_col = lowered.index("label") if "label" in lowered else None
    else:
        label_col = 0 if square_side(ncols - 1) else None
    pixels = ncols - (label_col is not None)
    side = square_side(pixels)
    if side is None:
        hint = ("; is the label column named something other than 'label'?"
                if header is not None and label_col is None and square_side(pixels - 1) else
                "; expected a label column plus H*W pixel columns (e.g. 784 = 28x28)")
        raise DataError(f"{path}: {pixels} pixel columns do not form a square image{hint}")
    return _CsvLayout(header, ncols, label_col, side)


def _open_text(source, gz: bool):
    """Text of the file `source()` opens (files.opener), gunzipped when `gz`."""
    binary = source()
    if gz:
        return gzip.open(binary, "rt", encoding="utf-8", errors="replace", newline="")
    return io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")


def _find_csv_problem(path, gz: bool, layout: _CsvLayout, source) -> str | None:
    """Scan row by row for the first bad cell and describe it (only run after the fast path failed)."""
    try:
        with _open_text(source, gz) as f:
            reader = csv.reader(f)
            if layout.header is not None:
                next(reader, None)
            row = 0
            for cells in reader:
                if not cells:
                    continue
                row += 1
                where = f"{path}: row {row} (line {reader.line_num})"
                if len(cells) != layout.ncols:
                    return (f"{where} has {len(cells)} columns, expected {layout.ncols} ({layout.describe()}); "
                            f"fix the CSV or pass the right file")
                for j, cell in enumerate(cells):
                    problem = _cell_problem(cell.strip(), j == layout.label_col)
                    if problem:
                        name = layout.header[j] if layout.header is not None else f"#{j + 1}"
                        return f"{where}, column {name!r}: {problem}; fix the CSV"
    except (OSError, EOFError, csv.Error) as e:
        return f"{path}: cannot read CSV ({one_line(e)}); check the file is complete"
    return None


def _cell_problem(cell: str, is_label: bool) -> str | None:
    if is_label:
        return None if cell == "" or re.fullmatch(r"[+-]?\d+", cell) else f"label {cell!r} is not an integer"
    if not re.fullmatch(r"[+-]?\d+", cell):
        return f"pixel {cell!r} is not an integer 0..255"
    if not 0 <= int(cell) <= 255:
        return f"pixel {cell} is outside 0..255"
    return None

