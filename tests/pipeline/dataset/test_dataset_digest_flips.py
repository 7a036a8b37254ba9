"""The dataset digest alone finds one flipped byte in any field of one record, in each format: the damaged shard
is re-encoded and its manifest entry (bytes, checksums) updated, so only the digest can notice."""
import dataclasses
import json

import numpy as np
import pytest

from pipeline.dataset import layout
from pipeline.dataset.digest import bytes_checksums
from pipeline.dataset.verify import read_shard, verify_output


def _flip(batch, field: str, row: int):
    if field == "latent":
        latents = batch.latents.copy()
        latents.view(np.uint8)[row, 5] ^= 0x10  # a mantissa byte of the second value
        return dataclasses.replace(batch, latents=latents)
    if field == "image":
        images = batch.images.copy()
        images[row, 2, 3] ^= 0x01
        return dataclasses.replace(batch, images=images)
    key = {"id": "ids", "label": "labels"}[field]
    values = getattr(batch, key).copy()
    if field == "id":
        values[row] ^= 1 << 8  # the id's second byte
    else:
        values[row] = (values[row] + 1) % 3  # one bit or two of the lowest byte; still a valid class
    return dataclasses.replace(batch, **{key: values})


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
@pytest.mark.parametrize("field", ["image", "label", "id", "latent"])
def test_the_digest_finds_one_flipped_byte_in_one_record(damaged, shard_writer, fmt, field):
    out = str(damaged)
    manifest = layout.read_manifest(out)
    entry = next(s for s in manifest["shards"] if s["format"] == fmt)
    path = layout.join(out, entry["path"])
    batches = list(read_shard(path, fmt, manifest["height"], manifest["width"]))
    batches[0] = _flip(batches[0], field, row=3)
    data = shard_writer(path, fmt, batches)
    entry.update(bytes=len(data), **bytes_checksums(data, tuple(k for k in layout.SHARD_CHECKSUMS if k in entry)))
    with open(layout.manifest_path(out), "w") as f:
        json.dump(manifest, f)
    problems = verify_output(out)
    assert f"{fmt}: dataset digest recomputed from the records differs from the manifest" in problems
    assert not any("checksum" in p or "crc32c" in p or "sha256" in p for p in problems)
