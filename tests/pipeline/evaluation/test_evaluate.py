"""`evaluate` as a whole: its options, what it reads (the synthetic records, the real splits), user errors, and
whole evaluations of hand-made shard directories whose answer is known (see conftest.py)."""
import dataclasses
import json
import os

import numpy as np
import pytest

from pipeline.evaluation.distances import digests
from pipeline.evaluation.evaluate import EvaluateOptions, check_report_dir, evaluate, read_synthetic, real_splits
from vae_model.errors import DataError, ModelError, UsageError


# ---------------------------------------------------------------------------------------------- options

@pytest.mark.parametrize("changes,needle", [
    ({"max_images": 0}, "Expected `max_images` to be an integer >= 1. Received: max_images=0"),
    ({"novelty_images": None}, "Received: novelty_images=None"),
    ({"baseline_images": 2.5}, "Received: baseline_images=2.5"),
    ({"diversity_per_class": True}, "Received: diversity_per_class=True"),
    ({"cas_epochs": -1}, "Expected `cas_epochs` to be an integer >= 0. Received: cas_epochs=-1"),
    ({"cas_max_steps": -3}, "Received: cas_max_steps=-3"),
    ({"seed": -1}, "Received: seed=-1"),
    ({"near_dup_threshold": float("nan")}, "Expected `near_dup_threshold` to be None or a distance >= 0"),
    ({"near_dup_threshold": -0.1}, "Received: near_dup_threshold=-0.1"),
    ({"near_dup_threshold": "1"}, "Received: near_dup_threshold='1'"),
    ({"near_dup_quantile": 1.0}, "Expected `near_dup_quantile` to be in (0, 1). Received: near_dup_quantile=1.0"),
    ({"near_dup_quantile": 0}, "Received: near_dup_quantile=0"),
])
def test_bad_options_are_one_line_usage_errors(changes, needle):
    with pytest.raises(UsageError) as e:
        EvaluateOptions(**changes)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_options_accept_their_boundaries_and_say_whether_cas_runs():
    o = EvaluateOptions(max_images=1, cas_epochs=0, cas_max_steps=0, seed=0, near_dup_threshold=0,
                        near_dup_quantile=0.5, diversity_per_class=np.int64(3))
    assert not o.runs_cas and EvaluateOptions().runs_cas and EvaluateOptions(cas_epochs=2).runs_cas
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.seed = 3


def test_evaluate_takes_options_only_as_evaluate_options(tmp_path):
    with pytest.raises(UsageError, match="Expected `options` to be an EvaluateOptions"):
        evaluate(str(tmp_path), "mnist", None, None, {"cas_epochs": 0})


def test_the_report_directory_must_be_new_empty_or_an_earlier_report(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    with pytest.raises(UsageError, match="is the dataset itself"):
        check_report_dir(str(out), str(out))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        check_report_dir(str(tmp_path / "file"), str(out))
    (out / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="not an earlier report"):
        check_report_dir(str(out), None)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "report.json").write_text(json.dumps({"dataset": {}, "counts": {}, "figures": {}}))
    (tmp_path / "empty").mkdir()
    for ok in ("old", "empty", "new"):
        assert check_report_dir(str(tmp_path / ok), str(out)) == str(tmp_path / ok)


# ---------------------------------------------------------------------------------------------- reading

