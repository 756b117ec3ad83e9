"""Prices and the estimate: price lookup, ``tasks x nodes x GPUs x hours x rate``.

Pure: the price table arrives as an already parsed TOML table, so everything here is
testable without files or tools.

The estimate is ``tasks x nodes x GPUs per node x hours x rate``; hours are
``[resources] estimated_hours`` when set, else the Slurm time limit (an upper bound), and the
estimate says which. When a figure cannot be made (no GPU type, no hours, no price) the
``Estimate`` carries the reason in ``problem`` instead of a guess: callers that must have a
number (``cost.estimate``, ``--max-cost``) refuse with that reason.
"""

import re
from dataclasses import field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import CostConfig, Resources
from ..errors import ConfigError
from ..schema import from_table
from ..structs import frozen

CURRENCY = "USD"
FROM_TABLE = "price table"
FROM_CONFIG = "nexa.toml [cost.rates]"


@frozen
class PriceRow:
    """One instance type's on-demand price, with where and when it was read."""

    gpu_type: str
    provider: str
    usd_per_gpu_hour: float
    sku: str = "-"
    region: str = "-"
    source: str = "-"
    fetched: str = "-"
    gpus_per_instance: Optional[int] = None
    usd_per_instance_hour: Optional[float] = None


@frozen
class _GpuNames:
    aliases: List[str] = field(default_factory=list)


@frozen
class _PriceFile:
    schema: int = 1
    currency: str = CURRENCY
    gpus: Dict[str, _GpuNames] = field(default_factory=dict)
    price: List[PriceRow] = field(default_factory=list)


