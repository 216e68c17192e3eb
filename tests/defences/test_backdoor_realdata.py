"""The backdoor must-show on the real PathMNIST tiles: a 5 % BadNets poison works, the usual
validation does not see it, activation clustering finds it, retraining without it removes it."""

from __future__ import annotations

import pytest

from medfool.attacks.poisoning.backdoor import BackdoorConfig, attack_success, poison
from medfool.attacks.poisoning.triggers import make_trigger
from medfool.defences.backdoor import activation_clustering, detection_rates
from medfool.models.train import TrainConfig, fit


@pytest.mark.realdata
@pytest.mark.slow
def test_badnets_on_pathmnist_tiles(real_data, monkeypatch):
    from medfool.data import load_dataset

    monkeypatch.setenv("MEDFOOL_DATA_DIR", str(real_data))
    ds = load_dataset("pathmnist")
    train, test = ds.split("train"), ds.split("test")
    trigger = make_trigger("patch", train.image_shape)  # 3x3 checker, bottom-right
    cfg = BackdoorConfig(rate=0.05, target=ds.info.class_index("adipose"))
    poisoned = poison(train, trigger, cfg, num_classes=9, task="multi-class", seed=0)
    assert poisoned.index.size == 35
    clean = fit(ds, TrainConfig(seed=0))
    bad = fit(ds, TrainConfig(seed=0), train_split=poisoned.split)
    assert attack_success(clean.model, test, trigger, cfg)["asr"] < 0.1
    assert attack_success(bad.model, test, trigger, cfg)["asr"] >= 0.9
    # 200 test tiles, one seed: the clean model's own accuracy moves 4 points between seeds
    # (0.83-0.87 for seeds 0-2) and the CPU's GEMM kernels move it by a tile or two, so "the
    # usual validation does not see it" is a drop within that spread (measured: 0.02 each seed)
    assert clean.test["accuracy"] - bad.test["accuracy"] <= 0.05
    flags = activation_clustering(bad.model, poisoned.split, seed=0)
    rates = detection_rates(flags, poisoned.mask)
    # Spread over training seeds 0-3 at 1 and 2 torch threads (benchmarks/backdoor_seeds.py --data pathmnist;
    # results/backdoor_seeds_pathmnist*.json): TPR 1.000 in all 8 runs; FPR 0.032-0.132, as 2 to 4 clean labels'
    # smaller halves pass the 35 % size rule (clean silhouettes 0.17-0.65). This seed gave 0.032 on 2 threads and
    # 0.108 on 1, so a bound of 0.10 failed by the thread count alone; 0.20 sits outside the measured spread.
    assert rates["tpr"] >= 0.8 and rates["fpr"] <= 0.20, rates
    again = fit(ds, TrainConfig(seed=0), train_split=poisoned.without(flags.index))
    assert attack_success(again.model, test, trigger, cfg)["asr"] < 0.2
