"""``inv <task>`` in the repo runs the same collection as ``nexa <task>``, and with the same
executor, so that errors end as one line and an exit code here too."""

import invoke.main

from nexa_ops.cli import NexaExecutor, ns  # noqa: F401

invoke.main.program.executor_class = NexaExecutor  # the running `inv` program
