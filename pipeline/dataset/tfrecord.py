"""TFRecord framing: crc32c, framing payloads exactly as tf.io.TFRecordWriter does, and the one walk over the
frames of a file (`iter_tfrecord_file` reads them, `count_tfrecords` skips them)."""
from __future__ import annotations

import logging
import struct
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np

_LOG = logging.getLogger(__name__)


def _load_crc32c():
    try:
        import google_crc32c

        if google_crc32c.implementation == "c":
            return google_crc32c.value
    except ImportError:
        google_crc32c = None
    try:
        import crcmod.crcmod
        import crcmod.predefined

        if getattr(crcmod.crcmod, "_usingExtension", False):
            return crcmod.predefined.mkPredefinedCrcFun("crc-32c")
    except ImportError:
        pass
    if google_crc32c is None:
        raise ImportError("TFRecord writing needs google-crc32c (pip install google-crc32c)")
    _LOG.warning("google_crc32c has no C extension here; TFRecord framing will be much slower")
    return google_crc32c.value


crc32c = _load_crc32c()


def _crc_takes_arrays() -> bool:
    try:
        return crc32c(np.frombuffer(b"abc", np.uint8)) == crc32c(b"abc")
    except TypeError:
        return False


# google_crc32c's C extension reads numpy rows through the buffer protocol; others need bytes.
_CRC_TAKES_ARRAYS = _crc_takes_arrays()


def _crc_rows(rows: np.ndarray) -> np.ndarray:
    """crc32c of each row of a uint8 matrix, without copying rows when the crc function allows."""
    chunks = rows if _CRC_TAKES_ARRAYS else map(bytes, rows)
    return np.fromiter(map(crc32c, chunks), np.uint32, len(rows))


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _mask(crcs: np.ndarray) -> np.ndarray:
    crcs = crcs.astype(np.uint32)
    return ((crcs >> np.uint32(15)) | (crcs << np.uint32(17))) + np.uint32(0xA282EAD8)


# Footer of record i-1 followed by header of record i: the 16 bytes between two payloads.
_GAP = np.dtype([("data_crc", "<u4"), ("length", "<u8"), ("length_crc", "<u4")])


def frame_tfrecords(records: Sequence[bytes]) -> bytes:
    """Concatenated TFRecord framing of `records`, identical to tf.io.TFRecordWriter output."""
    n = len(records)
    if n == 0:
        return b""
    lengths = np.fromiter(map(len, records), np.uint64, n)
    gaps = np.zeros(n + 1, _GAP)
    gaps["data_crc"][1:] = _mask(np.fromiter(map(crc32c, records), np.uint32, n))
    gaps["length"][:n] = lengths
    # Few distinct lengths per batch: crc each once.
    distinct, inverse = np.unique(lengths, return_inverse=True)
    length_crcs = np.array([masked_crc32c(struct.pack("<Q", v)) for v in distinct.tolist()], np.uint32)
    gaps["length_crc"][:n] = length_crcs[inverse]
    buf = gaps.tobytes()
    pieces: list = [None] * (2 * n + 1)
    pieces[1::2] = records
    pieces[0::2] = [buf[4:16], *(buf[i : i + 16] for i in range(16, 16 * n, 16)), buf[16 * n : 16 * n + 4]]
    return b"".join(pieces)


def frame_rows(n: int, length: int, fill: Callable[[np.ndarray], None]) -> np.ndarray:
    """(n, length + 16) uint8: the TFRecord frames of n payloads of `length` bytes each, which `fill` writes
    in place into the (n, length) view it is given (so no per-record bytes objects are made)."""
    framed = np.empty((n, length + 16), np.uint8)
    header = struct.pack("<QI", length, masked_crc32c(struct.pack("<Q", length)))
    framed[:, :12] = np.frombuffer(header, np.uint8)
    payload = framed[:, 12:-4]
    fill(payload)
    framed[:, -4:] = _mask(_crc_rows(payload)).astype("<u4").view(np.uint8).reshape(-1, 4)
    return framed


def _read_exact(fileobj: BinaryIO, size: int) -> bytes:
    chunk = fileobj.read(size)
    if len(chunk) == size or not chunk:
        return chunk
    parts = [chunk]
    got = len(chunk)
    while got < size:  # some remote file objects return short reads before EOF
        more = fileobj.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _walk(fileobj: BinaryIO, read_payloads: bool, verify_crc: bool) -> Iterator[bytes | None]:
    """The frames of a TFRecord stream: each payload (or None, seeking past it, when not `read_payloads`)."""
    offset = 0
    while True:
        header = _read_exact(fileobj, 12)
        if not header:
            return
        if len(header) < 12:
            raise ValueError(f"truncated TFRecord header at byte offset {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        if verify_crc and masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
            raise ValueError(f"TFRecord length CRC mismatch at byte offset {offset}")
        if read_payloads:
            data = _read_exact(fileobj, length)
            footer = _read_exact(fileobj, 4)
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"truncated TFRecord record at byte offset {offset} (length {length})")
            if verify_crc and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise ValueError(f"TFRecord data CRC mismatch in record at byte offset {offset}")
            yield data
        else:
            fileobj.seek(length + 4, 1)
            yield None
        offset += 16 + length


def iter_tfrecord_file(fileobj: BinaryIO, verify_crc: bool = True) -> Iterator[bytes]:
    """Yield record payloads of a TFRecord stream; ValueError with the byte offset on corruption."""
    return _walk(fileobj, True, verify_crc)


def count_tfrecords(fileobj: BinaryIO) -> int:
    """Count records by walking the length headers (no CRC checked, no payload read); the file must be seekable.
    ValueError on a truncated header."""
    return sum(1 for _ in _walk(fileobj, False, False))
