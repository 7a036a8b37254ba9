"""A generate job: option checks (job.validate, without Beam), then whole jobs on the bundled model with small N,
through run_job and through the Beam-examples entry point graph.run."""
import click
import numpy as np
import pytest

from pipeline.dataset.readers import load_parquet, load_table, read_manifest, tfrecord_dataset
from pipeline.dataset.verify import format_digests, verify_output
from pipeline.generate.job import DEFAULT_SAMPLER, GenerateJob, default_spread, validate
from pipeline.generate.options import parse_generate_args
from pipeline.generate.planning import plan_units
from pipeline.generate.samplers import LatentSampler, SamplerSpec, build_sampler
from pipeline.generate.transforms import sample_unit
from vae_model.errors import UsageError


def test_validate_fills_in_the_defaults_and_counts(bundled):
    job = GenerateJob(out="X", num=25, classes=[7, 3])
    checked = validate(job, bundled)
    assert checked.counts == {3: 13, 7: 12}
    assert (job.spread, job.shards, job.min_confidence) == (default_spread(DEFAULT_SAMPLER), 1, None)
    assert isinstance(checked.sampler, LatentSampler) and checked.class_stats is None
    assert checked.record_filter is None
    prior = GenerateJob(out="X", num=10, sampler="prior", shards=2)
    assert validate(prior, bundled).counts == {-1: 10} and prior.shards == 2


def test_the_driver_reads_the_statistics_file_once_and_hands_its_digest_to_the_workers(bundled, monkeypatch):
    import hashlib

    from vae_model import model_dir
    from vae_model.model_dir import STATS

    reads = []
    real = model_dir.read_bytes
    monkeypatch.setattr(model_dir, "read_bytes", lambda p: reads.append(p) or real(p))
    checked = validate(GenerateJob(out="X", per_class=5, sampler="posterior"), bundled)
    stats_file = bundled.file(STATS)
    assert reads == [stats_file]
    assert checked.worker_sampler.sha256 == hashlib.sha256(real(stats_file)).hexdigest()
    assert checked.worker_sampler.build().classes() == checked.sampler.classes()


@pytest.mark.parametrize("kw,needle", [
    (dict(num=5, per_class=5), "exactly one of --num"),
    (dict(per_class=5, stats="s.npz", labeled_data="mnist"), "at most one of --stats"),
    (dict(per_class=5, workers=0), "--workers must be > 0"),
    (dict(per_class=5, shards=0), "--shards 0"),
    (dict(per_class=5, runner="SparkRunner"), "--runner"),
    (dict(per_class=5, sampler="vae"), "--sampler 'vae'"),
    (dict(per_class=5, sampler="gmm", gmm_components=0), "--gmm-components"),
    (dict(num=5, classes=[3, 3]), "lists a class twice"),
])
def test_validate_names_the_flag_of_each_mistake(bundled, kw, needle):
    with pytest.raises(UsageError, match=needle):
        validate(GenerateJob(out="X", **kw), bundled)


def test_labeled_data_is_checked_on_the_driver_from_its_labels(bundled, tmp_path):
    """With --labeled-data the statistics are computed in the job, yet a class without labeled examples still
    fails before it starts: validate reads the source's labels."""
    src = tmp_path / "five.npz"
    rng = np.random.default_rng(0)
    np.savez(src, x_train=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), y_train=np.arange(50) % 5)
    checked = validate(GenerateJob(out="X", per_class=5, classes=[1, 4], labeled_data=f"npz:{src}"), bundled)
    assert isinstance(checked.sampler, SamplerSpec)
    assert checked.class_stats.classes == (0, 1, 2, 3, 4) and checked.class_stats.rows == 50
    with pytest.raises(UsageError, match="--classes 7: the class statistics have no examples of class 7"):
        validate(GenerateJob(out="X", per_class=5, classes=[1, 7], labeled_data=f"npz:{src}"), bundled)


def test_generate_arguments_parse_into_a_job_and_beam_options():
    job, beam_args = parse_generate_args(["--out", "X", "--num", "9", "--classes", "3,1", "--stats", "s.npz",
                                          "--formats", "tfrecord", "--direct_num_workers=2"])
    assert (job.out, job.num, job.classes, job.stats, job.formats) == ("X", 9, [3, 1], "s.npz", ["tfrecord"])
    assert job.sampler == DEFAULT_SAMPLER and job.spread is None and beam_args == ["--direct_num_workers=2"]
    with pytest.raises(click.BadParameter, match="comma-separated integers"):
        parse_generate_args(["--out", "X", "--num", "9", "--classes", "a,b"])
    with pytest.raises(UsageError, match="Expected Beam pipeline options .*Received: 'stray'"):
        parse_generate_args(["--out", "X", "--num", "9", "stray"])


