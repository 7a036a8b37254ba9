"""Muting TensorFlow's C++ start-up lines ('Could not find cuda drivers'), which bypass every log level."""
import contextlib
import os


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


def import_tensorflow():
    """TensorFlow, imported and its devices probed with fd 2 muted (the CUDA probe writes C++ lines too)."""
    with stderr_to_devnull():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    return tf
