"""Pseudo-labels (vae_model/pseudo_label.py), the `pseudo-label` command, training a classifier with synthetic
shards (`train-classifier --synthetic`) and the stats pool size."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from vae_model.errors import DataError, UsageError
from vae_model.data import Dataset
from vae_model.pseudo_label import (assign, check_params, choose_labeler, labeler_distributions, neighbour_index,
                                      pseudo_label, smooth, spread)

LOCAL = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _clusters():
    """Two tight latent clusters of 5 rows; the classifier gets row 2 (cluster 0) wrong, but its 4 neighbours
    (one of them labeled) say 0."""
    z = np.array([[0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1], [0.05, 0.05],
                  [10, 10], [10.1, 10], [10, 10.1], [10.1, 10.1], [10.05, 10.05]], float)
    probs = np.tile([0.8, 0.2], (10, 1))
    probs[5:] = [0.3, 0.7]
    probs[2] = [0.4, 0.6]  # wrong
    labels = np.full(10, -1)
    labels[0] = 0
    return z, probs, labels


def test_smoothing_over_latent_neighbours_corrects_a_lone_mistake():
    z, probs, labels = _clusters()
    s = smooth(probs, z, labels, neighbours=4)
    # row 2: itself (0.4, 0.6), labeled row 0 one-hot (1, 0), three rows at (0.8, 0.2): mean of the five
    np.testing.assert_allclose(s[2], [(0.4 + 1 + 3 * 0.8) / 5, (0.6 + 0 + 3 * 0.2) / 5])
    assert s[2].argmax() == 0 and probs[2].argmax() == 1
    np.testing.assert_array_equal(s[0], [1, 0])  # a real label is not smoothed away
    np.testing.assert_allclose(s[5:], np.tile([0.3, 0.7], (5, 1)))  # the other cluster is untouched
    np.testing.assert_allclose(smooth(probs, z, labels, neighbours=0)[1:], probs[1:])  # 0 = the classifier alone


def test_assign_keeps_real_labels_and_thresholds_the_rest():
    z, probs, labels = _clusters()
    r = assign(smooth(probs, z, labels, 4), labels, min_confidence=0.75)
    assert r.labels[0] == 0 and not r.pseudo[0] and r.confidence[0] == 1.0
    # cluster 0 rows average >= 0.76 for class 0; cluster 1 rows average 0.7 < 0.75 and stay unlabeled
    np.testing.assert_array_equal(r.labels, [0, 0, 0, 0, 0, -1, -1, -1, -1, -1])
    np.testing.assert_array_equal(r.pseudo, [False] + [True] * 4 + [False] * 5)
    assert r.summary(2) == {"rows": 10, "real_labels": 1, "pseudo_labels": 4, "left_unlabeled": 5,
                            "pseudo_per_class": {"0": 4, "1": 0}, "labeler": "neighbours",
                            "labeler_validation": None}
    looser = assign(smooth(probs, z, labels, 4), labels, min_confidence=0.5)
    np.testing.assert_array_equal(looser.labels, [0] * 5 + [1] * 5)


def _chain():
    """40 latent rows in a line, 1 apart: 0..19 are class 0, 20..39 class 1, only the two ends labeled. The
    classifier calls every row 1 (it learned class 0 badly), so averaging it over 4 neighbours stays wrong."""
    z = np.arange(40, dtype=float)[:, None]
    labels = np.full(40, -1)
    labels[0], labels[39] = 0, 1
    return z, np.tile([0.3, 0.7], (40, 1)), labels, np.repeat([0, 1], 20)


def test_label_spreading_carries_the_few_labels_along_the_latent_structure():
    z, probs, labels, truth = _chain()
    d = labeler_distributions(probs, z, labels, 4, ("neighbours", "classifier", "spread"))
    np.testing.assert_array_equal(d["spread"].argmax(1), truth)
    assert (d["neighbours"].argmax(1)[1:20] == 1).all() and (d["classifier"].argmax(1)[1:20] == 1).all()
    np.testing.assert_array_equal(d["spread"][[0, 39]], [[1, 0], [0, 1]])  # real labels stay one-hot
    np.testing.assert_allclose(d["spread"].sum(1), 1.0)
    s = spread(neighbour_index(z, 4), labels, 2)
    assert s[:10, 0].min() > 0.99 and s[30:, 1].min() > 0.99  # sharpened: usable with the same threshold


def test_label_spreading_balances_the_classes_and_leaves_unreached_rows_uniform():
    # class 0 has 3 labeled rows (0, 1, 2), class 1 one (20): unbalanced, the border would move past the midpoint
    # (11) towards class 1 (measured: rows 11 and 12 went to class 0 without the balancing)
    z = np.concatenate([np.arange(21, dtype=float), [100.0, 100.5, 101.0, 101.5]])[:, None]
    labels = np.full(25, -1)
    labels[[0, 1, 2, 20]] = [0, 0, 0, 1]
    s = spread(neighbour_index(z, 2), labels, 3)
    np.testing.assert_array_equal(s[:21].argmax(1), [0] * 11 + [1] * 10)
    np.testing.assert_allclose(s[21:], 1 / 3)  # an island no label reaches: uniform, so no pseudo-label
    assert assign(s, labels, 0.5).labels[21:].tolist() == [-1] * 4


def test_the_labeler_is_chosen_on_validation_accuracy_then_log_loss_then_the_order_given():
    z, probs, labels, truth = _chain()
    d = labeler_distributions(probs, z, labels, 4, ("neighbours", "spread"))
    val = np.array([5, 10, 30])
    name, scores = choose_labeler(d, val, truth[val])
    assert name == "spread" and scores["neighbours"]["accuracy"] == 1 / 3 and scores["spread"]["accuracy"] == 1.0
    # row 30 (class 1): both right, so the surer one wins (neighbours gives it 0.7)
    name, scores = choose_labeler(d, np.array([30]), truth[[30]])
    assert name == "spread" and scores["neighbours"]["log_loss"] == pytest.approx(-np.log(0.7))
    assert scores["spread"]["log_loss"] < scores["neighbours"]["log_loss"]
    assert choose_labeler({"b": d["spread"], "a": d["spread"].copy()}, val, truth[val])[0] == "b"  # a full tie
    with pytest.raises(UsageError, match="Expected labelers"):
        labeler_distributions(probs, z, labels, 4, ("neighbours", "knn"))


def test_validation_images_join_the_graph_unlabeled_so_their_labels_only_choose():
    """The chain's middle rows are the validation set: their labels decide the labeler but never spread (the
    pseudo-labels are the same whatever labels the validation set carries, for the labeler chosen)."""
    z, probs, labels, truth = _chain()
    val_rows = np.arange(3, 37, 3)
    rows = np.setdiff1d(np.arange(40), val_rows)
    images = np.repeat(np.arange(40, dtype=np.uint8)[:, None, None], 4, axis=1).repeat(4, axis=2)
    train = Dataset(images[rows], labels[rows])

    def encode(x):
        return x[:, 0, 0, None].astype(float), None

    def classify(x):
        return np.tile([0.3, 0.7], (len(x), 1))

    right = pseudo_label(train, encode, classify, 4, 0.5, ("neighbours", "spread"),
                         Dataset(images[val_rows], truth[val_rows]))
    wrong = pseudo_label(train, encode, classify, 4, 0.5, ("spread", "neighbours"),
                         Dataset(images[val_rows], 1 - truth[val_rows]))
    assert right.labeler == "spread" and right.validation["spread"]["accuracy"] == 1.0
    assert wrong.labeler == "neighbours"
    np.testing.assert_array_equal(right.labels, truth[rows])
    alone = pseudo_label(train, encode, classify, 4, 0.5, ("spread",), Dataset(images[val_rows], 1 - truth[val_rows]))
    assert alone.validation is None  # one labeler: nothing to choose, the validation set is not read
    assert len(right.labels) == len(rows)  # the validation rows are not part of the output


@pytest.mark.parametrize("neighbours, conf", [(-1, 0.9), (2.5, 0.9), (10, 0.0), (10, 1.5), (10, float("nan"))])
def test_bad_parameters_are_usage_errors(neighbours, conf):
    with pytest.raises(UsageError):
        check_params(neighbours, conf)


def test_a_fully_labeled_source_has_nothing_to_pseudo_label(mnist_small):
    with pytest.raises(DataError, match="no unlabeled rows"):
        pseudo_label(mnist_small.train, lambda x: (np.zeros((len(x), 2)), None), lambda x: None)


@pytest.mark.e2e
def test_pseudo_labels_of_real_mnist_beat_the_classifier_alone(tmp_path):
    """Bundled VAE + a weak classifier (1 epoch on 10 labels per class): averaging over latent neighbours
    labels the unlabeled rows more accurately than the classifier's own argmax."""
    from vae_model.classifier import load_classifier, load_classifier_config, train_classifier
    from vae_model.data import load_source
    from vae_model.inference import BatchEncoder
    from vae_model.model_dir import ModelDir

    src = "mnist?limit=4000&labeled_per_class=10"
    clf_dir = str(tmp_path / "clf")
    train_classifier(src, clf_dir, load_classifier_config(None, ["epochs=30", "batch_size=32"]))
    clf = load_classifier(clf_dir)
    train = load_source(src).train
    truth = load_source("mnist?limit=4000").train.labels
    unl = train.labels < 0
    encode = BatchEncoder(ModelDir.open(None).encoder, 2048)
    alone = pseudo_label(train, encode, clf.probabilities, neighbours=0, min_confidence=1e-6)
    smoothed = pseudo_label(train, encode, clf.probabilities, neighbours=10, min_confidence=1e-6)
    acc = [float((r.labels[unl] == truth[unl]).mean()) for r in (alone, smoothed)]
    assert acc[1] > acc[0] + 0.01, acc
    np.testing.assert_array_equal(smoothed.labels[~unl], train.labels[~unl])


