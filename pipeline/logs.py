"""Keep library log noise (TF's CUDA probing, absl, Beam's runner chatter) away from users unless --verbose."""
import contextlib
import logging
import os
import re
import sys
import threading
import time
import warnings

from vae_model.quiet import import_tensorflow


def quiet_libraries(verbose: bool = False, tensorflow: bool = True) -> None:
    """Unless `verbose`, mute TensorFlow's C++ start-up lines (by importing it with fd 2 closed), absl, Beam and
    warnings. Call it before anything imports TensorFlow: the CLI's _Command.invoke does. `tensorflow=False`
    (a command that may not need it, e.g. verify) skips the import, its seconds and the muting; call it again
    with True before TensorFlow is imported after all."""
    if verbose:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if tensorflow:
        import_tensorflow()
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if _drop_apitools_warning not in logging.getLogger().filters:
        logging.getLogger().addFilter(_drop_apitools_warning)
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


def _drop_apitools_warning(record: logging.LogRecord) -> bool:
    """Beam logs this on the root logger whenever apache_beam.io.gcp loads without the [gcp] extra: not a problem
    for local runs, and every command printed it."""
    return not (isinstance(record.msg, str) and record.msg.startswith("apitools not found"))


# Native log lines (absl / TensorFlow C++: "I0000 00:00:1796239757.340964   12095 port.cc:153] ...") and absl's
# pre-init notice. TF_CPP_MIN_LOG_LEVEL does not silence them in TensorFlow 2.21, and Beam's multi_processing
# workers print them when they import TensorFlow. Fatal ("F...") lines are kept.
_NATIVE_NOISE = re.compile(rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] "
                           rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)")


def is_native_noise(line: bytes) -> bool:
    return bool(_NATIVE_NOISE.match(line))


@contextlib.contextmanager
def filtered_stderr(verbose: bool = False, drain_seconds: float = 5.0):
    """While the block runs, fd 2 (this process's and every child's, e.g. Beam's worker processes) goes through
    a pipe whose reader drops native library log lines and passes everything else on, line by line. No-op with
    `verbose`. The children must be gone when the block ends; the reader gives up after `drain_seconds`."""
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        pending = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            keep = b"".join(line + b"\n" for line in lines if not is_native_noise(line))
            if keep:
                os.write(saved, keep)
        if pending and not is_native_noise(pending):
            os.write(saved, pending)

    reader = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    reader.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes our write end of the pipe; the reader ends when the last child's closes too
        reader.join(drain_seconds)
        if not reader.is_alive():
            os.close(read_end)
            os.close(saved)


def process_started() -> float:
    """This process's start (epoch seconds): from /proc on Linux, else when this module was first imported."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


_IMPORTED = time.time()
