"""Training a VAE (vae_model/training.py) into a complete, self-describing model directory."""
import json
import os

import numpy as np
import pytest

from vae_model.config import bundled_configs, load_config


@pytest.mark.e2e
def test_short_training_lowers_loss_and_writes_a_complete_model_dir(tiny_model_dir):
    from vae_model.artifacts import sha256_file
    from vae_model.model_dir import ModelDir

    meta = json.load(open(os.path.join(tiny_model_dir, "model.json")))
    hist = json.load(open(os.path.join(tiny_model_dir, "history.json")))
    assert meta["latent_dim"] == 2 and meta["conditional"] is False
    files = {os.path.relpath(os.path.join(d, n), tiny_model_dir) for d, _, ns in os.walk(tiny_model_dir) for n in ns}
    assert set(meta["sha256"]) == files - {"model.json"}  # every file but model.json itself is checksummed
    for name, digest in meta["sha256"].items():
        assert sha256_file(os.path.join(tiny_model_dir, name)) == digest
    assert meta["model_id"] == meta["sha256"]["decoder.keras"][:16]
    assert set(meta["versions"]) >= {"tensorflow", "keras", "apache-beam", "numpy"}
    assert meta["command"].startswith("vae-augment train")
    assert meta["metrics"]["test"]["images"] == 2000
    for png in ("loss_curves.png", "latent_scatter.png", "manifold.png", "class_samples.png"):
        assert os.path.getsize(os.path.join(tiny_model_dir, "plots", png)) > 1000
    assert len(hist["loss"]) == 1
    assert not [n for n in os.listdir(os.path.dirname(tiny_model_dir)) if n.startswith(".tmp-")]
    assert ModelDir.open(tiny_model_dir).decoder.inputs[0].shape[-1] == 2  # its own checksums verify


@pytest.mark.e2e
def test_training_lowers_the_loss(tmp_path):
    from vae_model.training import train
    cfg = load_config("dense_seed003", ["train.epochs=3", "train.batch_size=64", "train.data=mnist?limit=1500"])
    meta = train(cfg, str(tmp_path / "m"), verbose=0)
    loss = json.load(open(tmp_path / "m" / "history.json"))["loss"]
    assert loss[-1] < loss[0] * 0.9
    assert meta["metrics"]["test"]["unit"] == "sum of squared error"


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(n for n in bundled_configs() if n not in ("classifier", "default")))
def test_each_config_trains_one_epoch_through_the_cli(name, tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli
    res = CliRunner().invoke(cli, ["train", "--config", name, "--set", "epochs=1", "--data", "mnist?limit=600",
                                   "--out", str(tmp_path / "m"), "--quiet"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["epochs_run"] == 1 and np.isfinite(meta["metrics"]["test"]["neg_elbo"])
    assert meta["config"] == load_config(name, ["epochs=1", "train.data=mnist?limit=600"]).to_dict()


@pytest.mark.e2e
def test_fewer_labeled_examples_per_class_than_latent_dimensions_still_train(tmp_path):
    # 100 images, ~10 per class, latent 20: every class covariance is singular
    from vae_model.training import train

    cfg = load_config("default", ["train.epochs=1", "train.data=mnist?limit=100"])
    meta = train(cfg, str(tmp_path / "m"), verbose=0)
    assert os.path.isfile(tmp_path / "m" / "plots" / "class_samples.png")
    assert meta["latent_dim"] == 20
