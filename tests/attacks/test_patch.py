"""Patch placement and pasting: exact, local, seeded; the optimised patch on its own terms."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medfool.attacks import get_attack
from medfool.attacks.patch.placement import Placement, allowed_corners, paste, patch_mask, patch_side, sample_placements


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), size=st.integers(8, 40), frac=st.floats(0.01, 0.5),
       shape=st.sampled_from(["square", "circle"]), seed=st.integers(0, 2**31))
def test_paste_touches_only_the_mask(n, size, frac, shape, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=gen)
    if frac * size * size < 1:
        with pytest.raises(ValueError, match="less than one pixel"):
            patch_side(frac, size, size)
        return
    k = patch_side(frac, size, size)
    patch = torch.rand(3, k, k, generator=gen)
    where = sample_placements(n, size, size, k, gen)
    out, mask = paste(x, patch, patch_mask(k, shape), where)
    outside = mask.expand_as(out) == 0
    assert torch.equal(out[outside], x[outside])
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert int(mask.flatten(1).sum(1).max()) <= k * k <= frac * size * size + 1e-9


def test_paste_is_exact_and_seeded():
    x = torch.rand(2, 3, 28, 28)
    patch = torch.rand(3, 8, 8)
    where = Placement(top=torch.tensor([0, 20]), left=torch.tensor([3, 20]), turn=torch.tensor([0, 1]))
    out, _ = paste(x, patch, patch_mask(8, "square"), where)
    assert torch.equal(out[0, :, 0:8, 3:11], patch)
    assert torch.equal(out[1, :, 20:28, 20:28], torch.rot90(patch, 1, dims=(-2, -1)))
    a = sample_placements(5, 28, 28, 8, torch.Generator().manual_seed(3))
    b = sample_placements(5, 28, 28, 8, torch.Generator().manual_seed(3))
    assert torch.equal(a.top, b.top) and torch.equal(a.left, b.left) and torch.equal(a.turn, b.turn)


def test_region_constraints():
    inside = allowed_corners(28, 28, 8, "inside", (0, 0, 14, 14))
    assert inside.nonzero().max() <= 6  # corners keep the patch within the top-left quadrant
    outside = allowed_corners(28, 28, 8, "outside", (10, 10, 18, 18))
    gen = torch.Generator().manual_seed(0)
    where = sample_placements(200, 28, 28, 8, gen, region="outside", box=(10, 10, 18, 18))
    overlap_rows = (where.top < 18) & (where.top + 8 > 10)
    overlap_cols = (where.left < 18) & (where.left + 8 > 10)
    assert not bool((overlap_rows & overlap_cols).any()) and bool(outside.any())
    with pytest.raises(ValueError, match="no position fits"):
        allowed_corners(28, 28, 20, "inside", (0, 0, 10, 10))
    with pytest.raises(ValueError, match="needs box"):
        get_attack("patch", region="inside")


def test_patch_attack_keeps_changes_inside_its_mask(multiclass):
    model, x, y = multiclass
    r = get_attack("patch", area=0.1, steps=20, batch_size=16)(model, x, y)
    outside = r.extras["mask"].expand_as(r.x_adv) == 0
    assert torch.equal(r.x_adv[outside], x[outside])
    assert r.extras["patch"].shape == (3, 8, 8)


@pytest.mark.slow
def test_targeted_patch_learns_on_synthetic_patterns(multiclass):
    model, x, y = multiclass
    attack = get_attack("patch", area=0.25, steps=60, batch_size=24, lr=0.3)
    keep = y != 2
    patch = attack.craft(model, x, y, torch.Generator().manual_seed(0), target=2)
    r = attack.apply(model, patch, x[keep], y[keep], torch.Generator().manual_seed(1))
    assert float(r.success.float().mean()) >= 0.5  # random placement, held-out orientation
    with pytest.raises(ValueError, match="one target class for every image"):
        get_attack("patch", steps=2)(model, x, y, target=(y + 1) % 3)


def test_natural_patch_pastes_real_crops_of_the_target_class(multiclass):
    from medfool.attacks.patch.natural import natural_patch

    model, x, y = multiclass
    keep = y != 2
    r = natural_patch(model, x, y, x[keep], y[keep], 8, torch.Generator().manual_seed(0), target=2)
    crops, pool = r.extras["crops"], x[y == 2]
    # every crop is a k x k window of some target-class tile
    windows = pool.unfold(2, 8, 1).unfold(3, 8, 1)  # (m, C, H-7, W-7, 8, 8)
    windows = windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3, 8, 8)
    for crop in crops:
        assert bool((windows - crop).abs().flatten(1).amax(1).eq(0).any())
    outside = r.extras["mask"].expand_as(r.x_adv) == 0
    assert torch.equal(r.x_adv[outside], x[keep][outside])
    control = natural_patch(model, x, y, x[keep], y[keep], 8, torch.Generator().manual_seed(0), target=2,
                            control=True)
    assert control.attack == "natural-patch-control" and control.x_adv.shape == r.x_adv.shape


def test_size_sweep_rows(multiclass):
    from medfool.attacks.patch.optimised import PatchConfig
    from medfool.attacks.patch.sweep import size_sweep

    model, x, y = multiclass
    rows = size_sweep(model, x, y, x, y, target=2, config=PatchConfig(steps=5, batch_size=8), areas=(0.05, 0.2))
    assert [r["side"] for r in rows] == [6, 12]
    assert all(0 <= r[k] <= 1 for r in rows for k in ("adversarial", "natural", "control"))
    assert rows[0]["n"] == int((y != 2).sum())


def test_scale_eot_pastes_smaller_patches_inside_the_budget(multiclass):
    from medfool.attacks.patch.optimised import Patch

    model, x, y = multiclass
    attack = get_attack("patch", area=0.1, min_scale=0.5, shape="circle", steps=3, batch_size=8)
    patch = attack.craft(model, x, y, torch.Generator().manual_seed(0), target=1)
    assert patch.pixels.shape == (3, 8, 8) and float(patch.pixels.min()) >= 0 and float(patch.pixels.max()) <= 1
    x_adv, mask = attack.paste_random(x, patch, torch.Generator().manual_seed(1))
    covered = mask.flatten(1).sum(1)
    assert int(covered.max()) <= int(patch.mask.sum()) and len(torch.unique(covered)) > 1
    outside = mask.expand_as(x_adv) == 0
    assert torch.equal(x_adv[outside], x[outside])
    # seeded: the same generator state gives the same pasted batch
    again, _ = attack.paste_random(x, patch, torch.Generator().manual_seed(1))
    assert torch.equal(again, x_adv)
    assert isinstance(patch, Patch)


def test_patch_file_round_trip_and_bad_files(tmp_path, multiclass):
    from medfool.attacks.patch.optimised import Patch
    from medfool.errors import DataError

    model, x, y = multiclass
    patch = get_attack("patch", steps=2, batch_size=8).craft(model, x, y, torch.Generator().manual_seed(0), target=1)
    patch.save(tmp_path / "p.npz", "abc")
    back, fp = Patch.load(tmp_path / "p.npz")
    assert fp == "abc" and back.target == 1 and torch.equal(back.pixels, patch.pixels)
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"bad\.npz: not a readable patch file"):
        Patch.load(tmp_path / "bad.npz")
