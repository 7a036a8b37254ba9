"""Classifier-filtered generation: candidates that fail the filter are dropped, each unit is topped back up from its
own generator, and the acceptance per class lands in the manifest."""
import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.generate.graph import GenerateJob, run_job
from pipeline.dataset.readers import load_dataframe, load_parquet
from pipeline.generate.runners import make_runner
from pipeline.generate.samplers import build_sampler
from pipeline.generate.transforms import GenerateShards, plan_shard_tasks, plan_units
from vae_model.inference import BatchDecoder

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


class EvenPixelSum:
    """Accepts an image when its pixel sum is even: about half, decided by the image alone."""

    min_confidence = 0.5

    def setup(self):
        pass

    def accept(self, images, labels):
        mask = images.reshape(len(images), -1).sum(axis=1) % 2 == 0
        return mask, mask.astype(np.float32)


class RejectAll(EvenPixelSum):
    def accept(self, images, labels):
        return np.zeros(len(images), bool), np.zeros(len(images), np.float32)


def _filtered_by_hand(bundled, sampler, units, seed, capacity, keep):
    """The top-up rule written out plainly: draw `count` per round from default_rng([seed, unit_id]) until `count`
    candidates pass; keep the first that pass, in draw order."""
    dec = BatchDecoder(bundled.decoder, capacity)
    out = {}
    for u in units:
        rng = np.random.default_rng([seed, u.unit_id])
        zs, imgs, drawn = [], [], 0
        while sum(len(z) for z in zs) < u.count:
            z = sampler.sample(rng, u.label, u.count)
            images, _ = dec(z, np.full(u.count, u.label))
            drawn += u.count
            m = keep(images)
            zs.append(z[m])
            imgs.append(images[m])
        z, images = np.concatenate(zs)[: u.count], np.concatenate(imgs)[: u.count]
        for i in range(u.count):
            out[u.unit_id * capacity + i] = (u.label, images[i].tobytes(), z[i].tobytes())
        out[("drawn", u.unit_id)] = drawn
    return out


