"""The README stays short, and the links and commands in the documentation stay valid."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS, ROOT / "benchmarks" / "README.md"]
MAX_README_LINES = 250

FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$", re.M)


def prose(text: str) -> str:
    """The Markdown without its fenced code blocks and inline code spans."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    seen: Counter[str] = Counter()
    out = set()
    for match in HEADING.finditer(FENCE.sub("", path.read_text())):
        slug = re.sub(r"[^\w\- ]", "", match.group(2).strip().lower()).replace(" ", "-")
        out.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return out


def relative_links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def subcommands_named(path: Path) -> set[str]:
    """Words after 'medfool' where a line of a bash block (or a part of it after '&&') starts with it."""
    names = set()
    for match in FENCE.finditer(path.read_text()):
        if match.group(1) not in ("bash", "sh", "shell"):
            continue
        for line in match.group(2).splitlines():
            for part in line.split("&&"):
                words = part.split()
                if len(words) >= 2 and words[0] == "medfool" and not words[1].startswith("-"):
                    names.add(words[1])
    return names


def cli_subcommands() -> set[str]:
    from medfool.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def test_readme_is_short() -> None:
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail into docs/ (at most {MAX_README_LINES})"


def test_docs_pages_start_with_a_title() -> None:
    assert DOCS, "no docs/*.md"
    for page in [*DOCS, ROOT / "benchmarks" / "README.md"]:
        assert page.read_text().startswith("# "), f"{page.relative_to(ROOT)} does not start with a level-1 heading"


def test_relative_links_point_to_files_and_headings_that_exist() -> None:
    broken = []
    for page in PAGES:
        for target in relative_links(page):
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_documented_command_is_a_real_subcommand() -> None:
    named: dict[str, set[str]] = {}
    for page in [README, *DOCS]:
        for name in subcommands_named(page):
            named.setdefault(name, set()).add(str(page.relative_to(ROOT)))
    assert named, "no 'medfool COMMAND' lines found in any bash block"
    unknown = {name: sorted(pages) for name, pages in named.items() if name not in cli_subcommands()}
    assert not unknown, f"commands in the docs that medfool does not have: {unknown}"


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every 'medfool ...' command of a bash block in the README and docs/, as (page, argv):
    continuation lines joined, comments and shell redirections cut."""
    import shlex

    out = []
    for page in [README, *DOCS]:
        for match in FENCE.finditer(page.read_text()):
            if match.group(1) not in ("bash", "sh", "shell"):
                continue
            for line in match.group(2).replace("\\\n", " ").splitlines():
                for part in line.split("&&"):
                    words = shlex.split(part, comments=True)
                    if words[:1] != ["medfool"] or len(words) < 2:
                        continue
                    if ">" in words:
                        words = words[:words.index(">")]
                    out.append((str(page.relative_to(ROOT)), words[1:]))
    return out


def test_every_documented_command_parses() -> None:
    """Each command in the docs is accepted by medfool's own parser, options and values included
    (placeholders such as MODEL stand for paths): a renamed or misspelt option fails here."""
    import contextlib
    import io

    from medfool.cli.main import build_parser

    commands = documented_commands()
    assert len(commands) >= 40, len(commands)
    refused = []
    for page, argv in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                build_parser().parse_args(argv)
        except SystemExit:
            refused.append(f"{page}: medfool {' '.join(argv)}: {err.getvalue().strip().splitlines()[-1:]}")
    assert not refused, "documented commands medfool refuses:\n" + "\n".join(refused)
