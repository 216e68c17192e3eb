"""Each attack's stated worst-case cost (the audit's time estimate is built from it) bounds
what the attack really spends on every image, and is not a vacuous bound: on images that
resist, the spend comes close to it."""

from __future__ import annotations

from typing import Any

import pytest

from medfool.attacks import get_attack
from medfool.models import Classifier

# small budgets (the bound is a formula in them) and a tiny epsilon: most images resist
CASES: list[tuple[str, dict[str, Any], bool]] = [  # name, options, whether resisting images reach the bound
    ("fgsm", {"eps": 0.5 / 255}, True),
    ("pgd", {"eps": 0.5 / 255, "steps": 5}, True),
    ("pgd", {"eps": 0.5 / 255, "steps": 3, "restarts": 2}, True),
    ("bim", {"eps": 0.5 / 255, "steps": 4}, True),
    ("apgd-ce", {"eps": 0.5 / 255, "steps": 6}, True),
    ("apgd-dlr", {"eps": 0.5 / 255, "steps": 6}, True),
    ("apgd-t", {"eps": 0.5 / 255, "steps": 5, "targets": 3}, True),
    ("fab-t", {"eps": 0.5 / 255, "steps": 5, "targets": 3}, True),
    ("deepfool", {"steps": 6}, False),  # minimal attacks stop once the image flips
    ("cw", {"steps": 5, "search_steps": 2}, False),
    ("square", {"eps": 0.5 / 255, "queries": 40}, True),
    ("noise", {"eps": 0.5 / 255, "tries": 7}, True),
    ("onepixel", {"population": 12, "generations": 3}, True),
    ("onepixel", {"population": 12, "generations": 3, "init": "uniform"}, True),
    ("ensemble", {"eps": 0.5 / 255, "preset": "fast"}, True),
]


@pytest.mark.parametrize("task", ["multiclass", "binary_two_logit", "binary_one_logit", "multilabel"])
@pytest.mark.parametrize(("name", "options", "tight"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_stated_cost_bounds_the_spend(task: str, name: str, options: dict[str, Any], tight: bool,
                                      request: pytest.FixtureRequest) -> None:
    model, x, y = request.getfixturevalue(task)
    assert isinstance(model, Classifier)
    attack = get_attack(name, **options)
    if model.task not in attack.tasks:
        pytest.skip(f"{name} does not support {model.task}")
    bound = attack.max_passes(model.task, model.num_classes)
    assert bound is not None
    r = attack(model, x[:12], y[:12], seed=0)
    limit = bound.gradients + bound.forwards  # a query counts every forward, gradient passes included
    assert int(r.gradients.max()) <= bound.gradients, (r.gradients.tolist(), bound)
    assert int(r.queries.max()) <= limit, (r.queries.tolist(), bound)
    if tight:
        resisting = r.clean_correct & ~r.success
        assert bool(resisting.any()), "no image resisted: the case cannot check the bound's tightness"
        spent = float(r.queries[resisting].max()) + 1  # the final forward on x_adv is not counted as a query
        assert spent >= 0.75 * limit, (r.queries.tolist(), bound)


def test_attacks_without_a_known_cost_say_so() -> None:
    assert get_attack("onepixel", objective="inconspicuous").max_passes("multi-class", 3) is None
    assert get_attack("ensemble", preset="fast").max_passes("multi-class", 3) is not None
