"""The one-pixel attack: budget, locality, determinism, and a weak pixel it must find."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medfool.attacks import get_attack
from medfool.attacks.fewpixel.evolution import distinct_others
from medfool.attacks.fewpixel.pixels import clip_candidates, write_pixels
from medfool.models import Classifier, ModelMeta
from medfool.utils.rng import GeneratorDraw

WEAK = (5, 17)


class _WeakPixel(nn.Module):
    """Two classes; the red channel's deviation from 0.2, weighted by a Gaussian centred on
    ``WEAK``, raises class 1. Only setting the weak pixel itself to full red crosses the
    threshold (its neighbours' weights, exp(-1/18) = 0.946, fall short), and the weights fall
    off smoothly so evolution can climb towards it."""

    def __init__(self, size: int = 28) -> None:
        super().__init__()
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        d2 = (yy - WEAK[0]) ** 2 + (xx - WEAK[1]) ** 2
        self.register_buffer("kernel", torch.exp(-d2.float() / 18.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z1 = 50.0 * (((x[:, 0] - 0.2) * self.kernel).sum(dim=(1, 2)) - 0.78)
        return torch.stack([torch.zeros_like(z1), z1], dim=1)


@pytest.fixture(scope="module")
def weak_model():
    meta = ModelMeta(arch=None, arch_kwargs={}, input_shape=(3, 28, 28), num_outputs=2, task="binary",
                     class_names=["clean", "flagged"], mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    model = Classifier(_WeakPixel(), meta).eval()
    x = 0.2 + 0.005 * torch.rand(6, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    x[:, 0] = 0.2  # the red channel sits exactly at the model's reference level
    y = torch.zeros(6, dtype=torch.long)
    return model, x, y


@pytest.mark.parametrize("init", ["uniform", "prior"])
def test_finds_the_known_weak_pixel(weak_model, init):
    model, x, y = weak_model
    with torch.no_grad():
        assert bool((model.predict(x) == 0).all())
    r = get_attack("onepixel", population=60, generations=60, init=init)(model, x, y, seed=0)
    assert bool(r.success.all()), r.success
    changed = (r.x_adv != x).any(dim=1)  # (N, H, W)
    assert bool(changed[:, WEAK[0], WEAK[1]].all()) and int(changed.flatten(1).sum(1).max()) == 1
    if init == "prior":  # the gradient prior starts on the pixel: no generation is needed
        assert int(r.extras["generations"].max()) == 0
    assert bool((r.queries < 60 * 61).all())


@pytest.mark.parametrize("k", [1, 3, 5])
def test_only_the_chosen_pixels_change(multiclass, k):
    model, x, y = multiclass
    r = get_attack("onepixel", pixels=k, population=16, generations=2)(model, x, y, seed=1)
    assert int(r.l0.max()) <= k
    cand = r.extras["candidate"]  # (N, k, 2 + C)
    allowed = torch.zeros(x.shape[0], 28, 28, dtype=torch.bool)
    n_idx = torch.arange(x.shape[0]).unsqueeze(1).expand(-1, k)
    allowed[n_idx, cand[..., 0].floor().long(), cand[..., 1].floor().long()] = True
    changed = (r.x_adv != x).any(dim=1)
    assert not bool((changed & ~allowed).any())
    assert torch.equal(r.x_adv[n_idx, :, cand[..., 0].floor().long(), cand[..., 1].floor().long()],
                       cand[..., 2:])


def test_grayscale_binary_and_multilabel(binary_one_logit, multilabel):
    for model, x, y in (binary_one_logit, multilabel):
        r = get_attack("onepixel", pixels=3, population=16, generations=2)(model, x, y, seed=0)
        assert int(r.l0.max()) <= 3 and r.extras["candidate"].shape == (x.shape[0], 3, 2 + x.shape[1])


def test_targeted_and_seeded(multiclass):
    model, x, y = multiclass
    keep = y != 1
    attack = get_attack("onepixel", population=16, generations=3, strategy="best1", crossover=0.5)
    a = attack(model, x[keep], y[keep], target=1, seed=4)
    b = attack(model, x[keep], y[keep], target=1, seed=4)
    c = attack(model, x[keep], y[keep], target=1, seed=5)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.x_adv, c.x_adv)
    with torch.no_grad():
        assert torch.equal(a.success, model.predict(a.x_adv) == 1)


def test_population_indices_are_distinct():
    r = distinct_others(50, 7, 3, GeneratorDraw(torch.Generator().manual_seed(0)))
    members = torch.arange(7).view(1, 7)
    stacked = torch.stack([members.expand(50, 7), *r])  # (4, 50, 7)
    srt = stacked.sort(dim=0).values
    assert bool((srt[1:] != srt[:-1]).all())


def test_candidates_are_clipped_and_written_exactly():
    cand = torch.tensor([[30.0, -2.0, 1.5, -0.1, 0.3]])
    c = clip_candidates(cand, 1, 28, 28)
    assert c[0, 0] < 28 and c[0, 1] == 0 and c[0, 2] == 1 and c[0, 3] == 0
    x = torch.zeros(1, 3, 28, 28)
    out = write_pixels(x, torch.tensor([0]), c, 1)
    assert torch.equal(out[0, :, 27, 0], torch.tensor([1.0, 0.0, 0.3])) and int((out != 0).sum()) == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"pixels": 0}, "pixels must be an integer >= 1"),
    ({"population": 3}, "population must be an integer >= 4"),
    ({"strategy": "rand2"}, "strategy must be one of rand1, best1"),
])
def test_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        get_attack("onepixel", **options)


def test_vulnerability_map_peaks_at_the_weak_pixel(weak_model):
    from medfool.attacks.fewpixel.maps import vulnerability_map

    model, x, y = weak_model
    vm = vulnerability_map(model, x[:1], y[:1], samples=4)
    assert vm.drop.shape == (28, 28) and vm.queries == 28 * 28 * 12 + 1
    assert divmod(int(vm.drop.argmax()), 28) == WEAK
    assert vm.fooled.sum() == 1 and bool(vm.fooled[WEAK])
    assert vm.colour[WEAK][0] == 1.0  # full red
    with pytest.raises(ValueError, match="one image"):
        vulnerability_map(model, x, y)


def test_locality_of_the_weak_pixel_and_propagation(weak_model, multiclass):
    from medfool.attacks.fewpixel.maps import locality, propagation_map, ring_offsets

    assert ring_offsets(1).shape == (8, 2) and ring_offsets(3).shape == (24, 2)
    model, x, y = weak_model
    cand = torch.tensor([[[WEAK[0] + 0.5, WEAK[1] + 0.5, 1.0, 0.0, 0.0]]]).expand(x.shape[0], 1, 5)
    rows = locality(model, x, y, cand, max_distance=2)
    assert [r["distance"] for r in rows] == [0, 1, 2]
    assert rows[0]["success"] == 1.0 and rows[1]["success"] == 0.0 and rows[1]["positions"] == 8 * x.shape[0]
    cnn, xs, _ = multiclass
    x_adv = xs[:1].clone()
    x_adv[0, :, 3, 4] = 1.0
    maps = propagation_map(cnn, xs[:1], x_adv)
    assert len(maps) >= 3 and all(m.dim() == 2 for _, m in maps)
    assert float(maps[0][1].sum()) > 0  # the first stage sees the change


@pytest.mark.realdata
@pytest.mark.slow
def test_analyze_locality_and_propagation_on_real_tiles(path_model, tmp_path, capsys):
    import json

    from medfool.cli.main import main
    from medfool.models import save_checkpoint

    model, _ = path_model
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    for kind, produced in (("locality", "locality.json"), ("propagation", "propagation.json")):
        out = tmp_path / kind
        assert main(["analyze", kind, "-m", str(ckpt), "-d", "pathmnist", "--n", "8", "-o", "population=100",
                     "-o", "generations=10", "--out", str(out)]) == 0, capsys.readouterr().err
        res = json.loads((out / produced).read_text())
        if kind == "locality":
            rows = res["rows"]
            assert rows[0]["distance"] == 0 and rows[0]["success"] == 1.0  # the found pixel itself fools
            assert all(r["success"] <= 1.0 for r in rows) and len(rows) == 4
        else:
            layers = res["images"][0]["layers"]
            assert layers[0]["total"] > 0 and (out / "propagation_0.png").stat().st_size > 1000


def test_nondominated_sorting_and_crowding():
    from medfool.attacks.fewpixel.evolution import crowding_distance, nondominated_rank

    obj = torch.tensor([[[1.0, 5.0], [2.0, 2.0], [5.0, 1.0], [3.0, 3.0], [4.0, 4.0], [2.0, 2.0]]])
    rank = nondominated_rank(obj)
    assert rank.tolist() == [[0, 0, 0, 1, 2, 0]]
    crowd = crowding_distance(obj, rank)[0]
    assert torch.isinf(crowd[0]) and torch.isinf(crowd[2]) and torch.isfinite(crowd[1])


@pytest.mark.parametrize("objectives", ["pixels", "colour"])
def test_pareto_front_is_non_dominated(multiclass, objectives):
    model, x, y = multiclass
    r = get_attack("pixel-pareto", max_pixels=4, population=16, generations=4, objectives=objectives)(
        model, x[:6], y[:6], seed=0)
    assert int(r.l0.max()) <= 4
    front = r.extras["front"]  # (n, P, 2), NaN outside the front
    for img in front:
        pts = img[~torch.isnan(img[:, 0])]
        assert pts.shape[0] >= 1
        dominated = ((pts.unsqueeze(0) <= pts.unsqueeze(1)).all(-1) & (pts.unsqueeze(0) < pts.unsqueeze(1)).any(-1))
        assert not bool(dominated.any())
        if objectives == "pixels":
            assert bool(((pts[:, 1] >= 1) & (pts[:, 1] <= 4) & (pts[:, 1] == pts[:, 1].round())).all())


def test_pareto_finds_the_weak_pixel_as_a_one_pixel_solution(weak_model):
    model, x, y = weak_model
    r = get_attack("pixel-pareto", max_pixels=3, population=60, generations=40)(model, x[:3], y[:3], seed=0)
    assert bool(r.success.all())
    changed = (r.x_adv != x[:3]).any(dim=1)
    assert bool(changed[:, WEAK[0], WEAK[1]].all())


def test_inconspicuous_objective_picks_closer_colours(weak_model):
    model, x, y = weak_model
    plain = get_attack("onepixel", population=60, generations=60, init="prior")(model, x, y, seed=0)
    quiet = get_attack("onepixel", population=60, generations=60, init="prior", objective="inconspicuous",
                       patience=5)(model, x, y, seed=0)
    both = quiet.success & plain.success
    assert int(both.sum()) >= 4 and int(quiet.l0.max()) == 1
    # the fooling pixel must be nearly full red, but its other channels are free: the quiet
    # attack spends its remaining generations making them match the surrounding grey
    assert float(quiet.extras["delta_e"][both].mean()) < float(plain.extras["delta_e"][both].mean())


def test_batched_runs_join_per_image_extras(multiclass):
    from medfool.attacks.base import AttackResult

    model, x, y = multiclass
    attack = get_attack("onepixel", population=8, generations=1)
    parts = [attack(model, x[:10], y[:10], seed=0), attack(model, x[10:], y[10:], seed=0)]
    joined = AttackResult.concat(parts)
    assert joined.extras["candidate"].shape[0] == x.shape[0] == joined.extras["delta_e"].shape[0]
    assert torch.equal(joined.extras["candidate"][10:], parts[1].extras["candidate"])


def test_a_strided_map_is_the_full_map_at_its_locations(weak_model):
    """Every stride-th row and column, each location giving exactly what the exhaustive map
    gives there (the search is per location, not per neighbourhood)."""
    from medfool.attacks.fewpixel.maps import map_stride, vulnerability_map

    model, x, y = weak_model
    full = vulnerability_map(model, x[:1], y[:1], samples=4)
    part = vulnerability_map(model, x[:1], y[:1], samples=4, stride=3)
    assert part.rows.tolist() == [*range(1, 26, 3), 27] and part.drop.shape == (10, 10)
    assert part.queries == 10 * 10 * 12 + 1
    assert torch.equal(part.drop, full.drop[part.rows][:, part.cols])
    assert torch.equal(part.fooled, full.fooled[part.rows][:, part.cols])
    assert part.cells(part.drop, 28, 28).shape == (28, 28)
    assert [map_stride(s, s) for s in (28, 64, 96, 224)] == [1, 1, 2, 4]
