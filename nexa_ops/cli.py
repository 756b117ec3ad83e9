"""The ``nexa`` program: one Invoke collection, shared with ``inv`` through ``tasks.py``."""

from invoke import Collection, Program

from . import __version__
from .commands import sweep as _sweep


def build_namespace() -> Collection:
    ns = Collection()
    ns.add_task(_sweep.sweep)
    ns.add_task(_sweep.worker)
    return ns


ns = build_namespace()
program = Program(namespace=ns, name="nexa", binary="nexa", version=__version__)


def main() -> None:
    program.run()


if __name__ == "__main__":
    main()
