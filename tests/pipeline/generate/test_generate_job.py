"""The generation job on the real bundled model with small N."""
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.generate.graph import GenerateJob, run_job
from pipeline.dataset.readers import load_parquet, load_table, read_manifest, tfrecord_dataset
from pipeline.generate.runners import make_runner
from pipeline.generate.samplers import build_sampler
from pipeline.generate.transforms import SampleLatents, WorkUnit, plan_units, spread_evenly
from pipeline.dataset.verify import format_digests, verify_output

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def generate(out, beam_args=LOCAL, **kw):
    kw.setdefault("batch_size", 64)
    return run_job(GenerateJob(out=str(out), **kw), list(beam_args))


def test_plan_units_and_even_spread():
    units = plan_units({0: 130, 3: 64, 7: 1}, 64)
    assert [(u.unit_id, u.label, u.count) for u in units] == [
        (0, 0, 64), (1, 0, 64), (2, 0, 2), (3, 3, 64), (4, 7, 1)]
    assert spread_evenly(23, [0, 1, 2]) == {0: 8, 1: 8, 2: 7}


def test_sample_latents_draws_from_seed_and_unit_id(bundled):
    sampler = build_sampler("classgauss", bundled.latent_dim, False, bundled.stats(), spread=1.0)
    units = [WorkUnit(0, 1, 5), WorkUnit(1, 4, 3)]
    expected = [(u.unit_id, sampler.sample(np.random.default_rng([9, u.unit_id]), u.label, u.count).tobytes())
                for u in units]
    options = PipelineOptions(LOCAL)
    with TestPipeline(runner=make_runner(options), options=options) as p:
        out = (p | beam.Create(units) | SampleLatents(sampler, 9)
               | beam.Map(lambda uz: (uz[0].unit_id, uz[1].tobytes())))
        assert_that(out, equal_to(expected))


@pytest.mark.parametrize("sampler", ["prior", "centroid", "classgauss", "posterior", "gmm"])
def test_every_sampler_gives_exact_counts_and_unique_ids(sampler, tmp_path, bundled):
    kw = {"num": 250} if sampler == "prior" else {"per_class": 25, "classes": [0, 3, 7]}
    m = generate(tmp_path / "o", sampler=sampler, **kw)
    images, labels = load_parquet(str(tmp_path / "o"))
    table = load_table(str(tmp_path / "o"), columns=["id", "sampler", "model_id"])
    ids = table.column("id").to_numpy()
    assert len(np.unique(ids)) == len(ids) == m["total"]
    assert set(table.column("sampler").to_pylist()) == {sampler}
    assert set(table.column("model_id").to_pylist()) == {bundled.model_id}
    if sampler == "prior":
        assert m["per_class"] == {"-1": 250} and (labels == -1).all()
    else:
        assert m["per_class"] == {"0": 25, "3": 25, "7": 25}
        assert {c: int((labels == c).sum()) for c in (0, 3, 7)} == {0: 25, 3: 25, 7: 25}
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
    assert images.std() > 10  # real digits, not blank canvases


def test_conditional_sampler_on_a_conditional_model(tmp_path, tiny_conditional_dir):
    m = generate(tmp_path / "o", model=tiny_conditional_dir, sampler="conditional", per_class=20, spread=0.8)
    _, labels = load_parquet(str(tmp_path / "o"))
    assert m["per_class"] == {str(c): 20 for c in range(10)} and len(labels) == 200


def test_readers_return_exactly_what_the_decoder_makes(tmp_path, bundled):
    """Recompute every record outside Beam (sampler + decoder by hand) and compare with both readers."""
    from vae_model.inference import BatchDecoder
    out = tmp_path / "o"
    m = generate(out, per_class=70, classes=[2, 5], seed=11, shards=2)
    from pipeline.generate.graph import DEFAULT_SAMPLER, default_spread
    assert m["sampler"] == DEFAULT_SAMPLER and m["config"]["spread"] == default_spread(DEFAULT_SAMPLER)
    sampler = build_sampler(DEFAULT_SAMPLER, bundled.latent_dim, False, bundled.stats(), default_spread(DEFAULT_SAMPLER))
    dec = BatchDecoder(bundled.decoder, 64)
    want = {}
    for u in plan_units({2: 70, 5: 70}, 64):
        z = sampler.sample(np.random.default_rng([11, u.unit_id]), u.label, u.count)
        imgs, _ = dec(z)
        for i in range(u.count):
            want[u.unit_id * 64 + i] = (u.label, imgs[i].tobytes(), z[i].tobytes())
    table = load_table(str(out))
    got = {r["id"]: (r["label"], r["image"], np.array(r["latent"], np.float32).tobytes())
           for r in table.to_pylist()}
    assert got == want
    tf_got = {int(i): (int(lab), img.tobytes()) for img, lab, i in
              tfrecord_dataset(str(out), with_ids=True).as_numpy_iterator()}
    assert tf_got == {k: v[:2] for k, v in want.items()}
    images, labels = load_parquet(str(out))
    assert sorted(labels.tolist()) == sorted(v[0] for v in want.values())
    assert len([s for s in m["shards"] if s["format"] == "parquet"]) == 2


