"""What every task shares: the task decorator, the remainder after ``--``, option parsing."""

import functools
import sys
from typing import Any, Callable, List, Optional, Sequence

from invoke import Task, task
from invoke.parser import Argument

#: ``--project`` of every task: the project file.
PROJECT_HELP = "Project file (default: $NEXA_CONFIG, else the nearest nexa.toml from here upward)."


def nexa_task(*args: Any, **kwargs: Any) -> Callable:
    """``@task`` with flags kept as flags (no positionals), and ``nexa TASK RUN --help``
    showing the task's help. Errors become exit codes once, in ``cli.NexaExecutor``."""
    kwargs.setdefault("positional", [])
    positional = list(kwargs["positional"])

    def decorate(body: Callable) -> Any:
        @functools.wraps(body)
        def wrapper(c: Any, *a: Any, **kw: Any) -> Any:
            if _asked_for_help(a, kw, positional):
                return _print_help(body.__name__.replace("_", "-"))
            return body(c, *a, **kw)

        return task(*args, **kwargs)(wrapper)

    return decorate


HELP_WORDS = ("-h", "--help")


def _asked_for_help(args: Any, kwargs: Any, positional: List[str]) -> bool:
    """Invoke fills a positional before it looks at flags, so ``nexa logs --help`` arrives
    as the RUN argument: treat a help word in a positional slot as the help request."""
    values = list(args) + [kwargs.get(name) for name in positional]
    return any(v in HELP_WORDS for v in values)


def _print_help(name: str) -> None:
    from ..cli import program

    program.print_task_help(name)


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


class OptionalRun(Task):
    """A task whose RUN may be given as a word or left out (the latest run).

    Invoke only knows required positionals, so ``run`` is made positional exactly when the
    command line holds a word for it: the first word after the task name that is neither a
    flag, a flag's value nor another task's name.
    """

    def get_arguments(self, ignore_unknown_help: Optional[bool] = None) -> List[Argument]:
        args = super().get_arguments(ignore_unknown_help)
        if not run_word_given(sys.argv[1:], self.name, args):
            for arg in args:
                arg.positional = False
        return sorted(args, key=lambda a: not a.positional)


def run_word_given(argv: Sequence[str], name: str, args: Sequence[Argument]) -> bool:
    """Whether ``argv`` has a RUN word for task ``name`` (see ``OptionalRun``)."""
    from ..cli import ns, program

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
