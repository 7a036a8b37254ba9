"""Class statistics computed with Beam (pipeline/generate/class_stats.py): the ComputeClassStats stage, as a side
input of the generate job (--labeled-data) and as the `stats` command's own job (write_stats_file)."""
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that

from pipeline.generate.class_stats import ComputeClassStats, write_stats_file
from vae_model.errors import DataError, UsageError
from vae_model.latent_stats import LatentStats


def test_class_stats_transform_matches_numpy(bundled, local_pipeline):
    from vae_model import latent_stats
    from vae_model.data import load_source
    from vae_model.inference import BatchEncoder

    source = "mnist?limit=2500"  # two chunks
    data = load_source(source).train.labeled
    mu, lv = BatchEncoder(bundled.encoder, 1000)(data.images, data.labels)
    local = latent_stats.compute(mu, lv, data.labels)

    def matches_numpy(actual):
        [beam_stats] = actual
        for i, c in enumerate(beam_stats.classes):
            rows = mu[data.labels == c].astype(np.float64)
            assert beam_stats.counts[i] == len(rows)
            np.testing.assert_allclose(beam_stats.means[i], rows.mean(0), atol=1e-5)
            np.testing.assert_allclose(beam_stats.covs[i], np.cov(rows.T), atol=1e-4)
        np.testing.assert_allclose(beam_stats.global_cov, local.global_cov, atol=1e-5)
        assert np.bincount(beam_stats.pool_labels).tolist() == [20] * 10

    stage = ComputeClassStats.for_source(bundled, source, seed=0, pool_per_class=20)
    assert stage.rows == len(data) and stage.classes == tuple(range(10))
    with local_pipeline() as p:
        assert_that(p | stage, matches_numpy)


def test_the_source_is_checked_on_the_driver(bundled):
    with pytest.raises(UsageError, match="--pool-per-class"):
        ComputeClassStats.for_source(bundled, "mnist?limit=100", 0, pool_per_class=0)
    with pytest.raises(DataError, match="no labeled rows"):
        ComputeClassStats.for_source(bundled, "mnist?limit=100&unlabeled=1", 0)


def _pipelines_run(monkeypatch):
    """Every pipeline run while the test lasts, as its runner-API proto."""
    runs = []
    real_run = beam.Pipeline.run

    def run(self, *a, **k):
        runs.append(self.to_runner_api())
        return real_run(self, *a, **k)

    monkeypatch.setattr(beam.Pipeline, "run", run)
    return runs


@pytest.mark.e2e
@pytest.mark.parametrize("sampler", ["posterior", "gmm"])
def test_labeled_data_statistics_are_a_stage_of_the_generate_job(sampler, tmp_path, generate, local_args,
                                                                  monkeypatch):
    """One pipeline run, whose sampling stage takes the ClassStats stage's output as a side input; and the records
    are those of the same job given a `stats` file of the same data."""
    source, seed = "mnist?limit=1500", 4
    runs = _pipelines_run(monkeypatch)
    in_job = generate(tmp_path / "in_job", per_class=30, classes=[1, 6], sampler=sampler, seed=seed,
                      labeled_data=source)
    [proto] = runs
    transforms = proto.components.transforms.values()
    produced_by = {pc: t.unique_name for t in transforms if not t.subtransforms for pc in t.outputs.values()}
    [decode] = [t for t in transforms if t.unique_name.endswith("DecodeLatents/SampleAndDecode")]
    side = [produced_by[pc] for pc in decode.inputs.values() if produced_by[pc].startswith("ClassStats/")]
    assert side == ["ClassStats/Assemble"]
    assert any(t.unique_name == "ClassStats/EncodeChunks" for t in transforms)

    stats = tmp_path / "stats.npz"
    summary = write_stats_file(None, source, str(stats), seed, beam_args=local_args)
    assert len(runs) == 2
    assert summary["labeled_images"] == 1500 and summary["anchors"] is None
    assert not [n for n in os.listdir(tmp_path) if "temp" in n]  # Beam's temp folder is gone
    from_file = generate(tmp_path / "from_file", per_class=30, classes=[1, 6], sampler=sampler, seed=seed,
                         stats=str(stats))
    assert from_file["dataset_digest"] == in_job["dataset_digest"]


@pytest.mark.e2e
def test_write_stats_file_writes_the_statistics_of_the_source(tmp_path, bundled, local_args):
    out = tmp_path / "s.npz"
    summary = write_stats_file("bundled", "mnist?limit=400", str(out), seed=1, pool_per_class=7,
                               beam_args=local_args)
    stats = LatentStats.from_bytes(out.read_bytes())
    assert summary == {"out": str(out), "labeled_images": 400, "classes": 10, "pool": 70, "threshold": None,
                       "anchors": None}
    assert int(stats.counts.sum()) == 400 and np.bincount(stats.pool_labels).tolist() == [7] * 10
    assert bundled.stats(str(out)).latent_dim == bundled.latent_dim  # a --stats file for this model
