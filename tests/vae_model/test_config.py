"""Configs (vae_model/config.py): one YAML + --set loader for the VAE and classifier configs, bundled configs
found by name, typed values checked across fields."""
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from vae_model.classifier import (ClassifierConfig, ClassifierModelConfig, ClassifierTrainConfig,
                                  load_classifier_config)
from vae_model.config import Config, bundled_configs, from_dict, load_config, load_dataclass_config
from vae_model.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VAE_CONFIGS = sorted(n for n in bundled_configs() if n != "classifier")


def test_the_bundled_configs_are_the_repo_configs_folder():
    shipped = {f"{n}.yaml": p.read_text() for n, p in bundled_configs().items()}
    folder = os.path.join(REPO, "configs")
    assert shipped == {n: open(os.path.join(folder, n)).read() for n in os.listdir(folder) if n.endswith(".yaml")}
    assert {"dense_seed000", "dense_seed001", "dense_seed003", "conv_seed002", "conv_seed004", "conditional",
            "default", "classifier"} <= set(bundled_configs())


def test_a_config_is_found_by_name_from_any_directory(tmp_path, monkeypatch):
    by_path = load_config(os.path.join(REPO, "configs", "conv_seed002.yaml"))
    monkeypatch.chdir(tmp_path)
    assert load_config("conv_seed002") == by_path == load_config("conv_seed002.yaml")
    assert by_path.model.kind == "conv"
    assert load_classifier_config("classifier") == ClassifierConfig()
    # an existing file wins over a bundled name
    (tmp_path / "default").write_text("name: mine\n")
    assert load_config("default").name == "mine"


