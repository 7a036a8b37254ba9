import io
import json

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from pipeline.dataset.arrow import arrow_batches, arrow_schema, from_arrow, images_from_column, to_arrow
from pipeline.dataset.batch import RecordBatch
from pipeline.dataset.digest import batch_digest, combine_digests, digest_hex, record_hashes
from pipeline.dataset.example import encode_examples, encode_tfrecords, parse_example_batches, parse_examples
from pipeline.dataset.tfrecord import _crc_rows, count_tfrecords, crc32c, frame_tfrecords, iter_tfrecord_file

SPECIAL_FLOATS = np.array(
    [-0.0, 0.0, 1e-45, -1e-45, 1.1754942e-38, 1.1754944e-38, np.finfo(np.float32).max, -np.inf, np.inf],
    dtype=np.float32,
)


def digit_images(rng, n, h, w):
    """MNIST-like: mostly zeros with a bright blob."""
    images = np.zeros((n, h, w), np.uint8)
    mask = rng.random((n, h, w)) < 0.2
    images[mask] = rng.integers(1, 256, mask.sum())
    return images


def make_batch(rng, n=64, h=28, w=28, d=20, ids=None, labels=None, sampler="prior", model_id="vae-1", seed=7):
    latents = rng.standard_normal((n, d)).astype(np.float32)
    latents.reshape(-1)[: min(len(SPECIAL_FLOATS), latents.size)] = SPECIAL_FLOATS[: latents.size]
    return RecordBatch(
        ids=np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64),
        labels=rng.integers(-1, 10, n) if labels is None else np.asarray(labels, np.int64),
        images=digit_images(rng, n, h, w),
        latents=latents,
        sampler=sampler,
        model_id=model_id,
        seed=seed,
    )


def reference_example(batch, i):
    def int64(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    def raw(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "id": int64(batch.ids[i]),
                "label": int64(batch.labels[i]),
                "image": raw(batch.images[i].tobytes()),
                "latent": tf.train.Feature(float_list=tf.train.FloatList(value=batch.latents[i].tolist())),
                "sampler": raw(batch.sampler.encode()),
                "model_id": raw(batch.model_id.encode()),
                "seed": int64(batch.seed),
            }
        )
    )


def assert_batches_equal(a, b):
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.images, b.images)
    # Compare bit patterns so -0.0 vs 0.0 and subnormals count.
    np.testing.assert_array_equal(a.latents.view(np.uint32), b.latents.view(np.uint32))
    assert (a.sampler, a.model_id, a.seed) == (b.sampler, b.model_id, b.seed)


EDGE_IDS = [0, 1, 127, 128, 16383, 16384, 2**40, 2**63 - 1, -1, -(2**63)]


@pytest.mark.parametrize("h,w,d", [(28, 28, 20), (4, 5, 2), (28, 28, 2), (4, 5, 20)])
@pytest.mark.parametrize("seed", [0, 123456789, -3])
def test_encode_examples_matches_protobuf(h, w, d, seed):
    rng = np.random.default_rng(seed & 0xFFFF)
    n = 200
    ids = np.concatenate([EDGE_IDS, rng.integers(-(2**62), 2**62, n - len(EDGE_IDS))])
    labels = rng.choice([-1, 0, 5, 9, 127, 128, -(2**63)], n)
    batch = make_batch(rng, n, h, w, d, ids=ids, labels=labels, sampler="posterior-ü", model_id="", seed=seed)
    encoded = encode_examples(batch)
    assert len(encoded) == n
    for i, record in enumerate(encoded):
        expected = reference_example(batch, i)
        assert record == expected.SerializeToString(deterministic=True), i
        assert tf.train.Example.FromString(record) == expected


def test_encode_examples_single_layout_fast_path():
    batch = make_batch(np.random.default_rng(1), 50, labels=np.full(50, 3))
    expected = [reference_example(batch, i).SerializeToString(deterministic=True) for i in range(50)]
    assert encode_examples(batch) == expected


def test_encode_examples_empty():
    assert encode_examples(make_batch(np.random.default_rng(0), 0)) == []
    assert frame_tfrecords([]) == b""


def test_frame_tfrecords_matches_tf_writer(tmp_path):
    batch = make_batch(np.random.default_rng(2), 100, ids=np.arange(100) * 3)
    records = encode_examples(batch) + [b"", b"x" * 300]
    path = tmp_path / "ref.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    framed = frame_tfrecords(records)
    assert framed == path.read_bytes()

    ours = tmp_path / "ours.tfrecord"
    ours.write_bytes(framed)
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == records
    assert list(iter_tfrecord_file(io.BytesIO(framed))) == records


