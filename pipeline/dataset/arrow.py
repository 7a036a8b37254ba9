"""The Arrow/Parquet record layout: the schema, RecordBatch <-> Arrow table, and the one place that unpacks
the `image` column into a uint8 array."""
from __future__ import annotations

import functools
import json

import numpy as np
import pyarrow as pa

from pipeline.dataset.batch import RecordBatch, single_run, split_runs, uniform_rows

SCHEMA_VERSION = b"1"
_INT32_MAX = np.iinfo(np.int32).max
DEFAULT_NUM_CLASSES = 10  # MNIST digits; a job with other classes passes its own count
_LATENT_TYPE = pa.list_(pa.field("element", pa.float32(), nullable=False))


def class_names(num_classes: int = DEFAULT_NUM_CLASSES) -> list[str]:
    """The class names the schema, TFDS features and dataset card give labels 0..num_classes-1."""
    return [str(c) for c in range(int(num_classes))]


def hf_features(num_classes: int = DEFAULT_NUM_CLASSES) -> dict:
    """Hugging Face `datasets` Features (as the dict `Features.to_dict()` writes) of `arrow_schema`.

    `datasets` takes a field's feature from the b"huggingface" schema metadata only when its Arrow type equals the
    feature's (nullable included), otherwise it infers one; so `label` is nullable to become a ClassLabel.
    `image` stays binary: an Array2D column (nested uint8 lists) made Parquet writes 4.7x slower and
    `load_dataset` + numpy 3x slower than binary + one reshape (measured; see the dataset card's loading code).
    """
    return {
        "id": {"dtype": "int64", "_type": "Value"},
        "label": {"names": class_names(num_classes), "_type": "ClassLabel"},
        "image": {"dtype": "binary", "_type": "Value"},
        "latent": {"feature": {"dtype": "float32", "_type": "Value"}, "_type": "List"},
        "sampler": {"dtype": "string", "_type": "Value"},
        "model_id": {"dtype": "string", "_type": "Value"},
        "seed": {"dtype": "int64", "_type": "Value"},
    }


@functools.lru_cache(maxsize=64)  # built once per shape, not per batch (to_arrow)
def arrow_schema(height: int, width: int, num_classes: int = DEFAULT_NUM_CLASSES) -> pa.Schema:
    """The Arrow schema of one record, with image size, schema version and Hugging Face features as metadata."""
    # The list child is named "element" so the Parquet-compliant nested encoding
    # (use_compliant_nested_type=True) round-trips to the identical Arrow type.
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("label", pa.int64()),  # nullable only so `datasets` reads it as a ClassLabel; never null
            pa.field("image", pa.binary(), nullable=False),
            pa.field("latent", _LATENT_TYPE, nullable=False),
            pa.field("sampler", pa.string(), nullable=False),
            pa.field("model_id", pa.string(), nullable=False),
            pa.field("seed", pa.int64(), nullable=False),
        ],
        metadata={
            b"height": str(int(height)).encode(),
            b"width": str(int(width)).encode(),
            b"vae_augment_schema": SCHEMA_VERSION,
            b"huggingface": json.dumps({"info": {"features": hf_features(num_classes)}}).encode(),
        },
    )


def _uniform_offsets(n: int, item_size: int) -> pa.Buffer:
    if n * item_size > _INT32_MAX:
        raise ValueError(f"{n} x {item_size} items overflow an Arrow column's int32 offsets; use smaller batches")
    return pa.py_buffer((np.arange(n + 1, dtype=np.int64) * item_size).astype(np.int32))


def _fixed_width_binary(buffer: np.ndarray, n: int, item_size: int, arrow_type: pa.DataType) -> pa.Array:
    return pa.Array.from_buffers(arrow_type, n, [None, _uniform_offsets(n, item_size), pa.py_buffer(buffer)])


def _repeated_string(value: str, n: int) -> pa.Array:
    encoded = value.encode("utf-8")
    return _fixed_width_binary(np.frombuffer(encoded * n, np.uint8), n, len(encoded), pa.string())