@pytest.mark.e2e
def test_cli_writes_a_source_that_stats_and_training_read(tmp_path):
    out = tmp_path / "pl.npz"
    res = CliRunner().invoke(cli, ["pseudo-label", "--data", "mnist?limit=1500&labeled_per_class=20",
                                   "--classifier", "bundled", "--out", str(out)])
    assert res.exit_code == 0, res.output
    from vae_model.data import load_source
    from vae_model.pseudo_label import read_meta

    src = load_source(f"npz:{out}")
    real = load_source("mnist?limit=1500&labeled_per_class=20").train.labels
    meta = read_meta(str(out))
    assert meta["real_labels"] == 200 and meta["classifier_id"] and meta["model_id"] and meta["versions"]
    assert (src.train.labels >= 0).sum() == 200 + meta["pseudo_labels"]
    kept = real >= 0
    np.testing.assert_array_equal(src.train.labels[kept], real[kept])
    assert len(src.test) == 1500  # the test split passes through for scoring
    assert f"{meta['pseudo_labels']:,} of 1,300 unlabeled rows pseudo-labeled" in res.output
    st = tmp_path / "stats.npz"
    res = CliRunner().invoke(cli, ["stats", "--data", f"npz:{out}", "--out", str(st), "--pool-per-class", "50",
                                   *LOCAL])
    assert res.exit_code == 0, res.output
    from vae_model.latent_stats import LatentStats
    s = LatentStats.from_bytes(st.read_bytes())
    assert int(s.counts.sum()) == 200 + meta["pseudo_labels"]
    assert np.bincount(s.pool_labels).max() == 50 and "posterior pool: 500 encodings" in res.output


