"""Fixtures of the evaluation tests: a small real source and generate-style shard directories holding exactly the
records a test chooses.

Shard directories are written with the project's own record code (RecordBatch -> to_arrow / encode_tfrecords, a
manifest like publish.finalize's) and must pass `verify_output`, so they are what a generate job would write.
"""
import json
import os

import numpy as np
import pytest

REAL = "mnist?limit=2000"  # 2,000 train / 2,000 test real digits: small enough for seconds per evaluation


@pytest.fixture(scope="session")
def write_output():
    return _write_output


def _write_output(out, images, labels, latents=None, formats=("parquet", "tfrecord"), sampler="handmade"):
    """A generate-style output directory (one shard per format + manifest.json) holding exactly these records."""
    import pyarrow.parquet as pq

    from pipeline.dataset.arrow import to_arrow
    from pipeline.dataset.batch import RecordBatch
    from pipeline.dataset.digest import batch_digest
    from pipeline.dataset.example import encode_tfrecords
    from pipeline.dataset.verify import verify_output
    from vae_model.artifacts import sha256_file

    n = len(images)
    latents = np.zeros((n, 2), np.float32) if latents is None else latents
    batch = RecordBatch(np.arange(n), np.asarray(labels), np.asarray(images, np.uint8), latents, sampler, "m0", 0)
    shards = []
    for fmt in formats:
        rel = f"{fmt}/part-00000-of-00001.{fmt}"
        os.makedirs(os.path.join(out, fmt), exist_ok=True)
        path = os.path.join(out, rel)
        if fmt == "parquet":
            pq.write_table(to_arrow(batch), path, use_compliant_nested_type=True)
        else:
            with open(path, "wb") as f:
                f.write(encode_tfrecords(batch))
        shards.append({"path": rel, "format": fmt, "rows": n, "bytes": os.path.getsize(path),
                       "sha256": sha256_file(path)})
    classes, counts = np.unique(batch.labels, return_counts=True)
    manifest = {"format_version": 1, "total": n, "per_class": {str(c): int(k) for c, k in zip(classes, counts)},
                "dataset_digest": f"{batch_digest(batch):064x}", "formats": list(formats), "num_shards": 1,
                "shards": shards, "model_id": "m0", "seed": 0, "sampler": sampler, "height": batch.height,
                "width": batch.width, "latent_dim": batch.latent_dim, "command": "handmade"}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    assert verify_output(str(out)) == []
    return str(out)


@pytest.fixture(scope="session")
def real_source():
    return REAL


@pytest.fixture(scope="session")
def real():
    from vae_model.data import load_source
    return load_source(REAL)


@pytest.fixture(scope="session")
def fast():
    """Options that keep a whole evaluation to a second or two: no CAS, small novelty and diversity samples."""
    from pipeline.evaluation.evaluate import EvaluateOptions
    return EvaluateOptions(cas_epochs=0, novelty_images=500, baseline_images=500, diversity_per_class=50)


class Oracle:
    """Stands in for the reference classifier: reads the true class from pixel (0, 0) (class c is c * 20), so
    fidelity numbers are exact."""

    num_classes = 10

    def probabilities(self, images):
        probs = np.full((len(images), 10), 0.01)
        probs[np.arange(len(images)), images[:, 0, 0] // 20] = 0.91
        return probs

    def accuracy(self, images, labels):
        return float((self.probabilities(images).argmax(1) == labels).mean())


@pytest.fixture(scope="session")
def oracle():
    return Oracle()


@pytest.fixture(scope="session")
def make_images():
    def images(labels, seed=0, shape=(6, 6)):
        """Random images that the Oracle classifies as `labels` (unlabeled -1 as class 0)."""
        x = np.random.default_rng(seed).integers(0, 256, (len(labels),) + shape, dtype=np.uint8)
        x[:, 0, 0] = np.maximum(labels, 0) * 20
        return x
    return images


@pytest.fixture(scope="session")
def make_sample():
    from pipeline.evaluation.metrics import SyntheticSample

    def sample(images, labels, total=None, dups=0, repeated=0, latents=None):
        """A SyntheticSample as read_synthetic makes it, counts from `labels`, every row kept."""
        labels = np.asarray(labels)
        classes, n = np.unique(labels, return_counts=True)
        latents = np.zeros((len(labels), 0), np.float32) if latents is None else latents
        return SyntheticSample(images, labels, latents, {int(c): int(k) for c, k in zip(classes, n)},
                               total or len(labels), dups, repeated, "parquet")
    return sample


@pytest.fixture
def small_report(oracle, make_images, make_sample):
    """(report, pictures) as `evaluate` hands them to write_report, from the metric sections on small arrays
    (3 classes of 6x6 images, the Oracle as classifier) and a CAS section with made-up scores."""
    import dataclasses

    from pipeline.evaluation.evaluate import EvaluateOptions, verdict_section
    from pipeline.evaluation.metrics import counts_section, diversity_section, fidelity_section, novelty_section
    from vae_model.data import Dataset

    y = np.repeat(np.arange(3), 20)
    train, test = Dataset(make_images(y, 1), y), Dataset(make_images(y, 2), y)
    labels = y.copy()
    labels[:4] = 1  # four records the Oracle calls 0
    syn = make_sample(make_images(y, 3), labels, dups=2, repeated=1,
                      latents=np.random.default_rng(4).standard_normal((60, 3)).astype(np.float32))
    manifest = {"total": 60, "per_class": {str(c): int(n) for c, n in syn.counts.items()}}
    fid, fid_extras = fidelity_section(oracle, syn, test)
    nov, nov_extras = novelty_section(syn, train, test, 100, 100, None, 0.01, 0, lambda m: None)
    report = {
        "dataset": {"out_dir": "out/<a&b>", "total": 60, "model_id": "m0", "sampler": "posterior", "seed": 0,
                    "command": "vae-augment generate", "dataset_digest": "ab" * 32, "image_shape": [6, 6],
                    "sampled_images": 60, "filter": None},
        "real": {"source": "handmade", "train_rows": 60, "train_labeled": 60, "test_images": 60,
                 "description": "handmade"},
        "classifier": {"path": "clf/", "bundled": False, "classifier_id": "c0", "recorded_test_accuracy": 1.0,
                       "trained_on": "handmade", "command": "vae-augment train-classifier"},
        "options": dataclasses.asdict(EvaluateOptions()),
        "counts": counts_section(manifest, syn), "fidelity": fid,
        "cas": {"applicable": True, "cas": 0.95, "ceiling": 0.98, "gap": 0.03, "ratio": 0.95 / 0.98,
                "synthetic_rows": 60, "read_from": "tfrecord shards (streamed)", "epochs": 2, "steps": 8,
                "batch_size": 16, "train_seconds": 1.5, "test_images": 60, "classes": [0, 1, 2],
                "ceiling_source": "trained now on the real training set of handmade", "ceiling_steps": 12},
        "novelty": nov, "diversity": diversity_section(syn, train, 10, 0),
        "notes": ["a note & more"], "timings": {"read": 0.1}, "command": "vae-augment evaluate out",
        "versions": {"numpy": np.__version__}, "created": "2026-01-01T00:00:00+00:00",
    }
    report["verdict"] = verdict_section(report)
    return report, {"syn": syn, "fidelity": fid_extras, "novelty": nov_extras}
