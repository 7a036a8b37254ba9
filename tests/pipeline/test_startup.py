"""pipeline.startup: TensorFlow's import without the cyclic GC (then frozen), and the CLI's exit without the
interpreter's teardown that still runs what a normal exit runs. Each case runs in a fresh interpreter, because
both change process-wide state."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_the_gc_is_paused_inside_then_enabled_with_what_was_made_frozen_once_per_process():
    r = _python(
        "import gc\n"
        "from pipeline.startup import imports_without_gc\n"
        "with imports_without_gc():\n"
        "    inside = gc.isenabled()\n"
        "    keep = [[i] for i in range(1000)]\n"
        "frozen = gc.get_freeze_count()\n"
        "with imports_without_gc():\n"
        "    again = gc.isenabled()\n"
        "print(inside, gc.isenabled(), frozen >= 1000, again, gc.get_freeze_count() == frozen)\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "True", "True", "True"]


def test_the_gc_comes_back_when_the_import_fails():
    r = _python(
        "import gc\n"
        "from pipeline.startup import imports_without_gc\n"
        "try:\n"
        "    with imports_without_gc():\n"
        "        import no_such_module_here\n"
        "except ImportError:\n"
        "    pass\n"
        "print(gc.isenabled())\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True"]


_EXIT = (
    "import atexit, sys, threading, time, types\n"
    "from pipeline.startup import exit_now\n"
    "{tf}"
    "out = sys.argv[1]\n"
    "atexit.register(lambda: open(out + '.atexit', 'w').write('ran'))\n"
    "def late():\n"
    "    time.sleep(0.3)\n"
    "    open(out + '.thread', 'w').write('ran')\n"
    "threading.Thread(target=late).start()\n"
    "sys.stdout.write('buffered, no newline')\n"
    "exit_now({code})\n")


def _exit_case(tmp_path, code, tensorflow=True):
    tf = "sys.modules['tensorflow'] = types.ModuleType('tensorflow')\n" if tensorflow else ""
    out = str(tmp_path / "marker")
    r = subprocess.run([sys.executable, "-c", _EXIT.format(tf=tf, code=code), out], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    return r, (tmp_path / "marker.atexit").exists(), (tmp_path / "marker.thread").exists()


def test_exit_now_keeps_the_exit_code_output_atexit_handlers_and_threads(tmp_path):
    for code, status in ((0, 0), (3, 3), (None, 0)):
        r, atexit_ran, thread_ran = _exit_case(tmp_path, code)
        assert (r.returncode, r.stdout, atexit_ran, thread_ran) == (status, "buffered, no newline", True, True)
        for p in tmp_path.iterdir():
            p.unlink()


def test_exit_now_with_a_message_prints_it_and_exits_1_like_sys_exit(tmp_path):
    r, _, _ = _exit_case(tmp_path, repr("Error: bad input"))
    assert (r.returncode, r.stderr.strip()) == (1, "Error: bad input")


def test_without_tensorflow_loaded_it_is_a_plain_sys_exit(tmp_path):
    r, atexit_ran, thread_ran = _exit_case(tmp_path, 4, tensorflow=False)
    assert (r.returncode, r.stdout, atexit_ran, thread_ran) == (4, "buffered, no newline", True, True)
