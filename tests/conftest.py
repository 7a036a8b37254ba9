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
