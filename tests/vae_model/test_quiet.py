"""vae_model.quiet.without_modules: what keeps Keras' optional libraries out of TensorFlow's import in the CLI, and
still lets our own code import them afterwards. In fresh interpreters: it changes sys.modules."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_CASE = (
    "import sys\n"
    "from vae_model.quiet import without_modules\n"
    "{before}"
    "with without_modules('fractions', 'colorsys'):\n"
    "    try:\n"
    "        import fractions\n"
    "        inside = 'imported'\n"
    "    except ImportError:\n"
    "        inside = 'refused'\n"
    "import fractions, colorsys\n"
    "print(inside, fractions.Fraction(1, 3) + fractions.Fraction(1, 6), colorsys.rgb_to_hsv(1, 0, 0)[2])\n")


def _run(before: str = "") -> list[str]:
    r = subprocess.run([sys.executable, "-c", _CASE.format(before=before)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_the_module_cannot_be_imported_inside_and_imports_normally_after():
    assert _run() == ["refused", "1/2", "1"]


def test_an_already_imported_module_stays_usable_inside():
    assert _run("import fractions\n") == ["imported", "1/2", "1"]


def test_tensorflow_imports_without_keras_optional_libraries_and_they_work_afterwards():
    code = (
        "import sys\n"
        "from vae_model.quiet import KERAS_OPTIONAL, import_tensorflow\n"
        "tf = import_tensorflow()\n"
        "print(sorted(m for m in KERAS_OPTIONAL if m in sys.modules))\n"
        "import numpy as np, pandas, matplotlib.pyplot, keras\n"
        "from sklearn.mixture import GaussianMixture\n"
        "from vae_model import plots\n"
        "gm = GaussianMixture(1, random_state=0).fit(np.arange(8.0).reshape(4, 2))\n"
        "m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])\n"
        "print(pandas.DataFrame({'a': [1]}).shape, gm.means_.shape, m(np.zeros((1, 2), 'float32')).shape)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-2:] == ["[]", "(1, 1) (1, 2) (1, 1)"]