@pytest.mark.parametrize("args, needle", [
    (["--neighbours", "-1"], "--neighbours"),
    (["--min-confidence", "1.5"], "--min-confidence"),
    (["--data", "mnist?limit=100"], "no unlabeled rows"),
    (["--classifier", "nowhere"], "nowhere"),
    (["--out", "x.txt"], ".npz"),
    (["--labeler", "spread", "--labeler", "classifier"], "--validation"),
    (["--labeler", "knn"], "--labeler"),
    (["--labeler", "spread", "--labeler", "classifier", "--validation", "nowhere.npz"], "nowhere.npz"),
])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    base = {"--data": "mnist?limit=300&labeled_per_class=5", "--classifier": "bundled", "--out": "pl.npz"}
    argv = ["pseudo-label"]
    for k, v in base.items():
        if k not in args:
            argv += [k, v]
    res = CliRunner().invoke(cli, argv + args)
    lines = res.output.strip().splitlines()
    if "knn" in args:  # click's own choice check: its usage lines, then the one Error line
        lines = [line for line in lines if line.startswith("Error:")]
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], res.output
    assert res.exit_code == (2 if needle in ("--neighbours", "--min-confidence", ".npz", "--validation", "--labeler")
                             else 1)
    assert list(tmp_path.iterdir()) == []