def norm(name: str) -> str:
    """Compare GPU names ignoring case, '-', '_', ' ' and '.': 'A100_80GB' == 'a100-80gb'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@frozen
class PriceTable:
    """Rows plus the accepted names of each GPU type (``names``: normalised -> canonical)."""

    rows: Tuple[PriceRow, ...]
    names: Mapping[str, str]

    def gpu_types(self) -> List[str]:
        return sorted(set(self.names.values()) | {r.gpu_type for r in self.rows})

    def resolve(self, name: str) -> str:
        """The canonical GPU type for ``name``; an unknown name is returned unchanged (a GPU
        priced only through ``[cost.rates]``); an ambiguous prefix is a ``ConfigError``."""
        key = norm(name)
        if key in self.names:
            return self.names[key]
        canon = {norm(t): t for t in self.gpu_types()}
        matches = sorted({t for k, t in canon.items() if k.startswith(key)}) if key else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ConfigError(f"GPU type {name!r} is ambiguous: say one of {', '.join(matches)}")
        return name

    def rows_for(self, gpu_type: str) -> List[PriceRow]:
        return [r for r in self.rows if r.gpu_type == gpu_type]

    def providers(self, gpu_type: Optional[str] = None) -> List[str]:
        return sorted({r.provider for r in self.rows if gpu_type is None or r.gpu_type == gpu_type})


def parse_price_table(table: Dict[str, Any], where: str) -> PriceTable:
    """Validate a parsed price TOML (``data/prices.toml`` or a ``[cost] prices`` file)."""
    raw = from_table(_PriceFile, table, where)
    if raw.schema != 1:
        raise ConfigError(f"expected 1, got {raw.schema}", where, "schema")
    if raw.currency != CURRENCY:
        raise ConfigError(f'expected "USD" (prices are compared and summed in USD), got {raw.currency!r}', where, "currency")
    names: Dict[str, str] = {}
    for gpu, spec in raw.gpus.items():
        for alias in [gpu] + list(spec.aliases):
            other = names.setdefault(norm(alias), gpu)
            if other != gpu:
                raise ConfigError(f"name {alias!r} already means {other!r}", where, f"gpus.{gpu}.aliases")
    seen = set()
    for i, row in enumerate(raw.price):
        key = f"price[{i}]"
        if row.usd_per_gpu_hour < 0:
            raise ConfigError("expected a number >= 0", where, f"{key}.usd_per_gpu_hour")
        if row.gpus_per_instance is not None and row.gpus_per_instance < 1:
            raise ConfigError("expected an integer >= 1", where, f"{key}.gpus_per_instance")
        if not row.gpu_type or not row.provider:
            raise ConfigError("expected non-empty gpu_type and provider", where, key)
        if (row.gpu_type, row.provider, row.sku) in seen:
            raise ConfigError(f"duplicate row for {row.gpu_type} / {row.provider} / {row.sku}", where, key)
        seen.add((row.gpu_type, row.provider, row.sku))
        names.setdefault(norm(row.gpu_type), row.gpu_type)
    return PriceTable(tuple(raw.price), names)


def merge_tables(base: PriceTable, extra: PriceTable) -> PriceTable:
    """``extra`` (a user's table) replaces ``base`` rows of the same GPU type and provider."""
    replaced = {(r.gpu_type, r.provider) for r in extra.rows}
    rows = tuple(r for r in base.rows if (r.gpu_type, r.provider) not in replaced) + extra.rows
    names = dict(base.names)
    names.update(extra.names)
    return PriceTable(rows, names)


def check_cost_config(cfg: CostConfig, table: PriceTable, where: str) -> Dict[str, float]:
    """Validate ``[cost]``; return ``rates`` keyed by canonical GPU type."""
    if cfg.currency != CURRENCY:
        raise ConfigError(f'expected "USD" (the price table and the reports are in USD), got {cfg.currency!r}', where, "cost.currency")
    if cfg.max_cost is not None and cfg.max_cost < 0:
        raise ConfigError("expected a number >= 0 (USD)", where, "cost.max_cost")
    rates: Dict[str, float] = {}
    for key, value in cfg.rates.items():
        if value < 0:
            raise ConfigError("expected a number >= 0 (USD per GPU-hour)", where, f"cost.rates.{key}")
        try:
            rates[table.resolve(key)] = value
        except ConfigError as exc:
            raise ConfigError(str(exc), where, f"cost.rates.{key}") from None
    return rates


def pick_row(rows: Sequence[PriceRow], gpus_per_node: int) -> PriceRow:
    """The cheapest row whose instance holds a whole node's GPUs, else the cheapest row."""
    fits = [r for r in rows if r.gpus_per_instance is None or r.gpus_per_instance >= gpus_per_node]
    return min(fits or rows, key=lambda r: (r.usd_per_gpu_hour, r.provider, r.sku))


@frozen
class Estimate:
    """What a submission should cost, and on what basis. ``problem`` says why there is no
    figure (then ``total_usd`` is None)."""

    gpu_type: Optional[str]
    provider: Optional[str]
    rate_usd_per_gpu_hour: Optional[float]
    tasks: int
    nodes: int
    gpus_per_node: int
    hours: Optional[float]
    hours_from: str  # "estimated_hours" | "time limit" | "none"
    rate_from: str = FROM_TABLE  # FROM_TABLE | FROM_CONFIG | "no GPUs" | "none"
    sku: Optional[str] = None
    region: Optional[str] = None
    source: Optional[str] = None
    fetched: Optional[str] = None
    currency: str = CURRENCY
    alternatives: Tuple[PriceRow, ...] = ()
    problem: Optional[str] = None

    @property
    def gpu_hours(self) -> Optional[float]:
        if self.gpus_per_node == 0:
            return 0.0
        if self.hours is None:
            return None
        return self.tasks * self.nodes * self.gpus_per_node * self.hours

    @property
    def total_usd(self) -> Optional[float]:
        if self.problem is not None or self.gpu_hours is None or self.rate_usd_per_gpu_hour is None:
            return None
        return self.gpu_hours * self.rate_usd_per_gpu_hour

    @property
    def priced(self) -> bool:
        return self.total_usd is not None

    def require(self) -> "Estimate":
        """Self, or a ``ConfigError`` with the reason there is no figure."""
        if not self.priced:
            raise ConfigError(f"no cost estimate: {self.problem or 'unknown price'}")
        return self

    def as_json(self) -> Dict[str, Any]:
        return {
            "gpu_type": self.gpu_type,
            "provider": self.provider,
            "sku": self.sku,
            "region": self.region,
            "price_source": self.source,
            "price_fetched": self.fetched,
            "rate_usd_per_gpu_hour": self.rate_usd_per_gpu_hour,
            "rate_from": self.rate_from,
            "tasks": self.tasks,
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "hours": self.hours,
            "hours_from": self.hours_from,
            "gpu_hours": _round(self.gpu_hours),
            "total_usd": _round(self.total_usd),
            "currency": self.currency,
            "problem": self.problem,
        }

    def formula(self) -> str:
        hours = "?" if self.hours is None else f"{self.hours:g} h ({self.hours_from})"
        gpu_hours = "?" if self.gpu_hours is None else f"{self.gpu_hours:,.2f} GPU-hours"
        return f"{self.tasks} task(s) x {self.nodes} node(s) x {self.gpus_per_node} GPU(s) x {hours} = {gpu_hours}"

    def table(self) -> str:
        """A SkyPilot-like table: one row per provider with the chosen one starred."""
        from ..style import layout

        lines = [f"Cost estimate: {self.formula()}"]
        rows = []
        for r in self.alternatives:
            chosen = r.provider == self.provider and r.sku == self.sku and self.rate_from == FROM_TABLE
            rows.append(
                [
                    r.gpu_type,
                    r.provider,
                    r.sku,
                    r.region,
                    _money(r.usd_per_gpu_hour),
                    _money(self._at(r.usd_per_gpu_hour)),
                    "*" if chosen else "",
                ]
            )
        if self.rate_from == FROM_CONFIG:
            rows.append([self.gpu_type, self.provider or "-", "-", "-", _money(self.rate_usd_per_gpu_hour), _money(self.total_usd), "*"])
        if rows:
            headers = ["gpu", "provider", "sku", "region", "$/gpu-h", "total ($)", "chosen"]
            lines.append(layout(headers, rows, right=[4, 5]))
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        if not self.priced:
            return f"Estimated cost: unknown ({self.problem})"
        if self.rate_from == "no GPUs":
            return "Estimated cost: $0.00 (no GPUs requested)"
        basis = f"{self.provider} {self.sku}" if self.rate_from == FROM_TABLE else f"{self.provider or 'custom'} rate from {FROM_CONFIG}"
        if self.rate_from == FROM_TABLE and self.fetched:
            basis += f", price read {self.fetched}"
        return f"Estimated cost: ${self.total_usd:,.2f} ({basis})"

    def _at(self, rate: float) -> Optional[float]:
        return None if self.gpu_hours is None else self.gpu_hours * rate


def _money(value: Optional[float]) -> str:
    return "?" if value is None else f"{value:,.2f}"


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 6)