def to_arrow(batch: RecordBatch) -> pa.Table:
    """Zero-copy (except the per-batch constant columns) Arrow table in `arrow_schema` layout."""
    n = len(batch)
    latent = pa.Array.from_buffers(
        _LATENT_TYPE,
        n,
        [None, _uniform_offsets(n, batch.latent_dim)],
        children=[pa.array(batch.latents.reshape(-1))],
    )
    columns = [
        pa.array(batch.ids),
        pa.array(batch.labels),
        _fixed_width_binary(batch.images, n, batch.height * batch.width, pa.binary()),
        latent,
        _repeated_string(batch.sampler, n),
        _repeated_string(batch.model_id, n),
        pa.array(np.full(n, batch.seed, np.int64)),
    ]
    return pa.Table.from_arrays(columns, schema=arrow_schema(batch.height, batch.width))


def read_parquet_table(data: bytes, columns=None) -> pa.Table:
    """A whole Parquet file's bytes as a Table, read on this thread. Arrow never holds a Python file object here:
    read_table through one aborted or hung ~1 interpreter exit in 100 (cleanup that needs the GIL after Python has
    shut down, apache/arrow#50482, #33975), even single-threaded; and one thread reads these shards 2x faster."""
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data), columns=columns, use_threads=False)


def images_from_column(column: pa.Array | pa.ChunkedArray, height: int, width: int) -> np.ndarray:
    """The `image` column (binary, H*W raw bytes per row) as uint8 (n, height, width).

    A view of the Arrow buffer (no copy; copy it before writing to it) when the column is one chunk; chunks are
    concatenated otherwise. ValueError naming the first bad row (0-based) when a value is null or not
    height*width bytes.
    """
    if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
        raise ValueError(f"column 'image' is {column.type}, expected binary")
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts, first_row = [], 0
    for chunk in chunks:
        parts.append(_chunk_images(chunk, height, width, first_row))
        first_row += len(chunk)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros((0, height, width), np.uint8)


def _chunk_images(chunk: pa.Array, height: int, width: int, first_row: int) -> np.ndarray:
    n, size = len(chunk), height * width
    if chunk.null_count:
        bad = int(np.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"row {first_row + bad}: image is null")
    if n == 0:
        return np.zeros((0, height, width), np.uint8)
    _, offsets_buffer, data = chunk.buffers()
    dtype = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype, n + 1, chunk.offset * np.dtype(dtype).itemsize)
    sizes = np.diff(offsets)
    bad = np.flatnonzero(sizes != size)
    if bad.size:
        row = int(bad[0])
        raise ValueError(f"row {first_row + row}: image has {sizes[row]} bytes, expected {size} "
                         f"({height}x{width})")
    return np.frombuffer(data, np.uint8, n * size, int(offsets[0])).reshape(n, height, width)


def _check_metadata(schema: pa.Schema, height: int, width: int) -> None:
    meta = schema.metadata or {}
    for key, expected in ((b"height", height), (b"width", width)):
        if key in meta and int(meta[key]) != expected:
            raise ValueError(f"table metadata says {key.decode()}={meta[key].decode()}, caller expects {expected}")


def arrow_batches(table: pa.Table, height: int, width: int) -> list[RecordBatch]:
    """Split a table (e.g. a whole Parquet shard) into RecordBatches, one per run of (sampler, model_id, seed)."""
    _check_metadata(table.schema, height, width)
    if table.num_rows == 0:
        return []
    images = images_from_column(table.column("image"), height, width)
    latent = table.column("latent").combine_chunks()
    d = uniform_rows(latent.offsets.to_numpy(), None, "latent")
    latents = latent.flatten().to_numpy().reshape(len(images), d)
    # Dictionary-encode the per-batch strings so run detection compares small ints, not strings.
    sampler = table.column("sampler").combine_chunks().dictionary_encode()
    model_id = table.column("model_id").combine_chunks().dictionary_encode()
    return split_runs(
        table.column("id").to_numpy(), table.column("label").to_numpy(), images, latents,
        table.column("seed").to_numpy(), (sampler.indices.to_numpy(), model_id.indices.to_numpy()),
        lambda row: (sampler[row].as_py(), model_id[row].as_py()))


def from_arrow(table: pa.Table, height: int, width: int) -> RecordBatch:
    """Inverse of `to_arrow`; the table must hold a single (sampler, model_id, seed) run."""
    return single_run(arrow_batches(table, height, width), height, width, "table rows", "arrow_batches")
