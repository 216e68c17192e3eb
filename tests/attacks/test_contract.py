"""One contract for every registered attack, on every task type it supports."""

from __future__ import annotations

import pytest
import torch

from medfool.attacks import attack_class, attack_names, get_attack
from medfool.attacks.norms import l0, l2, linf

# fast options per attack; a new attack must add itself here
FAST = {
    "fgsm": {}, "bim": {"steps": 5}, "pgd": {"steps": 5}, "apgd-ce": {"steps": 5}, "apgd-dlr": {"steps": 5},
    "apgd-t": {"steps": 5, "targets": 2}, "fab-t": {"steps": 5, "targets": 2}, "ensemble": {"preset": "fast"},
    "cw": {"steps": 10, "search_steps": 2}, "deepfool": {"steps": 10}, "jsma": {"gamma": 0.05},
    "uap": {"passes": 2}, "eot-pgd": {"steps": 3, "samples": 2, "eval_samples": 4}, "stain": {"steps": 5},
    "patch": {"steps": 5, "batch_size": 8}, "onepixel": {"population": 20, "generations": 3},
    "pixel-pareto": {"population": 8, "generations": 2, "max_pixels": 3}, "noise": {"tries": 5},
    "square": {"queries": 40}, "simba": {"queries": 40}, "hsj": {"queries": 80, "init_evals": 10},
    "boundary": {"queries": 60},
}
MODELS = ("multiclass", "binary_one_logit", "multilabel")
_TASK = {"multiclass": "multi-class", "binary_one_logit": "binary", "multilabel": "multi-label"}


def test_every_attack_has_fast_options():
    assert sorted(FAST) == attack_names()


# every (attack, model) pair the attack supports; the stain attack needs RGB (the binary model is grayscale)
PAIRS = [(name, kind) for name in attack_names() for kind in MODELS
         if _TASK[kind] in attack_class(name).tasks and not (name == "stain" and kind == "binary_one_logit")]
# pairs over a second or two: the fast loop keeps one case of each of these attacks
SLOW_PAIRS = {("ensemble", "binary_one_logit"), ("ensemble", "multilabel"), ("ensemble", "multiclass"),
              ("hsj", "multiclass"), ("cw", "multiclass"), ("apgd-ce", "multilabel"), ("jsma", "multiclass"),
              ("eot-pgd", "multiclass"), ("eot-pgd", "binary_one_logit"), ("boundary", "multiclass")}


@pytest.mark.parametrize(("name", "kind"), [pytest.param(*p, marks=pytest.mark.slow) if p in SLOW_PAIRS else p
                                           for p in PAIRS])
def test_contract(name, kind, request):
    model, x, y = request.getfixturevalue(kind)
    x_before = x.clone()
    attack = get_attack(name, **FAST[name])
    a = attack(model, x, y, seed=3)
    b = attack(model, x, y, seed=3)
    assert torch.equal(x, x_before), "the input batch was modified"
    assert a.x_adv.shape == x.shape and a.x_adv.dtype == x.dtype and a.x_adv.device == x.device
    assert float(a.x_adv.min()) >= 0.0 and float(a.x_adv.max()) <= 1.0
    assert torch.equal(a.x_adv, b.x_adv), "same seed must give the same output"
    eps = attack.budget()
    if eps is not None:
        norm = {"linf": linf, "l2": l2, "l0": l0}[attack.norm or "l2"](a.x_adv - x)
        assert float(norm.max()) <= eps + 1e-6
    if "mask" in a.extras:  # patches: nothing changes outside the pasted mask
        outside = a.extras["mask"].expand_as(x) == 0
        assert torch.equal(a.x_adv[outside], x[outside])
    if hasattr(attack, "max_features"):  # L0 attacks: changed features within the budget
        changed = (a.x_adv != x).flatten(1).sum(1)
        assert int(changed.max()) <= attack.max_features(tuple(x.shape[1:]))
    with torch.no_grad():
        logits = model(a.x_adv)
    if model.task == "multi-label":
        recomputed = ((logits > 0).long() != y).any(dim=1)
    else:
        pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
        recomputed = pred != y
    assert torch.equal(a.success, recomputed)
    assert a.success.dtype == torch.bool and a.l2.shape == (x.shape[0],)
    assert bool((a.gradients >= 0).all()) and bool((a.queries >= 1).all())
    assert a.config["attack"] == name and a.wall_s > 0


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "cw", "fgsm"])
def test_targeted_contract(name, multiclass):
    model, x, y = multiclass
    target = (y + 1) % 3
    r = get_attack(name, **FAST[name])(model, x, y, target=target, seed=0)
    with torch.no_grad():
        pred = model(r.x_adv).argmax(1)
    assert torch.equal(r.success, pred == target)
    assert torch.equal(r.target, target)


def test_least_likely_target_never_equals_label(multiclass):
    model, x, y = multiclass
    r = get_attack("pgd", steps=5)(model, x, y, target="least-likely")
    assert bool((r.target != y).all())


def test_multilabel_attack_labels(multilabel):
    model, x, y = multilabel
    r = get_attack("pgd", steps=5)(model, x, y, attack_labels=[1])
    with torch.no_grad():
        flipped = ((model(r.x_adv) > 0).long()[:, 1] != y[:, 1])
    assert torch.equal(r.success, flipped)
