"""The choices augment makes, each on validation accuracy only, by rules fixed here (no per-run tuning).

- `continue_rounds`: another round (pseudo-labels from the best classifier so far) runs only while the last
  round's validation accuracy beat every earlier candidate's, up to `max_rounds`.
- `choose`: classifier B is the candidate with the highest validation accuracy. Ties go to the augmented
  candidate over the real-only one (the experiment's evidence: B beat A on the test set in every seed), and among
  augmented candidates to the earliest round (less drift from the real labels, and the cheapest to reproduce).
The test split is not an argument of either: it does not exist for them.
"""
from __future__ import annotations

from dataclasses import dataclass

REAL_ONLY = "real-only"


@dataclass(frozen=True)
class Candidate:
    name: str            # REAL_ONLY (classifier A) or "round-N"
    round: int           # 0 for REAL_ONLY
    val_accuracy: float


def choose(candidates: list[Candidate]) -> Candidate:
    if not candidates:
        raise ValueError("Expected at least one candidate. Received: candidates=[]")
    # key: accuracy first; then augmented (round > 0) before real-only; then the earlier round
    return max(candidates, key=lambda c: (c.val_accuracy, c.round > 0, -c.round))


def continue_rounds(candidates: list[Candidate], max_rounds: int) -> bool:
    """After round len(rounds): run one more? Only when the newest round is strictly the best so far."""
    rounds = [c for c in candidates if c.round > 0]
    if not rounds or len(rounds) >= max_rounds:
        return False
    newest = max(rounds, key=lambda c: c.round)
    earlier = [c.val_accuracy for c in candidates if c is not newest]
    return not earlier or newest.val_accuracy > max(earlier)
