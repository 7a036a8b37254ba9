"""Quiet and true terminal output: native TensorFlow log lines from child processes (Beam's multi_processing
workers) and Beam's apitools warning stay off the terminal without -v; the final line counts start-up."""
import os
import re
import subprocess
import sys

import pytest

NOISE = ("I0000 00:00:1796239757.340964   12095 port.cc:153] oneDNN custom operations are on.\n"
         "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
         "W0000 00:00:1796239757.342142   12095 cudart_stub.cc:31] Could not find cuda drivers\n")
NATIVE = re.compile(r"^([IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]|WARNING: All log messages before absl)", re.M)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})


@pytest.mark.parametrize("verbose", [False, True])
def test_native_lines_of_child_processes_are_filtered_unless_verbose(verbose):
    child = f"import os; os.write(2, {NOISE.encode()!r} + b'a real problem\\n' + {NOISE.encode()!r})"
    r = run_python(f"""
import subprocess, sys
from pipeline.logs import filtered_stderr
with filtered_stderr({verbose}):
    subprocess.run([sys.executable, "-c", {child!r}], check=True)
    print("parent line", file=sys.stderr)
print("after", file=sys.stderr)
""")
    assert r.returncode == 0, r.stderr
    assert "a real problem\n" in r.stderr and "parent line\nafter\n" in r.stderr
    assert bool(NATIVE.search(r.stderr)) is verbose


@pytest.mark.parametrize("verbose", [False, True])
def test_apitools_warning_is_dropped_unless_verbose(verbose):
    # as an install without the [gcp] extra: apitools cannot be imported
    r = run_python(f"""
import sys
sys.modules["apitools"] = None
from pipeline.logs import quiet_libraries
quiet_libraries({verbose}, tensorflow=False)  # the log filter is the same either way; TF's import costs ~10 s
import apache_beam.io.gcp.internal.clients.bigquery
""")
    assert r.returncode == 0, r.stderr
    assert ("apitools not found" in r.stderr) is verbose


@pytest.mark.e2e
def test_generate_with_two_workers_prints_no_native_lines_and_a_true_final_line(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "vae-augment")
    r = subprocess.run([exe, "generate", "--num", "400", "--batch-size", "100", "--workers", "2",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert not NATIVE.search(r.stderr), r.stderr
    assert "apitools" not in r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("wrote 400 records"))
    assert "counting start-up" in line
