"""What every task shares: the task decorator with the one short-flag table, usage and help
texts, the table and colour helpers, the remainder after ``--``, option parsing."""

import functools
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from invoke import Task, task
from invoke.parser import Argument

#: ``--project`` of every task: the project file.
PROJECT_HELP = "Project file (default: $NEXA_CONFIG, else the nearest nexa.toml from here upward)."

#: The short flags, one table for every command: a letter always stands for the same long
#: option (``--out`` and ``--output``, ``--task`` and ``--task-id`` are one option each under
#: two names). An option not here has its long name only. ``-h`` (help), ``-V`` (version)
#: and ``-f`` (the project file, also before the command) are core flags. docs/cli.md
#: prints this table; tests/test_cli_usage.py keeps the two equal.
SHORT_FLAGS: Dict[str, str] = {
    "config": "c",  # the command's own input file: sweep file, launch file, shiv.toml
    "project": "f",  # the project file (nexa.toml), as the core -f/--config
    "dry_run": "n",
    "json": "j",
    "out": "o",
    "output": "o",
    "task": "t",
    "task_id": "t",
    "wait": "w",
    "submit": "s",
    "local": "l",
    "follow": "F",
    "timeout": "T",
    "env": "e",
    "mode": "m",
    "yes": "y",
    "all": "a",
    "port": "p",
}

#: What an option's value is, as usage and help show it (``--poll=SECONDS``); the default is
#: the option's name in capitals. ``(command, option)`` keys win over plain ones.
METAVARS: Dict[Any, str] = {
    "config": "FILE",
    "project": "FILE",
    "spec": "FILE",
    "identity": "FILE",
    "output": "FILE",
    "plot": "FILE",
    "keep": "PYZ",
    "out": "DIR",
    "root": "DIR",
    "runs_dir": "DIR",
    "tf_dir": "DIR",
    "workspace": "DIR",
    "dest": "DIR",
    "task": "N",
    "task_id": "N",
    "offset": "N",
    "tasks": "N",
    "nodes": "N",
    "nproc_per_node": "N",
    "top": "K",
    "poll": "SECONDS",
    "timeout": "SECONDS",
    "every": "SECONDS",
    "join_timeout": "SECONDS",
    "max_cost": "USD",
    "budget": "USD",
    "port": "PORT",
    "rdzv_port": "PORT",
    "dcgm_port": "PORT",
    "node_port": "PORT",
    "nexa_port": "PORT",
    "env": "NAME",
    "build_arg": "NAME=VALUE",
    "target": "HOST",
    "host": "HOST",
    "host_label": "LABEL",
    "listen": "ADDRESS",
    "since": "WHEN",
    "until": "WHEN",
    "scrape_interval": "DURATION",
    "evaluation_interval": "DURATION",
    "exporters": "LIST",
    "by": "GROUP",
    "state": "STATE",
    "format": "FORMAT",
    ("run-container", "user"): "UID:GID",
}

#: The running ``nexa`` program: ``cli`` sets it when it loads (``inv`` loads cli too, through
#: tasks.py), so that commands never import the CLI module.
PROGRAM: Any = None


class NexaTask(Task):
    """An Invoke task with nexa's flags: no automatic short flags (Invoke would take the first
    free letter of each name, so ``-p`` meant ``--project`` in one command and ``--poll`` in
    the next) but the letters of ``SHORT_FLAGS``; help texts that survive every call of
    ``get_arguments`` (Invoke pops them as it goes); and what usage and help need to show.

    ``usage``: what follows the options on the usage line, e.g. ``-- COMMAND...``.
    """

    optional_positional = False  # a positional that may be left out ([RUN])

    def __init__(self, body: Callable, usage: str = "", **kwargs: Any) -> None:
        kwargs["auto_shortflags"] = False
        super().__init__(body, **kwargs)
        self.option_help: Dict[str, str] = dict(self.help)
        self.usage_tail = usage

    def arg_opts(self, name: str, default: Any, taken_names: Any) -> Dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        short = SHORT_FLAGS.get(name)
        if short and short not in taken_names and name not in self.positional:
            opts["names"] = list(opts["names"]) + [short]
        return opts

    def get_arguments(self, ignore_unknown_help: Optional[bool] = None) -> List[Argument]:
        self.help = dict(self.option_help)
        return super().get_arguments(ignore_unknown_help)


