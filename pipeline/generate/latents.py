"""`generate --latents FILE`: a user's own latent codes, decoded by the same job and sinks as sampled ones.

FILE (local or any Beam filesystem, e.g. gs://) is one of
  - .npy: float (n, d), C order; no labels (each record gets label -1, so only for unconditional models);
  - .npz: member `z` float (n, d) and optionally `labels` int (n,) (np.savez: members stored, read by seeking;
    np.savez_compressed works too, but every work unit then inflates its member from the start);
  - .parquet: column `latent` (list<float> of length d) and optionally `label` (int).

`LatentFile` plays the sampler's part in such a job: `open` checks the whole file on the driver (one line naming
the file and the fix for each problem), `plan` cuts its rows into work units of consecutive rows, and `codes`
reads one unit's rows on a worker, in file order: no randomness, so the records are a pure function of the file.
Light at import (numpy only): Beam's filesystems and pyarrow load when a file is read."""
from __future__ import annotations

import contextlib
import hashlib
import struct
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from pipeline.generate.planning import WorkUnit, unit_count
from vae_model.errors import DataError, UsageError

KINDS = {".npy": "npy", ".npz": "npz", ".parquet": "parquet", ".pq": "parquet"}
_CHUNK_ROWS = 65536  # rows per read while the driver checks the file: bounded memory for any n
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip member's local file header (30 bytes)


def _fs():
    from apache_beam.io.filesystems import FileSystems  # heavy: only when a file is read

    return FileSystems


def _open(path: str):
    from apache_beam.io.filesystem import CompressionTypes

    return _fs().open(path, compression_type=CompressionTypes.UNCOMPRESSED)


