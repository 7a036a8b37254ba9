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
def without_module(name: str):
    """`import name` fails meanwhile (unless it is already imported); afterwards it imports as usual."""
    if name in sys.modules:
        yield
        return
    sys.modules[name] = None
    try:
        yield
    finally:
        if sys.modules.get(name, 0) is None:
            del sys.modules[name]


def import_tensorflow():
    """TensorFlow, imported and its devices probed with fd 2 muted (the CUDA probe writes C++ lines too).

    TensorFlow imports Keras, and Keras imports scikit-learn (0.3-0.6 s, measured) only for its scikit-learn
    wrappers, which this project never uses; so scikit-learn is kept out of that import. Our own uses of it
    (samplers, pseudo-labels) import it when they run."""
    with stderr_to_devnull(), without_module("sklearn"):
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    return tf
