"""The audit config: typed, strict about keys, checked before any work."""

from __future__ import annotations

import pytest

from medfool.errors import ConfigError
from medfool.runs.audit.config import AuditConfig, config_from_dict, load_config


def test_defaults_are_valid_and_round_trip():
    cfg = load_config(None)
    assert cfg == AuditConfig()
    assert config_from_dict(_lists_to_json(cfg.to_json())) == cfg


def _lists_to_json(d):
    return {k: _lists_to_json(v) if isinstance(v, dict) else list(v) if isinstance(v, tuple) else v
            for k, v in d.items()}


def test_printed_toml_reads_back_as_the_same_config(tmp_path):
    p = tmp_path / "printed.toml"
    p.write_text(AuditConfig().to_toml())
    assert load_config(p) == AuditConfig()


def test_toml_values_are_typed(tmp_path):
    p = tmp_path / "a.toml"
    p.write_text("n = 10\n[whitebox]\neps = [2, 8]\nattacks = ['pgd']\n[onepixel]\nn = 4\npixels = [1]\n")
    cfg = load_config(p, seed=3)
    assert cfg.n == 10 and cfg.seed == 3
    assert cfg.whitebox.eps == (2.0, 8.0) and isinstance(cfg.whitebox.eps[0], float)
    assert cfg.whitebox.attacks == ("pgd",) and cfg.onepixel.pixels == (1,)


@pytest.mark.parametrize(("text", "message"), [
    ("m = 3", "unknown key 'm' \\(known: seed, n, split"),
    ("[whitebox]\nepss = [1]", "unknown key 'epss' in \\[whitebox\\]"),
    ("[backdoor]\nrate = 1.5", "backdoor.rate must be a fraction"),
    ("[backdoor]\ndetectors = [\"magic\"]", "backdoor.detectors: unknown detector 'magic'"),
    ("n = 'many'", "n must be an integer, got 'many'"),
    ("[whitebox]\neps = 4", "whitebox.eps must be a list"),
    ("[whitebox]\neps = [0]", "must be in \\(0, 255\\], got 0"),
    ("[whitebox]\neps = [300]", "must be in \\(0, 255\\], got 300"),
    ("[whitebox]\neps = [8, 4]", "increasing"),
    ("[whitebox]\nattacks = ['pdg']", "unknown attack 'pdg'"),
    ("[whitebox]\nensemble = 'strong'", "whitebox.ensemble must be one of standard, fast, off"),
    ("[corruptions]\nkinds = ['fog']", "unknown corruption 'fog'"),
    ("[corruptions]\nseverities = [0, 3]", "corruptions.severities must be increasing values from 1 to 5"),
    ("[corruptions]\nseverities = [3, 2]", "corruptions.severities must be increasing"),
    ("[patch]\narea = 0.9", "patch.area must be in \\(0, 0.5\\]"),
    ("[onepixel]\npixels = [0]", "integers >= 1"),
    ("n = 0", "n must be >= 1"),
    ("[maps]\nenabled = 1", "maps.enabled must be true or false"),
    ("whitebox = 3", "whitebox must be a table"),
    ("n = [", "not valid TOML"),
])
def test_bad_configs_name_the_file_and_key(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(p)
    assert str(info.value).startswith(str(p))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_config(tmp_path / "nope.toml")