@dataclass
class LatentFile:
    """A checked latent file (see the module docstring). Picklable and small: the driver-side label array used by
    `plan`/`counts` is not pickled; workers read their rows' labels from the file."""

    path: str
    kind: str = ""
    rows: int = 0
    latent_dim: int = 0
    labeled: bool = False
    sha256: str = ""  # of the file's bytes: decides the records, so it is in the job's fingerprint
    _npy: dict = field(default_factory=dict, repr=False)  # "z"/"labels" -> (data offset, shape, dtype, compressed)
    _labels: np.ndarray | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------------------------ driver

    @classmethod
    def open(cls, path: str, latent_dim: int, num_classes: int, conditional: bool) -> "LatentFile":
        """The file at `path`, checked against a model of `latent_dim` and `num_classes`; DataError/UsageError (one
        line, naming the file and the fix) for the first problem."""
        kind = next((k for suffix, k in KINDS.items() if path.lower().endswith(suffix)), None)
        if kind is None:
            raise UsageError(f"Expected --latents to be a .npy, .npz or .parquet file, Received: latents={path}")
        try:
            exists = _fs().exists(path)
        except Exception as e:  # noqa: BLE001 - an unknown scheme, missing credentials, ...
            raise DataError(f"--latents {path} cannot be read ({type(e).__name__}: {_first(e)})") from None
        if not exists:
            raise DataError(f"--latents {path} does not exist; pass the path of a .npy, .npz or .parquet file")
        lf = cls(path, kind)
        with _unreadable(path, kind):
            lf._read_layout()
        if lf.rows == 0:
            raise DataError(f"--latents {path} holds no codes; give at least one row")
        if lf.latent_dim != latent_dim:
            raise DataError(f"--latents {path} has {lf.latent_dim}-D codes but the model's latent space is "
                            f"{latent_dim}-D; encode or sample the codes for this model")
        if conditional and not lf.labeled:
            raise DataError(f"--latents {path} has no labels, which this conditional model needs; use an .npz with "
                            f"`z` and `labels` or a Parquet file with `latent` and `label` columns")
        with _unreadable(path, kind):  # a damaged page or member shows only when its rows are read
            lf._check_values(num_classes, conditional)
        lf.sha256 = _sha256(path)
        return lf

    def _read_layout(self) -> None:
        """Shape, dtype and where the rows start, from the headers only."""
        with _open(self.path) as f:
            if self.kind == "npy":
                self._npy["z"] = _npy_layout(f, 0)
            elif self.kind == "npz":
                zf = zipfile.ZipFile(f)
                names = set(zf.namelist())
                if "z.npy" not in names:
                    raise ValueError(f"no member `z` (it has {sorted(n[:-4] for n in names)}); "
                                     "save it as np.savez(FILE, z=codes, labels=labels)")
                for member in ("z", "labels"):
                    if f"{member}.npy" in names:
                        self._npy[member] = _zip_member_layout(f, zf, f"{member}.npy")
            else:
                import pyarrow.parquet as pq

                self._parquet_schema(pq.ParquetFile(f))
        if self.kind != "parquet":
            shape, dtype = self._npy["z"][1], np.dtype(self._npy["z"][2])
            if len(shape) != 2 or dtype.kind != "f":
                raise ValueError(f"codes are {dtype} {shape}, not a 2-D float array (n, d)")
            self.rows, self.latent_dim = shape
            if "labels" in self._npy:
                lshape, ldtype = self._npy["labels"][1], np.dtype(self._npy["labels"][2])
                if ldtype.kind not in "iu" or lshape != (self.rows,):
                    raise ValueError(f"labels are {ldtype} {lshape}, not {self.rows} integers")
                self.labeled = True

    def _parquet_schema(self, pf) -> None:
        import pyarrow as pa

        schema = pf.schema_arrow
        if "latent" not in schema.names:
            raise ValueError(f"no `latent` column (it has {schema.names})")
        t = schema.field("latent").type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)) \
                or not pa.types.is_floating(t.value_type):
            raise ValueError(f"column `latent` is {t}, not a list of floats")
        if "label" in schema.names:
            if not pa.types.is_integer(schema.field("label").type):
                raise ValueError(f"column `label` is {schema.field('label').type}, not an integer")
            self.labeled = True
        self.rows = pf.metadata.num_rows
        first = next(pf.iter_batches(batch_size=1, columns=["latent"]), None)  # d from the first row
        self.latent_dim = int(_list_lengths(first.column(0))[0]) if first is not None and len(first) else 0

    def _check_values(self, num_classes: int, conditional: bool) -> None:
        """Every code finite, every label a class of the model (or -1, unlabeled, for an unconditional one);
        keeps the labels for plan/counts."""
        low = 0 if conditional else -1
        labels = []
        for start, z, lab in self._chunks():
            bad = ~np.isfinite(z).all(axis=1)
            if bad.any():
                row = start + int(np.flatnonzero(bad)[0])
                raise DataError(f"--latents {self.path}: row {row} has a NaN or infinite coordinate; give finite "
                                "codes")
            if lab is not None:
                out = (lab < low) | (lab >= num_classes)
                if out.any():
                    row = start + int(np.flatnonzero(out)[0])
                    unlabeled = "" if conditional else " or -1 (unlabeled)"
                    raise DataError(f"--latents {self.path}: row {row} has label {int(lab[row - start])}, not a "
                                    f"class of this model (0..{num_classes - 1}{unlabeled}); fix the labels")
                labels.append(lab)
        self._labels = np.concatenate(labels) if labels else np.full(self.rows, -1, np.int64)

    def _chunks(self):
        """(first row, z, labels or None) over the whole file, _CHUNK_ROWS rows at a time, one open handle."""
        with _open(self.path) as f:
            if self.kind == "parquet":
                import pyarrow.parquet as pq

                cols = ["latent", "label"] if self.labeled else ["latent"]
                start = 0
                for batch in pq.ParquetFile(f).iter_batches(batch_size=_CHUNK_ROWS, columns=cols,
                                                              use_threads=False):
                    z, lab = self._from_arrow(batch)
                    yield start, z, lab
                    start += len(z)
                return
            zf = self._zip(f)
            for start in range(0, self.rows, _CHUNK_ROWS):
                stop = min(self.rows, start + _CHUNK_ROWS)
                yield start, *self._read_npy_rows(f, zf, start, stop)

    def counts(self) -> dict[int, int]:
        """Records per class for the manifest ({-1: n} when unlabeled)."""
        labels, n = np.unique(self._driver_labels(), return_counts=True)
        return {int(c): int(k) for c, k in zip(labels, n)}

    def plan(self, capacity: int, num_shards: int) -> list[WorkUnit]:
        """Work units of consecutive rows, in file order, the same rule as planning.plan_units: U units, the
        smallest multiple of `num_shards` with at most `capacity` rows each (at most one unit per row), sizes
        differing by at most one row; unit u holds rows [u*n//U, (u+1)*n//U)."""
        if capacity <= 0:
            raise ValueError(f"Expected capacity >= 1, Received: capacity={capacity}")
        if num_shards <= 0:
            raise ValueError(f"Expected num_shards >= 1, Received: num_shards={num_shards}")
        n = self.rows
        n_units = unit_count(n, capacity, num_shards)
        bounds = [u * n // n_units for u in range(n_units + 1)]
        labels = self._driver_labels()
        units = []
        for u in range(n_units):  # one np.unique per unit, not per record
            a, b = bounds[u], bounds[u + 1]
            cls, cnt = np.unique(labels[a:b], return_counts=True)
            units.append(WorkUnit(u, tuple(cls.tolist()), tuple(cnt.tolist()), rows=(a, b)))
        return units

    def _driver_labels(self) -> np.ndarray:
        if self._labels is None:
            raise RuntimeError("LatentFile.plan/counts run on the driver, after LatentFile.open")
        return self._labels

    # ------------------------------------------------------------------------------------ workers

    def codes(self, unit: WorkUnit) -> tuple[np.ndarray, np.ndarray]:
        """(z float32 (n, d), labels int64 (n,)) of the unit's rows [start, stop), in file order; only those rows
        are read (Parquet: the row groups that hold them)."""
        if unit.rows is None:
            raise ValueError(f"Expected a work unit of latent-file rows, Received: unit={unit}")
        start, stop = unit.rows
        with _open(self.path) as f:
            if self.kind == "parquet":
                return self._read_parquet_rows(f, start, stop)
            return self._read_npy_rows(f, self._zip(f), start, stop)

    def _zip(self, f):
        """The npz's ZipFile when a member is compressed (read through zipfile); stored members need none."""
        return zipfile.ZipFile(f) if any(layout[3] for layout in self._npy.values()) else None

    def _read_npy_rows(self, f, zf, start: int, stop: int):
        z = _read_rows(f, zf, "z.npy", self._npy["z"], start, stop, self.latent_dim, self.path)
        if "labels" in self._npy:
            labels = _read_rows(f, zf, "labels.npy", self._npy["labels"], start, stop, None, self.path)
            labels = labels.astype(np.int64)
        else:
            labels = np.full(stop - start, -1, np.int64)
        return z.astype(np.float32, copy=False), labels

    def _read_parquet_rows(self, f, start: int, stop: int):
        """Rows [start, stop): only the row groups that hold them are read."""
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(f)
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        ends = np.cumsum(sizes)
        groups = [g for g, end in enumerate(ends.tolist()) if end > start and end - sizes[g] < stop]
        cols = ["latent", "label"] if self.labeled else ["latent"]
        first = int(ends[groups[0]] - sizes[groups[0]])
        table = pf.read_row_groups(groups, columns=cols).slice(start - first, stop - start)
        return self._from_arrow(table)

    def _from_arrow(self, table):
        """(z float32 (n, d), labels int64 or None) of a pyarrow Table/RecordBatch; ValueError on ragged/null."""
        import pyarrow as pa

        col = table.column("latent")
        arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if arr.null_count:
            raise DataError(f"--latents {self.path}: {arr.null_count} rows have no `latent`; drop or fill them")
        lengths = _list_lengths(arr)
        if len(arr) and (lengths != self.latent_dim).any():
            row = int(np.flatnonzero(lengths != self.latent_dim)[0])
            raise DataError(f"--latents {self.path}: a `latent` list has {int(lengths[row])} values, the others "
                            f"{self.latent_dim}; give every row the model's {self.latent_dim} coordinates")
        values = arr.flatten()
        if values.null_count:
            raise DataError(f"--latents {self.path}: `latent` holds null values; give finite numbers")
        z = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(arr), self.latent_dim)
        if not self.labeled:
            return z, np.full(len(arr), -1, np.int64)
        lab = table.column("label")
        if lab.null_count:
            raise DataError(f"--latents {self.path}: {lab.null_count} rows have no `label`; give every row one")
        return z, np.asarray(lab.to_numpy(), np.int64)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_labels"] = None  # driver only (plan/counts); can be large
        return state


