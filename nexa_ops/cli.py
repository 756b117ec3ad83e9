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
from typing import Any, List, Optional, Sequence, Tuple  # noqa: E402

from invoke import Argument, Collection, Executor, Exit, ParseError, Parser, ParserContext, Program  # noqa: E402

from . import __version__  # noqa: E402
from .commands import common  # noqa: E402
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


#: Every command name in the order ``nexa --help`` lists them (filled by ``build_namespace``).
ORDER: List[str] = []


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
            ORDER.append(ns.transform(task.name))
        for collection in getattr(module, "COLLECTIONS", ()):
            ns.add_collection(collection)
            ORDER.extend(f"{collection.name}.{ns.transform(name)}" for name in collection.tasks)
    return ns


#: Invoke's core flags nexa keeps, by name. The others (--pty, --hide, --echo, --warn-only,
#: --dry, --command-timeout, --prompt-for-sudo-password, --write-pyc, --list-depth,
#: --list-format) are about Invoke running shell commands: nexa refuses them as unknown
#: options, and gives Invoke's own code their defaults (``parse_core_args``). ``inv`` in the
#: repo is Invoke's own program and keeps all of them.
KEPT_CORE = ("config", "help", "list", "print-completion-script", "version", "complete", "debug")
#: Kept working but not shown in --help: shell completion scripts call --complete; --debug
#: is Invoke's parser log, for developers.
HIDDEN_CORE = ("complete", "debug")
#: Short core flags nexa does not keep (``-l`` is ``--local``, ``-d`` was ``--dry-run``'s):
#: one letter, one meaning (commands/common.SHORT_FLAGS).
DROPPED_SHORTS = {"list": "l", "debug": "d"}


