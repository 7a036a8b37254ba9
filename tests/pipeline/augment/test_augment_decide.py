"""The validation-only decision rules of augment (pipeline/augment/decide.py)."""
import inspect

import pytest

from pipeline.augment import decide
from pipeline.augment.decide import REAL_ONLY, Candidate


def _a(acc):
    return Candidate(REAL_ONLY, 0, acc)


def _r(n, acc):
    return Candidate(f"round-{n}", n, acc)


def test_the_highest_validation_accuracy_wins():
    assert decide.choose([_a(0.90), _r(1, 0.95), _r(2, 0.93)]).name == "round-1"
    assert decide.choose([_a(0.97), _r(1, 0.95)]).name == REAL_ONLY


def test_ties_prefer_augmented_over_real_only_then_the_earliest_round():
    assert decide.choose([_a(0.95), _r(1, 0.95)]).name == "round-1"
    assert decide.choose([_a(0.90), _r(1, 0.95), _r(2, 0.95), _r(3, 0.95)]).name == "round-1"


def test_the_choice_does_not_depend_on_candidate_order():
    cands = [_a(0.95), _r(1, 0.96), _r(2, 0.96)]
    assert {decide.choose(cands).name, decide.choose(cands[::-1]).name} == {"round-1"}


def test_rounds_continue_only_while_the_newest_is_strictly_best():
    assert decide.continue_rounds([_a(0.90), _r(1, 0.95)], max_rounds=3)
    assert not decide.continue_rounds([_a(0.95), _r(1, 0.95)], max_rounds=3)  # a tie stops
    assert not decide.continue_rounds([_a(0.90), _r(1, 0.95), _r(2, 0.94)], max_rounds=3)
    assert decide.continue_rounds([_a(0.90), _r(1, 0.95), _r(2, 0.96)], max_rounds=3)
    assert not decide.continue_rounds([_a(0.90), _r(1, 0.95), _r(2, 0.96)], max_rounds=2)


def test_the_rules_take_validation_accuracy_only():
    # nothing but names, rounds and validation accuracies reaches the rules: no test split to peek at
    assert [f for f in Candidate.__dataclass_fields__] == ["name", "round", "val_accuracy"]
    for fn in (decide.choose, decide.continue_rounds):
        assert not any("test" in p for p in inspect.signature(fn).parameters)


def test_no_candidates_is_a_keras_style_error():
    with pytest.raises(ValueError, match="Expected at least one candidate"):
        decide.choose([])
