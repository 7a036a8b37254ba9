"""What a worker process sets up for itself: it cannot use the driver's view of the machine.

- Bundled assets: the driver's absolute path of the bundled model or classifier means nothing on a Dataflow
  worker, which installs the package elsewhere. DoFns keep "bundled" and resolve it in `setup`.
- GPU memory: Dataflow runs one SDK process per vCPU, all sharing the worker's GPU; by default TensorFlow maps
  nearly all GPU memory in the first process that touches it.
- GCS credentials: Beam's gs:// client looks credentials up with retries (about 20 s per process) even with
  --no_auth; a worker against a GCS emulator, or started with --no_auth, skips that.

Light at import (no TensorFlow, no Beam)."""
from __future__ import annotations

import logging
import os

from vae_model.artifacts import BUNDLED

_LOG = logging.getLogger(__name__)


def portable_dir(path: str | None, bundled_dir) -> str:
    """`path` as a worker can open it: "bundled" for None, "bundled" or the driver's copy of the bundled directory
    (`bundled_dir()`); any other path unchanged (a gs:// directory reads the same everywhere)."""
    if path in (None, BUNDLED):
        return BUNDLED
    if "://" not in path and os.path.realpath(path) == os.path.realpath(bundled_dir()):
        return BUNDLED
    return path


def portable_model_dir(path: str | None) -> str:
    from vae_model.model_dir import bundled_model_dir

    return portable_dir(path, bundled_model_dir)


def portable_classifier_dir(path: str | None) -> str:
    from vae_model.classifier import bundled_classifier_dir

    return portable_dir(path, bundled_classifier_dir)


def enable_gpu_memory_growth() -> int:
    """Let TensorFlow grow its GPU memory as needed instead of mapping it all up front. Call in DoFn.setup before
    this process loads a model; a no-op without a GPU. Returns the number of GPUs seen."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # this process already initialized the GPU without it; nothing to change now
            _LOG.warning("TensorFlow already set up %s in this process; GPU memory growth not enabled", gpu.name)
    return len(gpus)


def anonymous_gcs_on_worker() -> bool:
    """In DoFn.setup: this worker process's GCS clients connect anonymously, without the credential lookup, when
    the job says --no_auth (the options Beam's SDK harness gives FileSystems, when it does) or STORAGE_EMULATOR_HOST
    names an emulator. A no-op otherwise, and so on Dataflow, whose workers have real credentials. True if set."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from pipeline.dataset.publish import use_anonymous_gcs

    options = FileSystems._pipeline_options  # set by sdk_worker_main; a worker pool's harness leaves it None
    no_auth = bool(options is not None and options.view_as(GoogleCloudOptions).no_auth)
    return use_anonymous_gcs(no_auth)
