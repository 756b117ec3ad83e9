"""The ``nexa`` program: one Invoke collection, shared with ``inv`` through ``tasks.py``.

Each module in ``COMMAND_MODULES`` exposes ``TASKS`` (top-level tasks) and/or ``COLLECTIONS``
(Invoke sub-collections such as ``cost``). Those modules import only Invoke at load time;
the library behind a task is imported when the task runs, which keeps ``--help`` fast.
"""

import importlib

from invoke import Collection, Program

from . import __version__

COMMAND_MODULES = ("sweep", "launch", "track", "cost", "sync", "teardown", "containers", "monitor", "pyz")


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


ns = build_namespace()
program = Program(namespace=ns, name="nexa", binary="nexa", version=__version__)


def main() -> None:
    try:
        program.run()
    except BrokenPipeError:  # `nexa ... | head`: the reader left early; not a failure to report
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(141)


if __name__ == "__main__":
    main()
