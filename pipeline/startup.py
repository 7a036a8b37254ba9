"""The CLI process's own start and end: TensorFlow's import without the cyclic GC, and no interpreter teardown.

Both are about seconds a user waits for before and after the work (README, Performance: start-up)."""
from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
import threading

_frozen = False


@contextlib.contextmanager
def imports_without_gc():
    """Pause the cyclic GC while TensorFlow and Keras import, then freeze what they made.

    They create millions of long-lived objects, and each collection meanwhile walks all of them; frozen objects
    are never walked again, so the job's own collections stay cheap too (measured: TensorFlow + Keras + Beam
    import in 3.6-3.8 s instead of 4.6-4.9). Once per process: later calls (CliRunner tests) change nothing."""
    global _frozen
    if _frozen or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()
        _frozen = True


def exit_now(code) -> None:
    """Exit with `code` as sys.exit would, after the atexit handlers and non-daemon threads, but without the
    interpreter's teardown of every module and TensorFlow's native state (1-2 s, measured), which only frees
    memory the OS takes back anyway. Only once TensorFlow is loaded; otherwise a plain sys.exit."""
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    threading._shutdown()  # noqa: SLF001 - what the interpreter does first at exit: join non-daemon threads
    atexit._run_exitfuncs()  # noqa: SLF001 - logging.shutdown, temp dirs, executors
    if code is None or isinstance(code, int):
        status = code or 0
    else:  # sys.exit("message"): the message on stderr, status 1
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(status)
