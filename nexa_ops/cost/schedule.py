"""The cost of a halving schedule, beside the full grid at the largest budget (pure).

A task's hours (``estimated_hours``, else the time limit) are taken to be what it needs at the
**largest** budget; a rung at budget ``b`` is estimated at ``hours x b / max``. The schedule's
estimate is the sum over its rungs, each at its most trials: that is what ``--max-cost``
checks and the cost manifest records. It is an upper bound: a promoted trial that resumes from
its checkpoint only trains the difference.
"""

from dataclasses import replace
from typing import Any, Dict, List, Optional

from ..structs import frozen
from ..sweep.search import Schedule
from .pricing import Estimate


@frozen
class RungCost:
    rung: int
    trials: int
    budget: Any
    hours: Optional[float]  # per task
    gpu_hours: Optional[float]
    usd: Optional[float]


@frozen
class ScheduleCost:
    """``estimate``: the whole schedule (what is checked and billed); ``full``: every
    configuration at the largest budget; ``rungs``: the schedule table's rows."""

    schedule: Schedule
    estimate: Estimate
    full: Estimate
    rungs: List[RungCost]

    @property
    def share(self) -> Optional[float]:
        """The schedule's compute as a fraction of the full grid's (budget units)."""
        return self.schedule.budget_units / self.schedule.full_units if self.schedule.full_units else None

    def table(self) -> str:
        """The schedule table (rung, trials, budget, GPU-hours) and the full grid beside it."""
        from ..style import layout  # lazy: only the command line draws tables

        s = self.schedule
        lines = [f"Successive halving: {s.n} configuration(s), eta {s.eta}, {s.param} {s.min} -> {s.max}, by {s.metric} ({s.mode})"]
        rows = [[r.rung, r.trials, r.budget, _figure(r.hours), _figure(r.gpu_hours), _money(r.usd)] for r in self.rungs]
        rows.append(
            ["all", s.most_tasks, f"{s.budget_units:g} units", "", _figure(self.estimate.gpu_hours), _money(self.estimate.total_usd)]
        )
        lines.append(layout(["rung", "trials", s.param, "h/task", "gpu-h", "usd"], rows, right=[0, 1, 2, 3, 4, 5]))
        share = f" ({self.share:.0%} of it, in {s.param})" if self.share is not None else ""
        lines.append(
            f"Full grid at {s.param}={s.max}: {s.n} task(s), {s.full_units:g} units, "
            f"{_figure(self.full.gpu_hours)} GPU-hours, {_money(self.full.total_usd, '$')}{share}"
        )
        return "\n".join(lines)

    def as_json(self) -> Dict[str, Any]:
        return {
            "schedule": self.schedule.as_json(),
            "rungs": [
                {
                    "rung": r.rung,
                    "trials": r.trials,
                    "budget": r.budget,
                    "hours": r.hours,
                    "gpu_hours": _round(r.gpu_hours),
                    "usd": _round(r.usd),
                }
                for r in self.rungs
            ],
            "budget_units": self.schedule.budget_units,
            "full_grid": {
                "tasks": self.full.tasks,
                "budget_units": self.schedule.full_units,
                "gpu_hours": _round(self.full.gpu_hours),
                "usd": _round(self.full.total_usd),
            },
        }


def schedule_cost(full: Estimate, schedule: Schedule) -> ScheduleCost:
    """``full`` is the estimate of the ``schedule.n`` configurations at the largest budget."""
    per_gpu = full.nodes * full.gpus_per_node
    rate = full.rate_usd_per_gpu_hour if full.priced else None
    rows = []
    for r in schedule.rungs:
        hours = None if full.hours is None else full.hours * r.budget / schedule.max
        gpu_hours = None if hours is None else r.trials * per_gpu * hours
        rows.append(RungCost(r.rung, r.trials, r.budget, hours, gpu_hours, None if gpu_hours is None or rate is None else gpu_hours * rate))
    tasks = schedule.most_tasks
    # One Estimate for the whole schedule, so --max-cost and the cost manifest work as for any
    # sweep: its hours per task are the mean over the rungs' tasks.
    mean = None if full.hours is None else full.hours * schedule.budget_units / (schedule.max * tasks)
    basis = f"{full.hours_from} x {schedule.param}/{schedule.max}, mean over {len(schedule.rungs)} rungs"
    whole = replace(full, tasks=tasks, hours=mean, hours_from=basis if full.hours is not None else full.hours_from)
    return ScheduleCost(schedule, whole, full, rows)


def _figure(value: Optional[float]) -> str:
    return "?" if value is None else f"{value:,.4g}"


def _money(value: Optional[float], sign: str = "") -> str:
    return "?" if value is None else f"{sign}{value:,.2f}"


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 6)