def nexa_task(*args: Any, **kwargs: Any) -> Callable:
    """``@task`` as a ``NexaTask``, with flags kept as flags (no positionals unless named),
    and ``nexa TASK RUN --help`` showing the task's help. Errors become exit codes once, in
    ``cli.NexaExecutor``."""
    kwargs.setdefault("positional", [])
    kwargs.setdefault("klass", NexaTask)
    positional = list(kwargs["positional"])

    def decorate(body: Callable) -> Any:
        @functools.wraps(body)
        def wrapper(c: Any, *a: Any, **kw: Any) -> Any:
            if _asked_for_help(a, kw, positional):
                return _print_help(c, body.__name__.replace("_", "-"))
            return body(c, *a, **kw)

        return task(*args, **kwargs)(wrapper)

    return decorate


# --- usage and help ---------------------------------------------------------------------------


def metavar(command: str, name: str) -> str:
    """The value placeholder of option ``name`` (underscored) of ``command``."""
    return METAVARS.get((command, name)) or METAVARS.get(name) or name.upper()


def usage_line(command: str, task_obj: Any, binary: str = "nexa") -> str:
    """``nexa status [RUN] [options]``, ``nexa launch [options] -- COMMAND...``."""
    words = [binary, command]
    optional = getattr(task_obj, "optional_positional", False)
    for name in task_obj.positional:
        words.append(f"[{name.upper()}]" if optional else name.upper())
    words.append("[options]")
    tail = getattr(task_obj, "usage_tail", "")
    if tail:
        words.append(tail)
    return " ".join(words)


def option_rows(command: str, task_obj: Any) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """The help's (spec, text) rows: the positional arguments, then the options, sorted by
    long name. Repeatable options say so."""
    helps = getattr(task_obj, "option_help", task_obj.help)
    arguments, options = [], []
    for arg in task_obj.get_arguments():
        long_name = next(n for n in arg.names if len(n) > 1)
        attr = arg.attr_name or long_name
        text = helps.get(attr, "") or ""
        long = "--" + long_name
        if arg.positional or attr in task_obj.positional:
            value = attr.upper()
            arguments.append((f"{value}, {long}={value}", text))
            continue
        shorts = [n for n in arg.names if len(n) == 1]
        if arg.kind is bool:
            spec = ", ".join([f"-{s}" for s in shorts] + [long])
        else:
            value = metavar(command, attr)
            spec = ", ".join([f"-{s} {value}" for s in shorts] + [f"{long}={value}"])
        if arg.kind is list:
            text = text if "repeatable" in text else (text + " Repeatable.").strip()
        options.append((spec, text))
    options.sort(key=lambda row: row[0].split("--", 1)[1])
    return arguments, options


def columns(rows: Sequence[Tuple[str, str]], width: int, indent: int = 2) -> List[str]:
    """Two columns, the second wrapped to ``width``: flags and their help, commands and
    their summaries."""
    import textwrap

    if not rows:
        return []
    left = min(max(len(spec) for spec, _ in rows), 40)
    out = []
    for spec, text in rows:
        room = max(20, width - indent - left - 2)
        wrapped = textwrap.wrap(text, room) or [""]
        if len(spec) > left:
            out.append(" " * indent + spec)
            out += [" " * (indent + left + 2) + line for line in wrapped]
        else:
            out.append(" " * indent + spec.ljust(left) + "  " + wrapped[0])
            out += [" " * (indent + left + 2) + line for line in wrapped[1:]]
    return [line.rstrip() for line in out]


