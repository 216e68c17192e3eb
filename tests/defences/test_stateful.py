"""Stateful detectors: each fires on a query-attack stream and stays quiet on distinct images;
a detector that never fires (or always fires) fails these."""

from __future__ import annotations

import numpy as np
import torch

from medfool.data import make_synthetic
from medfool.defences.stateful import Blacklight, KnnDetector, blacklight_fingerprint, knn_threshold, pixel_encoder


def _distinct(n: int) -> torch.Tensor:
    return make_synthetic(seed=0).split("train").get(list(range(n)))[0]


def _attack_stream(x0: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Square-attack-like queries: one image with a few small squares changed by 8/255 each."""
    out = x0.repeat(n, 1, 1, 1)
    for i in range(n):
        r, c = torch.randint(0, x0.shape[-1] - 4, (2,), generator=gen).tolist()
        patch = out[i, :, r:r + 4, c:c + 4]
        out[i, :, r:r + 4, c:c + 4] = torch.where(patch > 0.5, patch - 8 / 255, patch + 8 / 255)
    return out


def test_fingerprint_is_the_top_hashes_of_quantised_windows() -> None:
    img = np.zeros((1, 8, 8), dtype=np.float32)
    assert len(blacklight_fingerprint(img, window=4, top=50, quant=50)) == 1  # one distinct window
    img2 = img.copy()
    img2[0, 0, 0] = 0.1  # 25.5 of 255: still level 0 at quantisation 50
    assert blacklight_fingerprint(img2, window=4, top=50, quant=50) == blacklight_fingerprint(img, window=4,
                                                                                                  top=50, quant=50)
    img2[0, 0, 0] = 0.0
    img2[0, 2, 2] = 0.5  # level 2 in the middle: the 4 windows holding it are new
    assert len(blacklight_fingerprint(img2, window=4, top=50, quant=50)) == 5
    assert len(blacklight_fingerprint(img2, window=4, top=3, quant=50)) == 3


def test_blacklight_fires_on_an_attack_stream_not_on_distinct_images() -> None:
    det = Blacklight()
    benign = _distinct(60)
    assert not any(det.observe(benign, "hospital"))
    stream = _attack_stream(benign[0], 10, torch.Generator().manual_seed(0))
    verdicts = det.observe(stream, "attacker")
    assert verdicts[0] and all(verdicts)  # the first query already matches the benign copy sent before
    fresh = Blacklight()
    fresh.observe(stream[:1], "a")
    assert fresh.observe(stream[1:2], "b") == [True]  # one table across accounts: a second key is caught
    assert det.observed == 70 and det.seconds > 0


def test_exact_repeats_pass_by_default_and_are_checked_on_request() -> None:
    x = _distinct(1).repeat(3, 1, 1, 1)
    assert Blacklight().observe(x, "a") == [False, False, False]
    assert Blacklight(repeats="check").observe(x, "a") == [False, True, True]


def test_knn_detector_is_per_account_and_needs_k_queries() -> None:
    benign = _distinct(200)
    k = 10
    thr = knn_threshold(pixel_encoder(benign[100:]), k, 0.01)
    det = KnnDetector(pixel_encoder, thr, k=k)
    assert sum(det.observe(benign[:100], "hospital")) <= 2  # about 1 % false positives
    stream = _attack_stream(benign[0], 30, torch.Generator().manual_seed(1))
    verdicts = det.observe(stream, "attacker")
    assert not any(verdicts[:k])  # no verdict before k earlier queries of this account
    new = [not any(torch.equal(stream[i], stream[j]) for j in range(i)) for i in range(len(stream))]
    assert all(v for v, fresh in zip(verdicts[k:], new[k:], strict=True) if fresh)  # exact repeats pass
    assert not all(new)  # (the stream holds a repeat, so the line above checks both kinds)


def test_a_refused_query_sent_again_is_judged_again() -> None:
    for det in (Blacklight(), KnnDetector(pixel_encoder, 1e9, k=1)):
        x = _distinct(1)
        near = (x + 1 / 255).clamp(0, 1)
        det.observe(x, "a")
        assert det.observe(near, "a") == [True]
        assert det.observe(near, "a") == [True]  # not let through as a repeat of a refused query


def test_guarded_sybil_spreads_queries_over_accounts_in_turn(tiny_model) -> None:
    from medfool.defences.stateful import guarded
    from medfool.models import load_classifier

    model, _ = load_classifier(str(tiny_model))
    stream = _attack_stream(_distinct(1)[0], 30, torch.Generator().manual_seed(2))
    for keys, first_possible in ((1, 5), (3, 15)):  # k = 5 earlier queries per account before a verdict
        det = KnnDetector(pixel_encoder, 1e9, k=5)  # any neighbour is near: every possible verdict is "flag"
        out = guarded(model, det, keys=keys).predict(stream)
        refused = torch.isnan(out).any(1).tolist()
        assert refused.index(True) == first_possible
        assert sorted(det._buffers) == sorted({f"attacker-{i}" for i in range(keys)} if keys > 1 else {"attacker"})
