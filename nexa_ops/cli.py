"""The ``nexa`` program: one Invoke collection, shared with ``inv`` through ``tasks.py``.

Each module in ``COMMAND_MODULES`` exposes ``TASKS`` (top-level tasks) and/or ``COLLECTIONS``
(Invoke sub-collections such as ``cost``). Those modules import only Invoke at load time;
the library behind a task is imported when the task runs, which keeps ``--help`` fast.
"""

import gc

# Loading Invoke and the commands allocates a few hundred thousand objects and none of them is
# garbage, yet the collector would walk them all several times: about a tenth of a short
# command's time. It is off while this module loads, then on again (if it was) with all of
# that frozen out of its walks, so the task's own imports and work pay for their own objects.
_GC_WAS_ON = gc.isenabled()
gc.disable()

import copy  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from typing import Any, List, Optional  # noqa: E402

from invoke import Argument, Collection, Executor, Exit, ParseError, Program  # noqa: E402

from . import __version__  # noqa: E402
from .errors import NexaError, os_error_message  # noqa: E402

COMMAND_MODULES = ("sweep", "launch", "track", "results", "cost", "sync", "teardown", "containers", "monitor", "pyz", "help")


class NexaExecutor(Executor):
    """Runs the tasks, and is the one place where an error becomes its one-line message and
    exit code (``errors.py`` lists them): never a traceback. ``nexa`` and ``inv`` both use it
    (``tasks.py`` sets it for ``inv``)."""

    def execute(self, *tasks: Any) -> Any:
        try:
            return super().execute(*tasks)
        except NexaError as exc:
            raise Exit(f"nexa: error: {exc}", code=exc.exit_code) from None
        except BrokenPipeError:
            raise  # the reader left (`nexa ... | head`): main() exits quietly
        except OSError as exc:  # a path given or configured that cannot be used: one line too
            raise Exit(f"nexa: error: {os_error_message(exc)}", code=1) from None
        except KeyboardInterrupt:
            raise Exit("nexa: interrupted", code=130) from None


def build_namespace() -> Collection:
    ns = Collection()
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.commands.{name}":
                continue  # a capability not built yet
            raise
        for task in getattr(module, "TASKS", ()):
            ns.add_task(task)
        for collection in getattr(module, "COLLECTIONS", ()):
            ns.add_collection(collection)
    return ns


class NexaProgram(Program):
    """Invoke's Program, where the core ``--config FILE`` is nexa's project file.

    Invoke reads its own ``--config`` as a runtime config (yaml, json or py), so a nexa.toml
    given there ended in a traceback. Here it names the project file for every task without a
    ``--config`` of its own (``sweep``, ``launch`` and ``cost.estimate`` take their sweep or
    launch file there), as ``--project`` and ``$NEXA_CONFIG`` do; ``--project`` wins.
    """

    def core_args(self) -> List[Argument]:
        args = super().core_args()
        for arg in args:
            if arg.name == "config":
                arg.help = "Project file (nexa.toml) for tasks without a --config of their own; as --project."
        return args

    def normalize_argv(self, argv: Optional[List[str]]) -> None:
        super().normalize_argv(argv)
        self.argv = hoist_project_flag(list(self.argv), self.namespace)

    def parse_core(self, argv: Optional[List[str]]) -> None:
        keep = sys.dont_write_bytecode
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise usage_error(exc) from None
        finally:
            # Invoke turns .pyc writing off here (its --write-pyc: no .pyc beside a user's
            # tasks.py). nexa loads no tasks.py, and without .pyc every module a task imports
            # would be compiled again on every run: about 10 ms of each `nexa status`.
            sys.dont_write_bytecode = keep

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise usage_error(exc) from None

    def update_config(self, merge: bool = True) -> None:
        project = self.args.config.value
        if project is not None:
            if not project.strip():
                raise Exit("nexa: error: --config: expected a project file, got ''", code=2)
            from .config import ENV_CONFIG

            os.environ[ENV_CONFIG] = project
            self.args.config.set_value(None, cast=False)  # not an Invoke runtime config
        super().update_config(merge)


def usage_error(exc: ParseError) -> Exit:
    """Invoke's parse errors ("No idea what 'x' is!", a flag without its value) as nexa's
    own: one line, exit 2 like every other bad input."""
    message = re.sub(r"Flag <Argument: ([\w-]+)(?: \(\w\))?>", lambda m: "--" + m.group(1).replace("_", "-"), str(exc))
    return Exit(f"nexa: error: {message}", code=2)


PROJECT_FLAGS = ("--config", "-f")


def hoist_project_flag(argv: List[str], namespace: Collection) -> List[str]:
    """``argv`` with the core ``--config FILE`` moved in front of the task it follows, when
    that task has no such flag of its own.

    Invoke's parser gives a word to a missing positional (``status``'s optional RUN) before
    it looks at core flags, so ``nexa status --config p.toml`` would take ``--config`` for the
    run. In front of the task name it is read as the core flag, whatever the task.
    """
    names = {n for name, aliases in namespace.task_names.items() for n in (name, *aliases)}
    out, hoisted, own_flags = [argv[0]], [], None
    words = iter(argv[1:])
    for word in words:
        if word == "--":
            out.append(word)
            out.extend(words)
            break
        if word in names:
            task = copy.copy(namespace[word])
            task.help = dict(task.help)  # get_arguments() pops the help texts it uses
            own_flags = {("-" if len(n) == 1 else "--") + n for a in task.get_arguments() for n in a.names}
        flag = word.split("=", 1)[0]
        if own_flags is not None and flag in PROJECT_FLAGS and flag not in own_flags:
            hoisted.append(word)
            if "=" not in word:
                hoisted.append(next(words, ""))
            continue
        out.append(word)
    return out[:1] + hoisted + out[1:]


ns = build_namespace()
program = NexaProgram(namespace=ns, name="nexa", binary="nexa", version=__version__, executor_class=NexaExecutor)

if _GC_WAS_ON:  # back on for the task (`wait` and the exporter run for hours)
    freeze = getattr(gc, "freeze", None)  # Python 3.7+
    if freeze is not None:
        freeze()
    gc.enable()


def main() -> None:
    try:
        program.run()
    except BrokenPipeError:  # `nexa ... | head`: the reader left early; not a failure to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(141)


if __name__ == "__main__":
    main()
