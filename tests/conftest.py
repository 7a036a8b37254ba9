import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mnist_small():
    """Real MNIST, first 3000 train / 1000 test rows."""
    from vae_model.data import load_source
    return load_source("mnist?limit=3000")


@pytest.fixture(scope="session")
def bundled():
    from vae_model.model_dir import ModelDir
    return ModelDir.open(None)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-d latent dense VAE trained for one epoch on 2,000 real digits (seconds)."""
    from vae_model.config import load_config
    from vae_model.training import train
    out = tmp_path_factory.mktemp("models") / "tiny"
    cfg = load_config("configs/dense_seed001.yaml", ["train.epochs=1", "train.data=mnist?limit=2000"])
    train(cfg, str(out), argv=["vae-augment", "train"], verbose=0)
    return str(out)


@pytest.fixture(scope="session")
def tiny_conditional_dir(tmp_path_factory):
    from vae_model.config import load_config
    from vae_model.training import train
    out = tmp_path_factory.mktemp("models") / "cond"
    cfg = load_config("configs/conditional.yaml", ["train.epochs=1", "train.data=mnist?limit=2000",
                                                   "model.hidden=[64]", "model.latent_dim=4"])
    train(cfg, str(out), verbose=0)
    return str(out)


@pytest.fixture
def model_copy(tmp_path, bundled):
    """A writable copy of the bundled model directory."""
    import shutil
    dst = tmp_path / "model"
    shutil.copytree(bundled.path, dst)
    return dst


@pytest.fixture
def reseal():
    """reseal(model_dir, name): record the current sha256 of the file `name` in model_dir/model.json, as training
    would have, so a test can damage a file in ways the checksum alone does not catch."""
    import hashlib
    import json

    def reseal(model_dir, name):
        meta_path = os.path.join(model_dir, "model.json")
        with open(meta_path) as f:
            meta = json.load(f)
        with open(os.path.join(model_dir, name), "rb") as f:
            meta["sha256"][name] = hashlib.sha256(f.read()).hexdigest()
        with open(meta_path, "w") as f:
            json.dump(meta, f)
    return reseal
