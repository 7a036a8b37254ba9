"""Beam sinks writing keyed RecordBatches as exactly K Parquet shards and K TFRecord shards.

Input elements are `(shard, RecordBatch)` with 0 <= shard < K. Both sinks are `fileio.WriteToFiles` with
the shard as the destination and a `FileSink` per format, so every shard is written by one open file in
the bundle that produces it: decoded data is never shuffled. Beam writes temp files and renames them on
finalize, on any Beam filesystem (local, gs://); no partial files are left behind on success.

Precondition (what `generate` guarantees with one element per shard, see transforms.GenerateShards): all
batches of one shard are produced in the same bundle. If a shard's batches arrive in two bundles the job
fails with `ShardSplitAcrossBundles` instead of writing two files for one shard.

Each sink checksums its bytes as it writes them (the temp file's content is the final file's): CRC32C always
(hardware-accelerated, and what GCS stores per object), sha256 too when asked (`checksums=("crc32c", "sha256")`).
Given a `stats_dir` it leaves a small JSON per shard there with rows, bytes and the checksums, so the manifest does
not have to read every shard back.

Each open shard encodes and writes on a writer thread of its own, one batch behind the bundle's thread, so
Arrow/Parquet encoding, TFRecord framing, checksums and file writes (which release the GIL for most of their time)
overlap with decoding and with the other format's writer. A local file is written with O_DIRECT, around the
page cache (_DirectWriter). At its planned last batch the writer thread also finishes the file (footer; a local
file's staged tail, a sync and a drop from the page cache) and ends, while the bundle's thread goes on to the
next shard; flush() waits for it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import threading
import uuid

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.value_provider import StaticValueProvider
from apache_beam.transforms.window import GlobalWindows

from pipeline.dataset.arrow import arrow_schema, to_arrow
from pipeline.dataset.batch import RecordBatch
from pipeline.dataset.digest import Checksums
from pipeline.dataset.example import encode_tfrecords_buffer
from pipeline.dataset.layout import FILE_PREFIX, shard_name, write_shard_stats
from pipeline.dataset.publish import delete_tree
from pipeline.generate import faults

# Measured on decoded MNIST digits (README, Performance; benchmarks/record_path.py): uncompressed writes ~3x faster
# than snappy or lz4 (2.1 vs 6.9 / 6.6 s per 1M records) and reads as fast; snappy halves the bytes (929 -> 434 per
# record) for anyone who pays more for storage than for CPU. Dictionaries of unique 784-byte images never pay off.
# One row group per batch (4096 rows, ~3.8 MB): no buffering across batches, and readers get large row groups.
DEFAULT_PARQUET_CODEC = "none"
PARQUET_USE_DICTIONARY = False
# Min/max statistics only where they help readers filter; the image/latent ones are useless.
PARQUET_STATISTICS = ["id", "label", "seed"]
CHECKSUMS = ("crc32c", "sha256")
DEFAULT_CHECKSUMS = ("crc32c",)
_QUEUE_DEPTH = 2  # batches waiting per writer thread: bounds memory, enough to keep the writer busy
_IDLE_EXIT_SECONDS = 600.0  # a writer whose bundle died without flush() stops waiting after this


class ShardSplitAcrossBundles(RuntimeError):
    """One shard's batches were written by more than one bundle (the sink's input precondition was broken)."""


def _check_shards(num_shards: int) -> int:
    if int(num_shards) < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    return int(num_shards)


def check_checksums(checksums) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(["crc32c", *checksums]))  # crc32c is always kept: GCS compares with it
    bad = [c for c in names if c not in CHECKSUMS]
    if bad:
        raise ValueError(f"Expected checksums among {CHECKSUMS}. Received: checksums={tuple(checksums)}")
    return names


_DIRECT_ALIGN = 4096  # O_DIRECT wants block-aligned buffers, lengths and offsets; 4096 covers 512-byte devices too
_DIRECT_CHUNK = 4 << 20  # measured with dd here: 4 MB O_DIRECT writes 2.0 GB/s at 0.1 core-s per 2 GB


def _local_fd(fh) -> int | None:
    """The OS file descriptor behind a local file handle, or None (gs:// and other filesystems have none)."""
    try:
        return fh.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None


class _DirectWriter:
    """Writes a new local file with O_DIRECT, around the page cache: bytes are staged in an aligned 4 MB buffer and
    written in whole blocks, the unaligned tail in a plain write at `finish()`.

    On this VM, copying 2 GB into the page cache costs 0.4-3.2 core-s of kernel time (more when the VM has given
    the memory back to its host) and a sync after it as much again; the same bytes with O_DIRECT cost 0.1-0.2
    (README, Performance). `open` returns None where the file can't do it (no fileno, a filesystem without
    O_DIRECT, an unaligned offset); the caller then writes through the handle as usual."""

    def __init__(self, fd: int, flags: int):
        self._fd = fd
        self._flags = flags
        self._o_direct = True  # False once a filesystem refused the flag's writes
        raw = np.empty(_DIRECT_CHUNK + _DIRECT_ALIGN, np.uint8)
        start = -raw.ctypes.data % _DIRECT_ALIGN
        self._buf = raw[start : start + _DIRECT_CHUNK]
        self._fill = 0

    @classmethod
    def open(cls, fh) -> "_DirectWriter | None":
        fd = _local_fd(fh)
        if fd is None:
            return None
        try:
            fh.flush()
            if os.lseek(fd, 0, os.SEEK_CUR) % _DIRECT_ALIGN:
                return None
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError:  # a filesystem without O_DIRECT
            return None
        return cls(fd, flags)

    def write(self, data: np.ndarray) -> None:
        """Stage `data` (1-D uint8), writing every full buffer."""
        pos, n = 0, len(data)
        while pos < n:
            k = min(n - pos, _DIRECT_CHUNK - self._fill)
            self._buf[self._fill : self._fill + k] = data[pos : pos + k]
            self._fill += k
            pos += k
            if self._fill == _DIRECT_CHUNK:
                self._write_all(self._buf)
                self._fill = 0

    def _write_all(self, block: np.ndarray) -> None:
        view = memoryview(block)
        while len(view):
            try:
                view = view[os.write(self._fd, view):]
            except OSError as e:
                # Some filesystems (FUSE, network mounts) take the flag but refuse the writes: go on without it.
                if e.errno != errno.EINVAL or not self._o_direct:
                    raise
                self._plain()

    def _plain(self) -> None:
        fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags)
        self._o_direct = False

    def finish(self) -> None:
        """Write what is staged: the whole blocks with O_DIRECT, then the tail with O_DIRECT off."""
        whole = self._fill - self._fill % _DIRECT_ALIGN
        if whole:
            self._write_all(self._buf[:whole])
        if self._o_direct:
            self._plain()
        if self._fill > whole:
            self._write_all(self._buf[whole : self._fill])
        self._fill = 0
        self._buf = None


