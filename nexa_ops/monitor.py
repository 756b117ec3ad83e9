"""``nexa monitor-config``: a Prometheus config, the GPU rules and a Grafana dashboard with
its provisioning files, written out for a cluster.

Targets (node hostnames) come from the command line, else ``[monitor] targets`` in
``nexa.toml``, else the Slurm nodes (``sinfo`` + ``scontrol show hostnames``). Rendering is
pure; the only I/O is the optional Slurm query and the final atomic writes, so a bad target
or port never leaves half a config behind.
"""

import json
import os
import re
import string
import urllib.parse
from dataclasses import field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import fs, resources
from .config import MonitorConfig, NexaConfig, load_config
from .errors import ConfigError
from .structs import frozen, mutable
from .tools import promtool

PROMETHEUS_TEMPLATE = "data/prometheus.yml"
RULES_FILE = "data/gpu_rules.yml"
RULES_NAME = "gpu_rules.yml"
CONFIG_NAME = "prometheus.yml"
DASHBOARD_FILE = "data/grafana-dashboard.json"
DATASOURCE_TEMPLATE = "data/grafana-datasource.yml"
DASHBOARDS_TEMPLATE = "data/grafana-dashboards.yml"
DASHBOARD_NAME = "nexa-gpus.json"
GRAFANA_DIR = "grafana"
#: The provisioned Prometheus datasource; the dashboard's ``ds`` variable defaults to it.
DATASOURCE_UID = "nexa-prometheus"
DATASOURCE_NAME = "nexa Prometheus"
#: Grafana's datasource when neither --prometheus-url nor [monitor] prometheus_url is set.
DEFAULT_PROMETHEUS_URL = "http://localhost:9090"

#: exporter key -> (Prometheus job name, MonitorConfig port attribute, what it is)
EXPORTERS: Dict[str, Tuple[str, str, str]] = {
    "dcgm": ("dcgm-exporter", "dcgm_port", "NVIDIA dcgm-exporter"),
    "node": ("node-exporter", "node_exporter_port", "Prometheus node-exporter"),
    "nexa": ("nexa-gpu-exporter", "nexa_exporter_port", "nexa gpu-exporter"),
}

HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])\Z")
DURATION_RE = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+\Z")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
DEFAULT_SCRAPE_TIMEOUT = 10.0

#: MonitorConfig field -> the monitor-config flag that overrides it (for error messages)
FLAGS = {
    "exporters": "--exporters",
    "dcgm_port": "--dcgm-port",
    "node_exporter_port": "--node-port",
    "nexa_exporter_port": "--nexa-port",
    "scrape_interval": "--scrape-interval",
    "evaluation_interval": "--evaluation-interval",
    "partition": "--partition",
    "prometheus_url": "--prometheus-url",
}


@frozen
class ScrapeJob:
    name: str
    exporter: str
    port: int
    targets: List[str]  # "host:port"


@mutable
class MonitorPlan:
    """What ``monitor-config`` writes: both files' text, and where the targets came from."""

    nodes: List[str]
    source: str
    jobs: List[ScrapeJob]
    out_dir: Path
    prometheus_yml: str = ""
    rules_yml: str = ""
    prometheus_url: str = DEFAULT_PROMETHEUS_URL  # Grafana's datasource
    dashboard_json: str = ""
    datasource_yml: str = ""
    dashboards_yml: str = ""
    written: List[Path] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.out_dir / CONFIG_NAME

    @property
    def rules_path(self) -> Path:
        return self.out_dir / RULES_NAME

    @property
    def dashboard_path(self) -> Path:
        return self.out_dir / GRAFANA_DIR / "dashboards" / DASHBOARD_NAME

    @property
    def datasource_path(self) -> Path:
        return self.out_dir / GRAFANA_DIR / "provisioning" / "datasources" / "nexa.yml"

    @property
    def dashboards_provider_path(self) -> Path:
        return self.out_dir / GRAFANA_DIR / "provisioning" / "dashboards" / "nexa.yml"

    def files(self) -> List[Tuple[Path, str]]:
        """Every file with its text, in the order written: the rules before the config that
        loads them, the dashboard before the provider that points at it."""
        return [
            (self.rules_path, self.rules_yml),
            (self.config_path, self.prometheus_yml),
            (self.dashboard_path, self.dashboard_json),
            (self.datasource_path, self.datasource_yml),
            (self.dashboards_provider_path, self.dashboards_yml),
        ]


