"""What every task shares: the decorator that maps nexa errors to one line and an exit code."""

import functools
import sys
from typing import Any, Callable, List, Optional

from invoke import Exit, task

from ..errors import NexaError


def nexa_task(*args: Any, **kwargs: Any) -> Callable:
    """``@task`` with flags kept as flags (no positionals) and nexa errors turned into
    ``nexa: error: ...`` on stderr with the error's exit code, never a traceback."""
    kwargs.setdefault("positional", [])

    def decorate(body: Callable) -> Any:
        @functools.wraps(body)
        def wrapper(c: Any, *a: Any, **kw: Any) -> Any:
            try:
                return body(c, *a, **kw)
            except NexaError as exc:
                raise Exit(f"nexa: error: {exc}", code=exc.exit_code) from None
            except KeyboardInterrupt:
                raise Exit("nexa: interrupted", code=130) from None

        return task(*args, **kwargs)(wrapper)

    return decorate


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


def parse_float(text: Any, option: str) -> Optional[float]:
    """An option's number, or a ``ConfigError`` naming the option."""
    from ..errors import ConfigError

    if text is None:
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{option}: expected a number, got {text!r}") from None