@pytest.mark.parametrize("uniform", [True, False])
def test_encode_tfrecords_is_framed_examples(uniform):
    rng = np.random.default_rng(10)
    labels = np.full(300, 4) if uniform else None  # mixed labels: -1 is a 10-byte varint
    batch = make_batch(rng, 300, ids=np.arange(300) + (200 if uniform else 20), labels=labels)  # 128 = varint step
    assert encode_tfrecords(batch) == frame_tfrecords(encode_examples(batch))


def test_crc_rows_matches_bytes():
    rows = np.random.default_rng(11).integers(0, 256, (7, 33), dtype=np.uint8)
    np.testing.assert_array_equal(_crc_rows(rows[:, 2:30]), [crc32c(r[2:30].tobytes()) for r in rows])


def test_parse_examples_round_trip():
    batch = make_batch(np.random.default_rng(3), 40, 4, 5, 3, ids=[2**40 + i for i in range(40)])
    assert_batches_equal(parse_examples(encode_examples(batch), 4, 5), batch)


def test_parse_example_batches_splits_runs():
    rng = np.random.default_rng(4)
    a, b = make_batch(rng, 5, seed=1), make_batch(rng, 7, seed=2, sampler="grid")
    batches = parse_example_batches(encode_examples(a) + encode_examples(b), 28, 28)
    assert len(batches) == 2
    assert_batches_equal(batches[0], a)
    assert_batches_equal(batches[1], b)
    with pytest.raises(ValueError, match="parse_example_batches"):
        parse_examples(encode_examples(a) + encode_examples(b), 28, 28)


def test_arrow_round_trip_and_schema():
    batch = make_batch(np.random.default_rng(5), 33, 4, 5, 2)
    table = to_arrow(batch)
    assert table.schema.equals(arrow_schema(4, 5), check_metadata=True)
    meta = dict(table.schema.metadata)
    assert json.loads(meta.pop(b"huggingface"))["info"]["features"]["label"]["_type"] == "ClassLabel"
    assert meta == {b"height": b"4", b"width": b"5", b"vae_augment_schema": b"1"}
    table.validate(full=True)
    assert_batches_equal(from_arrow(table, 4, 5), batch)

    frame = table.to_pandas()
    assert list(frame.columns) == ["id", "label", "image", "latent", "sampler", "model_id", "seed"]
    assert frame["image"][3] == batch.images[3].tobytes()
    np.testing.assert_array_equal(frame["latent"][3], batch.latents[3])
    assert set(frame["sampler"]) == {"prior"}


def test_arrow_chunked_and_sliced_tables():
    rng = np.random.default_rng(6)
    a, b = make_batch(rng, 10, seed=1), make_batch(rng, 12, seed=2, model_id="vae-2")
    table = pa.concat_tables([to_arrow(a), to_arrow(b)])
    batches = arrow_batches(table, 28, 28)
    assert [len(x) for x in batches] == [10, 12]
    assert_batches_equal(batches[0], a)
    assert_batches_equal(batches[1], b)
    with pytest.raises(ValueError, match="arrow_batches"):
        from_arrow(table, 28, 28)
    sliced = from_arrow(table.slice(12, 5).combine_chunks(), 28, 28)
    np.testing.assert_array_equal(sliced.images, b.images[2:7])
    np.testing.assert_array_equal(sliced.latents, b.latents[2:7])
    with pytest.raises(ValueError, match="height"):
        from_arrow(to_arrow(a), 14, 56)


def test_digest_order_independent_and_sensitive():
    rng = np.random.default_rng(7)
    batch = make_batch(rng, 50)
    digest = batch_digest(batch)
    assert len(digest_hex(digest)) == 64
    assert digest != 0

    perm = rng.permutation(50)
    shuffled = RecordBatch(
        batch.ids[perm], batch.labels[perm], batch.images[perm], batch.latents[perm], "other", "m", 99
    )
    assert batch_digest(shuffled) == digest

    def rows(sl):
        return RecordBatch(batch.ids[sl], batch.labels[sl], batch.images[sl], batch.latents[sl], "s", "m", 0)

    assert combine_digests(batch_digest(rows(slice(0, 17))), batch_digest(rows(slice(17, None)))) == digest

    images = batch.images.copy()
    images[10, 3, 4] ^= 1
    changed = RecordBatch(batch.ids, batch.labels, images, batch.latents, "prior", "vae-1", 7)
    assert batch_digest(changed) != digest

    dup = np.r_[np.arange(50), 10]
    duplicated = RecordBatch(batch.ids[dup], batch.labels[dup], batch.images[dup], batch.latents[dup], "s", "m", 0)
    assert batch_digest(duplicated) != digest
    assert batch_digest(rows(slice(0, 49))) != digest