# --- validation (pure) ------------------------------------------------------------------


def check_settings(mon: MonitorConfig, where: str, keys: Optional[Dict[str, str]] = None) -> None:
    """Refuse bad ``[monitor]`` values with file and key; ``keys`` renames a field in the
    message (a command-line flag, when the value came from there)."""
    keys = keys or {}

    def key(attr: str, suffix: str = "") -> str:
        return keys[attr] + suffix if attr in keys else f"monitor.{attr}{suffix}"

    for i, target in enumerate(mon.targets):
        check_target(target, where, key("targets", f"[{i}]"))
    if not mon.exporters:
        raise ConfigError(f"expected at least one of {', '.join(EXPORTERS)}", where, key("exporters"))
    for i, name in enumerate(mon.exporters):
        if name not in EXPORTERS:
            raise ConfigError(f"unknown exporter {name!r}; expected one of {', '.join(EXPORTERS)}", where, key("exporters", f"[{i}]"))
    for _, attr, _ in EXPORTERS.values():
        port = getattr(mon, attr)
        if not 1 <= port <= 65535:
            raise ConfigError(f"expected a TCP port 1-65535, got {port}", where, key(attr))
    for attr in ("scrape_interval", "evaluation_interval"):
        value = getattr(mon, attr)
        if not DURATION_RE.match(value) or duration_seconds(value) <= 0:
            raise ConfigError(f"expected a Prometheus duration like '15s', '1m' or '1m30s', got {value!r}", where, key(attr))
    if mon.prometheus_url is not None:
        check_prometheus_url(mon.prometheus_url, where, key("prometheus_url"))


_URL_CHARS_RE = re.compile(r"^[A-Za-z0-9._~:/\[\]%-]+\Z")


def check_prometheus_url(url: str, where: str, key: str) -> str:
    """An ``http(s)://host[:port][/path]`` Prometheus URL, without a trailing ``/``.
    No credentials, query or fragment: they do not belong in a shared config file."""
    expected = "expected a Prometheus URL like 'http://prometheus:9090' (http or https, host, optional port and path)"
    if not _URL_CHARS_RE.match(url):
        raise ConfigError(f"{expected}, got {url!r}", where, key)
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or port == 0:
        raise ConfigError(f"{expected}, got {url!r}", where, key)
    return url.rstrip("/")


def check_target(target: str, where: str, key: str) -> None:
    if not HOST_RE.match(target):
        hint = " (give the host only: the port comes from the exporter)" if ":" in target and not target.startswith("[") else ""
        raise ConfigError(f"expected a hostname or IP address, got {target!r}{hint}", where, key)


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration (``1m30s`` -> 90)."""
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def format_duration(seconds: float) -> str:
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{int(round(seconds * 1000))}ms"


# --- rendering (pure) -------------------------------------------------------------------


def scrape_jobs(nodes: Sequence[str], mon: MonitorConfig) -> List[ScrapeJob]:
    """One job per selected exporter, every node as a target on that exporter's port."""
    jobs = []
    for key in EXPORTERS:
        if key not in mon.exporters:
            continue
        name, attr, _ = EXPORTERS[key]
        port = getattr(mon, attr)
        jobs.append(ScrapeJob(name, key, port, [f"{node}:{port}" for node in nodes]))
    return jobs


