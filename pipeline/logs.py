"""Keep library log noise (TF's CUDA probing, absl, Beam's runner chatter) away from users unless --verbose."""
import contextlib
import logging
import os
import warnings


@contextlib.contextmanager
def _stderr_to_devnull():
    """TF's C++ start-up lines ('Could not find cuda drivers') bypass every log level; mute fd 2 meanwhile."""
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def quiet_libraries(verbose: bool = False) -> None:
    """Unless `verbose`, mute TensorFlow's C++ start-up lines (by importing it with fd 2 closed), absl, Beam and
    warnings. Call it before anything imports TensorFlow: the CLI's group callback does."""
    if verbose:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    with _stderr_to_devnull():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe happens here, muted
    for name in ("tensorflow", "absl", "apache_beam", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