class _HashingFile:
    """Write-only file wrapper that counts, crc32c-checksums (and optionally sha256-hashes) every byte on its way
    to the real handle; a local file's bytes go around the page cache (_DirectWriter)."""

    def __init__(self, fh, checksums=DEFAULT_CHECKSUMS):
        self._fh = fh
        self._sums = Checksums(checksums)
        self._direct = _DirectWriter.open(fh)
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        view = self._sums.update(data)
        if self._direct is not None:
            self._direct.write(np.frombuffer(view, np.uint8))
        else:
            self._fh.write(view)
        self.size += len(view)
        return len(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._fh.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def release_page_cache(self) -> None:
        """A local file's bytes (the staged O_DIRECT tail included) to disk, then out of the page cache; a no-op for
        other filesystems (no fileno). It puts each shard on disk before the manifest names it, and where O_DIRECT
        was refused it lets the next shard reuse the same pages: on a VM that hands freed memory back to its
        host (virtio-balloon free page reporting, as here), the kernel's first touch of page-cache memory costs
        ~2.3 core-s per GB written against ~0.3 with a sync and a drop (README, Performance)."""
        if self._direct is not None:
            self._direct.finish()
            self._direct = None
        fd = _local_fd(self._fh)
        if fd is None:
            return
        self._fh.flush()
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def close(self) -> None:  # Beam closes the real handle after flush(); never earlier
        self.closed = True

    def checksums(self) -> dict:
        """{"crc32c": 8 hex digits (big-endian, as GCS's base64 crc32c decodes), "sha256": 64 hex (if asked)}."""
        return self._sums.hexdigests()


class _BatchSink(fileio.FileSink):
    """Common part: (shard, RecordBatch) records, checksums, the writer thread, and the per-shard stats file on
    flush."""

    format = ""

    def __init__(self, shard: int, num_shards: int, stats_dir: str | None, checksums=DEFAULT_CHECKSUMS,
                 threaded: bool = True, expected_rows: int | None = None):
        self._shard = shard
        self._num_shards = num_shards
        self._stats_dir = stats_dir
        self._checksums = check_checksums(checksums)
        self._threaded = threaded
        # With the planned row count the shard is finished (writer thread stopped, Parquet footer written and its
        # buffers freed) at its last batch, not when fileio closes every file of the bundle: one bundle may hold
        # all K shards, and each open ParquetWriter keeps ~8 MB (measured), so memory would grow with K, hence N.
        self._expected = expected_rows
        self._complete = False
        self._file = None
        self._rows = 0
        self._queue = None
        self._thread = None
        self._error = None

    def create_metadata(self, destination, full_file_name):
        return fileio.FileMetadata(mime_type="application/octet-stream",
                                   compression_type=CompressionTypes.UNCOMPRESSED)

    def open(self, fh):
        self._file = _HashingFile(fh, self._checksums)
        self._rows = 0
        self._complete = False
        self._error = None
        if self._threaded:
            self._queue = queue.Queue(maxsize=_QUEUE_DEPTH)
            self._thread = threading.Thread(target=self._drain, name=f"vae-augment-{self.format}-writer",
                                            daemon=True)
            self._thread.start()

    def _drain(self):
        """Writer thread: write queued batches in order until the None that flush() sends."""
        while True:
            try:
                batch = self._queue.get(timeout=_IDLE_EXIT_SECONDS)
            except queue.Empty:  # the bundle failed and never flushed: stop holding the file
                return
            try:
                if batch is None:
                    if self._error is None:
                        self._finish_file()
                elif self._error is None:
                    self._write_batch(batch)
            except BaseException as e:  # noqa: BLE001 - re-raised on the bundle's thread
                self._error = e
            finally:
                self._queue.task_done()
            if batch is None:  # also when finishing failed (e.g. disk full at the footer): flush() joins us
                return

    def _raise_pending(self):
        if self._error is not None:
            raise self._error

    def write(self, record):
        shard, batch = record
        if shard != self._shard:
            raise ValueError(f"record for shard {shard} reached the writer of shard {self._shard}")
        if self._complete:
            raise ValueError(f"shard {self._shard} got more than its planned {self._expected:,} records")
        self._rows += len(batch)
        if self._thread is None:
            self._write_batch(batch)
        else:
            self._raise_pending()
            self._queue.put(batch)
            if faults._ENV in os.environ:  # noqa: SLF001 - test-only fault injection
                self._queue.join()  # so an injected failure below finds this batch written
        # After the batch, so an injected failure leaves a half-written temp file behind, as a real crash would.
        faults.maybe_fail("write", self._shard)
        if self._expected is not None and self._rows >= self._expected:
            self._complete_file(wait=False)

    def _finish_file(self):
        self._finish()
        self._file.release_page_cache()

    def _complete_file(self, wait: bool = True):
        """Finish the shard's file: on its writer thread (which then ends), so the bundle's thread goes on to the
        next shard while this one's footer is written and synced; `wait` joins it (flush() does)."""
        if not self._complete:
            self._complete = True
            if self._thread is None:
                self._finish_file()
            else:
                self._queue.put(None)
        if wait and self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise_pending()

    def flush(self):
        # fileio calls flush() once, right before it closes the file (at the end of the bundle).
        self._complete_file()
        self._file.flush()
        if self._expected is not None and self._rows != self._expected:
            raise ValueError(f"shard {self._shard} got {self._rows:,} records, {self._expected:,} were planned")
        if self._stats_dir:
            stats = {"format": self.format, "shard": self._shard, "num_shards": self._num_shards,
                     "rows": self._rows, "bytes": self._file.size, **self._file.checksums()}
            write_shard_stats(self._stats_dir, stats)

    def _write_batch(self, batch: RecordBatch):
        raise NotImplementedError

    def _finish(self):
        pass


class ParquetBatchSink(_BatchSink):
    """One Parquet file per shard; each RecordBatch becomes one row group (batch size = row-group size)."""

    format = "parquet"

    def __init__(self, shard, num_shards, stats_dir, schema, codec, checksums=DEFAULT_CHECKSUMS, threaded=True,
                 expected_rows=None):
        super().__init__(shard, num_shards, stats_dir, checksums, threaded, expected_rows)
        self._schema = schema
        self._codec = codec
        self._writer = None

    def open(self, fh):
        super().open(fh)
        self._writer = pq.ParquetWriter(self._file, self._schema, compression=self._codec,
                                        use_dictionary=PARQUET_USE_DICTIONARY,
                                        write_statistics=PARQUET_STATISTICS, use_compliant_nested_type=True)

    def _write_batch(self, batch):
        if len(batch):
            self._writer.write_table(to_arrow(batch), row_group_size=len(batch))

    def _finish(self):
        self._writer.close()  # writes the footer; the handle itself stays open for Beam to close


class TFRecordBatchSink(_BatchSink):
    """One TFRecord file per shard; each batch is framed in one go (`encode_tfrecords`)."""

    format = "tfrecord"

    def _write_batch(self, batch):
        if len(batch):
            self._file.write(encode_tfrecords_buffer(batch))


class _SinkFactory:
    """Picklable `sink_fn(destination)` for fileio: one fresh sink per shard file."""

    def __init__(self, cls, num_shards, stats_dir, shard_rows=None, **kwargs):
        self._cls = cls
        self._num_shards = num_shards
        self._stats_dir = stats_dir
        self._shard_rows = shard_rows
        self._kwargs = kwargs

    def __call__(self, destination):
        expected = None if self._shard_rows is None else self._shard_rows[destination]
        return self._cls(destination, self._num_shards, self._stats_dir, expected_rows=expected, **self._kwargs)


class _ShardNaming:
    """fileio file naming: the destination is the shard; a shard must come from exactly one temp file."""

    def __init__(self, file_prefix: str, num_shards: int, suffix: str):
        self._prefix = file_prefix
        self._num_shards = num_shards
        self._suffix = suffix

    def __call__(self, window, pane, shard_index, total_shards, compression, destination):
        if total_shards != 1:
            raise ShardSplitAcrossBundles(
                f"shard {destination} of {self._num_shards} ({self._suffix}) was written by {total_shards} "
                "bundles; every shard's batches must come from one element (see GenerateShards)")
        return shard_name(self._prefix, destination, self._num_shards, self._suffix)


def _shard_of(element) -> int:
    return element[0]


def _finish_write(file_results, output_dir: str, temp_dir: str, num_shards: int, what: str):
    # fileio.WriteToFiles moves the temp files but never removes its temp directory (FileSystems.delete would
    # take its name as a glob, and on an object store finds no "folder" object).
    try:
        delete_tree(temp_dir)
    except Exception:  # noqa: BLE001 - best effort: publish.remove_temp_leftovers removes what is left
        pass
    paths = sorted(FileSystems.join(output_dir, r.file_name) for r in file_results)
    if len(set(paths)) != num_shards:
        # Only possible if some shard got no element at all (input without one element per shard).
        raise RuntimeError(f"expected {num_shards} {what} shards under {output_dir}, got {len(paths)}: {paths}")
    yield from paths


class _WriteShards(beam.PTransform):
    suffix = ""
    what = ""

    def __init__(self, output_dir_prefix: str, num_shards: int, file_prefix: str, stats_dir: str | None,
                 checksums=DEFAULT_CHECKSUMS, shard_rows=None):
        super().__init__()
        self._output_dir = output_dir_prefix
        self._num_shards = _check_shards(num_shards)
        if shard_rows is not None and len(shard_rows) != self._num_shards:
            raise ValueError(f"Expected one planned row count per shard ({self._num_shards}), "
                             f"Received: shard_rows of length {len(shard_rows)}")
        self._shard_rows = None if shard_rows is None else tuple(int(r) for r in shard_rows)
        self._file_prefix = file_prefix
        self._stats_dir = stats_dir
        self._checksums = check_checksums(checksums)

    def _sink_fn(self) -> _SinkFactory:
        raise NotImplementedError

    def expand(self, keyed_batches):
        k = self._num_shards
        temp_dir = FileSystems.join(self._output_dir, f".temp-{self.what}-{uuid.uuid4().hex}")
        results = (
            keyed_batches
            | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "WriteToFiles" >> fileio.WriteToFiles(
                path=self._output_dir,
                destination=_shard_of,
                file_naming=_ShardNaming(self._file_prefix, k, self.suffix),
                temp_directory=StaticValueProvider(str, temp_dir),  # fileio needs a ValueProvider here
                sink=self._sink_fn(),
                # One open writer per shard: with K allowed, fileio never spills records to its
                # GroupByKey path, so no decoded data is shuffled.
                max_writers_per_bundle=k,
            )
        )
        return (
            results
            | "CollectResults" >> beam.combiners.ToList()
            | "Finish" >> beam.FlatMap(_finish_write, self._output_dir, temp_dir, k, self.what)
        )


class WriteParquetShards(_WriteShards):
    """PCollection[(shard, RecordBatch)] -> exactly `num_shards` files `<output_dir>/part-SSSSS-of-NNNNN.parquet`.

    Each batch becomes one Parquet row group (snappy, no dictionaries, statistics for id/label/seed) in the
    `arrow_schema` layout. Returns PCollection[str] of the final paths, emitted once after all renames and
    after the temp directory is removed.
    """

    suffix = ".parquet"
    what = "parquet"

    def __init__(self, output_dir_prefix: str, num_shards: int, *, height: int, width: int,
                 codec: str = DEFAULT_PARQUET_CODEC, file_prefix: str = FILE_PREFIX,
                 stats_dir: str | None = None, checksums=DEFAULT_CHECKSUMS, shard_rows=None):
        super().__init__(output_dir_prefix, num_shards, file_prefix, stats_dir, checksums, shard_rows)
        self._schema = arrow_schema(height, width)
        self._codec = codec

    def _sink_fn(self):
        return _SinkFactory(ParquetBatchSink, self._num_shards, self._stats_dir, self._shard_rows,
                            schema=self._schema, codec=self._codec, checksums=self._checksums)


class WriteTFRecordShards(_WriteShards):
    """PCollection[(shard, RecordBatch)] -> exactly `num_shards` files `<output_dir>/part-SSSSS-of-NNNNN.tfrecord`.

    Records are `tf.train.Example`s identical to `encode_examples(batch)`, framed as tf.io.TFRecordWriter
    frames them. Returns PCollection[str] of the final paths, emitted once, after all files are in place.
    """

    suffix = ".tfrecord"
    what = "tfrecord"

    def __init__(self, output_dir_prefix: str, num_shards: int, *, file_prefix: str = FILE_PREFIX,
                 stats_dir: str | None = None, checksums=DEFAULT_CHECKSUMS, shard_rows=None):
        super().__init__(output_dir_prefix, num_shards, file_prefix, stats_dir, checksums, shard_rows)

    def _sink_fn(self):
        return _SinkFactory(TFRecordBatchSink, self._num_shards, self._stats_dir, self._shard_rows,
                            checksums=self._checksums)