def test_a_conditional_vae_cannot_pseudo_label(tmp_path, bundled):
    import shutil

    model = tmp_path / "cond"
    shutil.copytree(bundled.path, model)
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**meta, "conditional": True}))
    res = CliRunner().invoke(cli, ["pseudo-label", "--data", "mnist?limit=300&labeled_per_class=5", "--classifier",
                                   "bundled", "--model", str(model), "--out", str(tmp_path / "pl.npz")])
    assert res.exit_code == 2 and "conditional VAE" in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cond"]


@pytest.mark.e2e
def test_train_classifier_with_synthetic_shards_records_them(tmp_path):
    from pipeline.generate.graph import GenerateJob, run_job
    from vae_model.classifier import load_classifier

    gen = tmp_path / "gen"
    m = run_job(GenerateJob(out=str(gen), per_class=30, batch_size=64, formats=["tfrecord"]), LOCAL)
    out = tmp_path / "clf"
    res = CliRunner().invoke(cli, ["train-classifier", "--data", "mnist?limit=200", "--out", str(out), "--set",
                                   "epochs=2", "--synthetic", str(gen), "--real-share", "0.25", "--quiet"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "classifier.json").read_text())
    assert meta["synthetic"]["dataset_digest"] == m["dataset_digest"] and meta["synthetic"]["real_share"] == 0.25
    # an epoch is one pass over the 200 real rows: 200 / 0.25 = 800 rows a epoch, 128 per batch
    assert meta["rows"] == 800 and meta["steps"] == 2 * 7
    assert "25% real" in res.output
    assert load_classifier(str(out)).num_classes == 10


def test_stats_pool_size_must_be_positive(tmp_path):
    res = CliRunner().invoke(cli, ["stats", "--data", "mnist?limit=100", "--out", str(tmp_path / "s.npz"),
                                   "--pool-per-class", "0", *LOCAL])
    assert res.exit_code == 2 and "--pool-per-class" in res.output, res.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, needle", [
    (["--real-share", "0.5"], "--synthetic"),
    (["--synthetic", "nowhere", "--real-share", "1.0"], "--real-share"),  # checked before the shards are read
    (["--synthetic", "nowhere", "--real-share", "0"], "--real-share"),
    (["--synthetic", "nowhere"], "manifest"),
])
def test_train_classifier_synthetic_bad_input(tmp_path, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(cli, ["train-classifier", "--data", "mnist?limit=100", "--out", "clf", *args])
    assert res.exit_code == (1 if needle == "manifest" else 2), res.output
    assert needle in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "clf").exists()


def test_synthetic_records_of_another_image_size_are_a_data_error(tmp_path):
    import tensorflow as tf

    from vae_model.classifier import train_classifier

    with pytest.raises(DataError, match="are 14x14 but .* has 28x28"):
        train_classifier("mnist?limit=100", str(tmp_path / "c"), synthetic=tf.data.Dataset.range(1),
                         synthetic_info={"dir": "gen", "image_shape": [14, 14]})
    assert list(tmp_path.iterdir()) == []
