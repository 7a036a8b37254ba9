"""Typed configs loaded from YAML (a file or a bundled config by name), with `--set key=value` overrides checked
by type. One loader serves the VAE config here and the classifier config (vae_model.classifier.config)."""
from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable

import yaml

from vae_model.errors import ConfigError

MODEL_KINDS = ("dense", "conv")
LOSSES = ("bce", "mse")
OPTIMIZERS = ("adam", "rmsprop")
INITIALIZERS = ("glorot_uniform", "variance_scaling", "he_normal")
ACTIVATIONS = ("relu", "elu", "selu", "tanh", "gelu", "swish")
T = typing.TypeVar("T")


@dataclass
class ModelConfig:
    kind: str = "dense"
    conditional: bool = False
    num_classes: int = 10
    image_size: int = 28
    latent_dim: int = 20
    hidden: list[int] = field(default_factory=lambda: [500, 500])
    activation: str = "elu"
    initializer: str = "variance_scaling"
    # conv only: encoder conv stack, then one dense layer before the latent heads
    conv_filters: list[int] = field(default_factory=lambda: [32, 64])
    conv_strides: list[int] = field(default_factory=lambda: [2, 2])
    kernel_size: int = 3
    dense_units: int = 16
    # conv only: decoder transposed-conv stack; empty = mirror the encoder
    decoder_filters: list[int] = field(default_factory=list)
    decoder_strides: list[int] = field(default_factory=list)


@dataclass
class TrainConfig:
    data: str = "mnist"
    loss: str = "bce"
    beta: float = 1.0
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    batch_size: int = 128
    epochs: int = 60
    patience: int = 0
    validation_split: float = 0.0
    seed: int = 0


class SectionedConfig:
    """Base of the top-level configs: a name plus `model` and `train` sections, as in the YAML files."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Config(SectionedConfig):
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        m, t = self.model, self.train
        _one_of("model.kind", m.kind, MODEL_KINDS)
        _one_of("model.activation", m.activation, ACTIVATIONS)
        _one_of("model.initializer", m.initializer, INITIALIZERS)
        _one_of("train.loss", t.loss, LOSSES)
        _one_of("train.optimizer", t.optimizer, OPTIMIZERS)
        _positive("model.latent_dim", m.latent_dim)
        _positive("model.num_classes", m.num_classes)
        _positive("model.image_size", m.image_size)
        _positive("train.batch_size", t.batch_size)
        _positive("train.epochs", t.epochs)
        if t.patience < 0:
            raise ConfigError(f"train.patience must be >= 0 (0 disables early stopping), got {t.patience}")
        if not (t.learning_rate > 0 and math.isfinite(t.learning_rate)):
            raise ConfigError(f"train.learning_rate must be a positive number, got {t.learning_rate}")
        if not (t.beta > 0 and math.isfinite(t.beta)):
            raise ConfigError(f"train.beta (KL weight) must be a positive number, got {t.beta}")
        if not 0.0 <= t.validation_split < 1.0:
            raise ConfigError(f"train.validation_split must be in [0, 1), got {t.validation_split}")
        if m.kind == "dense":
            if not m.hidden or any(h <= 0 for h in m.hidden):
                raise ConfigError(f"model.hidden must be a non-empty list of positive widths, got {m.hidden}")
        else:
            if not m.conv_filters or len(m.conv_filters) != len(m.conv_strides):
                raise ConfigError("model.conv_filters and model.conv_strides must be non-empty and the same length, "
                                  f"got {m.conv_filters} and {m.conv_strides}")
            if len(m.decoder_filters) != len(m.decoder_strides):
                raise ConfigError("model.decoder_filters and model.decoder_strides must be the same length, "
                                  f"got {m.decoder_filters} and {m.decoder_strides}")
            down = math.prod(m.conv_strides)
            if m.image_size % down:
                raise ConfigError(f"model.conv_strides multiply to {down}, which does not divide "
                                  f"model.image_size={m.image_size}; change the strides")
            up = math.prod(m.decoder_strides) if m.decoder_filters else down
            if m.image_size % up:
                raise ConfigError(f"model.decoder_strides multiply to {up}, which does not divide "
                                  f"model.image_size={m.image_size}; change the strides")
        return self


def _one_of(key, value, allowed):
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _positive(key, value):
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_type(key: str, value, tp):
    """Coerce `value` to the dataclass field type `tp` or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads 1e-4, without a dot, as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise AssertionError(f"unsupported config type {tp}")


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; valid keys: "
                          f"{', '.join(prefix + n for n in sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(prefix + name, value, tp)
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------- loading

def dataclass_from_dict(cls: type[T], data: dict | None) -> T:
    """Build the config dataclass `cls` from nested dicts, every value type-checked, then `validate()`d."""
    return _build(cls, data or {}, "").validate()


def bundled_configs() -> dict[str, Traversable]:
    """The YAML configs shipped with the package (the repo's configs/ folder), by name."""
    root = resources.files("vae_model.configs")
    return {p.name[:-len(".yaml")]: p for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".yaml")}


def _read_config_text(path_or_name: str) -> str:
    """A config file's text: an existing file, else the bundled config of that name (`default`, `default.yaml`)."""
    if os.path.isfile(path_or_name):
        with open(path_or_name, encoding="utf-8") as f:
            return f.read()
    bundled = bundled_configs()
    name = path_or_name.removesuffix(".yaml")
    if name in bundled:
        return bundled[name].read_text(encoding="utf-8")
    what = "is a directory" if os.path.isdir(path_or_name) else "does not exist"
    raise ConfigError(f"config {path_or_name} {what}; pass a YAML file or a bundled config name: "
                      f"{', '.join(bundled)}")


def load_dataclass_config(cls: type[T], path_or_name: str | None, overrides: typing.Sequence[str] = ()) -> T:
    """Load the config dataclass `cls` from a YAML file or bundled config name (None = the dataclass defaults),
    apply `key=value` overrides, type-check every value and `validate()` the result."""
    data: dict = {}
    if path_or_name is not None:
        text = _read_config_text(path_or_name)
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"config {path_or_name} is not valid YAML ({first}); fix the syntax") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path_or_name} must hold a mapping at top level")
    for item in overrides:
        apply_override(cls, data, item)
    try:
        return dataclass_from_dict(cls, data)
    except ConfigError as e:
        where = f"config {path_or_name}" if path_or_name else "config"
        raise ConfigError(f"{where}: {e}") from None


def apply_override(cls: type, data: dict, item: str) -> None:
    """Apply one `a.b=value` override to the raw dict of config `cls`; the value is parsed as YAML (so 2, 1e-3,
    [64, 32], true work). A bare field name goes to the one section of `cls` that has it."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r} must look like key=value, e.g. --set train.epochs=5")
    parts = key.strip().split(".")
    if len(parts) == 1:
        hints = typing.get_type_hints(cls)
        owners = [f.name for f in dataclasses.fields(cls) if dataclasses.is_dataclass(hints[f.name])
                  and parts[0] in {g.name for g in dataclasses.fields(hints[f.name])}]
        if parts[0] not in hints and len(owners) == 1:
            parts = [owners[0], parts[0]]
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {p} is not a section")
    node[parts[-1]] = value


def from_dict(data: dict) -> Config:
    return dataclass_from_dict(Config, data)


def load_config(path_or_name: str | None, overrides: typing.Sequence[str] = ()) -> Config:
    """The VAE config: a YAML file or bundled name (None = built-in defaults) plus `key=value` overrides."""
    return load_dataclass_config(Config, path_or_name, overrides)