@pytest.mark.e2e
@pytest.mark.parametrize("sampler", ["prior", "centroid", "classgauss", "posterior", "gmm"])
def test_every_sampler_gives_exact_counts_and_unique_ids(sampler, tmp_path, bundled, generate):
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


@pytest.mark.e2e
def test_conditional_sampler_on_a_conditional_model(tmp_path, tiny_conditional_dir, generate):
    m = generate(tmp_path / "o", model=tiny_conditional_dir, sampler="conditional", per_class=20, spread=0.8)
    _, labels = load_parquet(str(tmp_path / "o"))
    assert m["per_class"] == {str(c): 20 for c in range(10)} and len(labels) == 200


@pytest.mark.e2e
def test_readers_return_exactly_what_the_decoder_makes(tmp_path, bundled, generate):
    """Recompute every record outside Beam (sampler + decoder by hand) and compare with both readers."""
    from vae_model.inference import BatchDecoder
    out = tmp_path / "o"
    m = generate(out, per_class=70, classes=[2, 5], seed=11, shards=2)
    assert m["sampler"] == DEFAULT_SAMPLER and m["config"]["spread"] == default_spread(DEFAULT_SAMPLER)
    sampler = build_sampler(DEFAULT_SAMPLER, bundled.latent_dim, False, bundled.stats(), default_spread(DEFAULT_SAMPLER))
    dec = BatchDecoder(bundled.decoder, 64)
    want = {}
    for u in plan_units({2: 70, 5: 70}, 64, num_shards=2):
        z, labels = sample_unit(sampler, 11, u)
        imgs, _ = dec(z, labels)
        for i in range(u.count):
            want[u.unit_id * 64 + i] = (int(labels[i]), imgs[i].tobytes(), z[i].tobytes())
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


@pytest.mark.e2e
def test_manifest_records_provenance_and_verifies(tmp_path, bundled, generate):
    m = generate(tmp_path / "o", per_class=10, formats=["parquet", "tfrecord"])
    disk = read_manifest(str(tmp_path / "o"))
    assert disk["dataset_digest"] == m["dataset_digest"] and disk["model_id"] == bundled.model_id
    for key in ("command", "config", "versions", "runner", "elapsed_seconds", "images_per_second", "seed"):
        assert key in disk
    assert {s["format"] for s in disk["shards"]} == {"parquet", "tfrecord"}
    assert all(len(s["crc32c"]) == 8 and s["bytes"] > 0 for s in disk["shards"])  # crc32c by default, as GCS
    assert verify_output(str(tmp_path / "o")) == []
    assert not list((tmp_path / "o").glob("**/*temp*"))


@pytest.mark.e2e
def test_digest_is_identical_across_workers_runs_and_formats(tmp_path, generate):
    kw = dict(per_class=150, classes=[0, 1, 2, 3], seed=5, batch_size=128)
    one = generate(tmp_path / "w1", **kw)
    # 600 records of <= 128: 5 units for 1 shard and for 5 (the unit count is the only way shards matter)
    two = generate(tmp_path / "w2", beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
                   shards=5, **kw)
    again = generate(tmp_path / "again", **kw)
    other = generate(tmp_path / "seed6", **{**kw, "seed": 6})
    assert one["dataset_digest"] == two["dataset_digest"] == again["dataset_digest"]
    assert other["dataset_digest"] != one["dataset_digest"]
    digests = format_digests(str(tmp_path / "w2"))
    assert digests == {"parquet": one["dataset_digest"], "tfrecord": one["dataset_digest"]}


@pytest.mark.e2e
def test_run_takes_the_generate_arguments_and_a_test_pipeline(tmp_path, generate, local_args, local_pipeline):
    """graph.run(argv) is the job `vae-augment generate ARGV` runs: same records as run_job, its argv recorded."""
    from pipeline.generate.graph import run

    argv = ["--out", str(tmp_path / "r"), "--per-class", "12", "--classes", "4", "--batch-size", "64", "--seed", "2"]
    m = run(argv + local_args)
    assert m["dataset_digest"] == generate(tmp_path / "j", per_class=12, classes=[4], seed=2)["dataset_digest"]
    assert m["command"].startswith("vae-augment generate --out") and "--save_main_session" in m["beam_args"]
    t = run(["--out", str(tmp_path / "t"), *argv[2:]], save_main_session=False, test_pipeline=local_pipeline())
    assert t["dataset_digest"] == m["dataset_digest"] and "--save_main_session" not in t["beam_args"]
