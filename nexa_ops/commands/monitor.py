"""``nexa monitor-config``, ``nexa gpu-exporter`` and ``nexa efficiency``."""

from .common import PROJECT_HELP, RUN_HELP, OptionalRun, echo, nexa_task


@nexa_task(
    iterable=["target"],
    help={
        "out": "Folder to write prometheus.yml, gpu_rules.yml and grafana/ into (default: [monitor] out, 'monitoring').",
        "target": "A node to scrape (hostname or IP, no port); repeat for several. Wins over nexa.toml.",
        "from_slurm": "Scrape every Slurm node (sinfo + scontrol show hostnames) instead of [monitor] targets.",
        "partition": "With --from-slurm: only the nodes of this partition.",
        "exporters": "Comma-separated scrape jobs among dcgm,node,nexa (default: all three).",
        "dcgm_port": "dcgm-exporter port on each node (default 9400).",
        "node_port": "node-exporter port on each node (default 9100).",
        "nexa_port": "nexa gpu-exporter port on each node (default 9835).",
        "scrape_interval": "Prometheus scrape interval, e.g. 15s (default 15s).",
        "evaluation_interval": "Rule evaluation interval, e.g. 15s (default 15s).",
        "prometheus_url": "Prometheus URL for Grafana's datasource (default: [monitor] prometheus_url, else http://localhost:9090).",
        "check": "Run `promtool check config` on the written files.",
        "project": PROJECT_HELP,
        "dry_run": "Print the config that would be written (Slurm is still queried, read-only); write nothing.",
    },
)
def monitor_config(
    c,
    out=None,
    target=None,
    from_slurm=False,
    partition=None,
    exporters=None,
    dcgm_port=None,
    node_port=None,
    nexa_port=None,
    scrape_interval=None,
    evaluation_interval=None,
    prometheus_url=None,
    check=False,
    project=None,
    dry_run=False,
):
    """Write Prometheus config, GPU alert rules, Grafana dashboard.

    Scrape jobs for the dcgm, node and nexa GPU exporters; Grafana provisioning files.
    """
    from ..config import load_config
    from ..monitor import write_monitoring_config

    cfg = load_config(project)
    overrides = {
        "partition": partition,
        "exporters": [e.strip() for e in exporters.split(",") if e.strip()] if exporters is not None else None,
        "dcgm_port": _port(dcgm_port, "--dcgm-port"),
        "node_exporter_port": _port(node_port, "--node-port"),
        "nexa_exporter_port": _port(nexa_port, "--nexa-port"),
        "scrape_interval": scrape_interval,
        "evaluation_interval": evaluation_interval,
        "prometheus_url": prometheus_url,
    }
    plan = write_monitoring_config(target or [], config=cfg, out=out, from_slurm=from_slurm, check=check, dry_run=dry_run, **overrides)
    if dry_run:
        return
    jobs = ", ".join(f"{j.name} (:{j.port})" for j in plan.jobs)
    echo(f"{len(plan.nodes)} node(s) from {plan.source}: {', '.join(plan.nodes)}")
    echo(f"Scrape jobs: {jobs}")
    echo(f"Wrote {plan.config_path} and {plan.rules_path}" + ("; promtool check config: OK" if check else ""))
    echo(f"Grafana: {plan.dashboard_path} (datasource {plan.prometheus_url}), provisioning in {plan.datasource_path.parent.parent}")
    echo(f"Run: prometheus --config.file={plan.config_path}")


def _port(value, flag):
    if value is None:
        return None
    from ..errors import ConfigError

    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{flag}: expected a TCP port number, got {value!r}") from None


LISTEN_HELP = (
    "Address to bind (default 127.0.0.1: this machine only). Another address, e.g. 0.0.0.0 (every interface), "
    "lets anyone who reaches the port read the metrics without authentication or TLS: GPU models and load, "
    "and which Slurm job and user holds each GPU; allow only Prometheus in the firewall."
)


