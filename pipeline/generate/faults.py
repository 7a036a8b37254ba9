"""Test-only fault injection: VAE_AUGMENT_FAULTS="stage:N[:mode],..." raises in `stage` for N: a work unit id in
`sample` and `decode`, a shard number in `write` (raised after that shard's first batch is written, so a
half-written temp file is left, as after a crash). mode `once` (default) fails only the first attempt in a
process, which a Beam retry then recovers; `always` fails every attempt, so the job fails for good. With
VAE_AUGMENT_FAULTS_LOG=FILE each injected failure is appended to FILE, so tests observe that the fault fired (and
was retried) rather than assume it."""
import os

_ENV = "VAE_AUGMENT_FAULTS"
_fired: set = set()


class InjectedFault(RuntimeError):
    pass


def _plan():
    spec = os.environ.get(_ENV, "")
    for item in filter(None, (s.strip() for s in spec.split(","))):
        parts = item.split(":")
        yield parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "once"


def maybe_fail(stage: str, unit_id: int) -> None:
    if _ENV not in os.environ:
        return
    for st, uid, mode in _plan():
        if st == stage and uid == unit_id:
            key = (stage, unit_id)
            if mode == "always" or key not in _fired:
                _fired.add(key)
                log = os.environ.get(_ENV + "_LOG")
                if log:
                    with open(log, "a") as f:
                        f.write(f"{stage}:{unit_id}:{mode}\n")
                where = "shard" if stage == "write" else "work unit"
                raise InjectedFault(f"injected {mode} fault in {stage} of {where} {unit_id}")
