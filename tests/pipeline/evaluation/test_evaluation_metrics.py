"""The report sections measured without training, on small hand-made arrays whose answer is known (the `oracle`
classifier of conftest.py reads the true class from the image, so fidelity numbers are exact)."""
import numpy as np
import pytest

from pipeline.evaluation.metrics import counts_section, diversity_section, fidelity_section, novelty_section
from vae_model.data import Dataset
from vae_model.errors import DataError


def _log(msg):
    pass


# ---------------------------------------------------------------------------------------------- counts

def test_counts_match_the_manifest_or_name_each_difference(make_images, make_sample):
    syn = make_sample(make_images(np.array([0, 0, 1])), [0, 0, 1])
    ok = counts_section({"per_class": {"0": 2, "1": 1}, "total": 3}, syn)
    assert ok["match"] and ok["problems"] == [] and ok["per_class"] == {"0": 2, "1": 1} and ok["read_from"] == "parquet"
    bad = counts_section({"per_class": {"0": 2, "2": 4}, "total": 6}, syn)
    assert not bad["match"] and bad["manifest_total"] == 6 and bad["total"] == 3
    assert bad["problems"] == ["class 1: 1 records in the shards, manifest says 0",
                               "class 2: 0 records in the shards, manifest says 4",
                               "3 records in the shards, manifest says 6"]


# ---------------------------------------------------------------------------------------------- fidelity

def test_relabeling_a_fifth_of_the_records_lowers_fidelity_by_twenty_points(oracle, make_images, make_sample):
    y = np.repeat(np.arange(10), 50)
    x = make_images(y)
    test = Dataset(x[:100], y[:100])
    clean, _ = fidelity_section(oracle, make_sample(x, y), test)
    noisy_labels = y.copy()
    flip = np.random.default_rng(0).choice(500, 100, replace=False)
    noisy_labels[flip] = (y[flip] + 1) % 10
    noisy, extras = fidelity_section(oracle, make_sample(x, noisy_labels), test)
    assert clean["applicable"] and clean["fidelity"] == 1.0 and clean["classifier_accuracy_on_real_test"] == 1.0
    assert noisy["fidelity"] == pytest.approx(0.8, abs=1e-12)
    assert noisy["mean_prob_label"] == pytest.approx(0.8 * 0.91 + 0.2 * 0.01)
    assert noisy["mean_confidence"] == pytest.approx(0.91)
    conf = np.array(noisy["confusion"]["rows_intended_cols_predicted"])
    assert conf.sum() == 500 and np.trace(conf) == 400 and (conf.sum(0) == 50).all()  # columns: what was drawn
    assert sum(v["images"] for v in noisy["per_class"].values()) == 500
    assert sum(v["images"] * v["fidelity"] for v in noisy["per_class"].values()) == 400
    np.testing.assert_allclose(extras["p_label"][flip], 0.01)


def test_unlabeled_records_get_the_predicted_class_shares_instead_of_fidelity(oracle, make_images, make_sample):
    y = np.array([0, 0, 3, 7])
    fid, extras = fidelity_section(oracle, make_sample(make_images(y), np.full(4, -1)), Dataset(make_images(y), y))
    assert not fid["applicable"] and "unlabeled" in fid["reason"] and "p_label" not in extras
    assert fid["predicted_class_share"]["0"] == 0.5 and sum(fid["predicted_class_share"].values()) == 1.0


def test_labels_the_classifier_does_not_know_are_a_data_error(oracle, make_images, make_sample):
    x = make_images(np.array([0, 0]))
    with pytest.raises(DataError, match="label 12 but the classifier knows 10 classes"):
        fidelity_section(oracle, make_sample(x, [0, 12]), Dataset(x, np.array([0, 0])))


# ---------------------------------------------------------------------------------------------- novelty

@pytest.fixture(scope="module")
def splits(make_images):
    train_y = np.repeat(np.arange(3), 100)
    test_y = np.repeat(np.arange(3), 40)
    return Dataset(make_images(train_y, 1), train_y), Dataset(make_images(test_y, 2), test_y)