class NexaProgram(Program):
    """Invoke's Program with nexa's core flags, help, errors and completion.

    The core ``--config FILE`` is nexa's project file: Invoke reads its own ``--config`` as a
    runtime config (yaml, json or py), so a nexa.toml given there ended in a traceback. Here
    it names the project file for every task without a ``--config`` of its own (``sweep``,
    ``launch`` and ``cost.estimate`` take their sweep or launch file there), as ``--project``
    and ``$NEXA_CONFIG`` do; ``--project`` wins.
    """

    def core_args(self) -> List[Argument]:
        args = []
        for arg in super().core_args():
            if arg.name not in KEPT_CORE:
                continue
            drop = DROPPED_SHORTS.get(arg.name)
            if drop:
                arg = Argument(names=tuple(n for n in arg.names if n != drop), kind=arg.kind, default=arg.default,
                               help=arg.help, optional=arg.optional)
            args.append(arg)
        helps = {
            "config": "Project file (nexa.toml) for every command without a --config of its own; as --project.",
            "help": "Show this help, or a command's (nexa COMMAND --help).",
            "list": "Print the command names, one per line.",
            "print-completion-script": "Print the shell completion script for bash, zsh or fish (see docs/cli.md).",
            "version": "Print nexa's version and exit.",
        }
        for arg in args:
            arg.help = helps.get(arg.name, arg.help)
        args.append(Argument(names=("no-color",), kind=bool, default=False, help="Never colour the output (as NO_COLOR=1 does)."))
        return args

    def parse_core_args(self) -> None:
        super().parse_core_args()
        given = self.core[0].args
        for arg in super().core_args():  # Invoke's own code reads every one of its flags
            if arg.name not in given:
                given[arg.name] = arg
        shell = given["print-completion-script"].value
        if shell:
            from .completion import script

            try:
                text = script(shell, completion_call(), completion_names())
            except NexaError as exc:
                raise Exit(f"nexa: error: {exc}", code=exc.exit_code) from None
            sys.stdout.write(text)
            raise Exit

    def normalize_argv(self, argv: Optional[List[str]]) -> None:
        super().normalize_argv(argv)
        self.argv = hoist_project_flag(list(self.argv), self.namespace)

    def parse_core(self, argv: Optional[List[str]]) -> None:
        keep = sys.dont_write_bytecode
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise self.usage_error(exc) from None
        finally:
            # Invoke turns .pyc writing off here (its --write-pyc: no .pyc beside a user's
            # tasks.py). nexa loads no tasks.py, and without .pyc every module a task imports
            # would be compiled again on every run: about 10 ms of each `nexa status`.
            sys.dont_write_bytecode = keep

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise self.usage_error(exc) from None

    def _make_parser(self) -> Parser:
        """Invoke's parser, given only the commands whose names are words on the command line:
        it deep-copies every context it gets, and building and copying all two dozen cost 3-4
        ms of every run. A word that is not there can neither name a command nor switch to
        one, so the parse is the same. Completion gets them all. The contexts are built as
        ``Collection.to_contexts`` builds them."""
        if self.args.complete.value:
            return super()._make_parser()
        words = set(self.core.unparsed)
        names = self.collection.task_names
        ignore = self.config.tasks.ignore_unknown_help
        contexts = [
            ParserContext(name=name, aliases=aliases, args=self.collection[name].get_arguments(ignore_unknown_help=ignore))
            for name, aliases in names.items()
            if name in words or words.intersection(aliases)
        ]
        return Parser(initial=self.initial_context, contexts=contexts)

    def parse_cleanup(self) -> None:
        if self.args.complete.value:
            complete_words(self)
        try:
            super().parse_cleanup()
        except ParseError as exc:
            raise self.usage_error(exc) from None

    def update_config(self, merge: bool = True) -> None:
        if self.args["no-color"].value:
            from . import style

            style.COLOR = False
        project = self.args.config.value
        if project is not None:
            if not project.strip():
                raise Exit("nexa: error: --config: expected a project file, got ''", code=2)
            from .config import ENV_CONFIG

            os.environ[ENV_CONFIG] = project
            self.args.config.set_value(None, cast=False)  # not an Invoke runtime config
        super().update_config(merge)

    # --- what nexa prints instead of Invoke's texts ---------------------------------------

    def command_names(self) -> List[str]:
        """Every command in the order of ``COMMAND_MODULES`` (a collection's after the plain
        ones of its module), as typed on the command line."""
        return [name for name in ORDER if name in self.namespace.task_names]

    def print_help(self) -> None:
        import shutil

        from .commands.common import columns, summary_line

        width = shutil.get_terminal_size().columns
        names = self.command_names()
        aliases = {name: alias for name, alias_list in self.namespace.task_names.items() for alias in alias_list}
        rows = [(name, summary_line(self.namespace[name])) for name in names]
        print(f"Usage: {self.binary} [--no-color] [-f FILE] COMMAND [options] [-- ...]")
        print()
        print("Commands:")
        left = max(len(name) for name in names)
        for name, text in rows:
            text += f" (also: {aliases[name]})" if name in aliases else ""
            room = max(20, width - left - 5)
            print(f"  {name.ljust(left)}  {text if len(text) <= room else text[: room - 3] + '...'}".rstrip())
        print()
        print("Options (before or after the command):")
        print("\n".join(columns(self.core_help_rows(), width)))
        print()
        print(f"{self.binary} COMMAND --help shows a command's options; {self.binary} help lists the documentation pages.")

    def core_help_rows(self) -> List[Tuple[str, str]]:
        values = {"config": "FILE", "help": "COMMAND", "print-completion-script": "SHELL", "list": ""}
        rows = []
        for arg in sorted(self.core_args(), key=lambda a: a.name):
            if arg.name in HIDDEN_CORE:
                continue
            value = values.get(arg.name, "")
            names = sorted(arg.names, key=len)
            parts = []
            for n in names:
                flag = ("-" if len(n) == 1 else "--") + n
                if value and arg.optional:
                    flag += f" [{value}]" if len(n) == 1 else f"[={value}]"
                elif value:
                    flag += f" {value}" if len(n) == 1 else f"={value}"
                parts.append(flag)
            rows.append((", ".join(parts), arg.help or ""))
        return rows

    def core_summary(self) -> List[str]:
        return ["-f FILE (the project file)", "--no-color", "-h/--help"]

    def print_task_help(self, name: str) -> None:
        import shutil

        from .commands.common import task_help

        width = shutil.get_terminal_size().columns
        print(task_help(name, self.namespace[name], width, self.binary, self.core_summary()))

    def list_tasks(self) -> None:
        for name in self.command_names():
            print(name)

    # --- errors ----------------------------------------------------------------------------

    def usage_error(self, exc: ParseError) -> Exit:
        return usage_error(exc, self.namespace, self.core_args(), list(self.argv))


