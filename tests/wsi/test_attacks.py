"""Slide attacks: the cached scorer is the whole aggregator, and every success an attack claims
holds when its edits are applied to the tiles and the slide is aggregated from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("tiffslide")

from medfool.models import load_classifier
from medfool.models.features import deep_features
from medfool.wsi.aggregate import AttentionMIL, aggregate, train_attention
from medfool.wsi.attacks import SlideAttackResult, fraction_attack, patch_attack, pixel_search, tile_order
from medfool.wsi.scorer import SlideScorer


@pytest.fixture(scope="module")
def slide(tile_model) -> tuple[object, torch.Tensor, torch.Tensor, np.ndarray, AttentionMIL]:
    """A bag of 40 tiles (36 benign, 4 cancer) at origins on a 64 px grid, and an attention head."""
    path, ds = tile_model
    model, _ = load_classifier(str(path))
    x, y = ds.split("train").tensors()
    x = (x * 255).round() / 255  # tiles as a slide file holds them
    benign, cancer = x[y == 0][:36], x[y == 1][:4]
    origins = np.stack(np.meshgrid(np.arange(8) * 64, np.arange(5) * 64), axis=-1).reshape(-1, 2)
    gen = torch.Generator().manual_seed(0)
    bags, labels = [], []
    for i in range(12):
        bag = benign[torch.randint(0, 36, (10,), generator=gen)]
        if i % 2:
            bag = torch.cat([bag[:7], cancer[torch.randint(0, 4, (3,), generator=gen)]])
        with torch.no_grad():
            bags.append(deep_features(model, bag))
        labels.append(i % 2)
    mil = train_attention(bags, labels, epochs=20, seed=0)
    return model, benign, torch.cat([benign, cancer]), origins, mil


def _apply(tiles: torch.Tensor, origins: np.ndarray, result: SlideAttackResult) -> torch.Tensor:
    """The tiles with the attack's level-0 edits written in, from the edits alone."""
    out = tiles.clone()
    lookup = {(int(x), int(y)): i for i, (x, y) in enumerate(origins)}
    for e in result.edits:
        i = lookup[(e.x // 64 * 64, e.y // 64 * 64)]
        r, c = e.y - int(origins[i][1]), e.x - int(origins[i][0])
        h, w = e.pixels.shape[:2]
        out[i, :, r:r + h, c:c + w] = torch.from_numpy(e.pixels).permute(2, 0, 1).float() / 255
    return out


@pytest.mark.parametrize("kind", ["max", "mean", "attention"])
@pytest.mark.parametrize("copies", [1, 12])
def test_the_scorer_is_the_aggregator(kind: str, copies: int, slide) -> None:
    model, _, tiles, _, mil = slide
    tiles = tiles.repeat(copies, 1, 1, 1)  # also a bag of 480 tiles, where one tile is a small share
    scorer = SlideScorer(kind, model, tiles, mil)  # type: ignore[arg-type]
    with torch.no_grad():
        assert scorer.probability() == pytest.approx(float(aggregate(kind, model, tiles, mil).probability), abs=1e-5)
        gen = torch.Generator().manual_seed(1)
        index = torch.tensor([0, 5, len(tiles) - 1, int(scorer.scores.argmax())])
        new = torch.rand(4, *tiles.shape[1:], generator=gen)
        one_each = scorer.replaced(index, new)
        for j, i in enumerate(index.tolist()):
            changed = tiles.clone()
            changed[i] = new[j]
            expected = float(aggregate(kind, model, changed, mil).probability)  # type: ignore[arg-type]
            assert float(one_each[j]) == pytest.approx(expected, abs=1e-5)
        together = tiles.clone()
        together[index[:3]] = new[:3]
        assert float(scorer.with_tiles(index[:3], new[:3])) == pytest.approx(
            float(aggregate(kind, model, together, mil).probability), abs=1e-5)  # type: ignore[arg-type]


def test_guided_order_follows_the_aggregator_and_uniform_is_seeded(slide) -> None:
    model, _, tiles, _, _ = slide
    scorer = SlideScorer("max", model, tiles)
    guided = tile_order(scorer, "guided", 0)
    assert float(scorer.scores[guided[0]]) == float(scorer.scores.max())
    assert np.array_equal(tile_order(scorer, "uniform", 3), tile_order(scorer, "uniform", 3))
    assert not np.array_equal(tile_order(scorer, "uniform", 3), tile_order(scorer, "uniform", 4))


def test_a_pixel_search_success_holds_from_its_edits_alone(slide) -> None:
    """A benign bag, read at a threshold halfway between its most malignant tile and the most
    a first search (at an unreachable threshold) pushed the slide: the guided search flips it,
    and the edits it reports flip it when applied afresh; the clean bag does not."""
    model, benign, _, origins, _ = slide
    origins = origins[:36]
    scorer = SlideScorer("max", model, benign)
    top = float(scorer.scores.max())
    probe = pixel_search(scorer, benign, origins, pixels=3, threshold=0.999, population=40, generations=5,
                         max_tiles=2)
    assert not probe.success and probe.probability_after > top and probe.queries == 2 * 40 * 6
    threshold = (top + probe.probability_after) / 2
    result = pixel_search(scorer, benign, origins, pixels=3, threshold=threshold, population=40, generations=5,
                          max_tiles=2)
    assert result.to_malignant and result.success, result.summary()
    assert 1 <= result.pixels_changed <= 3 and len(result.tiles_changed) == 1
    assert 0 < result.queries <= result.tiles_tried * 40 * 6
    with torch.no_grad():
        assert float(aggregate("max", model, _apply(benign, origins, result)).probability) >= threshold
        assert float(aggregate("max", model, benign).probability) < threshold  # doing nothing fails


@pytest.mark.parametrize("kind", ["max", "attention"])
def test_white_box_attacks_hold_from_their_edits(kind: str, slide) -> None:
    model, _, tiles, origins, mil = slide
    scorer = SlideScorer(kind, model, tiles, mil)  # type: ignore[arg-type]
    before = scorer.probability()
    threshold = 0.5
    patch = patch_attack(scorer, tiles, origins, size=24, steps=60, threshold=threshold)
    # under max pooling the four cancer tiles each hold the answer: one patched tile cannot flip it
    assert bool(patch.impossible) == (kind == "max")
    pgd = fraction_attack(scorer, tiles, origins, fraction=0.1, eps=16 / 255, steps=30, threshold=threshold)
    assert not pgd.impossible and pgd.success, pgd.summary()
    for result in (pgd, patch):
        with torch.no_grad():
            p = float(aggregate(kind, model, _apply(tiles, origins, result), mil).probability)  # type: ignore[arg-type]
        assert result.success == ((p >= threshold) == (before < threshold))
        if result.edits:  # a failed patch leaves no edit; its probability_after is the nearest it came
            assert p == pytest.approx(result.probability_after, abs=1e-4)
        if result.attack.startswith("PGD"):
            assert len(result.tiles_changed) <= 4  # 10 % of 40 tiles
            changed = (_apply(tiles, origins, result) - tiles).abs().max()
            assert float(changed) <= 16 / 255 + 1e-6


def test_a_patch_on_one_tile_turns_a_benign_bag_malignant(slide) -> None:
    model, benign, _, origins, _ = slide
    scorer = SlideScorer("max", model, benign)
    threshold = float(scorer.scores.max()) + 0.1
    result = patch_attack(scorer, benign, origins[:36], size=24, steps=60, threshold=threshold)
    assert result.success and result.tiles_changed == [int(scorer.scores.argmax())], result.summary()
    with torch.no_grad():
        p = float(aggregate("max", model, _apply(benign, origins[:36], result)).probability)
    assert p >= threshold and 0 < result.pixels_changed <= 24 * 24


def test_max_pooling_out_of_reach_is_said_not_searched(slide) -> None:
    """Under max pooling a malignant slide reads benign only when every tile above the threshold
    falls below it: a change confined to one tile cannot do it when two or more are above."""
    model, _, tiles, origins, _ = slide
    scorer = SlideScorer("max", model, tiles)
    above = int((scorer.scores >= 0.5).sum())
    assert above >= 2  # the four cancer tiles
    result = pixel_search(scorer, tiles, origins, pixels=10, threshold=0.5)
    assert not result.success and result.queries == 0 and f"{above} tiles read malignant" in result.impossible
    assert patch_attack(scorer, tiles, origins, threshold=0.5).impossible
    # a fraction that covers every tile above the threshold is tried
    assert not fraction_attack(scorer, tiles, origins, fraction=above / len(tiles), threshold=0.5).impossible
