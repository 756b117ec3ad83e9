"""The documentation pages (``docs/*.md``) as the topics of ``nexa help``.

``docs/index.md`` lists the pages, one ``- [title](page.md): summary`` line each; that list
is the list of topics. The pages ship inside the package (``nexa_ops/docs/``, mapped in
``pyproject.toml``), so ``resources.read_text`` finds them in a checkout and inside
``nexa.pyz`` alike: the reference is there on a cluster without network.
"""

import re
from typing import Dict, List, Sequence

from .errors import ConfigError
from .resources import read_text
from .schema import suggest
from .structs import frozen

INDEX = "docs/index.md"
ENTRY_RE = re.compile(r"^- \[[^\]]+\]\((?P<page>[a-z0-9_-]+)\.md\): (?P<summary>.+)$")

#: The page that documents each task. A task named like its page (``sweep``) needs no entry.
COMMAND_TOPICS = {
    "worker": "sweep",
    "status": "track",
    "wait": "track",
    "logs": "track",
    "cancel": "track",
    "resubmit": "track",
    "resume": "halving",
    "cost.estimate": "cost",
    "cost.reconcile": "cost",
    "cost.report": "cost",
    "build-image": "containers",
    "run-container": "containers",
    "monitor-config": "monitor",
    "gpu-exporter": "monitor",
    "build": "zipapp",
    "cache-clean": "zipapp",
    "help": "zipapp",
}


@frozen
class Topic:
    """One page: its name (the file's stem), the index's one-line summary, its path."""

    name: str
    summary: str

    @property
    def path(self) -> str:
        return f"docs/{self.name}.md"


def parse_index(text: str) -> List[Topic]:
    """The topics listed in ``index.md``'s text, in its order."""
    found = (ENTRY_RE.match(line.strip()) for line in text.splitlines())
    return [Topic(m.group("page"), m.group("summary").strip()) for m in found if m]


def find(word: str, topics: Sequence[Topic]) -> Topic:
    """The topic called ``word``, or the one documenting the command ``word``.

    Raises ``ConfigError`` (exit 2) with a "did you mean" for anything else.
    """
    by_name: Dict[str, Topic] = {t.name: t for t in topics}
    name = word.strip()
    name = name if name in by_name else COMMAND_TOPICS.get(name, name)
    if name in by_name:
        return by_name[name]
    choices = list(by_name) + sorted(COMMAND_TOPICS)
    raise ConfigError(f"help: unknown topic {word!r}{suggest(word, choices)}; 'nexa help' lists them")


def topics() -> List[Topic]:
    """The topics of the shipped ``docs/index.md``."""
    return parse_index(read_text(INDEX))


def page(topic: Topic) -> str:
    """The page's Markdown text."""
    return read_text(topic.path)