def _reference_digest(batch) -> int:
    """dataset_digest recomputed in plain Python from its documented definition (pipeline/dataset/digest.py)."""
    import hashlib

    mask = (1 << 64) - 1

    def fmix64(h):
        for mult in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
            h ^= h >> 33
            h = (h * mult) & mask
        return h ^ (h >> 33)

    total = 0
    for i in range(len(batch)):
        payload = (int(batch.ids[i]).to_bytes(8, "little", signed=True)
                   + int(batch.labels[i]).to_bytes(8, "little", signed=True)
                   + batch.images[i].tobytes() + batch.latents[i].astype("<f4").tobytes())
        payload += bytes(-len(payload) % 8)
        words = len(payload) // 8
        h = 0
        for j in range(words):
            key = int.from_bytes(hashlib.sha256(b"vae-augment dataset_digest v2 key" + j.to_bytes(4, "little"))
                                 .digest()[:8], "little") | 1
            x = ((int.from_bytes(payload[8 * j : 8 * j + 8], "little") + key) * 0x9E3779B97F4A7C15) & mask
            h = (h + (x ^ (x >> 32))) & mask
        h = fmix64((h + words) & mask)
        limbs = [fmix64(h ^ ((k * 0xD6E8FEB86659FD93) & mask)) for k in range(4)]
        total += sum(v << (64 * (3 - k)) for k, v in enumerate(limbs))
    return total % 2**256


def test_batch_digest_follows_its_documented_definition():
    # odd sizes: padding to whole words, and a block boundary inside the batch
    for n, h, w, d in ((3, 4, 5, 3), (300, 3, 3, 1)):
        batch = make_batch(np.random.default_rng(8), n, h, w, d, ids=np.arange(n) * 7919 - 5)
        assert batch_digest(batch) == _reference_digest(batch)
    assert len(record_hashes(batch)) == 300


def test_iter_tfrecord_file_detects_corruption():
    records = encode_examples(make_batch(np.random.default_rng(9), 5, 4, 5, 2))
    framed = frame_tfrecords(records)
    second = 16 + len(records[0])

    flipped = bytearray(framed)
    flipped[second + 12 + 3] ^= 0x40  # a payload byte of record 2
    with pytest.raises(ValueError, match=f"data CRC mismatch .* offset {second}"):
        list(iter_tfrecord_file(io.BytesIO(bytes(flipped))))
    assert len(list(iter_tfrecord_file(io.BytesIO(bytes(flipped)), verify_crc=False))) == 5

    flipped = bytearray(framed)
    flipped[second] ^= 0x01  # length field of record 2
    with pytest.raises(ValueError, match=f"length CRC mismatch .* offset {second}"):
        list(iter_tfrecord_file(io.BytesIO(bytes(flipped))))

    last = len(framed) - 16 - len(records[-1])
    for cut, offset in ((second + 5, second), (second + 20, second), (len(framed) - 1, last)):
        with pytest.raises(ValueError, match=f"truncated .* offset {offset}"):
            list(iter_tfrecord_file(io.BytesIO(framed[:cut])))


def test_record_batch_normalises_inputs():
    batch = RecordBatch(
        ids=[1, 2], labels=np.array([0, 1], np.int32), images=np.zeros((2, 3, 3), np.int64),
        latents=np.zeros((2, 4), np.float64), sampler="s", model_id="m", seed=np.int32(3),
    )
    assert (batch.ids.dtype, batch.labels.dtype, batch.images.dtype, batch.latents.dtype) == (
        np.int64, np.int64, np.uint8, np.float32,
    )
    assert len(batch) == 2 and type(batch.seed) is int
    with pytest.raises(ValueError):
        RecordBatch(np.zeros(2), np.zeros(3), np.zeros((2, 3, 3)), np.zeros((2, 4)), "s", "m", 0)