@pytest.mark.parametrize("name", ["nosuch", "configs/nosuch.yaml", "configs"])
def test_an_unknown_config_is_one_line_listing_the_bundled_names(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    for load in (load_config, load_classifier_config):
        with pytest.raises(ConfigError) as e:
            load(name)
        message = str(e.value)
        assert "\n" not in message and name in message
        assert "does not exist" in message or "is a directory" in message
        assert ", ".join(bundled_configs()) in message


def test_the_cli_reports_an_unknown_config_name_in_one_line(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import cli

    for command in ("train", "train-classifier"):
        res = CliRunner().invoke(cli, [command, "--config", "nosuch", "--data", "mnist?limit=10", "--out",
                                       str(tmp_path / "out")])
        assert res.exit_code == 2, res.output
        assert "nosuch" in res.output and "default" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_one_loader_serves_both_configs_with_typed_set_overrides():
    vae = load_dataclass_config(Config, "dense_seed000", ["latent_dim=4", "train.epochs=3"])
    assert vae == load_config("dense_seed000", ["model.latent_dim=4", "epochs=3"])
    assert (vae.model.latent_dim, vae.train.epochs) == (4, 3)
    clf = load_dataclass_config(ClassifierConfig, None, ["dense_units=64", "model.filters=[8, 16]", "epochs=2"])
    assert clf == load_classifier_config(None, ["model.dense_units=64", "filters=[8, 16]", "train.epochs=2"])
    assert clf.model == ClassifierModelConfig(filters=[8, 16], dense_units=64)
    assert clf.train == ClassifierTrainConfig(epochs=2)
    assert load_dataclass_config(Config, None, ["name=x"]).name == "x"  # a top-level field, not a section's


@pytest.mark.parametrize("cls, key", [(Config, "model.latent_dimm"), (ClassifierConfig, "model.widht"),
                                      (Config, "nosuchkey"), (ClassifierConfig, "train.epoch")])
def test_a_bad_key_is_one_line_naming_it_and_the_valid_keys(cls, key):
    with pytest.raises(ConfigError) as e:
        load_dataclass_config(cls, None, [f"{key}=3"])
    message = str(e.value)
    assert "\n" not in message and f"unknown config key {key}" in message and "valid keys:" in message


@pytest.mark.parametrize("name", VAE_CONFIGS)
def test_every_bundled_vae_config_is_valid(name):
    cfg = load_config(name)
    assert cfg.to_dict() == from_dict(cfg.to_dict()).to_dict()


def test_default_yaml_equals_builtin_defaults():
    assert load_config("default").to_dict() == Config().validate().to_dict()
    assert load_classifier_config("classifier") == ClassifierConfig()


@pytest.mark.parametrize("data,needle", [
    ({"model": {"latent_dimm": 2}}, "unknown config key model.latent_dimm"),
    ({"train": {"epochs": "ten"}}, "train.epochs must be an integer"),
    ({"train": {"epochs": -1}}, "train.epochs must be > 0"),
    ({"train": {"loss": "hinge"}}, "train.loss must be one of bce, mse"),
    ({"model": {"kind": "conv", "conv_strides": [2, 2, 2], "conv_filters": [8, 8, 8]}}, "does not divide"),
    ({"train": {"validation_split": 1.5}}, "validation_split"),
])
def test_bad_configs_are_rejected_with_the_key(data, needle):
    with pytest.raises(ConfigError, match=needle):
        from_dict(data)


def test_set_overrides_are_typed(tmp_path):
    cfg = load_config("dense_seed000", ["train.epochs=3", "model.hidden=[64, 32]", "latent_dim=4"])
    assert (cfg.train.epochs, cfg.model.hidden, cfg.model.latent_dim) == (3, [64, 32], 4)
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("dense_seed000", ["train.epochs=1.5"])
    # YAML 1.1 reads 1e-4 (no dot) as a string; a float field still takes it, in --set and in files
    assert load_config(None, ["train.learning_rate=1e-4"]).train.learning_rate == 1e-4
    sci = tmp_path / "sci.yaml"
    sci.write_text("train:\n  learning_rate: 5E-4\n")
    assert load_config(str(sci)).train.learning_rate == 5e-4
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, ["train.learning_rate=fast"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["epochs"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(str(listed))


@pytest.mark.parametrize("override,needle", [
    ("train.epochs=0", "train.epochs must be > 0"),
    ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
    ("model.filters=[8, 8, 8, 8]", "shrink 28x28 images to nothing"),
    ("train.learning_rate=-1", "train.learning_rate"),
    ("train.max_steps=-2", "train.max_steps"),
    ("train.translate=0.5", "train.translate must be in [0, 0.5)"),
    ("train.rotate=-3", "train.rotate must be in [0, 180] degrees"),
    ("model.widht=3", "unknown config key model.widht"),
    ("epochs=abc", "must be an integer"),
    ("noequals", "must look like key=value"),
])
def test_bad_classifier_config_values_raise_config_error(override, needle):
    with pytest.raises(ConfigError) as e:
        load_classifier_config(None, [override])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_classifier_yaml_is_the_builtin_default_and_overrides_are_typed(tmp_path):
    cfg = load_classifier_config("classifier", ["epochs=2", "model.filters=[8, 16]"])
    assert cfg.train.epochs == 2 and cfg.model.filters == [8, 16] and cfg.train.batch_size == 128
    with pytest.raises(ConfigError, match="does not exist"):
        load_classifier_config(str(tmp_path / "nope.yaml"))


@pytest.mark.e2e
def test_a_wheel_ships_the_configs_as_vae_model_configs(tmp_path):
    """A non-editable install gets the configs too: they are package data of vae_model.configs."""
    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    src.mkdir()
    shutil.copy(os.path.join(REPO, "setup.py"), src)
    for folder in ("vae_model", "pipeline", "configs"):
        shutil.copytree(os.path.join(REPO, folder), src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = tmp_path.glob("vae_augment-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"vae_model/configs/{n}.yaml" for n in bundled_configs()} <= names
    assert "vae_model/configs/__init__.py" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[vae_augment.sources]" in entry_points and "parquet = pipeline.dataset.source" in entry_points