@nexa_task(
    help={
        "port": "TCP port to serve /metrics on (default: [monitor] nexa_exporter_port, 9835).",
        "listen": LISTEN_HELP,
        "timeout": "Seconds one collection (both nvidia-smi runs) may take before the scrape reports failure (default 5).",
        "cache_seconds": "Serve one collection again for this many seconds; concurrent scrapes always share one (default 1).",
        "workers": "Handler threads: at most this many requests served at once (default 8).",
        "request_timeout": "Seconds a client has to send its whole request after it connects (default 10); then it is cut off.",
        "host_label": "Value of the `host` label (default: this machine's short hostname).",
        "no_apps": "Skip the compute-apps query: no per-GPU process count and no Slurm job mapping (nexa_gpu_job_info).",
        "once": "Collect once, print the metrics to stdout and exit (e.g. for node-exporter's textfile collector).",
        "project": PROJECT_HELP,
        "dry_run": "Print the nvidia-smi commands each collection runs and the address; serve nothing.",
    },
)
def gpu_exporter(
    c,
    port=None,
    listen="127.0.0.1",
    timeout=None,
    cache_seconds=None,
    workers=None,
    request_timeout=None,
    host_label=None,
    no_apps=False,
    once=False,
    project=None,
    dry_run=False,
):
    """Serve nvidia-smi GPU metrics for Prometheus, with their jobs.

    With the names of nvidia_gpu_exporter; nexa_gpu_job_info names the Slurm job of each GPU.
    """
    import logging
    import sys

    from .. import gpu_exporter as gx
    from ..config import load_config
    from ..errors import ConfigError
    from ..tools import nvidia_smi
    from .common import parse_float, parse_int

    if port is None:
        port = load_config(project).monitor.nexa_exporter_port
    port = _port(port, "--port")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: expected 0-65535, got {port}")
    timeout = parse_float(gx.DEFAULT_TIMEOUT if timeout is None else timeout, "--timeout")
    if timeout <= 0:
        raise ConfigError(f"--timeout: expected seconds > 0, got {timeout:g}")
    cache = parse_float(gx.DEFAULT_CACHE_SECONDS if cache_seconds is None else cache_seconds, "--cache-seconds", minimum=0)
    workers = parse_int(gx.DEFAULT_WORKERS if workers is None else workers, "--workers", minimum=1)
    request_timeout = parse_float(gx.DEFAULT_REQUEST_TIMEOUT if request_timeout is None else request_timeout, "--request-timeout")
    if request_timeout <= 0:
        raise ConfigError(f"--request-timeout: expected seconds > 0, got {request_timeout:g}")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s nexa gpu-exporter: %(message)s")
    exporter = gx.Exporter(host_label or gx.default_host(), timeout=timeout, apps=not no_apps, cache_seconds=cache)
    if dry_run:
        nvidia_smi.print_commands([gx.GPU_ARGV] + ([] if no_apps else [gx.APPS_ARGV]))
        if not once:
            echo(f"# would serve http://{listen}:{port}/metrics ({workers} handler threads)")
        return
    if once:
        sys.stdout.write(exporter.scrape())
        return
    try:
        server = gx.make_server(listen, port, exporter, workers=workers, request_timeout=request_timeout)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen}:{port}: {exc.strerror or exc}") from None
    bound = server.server_address[1]
    logging.getLogger("nexa.gpu_exporter").info("serving http://%s:%d/metrics (host=%s)", listen, bound, exporter.host)
    try:
        server.serve_forever()
    finally:
        server.server_close()


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    auto_shortflags=False,  # -f is the core --config
    help={
        "run": RUN_HELP,
        "format": "table (default) or json (every figure, and why each unknown one is unknown).",
        "prometheus_url": "Read GPU utilisation from this Prometheus (default: [monitor] prometheus_url; none: unknown).",
        "project": PROJECT_HELP,
    },
)
def efficiency(c, run=None, format="table", prometheus_url=None, project=None):  # noqa: A002 (the option is --format)
    """What a run used of what it held, and its idle GPUs' cost.

    seff-style CPU, memory and time efficiency per task (sacct), GPU utilisation
    (Prometheus), idle GPU-hours and their cost.
    """
    import json as _json

    from .. import efficiency as eff
    from ..config import load_config
    from ..errors import ConfigError

    if format not in ("table", "json"):
        raise ConfigError(f"--format: expected table or json, got {format!r}")
    result = eff.efficiency(run, config=load_config(project), prometheus_url=prometheus_url)
    if format == "json":
        echo(_json.dumps(result.to_json(), indent=2))
    else:
        echo(eff.render_table(result))


TASKS = [monitor_config, gpu_exporter, efficiency]