def usage_error(exc: ParseError, namespace: Optional[Collection] = None, core: Sequence[Argument] = (),
                argv: Sequence[str] = ()) -> Exit:
    """Invoke's parse errors as nexa's own: one line, exit 2 like every other bad input, with
    a "did you mean" for a mistyped command or option (``schema.suggest``)."""
    from .schema import suggest

    text = str(exc)
    context = getattr(exc, "context", None)
    command = getattr(context, "name", None) or None
    unknown = re.match(r"No idea what (.+) is!$", text)
    if unknown:
        word = _literal(unknown.group(1))
        commands = sorted(namespace.task_names) if namespace is not None else []
        commands += [a for aliases in (namespace.task_names.values() if namespace is not None else ()) for a in aliases]
        if word.startswith("-") and len(word) > 1:
            flags = sorted(_long_flags(core) | (_long_flags(context.args.values()) if command else set()))
            where = f" for {command}" if command else ""
            hint = suggest(word.split("=", 1)[0], flags) or f"; {_help_hint(command)} lists them"
            message = f"unknown option {word!r}{where}{hint}"
        elif command and namespace is not None and getattr(namespace[command], "usage_tail", "") and "--" not in argv:
            fixed = _with_separator(argv, word, command)
            message = f"{command}: the command to run goes after --: {fixed}"
        elif command and not suggest(word, commands):
            message = f"{command}: unexpected argument {word!r}; {_help_hint(command)} shows the usage"
        else:
            hint = suggest(word, commands) or "; nexa --help lists them"
            message = f"unknown command {word!r}{hint}"
        return Exit(f"nexa: error: {message}", code=2)
    text = re.sub(r"Flag <Argument: ([\w-]+)(?: \(\w\))?>", lambda m: "--" + m.group(1).replace("_", "-"), text)
    needed = re.match(r"(--[\w-]+) needed value and was not given one!$", text)
    if needed:
        text = f"{needed.group(1)} needs a value"
    no_value = re.match(r"(--[\w-]+) doesn't take any value!$", text)
    if no_value:
        text = f"{no_value.group(1)} takes no value"
    missing = re.match(r"'([\w.-]+)' did not receive required positional arguments: (.+)$", text)
    if missing:
        names = " ".join(n.strip("' ").upper() for n in missing.group(2).split(","))
        text = f"{missing.group(1)}: {names} is required"
    elif command and not text.startswith(command):
        text = f"{command}: {text}"
    return Exit(f"nexa: error: {text}", code=2)


def _literal(text: str) -> str:
    import ast

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.strip("'\"")
    return value if isinstance(value, str) else text


def _long_flags(args: Any) -> set:
    return {"--" + n for arg in args if arg.name not in HIDDEN_CORE for n in arg.names if len(n) > 1}


def _help_hint(command: Optional[str]) -> str:
    return f"nexa {command} --help" if command else "nexa --help"


def _with_separator(argv: Sequence[str], word: str, command: str) -> str:
    """The command line as it should have been: ``--`` before the first stray word."""
    import shlex

    words = [os.path.basename(argv[0]) if argv else "nexa"] + list(argv[1:])
    words[0] = "nexa" if words[0] in ("__main__.py", "-m") else words[0]
    start = words.index(command) + 1 if command in words else 1
    at = words.index(word, start) if word in words[start:] else len(words)
    return " ".join(shlex.quote(w) for w in words[:at] + ["--"] + words[at:])


# --- shell completion ----------------------------------------------------------------------


def completion_call() -> List[str]:
    """How a completion script runs this nexa: the ``nexa`` on PATH when installed; a
    nexa.pyz by its absolute path, through the interpreter running it now (it need not be
    executable or on PATH)."""
    from .resources import running_pyz

    pyz = running_pyz()
    if pyz is not None:
        return [sys.executable, str(pyz)]
    return ["nexa"]


def completion_names() -> List[str]:
    """The command words the script completes: ``nexa``, and a nexa.pyz's own file name
    (``nexa.pyz``, or whatever it was renamed or linked to)."""
    from .resources import running_pyz

    names = ["nexa"]
    if running_pyz() is not None:
        own = os.path.basename(sys.argv[0])
        if own not in names:
            names.append(own)
    return names


def complete_words(prog: "NexaProgram") -> None:
    """``nexa --complete -- nexa sw``: the candidates for the last word, one a line (Invoke's
    completion, with the first word taken as the program whatever its path, and the hidden
    core flags left out)."""
    import contextlib
    import io
    import shlex

    from invoke.completion.complete import complete

    remainder = prog.core.remainder
    try:
        first = shlex.split(remainder)[:1]
    except ValueError:
        first = remainder.split()[:1]
    names = [re.escape(first[0])] if first else ["nexa"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            complete(names=names, core=prog.core, initial_context=prog.initial_context, collection=prog.collection,
                     parser=prog._make_parser())
        except Exit:
            pass
    hidden = {"--" + name for name in HIDDEN_CORE}
    sys.stdout.write("".join(line + "\n" for line in out.getvalue().splitlines() if line not in hidden))
    raise Exit


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
common.PROGRAM = program  # what commands use of the program, without importing this module

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
