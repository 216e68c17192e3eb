"""``medfool audit`` and ``medfool report`` end to end on a small model, and their user errors."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from medfool.cli.main import main

SECTIONS = ("findings", "threats", "clean", "attacks", "corruptions", "flips", "examples", "patch", "maps", "sanity",
            "repro")


@pytest.fixture(scope="module")
def audited(tiny_model: Path, tiny_text: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("audit")
    (tmp / "audit.toml").write_text(tiny_text)
    out = tmp / "out"
    code = main(["audit", "-m", str(tiny_model), "-d", "synthetic", "--config", str(tmp / "audit.toml"),
                 "--out", str(out)])
    assert code == 0
    return out


@pytest.mark.slow
def test_report_has_every_section_from_the_store(audited: Path):
    page = (audited / "report.html").read_text()
    for section in SECTIONS:
        assert f"id='{section}'" in page, section
    assert "<script" not in page and "http://" not in page and "https://" not in page  # self-contained
    assert page.count("data:image/png;base64,") >= 6
    data = json.loads((audited / "results.json").read_text())
    assert data["meta"]["seed"] == 0 and data["meta"]["config"]["n"] == 24
    assert data["meta"]["environment"]["torch"]
    stages = {s["stage"] for s in data["summaries"]}
    assert stages == {"corruption", "whitebox", "minimal", "blackbox", "patch", "onepixel"}
    # every number in the summary is recomputed here from the stored rows
    rows = sqlite3.connect(audited / "audit.sqlite").execute(
        "SELECT success, clean_correct FROM rows WHERE stage='whitebox' AND attack='pgd' AND budget='16/255'"
    ).fetchall()
    pgd = next(s for s in data["summaries"] if s["attack"] == "pgd" and s["budget"] == "16/255")
    assert len(rows) == 24 == pgd["n"]
    assert pgd["success_rate"] == pytest.approx(sum(s and c for s, c in rows) / sum(c for _, c in rows))
    assert len(data["findings"]) >= 6 and data["findings"][0].startswith("Before any attack the model is right")


def test_headline_is_the_ensemble_beside_the_naive_attacker(audited: Path):
    """The ensemble runs at every budget, is at least as strong as PGD there, records which
    member broke each image, and the findings lead with it and name the naive attacker."""
    data = json.loads((audited / "results.json").read_text())
    by = {(s["attack"], s["budget"]): s for s in data["summaries"] if s["stage"] == "whitebox"}
    for eps in ("1/255", "4/255", "16/255"):
        ens, pgd = by[("ensemble", eps)], by[("pgd", eps)]
        assert ens["role"] == "worst case" and pgd["role"] == "naive" and by[("fgsm", eps)]["role"] == "naive"
        assert ens["robust_accuracy"] <= pgd["robust_accuracy"]
        broke = data["ensemble_members"][eps]
        assert set(broke) == {"apgd-ce", "apgd-t", "fab-t", "square"}
        assert sum(broke.values()) == round(ens["success_rate"] * ens["clean_correct"])
    assert any(f.startswith("Against the strongest attacker the audit runs") and "naive attacker" in f
               for f in data["findings"])
    assert "(worst case)" in (audited / "report.html").read_text()


def test_natural_variation_is_measured_per_corruption_and_severity(audited: Path):
    from medfool.eval.corruptions import HISTOLOGY

    data = json.loads((audited / "results.json").read_text())
    table = data["corruptions"]
    assert set(table) == {c.name for c in HISTOLOGY}  # the synthetic tiles are RGB: the histology set
    assert all(set(row) == {"1", "3", "5"} for row in table.values())
    con = sqlite3.connect(audited / "audit.sqlite")
    n = con.execute("SELECT COUNT(*) FROM rows WHERE stage='corruption' AND attack='jpeg' AND budget='severity 5'")
    assert n.fetchone()[0] == 24
    # accuracy under a corruption is recomputed from the rows
    rows = con.execute("SELECT success, clean_correct FROM rows WHERE stage='corruption' AND attack='noise' "
                       "AND budget='severity 5'").fetchall()
    assert table["noise"]["5"] == pytest.approx(sum(c and not s for s, c in rows) / len(rows))
    assert any(f.startswith("Ordinary variation, no attacker") for f in data["findings"])


def test_store_rows_are_unique_and_complete(audited: Path):
    con = sqlite3.connect(audited / "audit.sqlite")
    dup = con.execute("SELECT COUNT(*) FROM (SELECT stage, attack, budget, image, COUNT(*) c FROM rows "
                      "GROUP BY 1, 2, 3, 4 HAVING c > 1)").fetchone()[0]
    assert dup == 0
    per = dict(con.execute("SELECT attack || ' ' || budget, COUNT(*) FROM rows GROUP BY 1").fetchall())
    assert per["clean -"] == 24 and per["pgd 1/255"] == 24 and per["onepixel 1 px"] == 8
    assert per["patch 0.1 area"] == per["natural-patch 0.1 area"] > 0


def test_rerun_reuses_everything_and_report_rerenders(audited: Path, tiny_model: Path, capsys):
    html = (audited / "report.html").read_bytes()
    before = sqlite3.connect(audited / "audit.sqlite").execute("SELECT COUNT(*) FROM units").fetchone()[0]
    cfg = audited.parent / "audit.toml"
    assert main(["audit", "-m", str(tiny_model), "-d", "synthetic", "--config", str(cfg), "--out", str(audited)]) == 0
    assert re.search(rf"resuming: {before} of {before} units already", capsys.readouterr().out)
    (audited / "report.html").unlink()
    assert main(["report", str(audited)]) == 0
    assert (audited / "report.html").read_bytes() == html  # re-rendered from the store, nothing recomputed



def test_bad_inputs_exit_2_and_write_nothing(tiny_model: Path, tmp_path: Path, capsys, make_npz, fails_cleanly):
    out = tmp_path / "out"
    base = ["audit", "-m", str(tiny_model), "-d", "synthetic", "--out", str(out)]
    bad = tmp_path / "bad.toml"
    bad.write_text("[whitebox]\nepss = [1]\n")
    fails_cleanly([*base, "--config", str(bad)], r"bad\.toml: unknown key 'epss' in \[whitebox\]", out)
    bad.write_text("[whitebox]\neps = [1000]\n")
    fails_cleanly([*base, "--config", str(bad)], r"must be in \(0, 255\], got 1000", out)
    bad.write_text("[patch]\ntarget = 'tumour'\n")
    fails_cleanly([*base, "--config", str(bad)], "unknown class 'tumour'", out)
    fails_cleanly([*base, "--n", "0"], "argument --n: must be >= 1", out)
    # a dataset whose classes do not match the model's
    toy = make_npz("four.npz", n=12, size=28, classes=4)
    fails_cleanly(["audit", "-m", str(tiny_model), "-d", str(toy), "--out", str(out)],
                   r"model is multi-class over 3 classes but .* over 4", out)
    # an output folder that cannot be written
    blocker = tmp_path / "file"
    blocker.write_text("x")
    fails_cleanly(["audit", "-m", str(tiny_model), "-d", "synthetic", "--out", str(blocker / "sub")],
                   "is a file")
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        fails_cleanly(["audit", "-m", str(tiny_model), "-d", "synthetic", "--out", str(ro / "x")],
                       "not writable", ro / "x")
    fails_cleanly(["report", str(tmp_path / "nowhere")], "no results store here")


@pytest.mark.slow
def test_other_settings_are_refused_then_fresh_starts_over(tiny_model: Path, tmp_path: Path, capsys, fails_cleanly):
    cfg = tmp_path / "a.toml"
    cfg.write_text("n = 4\n[corruptions]\nenabled = false\n[whitebox]\nensemble = \"off\"\neps = [2]\nminimal = []\n"
                   "[blackbox]\nenabled = false\n[patch]\nenabled = false\n[onepixel]\nenabled = false\n"
                   "[maps]\nenabled = false\n")
    out = tmp_path / "out"
    base = ["audit", "-m", str(tiny_model), "-d", "synthetic", "--config", str(cfg), "--out", str(out)]
    assert main(base) == 0
    fails_cleanly([*base, "--seed", "1"], "holds an audit made with other settings.*--fresh")
    assert main([*base, "--seed", "1", "--fresh"]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["meta"]["seed"] == 1 and {s["stage"] for s in data["summaries"]} == {"whitebox"}


@pytest.mark.slow
def test_multilabel_model_is_audited_without_the_single_label_parts(tmp_path: Path):
    from medfool.data import make_synthetic
    from medfool.models import save_checkpoint
    from medfool.models.train import TrainConfig, fit

    ds = make_synthetic(task="multi-label", n_classes=4, seed=0)
    model = fit(ds, TrainConfig(arch_kwargs={"width": 4}, epochs=1, batch_size=64)).model
    ckpt = tmp_path / "ml.safetensors"
    save_checkpoint(model, ckpt, {})
    npz = tmp_path / "ml.npz"
    arrays = {}
    for s in ("train", "val", "test"):
        x, y = ds.split(s).tensors()
        arrays[f"{s}_images"] = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        arrays[f"{s}_labels"] = y.numpy().astype(np.uint8)
    np.savez(npz, **arrays)
    (tmp_path / "ml.json").write_text(json.dumps({"name": "ml", "task": "multi-label", "n_channels": 3,
                                                  "label": {str(i): f"pattern_{i}" for i in range(4)}}))
    cfg = tmp_path / "a.toml"
    cfg.write_text("n = 8\n[whitebox]\nensemble = \"fast\"\neps = [4]\n[onepixel]\nn = 4\npixels = [1]\n"
                   "generations = 2\npopulation = 8\n[maps]\nn = 1\nsamples = 0\n")
    out = tmp_path / "out"
    assert main(["audit", "-m", str(ckpt), "-d", str(npz), "--config", str(cfg), "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert {s["stage"] for s in data["summaries"]} == {"corruption", "whitebox", "blackbox", "onepixel"}
    assert data["ensemble_members"]["4/255"].keys() == {"apgd-ce", "apgd-margin", "square"}
    assert any("APGD with the margin loss" in f for f in data["findings"])
    assert any("patch" in s for s in data["meta"]["skipped"]) and any("deepfool" in s for s in data["meta"]["skipped"])
    assert data["flip_matrices"] == []


@pytest.mark.slow
def test_backdoor_retraining_runs_when_asked(tiny_model: Path, tmp_path: Path):
    """[backdoor] enabled: clean and poisoned retrains of the audited architecture, a detector,
    a retrain without its flags; the report shows it and its findings."""
    cfg = tmp_path / "audit.toml"
    cfg.write_text("n = 8\n[corruptions]\nenabled = false\n[whitebox]\nensemble = \"off\"\nattacks = [\"fgsm\"]\n"
                   "eps = [4]\nminimal = []\n[blackbox]\nenabled = false\n[patch]\nenabled = false\n"
                   "[onepixel]\nenabled = false\n[maps]\nenabled = false\n"
                   "[backdoor]\nenabled = true\nrate = 0.1\nepochs = 2\ndetectors = [\"activation-clustering\"]\n")
    out = tmp_path / "out"
    assert main(["audit", "-m", str(tiny_model), "-d", "synthetic", "--config", str(cfg), "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    bd = data["backdoor"]
    assert bd["poison"]["n_poisoned"] == 30  # 10 % of the 300 synthetic training images
    assert set(bd["detection"]) == {"activation-clustering"} and set(bd["retrained"]) == {"activation-clustering"}
    assert any(f.startswith("Tampering with 30 of 300 training images") for f in data["findings"])
    page = (out / "report.html").read_text()
    assert "id='backdoor'" in page and "not part of this run" not in page
    assert sorted(p.name for p in (out / "backdoor").iterdir() if p.is_dir()) == [
        "clean", "poisoned", "retrain-activation-clustering"]


def test_backdoor_config_errors(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    cfg = tmp_path / "audit.toml"
    cfg.write_text("[backdoor]\nenabled = true\ntrigger = \"laser\"\n")
    assert main(["audit", "-m", str(tiny_model), "-d", "synthetic", "--config", str(cfg),
                 "--out", str(tmp_path / "o")]) == 2
    assert "backdoor.trigger must be one of" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_each_units_estimate_bounds_what_it_spent(audited: Path, tiny_model: Path, tiny_text: str, tmp_path: Path):
    """The estimate printed before an audit is an upper bound, unit by unit, of the model
    queries the audit's rows record, and not a vacuous one: the units as a whole spend a
    sizeable share of it (attacks stop early on the images they break)."""
    from medfool.data import load_dataset
    from medfool.models import load_classifier
    from medfool.runs.audit.config import load_config
    from medfool.runs.audit.runner import audit_images, patch_target, plan

    (tmp_path / "audit.toml").write_text(tiny_text)
    cfg = load_config(str(tmp_path / "audit.toml"))
    model, _ = load_classifier(str(tiny_model))
    dataset = load_dataset("synthetic")
    ids, x, y = audit_images(dataset, cfg)
    units, _ = plan(model, dataset, cfg, ids, x, y, lambda: b"", patch_target(dataset.info, cfg, model), None)
    spent = dict(sqlite3.connect(audited / "audit.sqlite").execute(
        "SELECT unit, SUM(queries) FROM rows WHERE stage IN ('whitebox', 'minimal', 'blackbox', 'onepixel') "
        "GROUP BY unit").fetchall())
    bounds = {u.name: u.cost for u in units if u.name in spent}
    assert len(bounds) == len(spent) > 30
    for name, cost in bounds.items():
        assert cost is not None
        assert spent[name] <= cost.gradients + cost.forwards, name
    assert sum(spent.values()) >= 0.3 * sum(c.gradients + c.forwards for c in bounds.values() if c is not None)


def test_estimate_prints_each_stage_and_writes_nothing(tiny_model: Path, tiny_text: str, tmp_path: Path, capsys):
    (tmp_path / "audit.toml").write_text(tiny_text)
    out = tmp_path / "out"
    assert main(["audit", "-m", str(tiny_model), "-d", "synthetic", "--config", str(tmp_path / "audit.toml"),
                 "--out", str(out), "--estimate"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()
    for stage in ("white-box ensemble", "black-box square", "patch crafting", "1-pixel", "vulnerability maps"):
        assert re.search(rf"^  {stage} +\d+ +[\d,]+ +[\d,]+ +(<1 s|\d+ s|\d+ min)$", text, re.M), stage
    assert re.search(r"^  total +\d+ +(<1 s|\d+ s|\d+ min)", text, re.M)