def summary_line(task_obj: Any) -> str:
    """A command's one-line summary: the first line of its docstring."""
    import inspect

    doc = inspect.getdoc(task_obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def task_help(command: str, task_obj: Any, width: int, binary: str = "nexa", core: Sequence[str] = ()) -> str:
    """``nexa COMMAND --help``: usage, what it does, its arguments and options, the core
    options every command takes, and where its page is."""
    import inspect

    lines = [f"Usage: {usage_line(command, task_obj, binary)}", ""]
    doc = inspect.getdoc(task_obj) or ""
    lines += [(" " * 2 + line).rstrip() for line in doc.strip().splitlines()] + [""]
    arguments, options = option_rows(command, task_obj)
    if arguments:
        lines += ["Arguments:"] + columns(arguments, width) + [""]
    lines += ["Options:"] + (columns(options, width) or ["  none"]) + [""]
    if core:
        lines.append("Every command also takes " + ", ".join(core) + ".")
    lines.append(f"Reference: {binary} help {command}")
    return "\n".join(lines)


# --- tables and colour ----------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """The one table layout of every command (``style.layout``): lower-case headers over a
    dashed line, columns two spaces apart, ``right`` columns right-aligned."""
    from ..style import layout

    return layout(headers, rows, right)


def color_on(stream: Any = None) -> bool:
    """Colour for ``stream`` (default stdout): a terminal, no ``NO_COLOR``, no ``--no-color``."""
    from ..style import color_enabled

    return color_enabled(sys.stdout if stream is None else stream)


def paint_state(state: str, on: bool) -> str:
    """A task state in its bucket's colour: failed red, COMPLETED green, running yellow,
    pending dim."""
    from ..runs import bucket
    from ..style import BUCKET_COLORS, paint

    return paint(state, BUCKET_COLORS.get(bucket(state)), on) if state else state


def show_value(value: Any, width: int = 24) -> str:
    """A parameter as the table shows it: as the sweep file gives it and the program gets it
    (``sweep.expand.format_value``: 0.001, 1e-05, true), a float longer than 8 characters
    (a random draw) to 4 significant digits, anything longer than ``width`` cut."""
    from ..sweep.expand import format_value

    text = format_value(value)
    if isinstance(value, float) and len(text) > 8:
        text = f"{value:.4g}"
    return text if len(text) <= width else text[: width - 3] + "..."


def show_path(path: Any, root: Any) -> str:
    """``path`` relative to ``root`` (the project root) when inside it; else as it is."""
    import os

    text = "" if path is None else str(path)
    if not text or root is None or not os.path.isabs(text):
        return text
    rel = os.path.relpath(text, str(root))
    return text if rel == ".." or rel.startswith(".." + os.sep) else rel


HELP_WORDS = ("-h", "--help")


def _asked_for_help(args: Any, kwargs: Any, positional: List[str]) -> bool:
    """Invoke fills a positional before it looks at flags, so ``nexa logs --help`` arrives
    as the RUN argument: treat a help word in a positional slot as the help request."""
    values = list(args) + [kwargs.get(name) for name in positional]
    return any(v in HELP_WORDS for v in values)


def _print_help(c: Any, name: str) -> None:
    PROGRAM.print_task_help(name)


def remainder() -> List[str]:
    """Words after the first standalone ``--`` on the command line, exactly as given.

    Invoke would join them into one string and lose word boundaries, so they are taken from
    ``sys.argv`` directly (the same for ``nexa`` and ``inv``).
    """
    argv = sys.argv
    if "--" in argv:
        return argv[argv.index("--") + 1 :]
    return []


def echo(text: str = "") -> None:
    print(text, flush=True)


def parse_float(text: Any, option: str, minimum: Optional[float] = None) -> Optional[float]:
    """An option's finite number (None stays None), or a ``ConfigError`` naming the option.
    ``nan`` and ``inf`` are refused: compared with anything they would pass every check."""
    import math

    from ..errors import ConfigError

    if text is None:
        return None
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: expected a number, got {text!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{option}: expected a finite number, got {text!r}")
    if minimum is not None and number < minimum:
        raise ConfigError(f"{option}: expected a number >= {minimum:g}, got {text!r}")
    return number


def parse_int(text: Any, option: str, minimum: Optional[int] = None) -> Optional[int]:
    """An option's integer (None stays None), or a ``ConfigError`` naming the option."""
    from ..errors import ConfigError

    if text is None:
        return None
    try:
        number = int(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: expected an integer, got {text!r}") from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"{option}: expected an integer >= {minimum}, got {number}")
    return number


class OptionalRun(NexaTask):
    """A task whose RUN may be given as a word or left out (the latest run).

    Invoke only knows required positionals, so ``run`` is made positional exactly when the
    command line holds a word for it: the first word after the task name that is neither a
    flag, a flag's value nor another task's name.
    """

    optional_positional = True

    def get_arguments(self, ignore_unknown_help: Optional[bool] = None) -> List[Argument]:
        args = super().get_arguments(ignore_unknown_help)
        if not run_word_given(sys.argv[1:], self.name, args):
            for arg in args:
                arg.positional = False
        return sorted(args, key=lambda a: not a.positional)


def run_word_given(argv: Sequence[str], name: str, args: Sequence[Argument]) -> bool:
    """Whether ``argv`` has a RUN word for task ``name`` (see ``OptionalRun``)."""
    ns, program = PROGRAM.namespace, PROGRAM

    dashed = name.replace("_", "-")
    if dashed not in argv:
        return False
    takes_value = {}
    for arg in [*program.core_args(), *args]:  # core flags such as --config FILE may follow the task
        for flag in arg.names:
            takes_value[("-" if len(flag) == 1 else "--") + flag] = arg.kind is not bool and not arg.optional
    words = iter(argv[argv.index(dashed) + 1 :])
    for word in words:
        if word == "--" or word in ns.task_names:
            return False
        if word.startswith("-"):
            if "=" not in word and takes_value.get(word, False):
                next(words, None)
            continue
        return True
    return False


RUN_HELP = "Run folder, run id under the runs directory, or a unique prefix of one (default: the latest run). Also accepted positionally."


def load_project(project: Optional[str]) -> Any:
    """The project's ``NexaConfig`` from ``--project`` (else found as always)."""
    from ..config import load_config

    return load_config(project)
