"""The classifier filter (pipeline/generate/filter.py) and classifier-filtered generation: candidates that fail the
filter are dropped, each unit is topped back up from its own generator, and the acceptance per class lands in the
manifest."""
import json
import pickle

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.dataset.readers import load_dataframe, load_parquet
from pipeline.generate.filter import ClassifierFilter
from pipeline.generate.planning import plan_shard_tasks, plan_units
from pipeline.generate.transforms import GenerateShards, sample_unit
from vae_model.errors import DataError, ModelError, UsageError
from vae_model.inference import BatchDecoder

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


class AcceptAll(EvenPixelSum):
    def accept(self, images, labels):
        return np.ones(len(images), bool), np.ones(len(images), np.float32)


def _filtered_by_hand(bundled, sampler, units, seed, capacity, keep):
    """The top-up rule written out plainly, one class at a time within each round: from default_rng([seed,
    unit_id]), each round draws every still-short class's full count (classes ascending) and decodes them; each
    class keeps its first passing candidates in draw order; then the kept records (classes ascending) are permuted
    with the same generator."""
    dec = BatchDecoder(bundled.decoder, capacity)
    out = {}
    for u in units:
        rng = np.random.default_rng([seed, u.unit_id])
        need = dict(zip(u.labels, u.counts))
        zs, imgs, drawn = {c: [] for c in need}, {c: [] for c in need}, {c: 0 for c in need}
        while True:
            short = [c for c in u.labels if sum(len(z) for z in zs[c]) < need[c]]
            if not short:
                break
            z = np.concatenate([sampler.sample(rng, c, need[c]) for c in short])
            labels = np.repeat(short, [need[c] for c in short])
            images, _ = dec(z, labels)
            m = keep(images)
            for c in short:
                drawn[c] += need[c]
                zs[c].append(z[m & (labels == c)])
                imgs[c].append(images[m & (labels == c)])
        z = np.concatenate([np.concatenate(zs[c])[: need[c]] for c in u.labels])
        images = np.concatenate([np.concatenate(imgs[c])[: need[c]] for c in u.labels])
        labels = np.repeat(u.labels, u.counts)
        perm = rng.permutation(u.count)
        for i, j in enumerate(perm):
            out[u.unit_id * capacity + i] = (int(labels[j]), images[j].tobytes(), z[j].tobytes())
        out[("drawn", u.unit_id)] = sorted(drawn.items())
    return out


