"""``nexa help`` and the documentation it prints: every page listed and printable, every link
and anchor alive, README short, every nexa.toml key, sweep/launch file key, public API name
and task option documented (``nexa.pyz`` carrying the pages: tests/test_pyz.py)."""

import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import pytest

import nexa_ops
from nexa_ops import manual
from nexa_ops.cli import ns
from nexa_ops.config import Launcher, NexaConfig, RandomSpec, Resources, _SweepFile
from nexa_ops.errors import ConfigError
from tests.conftest import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(p.stem for p in DOCS.glob("*.md") if p.name != "index.md")
TASKS = sorted(name for name in ns.task_names)


# --- nexa help ---------------------------------------------------------------------------


def test_index_lists_every_page_and_only_pages():
    listed = [t.name for t in manual.topics()]
    assert sorted(listed) == PAGES and len(set(listed)) == len(listed)
    assert all(t.summary and "\n" not in t.summary for t in manual.topics())


def test_help_lists_every_page(nexa_cli):
    out = nexa_cli("help")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert listed == [t.name for t in manual.topics()]
    assert "Sweep files" in out.stdout  # the index's one-line summary


def test_help_prints_a_page_from_the_checkout(nexa_cli):
    out = nexa_cli("help", "sweep")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout == (DOCS / "sweep.md").read_text(encoding="utf-8")
    assert nexa_cli("help", "--topic", "config").stdout == (DOCS / "config.md").read_text(encoding="utf-8")


def test_a_command_name_prints_its_page(nexa_cli):
    assert nexa_cli("help", "status").stdout == (DOCS / "track.md").read_text(encoding="utf-8")
    assert nexa_cli("help", "cost.report").stdout == (DOCS / "cost.md").read_text(encoding="utf-8")
    assert nexa_cli("help", "help").stdout == (DOCS / "zipapp.md").read_text(encoding="utf-8")