def _yaml_str(text: str) -> str:
    """A double-quoted YAML scalar (targets are validated, so this only guards quotes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_job(job: ScrapeJob) -> str:
    what = EXPORTERS[job.exporter][2]
    lines = [
        f"  # {what}, port {job.port}",
        f"  - job_name: {_yaml_str(job.name)}",
        "    static_configs:",
        "      - targets:",
    ]
    lines += [f"          - {_yaml_str(t)}" for t in job.targets]
    lines += [
        "    relabel_configs:",
        "      - source_labels: [__address__]",
        "        regex: '(.+):[0-9]+'",
        "        target_label: node",
        "        replacement: '$1'",
    ]
    return "\n".join(lines)


def render_prometheus(jobs: Sequence[ScrapeJob], mon: MonitorConfig, source: str) -> str:
    """Fill the shipped prometheus.yml template."""
    template = string.Template(resources.read_text(PROMETHEUS_TEMPLATE))
    interval = duration_seconds(mon.scrape_interval)
    return template.substitute(
        source=source,
        rules_file=RULES_NAME,
        scrape_interval=mon.scrape_interval,
        scrape_timeout=format_duration(min(interval, DEFAULT_SCRAPE_TIMEOUT)),
        evaluation_interval=mon.evaluation_interval,
        scrape_configs="\n\n".join(render_job(j) for j in jobs),
    )


def rules_text() -> str:
    """The shipped GPU rules, unchanged."""
    return resources.read_text(RULES_FILE)


def dashboard() -> Dict[str, Any]:
    """The shipped Grafana dashboard (``nexa-gpus.json``) as JSON data."""
    return json.loads(resources.read_text(DASHBOARD_FILE))


def dashboard_text() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def render_datasource(url: str, mon: MonitorConfig) -> str:
    """Grafana's datasource provisioning file: the Prometheus at ``url``."""
    template = string.Template(resources.read_text(DATASOURCE_TEMPLATE))
    return template.substitute(
        name=_yaml_str(DATASOURCE_NAME), uid=_yaml_str(DATASOURCE_UID), url=_yaml_str(url), scrape_interval=_yaml_str(mon.scrape_interval)
    )


def render_dashboards_provider(dashboards_dir: Path) -> str:
    """Grafana's dashboard provider file: load the dashboards in ``dashboards_dir``."""
    template = string.Template(resources.read_text(DASHBOARDS_TEMPLATE))
    return template.substitute(path=_yaml_str(os.path.abspath(str(dashboards_dir))))


# --- targets ----------------------------------------------------------------------------


def resolve_nodes(cli_targets: Sequence[str], mon: MonitorConfig, where: str, from_slurm: bool) -> Tuple[List[str], str]:
    """The node list and a words-for-humans source: CLI, then nexa.toml, then Slurm."""
    if cli_targets:
        for i, target in enumerate(cli_targets):
            check_target(target, "command line", f"--target #{i + 1}")
        return list(dict.fromkeys(cli_targets)), "the command line (--target)"
    if mon.targets and not from_slurm:
        return list(dict.fromkeys(mon.targets)), f"{where} [monitor] targets"
    if from_slurm or mon.from_slurm:
        from .tools import slurm

        nodes = slurm.node_names(mon.partition)
        if not nodes:
            part = f" in partition {mon.partition!r}" if mon.partition else ""
            raise ConfigError(f"sinfo lists no nodes{part}; give --target HOST or set [monitor] targets")
        for node in nodes:
            check_target(node, "sinfo", "node name")
        part = f" partition {mon.partition}" if mon.partition else ""
        return nodes, f"the Slurm nodes{part} (sinfo)"
    raise ConfigError(
        "no targets: give --target HOST (repeatable), set [monitor] targets in nexa.toml, or use --from-slurm"
    )


# --- the whole command ------------------------------------------------------------------


