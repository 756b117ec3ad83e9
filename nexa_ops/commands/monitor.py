"""``nexa monitor-config`` and ``nexa gpu-exporter``."""

from .common import echo, nexa_task


@nexa_task(
    iterable=["target"],
    help={
        "out": "Folder to write prometheus.yml and gpu_rules.yml into (default: [monitor] out, 'monitoring').",
        "target": "A node to scrape (hostname or IP, no port); repeat for several. Wins over nexa.toml.",
        "from_slurm": "Scrape every Slurm node (sinfo + scontrol show hostnames) instead of [monitor] targets.",
        "partition": "With --from-slurm: only the nodes of this partition.",
        "exporters": "Comma-separated scrape jobs among dcgm,node,nexa (default: all three).",
        "dcgm_port": "dcgm-exporter port on each node (default 9400).",
        "node_port": "node-exporter port on each node (default 9100).",
        "nexa_port": "nexa gpu-exporter port on each node (default 9835).",
        "scrape_interval": "Prometheus scrape interval, e.g. 15s (default 15s).",
        "evaluation_interval": "Rule evaluation interval, e.g. 15s (default 15s).",
        "check": "Run `promtool check config` on the written files.",
        "project": "Project file (default: ./nexa.toml or $NEXA_CONFIG).",
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
    check=False,
    project=None,
    dry_run=False,
):
    """Write a Prometheus config and the GPU alert rules.

    Scrape jobs for the dcgm, node and nexa GPU exporters.
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
    }
    plan = write_monitoring_config(target or [], config=cfg, out=out, from_slurm=from_slurm, check=check, dry_run=dry_run, **overrides)
    if dry_run:
        return
    jobs = ", ".join(f"{j.name} (:{j.port})" for j in plan.jobs)
    echo(f"{len(plan.nodes)} node(s) from {plan.source}: {', '.join(plan.nodes)}")
    echo(f"Scrape jobs: {jobs}")
    echo(f"Wrote {plan.config_path} and {plan.rules_path}" + ("; promtool check config: OK" if check else ""))
    echo(f"Run: prometheus --config.file={plan.config_path}")


def _port(value, flag):
    if value is None:
        return None
    from ..errors import ConfigError

    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{flag}: expected a TCP port number, got {value!r}") from None


@nexa_task(
    help={
        "port": "TCP port to serve /metrics on (default: [monitor] nexa_exporter_port, 9835).",
        "listen": "Address to bind (default 127.0.0.1; use 0.0.0.0 so a Prometheus on another host can scrape).",
        "timeout": "Seconds one nvidia-smi run may take before the scrape reports failure (default 5).",
        "host_label": "Value of the `host` label (default: this machine's short hostname).",
        "no_apps": "Skip the per-GPU compute process count (one nvidia-smi run per scrape instead of two).",
        "once": "Collect once, print the metrics to stdout and exit (e.g. for node-exporter's textfile collector).",
        "project": "Project file (default: ./nexa.toml or $NEXA_CONFIG).",
        "dry_run": "Print the nvidia-smi commands each scrape runs and the address; serve nothing.",
    },
)
def gpu_exporter(c, port=None, listen="127.0.0.1", timeout=None, host_label=None, no_apps=False, once=False, project=None, dry_run=False):
    """Serve nvidia-smi GPU metrics for Prometheus.

    With the names of nvidia_gpu_exporter.
    """
    import logging
    import sys

    from .. import gpu_exporter as gx
    from .. import proc
    from ..config import load_config
    from ..errors import ConfigError

    if port is None:
        port = load_config(project).monitor.nexa_exporter_port
    port = _port(port, "--port")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: expected 0-65535, got {port}")
    try:
        timeout = gx.DEFAULT_TIMEOUT if timeout is None else float(timeout)
    except ValueError:
        raise ConfigError(f"--timeout: expected seconds, got {timeout!r}") from None
    if timeout <= 0:
        raise ConfigError(f"--timeout: expected seconds > 0, got {timeout:g}")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s nexa gpu-exporter: %(message)s")
    exporter = gx.Exporter(host_label or gx.default_host(), timeout=timeout, apps=not no_apps)
    if dry_run:
        proc.run(gx.GPU_ARGV, dry_run=True)
        if not no_apps:
            proc.run(gx.APPS_ARGV, dry_run=True)
        if not once:
            echo(f"# would serve http://{listen}:{port}/metrics")
        return
    if once:
        sys.stdout.write(exporter.scrape())
        return
    try:
        server = gx.make_server(listen, port, exporter)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {listen}:{port}: {exc.strerror or exc}") from None
    bound = server.server_address[1]
    logging.getLogger("nexa.gpu_exporter").info("serving http://%s:%d/metrics (host=%s)", listen, bound, exporter.host)
    try:
        server.serve_forever()
    finally:
        server.server_close()


TASKS = [monitor_config, gpu_exporter]
