"""Expand a sweep definition into dense, ordered tasks.

Order: the grid's Cartesian product in file order (last key varies fastest); for each grid
point, ``random.samples`` draws from one RNG seeded by ``random.seed``; then ``exclude``
rules drop matches and the survivors are numbered 0..N-1. Draws happen before excludes, so
an exclude never shifts another task's values: the same file always gives the same tasks.

Values become argv text in one documented way (``format_value``): booleans ``true``/``false``,
integers in decimal, floats by ``repr`` (shortest round-trip: ``0.1``, ``1e-06``), strings as
they are. Each value is formatted once per sweep, which keeps 100k-task plans fast.
"""

import itertools
import math
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..config import RandomParam, SweepDefinition
from ..errors import ConfigError
from ..structs import frozen

if TYPE_CHECKING:  # random is imported by the sweeps that draw (iter_params): not by every plan
    import random as _random


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest round-trip; '3.0' stays visibly a float
    return str(value)


@frozen
class Task:
    index: int
    params: Dict[str, Any]
    argv: List[str]

    def as_json(self) -> Dict[str, Any]:
        return {"index": self.index, "params": self.params, "argv": self.argv}


class ArgFormatter:
    """Turns ``key, value`` into argv items following ``arg_format``."""

    def __init__(self, fmt: str):
        if " " in fmt:
            first, second = fmt.split(" ", 1)
            self._templates: Tuple[str, ...] = (first, second)
        else:
            self._templates = (fmt,)

    def __call__(self, key: str, text: str) -> List[str]:
        # str.replace, not str.format: a value containing '{x}' must stay literal.
        return [t.replace("{key}", key).replace("{value}", text) for t in self._templates]


def _draw(rng: "_random.Random", param: RandomParam) -> Any:
    if param.kind == "uniform":
        return rng.uniform(param.args[0], param.args[1])
    if param.kind == "log_uniform":
        lo, hi = math.log(param.args[0]), math.log(param.args[1])
        return math.exp(rng.uniform(lo, hi))
    if param.kind == "int_uniform":
        return rng.randint(param.args[0], param.args[1])
    return param.args[rng.randrange(len(param.args))]


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def iter_params(defn: SweepDefinition, used: Optional[List[bool]] = None) -> Iterator[Dict[str, Any]]:
    """Every kept combination, in task order, as a parameter dict.

    Keys (and so argv items) come grid first, then fixed, then random, each in file order.
    ``used`` (one False per ``exclude`` rule) is set True for each rule that matched.
    """
    grid_keys = list(defn.grid)
    product = itertools.product(*(defn.grid[k] for k in grid_keys))
    rand = defn.random
    rng = None
    if rand:
        import random

        rng = random.Random(rand.seed)
    samples = rand.samples if rand else 1
    rules = [list(rule.items()) for rule in defn.exclude]
    fixed = defn.fixed
    for combo in product:
        base = dict(zip(grid_keys, combo))
        base.update(fixed)
        for _ in range(samples):
            params = dict(base)
            if rand:
                for key, param in rand.params.items():
                    params[key] = _draw(rng, param)  # type: ignore[arg-type]
            if rules and any(all(_same(params.get(k), v) for k, v in rule) for rule in rules):
                if used is not None:  # only for excluded combinations: the kept ones pay nothing
                    for i, rule in enumerate(rules):
                        if not used[i] and all(_same(params.get(k), v) for k, v in rule):
                            used[i] = True
                continue
            yield params


#: More tasks than this is a mistake in the sweep file, not a sweep: Slurm's MaxJobCount
#: (default 10,000) is far lower, and the plan alone would take gigabytes.
MAX_TASKS = 5_000_000


def expand(defn: SweepDefinition, prefix: Optional[Sequence[str]] = None, used: Optional[List[bool]] = None) -> List[Task]:
    """The sweep's tasks. ``prefix`` replaces the start of argv (e.g. a torchrun launcher);
    ``used`` as for ``iter_params`` (see ``plan_warnings``)."""
    upper = _upper_bound(defn)
    if upper > MAX_TASKS:
        message = f"{upper:,} combinations: more than {MAX_TASKS:,} tasks is not a sweep nexa plans"
        raise ConfigError(message, str(defn.path or "sweep"), "grid")
    fmt = ArgFormatter(defn.arg_format)
    command = list(prefix or []) + list(defn.command)
    # Pre-render every (key, value) once: the hot loop only concatenates lists.
    cache: Dict[Tuple[str, Any, type], List[str]] = {}
    tasks = []
    append = tasks.append
    for index, params in enumerate(iter_params(defn, used)):
        argv = list(command)
        for key, value in params.items():
            ck = (key, value, type(value))
            items = cache.get(ck)
            if items is None:
                items = cache[ck] = fmt(key, format_value(value))
            argv.extend(items)
        append(Task(index, params, argv))
    return tasks


def _upper_bound(defn: SweepDefinition) -> int:
    """Tasks before excludes, without building any."""
    n = 1
    for values in defn.grid.values():
        n *= len(values)
    return n * (defn.random.samples if defn.random else 1)


def count(defn: SweepDefinition) -> int:
    """Number of tasks without building them when there are no excludes (fast path)."""
    if defn.exclude:
        return sum(1 for _ in iter_params(defn))
    return _upper_bound(defn)


def plan_warnings(defn: SweepDefinition, used: Sequence[bool]) -> List[str]:
    """Mistakes that still make a valid sweep, one line each: an ``[[exclude]]`` rule that
    matched no combination (a value of another type: ``"0.1"`` is not ``0.1``), and a sweep
    without parameters that vary (one task)."""
    where = str(defn.path or "sweep")
    out = [f"{where}: exclude[{i}]: matches no combination, so it excludes nothing" for i, hit in enumerate(used) if not hit]
    if not defn.grid and not (defn.random and defn.random.params):
        what = "with no arguments" if not defn.fixed else "with the [fixed] values only"
        out.append(f"{where}: grid: no [grid] (or [random]) values: the sweep is one task {what}")
    return out
def rung_tasks(defn: SweepDefinition, configs: Sequence[Task], schedule: Any) -> List[Task]:
    """A halving sweep's tasks: every configuration at every rung's budget, task
    ``rung * n + trial`` (``search.Schedule.index``). The budget parameter comes last in the
    params and in argv, formatted like any value."""
    fmt = ArgFormatter(defn.arg_format)
    param = schedule.param
    tasks = []
    for rung in schedule.rungs:
        items = fmt(param, format_value(rung.budget))
        base = rung.rung * schedule.n
        for task in configs:
            params = dict(task.params)
            params[param] = rung.budget
            tasks.append(Task(base + task.index, params, task.argv + items))
    return tasks
