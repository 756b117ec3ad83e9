"""The estimate's front end: price tables from files, sweeps or resources from files, and
the ``--max-cost`` guard. The arithmetic itself is ``pricing`` (pure)."""

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from .. import toml
from ..config import NexaConfig, Resources, SweepDefinition, load_config, parse_sweep
from ..errors import ConfigError, Refused
from ..resources import read_text
from ..schema import from_table
from ..sweep.expand import count
from .pricing import Estimate, PriceTable, estimate, merge_tables, parse_price_table

if TYPE_CHECKING:  # the halving modules are imported by halving_cost only: every plan loads this module
    from .schedule import ScheduleCost

ConfigLike = Union[NexaConfig, str, Path, None]


@lru_cache(maxsize=None)
def shipped_prices() -> PriceTable:
    """``nexa_ops/data/prices.toml``, read from the checkout or from inside nexa.pyz."""
    return parse_price_table(toml.loads(read_text("data/prices.toml"), "nexa_ops/data/prices.toml"), "nexa_ops/data/prices.toml")


def load_prices(config: NexaConfig) -> PriceTable:
    """The shipped table, with ``[cost] prices`` (a file relative to nexa.toml) laid over it."""
    table = shipped_prices()
    if config.cost.prices:
        path = (config.root / os.path.expanduser(config.cost.prices)).resolve()
        if not path.is_file():
            where = config.where
            raise ConfigError(f"price table {path} not found (a TOML file, relative to nexa.toml)", where, "cost.prices")
        table = merge_tables(table, parse_price_table(toml.load(path), str(path)))
    return table


def _config(config: ConfigLike) -> NexaConfig:
    return config if isinstance(config, NexaConfig) else load_config(config)


def estimate_cost(
    what: Union[SweepDefinition, Resources, str, Path],
    config: ConfigLike = None,
    *,
    tasks: Optional[int] = None,
    provider: Optional[str] = None,
    strict: bool = False,
) -> Estimate:
    """The cost estimate of a sweep (file or definition) or of ``tasks`` jobs of ``Resources``.

    A sweep with ``[search]`` (successive halving) is estimated over its whole schedule, each
    rung's hours scaled by its budget (``halving_cost`` has the table).

    Args:
        what: a sweep file, a ``SweepDefinition``, a ``Resources``, or any TOML file with a
            ``[resources]`` table (counted as one task).
        config: ``NexaConfig`` or the path of nexa.toml (default: found as the CLI does).
        tasks: the number of tasks (default: the sweep's expanded size, or 1; with it, a
            halving sweep is priced as ``tasks`` plain tasks).
        provider: price this provider instead of ``[cost] provider``.
        strict: raise ``ConfigError`` when no figure can be made (no GPU type, hours, price)
            (default False: return the estimate with ``problem`` set).

    Returns:
        Estimate (``nexa_ops.cost.pricing.Estimate``): ``gpu_type``, ``provider``, ``sku``/``region``,
        ``rate_usd_per_gpu_hour`` and ``rate_from``, ``tasks``, ``nodes``, ``gpus_per_node``, ``hours``
        and ``hours_from``, ``gpu_hours`` and ``total_usd`` (None when no figure can be made, then
        ``problem`` says why and ``priced`` is False).

    Raises:
        ConfigError: a file that cannot be read or parsed, or is neither a sweep nor a ``[resources]``
            file; a bad ``[cost]`` section or price table; with ``strict``, no figure.
    """
    cfg = _config(config)
    if isinstance(what, (str, Path)):
        what = load_target(Path(what))
    if isinstance(what, SweepDefinition):
        res = what.resources
        if tasks is None and what.search is not None:
            found = halving_cost(what, cfg, provider=provider)
            return found.estimate.require() if strict else found.estimate
        if tasks is None:
            tasks = count(what)
    else:
        res = what
    est = estimate(res, tasks if tasks is not None else 1, load_prices(cfg), cfg.cost, provider=provider, where=cfg.where)
    return est.require() if strict else est


def halving_cost(defn: SweepDefinition, config: ConfigLike = None, *, provider: Optional[str] = None) -> "ScheduleCost":
    """A halving sweep's cost: per rung (trials x hours x budget / max), the whole schedule,
    and the full grid at the largest budget beside it."""
    spec = defn.search
    if spec is None:
        raise ConfigError("not a halving sweep: no [search] table", str(defn.path or "sweep"), "search")
    from ..sweep import search  # lazy: see the imports
    from .schedule import schedule_cost

    cfg = _config(config)
    n = count(defn)
    plan = search.plan(n, spec.budget.param, spec.metric, spec.mode, spec.eta, spec.budget.min, spec.budget.max)
    full = estimate(defn.resources, n, load_prices(cfg), cfg.cost, provider=provider, where=cfg.where)
    return schedule_cost(full, plan)


def load_target(path: Path) -> Union[SweepDefinition, Resources]:
    """A sweep file, or any TOML file with a ``[resources]`` table."""
    table = toml.load(path)
    if "command" in table or "name" in table or "grid" in table:
        return parse_sweep(table, str(path), path)
    if isinstance(table.get("resources"), dict):
        res = from_table(Resources, table["resources"], str(path), "resources")
        res.validate(str(path))
        return res
    raise ConfigError("expected a sweep file or a file with a [resources] table", str(path))


def check_max_cost(estimate: Estimate, max_cost: Optional[float]) -> None:
    """``Refused`` (exit 3) when the estimate is above ``max_cost`` USD or cannot be made."""
    if max_cost is None:
        return
    if not math.isfinite(max_cost) or max_cost < 0:  # nan would pass every comparison below
        raise ConfigError(f"--max-cost: expected a finite number >= 0 (USD), got {max_cost:g}")
    if not estimate.priced:
        raise Refused(f"cannot check --max-cost ${max_cost:,.2f}: {estimate.problem}; nothing submitted")
    if estimate.total_usd > max_cost:  # type: ignore[operator]
        raise Refused(
            f"estimated cost ${estimate.total_usd:,.2f} is above --max-cost ${max_cost:,.2f} "
            f"({estimate.formula()} at ${estimate.rate_usd_per_gpu_hour:g}/GPU-hour); nothing submitted"
        )
