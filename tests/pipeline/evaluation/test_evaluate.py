"""`evaluate`: each metric on hand-made shard directories whose answer is known, the report, and user errors.

Shard directories are written with the project's own record code (RecordBatch -> to_arrow / encode_tfrecords, a
manifest like outdir.finalize's) and must pass `verify_output`, so they are what a generate job would write.
"""
import json
import os
import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.evaluation.evaluate import evaluate, mean_pairwise_distance, nearest_neighbours
from pipeline.dataset.records import RecordBatch, batch_digest, encode_tfrecords, to_arrow
from pipeline.dataset.verify import verify_output
from vae_model.data import load_source
from vae_model.errors import DataError, ModelError, UsageError
from vae_model.artifacts import sha256_file

REAL = "mnist?limit=2000"  # 2,000 train / 2,000 test real digits: small enough for seconds per evaluation
FAST = {"cas_epochs": 0, "novelty_images": 500, "baseline_images": 500, "diversity_per_class": 50}


def write_output(out, images, labels, latents=None, formats=("parquet", "tfrecord"), sampler="handmade"):
    """A generate-style output directory (one shard per format + manifest.json) holding exactly these records."""
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


@pytest.fixture(scope="module")
def real():
    return load_source(REAL)


@pytest.fixture(scope="module")
def tiny_clf(tmp_path_factory):
    """The reference CNN trained 1 epoch on the 2,000 train digits of REAL (its recorded test accuracy is the ceiling
    for the same data and config)."""
    from vae_model.classifier import load_classifier_config, train_classifier
    out = tmp_path_factory.mktemp("clf") / "tiny"
    train_classifier(REAL, str(out), load_classifier_config(None, ["epochs=1"]))
    return str(out)


# ---------------------------------------------------------------------------------------------- distances

def test_nearest_neighbours_equal_brute_force_numpy():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (300, 7, 5), dtype=np.uint8)
    qry = rng.integers(0, 256, (70, 7, 5), dtype=np.uint8)
    qry[:5] = ref[[3, 299, 150, 0, 3]]  # exact copies
    brute = np.sqrt(((qry.reshape(70, 1, -1).astype(np.int64) - ref.reshape(1, 300, -1)) ** 2).sum(-1))
    for chunk_q, chunk_r in ((1024, 8192), (16, 64), (1, 7)):  # chunking must not change anything
        d, j = nearest_neighbours(qry, ref, chunk_q=chunk_q, chunk_r=chunk_r)
        np.testing.assert_array_equal(d, brute.min(1))
        np.testing.assert_array_equal(j, brute.argmin(1))
    assert (d[:5] == 0).all() and list(j[:5]) == [3, 299, 150, 0, 3]


def test_distances_are_exact_for_bright_images_where_float32_would_round():
    # all-255 images: ||a||^2 = 784 * 65025 = 5.1e7 > 2^24, where float32 matrix arithmetic loses units
    a = np.full((2, 28, 28), 255, np.uint8)
    b = a.copy()
    b[1, 0, 0] = 254  # squared distance exactly 509 from a[0]
    d, _ = nearest_neighbours(a[:1], b[1:])
    assert d[0] == 1.0
    d, _ = nearest_neighbours(a[:1], b)
    assert d[0] == 0.0


def test_mean_pairwise_distance_equals_brute_force():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 6, 6), dtype=np.uint8)
    f = x.reshape(40, -1).astype(np.float64)
    brute = [np.linalg.norm(f[i] - f[j]) for i in range(40) for j in range(i + 1, 40)]
    assert mean_pairwise_distance(x) == pytest.approx(np.mean(brute), rel=1e-12)
    assert mean_pairwise_distance(x[:1]) is None


# ---------------------------------------------------------------------------------------------- metrics