def test_read_synthetic_counts_every_record_and_keeps_a_seeded_subsample(tmp_path, real, write_output):
    imgs = np.concatenate([real.train.images[:5], real.test.images[:50], real.test.images[:10]])
    labels = np.concatenate([real.train.labels[:5], real.test.labels[:50], real.test.labels[:10]])
    latents = np.arange(65 * 3, dtype=np.float32).reshape(65, 3)
    out = write_output(tmp_path / "o", imgs, labels, latents=latents)
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    real_digests = set(digests(real.train.images))
    syn = read_synthetic(out, manifest, 20, 0, real_digests)
    assert syn.total_read == 65 and syn.fmt == "parquet" and len(syn.images) == 20
    assert syn.counts == {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    assert syn.exact_dups_of_real == 5 and syn.repeated == 10
    rows = (syn.latents[:, 0] // 3).astype(int)  # which record each kept row is
    assert list(rows) == sorted(set(rows)) and rows.max() > 40  # ordered, distinct, spread over the records
    np.testing.assert_array_equal(syn.images, imgs[rows])
    np.testing.assert_array_equal(syn.labels, labels[rows])
    again = read_synthetic(out, manifest, 20, 0, real_digests)
    other = read_synthetic(out, manifest, 20, 1, real_digests)
    np.testing.assert_array_equal(again.latents, syn.latents)
    assert not np.array_equal(other.latents, syn.latents)
    tf_only = dict(manifest, formats=["tfrecord"])
    from_tf = read_synthetic(out, tf_only, 20, 0, real_digests)
    assert from_tf.fmt == "tfrecord" and from_tf.counts == syn.counts and from_tf.repeated == 10
    np.testing.assert_array_equal(from_tf.images, syn.images)
    np.testing.assert_array_equal(from_tf.latents, syn.latents)


@pytest.mark.parametrize("fmt", ["parquet", "tfrecord"])
def test_a_shard_whose_images_do_not_fit_the_manifest_is_a_data_error_naming_it(tmp_path, real, write_output, fmt):
    out = write_output(tmp_path / "o", real.test.images[:5], real.test.labels[:5], formats=(fmt,))
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    with pytest.raises(DataError) as e:
        read_synthetic(out, dict(manifest, height=27), 10, 0, set())
    assert f"part-00000-of-00001.{fmt}" in str(e.value) and "vae-augment verify" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_real_source_without_test_split_gets_a_seeded_holdout(tmp_path, real, write_output):
    real_dir = write_output(tmp_path / "realsrc", real.train.images[:600], real.train.labels[:600])
    split = real_splits(f"parquet:{real_dir}", 0)
    assert len(split.test) == 100 and len(split.train) == 500 and "held out" in split.holdout_note
    held = {d for d in digests(split.test.images)}
    assert not held & set(digests(split.train.images))  # the holdout is not training data
    assert set(digests(real_splits(f"parquet:{real_dir}", 0).test.images)) == held
    assert set(digests(real_splits(f"parquet:{real_dir}", 1).test.images)) != held
    with_test = real_splits("mnist?limit=50", 0)
    assert with_test.holdout_note is None and len(with_test.test) == 50 and len(with_test.train) == 50


def test_a_real_source_with_too_few_labels_for_a_holdout_is_a_data_error(tmp_path, real, write_output):
    few = write_output(tmp_path / "few", real.train.images[:30], np.r_[real.train.labels[:10], np.full(20, -1)])
    with pytest.raises(DataError, match="has 10 labeled rows and no test split"):
        real_splits(f"parquet:{few}", 0)


# ---------------------------------------------------------------------------------------------- user errors

@pytest.mark.parametrize("source,classifier_dir,error,needle", [
    ("nope:x", None, UsageError, "unknown kind"),
    (None, "/no/such/clf", ModelError, "/no/such/clf"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, real, real_source, fast, write_output, source, classifier_dir,
                                           error, needle):
    out = write_output(tmp_path / "o", real.test.images[:20], real.test.labels[:20])
    with pytest.raises(error) as e:
        evaluate(out, source or real_source, classifier_dir, None, fast)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_images_of_another_size_than_the_real_data_are_a_data_error(tmp_path, real_source, fast, write_output):
    out = write_output(tmp_path / "small", np.zeros((4, 6, 6), np.uint8), [0, 1, 2, 3])
    with pytest.raises(DataError, match="28x28 images but .* holds 6x6"):
        evaluate(out, real_source, None, None, fast)


def test_a_directory_without_manifest_is_a_data_error(tmp_path, real_source):
    with pytest.raises(DataError, match="has no manifest.json"):
        evaluate(str(tmp_path), real_source)


# ---------------------------------------------------------------------------------------------- whole evaluations

def test_copies_of_real_training_images_are_exact_duplicates_at_distance_zero(tmp_path, real, real_source, fast,
                                                                              write_output):
    out = write_output(tmp_path / "copy", real.train.images[:300], real.train.labels[:300])
    r = evaluate(out, real_source, None, None, fast)
    nov = r["novelty"]
    assert nov["exact_duplicates"] == 300 and nov["exact_duplicate_rate"] == 1.0
    assert nov["exact_duplicates_in_queries"] == nov["synthetic_queries"] == 300
    assert nov["synthetic"]["q100"] == 0.0 and nov["near_duplicate_rate"] == 1.0
    assert nov["baseline"]["q50"] > 1.0 and nov["baseline_near_duplicate_rate"] < 0.05
    assert nov["repeated_synthetic_images"] == 0
    assert r["counts"]["match"] and r["counts"]["per_class"] == {
        str(c): int(n) for c, n in zip(*np.unique(real.train.labels[:300], return_counts=True))}
    assert r["options"] == dataclasses.asdict(fast) and r["cas"]["reason"] == "skipped (cas_epochs = 0)"
    assert r["dataset"]["sampled_images"] == 300 and r["real"]["source"] == real_source


def test_counts_that_disagree_with_the_manifest_are_reported(tmp_path, real, real_source, fast, write_output):
    out = write_output(tmp_path / "bad", real.test.images[:100], real.test.labels[:100], formats=("tfrecord",))
    path = os.path.join(out, "manifest.json")
    manifest = json.load(open(path))
    manifest["per_class"]["0"] += 5
    json.dump(manifest, open(path, "w"))
    r = evaluate(out, real_source, None, None, dataclasses.replace(fast, max_images=40))
    assert not r["counts"]["match"] and "class 0" in r["counts"]["problems"][0]
    assert r["counts"]["read_from"] == "tfrecord" and r["counts"]["total"] == 100
    assert any("disagree with the manifest" in n for n in r["notes"])
    assert any("subsample of 40 of the 100 records" in n for n in r["notes"])


@pytest.mark.e2e
def test_relabeling_a_fifth_of_real_images_lowers_fidelity_by_twenty_points(tmp_path, real, real_source, fast,
                                                                             write_output):
    x, y = real.test.images[:1000], real.test.labels[:1000]
    clean = evaluate(write_output(tmp_path / "clean", x, y), real_source, None, None, fast)["fidelity"]
    flip = np.random.default_rng(0).choice(1000, 200, replace=False)
    noisy_labels = y.copy()
    noisy_labels[flip] = (y[flip] + 1) % 10
    noisy = evaluate(write_output(tmp_path / "noisy", x, noisy_labels), real_source, None, None, fast)["fidelity"]
    assert clean["applicable"] and clean["fidelity"] > 0.97  # the bundled classifier on real test digits
    assert clean["fidelity"] - noisy["fidelity"] == pytest.approx(0.20, abs=0.015)
    assert noisy["mean_prob_label"] < clean["mean_prob_label"] - 0.15
    conf = np.array(noisy["confusion"]["rows_intended_cols_predicted"])
    assert conf.sum() == 1000 and np.trace(conf) == round(noisy["fidelity"] * 1000)
    assert sum(v["images"] for v in noisy["per_class"].values()) == 1000


@pytest.mark.e2e
def test_diversity_of_real_images_matches_real(tmp_path, real, real_source, fast, write_output):
    out = write_output(tmp_path / "div", real.train.images, real.train.labels)
    div = evaluate(out, real_source, None, None, dataclasses.replace(fast, diversity_per_class=5000))["diversity"]
    # with no subsampling both sides are the same images: ratio exactly 1
    assert all(v["ratio"] == pytest.approx(1.0, abs=1e-12) for v in div["per_class"].values())
    blurred = (real.train.images[:500] // 4 + 40).astype(np.uint8)  # low-contrast copies vary less
    low = evaluate(write_output(tmp_path / "low", blurred, real.train.labels[:500]), real_source, None, None,
                   fast)["diversity"]
    assert low["mean_ratio"] < 0.5


@pytest.mark.e2e
def test_unlabeled_records_get_no_fidelity_or_cas_but_a_full_report(tmp_path, real, real_source, fast,
                                                                    write_output):
    out = write_output(tmp_path / "unl", real.test.images[:200], np.full(200, -1), sampler="prior")
    r = evaluate(out, real_source, None, str(tmp_path / "rep"), dataclasses.replace(fast, cas_epochs=None))
    assert not r["fidelity"]["applicable"] and "unlabeled" in r["fidelity"]["reason"]
    assert not r["cas"]["applicable"] and "unlabeled" in r["cas"]["reason"]
    assert not r["diversity"]["applicable"] and r["diversity"]["pooled"]["ratio"] > 0
    assert sum(r["fidelity"]["predicted_class_share"].values()) == pytest.approx(1.0)
    assert r["counts"]["per_class"] == {"-1": 200}
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.count("Not applicable") >= 2 and "worst_fidelity" not in r["figures"]


@pytest.mark.e2e
def test_report_is_self_contained_html_with_embedded_pictures(tmp_path, real, real_source, fast, write_output):
    import re

    rng = np.random.default_rng(0)
    out = write_output(tmp_path / "o", real.test.images[:400], real.test.labels[:400],
                       latents=rng.standard_normal((400, 5)).astype(np.float32))
    report_dir = tmp_path / "report"
    r = evaluate(out, real_source, None, str(report_dir), fast)
    page = (report_dir / "report.html").read_text()
    srcs = re.findall(r"""\b(?:src|href)\s*=\s*['"]([^'"#][^'"]*)""", page)  # in-page links load nothing
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
    evaluate(out, real_source, None, str(report_dir), fast)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(UsageError, match="not an earlier report"):
        evaluate(out, real_source, None, str(tmp_path / "mine"), fast)
    assert (tmp_path / "mine" / "notes.txt").exists()


@pytest.mark.e2e
def test_evaluate_a_real_generate_job(tmp_path, real_source, fast):
    from pipeline.generate.graph import GenerateJob, run_job

    out = str(tmp_path / "gen")
    run_job(GenerateJob(out=out, per_class=60, batch_size=128), ["--direct_running_mode=in_memory"])
    r = evaluate(out, real_source, None, str(tmp_path / "rep"), dataclasses.replace(fast, cas_epochs=1,
                                                                                    cas_max_steps=5))
    assert r["counts"]["match"] and r["counts"]["total"] == 600
    assert r["fidelity"]["fidelity"] > 0.6 and r["cas"]["applicable"] and 0 < r["cas"]["cas"] <= 1
    assert r["novelty"]["exact_duplicates"] == 0 and r["novelty"]["synthetic"]["q00"] > 0
    assert os.path.getsize(tmp_path / "rep" / "report.html") > 10_000


@pytest.mark.e2e
def test_cli_train_classifier_then_evaluate(tmp_path, real, real_source, write_output):
    from click.testing import CliRunner

    from pipeline.cli import cli

    def invoke(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    res = invoke("train-classifier", "--data", "mnist?limit=500", "--out", tmp_path / "clf", "--set", "epochs=1",
                 "--quiet")
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output and (tmp_path / "clf" / "classifier.keras").exists()
    out = write_output(tmp_path / "o", real.test.images[:300], real.test.labels[:300])
    res = invoke("evaluate", out, "--real", real_source, "--classifier", tmp_path / "clf", "--report",
                 tmp_path / "rep", "--cas-epochs", 1, "--max-images", 1000, "--near-dup-threshold", 3.5)
    assert res.exit_code == 0, res.output
    assert "report.html" in res.output and (tmp_path / "rep" / "report.html").exists()
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["cas"]["applicable"] and rep["cas"]["epochs"] == 1 and rep["options"]["max_images"] == 1000
    assert rep["novelty"]["near_duplicate_threshold"] == 3.5 and rep["options"]["near_dup_threshold"] == 3.5
    assert rep["classifier"]["path"] == str(tmp_path / "clf") and rep["real"]["source"] == real_source
    for args, code, needle in [
        (["evaluate", out, "--real", real_source, "--report", out], 2, "is the dataset itself"),
        (["evaluate", tmp_path / "none", "--real", real_source, "--report", tmp_path / "r2"], 1, "manifest.json"),
        (["evaluate", out, "--real", real_source, "--report", tmp_path / "r2", "--classifier", tmp_path / "nope"], 1,
         "does not exist"),
        (["evaluate", out, "--real", real_source, "--report", tmp_path / "r2", "--near-dup-threshold", -1], 2,
         "near_dup_threshold"),
        (["train-classifier", "--data", "mnist", "--out", tmp_path / "x", "--set", "model.dropout=2"], 2,
         "model.dropout"),
    ]:
        res = invoke(*args)
        assert res.exit_code == code, res.output
        assert "Traceback" not in res.output and needle in res.output.strip().splitlines()[-1]
    assert not (tmp_path / "r2").exists() and not (tmp_path / "x").exists()