def test_top_up_follows_the_units_own_generator(bundled, classgauss, local_pipeline):
    sampler = classgauss
    units = plan_units({3: 40, 7: 16}, 16)
    assert all(len(u.labels) == 2 for u in units)  # every unit mixes both classes
    want = _filtered_by_hand(bundled, sampler, units, 5, 16,
                             lambda im: im.reshape(len(im), -1).sum(axis=1) % 2 == 0)
    # some class of some unit needed a second round
    assert any(d > n for k, v in want.items() if isinstance(k, tuple)
               for (_, d), n in zip(v, units[k[1]].counts))
    with local_pipeline() as p:
        keyed = p | beam.Create(plan_shard_tasks(units, 2)) | GenerateShards(
            sampler, 5, bundled.path, 16, bundled.model_id, "classgauss", 16, 56, record_filter=EvenPixelSum())
        flat = keyed | beam.Values() | beam.FlatMap(
            lambda b: [(int(i), (int(lab), img.tobytes(), z.tobytes())) for i, lab, img, z in
                       zip(b.ids, b.labels, b.images, b.latents)]
            + [(("drawn", int(b.ids[0]) // 16), sorted(b.drawn.items()))])
        assert_that(flat, equal_to(list(want.items())))


def test_a_filter_that_passes_everything_gives_the_unfiltered_records(bundled, classgauss, local_pipeline):
    """Round 0 is sample_unit's draw and the permutation follows it, so a filter that passes all changes nothing."""
    units = plan_units({3: 20, 7: 9}, 16)
    dec = BatchDecoder(bundled.decoder, 16)
    want = []
    for u in units:
        z, labels = sample_unit(classgauss, 5, u)
        images, _ = dec(z, labels)
        want += [(u.unit_id * 16 + i, int(labels[i]), images[i].tobytes(), z[i].tobytes()) for i in range(u.count)]
    with local_pipeline() as p:
        keyed = p | beam.Create(plan_shard_tasks(units, 1)) | GenerateShards(
            classgauss, 5, bundled.path, 16, bundled.model_id, "classgauss", 16, 29, record_filter=AcceptAll())
        flat = keyed | beam.Values() | beam.FlatMap(
            lambda b: [(int(i), int(lab), img.tobytes(), z.tobytes()) for i, lab, img, z in
                       zip(b.ids, b.labels, b.images, b.latents)])
        assert_that(flat, equal_to(want))


def test_a_filter_nothing_passes_fails_the_unit_with_the_acceptance_rate(bundled, classgauss, local_pipeline):
    sampler = classgauss
    with pytest.raises(Exception, match=r"work unit 0 \(class 4\): only 0 of 48 decoded candidates \(0.00%\) pass "
                                        r"the classifier filter at --min-confidence 0.5; lower --min-confidence, "
                                        r"raise --max-filter-rounds \(now 3\)"):
        with local_pipeline() as p:
            _ = p | beam.Create(plan_shard_tasks(plan_units({4: 16}, 16), 1)) | GenerateShards(
                sampler, 0, bundled.path, 16, bundled.model_id, "classgauss", 16, 16, record_filter=RejectAll(),
                max_rounds=3)


FILTERED = dict(per_class=100, classes=[5, 8], seed=2, shards=2, spread=1.5)


@pytest.fixture(scope="module")
def filtered_job(tmp_path_factory):
    from pipeline.generate.graph import run_job
    from pipeline.generate.job import GenerateJob

    out = tmp_path_factory.mktemp("filtered") / "o"
    job = GenerateJob(out=str(out), batch_size=64, filter_classifier="bundled", min_confidence=0.95, **FILTERED)
    return out, run_job(job, ["--direct_running_mode=in_memory", "--direct_num_workers=1"])


@pytest.mark.e2e
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
        # four units of 25 + 25; each class of each drew whole rounds of its own count until that count passed
        assert pc["drawn"] >= 100 and pc["passed"] >= 100 and pc["acceptance"] == round(pc["passed"] / pc["drawn"], 6)
    assert f["drawn"] == sum(v["drawn"] for v in f["per_class"].values())
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["filter"]["per_class"] == f["per_class"]


@pytest.mark.e2e
def test_filtered_records_start_with_the_unfiltered_draws_that_pass(filtered_job, tmp_path, generate):
    """Round 0 of a filtered unit is exactly the unfiltered job's draw, so every unfiltered record that passes is
    among the filtered unit's records (of its class), and top-ups add the rest."""
    out, m = filtered_job
    plain = tmp_path / "plain"
    generate(plain, **FILTERED)
    a = load_dataframe(str(plain)).sort_values("id")
    b = load_dataframe(str(out)).sort_values("id")
    images = np.stack([np.frombuffer(x, np.uint8).reshape(28, 28) for x in a["image"]])
    mask, _ = ClassifierFilter(None, 0.95).accept(images, a["label"].to_numpy())
    topped_up = False
    for unit in sorted(set(a["id"] // 64)):
        for c in FILTERED["classes"]:
            in_a = ((a["id"] // 64 == unit) & (a["label"] == c)).to_numpy()
            in_b = ((b["id"] // 64 == unit) & (b["label"] == c)).to_numpy()
            passing = {bytes(x) for x in a["image"][in_a & mask]}
            filtered = {bytes(x) for x in b["image"][in_b]}
            assert in_a.sum() == in_b.sum() and passing <= filtered
            topped_up |= len(passing) < len(filtered)
    assert topped_up  # spread 1.5 at 0.95 rejects some: units were topped up


@pytest.mark.e2e
def test_filtered_records_do_not_depend_on_shards_or_workers(filtered_job, tmp_path, generate):
    """Records depend on the shard count only through the number of units: 4 shards plan the same 4 units as 2."""
    _, m = filtered_job
    again = generate(tmp_path / "o", ["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
                     **{**FILTERED, "shards": 4}, filter_classifier="bundled", min_confidence=0.95,
                     formats=["parquet"])
    assert again["dataset_digest"] == m["dataset_digest"]
    assert again["filter"]["per_class"] == m["filter"]["per_class"]


@pytest.mark.e2e
def test_cli_filter_prints_the_acceptance(tmp_path, local_args):
    from click.testing import CliRunner

    from pipeline.cli import cli
    from pipeline.generate.filter import DEFAULT_FILTER_CONFIDENCE

    res = CliRunner().invoke(cli, ["generate", "--out", str(tmp_path / "o"), "--per-class", "30", "--classes", "3",
                                   "--batch-size", "32", "--filter-classifier", "bundled", *local_args])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["filter"]["min_confidence"] == DEFAULT_FILTER_CONFIDENCE  # without --min-confidence
    line = next(ln for ln in res.output.splitlines() if ln.startswith("filter"))
    assert f"{m['filter']['acceptance']:.1%} of {m['filter']['drawn']:,} decoded candidates passed" in line


@pytest.mark.e2e
def test_prior_samples_labeled_by_the_classifier(tmp_path, generate):
    """--sampler prior with a filter: unit class c keeps prior samples the classifier calls c (p >= P)."""
    from vae_model.classifier import load_classifier

    out = tmp_path / "o"
    m = generate(out, per_class=40, classes=[0, 7], sampler="prior", filter_classifier="bundled",
                 min_confidence=0.9, formats=["parquet"])
    assert m["per_class"] == {"0": 40, "7": 40}
    images, labels = load_parquet(str(out))
    probs = load_classifier(None).probabilities(images)
    assert (probs.argmax(axis=1) == labels).all() and (probs.max(axis=1) >= 0.9).all()
    # the prior is not class-conditional: most candidates are other digits
    assert all(v["acceptance"] < 0.5 for v in m["filter"]["per_class"].values())


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, float("nan"), True, "0.9"])
def test_filter_rejects_bad_min_confidence(bad):
    with pytest.raises(UsageError, match="--min-confidence must be in"):
        ClassifierFilter(None, bad)


def test_filter_is_picklable_and_shares_one_classifier_per_process(mnist_small):
    import cloudpickle

    f = ClassifierFilter(None, 0.9, batch_size=256)
    f.setup()
    for dumps in (pickle.dumps, cloudpickle.dumps):
        blob = dumps(f)
        assert len(blob) < 10_000  # no model inside
        g = pickle.loads(blob)
        assert g._handle is None and g.min_confidence == 0.9
        g.setup()
        assert g.classifier is f.classifier  # Shared: same key, same tag -> same loaded model
    assert ClassifierFilter(None, 0.9, batch_size=128).classifier is not f.classifier


def test_filter_accepts_by_probability_of_the_intended_label(mnist_small):
    x, y = mnist_small.test.images[:300], mnist_small.test.labels[:300]
    f = ClassifierFilter(None, 0.9, batch_size=128)
    mask, p = f.accept(x, y)
    assert mask.dtype == bool and mask.shape == (300,) and p.dtype == np.float32
    probs = f.classifier.probabilities(x)
    np.testing.assert_array_equal(p, probs[np.arange(300), y])
    np.testing.assert_array_equal(mask, (probs.argmax(1) == y) & (p >= 0.9))
    assert mask.mean() > 0.9
    wrong = (y + 1) % 10
    mask_wrong, _ = f.accept(x, wrong)
    assert mask_wrong.mean() < 0.02
    # every threshold in (0, 1] is valid; the mask only shrinks as it rises
    counts = [int(ClassifierFilter(None, t, batch_size=128).accept(x, y)[0].sum()) for t in (0.01, 0.5, 0.99, 1.0)]
    assert counts == sorted(counts, reverse=True)
    # unlabeled records are judged by the top class probability
    mask_u, p_u = f.accept(x, np.full(300, -1))
    np.testing.assert_array_equal(p_u, probs.max(1))
    np.testing.assert_array_equal(mask_u, probs.max(1) >= 0.9)
    assert [a.shape for a in f.accept(x[:0], y[:0])] == [(0,), (0,)]
    with pytest.raises(DataError, match="not a class of classifier"):
        f.accept(x[:2], np.array([3, 10]))


def test_filter_check_reads_only_the_json_and_names_mismatches(tmp_path):
    f = ClassifierFilter(None, 0.5)
    assert f.check(num_classes=10, image_shape=(28, 28))["num_classes"] == 10
    assert ClassifierFilter("bundled", 0.5).check() == f.check()  # --filter-classifier bundled
    with pytest.raises(ModelError, match="takes 28x28 images but the model makes 32x32"):
        f.check(image_shape=(32, 32))
    with pytest.raises(ModelError, match="knows 10 classes but the model has 12"):
        f.check(num_classes=12)
    with pytest.raises(ModelError, match="does not exist"):
        ClassifierFilter(str(tmp_path / "nope"), 0.5).check()