# ---------------------------------------------------------------------------------------------- helpers

_WRITER = {"npy": "np.save(FILE, codes)", "npz": "np.savez(FILE, z=codes, labels=labels)",
           "parquet": "a `latent` list<float> column and an optional integer `label` column"}


@contextlib.contextmanager
def _unreadable(path: str, kind: str):
    """Any read or parse failure inside: one DataError line naming the file and how to write one."""
    try:
        yield
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, struct.error, EOFError) as e:
        raise DataError(f"--latents {path} is not a readable {kind} file ({type(e).__name__}: {_first(e)}); "
                        f"write it with {_WRITER[kind]}") from None


def _first(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with _open(path) as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _list_lengths(arr) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_fixed_size_list(arr.type):
        return np.full(len(arr), arr.type.list_size, np.int64)
    return np.asarray(pc.list_value_length(arr).to_numpy(zero_copy_only=False), np.int64)


def _npy_header(f):
    """(shape, dtype) of the .npy whose first byte `f` is at; leaves `f` at the first data byte."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if dtype.hasobject:
        raise ValueError("an object array; save numbers, not Python objects")
    if fortran and len(shape) > 1:
        raise ValueError("a Fortran-order array; save np.ascontiguousarray(codes)")
    return tuple(shape), dtype


def _npy_layout(f, base: int):
    """(absolute offset of the data, shape, dtype str, compressed=False) of the .npy at `base` of `f`."""
    f.seek(base)
    shape, dtype = _npy_header(f)
    return f.tell(), shape, dtype.str, False


def _zip_member_layout(f, zf: zipfile.ZipFile, name: str):
    """A member's .npy layout; for a stored (uncompressed, np.savez) member its data's absolute offset in `f`, so
    a worker seeks straight to its rows."""
    info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED:
        with zf.open(name) as m:
            shape, dtype = _npy_header(m)
        return None, shape, dtype.str, True
    f.seek(info.header_offset)
    header = _LOCAL_HEADER.unpack(f.read(_LOCAL_HEADER.size))
    if header[0] != b"PK\x03\x04":
        raise ValueError(f"member {name} has a damaged local header")
    return _npy_layout(f, info.header_offset + _LOCAL_HEADER.size + header[9] + header[10])


def _read_rows(f, zf, name: str, layout, start: int, stop: int, width: int | None, path: str) -> np.ndarray:
    """Rows [start, stop) of an .npy (the whole file or a zip member): one seek and one read when stored; a
    compressed member is inflated from its start up to `stop`."""
    offset, _, dtype, compressed = layout
    dtype = np.dtype(dtype)
    row_bytes = dtype.itemsize * (width or 1)
    n = stop - start
    if compressed:
        with zf.open(name) as m:
            _npy_header(m)
            m.seek(m.tell() + start * row_bytes)
            data = m.read(n * row_bytes)
    else:
        f.seek(offset + start * row_bytes)
        data = f.read(n * row_bytes)
    if len(data) != n * row_bytes:
        raise DataError(f"--latents {path}: {name} ends before row {stop}; the file is truncated, write it again")
    out = np.frombuffer(data, dtype)
    return out.reshape(n, width) if width else out
