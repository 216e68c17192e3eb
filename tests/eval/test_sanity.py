"""Sanity checks warn on the failure they describe, and stay quiet on a healthy model."""

from __future__ import annotations

import torch
from torch import nn

from medfool.eval.sanity import model_checks, result_checks
from medfool.models import Classifier, ModelMeta


def _model(net: nn.Module) -> Classifier:
    meta = ModelMeta(task="multi-class", class_names=("a", "b", "c"), input_shape=(3, 8, 8), mean=(0.5,) * 3,
                     std=(0.25,) * 3, num_outputs=3)
    return Classifier(net, meta).eval()


class _Linear(nn.Module):
    def __init__(self, out: str = "logits", noise: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 8 * 8, 3)
        self.out, self.noise = out, noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.fc(x.flatten(1))
        if self.noise:
            z = z + self.noise * torch.randn_like(z)
        if self.out == "softmax":
            return torch.softmax(z, 1)
        if self.out == "step":
            return (z > 0).float().detach()
        return z


def _status(checks, name):
    return next(c["status"] for c in checks if c["check"] == name)


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 3, 8, 8, generator=g), torch.arange(16) % 3


def test_healthy_model_passes_every_check():
    x, y = _data()
    checks = model_checks(_model(_Linear()), x, y)
    assert {c["status"] for c in checks} == {"ok"}, checks


def test_each_model_check_fires():
    x, y = _data()
    assert _status(model_checks(_model(_Linear("softmax")), x, y), "outputs are logits") == "warn"
    assert _status(model_checks(_model(_Linear(noise=0.1)), x, y), "deterministic model") == "warn"
    assert _status(model_checks(_model(_Linear("step")), x, y), "non-zero gradients") == "warn"
    assert _status(model_checks(_model(_Linear()), x / 255, y), "inputs in pixel space") == "warn"


def _r(stage, attack, budget, image, success, l0=10.0, gradients=5):
    return {"stage": stage, "attack": attack, "budget": budget, "image": image, "success": success,
            "clean_correct": 1, "l0": l0, "gradients": gradients}


def test_result_checks():
    ok = [_r("whitebox", "pgd", "4/255", i, i < 2) for i in range(4)] + \
         [_r("whitebox", "pgd", "8/255", i, i < 3) for i in range(4)] + \
         [_r("blackbox", "noise", "8/255", i, i < 1, gradients=0) for i in range(4)]
    assert {c["status"] for c in result_checks(ok)} == {"ok"}
    masked = [*ok[:8], *[_r("blackbox", "noise", "8/255", i, i == 3, gradients=0) for i in range(4)]]
    assert _status(result_checks(masked), "white-box beats black-box") == "warn"
    shrinking = [_r("whitebox", "pgd", "4/255", i, i < 3) for i in range(4)] + \
                [_r("whitebox", "pgd", "8/255", i, i < 1) for i in range(4)]
    assert _status(result_checks(shrinking), RISING) == "warn"
    unchanged = [*ok, _r("onepixel", "onepixel", "1 px", 0, 1, l0=0.0)]
    assert _status(result_checks(unchanged), "adversarial outputs differ from inputs") == "warn"


RISING = "robust accuracy does not rise with the budget"


def _curve(stage, attack, budgets_kept, n=50, clean=40):
    """Rows of one attack: at each budget, the first ``kept`` images stay correct; images from
    ``clean`` on were wrong before the attack; the rest are fooled."""
    return [{**_r(stage, attack, budget, i, clean > i >= kept, gradients=1), "clean_correct": int(i < clean)}
            for budget, kept in budgets_kept for i in range(n)]


def test_a_rising_curve_is_flagged_for_every_attack_beyond_one_image():
    # the demo model's FGSM: 46 % at 4/255, 52 % at 8/255 of 50 images (23 -> 26 still correct)
    fgsm = _curve("whitebox", "fgsm", [("4/255", 23), ("8/255", 26)])
    (check,) = [c for c in result_checks(fgsm) if c["check"] == RISING]
    assert check["status"] == "warn"
    assert "fgsm" in check["detail"] and "4/255" in check["detail"] and "8/255" in check["detail"]
    assert "46 % (23 of 50)" in check["detail"] and "52 % (26 of 50)" in check["detail"]
    # one image up is sampling noise; a slow drift past it over several budgets is not
    assert _status(result_checks(_curve("whitebox", "pgd", [("4/255", 23), ("8/255", 24)])), RISING) == "ok"
    drift = _curve("whitebox", "pgd", [("2/255", 20), ("4/255", 21), ("8/255", 22)])
    (check,) = [c for c in result_checks(drift) if c["check"] == RISING]
    assert check["status"] == "warn" and "2/255" in check["detail"] and "8/255" in check["detail"]
    # black-box and few-pixel attacks are held to it too; a falling curve passes
    for stage, attack, budgets in [("blackbox", "square", ("4/255", "8/255")), ("onepixel", "onepixel", ("1 px",
                                                                                                        "3 px"))]:
        rows = _curve(stage, attack, [(budgets[0], 10), (budgets[1], 14)])
        (check,) = [c for c in result_checks(rows) if c["check"] == RISING]
        assert check["status"] == "warn" and attack in check["detail"] and budgets[1] in check["detail"], check
        assert _status(result_checks(_curve(stage, attack, [(budgets[0], 14), (budgets[1], 10)])), RISING) == "ok"
    # natural corruptions are not attacks: their severities are not budgets
    assert RISING not in {c["check"] for c in result_checks(_curve("corruption", "jpeg", [("severity 1", 10),
                                                                                         ("severity 3", 20)]))}


def test_an_attack_that_breaks_nothing_at_a_tiny_budget_is_not_called_idle():
    """The ensemble returns an image it could not break unchanged (AutoAttack's rule), so at
    0.5/255, where nothing breaks, no output differs from its input; it changed images at the
    larger budgets, so it is working. An attack that changes nothing at any budget still warns."""
    name = "adversarial outputs differ from inputs"
    tiny = [_r("whitebox", "ensemble", "0.5/255", i, False, l0=0.0) for i in range(4)]
    larger = [_r("whitebox", "ensemble", "8/255", i, i < 2, l0=10.0 if i < 2 else 0.0) for i in range(4)]
    assert _status(result_checks([*tiny, *larger]), name) == "ok"
    idle = [_r("whitebox", "ensemble", b, i, False, l0=0.0) for b in ("0.5/255", "8/255") for i in range(4)]
    assert _status(result_checks(idle), name) == "warn"
