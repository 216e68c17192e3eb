"""An adaptive attacker is scored by its surrogate but judged by the model as deployed.

Under ``Classifier.adaptive()`` a random defence is attacked through the mean of fresh draws
(EOT) and a vote ensemble through the mean of its members' log-probabilities; both answer,
deployed, otherwise (one draw keyed by the image's pixels; the vote). Every decision read
inside an attack must be the deployed one: an image counted as fooled must be fooled as
deployed, and an attack must not stop on an image the deployed model still gets right.
"""

from __future__ import annotations

import pytest
import torch

from medfool.attacks import get_attack
from medfool.data import make_synthetic
from medfool.defences.evaluation import attack_defence
from medfool.defences.input_transforms import with_transforms
from medfool.models import Classifier, ensemble_classifier
from medfool.models.classifier import decide_as, logits_to_labels
from medfool.models.train import TrainConfig, fit

FAST = TrainConfig(arch_kwargs={"width": 8}, epochs=4, batch_size=64, lr=1e-2)


@pytest.fixture(scope="module")
def trained() -> tuple[list[Classifier], torch.Tensor, torch.Tensor]:
    ds = make_synthetic(seed=1)
    models = [fit(ds, TrainConfig(arch_kwargs={"width": 8}, epochs=4, batch_size=64, lr=1e-2, seed=s)).model
              for s in range(3)]
    x, y = ds.split("test").get(range(48))
    return models, x, y


@pytest.mark.parametrize(("task", "k"), [("multi-class", 4), ("binary", 1), ("binary", 2), ("multi-label", 3)])
def test_decide_as_takes_the_deployed_labels_and_the_surrogate_gradient(task: str, k: int) -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(64, k, generator=gen, requires_grad=True)
    deployed = torch.randn(64, k, generator=gen)
    out = decide_as(scores, deployed, task)
    assert torch.equal(logits_to_labels(out, task), logits_to_labels(deployed, task))
    agree = (logits_to_labels(scores, task) == logits_to_labels(deployed, task))
    agree = agree.all(1) if agree.dim() == 2 else agree
    assert torch.equal(out[agree], scores[agree]), "rows that already agree must keep their scores"
    (g,) = torch.autograd.grad((out * torch.arange(k)).sum(), scores)
    assert torch.equal(g, torch.arange(k).float().expand(64, k)), "the gradient must be the surrogate's"


@pytest.mark.parametrize("name", ["pgd", "apgd-ce", "square"])
def test_random_defence_is_judged_as_deployed_inside_the_attack(trained, name: str) -> None:
    models, x, y = trained
    defended = with_transforms(models[0], [{"name": "resize-pad", "max_shrink": 4}])
    options = {"queries": 200} if name == "square" else {"steps": 10}
    attack = get_attack(name, eps=16 / 255, **options)
    with defended.adaptive(eot=8) as view:
        r = attack(view, x, y, seed=0)
    with torch.no_grad():
        wrong_as_deployed = defended.predict(r.x_adv) != y
    counted = r.success & r.clean_correct
    assert torch.equal(counted, wrong_as_deployed & r.clean_correct), \
        "an image counted as fooled must be fooled by the model as deployed, and the other way round"


@pytest.mark.realdata
@pytest.mark.slow
def test_attack_goes_on_past_an_eot_mean_success(lung_model) -> None:
    """The probe of the issue, on a default-trained LC25000 model behind resize-pad: decided by
    the EOT mean (as before), PGD stops on tiles whose deployed draw still reads them right and
    they count as robust; decided as deployed, the same tiles cost the whole schedule or fall."""
    model, ds = lung_model
    defended = with_transforms(model, [{"name": "resize-pad", "max_shrink": 4}])
    x, y = ds.split("test").get(range(0, 3000, 47))  # 64 tiles across the classes (the split is sorted)
    pgd = get_attack("pgd", eps=2 / 255, steps=10)
    runs = {}
    for deployed_decisions in (False, True):
        # False: the EOT mean decides, as before the fix
        with defended.adaptive(eot=8, judged_as_deployed=deployed_decisions) as view:
            runs[deployed_decisions] = pgd(view, x, y, seed=0)
    with torch.no_grad():
        held = {k: (defended.predict(r.x_adv) == y) & r.clean_correct for k, r in runs.items()}
    before, now = runs[False], runs[True]
    stopped_too_early = before.clean_correct & (before.gradients < 10) & held[False]
    assert int(stopped_too_early.sum()) >= 2, "the probe needs tiles the EOT mean gave up on too early"
    # now every tile the deployed model keeps cost the whole schedule
    assert bool((now.gradients[held[True]] == 10).all())
    assert torch.equal(now.success & now.clean_correct, now.clean_correct & ~held[True])
    assert int(held[True].sum()) < int(held[False].sum())


@pytest.mark.slow
def test_vote_ensemble_is_attacked_through_its_members_and_judged_by_the_vote(trained) -> None:
    models, x, y = trained
    vote, mean = ensemble_classifier(models, "vote"), ensemble_classifier(models, "mean")
    eps = 4 / 255
    vote_held = attack_defence(vote, x, y, list(range(48)), eps, preset="fast", seed=0).adaptive
    mean_held = attack_defence(mean, x, y, list(range(48)), eps, preset="fast", seed=0).adaptive
    # the members' mean log-probability is as good a handle as their mean logit: the vote holds
    # no more than one image (of 48) above the mean ensemble
    assert int(vote_held.sum()) <= int(mean_held.sum()) + 1
    with vote.adaptive() as view:
        r = get_attack("apgd-ce", eps=eps, steps=20)(view, x, y, seed=0)
    with torch.no_grad():
        assert torch.equal(r.success & r.clean_correct, (vote.predict(r.x_adv) != y) & r.clean_correct)


def test_a_mean_ensemble_is_not_attacked_twice(trained) -> None:
    models, _, _ = trained
    mean, vote = ensemble_classifier(models, "mean"), ensemble_classifier(models, "vote")
    assert not mean.adapts and vote.adapts
    assert not with_transforms(models[0], [{"name": "blur"}]).adapts
    assert with_transforms(models[0], [{"name": "jpeg"}]).adapts


def test_worst_of_takes_each_images_first_success() -> None:
    from medfool.attacks.base import AttackResult

    x = torch.zeros(4, 1, 2, 2)
    y = torch.tensor([0, 1, 0, 1])

    def result(fooled: list[bool], shift: float) -> AttackResult:
        adv = (x + shift).clamp(0, 1)
        clean = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])  # image 3 misread before
        flip = torch.tensor(fooled)
        logits = torch.where(flip[:, None], clean.flip(1), clean)
        return AttackResult.from_scores("a", {}, "multi-class", x, adv, y, clean, logits,
                                        gradients=torch.ones(4, dtype=torch.long),
                                        queries=torch.ones(4, dtype=torch.long), wall_s=1.0)

    naive, adaptive = result([True, False, False, True], 0.1), result([False, True, False, True], 0.2)
    r = AttackResult.worst_of([naive, adaptive])
    assert r.success[:3].tolist() == [True, True, False]
    assert r.x_adv[0].max() == pytest.approx(0.1) and r.x_adv[1].max() == pytest.approx(0.2)
    assert r.gradients.tolist() == [2, 2, 2, 2] and r.wall_s == 2.0
    assert r.robust_accuracy == 0.25 and r.clean_correct.tolist() == [True, True, True, False]