def test_help_json(nexa_cli):
    listing = json.loads(nexa_cli("help", "--json").stdout)
    assert [t["topic"] for t in listing["topics"]] == [t.name for t in manual.topics()]
    assert listing["commands"]["status"] == "track"
    page = json.loads(nexa_cli("help", "launch", "--json").stdout)
    assert page["topic"] == "launch" and page["path"] == "docs/launch.md"
    assert page["text"] == (DOCS / "launch.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("word, hint", [("sweeps", "(did you mean 'sweep'?)"), ("stauts", "(did you mean 'status'?)"), ("zzz", "")])
def test_unknown_topic_is_exit_2_and_one_line(nexa_cli, word, hint):
    out = nexa_cli("help", word)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == f"nexa: error: help: unknown topic {word!r}{' ' + hint if hint else ''}; 'nexa help' lists them\n"


def test_parse_index_and_find_are_pure():
    text = "# x\n\n- [a](a.md): The a page.\n- not an entry\n- [run-folder](run-folder.md): Files.\n"
    topics = manual.parse_index(text)
    expected = [("a", "The a page.", "docs/a.md"), ("run-folder", "Files.", "docs/run-folder.md")]
    assert [(t.name, t.summary, t.path) for t in topics] == expected
    assert manual.find("a", topics).name == "a"
    with pytest.raises(ConfigError, match="unknown topic 'b'"):
        manual.find("b", topics)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_a_page(task):
    assert manual.find(task, manual.topics()).name in PAGES


# --- README and links ----------------------------------------------------------------------


def test_readme_is_a_short_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "bash tests/run.sh" in text and "bash bin/quickstart.sh" in text
    for page in PAGES:  # every page linked from the front door
        assert f"(docs/{page}.md" in text, f"README.md does not link docs/{page}.md"
    for task in TASKS:  # every command in the table
        assert f"| `nexa {task}`" in text or f"`nexa {task}` |" in text, f"README.md's table lacks {task}"


FENCE_RE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_RE = re.compile(r"`[^`]*`")  # a code span may go on over a line break
LINK_RE = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces as '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", "")).replace(" ", "-")


def anchors(path: Path) -> List[str]:
    """The anchors of ``path``'s headings; a repeated heading gets ``-1``, ``-2``... as on GitHub."""
    out: List[str] = []
    seen: Dict[str, int] = {}
    text = FENCE_RE.sub("", path.read_text(encoding="utf-8"))
    for line in text.splitlines():
        m = re.match(r"#{1,6} (.+)$", line)
        if m:
            base = slug(m.group(1))
            out.append(f"{base}-{seen[base]}" if base in seen else base)
            seen[base] = seen.get(base, 0) + 1
    return out


def links(path: Path) -> List[str]:
    text = FENCE_RE.sub("", path.read_text(encoding="utf-8"))
    return LINK_RE.findall(CODE_RE.sub("", text))


def test_slug_is_githubs():
    assert slug("`nexa wait [RUN]` and `nexa sweep --submit --wait`") == "nexa-wait-run-and-nexa-sweep---submit---wait"
    assert slug("Cost manifests: `runs/manifests/cost_<run_id>.json`") == "cost-manifests-runsmanifestscost_run_idjson"


@pytest.mark.parametrize("name", ["README.md"] + [f"docs/{p.name}" for p in sorted(DOCS.glob("*.md"))])
def test_every_link_points_to_a_file_and_anchor(name):
    source = ROOT / name
    found = links(source)
    assert found or name == "docs/errors.md" or name == "docs/index.md", f"{name} links nowhere"
    for target in found:
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (source.parent / file_part).resolve() if file_part else source
        assert dest.exists(), f"{name}: link to {target}: no such file"
        assert ROOT in dest.parents or dest == ROOT, f"{name}: link to {target} leaves the repository"
        if anchor:
            assert dest.suffix == ".md", f"{name}: anchor into a non-Markdown file: {target}"
            assert anchor in anchors(dest), f"{name}: link to {target}: no such heading in {dest.name}"


# --- everything documented -----------------------------------------------------------------


def _options(task: str) -> List[str]:
    out = subprocess.run([sys.executable, "-m", "nexa_ops", task, "--help"], capture_output=True, text=True, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr
    options = out.stdout.split("Options:", 1)[1] if "Options:" in out.stdout else ""
    return sorted(set(re.findall(r"^\s+(?:-\w(?: \w+)?, )?(--[a-z][a-z0-9-]*)", options, re.M)))


@pytest.fixture(scope="module")
def task_options() -> Dict[str, List[str]]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(TASKS, pool.map(_options, TASKS)))


@pytest.mark.parametrize("task", TASKS)
def test_every_option_is_on_the_tasks_page(task, task_options):
    """What `nexa TASK --help` offers, the page that documents TASK mentions."""
    assert task_options[task], f"no options parsed from `nexa {task} --help`"
    page = manual.find(task, manual.topics())
    text = (DOCS / f"{page.name}.md").read_text(encoding="utf-8")
    missing = [flag for flag in task_options[task] if not re.search(re.escape(flag) + r"(?![a-z0-9-])", text)]
    assert not missing, f"docs/{page.name}.md does not mention {', '.join(missing)} of `nexa {task}`"


def _keys(cls: type, prefix: str) -> List[str]:
    """Dotted keys of a config dataclass; ``<*>`` for the names of a table of tables or values."""
    hints = typing.get_type_hints(cls)
    out: List[str] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        key, tp = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _keys(tp, key + ".")
        elif getattr(tp, "__origin__", None) in (dict, typing.Dict) and dataclasses.is_dataclass(tp.__args__[1]):
            out += _keys(tp.__args__[1], key + ".<*>.")
        elif getattr(tp, "__origin__", None) in (dict, typing.Dict):
            out.append(key + ".<*>")
        else:
            out.append(key)
    return out


def test_every_nexa_toml_key_is_in_the_one_table():
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    tables = re.findall(r"^\| key \| type \| default \| meaning \|\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M)
    assert len(tables) == 1, "docs/config.md must hold exactly one key table"
    documented = [re.sub(r"<[^>]+>", "<*>", row.split("`")[1]) for row in tables[0].splitlines()]
    expected = _keys(NexaConfig, "") + ["teardown.dirs"]  # [teardown] dirs: parsed beside the campaign tables
    assert sorted(documented) == sorted(expected)


def test_every_sweep_file_key_is_documented():
    text = (DOCS / "sweep.md").read_text(encoding="utf-8")
    for f in dataclasses.fields(_SweepFile):
        assert any(form.format(f.name) in text for form in ("`{}`", "`[{}]`", "`[[{}]]`")), f"sweep.md: {f.name}"
    for f in dataclasses.fields(Resources):
        assert f"`resources.{f.name}`" in text, f"sweep.md: resources.{f.name}"
    for f in dataclasses.fields(Launcher):
        assert f"`launcher.{f.name}`" in text, f"sweep.md: launcher.{f.name}"
    for f in dataclasses.fields(RandomSpec):
        assert f"`{f.name}`" in text or f"`[random.{f.name}]`" in text, f"sweep.md: random.{f.name}"


def _find_class(name: str) -> type:
    """The dataclass ``name`` wherever it lives in nexa_ops (modules move; the schema stays)."""
    for info in pkgutil.walk_packages(nexa_ops.__path__, "nexa_ops."):
        if info.name.endswith("__main__"):
            continue
        cls = getattr(importlib.import_module(info.name), name, None)
        if dataclasses.is_dataclass(cls):
            return cls
    raise AssertionError(f"no dataclass {name} in nexa_ops")


def test_every_launch_file_key_is_documented():
    text = (DOCS / "launch.md").read_text(encoding="utf-8")
    table = text.split("## Launch file", 1)[1].split("\n## ", 1)[0]
    for f in dataclasses.fields(_find_class("LaunchFile")):
        assert f"| `{f.name}` |" in table or f"| `[{f.name}]` |" in table, f"launch.md's launch file table: {f.name}"


def _section(text: str, name: str) -> str:
    return text.split(f"### `{name}`\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]


@pytest.mark.parametrize("name", sorted(nexa_ops._API))
def test_every_public_name_has_its_section_in_api_md(name):
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    assert f"### `{name}`\n" in text, f"api.md has no section for {name}"
    section = _section(text, name)
    obj = getattr(nexa_ops, name)
    if dataclasses.is_dataclass(obj):
        names = [f.name for f in dataclasses.fields(obj)]
    elif inspect.isfunction(obj):
        names = list(inspect.signature(obj).parameters)
        assert f"{name}(" in section, f"api.md: {name} without its signature"
    else:
        names = []
    missing = [n for n in names if not re.search(rf"\b{n}\b", section)]
    assert not missing, f"api.md, {name}: {missing} not shown"
