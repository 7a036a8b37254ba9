"""Keep library log noise (TF, absl, Beam's Prism fallback) away from users unless --verbose."""
import logging
import os
import warnings


def quiet_libraries(verbose: bool = False) -> None:
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("tensorflow", "absl", "apache_beam", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
