"""Keep library log noise (TF's CUDA probing, absl, Beam's runner chatter) away from users unless --verbose."""
import contextlib
import logging
import os
import sys
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
    warnings. Call it before anything imports TensorFlow: the CLI's _Command.invoke does."""
    if verbose:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    with _stderr_to_devnull():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe happens here, muted
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Beam's runner logs a failed bundle as an ERROR with its whole traceback; the CLI's one Error: line already
    # carries the root cause (-v shows everything).
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)
    show_dataflow_progress()


# Beam's Dataflow loggers and the lines of theirs a user waits for (Beam 2.77's wording, checked by a test).
DATAFLOW_LOGGERS = ("apache_beam.runners.dataflow.internal.apiclient", "apache_beam.runners.dataflow.dataflow_runner")
_CREATED = "Created job with id: [%s]"
_CONSOLE = "To access the Dataflow monitoring console, please navigate to "
_STATE = "Job %s is in state %s"


def dataflow_progress_line(record: logging.LogRecord) -> str | None:
    """The one line a user sees for a Dataflow log record (job created, console URL, state change), or None."""
    if record.msg == _CREATED:
        return f"Dataflow job {record.args[0]} created"
    if isinstance(record.msg, str) and record.msg.startswith(_CONSOLE):
        return f"Dataflow console: {record.getMessage()[len(_CONSOLE):]}"
    if record.msg == _STATE:
        return f"Dataflow job {record.args[0]}: {str(record.args[1]).removeprefix('JOB_STATE_').lower()}"
    return None


class _ProgressFormatter(logging.Formatter):
    def format(self, record):
        return dataflow_progress_line(record)


class _StderrHandler(logging.StreamHandler):
    def emit(self, record):
        self.stream = sys.stderr  # whatever stderr is now (pytest and click swap it)
        super().emit(record)


_PROGRESS = _StderrHandler()
_PROGRESS.addFilter(lambda record: dataflow_progress_line(record) is not None)
_PROGRESS.setFormatter(_ProgressFormatter())


def show_dataflow_progress() -> None:
    """Print a Dataflow job's id, console URL and state changes while it runs, one line each on stderr; the rest
    of those loggers' output stays off the terminal like the rest of Beam's."""
    for name in DATAFLOW_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        if _PROGRESS not in logger.handlers:
            logger.addHandler(_PROGRESS)
