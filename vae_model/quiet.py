"""Muting TensorFlow's C++ start-up lines ('Could not find cuda drivers'), which bypass every log level."""
import contextlib
import os
import sys


@contextlib.contextmanager
def stderr_to_devnull():
    """Point fd 2 at /dev/null meanwhile (the C++ lines are written there directly, not through sys.stderr)."""
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


@contextlib.contextmanager
def without_modules(*names: str):
    """`import name` fails meanwhile for each of `names` not imported yet; afterwards they import as usual."""
    blocked = [n for n in names if n not in sys.modules]
    for name in blocked:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


# Keras imports these only for features this project never uses from Keras: scikit-learn for its scikit-learn
# wrappers, matplotlib for its image-gallery plot. Kept out of TensorFlow's import they save 0.5-1.0 s of the
# CLI's start-up (measured with the GC paused: 2.8-3.7 -> 2.3-2.6 s); our own uses (samplers, pseudo-labels,
# plots, the report) import them when they run. pandas stays: Beam imports it anyway.
KERAS_OPTIONAL = ("sklearn", "matplotlib")


def import_tensorflow():
    """TensorFlow, imported and its devices probed with fd 2 muted (the CUDA probe writes C++ lines too), without
    the optional libraries Keras would load for nothing (KERAS_OPTIONAL)."""
    with stderr_to_devnull(), without_modules(*KERAS_OPTIONAL):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    return tf