def plan_monitor(
    cfg: NexaConfig,
    *,
    targets: Sequence[str] = (),
    out: Optional[str] = None,
    from_slurm: bool = False,
    overrides: Optional[Dict[str, object]] = None,
) -> MonitorPlan:
    """Validate settings, find the nodes and render both files (writes nothing)."""
    import dataclasses

    where = cfg.where
    check_settings(cfg.monitor, where)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    mon = dataclasses.replace(cfg.monitor, **changes)
    check_settings(mon, "command line", {k: FLAGS.get(k, k) for k in changes})
    nodes, source = resolve_nodes(targets, mon, where, from_slurm)
    out_dir = Path(out) if out else cfg.root / mon.out
    jobs = scrape_jobs(nodes, mon)
    plan = MonitorPlan(nodes=nodes, source=source, jobs=jobs, out_dir=out_dir)
    plan.prometheus_yml = render_prometheus(jobs, mon, source)
    plan.rules_yml = rules_text()
    plan.prometheus_url = (mon.prometheus_url or DEFAULT_PROMETHEUS_URL).rstrip("/")
    plan.dashboard_json = dashboard_text()
    plan.datasource_yml = render_datasource(plan.prometheus_url, mon)
    plan.dashboards_yml = render_dashboards_provider(plan.dashboard_path.parent)
    return plan


def write_monitor(plan: MonitorPlan, *, check: bool = False, dry_run: bool = False) -> MonitorPlan:
    """Write every file of ``plan.files()`` (each atomically); ``check`` runs
    ``promtool check config`` (which checks the rule file too) on the result."""
    if dry_run:
        for path, text in plan.files():
            if path == plan.config_path or path == plan.datasource_path:
                print(f"# would write {path}:")
                print(text, end="")
            else:
                print(f"# would write {path} ({len(text)} bytes)")
        if check:
            promtool.check_config(plan.config_path, dry_run=True)
        return plan
    for path, text in plan.files():
        fs.atomic_write_text(path, text)
    plan.written = [plan.config_path, plan.rules_path, plan.dashboard_path, plan.datasource_path, plan.dashboards_provider_path]
    if check:
        promtool.check_config(plan.config_path)
    return plan


def write_monitoring_config(
    targets: Sequence[str] = (),
    *,
    config: Optional[NexaConfig] = None,
    out: Optional[str] = None,
    from_slurm: bool = False,
    check: bool = False,
    dry_run: bool = False,
    **settings: object,
) -> MonitorPlan:
    """Write ``prometheus.yml``, ``gpu_rules.yml`` and the Grafana dashboard with its
    provisioning files for the GPU nodes (``nexa monitor-config``).

    Args:
        targets: nodes to scrape (hostname or IP, no port); they win over ``[monitor] targets``.
        config: the project's ``NexaConfig`` (default: nexa.toml found as the CLI does).
        out: folder for the files (default: ``[monitor] out``, relative to the project); the
            Grafana files go under its ``grafana/``.
        from_slurm: scrape every Slurm node (``sinfo``) instead of the targets.
        check: run ``promtool check config`` on the written files.
        dry_run: print what would be written; write nothing.
        settings: ``[monitor]`` keys to override for this call: ``partition``, ``exporters``,
            ``dcgm_port``, ``node_exporter_port``, ``nexa_exporter_port``,
            ``scrape_interval``, ``evaluation_interval``, ``prometheus_url`` (Grafana's
            datasource; default ``http://localhost:9090``).

    Returns:
        ``MonitorPlan``: the nodes and where they came from, the scrape jobs, every file's
        text and path (``files()``), and ``written`` (empty for a dry run).

    Raises:
        ConfigError: a bad setting or no node to scrape. ToolError: sinfo or promtool failed.
    """
    import dataclasses

    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(MonitorConfig)})
    if unknown:
        raise ConfigError(f"write_monitoring_config: unknown [monitor] setting(s): {', '.join(unknown)}")
    cfg = config or load_config()
    plan = plan_monitor(cfg, targets=list(targets), out=out, from_slurm=from_slurm, overrides=settings)
    return write_monitor(plan, check=check, dry_run=dry_run)
