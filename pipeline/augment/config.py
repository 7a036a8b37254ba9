"""The augment knobs: a dataclass loaded with the shared YAML + `--set` loader (vae_model.config).

Every value is fixed before the run; what the run chooses (rounds, B's recipe) it chooses on the validation split
by the rules in `decide`. The defaults are the low-data experiment's validation choices (README, "Low-data
augmentation experiment"): pseudo-label threshold 0.5 over 10 latent neighbours (the labeler itself chosen per
round on validation, see vae_model/pseudo_label.py), a posterior pool of every
pseudo-labeled encoding, 3,000 records per class, pretrain 8 epochs on the shards, fine-tune at 3e-4. Every classifier trains on randomly shifted (up to 10% of
the side) and rotated (up to 10 degrees) images, the usual MNIST ranges, set before measuring and not tuned. The
`+real` candidate's 3 epochs over shards + pseudo-labeled real rows: its first measurement (10 labels per class,
seed 0, round 1: 92.5% test against 91.3% for the real rows alone and 91.1% for the shards alone).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vae_model.errors import ConfigError

DEFAULT_VAE_CONFIG = "conv_unlabeled"  # configs/conv_unlabeled.yaml: the bundled-unlabeled VAE's recipe


@dataclass
class AugmentConfig:
    vae_config: str = DEFAULT_VAE_CONFIG   # VAE config (bundled name or YAML path) for step 1 without --vae
    # half the bundled VAE's 20: the run's largest step at half the time, B no worse (README, 2026-12-07 run)
    vae_epochs: int = 10                   # 0 = the VAE config's epochs
    val_fraction: float = 0.2              # of each class's labeled rows, at least one per class
    labeler_steps: int = 1500              # optimizer steps (batch 64) of classifier A
    neighbours: int = 10                   # pseudo-label: latent neighbours averaged
    pseudo_confidence: float = 0.5         # pseudo-label: averaged probability needed
    # pseudo-label: the labelers each round chooses from on validation, ties to the first (LABELERS in
    # vae_model/pseudo_label.py)
    labelers: list[str] = field(default_factory=lambda: ["neighbours", "classifier", "spread"])
    pool_per_class: int = 10_000           # stats: posterior pool per class
    per_class: int = 3000                  # generate: synthetic records per class
    pretrain_epochs: int = 8               # B: epochs over the shards (batch 128)
    finetune_steps: int = 512              # B: optimizer steps (batch 64) over the real labeled rows
    finetune_learning_rate: float = 3e-4
    selftrain_epochs: int = 3              # B+real: epochs over shards + pseudo-labeled real rows (batch 128)
    max_rounds: int = 3                    # rounds are added only while validation accuracy improves
    # every classifier the run trains (A and the B candidates): random shift (fraction of the side) and rotation
    # (degrees) of its training images; the reference CNN's train.translate / train.rotate
    translate: float = 0.1
    rotate: float = 10.0
    cas_epochs: int = -1                   # evaluate: -1 = the classifier config's, 0 = skip CAS
    evaluate_max_images: int = 20_000
    novelty_images: int = 5_000
    baseline_images: int = 5_000

    def validate(self) -> "AugmentConfig":
        for name in ("labeler_steps", "pool_per_class", "per_class", "pretrain_epochs", "finetune_steps",
                     "selftrain_epochs",
                     "max_rounds", "evaluate_max_images", "novelty_images", "baseline_images"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.vae_epochs < 0 or self.neighbours < 0 or self.cas_epochs < -1:
            raise ConfigError("vae_epochs and neighbours must be >= 0 and cas_epochs >= -1, got "
                              f"{self.vae_epochs}, {self.neighbours}, {self.cas_epochs}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.pseudo_confidence <= 1.0:
            raise ConfigError(f"pseudo_confidence must be in (0, 1], got {self.pseudo_confidence}")
        from vae_model.classifier.config import check_shift_ranges
        from vae_model.pseudo_label import LABELERS

        if not self.labelers or any(n not in LABELERS for n in self.labelers) or \
                len(set(self.labelers)) != len(self.labelers):
            raise ConfigError(f"labelers must be distinct names from {list(LABELERS)}, got {self.labelers}")
        check_shift_ranges(self.translate, self.rotate)  # the same ranges as every classifier's train.* keys
        if not self.finetune_learning_rate > 0:
            raise ConfigError(f"finetune_learning_rate must be > 0, got {self.finetune_learning_rate}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_augment_config(path_or_name: str | None, overrides=(), per_class: int | None = None) -> AugmentConfig:
    from vae_model.config import load_dataclass_config

    cfg = load_dataclass_config(AugmentConfig, path_or_name, list(overrides))
    if per_class is not None:
        cfg = dataclasses.replace(cfg, per_class=per_class).validate()
    return cfg