def test_copies_of_real_training_images_are_exact_duplicates_at_distance_zero(tmp_path, real):
    out = write_output(tmp_path / "copy", real.train.images[:300], real.train.labels[:300])
    r = evaluate(out, REAL, **FAST)
    nov = r["novelty"]
    assert nov["exact_duplicates"] == 300 and nov["exact_duplicate_rate"] == 1.0
    assert nov["exact_duplicates_in_queries"] == nov["synthetic_queries"] == 300
    assert nov["synthetic"]["q100"] == 0.0 and nov["near_duplicate_rate"] == 1.0
    assert nov["baseline"]["q50"] > 1.0 and nov["baseline_near_duplicate_rate"] < 0.05
    assert nov["repeated_synthetic_images"] == 0
    assert r["counts"]["match"] and r["counts"]["per_class"] == {
        str(c): int(n) for c, n in zip(*np.unique(real.train.labels[:300], return_counts=True))}


def test_repeated_synthetic_images_are_counted(tmp_path, real):
    imgs = np.concatenate([real.test.images[:50], real.test.images[:10]])
    labels = np.concatenate([real.test.labels[:50], real.test.labels[:10]])
    r = evaluate(write_output(tmp_path / "rep", imgs, labels, formats=("tfrecord",)), REAL, **FAST)
    assert r["novelty"]["repeated_synthetic_images"] == 10
    assert r["counts"]["read_from"] == "tfrecord" and r["counts"]["match"] and r["counts"]["total"] == 60


def test_a_real_source_without_test_split_gets_a_seeded_holdout(tmp_path, real):
    real_dir = write_output(tmp_path / "realsrc", real.train.images[:600], real.train.labels[:600])
    out = write_output(tmp_path / "o", real.test.images[:100], real.test.labels[:100])
    r = evaluate(out, f"parquet:{real_dir}", **dict(FAST, cas_epochs=1, cas_max_steps=2))
    assert r["real"]["test_images"] == 100 and r["real"]["train_rows"] == 500  # 600 // 6 held out
    assert any("held out" in n for n in r["notes"])
    assert r["cas"]["test_images"] == 100 and r["cas"]["ceiling_source"].startswith("trained now")


def test_relabeling_a_fifth_of_real_images_lowers_fidelity_by_twenty_points(tmp_path, real):
    x, y = real.test.images[:1000], real.test.labels[:1000]
    clean = evaluate(write_output(tmp_path / "clean", x, y), REAL, **FAST)["fidelity"]
    flip = np.random.default_rng(0).choice(1000, 200, replace=False)
    noisy_labels = y.copy()
    noisy_labels[flip] = (y[flip] + 1) % 10
    noisy = evaluate(write_output(tmp_path / "noisy", x, noisy_labels), REAL, **FAST)["fidelity"]
    assert clean["applicable"] and clean["fidelity"] > 0.97  # the bundled classifier on real test digits
    assert clean["fidelity"] - noisy["fidelity"] == pytest.approx(0.20, abs=0.015)
    assert noisy["mean_prob_label"] < clean["mean_prob_label"] - 0.15
    conf = np.array(noisy["confusion"]["rows_intended_cols_predicted"])
    assert conf.sum() == 1000 and np.trace(conf) == round(noisy["fidelity"] * 1000)
    assert sum(v["images"] for v in noisy["per_class"].values()) == 1000


def test_cas_on_real_images_equals_the_real_training_ceiling(tmp_path, real, tiny_clf):
    """Same images in the same order, same config and seed: the CAS classifier (trained from the TFRecord stream) is
    the ceiling classifier (trained from arrays), whether the ceiling is the recorded one or trained again."""
    out = write_output(tmp_path / "realcopy", real.train.images, real.train.labels)
    opts = dict(FAST, cas_epochs=None)
    recorded = evaluate(out, REAL, classifier_dir=tiny_clf, **opts)["cas"]
    assert recorded["ceiling_source"].startswith("recorded in")
    assert recorded["cas"] == recorded["ceiling"] and recorded["gap"] == 0
    assert recorded["steps"] == recorded["ceiling_steps"] == 16 and recorded["read_from"].startswith("tfrecord")
    # bundled classifier: its recorded ceiling is for full MNIST and 4 epochs, so the ceiling is trained here
    trained = evaluate(out, REAL, **dict(FAST, cas_epochs=1, cas_max_steps=8))["cas"]
    assert trained["ceiling_source"].startswith("trained now")
    assert trained["cas"] == trained["ceiling"] and trained["steps"] == trained["ceiling_steps"] == 8