def estimate(
    res: Resources,
    tasks: int,
    table: PriceTable,
    cfg: CostConfig,
    *,
    provider: Optional[str] = None,
    where: str = "nexa.toml",
) -> Estimate:
    """The estimate for ``tasks`` copies of ``res``.

    ``provider`` (e.g. ``--provider``) overrides ``[cost] provider``; ``[cost.rates]`` wins over
    the table unless a different provider was asked for explicitly (to compare prices).
    """
    rates = check_cost_config(cfg, table, where)
    if res.estimated_hours is not None:
        hours, hours_from = res.estimated_hours, "estimated_hours"  # type: Optional[float], str
    elif res.time is not None:
        hours, hours_from = res.time_hours(), "time limit"
    else:
        hours, hours_from = None, "none"
    base = dict(tasks=tasks, nodes=res.nodes, gpus_per_node=res.gpus_per_node, hours=hours, hours_from=hours_from)
    if res.gpus_per_node == 0:
        return Estimate(None, None, 0.0, rate_from="no GPUs", **base)
    problem = None
    if hours is None:
        problem = "no hours: set estimated_hours or time in [resources]"
    name = res.gpu_type or cfg.gpu_type
    if not name:
        return Estimate(
            None,
            provider or cfg.provider,
            None,
            rate_from="none",
            problem="no GPU type: set gpu_type in [resources] or [cost] in nexa.toml",
            **base,
        )
    try:
        gpu = table.resolve(name)
    except ConfigError as exc:
        return Estimate(name, provider or cfg.provider, None, rate_from="none", problem=str(exc), **base)
    chosen = provider or cfg.provider
    candidates = table.rows_for(gpu)
    alternatives = tuple(
        sorted(
            (pick_row([r for r in candidates if r.provider == p], res.gpus_per_node) for p in table.providers(gpu)),
            key=lambda r: (r.usd_per_gpu_hour, r.provider),
        )
    )
    if gpu in rates and (provider is None or provider == cfg.provider):
        return Estimate(gpu, chosen, rates[gpu], rate_from=FROM_CONFIG, alternatives=alternatives, problem=problem, **base)
    rows = [r for r in candidates if chosen is None or r.provider == chosen]
    if not rows:
        if not candidates:
            known = ", ".join(table.gpu_types())
            problem = f'no price for GPU type {gpu!r} (the table knows {known}); set [cost.rates] "{gpu}" = USD_PER_GPU_HOUR'
        else:
            problem = (
                f"no price for {gpu} from provider {chosen!r} (the table has {', '.join(table.providers(gpu))}); "
                f'set [cost.rates] "{gpu}" = USD_PER_GPU_HOUR for your own rate'
            )
        return Estimate(gpu, chosen, None, rate_from="none", alternatives=alternatives, problem=problem, **base)
    row = pick_row(rows, res.gpus_per_node)
    return Estimate(
        gpu,
        row.provider,
        row.usd_per_gpu_hour,
        rate_from=FROM_TABLE,
        sku=row.sku,
        region=row.region,
        source=row.source,
        fetched=row.fetched,
        alternatives=alternatives,
        problem=problem,
        **base,
    )
