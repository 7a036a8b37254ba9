"""The validation-only decision rules of augment (pipeline/augment/decide.py)."""
import inspect

import pytest

from pipeline.augment import decide
from pipeline.augment.decide import REAL_ONLY, SHARDS, SHARDS_REAL, Candidate


def _a(acc):
    return Candidate(REAL_ONLY, 0, acc)


def _r(n, acc, recipe=SHARDS):
    return Candidate(decide.candidate_name(n, recipe), n, acc, recipe)


def _x(n, acc):
    return _r(n, acc, SHARDS_REAL)


def test_candidate_names_say_round_and_recipe():
    assert _r(2, 0.9).name == "round-2" and _x(2, 0.9).name == "round-2+real"


def test_the_highest_validation_accuracy_wins():
    assert decide.choose([_a(0.90), _r(1, 0.95), _x(1, 0.94), _r(2, 0.93)]).name == "round-1"
    assert decide.choose([_a(0.97), _r(1, 0.95), _x(1, 0.96)]).name == REAL_ONLY
    assert decide.choose([_a(0.90), _r(1, 0.95), _x(2, 0.96)]).name == "round-2+real"


def test_ties_prefer_augmented_then_the_real_rows_then_the_later_round():
    assert decide.choose([_a(0.95), _r(1, 0.95)]).name == "round-1"
    assert decide.choose([_a(0.95), _r(1, 0.95), _x(1, 0.95)]).name == "round-1+real"
    assert decide.choose([_a(0.90), _x(1, 0.95), _r(2, 0.95), _x(2, 0.95), _r(3, 0.95)]).name == "round-2+real"
    assert decide.choose([_a(0.90), _x(1, 0.95), _x(2, 0.95), _x(3, 0.95)]).name == "round-3+real"


def test_the_choice_does_not_depend_on_candidate_order():
    cands = [_a(0.95), _r(1, 0.96), _x(1, 0.96), _x(2, 0.96), _r(2, 0.96)]
    assert {decide.choose(cands).name, decide.choose(cands[::-1]).name} == {"round-2+real"}


def test_rounds_continue_while_the_newest_round_is_not_beaten():
    assert decide.continue_rounds([_a(0.90), _r(1, 0.95), _x(1, 0.93)], max_rounds=3)
    assert decide.continue_rounds([_a(0.95), _r(1, 0.90), _x(1, 0.95)], max_rounds=3)  # a tie goes on
    assert not decide.continue_rounds([_a(0.96), _r(1, 0.95), _x(1, 0.95)], max_rounds=3)  # A is better: stop
    assert not decide.continue_rounds([_a(0.90), _r(1, 0.95), _x(1, 0.95), _r(2, 0.94), _x(2, 0.93)],
                                      max_rounds=3)
    assert decide.continue_rounds([_a(0.90), _r(1, 0.95), _x(1, 0.95), _r(2, 0.93), _x(2, 0.96)], max_rounds=3)
    assert not decide.continue_rounds([_a(0.90), _r(1, 0.95), _x(2, 0.96)], max_rounds=2)
    assert not decide.continue_rounds([_a(0.90)], max_rounds=3)


def test_the_rules_take_validation_accuracy_only():
    # nothing but names, rounds, recipes and validation accuracies reaches the rules: no test split to peek at
    assert [f for f in Candidate.__dataclass_fields__] == ["name", "round", "val_accuracy", "recipe"]
    for fn in (decide.choose, decide.continue_rounds):
        assert not any("test" in p for p in inspect.signature(fn).parameters)


def test_no_candidates_is_a_keras_style_error():
    with pytest.raises(ValueError, match="Expected at least one candidate"):
        decide.choose([])
