"""A trained model directory: encoder.keras, decoder.keras, model.json, latent_stats.npz, history.json,
plots/. Loaded through Beam's FileSystems so `gs://` directories work too."""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

from vae_model.artifacts import exists, join, read_bytes
from vae_model.errors import ModelError
from vae_model.latent_stats import LatentStats

ENCODER, DECODER, META, STATS, HISTORY = "encoder.keras", "decoder.keras", "model.json", "latent_stats.npz", "history.json"


def bundled_model_dir() -> str:
    """The pretrained MNIST model shipped inside the package."""
    return str(resources.files("vae_model") / "pretrained" / "mnist")


@dataclass
class ModelDir:
    path: str
    meta: dict

    @classmethod
    def open(cls, path: str | None) -> "ModelDir":
        path = path or bundled_model_dir()
        meta_path = join(path, META)
        if not exists(meta_path):
            what = "does not exist" if not exists(path) else f"has no {META}"
            raise ModelError(f"model directory {path} {what}; pass a directory written by `vae-augment train` "
                             "or omit --model to use the bundled one")
        try:
            meta = json.loads(read_bytes(meta_path))
            for key in ("latent_dim", "conditional", "image_shape", "model_id", "num_classes"):
                meta[key]
        except (ValueError, KeyError) as e:
            raise ModelError(f"{meta_path} is not a valid model.json ({type(e).__name__}: {e}); "
                             "retrain with `vae-augment train`") from None
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
        """Load encoder/decoder with plain keras; check it has the role's input signature."""
        import keras

        path = self.file(name)
        if not exists(path):
            raise ModelError(f"{path} is missing; the model directory is incomplete, retrain or re-copy it")
        local = path
        tmp = None
        if "://" in path:
            tmp = tempfile.NamedTemporaryFile(suffix=".keras", delete=False)
            tmp.write(read_bytes(path))
            tmp.close()
            local = tmp.name
        try:
            model = keras.models.load_model(local, compile=False)
        except Exception as e:  # keras raises many types for a damaged zip/h5
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ModelError(f"{path} could not be loaded as a Keras model ({first}); "
                             "the file is truncated or corrupt: retrain or re-copy the model directory") from None
        finally:
            if tmp:
                os.unlink(tmp.name)
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
        src = path or self.file(STATS)
        if not exists(src):
            if path:
                raise ModelError(f"statistics file {path} does not exist; create it with `vae-augment stats`")
            return None
        stats = LatentStats.from_bytes(read_bytes(src), src)
        if stats.latent_dim != self.latent_dim:
            raise ModelError(f"{src} has latent size {stats.latent_dim} but model {self.path} has "
                             f"{self.latent_dim}; recompute it with `vae-augment stats --model {self.path}`")
        return stats
