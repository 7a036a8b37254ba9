"""The reference classifier's config: model and training sections, loaded with the shared YAML + --set loader."""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from vae_model.config import SectionedConfig, dataclass_from_dict, load_dataclass_config
from vae_model.errors import ConfigError


@dataclass
class ClassifierModelConfig:
    filters: list[int] = field(default_factory=lambda: [32, 64])  # one conv block per entry
    kernel_size: int = 3
    dense_units: int = 128
    dropout: float = 0.25
    num_classes: int = 10


@dataclass
class ClassifierTrainConfig:
    epochs: int = 4
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    validation_split: float = 0.0
    max_steps: int = 0  # cap on optimizer steps (0 = epochs x ceil(rows / batch_size))
    translate: float = 0.0  # random shift of each training image, up to this fraction of its side (0 = off)
    rotate: float = 0.0  # random rotation of each training image, up to this many degrees (0 = off)


@dataclass
class ClassifierConfig(SectionedConfig):
    name: str = "mnist_classifier"
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    train: ClassifierTrainConfig = field(default_factory=ClassifierTrainConfig)

    def replace_train(self, **changes) -> "ClassifierConfig":
        return ClassifierConfig(self.name, dataclasses.replace(self.model),
                                dataclasses.replace(self.train, **changes)).validate()

    def validate(self, image_size: int = 28) -> "ClassifierConfig":
        m, t = self.model, self.train
        if not m.filters or any(f <= 0 for f in m.filters):
            raise ConfigError(f"model.filters must be a non-empty list of positive widths, got {m.filters}")
        for key, value in (("model.kernel_size", m.kernel_size), ("model.dense_units", m.dense_units),
                           ("model.num_classes", m.num_classes), ("train.epochs", t.epochs),
                           ("train.batch_size", t.batch_size)):
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if m.num_classes < 2:
            raise ConfigError(f"model.num_classes must be >= 2, got {m.num_classes}")
        if not 0.0 <= m.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
        if not (t.learning_rate > 0 and math.isfinite(t.learning_rate)):
            raise ConfigError(f"train.learning_rate must be a positive number, got {t.learning_rate}")
        if not 0.0 <= t.validation_split < 1.0:
            raise ConfigError(f"train.validation_split must be in [0, 1), got {t.validation_split}")
        if t.seed < 0:
            raise ConfigError(f"train.seed must be >= 0, got {t.seed}")
        check_shift_ranges(t.translate, t.rotate, "train.")
        if t.max_steps < 0:
            raise ConfigError(f"train.max_steps must be >= 0 (0 = no cap), got {t.max_steps}")
        if _feature_side(image_size, m) < 1:
            raise ConfigError(f"{len(m.filters)} conv blocks with kernel {m.kernel_size} shrink {image_size}x"
                              f"{image_size} images to nothing; use fewer blocks or a smaller model.kernel_size")
        return self


def check_shift_ranges(translate: float, rotate: float, prefix: str = "") -> None:
    """The ranges of the training images' random shift (a fraction of the side) and rotation (degrees)."""
    if not (math.isfinite(translate) and 0.0 <= translate < 0.5):
        raise ConfigError(f"{prefix}translate must be in [0, 0.5) (a fraction of the image side), got {translate}")
    if not (math.isfinite(rotate) and 0.0 <= rotate <= 180.0):
        raise ConfigError(f"{prefix}rotate must be in [0, 180] degrees, got {rotate}")


def _feature_side(side: int, m: ClassifierModelConfig) -> int:
    for _ in m.filters:
        side = (side - m.kernel_size + 1) // 2
    return side


def classifier_config_from_dict(data: dict) -> ClassifierConfig:
    return dataclass_from_dict(ClassifierConfig, data)


def load_classifier_config(path_or_name: str | None = None,
                           overrides: typing.Sequence[str] = ()) -> ClassifierConfig:
    """A YAML file or bundled config name (None = built-in defaults, the same as the bundled `classifier`) plus
    `key=value` overrides."""
    return load_dataclass_config(ClassifierConfig, path_or_name, overrides)
