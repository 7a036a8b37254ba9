"""vae_model.quiet.without_module: what keeps scikit-learn out of TensorFlow's (Keras') import in the CLI, and
still lets our own code import it afterwards. In fresh interpreters: it changes sys.modules."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CASE = (
    "import sys\n"
    "from vae_model.quiet import without_module\n"
    "{before}"
    "with without_module('fractions'):\n"
    "    try:\n"
    "        import fractions\n"
    "        inside = 'imported'\n"
    "    except ImportError:\n"
    "        inside = 'refused'\n"
    "import fractions\n"
    "print(inside, fractions.Fraction(1, 3) + fractions.Fraction(1, 6))\n")


def _run(before: str = "") -> list[str]:
    r = subprocess.run([sys.executable, "-c", _CASE.format(before=before)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_the_module_cannot_be_imported_inside_and_imports_normally_after():
    assert _run() == ["refused", "1/2"]


def test_an_already_imported_module_stays_usable_inside():
    assert _run("import fractions\n") == ["imported", "1/2"]