def test_count_tfrecords_and_iter_tfrecord_file_walk_the_same_frames():
    records = [b"", b"x" * 300, *encode_examples(make_batch(np.random.default_rng(12), 7, 4, 5, 2))]
    framed = frame_tfrecords(records)
    assert count_tfrecords(io.BytesIO(framed)) == len(list(iter_tfrecord_file(io.BytesIO(framed)))) == 9
    assert count_tfrecords(io.BytesIO(b"")) == 0
    cut = framed[:16 + 5]  # the empty first record's frame, then 5 bytes of the second header
    for walk in (count_tfrecords, lambda f: list(iter_tfrecord_file(f))):  # both name the offset of the cut header
        with pytest.raises(ValueError, match="truncated TFRecord header at byte offset 16"):
            walk(io.BytesIO(cut))


def _image_column(images, chunks=1, large=False):
    values = [im.tobytes() for im in images]
    typ = pa.large_binary() if large else pa.binary()
    size = -(-len(values) // chunks)
    return pa.chunked_array([pa.array(values[i:i + size], typ) for i in range(0, len(values), size)], typ)


@pytest.mark.parametrize("large", [False, True])
def test_images_from_column_unpacks_chunked_and_sliced_columns(large):
    images = digit_images(np.random.default_rng(13), 30, 4, 5)
    column = _image_column(images, chunks=3, large=large)
    assert column.num_chunks == 3
    np.testing.assert_array_equal(images_from_column(column, 4, 5), images)
    np.testing.assert_array_equal(images_from_column(column.slice(7, 15), 4, 5), images[7:22])  # across chunks
    sliced = column.combine_chunks().slice(5, 10)
    out = images_from_column(sliced, 4, 5)
    np.testing.assert_array_equal(out, images[5:15])
    # one chunk: a view of the Arrow buffer, no copy
    data = sliced.buffers()[2]
    assert out.__array_interface__["data"][0] == data.address + 5 * 20
    assert images_from_column(pa.array([], pa.binary()), 4, 5).shape == (0, 4, 5)
    assert images_from_column(pa.chunked_array([], pa.binary()), 4, 5).shape == (0, 4, 5)


def test_images_from_column_names_the_first_bad_row():
    images = digit_images(np.random.default_rng(14), 6, 4, 5)
    values = [im.tobytes() for im in images]
    values[4] = values[4][:-1]
    column = pa.chunked_array([pa.array(values[:3]), pa.array(values[3:])])
    with pytest.raises(ValueError, match=r"^row 4: image has 19 bytes, expected 20 \(4x5\)$"):
        images_from_column(column, 4, 5)
    with pytest.raises(ValueError, match=r"^row 1: image is null$"):
        images_from_column(pa.array([values[0], None]), 4, 5)
    with pytest.raises(ValueError, match="expected 16 \\(4x4\\)"):
        images_from_column(pa.array(values[:2]), 4, 4)
    with pytest.raises(ValueError, match="column 'image' is string, expected binary"):
        images_from_column(pa.array(["a"]), 1, 1)


def test_templated_parsing_equals_tensorflows_and_refuses_any_other_layout():
    """parse_templated (verify's TF-free path) reads generate's Examples exactly as tf.io.parse_example does, over
    ids and labels of every varint length (negative labels are 10 bytes), and returns None for a flipped byte in
    any constant part, a broken varint, or another job's (sampler, model_id, seed)."""
    from pipeline.dataset.example import encode_examples, parse_examples, parse_templated

    rng = np.random.default_rng(3)
    n = 300
    ids = np.concatenate([np.arange(100), rng.integers(0, 1 << 62, n - 100)])
    batch = make_batch(rng, n, ids=ids, labels=rng.integers(-1, 10, n))
    serialized = encode_examples(batch)
    key = (batch.height, batch.width, batch.latent_dim, batch.sampler, batch.model_id, batch.seed)
    got, want = parse_templated(serialized, *key), parse_examples(serialized, batch.height, batch.width)
    for f in ("ids", "labels", "images", "latents"):
        assert getattr(got, f).tobytes() == getattr(want, f).tobytes() == getattr(batch, f).tobytes(), f
    assert (got.sampler, got.model_id, got.seed) == (want.sampler, want.model_id, want.seed)
    assert parse_templated(serialized, *key[:3], "other", *key[4:]) is None
    assert parse_templated(serialized, *key[:5], batch.seed + 1) is None
    rec = serialized[7]
    for pos in range(len(rec)):
        flipped = list(serialized)
        flipped[7] = rec[:pos] + bytes([rec[pos] ^ 0x80]) + rec[pos + 1:]
        parsed = parse_templated(flipped, *key)
        if parsed is not None:  # only data bytes (image, latent, low varint bits) may change and still parse
            changed = [f for f in ("ids", "labels", "images", "latents")
                       if getattr(parsed, f).tobytes() != getattr(batch, f).tobytes()]
            assert changed, pos
