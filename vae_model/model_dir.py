"""A trained model directory: encoder.keras, decoder.keras, model.json, latent_stats.npz, history.json,
plots/. Loaded through Beam's FileSystems so `gs://` directories work too."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources

from vae_model import artifacts
from vae_model.artifacts import exists, join, read_bytes
from vae_model.errors import ModelError
from vae_model.latent_stats import LatentStats

ENCODER, DECODER, META = "encoder.keras", "decoder.keras", "model.json"
STATS, HISTORY = "latent_stats.npz", "history.json"


def bundled_model_dir() -> str:
    """The pretrained MNIST model shipped inside the package."""
    return str(resources.files("vae_model") / "pretrained" / "mnist")


@dataclass
class ModelDir:
    path: str
    meta: dict

    @classmethod
    def open(cls, path: str | None) -> "ModelDir":
        """A model directory (local or gs://); None or "bundled" = the shipped MNIST model."""
        path = artifacts.resolve_dir(path, bundled_model_dir)
        meta = artifacts.read_meta(path, META, ("latent_dim", "conditional", "image_shape", "model_id",
                                                "num_classes", ("sha256", ENCODER), ("sha256", DECODER)),
                                   "model", "train", "--model")
        return cls(path, meta)

    @property
    def model_id(self) -> str:
        return self.meta["model_id"]

    @property
    def latent_dim(self) -> int:
        return int(self.meta["latent_dim"])

    @property
    def conditional(self) -> bool:
        return bool(self.meta["conditional"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def image_shape(self) -> tuple[int, int]:
        h, w = self.meta["image_shape"]
        return int(h), int(w)

    def file(self, name: str) -> str:
        return join(self.path, name)

    def load_keras(self, name: str, role: str):
        """Load encoder/decoder with plain keras after checking its sha256 against model.json; check it has the
        role's input signature."""
        path = self.file(name)
        model = artifacts.load_keras(path, self.meta["sha256"][name], META,
                                     "retrain or re-copy the model directory")
        first_in = model.inputs[0].shape
        if role == "decoder":
            ok = len(first_in) == 2 and first_in[-1] == self.latent_dim and len(model.outputs) == 1
        else:
            ok = len(first_in) == 4 and len(model.outputs) == 2
        if not ok:
            raise ModelError(f"{path} does not look like a {role} (inputs {[tuple(i.shape) for i in model.inputs]}, "
                             f"{len(model.outputs)} outputs); check the file names in the model directory")
        return model

    @cached_property
    def decoder(self):
        return self.load_keras(DECODER, "decoder")

    @cached_property
    def encoder(self):
        return self.load_keras(ENCODER, "encoder")

    def stats(self, path: str | None = None) -> LatentStats | None:
        """Class statistics from `path` or the model dir; None when the model dir has none."""
        return self.stats_and_digest(path)[0]

    def stats_and_digest(self, path: str | None = None) -> tuple[LatentStats | None, str | None]:
        """`stats(path)` and the sha256 of the file's bytes (one read: workers re-read and check the file)."""
        import hashlib

        src = path or self.file(STATS)
        if not exists(src):
            if path:
                raise ModelError(f"statistics file {path} does not exist; create it with `vae-augment stats`")
            return None, None
        data = read_bytes(src)
        stats = LatentStats.from_bytes(data, src)
        if stats.latent_dim != self.latent_dim:
            raise ModelError(f"{src} has latent size {stats.latent_dim} but model {self.path} has "
                             f"{self.latent_dim}; recompute it with `vae-augment stats --model {self.path}`")
        return stats, hashlib.sha256(data).hexdigest()