def test_top_up_follows_the_units_own_generator(bundled):
    sampler = build_sampler("classgauss", bundled.latent_dim, False, bundled.stats(), spread=1.0)
    units = plan_units({3: 40, 7: 16}, 16)
    want = _filtered_by_hand(bundled, sampler, units, 5, 16,
                             lambda im: im.reshape(len(im), -1).sum(axis=1) % 2 == 0)
    assert any(v > 16 for k, v in want.items() if isinstance(k, tuple))  # some unit needed a second round
    options = PipelineOptions(LOCAL)
    with TestPipeline(runner=make_runner(options), options=options) as p:
        keyed = p | beam.Create(plan_shard_tasks(units, 2)) | GenerateShards(
            sampler, 5, bundled.path, 16, bundled.model_id, "classgauss", 16, 56, record_filter=EvenPixelSum())
        flat = keyed | beam.Values() | beam.FlatMap(
            lambda b: [(int(i), (int(lab), img.tobytes(), z.tobytes())) for i, lab, img, z in
                       zip(b.ids, b.labels, b.images, b.latents)] + [(("drawn", int(b.ids[0]) // 16), b.drawn)])
        assert_that(flat, equal_to(list(want.items())))


def test_a_filter_nothing_passes_fails_the_unit_with_the_acceptance_rate(bundled):
    sampler = build_sampler("classgauss", bundled.latent_dim, False, bundled.stats(), spread=1.0)
    options = PipelineOptions(LOCAL)
    with pytest.raises(Exception, match=r"work unit 0 \(class 4\): only 0 of 48 decoded candidates \(0.00%\) pass "
                                        r"the classifier filter at --min-confidence 0.5; lower --min-confidence, "
                                        r"raise --max-filter-rounds \(now 3\)"):
        with TestPipeline(runner=make_runner(options), options=options) as p:
            _ = p | beam.Create(plan_shard_tasks(plan_units({4: 16}, 16), 1)) | GenerateShards(
                sampler, 0, bundled.path, 16, bundled.model_id, "classgauss", 16, 16, record_filter=RejectAll(),
                max_rounds=3)


@pytest.fixture(scope="module")
def filtered_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("filtered") / "o"
    job = GenerateJob(out=str(out), per_class=100, classes=[5, 8], batch_size=64, seed=2, shards=2,
                      spread=1.5, filter_classifier="bundled", min_confidence=0.95)
    return out, run_job(job, LOCAL)


def test_filtered_job_keeps_exact_counts_and_only_passing_records(filtered_job):
    from vae_model.classifier import load_classifier

    out, m = filtered_job
    assert m["per_class"] == {"5": 100, "8": 100}
    images, labels = load_parquet(str(out))
    probs = load_classifier(None).probabilities(images)
    assert (probs.argmax(axis=1) == labels).all()
    assert (probs[np.arange(len(labels)), labels] >= 0.95).all()
    f = m["filter"]
    assert f["min_confidence"] == 0.95 and f["classifier_dir"] == "bundled" and len(f["classifier_sha256"]) == 64
    for c in ("5", "8"):
        pc = f["per_class"][c]
        # two units per class (64 + 36); each drew whole rounds of its own size until 100% of its count passed
        assert pc["drawn"] >= 100 and pc["passed"] >= 100 and pc["acceptance"] == round(pc["passed"] / pc["drawn"], 6)
    assert f["drawn"] == sum(v["drawn"] for v in f["per_class"].values())
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["filter"]["per_class"] == f["per_class"]


def test_filtered_records_start_with_the_unfiltered_draws_that_pass(filtered_job, tmp_path):
    """Round 0 of a filtered unit is exactly the unfiltered job's draw, so the records that pass it come first."""
    from pipeline.generate.filter import ClassifierFilter

    out, m = filtered_job
    plain = tmp_path / "plain"
    run_job(GenerateJob(out=str(plain), per_class=100, classes=[5, 8], batch_size=64, seed=2, shards=2, spread=1.5),
            LOCAL)
    a = load_dataframe(str(plain)).sort_values("id")
    b = load_dataframe(str(out)).sort_values("id")
    images = np.stack([np.frombuffer(x, np.uint8).reshape(28, 28) for x in a["image"]])
    mask, _ = ClassifierFilter(None, 0.95).accept(images, a["label"].to_numpy())
    for unit in sorted(set(a["id"] // 64)):
        in_unit = (a["id"] // 64 == unit).to_numpy()
        passing = [bytes(x) for x in a["image"][in_unit & mask]]
        filtered = [bytes(x) for x in b["image"][(b["id"] // 64 == unit).to_numpy()]]
        assert len(passing) < len(filtered)  # spread 1.5 at 0.95 rejects some: the unit was topped up
        assert filtered[: len(passing)] == passing


def test_filtered_records_do_not_depend_on_shards_or_workers(filtered_job, tmp_path):
    _, m = filtered_job
    again = run_job(GenerateJob(out=str(tmp_path / "o"), per_class=100, classes=[5, 8], batch_size=64, seed=2,
                                shards=3, spread=1.5, filter_classifier="bundled", min_confidence=0.95,
                                formats=["parquet"]), ["--direct_running_mode=multi_threading",
                                                       "--direct_num_workers=2"])
    assert again["dataset_digest"] == m["dataset_digest"]
    assert again["filter"]["per_class"] == m["filter"]["per_class"]
    assert again["fingerprint"] == m["fingerprint"]


def test_cli_filter_prints_the_acceptance(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli

    res = CliRunner().invoke(cli, ["generate", "--out", str(tmp_path / "o"), "--per-class", "30", "--classes", "3",
                                   "--batch-size", "32", "--filter-classifier", "bundled", *LOCAL])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["filter"]["min_confidence"] == 0.9  # the default threshold
    line = next(ln for ln in res.output.splitlines() if ln.startswith("filter"))
    assert f"{m['filter']['acceptance']:.1%} of {m['filter']['drawn']:,} decoded candidates passed" in line


def test_prior_samples_labeled_by_the_classifier(tmp_path):
    """--sampler prior with a filter: unit class c keeps prior samples the classifier calls c (p >= P)."""
    from vae_model.classifier import load_classifier

    out = tmp_path / "o"
    m = run_job(GenerateJob(out=str(out), per_class=40, classes=[0, 7], sampler="prior", batch_size=64,
                            filter_classifier="bundled", min_confidence=0.9, formats=["parquet"]), LOCAL)
    assert m["per_class"] == {"0": 40, "7": 40}
    images, labels = load_parquet(str(out))
    probs = load_classifier(None).probabilities(images)
    assert (probs.argmax(axis=1) == labels).all() and (probs.max(axis=1) >= 0.9).all()
    # the prior is not class-conditional: most candidates are other digits
    assert all(v["acceptance"] < 0.5 for v in m["filter"]["per_class"].values())
