"""The README's test command installs everything the tests use, and CI runs that command."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).parents[1]
# import names whose distribution is called otherwise
DISTRIBUTION = {"art": "adversarial-robustness-toolbox"}


def readme_test_command() -> str:
    """The one-line command in the bash block after the README's "Run the test suite"."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index("Run the test suite"):]
    block = re.search(r"```bash\n(.*?)\n```", after, re.S)
    assert block is not None, "no bash block after 'Run the test suite'"
    return block.group(1).strip()


def pip_installs(command: str) -> list[list[str]]:
    """The arguments of each 'pip install' in a shell command, without pip's own options."""
    out = []
    for part in re.split(r"&&|\n", command):
        if "pip install" not in part or part.strip().startswith("#"):
            continue
        words = shlex.split(part.strip())
        if words[:2] == ["python", "-m"]:
            words = words[2:]
        if words[:2] == ["pip", "install"]:
            out.append([w for w in words[2:] if w != "--quiet"])
    return out


def installed_names(command: str) -> set[str]:
    """Distributions the command installs by name: packages it names, and with '-e .[extra]'
    the project's dependencies and that extra's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names: set[str] = set()
    for args in pip_installs(command):
        for arg in args:
            if arg.startswith("-"):
                continue
            if arg.startswith("."):
                extras = re.findall(r"\[(.*)\]", arg)
                specs = list(project["dependencies"])
                for extra in (extras[0].split(",") if extras else []):
                    specs += project["optional-dependencies"][extra.strip()]
                names |= {re.split(r"[<>=!~;\[ ]", s, maxsplit=1)[0].lower() for s in specs}
            else:
                names.add(re.split(r"[<>=!~\[]", arg, maxsplit=1)[0].lower())
    return names


def modules_the_tests_skip_without() -> set[str]:
    found = set()
    for path in (ROOT / "tests").rglob("*.py"):
        found |= set(re.findall(r"importorskip\(\s*[\"']([\w.]+)", path.read_text()))
    return {m.split(".")[0] for m in found}


def test_readme_test_command_installs_every_package_a_test_skips_without() -> None:
    command = readme_test_command()
    have = installed_names(command)
    missing = sorted(m for m in modules_the_tests_skip_without() if DISTRIBUTION.get(m, m).lower() not in have)
    assert not missing, f"the README's test command does not install {missing}: those tests would skip"
    assert "torch==2.13.0" in command.split(), "pin the CPU torch, or pip may pull another build"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = readme_test_command()
    assert pip_installs(command) == pip_installs(ci), "CI must install exactly what the README's test command does"
    assert "python -m pytest" in command and re.search(r"^python -m pytest$", ci, re.M)