def test_copies_of_training_images_are_at_distance_zero_and_near_duplicates(splits, make_sample):
    train, test = splits
    pick = np.r_[0:30, 100:130]  # classes 0 and 1
    syn = make_sample(train.images[pick], train.labels[pick], total=90, dups=60, repeated=4)
    nov, extras = novelty_section(syn, train, test, 1000, 1000, None, 0.01, 0, _log)
    assert nov["synthetic_queries"] == 60 and nov["baseline_queries"] == 120
    assert nov["exact_duplicates"] == 60 and nov["exact_duplicate_rate"] == pytest.approx(60 / 90)
    assert nov["exact_duplicates_in_queries"] == 60 and nov["repeated_synthetic_images"] == 4
    assert nov["synthetic"]["q100"] == 0.0 and nov["near_duplicate_rate"] == 1.0
    assert nov["near_duplicate_threshold"] == pytest.approx(np.quantile(extras["base_d"], 0.01))
    assert nov["baseline_near_duplicate_rate"] == 2 / 120  # the 1% quantile of 120 sits between the 2nd and 3rd
    assert "1% quantile" in nov["near_duplicate_threshold_rule"]
    assert set(nov["per_class"]) == {"0", "1"}  # only the classes of the synthetic queries
    syn_imgs, real_imgs, d, _ = extras["closest"]
    np.testing.assert_array_equal(syn_imgs, real_imgs)
    assert (d == 0).all()


def test_distances_are_in_units_of_pixels_scaled_to_one_and_a_given_threshold_is_kept(splits, make_sample):
    train, test = splits
    near = train.images[:20].astype(np.int16)
    near[:, 3, 3] = np.where(near[:, 3, 3] < 255, near[:, 3, 3] + 1, 254)  # one pixel one step off
    syn = make_sample(near.astype(np.uint8), train.labels[:20])
    nov, extras = novelty_section(syn, train, test, 8, 1000, 0.5 / 255, 0.01, 0, _log)
    assert nov["near_duplicate_threshold_rule"] == "given" and nov["near_duplicate_threshold"] == 0.5 / 255
    assert nov["synthetic_queries"] == 8 and nov["near_duplicate_rate"] == 0.0
    assert nov["synthetic"]["q00"] == nov["synthetic"]["q100"] == pytest.approx(1 / 255, rel=1e-12)
    assert len(extras["closest"][2]) == 8


def test_the_novelty_subsamples_follow_the_seed(splits, make_sample):
    train, test = splits
    syn = make_sample(test.images, test.labels)
    a, _ = novelty_section(syn, train, test, 30, 30, None, 0.01, 0, _log)
    b, _ = novelty_section(syn, train, test, 30, 30, None, 0.01, 0, _log)
    c, _ = novelty_section(syn, train, test, 30, 30, None, 0.01, 1, _log)
    assert a == b and a["synthetic"] != c["synthetic"]


# ---------------------------------------------------------------------------------------------- diversity

def test_diversity_of_the_real_images_themselves_is_exactly_real(splits, make_sample):
    train, _ = splits
    div = diversity_section(make_sample(train.images, train.labels), train, 1000, 0)
    assert div["applicable"] and list(div["per_class"]) == ["0", "1", "2"]
    assert all(v["ratio"] == pytest.approx(1.0, abs=1e-12) and v["images"] == 100 for v in div["per_class"].values())
    assert div["mean_ratio"] == pytest.approx(1.0) and div["pooled"]["images"] == 300
    low = diversity_section(make_sample(train.images // 4 + 40, train.labels), train, 30, 0)
    assert low["mean_ratio"] < 0.5 and all(v["images"] == 30 for v in low["per_class"].values())  # less contrast


def test_unlabeled_records_get_only_the_pooled_diversity(splits, make_sample):
    train, _ = splits
    div = diversity_section(make_sample(train.images, np.full(len(train), -1)), train, 20, 0)
    assert not div["applicable"] and "per_class" not in div
    assert div["pooled"]["images"] == 40 and div["pooled"]["ratio"] > 0