def test_cas_reads_parquet_when_no_tfrecords_and_restricts_to_the_classes_present(tmp_path, real):
    keep = np.isin(real.train.labels, [0, 1])
    out = write_output(tmp_path / "pq01", real.train.images[keep], real.train.labels[keep], formats=("parquet",))
    r = evaluate(out, REAL, **dict(FAST, cas_epochs=1, cas_max_steps=4))
    cas = r["cas"]
    assert cas["classes"] == [0, 1] and "classes [0, 1] only" in cas["note"]
    assert cas["test_images"] == int(np.isin(real.test.labels, [0, 1]).sum())
    assert cas["read_from"].startswith("parquet") and cas["cas"] == cas["ceiling"]
    assert list(r["diversity"]["per_class"]) == ["0", "1"]


def test_diversity_of_real_images_matches_real(tmp_path, real):
    out = write_output(tmp_path / "div", real.train.images, real.train.labels)
    div = evaluate(out, REAL, **dict(FAST, diversity_per_class=5000))["diversity"]
    # with no subsampling both sides are the same images: ratio exactly 1
    assert all(v["ratio"] == pytest.approx(1.0, abs=1e-12) for v in div["per_class"].values())
    blurred = (real.train.images[:500] // 4 + 40).astype(np.uint8)  # low-contrast copies vary less
    low = evaluate(write_output(tmp_path / "low", blurred, real.train.labels[:500]), REAL, **FAST)["diversity"]
    assert low["mean_ratio"] < 0.5


def test_unlabeled_records_get_no_fidelity_or_cas_but_a_full_report(tmp_path, real):
    out = write_output(tmp_path / "unl", real.test.images[:200], np.full(200, -1), sampler="prior")
    r = evaluate(out, REAL, report_dir=str(tmp_path / "rep"), **dict(FAST, cas_epochs=None))
    assert not r["fidelity"]["applicable"] and "unlabeled" in r["fidelity"]["reason"]
    assert not r["cas"]["applicable"] and "unlabeled" in r["cas"]["reason"]
    assert not r["diversity"]["applicable"] and r["diversity"]["pooled"]["ratio"] > 0
    assert sum(r["fidelity"]["predicted_class_share"].values()) == pytest.approx(1.0)
    assert r["counts"]["per_class"] == {"-1": 200}
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count("Not applicable") >= 2 and "worst_fidelity" not in r["figures"]


def test_counts_that_disagree_with_the_manifest_are_reported(tmp_path, real):
    out = write_output(tmp_path / "bad", real.test.images[:100], real.test.labels[:100])
    path = os.path.join(out, "manifest.json")
    manifest = json.load(open(path))
    manifest["per_class"]["0"] += 5
    json.dump(manifest, open(path, "w"))
    r = evaluate(out, REAL, **FAST)
    assert not r["counts"]["match"] and "class 0" in r["counts"]["problems"][0]
    assert any("disagree with the manifest" in n for n in r["notes"])


# ---------------------------------------------------------------------------------------------- report

def test_report_is_self_contained_html_with_embedded_pictures(tmp_path, real):
    rng = np.random.default_rng(0)
    out = write_output(tmp_path / "o", real.test.images[:400], real.test.labels[:400],
                       latents=rng.standard_normal((400, 5)).astype(np.float32))
    report_dir = tmp_path / "report"
    r = evaluate(out, REAL, report_dir=str(report_dir), **FAST)
    page = (report_dir / "report.html").read_text()
    srcs = re.findall(r"""\b(?:src|href)\s*=\s*['"]([^'"]*)""", page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<link" not in page and "<script" not in page and "@import" not in page and "url(" not in page
    assert set(r["figures"]) == {"samples", "worst_fidelity", "latent_scatter", "novelty_hist", "closest_pairs"}
    assert len(srcs) == len(r["figures"])
    for rel in r["figures"].values():
        assert (report_dir / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((report_dir / "report.json").read_text())
    assert saved["fidelity"]["fidelity"] == r["fidelity"]["fidelity"] and saved["figures"] == r["figures"]
    assert f"{100 * r['fidelity']['fidelity']:.2f}%" in page
    # a second run replaces the report; a directory holding anything else is refused, untouched
    evaluate(out, REAL, report_dir=str(report_dir), **FAST)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="not an earlier report"):
        evaluate(out, REAL, report_dir=str(tmp_path / "mine"), **FAST)
    assert (tmp_path / "mine" / "notes.txt").exists()


@pytest.mark.parametrize("kwargs,error,needle", [
    ({"max_images": 0}, UsageError, "max_images must be an integer >= 1"),
    ({"cas_epochs": -1}, UsageError, "cas_epochs must be an integer >= 0"),
    ({"near_dup_threshold": float("nan")}, UsageError, "near-duplicate threshold"),
    ({"near_dup_quantile": 1.0}, UsageError, "near-duplicate quantile"),
    ({"real_source": "nope:x"}, UsageError, "unknown kind"),
    ({"classifier_dir": "/no/such/clf"}, ModelError, "/no/such/clf"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, real, kwargs, error, needle):
    out = write_output(tmp_path / "o", real.test.images[:20], real.test.labels[:20])
    kwargs = {"real_source": REAL, **kwargs}
    with pytest.raises(error) as e:
        evaluate(out, **kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_directory_without_manifest_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="has no manifest.json"):
        evaluate(str(tmp_path), REAL)


@pytest.mark.e2e
def test_evaluate_a_real_generate_job(tmp_path):
    from pipeline.generate.graph import GenerateJob, run_job

    out = str(tmp_path / "gen")
    run_job(GenerateJob(out=out, per_class=60, batch_size=128), ["--direct_running_mode=in_memory"])
    r = evaluate(out, REAL, report_dir=str(tmp_path / "rep"), **dict(FAST, cas_epochs=1, cas_max_steps=5))
    assert r["counts"]["match"] and r["counts"]["total"] == 600
    assert r["fidelity"]["fidelity"] > 0.6 and r["cas"]["applicable"] and 0 < r["cas"]["cas"] <= 1
    assert r["novelty"]["exact_duplicates"] == 0 and r["novelty"]["synthetic"]["q00"] > 0
    assert os.path.getsize(tmp_path / "rep" / "report.html") > 10_000


def _cli_has(*names):
    from pipeline.cli import cli
    return set(names) <= set(cli.commands)


@pytest.mark.skipif(not _cli_has("train-classifier", "evaluate"),
                    reason="the train-classifier/evaluate CLI commands are not in pipeline/cli.py yet")
def test_cli_train_classifier_then_evaluate(tmp_path, real):
    from click.testing import CliRunner

    from pipeline.cli import cli

    def invoke(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    res = invoke("train-classifier", "--data", "mnist?limit=500", "--out", tmp_path / "clf", "--set", "epochs=1",
                 "--quiet")
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output and (tmp_path / "clf" / "classifier.keras").exists()
    out = write_output(tmp_path / "o", real.test.images[:300], real.test.labels[:300])
    # only the core options, so the test holds for any version of the command that keeps them
    res = invoke("evaluate", out, "--real", REAL, "--classifier", tmp_path / "clf", "--report", tmp_path / "rep",
                 "--cas-epochs", 1, "--max-images", 1000)
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output and (tmp_path / "rep" / "report.html").exists()
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["cas"]["applicable"] and rep["cas"]["epochs"] == 1 and rep["options"]["max_images"] == 1000
    assert rep["classifier"]["path"] == str(tmp_path / "clf") and rep["real"]["source"] == REAL
    for args, code, needle in [
        (["evaluate", out, "--real", REAL, "--report", out], 2, "is the dataset itself"),
        (["evaluate", tmp_path / "none", "--real", REAL, "--report", tmp_path / "r2"], 1, "manifest.json"),
        (["evaluate", out, "--real", REAL, "--report", tmp_path / "r2", "--classifier", tmp_path / "nope"], 1,
         "does not exist"),
        (["train-classifier", "--data", "mnist", "--out", tmp_path / "x", "--set", "model.dropout=2"], 2,
         "model.dropout"),
    ]:
        res = invoke(*args)
        assert res.exit_code == code, res.output
        assert "Traceback" not in res.output and needle in res.output.strip().splitlines()[-1]
    assert not (tmp_path / "r2").exists() and not (tmp_path / "x").exists()
