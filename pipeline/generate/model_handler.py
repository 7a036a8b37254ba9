"""`VAEDecoderHandler`: a RunInference ModelHandler for a vae-augment model directory, so a Beam user decodes their
own latent codes in their own pipeline with RunInference's interface and metrics (num_inferences,
inference_batch_latency_micro_secs, load_model_latency_milli_secs, model refresh via update_model_path):

    import numpy as np, apache_beam as beam
    from apache_beam.ml.inference.base import RunInference
    from pipeline.generate.model_handler import VAEDecoderHandler

    with beam.Pipeline() as p:
        images = (p | beam.Create([np.zeros((64, 20), np.float32)])      # an element is a latent batch (n, d)
                    | RunInference(VAEDecoderHandler("bundled"))
                    | beam.Map(lambda r: r.inference))                   # uint8 (n, H, W)

An example is a latent batch (n, d) or one vector (d,), or for a conditional model a tuple (z, labels) or a dict
{"z": ..., "label": ...}. The decode is vae_model.inference.BatchDecoder at the job's batch size, the exact
function `generate` decodes with, so the same z gives the same pixels as a generate job.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipeline.generate.job import GenerateJob

DEFAULT_BATCH_SIZE = GenerateJob.batch_size  # the decode batch shape generate uses (it fixes the pixels)


def _split_example(example) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(z as (n, d) float32, labels (n,) or None, whether the example was a single vector)."""
    labels = None
    if isinstance(example, dict):
        z, labels = example.get("z"), example.get("label", example.get("labels"))
    elif isinstance(example, tuple) and len(example) == 2:
        z, labels = example
    else:
        z = example
    z = np.asarray(z, np.float32)
    single = z.ndim == 1
    z = z[None] if single else z
    if z.ndim != 2:
        raise ValueError(f"Expected a latent batch of shape (n, d) or a vector (d,). Received: z.shape={z.shape}")
    if labels is not None:
        labels = np.atleast_1d(np.asarray(labels, np.int64))
        if labels.shape != (len(z),):
            raise ValueError(f"Expected one label per latent row ({len(z)}). Received: labels.shape={labels.shape}")
    return z, labels, single


class VAEDecoderHandler(ModelHandler[Any, PredictionResult, Any]):
    """Decodes latent batches with the decoder of `model_dir` (a model directory, gs:// path or "bundled")."""

    def __init__(self, model_dir: str | None = "bundled", batch_size: int = DEFAULT_BATCH_SIZE, *,
                 min_batch_size: Optional[int] = None, max_batch_size: Optional[int] = None, **kwargs):
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"Expected `batch_size` to be a positive int. Received: batch_size={batch_size!r}")
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size, **kwargs)
        self._model_dir = model_dir
        self._batch_size = batch_size
        self._batching = {k: v for k, v in (("min_batch_size", min_batch_size), ("max_batch_size", max_batch_size))
                          if v is not None}

    def load_model(self):
        from pipeline.generate.worker_env import anonymous_gcs_on_worker, enable_gpu_memory_growth
        from vae_model.inference import BatchDecoder
        from vae_model.model_dir import ModelDir

        enable_gpu_memory_growth()
        anonymous_gcs_on_worker()  # before a gs:// model is read
        md = ModelDir.open(self._model_dir)  # None or "bundled": the shipped model
        decoder = BatchDecoder(md.decoder, self._batch_size, md.conditional, md.num_classes)
        decoder.model_id = md.model_id
        return decoder

    def run_inference(self, batch: Sequence[Any], model, inference_args: Optional[dict] = None
                      ) -> Iterable[PredictionResult]:
        parts = [_split_example(e) for e in batch]
        if not parts:
            return []
        z = np.concatenate([p[0] for p in parts])
        if z.shape[1] != model.latent_dim:
            raise ValueError(f"Expected latent vectors of size {model.latent_dim} (the model's latent size). "
                             f"Received: z.shape={z.shape}")
        have = [p[1] is not None for p in parts]
        if model.conditional and not all(have):
            raise ValueError("Expected labels with every example for a conditional model: pass (z, labels) or "
                             "{'z': z, 'label': labels}. Received: an example without labels")
        labels = np.concatenate([p[1] for p in parts]) if all(have) else None
        images, bad = model(z, labels)
        if bad:
            raise ValueError(f"the decoder returned {bad} non-finite pixels for this batch; nothing is emitted")
        out, start = [], 0
        for example, (zi, _, single) in zip(batch, parts):
            rows = images[start:start + len(zi)]
            start += len(zi)
            out.append(PredictionResult(example, rows[0] if single else rows, model.model_id))
        return out

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        return sum(_split_example(e)[0].nbytes for e in batch)

    def get_metrics_namespace(self) -> str:
        return "VAEDecoderHandler"

    def batch_elements_kwargs(self):
        return self._batching

    def update_model_path(self, model_path: Optional[str] = None):
        if model_path:
            self._model_dir = model_path
