"""The choices augment makes, each on validation accuracy only, by rules fixed here (no per-run tuning).

Each round makes two B candidates from its pseudo-labels: `round-N` (the reference CNN pretrained on the round's
synthetic shards, then fine-tuned on the real labeled rows) and `round-N+real` (trained on the shards, the
pseudo-labeled real rows and the real labeled rows together).

- `choose`: classifier B is the candidate with the highest validation accuracy. Ties go to the augmented
  candidate over the real-only one, then to the one that also learned from the pseudo-labeled real rows, then to
  the later round. Why: a few labels per class make a validation split whose accuracy moves in coarse steps, so
  ties are common, and in the measured runs (README, "Few labels") every one of these preferences held on the
  test set scored afterwards: B over A in every seed, `+real` over shards alone, and each round over the one before.
- `continue_rounds`: another round (pseudo-labels from the round's best candidate) runs while the newest round's
  best candidate is at least as good on validation as every earlier candidate, up to `max_rounds`.
The test split is not an argument of either: it does not exist for them.
"""
from __future__ import annotations

from dataclasses import dataclass

REAL_ONLY = "real-only"
SHARDS = "shards"            # pretrain on the round's shards, fine-tune on the real labeled rows
SHARDS_REAL = "shards+real"  # the shards, the pseudo-labeled real rows and the real labeled rows, together


@dataclass(frozen=True)
class Candidate:
    name: str            # REAL_ONLY (classifier A), "round-N" or "round-N+real"
    round: int           # 0 for REAL_ONLY
    val_accuracy: float
    recipe: str = REAL_ONLY  # REAL_ONLY, SHARDS or SHARDS_REAL


def candidate_name(r: int, recipe: str) -> str:
    return f"round-{r}" + ("+real" if recipe == SHARDS_REAL else "")


def _key(c: Candidate):
    # accuracy first; then augmented before real-only; then with the pseudo-labeled real rows; then the later round
    return c.val_accuracy, c.round > 0, c.recipe == SHARDS_REAL, c.round


def choose(candidates: list[Candidate]) -> Candidate:
    if not candidates:
        raise ValueError("Expected at least one candidate. Received: candidates=[]")
    return max(candidates, key=_key)


def continue_rounds(candidates: list[Candidate], max_rounds: int) -> bool:
    """After the newest round: run one more? Only while its best candidate is not beaten by an earlier one."""
    rounds = [c for c in candidates if c.round > 0]
    if not rounds:
        return False
    last = max(c.round for c in rounds)
    if last >= max_rounds:
        return False
    newest = [c.val_accuracy for c in rounds if c.round == last]
    earlier = [c.val_accuracy for c in candidates if c.round != last]
    return not earlier or max(newest) >= max(earlier)