def test_manifest_records_provenance_and_verifies(tmp_path, bundled):
    m = generate(tmp_path / "o", per_class=10, formats=["parquet", "tfrecord"])
    disk = read_manifest(str(tmp_path / "o"))
    assert disk["dataset_digest"] == m["dataset_digest"] and disk["model_id"] == bundled.model_id
    for key in ("command", "config", "versions", "runner", "elapsed_seconds", "images_per_second", "seed"):
        assert key in disk
    assert {s["format"] for s in disk["shards"]} == {"parquet", "tfrecord"}
    assert all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in disk["shards"])
    assert verify_output(str(tmp_path / "o")) == []
    assert not list((tmp_path / "o").glob("**/*temp*"))


def test_class_stats_transform_matches_numpy(bundled):
    from pipeline.generate.class_stats import ComputeClassStats
    from vae_model import latent_stats
    from vae_model.data import load_source
    from vae_model.inference import BatchEncoder
    source = "mnist?limit=5000"
    beam_stats = ComputeClassStats.run_local(bundled, source, seed=0, beam_args=LOCAL)
    data = load_source(source).train.labeled
    mu, lv = BatchEncoder(bundled.encoder, 1000)(data.images, data.labels)
    for i, c in enumerate(beam_stats.classes):
        rows = mu[data.labels == c].astype(np.float64)
        assert beam_stats.counts[i] == len(rows)
        np.testing.assert_allclose(beam_stats.means[i], rows.mean(0), atol=1e-5)
        np.testing.assert_allclose(beam_stats.covs[i], np.cov(rows.T), atol=1e-4)
    local = latent_stats.compute(mu, lv, data.labels)
    np.testing.assert_allclose(beam_stats.global_cov, local.global_cov, atol=1e-5)
    assert len(beam_stats.post_mu) == min(5000, 10 * latent_stats.POSTERIOR_PER_CLASS)


def test_labeled_data_computes_stats_inside_the_job(tmp_path):
    m = generate(tmp_path / "o", per_class=10, classes=[1], labeled_data="mnist?limit=2000")
    assert m["per_class"] == {"1": 10}


@pytest.mark.e2e
def test_digest_is_identical_across_workers_runs_and_formats(tmp_path):
    kw = dict(per_class=150, classes=[0, 1, 2, 3], seed=5, batch_size=128)
    one = generate(tmp_path / "w1", **kw)
    two = generate(tmp_path / "w2", beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
                   shards=3, **kw)
    again = generate(tmp_path / "again", **kw)
    other = generate(tmp_path / "seed6", **{**kw, "seed": 6})
    assert one["dataset_digest"] == two["dataset_digest"] == again["dataset_digest"]
    assert other["dataset_digest"] != one["dataset_digest"]
    digests = format_digests(str(tmp_path / "w2"))
    assert digests == {"parquet": one["dataset_digest"], "tfrecord": one["dataset_digest"]}


def test_dataflow_dry_run_carries_gpu_option_resource_hint_and_setup_file(tmp_path):
    from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions
    m = run_job(GenerateJob(out="gs://my-bucket/out", per_class=10, runner="DataflowRunner", gpu="nvidia-l4",
                            workers=4),
                ["--project=my-project", "--region=us-central1", "--temp_location=gs://my-bucket/tmp",
                 "--dry_run=True", "--no_auth"])
    job = m["result"].job
    assert "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver" in \
        job.options.view_as(GoogleCloudOptions).dataflow_service_options
    assert job.options.view_as(SetupOptions).setup_file.endswith("setup.py")
    envs = job.proto_pipeline.components.environments.values()
    hints = [dict(e.resource_hints) for e in envs]
    assert {"beam:resources:accelerator:v1": b"type:nvidia-l4;count:1;install-nvidia-driver"} in hints
    staged = [a.role_payload for e in envs for a in e.dependencies]
    assert any(b"workflow.tar.gz" in p for p in staged)
    comps = job.proto_pipeline.components
    hinted = {k for k, e in comps.environments.items() if "beam:resources:accelerator:v1" in e.resource_hints}
    decode_envs = {t.environment_id for t in comps.transforms.values()
                   if "DecodeLatents" in t.unique_name and t.environment_id}
    assert decode_envs and decode_envs <= hinted
