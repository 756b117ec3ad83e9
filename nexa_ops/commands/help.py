"""``nexa help [TOPIC]``: the documentation pages, from the checkout or from inside nexa.pyz."""

import sys
from typing import Any, List, Optional, Sequence

from invoke.parser import Argument

from .common import NexaTask, echo, nexa_task

TOPIC_FLAGS = ("--topic",)


class OptionalTopic(NexaTask):
    """A task whose TOPIC may be given as a word or left out (the list of topics).

    Invoke only knows required positionals, so ``topic`` is positional exactly when a word
    follows ``help`` on the command line. Unlike a run id, that word may be a task name
    (``nexa help sweep``): it is the topic, not a second task.
    """

    optional_positional = True

    def get_arguments(self, ignore_unknown_help: Optional[bool] = None) -> List[Argument]:
        args = super().get_arguments(ignore_unknown_help)
        if not topic_word_given(sys.argv[1:], self.name):
            for arg in args:
                arg.positional = False
        return sorted(args, key=lambda a: not a.positional)


def topic_word_given(argv: Sequence[str], name: str) -> bool:
    """Whether ``argv`` holds a TOPIC word after the task ``name`` (flags aside)."""
    if name not in argv:
        return False
    for word in argv[argv.index(name) + 1 :]:
        if word == "--" or word.split("=", 1)[0] in TOPIC_FLAGS:
            return False
        if not word.startswith("-"):
            return True
    return False


@nexa_task(
    klass=OptionalTopic,
    positional=["topic"],
    help={
        "topic": "A page (sweep, track, ...) or a command name (status, cost.report, ...). Also accepted positionally. "
        "Default: the list of topics.",
        "json": "Print the list of topics (or, with a topic, the page) as JSON.",
        "dry_run": "Accepted for symmetry: help only reads.",
    },
)
def help(c, topic=None, json=False, dry_run=False):
    """List the documentation pages, or print one.

    Also inside nexa.pyz, without network.
    """
    from .. import manual

    topics = manual.topics()
    if topic is None:
        _list(topics, json)
        return
    found = manual.find(topic, topics)
    text = manual.page(found)
    if json:
        _json({"topic": found.name, "summary": found.summary, "path": found.path, "text": text})
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def _list(topics: Sequence[Any], as_json: bool) -> None:
    import shutil
    import textwrap

    from ..manual import COMMAND_TOPICS

    if as_json:
        _json({"topics": [{"topic": t.name, "summary": t.summary, "path": t.path} for t in topics], "commands": COMMAND_TOPICS})
        return
    width = max(len(t.name) for t in topics) + 4
    columns = max(60, shutil.get_terminal_size().columns - 1)
    echo("Topics: `nexa help TOPIC` prints a page; a command name works too (`nexa help status`).")
    echo()
    for t in topics:
        echo(textwrap.fill(t.summary, columns, initial_indent="  " + t.name.ljust(width - 2), subsequent_indent=" " * width))


def _json(data: Any) -> None:
    import json

    echo(json.dumps(data, indent=2, ensure_ascii=False))


TASKS = [help]
