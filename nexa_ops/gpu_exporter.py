"""``nexa gpu-exporter``: GPU metrics for Prometheus from ``nvidia-smi``, standard library only.

For clusters without dcgm-exporter. Every scrape runs ``nvidia-smi --query-gpu=...
--format=csv,noheader,nounits`` (through ``proc.run``, with a timeout) and answers in the
Prometheus text format with the metric names of utkuozdemir/nvidia_gpu_exporter, so the
same rules and dashboards work with either. A missing, slow or failing ``nvidia-smi`` gives
``nvidia_smi_last_collect_success 0`` and a log line, never a crash or a hung scrape.
"""

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Dict, List, Optional, Tuple

from . import proc
from .errors import NexaError

log = logging.getLogger("nexa.gpu_exporter")

DEFAULT_PORT = 9835
DEFAULT_LISTEN = "127.0.0.1"
DEFAULT_TIMEOUT = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIB = 1024 * 1024

#: Identity fields, read first; they become labels.
LABEL_FIELDS = ["index", "uuid", "name", "driver_version"]

#: (nvidia-smi field, metric name, scale to the metric's unit, help)
METRIC_FIELDS: List[Tuple[str, str, float, str]] = [
    ("utilization.gpu", "nvidia_smi_utilization_gpu_ratio", 0.01, "utilization.gpu [%] as a ratio 0-1"),
    ("utilization.memory", "nvidia_smi_utilization_memory_ratio", 0.01, "utilization.memory [%] as a ratio 0-1"),
    ("memory.total", "nvidia_smi_memory_total_bytes", MIB, "memory.total [MiB] in bytes"),
    ("memory.used", "nvidia_smi_memory_used_bytes", MIB, "memory.used [MiB] in bytes"),
    ("memory.free", "nvidia_smi_memory_free_bytes", MIB, "memory.free [MiB] in bytes"),
    ("temperature.gpu", "nvidia_smi_temperature_gpu", 1.0, "temperature.gpu [C]"),
    ("power.draw", "nvidia_smi_power_draw_watts", 1.0, "power.draw [W]"),
    ("power.limit", "nvidia_smi_power_limit_watts", 1.0, "power.limit [W]"),
    ("fan.speed", "nvidia_smi_fan_speed_ratio", 0.01, "fan.speed [%] as a ratio 0-1"),
    ("clocks.current.sm", "nvidia_smi_clocks_current_sm_clock_hz", 1e6, "clocks.current.sm [MHz] in Hz"),
]

QUERY_GPU = LABEL_FIELDS + [f for f, _, _, _ in METRIC_FIELDS]
GPU_ARGV = ["nvidia-smi", "--query-gpu=" + ",".join(QUERY_GPU), "--format=csv,noheader,nounits"]
APPS_ARGV = ["nvidia-smi", "--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"]

#: What nvidia-smi prints for a value it cannot give (e.g. fan speed on a passively cooled GPU).
UNAVAILABLE = {"[n/a]", "n/a", "[not supported]", "[unknown error]", "[insufficient permissions]", "[gpu is lost]", ""}


@dataclass
class Gpu:
    index: str
    uuid: str  # without nvidia-smi's "GPU-" prefix, as nvidia_gpu_exporter labels it
    name: str
    driver_version: str
    values: Dict[str, float] = field(default_factory=dict)  # metric name -> value
    compute_apps: Optional[int] = None


@dataclass
class Collection:
    """One run of nvidia-smi: the GPUs, or why there are none."""

    success: bool
    gpus: List[Gpu] = field(default_factory=list)
    exit_code: int = 0
    error: str = ""
    duration: float = 0.0
    timestamp: float = 0.0


class ParseError(ValueError):
    pass


# --- parsing (pure) ---------------------------------------------------------------------


def parse_value(text: str) -> Optional[float]:
    """A number from a ``nounits`` field, or None for ``[N/A]`` and friends."""
    text = text.strip()
    if text.lower() in UNAVAILABLE:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_gpus(stdout: str) -> List[Gpu]:
    """Rows of ``--query-gpu=QUERY_GPU --format=csv,noheader,nounits`` (``", "``-separated)."""
    gpus = []
    for lineno, line in enumerate(stdout.splitlines(), 1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(QUERY_GPU):
            raise ParseError(f"line {lineno}: expected {len(QUERY_GPU)} fields, got {len(cells)}: {line[:120]!r}")
        index, uuid, name, driver = cells[:4]
        if not index.isdigit():
            raise ParseError(f"line {lineno}: expected a GPU index, got {index!r}")
        gpu = Gpu(index=index, uuid=uuid[4:] if uuid.startswith("GPU-") else uuid, name=name, driver_version=driver)
        for (_, metric, scale, _), cell in zip(METRIC_FIELDS, cells[4:]):
            value = parse_value(cell)
            if value is not None:
                gpu.values[metric] = value * scale
        gpus.append(gpu)
    return gpus


def count_apps(stdout: str) -> Dict[str, int]:
    """Compute processes per GPU uuid (no ``GPU-`` prefix) from ``--query-compute-apps``."""
    counts: Dict[str, int] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < 2 or not cells[1].isdigit():
            continue  # blank line, or "No running processes found"
        uuid = cells[0][4:] if cells[0].startswith("GPU-") else cells[0]
        counts[uuid] = counts.get(uuid, 0) + 1
    return counts


# --- collecting (runs nvidia-smi) -------------------------------------------------------


def _first_line(*texts: Optional[str]) -> str:
    for text in texts:
        for line in (text or "").splitlines():
            if line.strip():
                return line.strip()
    return ""


def _run(argv: List[str], timeout: float) -> Tuple[int, str, str]:
    """(exit code, stdout, error) without raising: nvidia-smi prints its failures on stdout."""
    try:
        result = proc.run(argv, timeout=timeout, success_codes=range(-64, 256), hint="the NVIDIA driver utilities")
    except NexaError as exc:  # not on PATH, timed out, killed by a signal
        code = getattr(exc, "returncode", 127)
        return code, "", str(exc).splitlines()[0]
    if result.returncode != 0:
        why = _first_line(result.stdout, result.stderr) or "no output"
        return result.returncode, result.stdout or "", f"nvidia-smi exited with {result.returncode}: {why}"
    return 0, result.stdout or "", ""


def collect(timeout: float = DEFAULT_TIMEOUT, apps: bool = True) -> Collection:
    """Run nvidia-smi once (twice with ``apps``) within ``timeout`` seconds in all; never raises."""
    start = time.monotonic()
    now = time.time()
    code, out, error = _run(GPU_ARGV, timeout)
    gpus: List[Gpu] = []
    if not error:
        try:
            gpus = parse_gpus(out)
        except ParseError as exc:
            error = f"cannot read nvidia-smi output: {exc}"
    if not error and apps and gpus:
        left = max(0.1, timeout - (time.monotonic() - start))
        apps_code, apps_out, apps_error = _run(APPS_ARGV, left)
        if apps_error:
            log.warning("compute-apps query failed (GPU metrics still served): %s", apps_error)
        else:
            counts = count_apps(apps_out)
            for gpu in gpus:
                gpu.compute_apps = counts.get(gpu.uuid, 0)
    duration = time.monotonic() - start
    if error:
        log.warning("collection failed: %s", error)
        return Collection(False, [], code, error, duration, now)
    return Collection(True, gpus, 0, "", duration, now)


# --- text format (pure) -----------------------------------------------------------------


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if value != value:
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _labels(pairs: List[Tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: List[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: List[Tuple[List[Tuple[str, str]], float]]) -> None:
        if not samples:
            return
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(labels) if labels else ''} {format_value(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass
class Stats:
    """Counters kept across scrapes by the server."""

    failed: int = 0
    last_success: float = 0.0


def render(col: Collection, host: str, stats: Optional[Stats] = None) -> str:
    """The scrape body. GPU series carry ``gpu`` (index), ``uuid``, ``name`` and ``host``."""
    stats = stats or Stats(failed=0 if col.success else 1, last_success=col.timestamp if col.success else 0.0)
    w = _Writer()

    def ident(g: Gpu) -> List[Tuple[str, str]]:
        return [("gpu", g.index), ("uuid", g.uuid), ("name", g.name), ("host", host)]

    w.family(
        "nvidia_smi_gpu_info",
        "gauge",
        "A metric with a constant '1' value labeled by gpu index, uuid, name, host and driver_version.",
        [(ident(g) + [("driver_version", g.driver_version)], 1) for g in col.gpus],
    )
    for _, metric, _, help_text in METRIC_FIELDS:
        w.family(metric, "gauge", help_text, [(ident(g), g.values[metric]) for g in col.gpus if metric in g.values])
    w.family(
        "nvidia_smi_compute_apps",
        "gauge",
        "Number of processes with a compute context on the GPU.",
        [(ident(g), g.compute_apps) for g in col.gpus if g.compute_apps is not None],
    )
    me = [("host", host)]
    w.family("nvidia_smi_gpus", "gauge", "Number of GPUs nvidia-smi listed.", [(me, len(col.gpus))] if col.success else [])
    w.family(
        "nvidia_smi_last_collect_success",
        "gauge",
        "Whether the most recent collection succeeded (1) or not (0)",
        [(me, 1 if col.success else 0)],
    )
    w.family(
        "nvidia_smi_last_collect_success_timestamp_seconds",
        "gauge",
        "Unix timestamp of the most recent successful collection",
        [(me, stats.last_success)] if stats.last_success else [],
    )
    w.family("nvidia_smi_last_collect_duration_seconds", "gauge", "Duration of the most recent collection", [(me, round(col.duration, 6))])
    w.family("nvidia_smi_failed_scrapes_total", "counter", "Number of failed collections", [(me, stats.failed)])
    w.family("nvidia_smi_command_exit_code", "gauge", "Exit code of the most recent nvidia-smi run", [(me, col.exit_code)])
    return w.text()


# --- the HTTP server ---------------------------------------------------------------------


class Exporter:
    """State shared by the request threads: one nvidia-smi run at a time, counters."""

    def __init__(self, host: str, timeout: float = DEFAULT_TIMEOUT, apps: bool = True):
        self.host = host
        self.timeout = timeout
        self.apps = apps
        self.stats = Stats()
        self._lock = threading.Lock()

    def scrape(self, budget: Optional[float] = None) -> str:
        """Collect and render; ``budget`` (Prometheus's scrape timeout) caps the wait."""
        timeout = self.timeout if budget is None else max(0.5, min(self.timeout, budget - 0.5))
        if not self._lock.acquire(timeout=timeout):
            col = Collection(False, exit_code=124, error="another scrape is still running nvidia-smi", timestamp=time.time())
            log.warning("collection skipped: %s", col.error)
        else:
            try:
                col = collect(timeout, self.apps)
            finally:
                self._lock.release()
        if col.success:
            self.stats.last_success = col.timestamp
        else:
            self.stats.failed += 1
        return render(col, self.host, self.stats)


INDEX_PAGE = b"""<html><head><title>nexa gpu-exporter</title></head>
<body><h1>nexa gpu-exporter</h1><p><a href="/metrics">Metrics</a></p></body></html>
"""


class Handler(BaseHTTPRequestHandler):
    exporter: Exporter  # set on the subclass made by make_server
    timeout = 30  # seconds a client may take to send its request
    server_version = "nexa-gpu-exporter"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            budget = None
            header = self.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
            try:
                budget = float(header) if header else None
            except ValueError:
                budget = None
            try:
                body = self.exporter.scrape(budget).encode("utf-8")
            except Exception as exc:  # noqa: BLE001 - a bug must not take the exporter down
                log.exception("scrape failed")
                self._send(500, f"scrape failed: {exc}\n".encode(), "text/plain; charset=utf-8")
                return
            self._send(200, body, CONTENT_TYPE)
        elif path == "/":
            self._send(200, INDEX_PAGE, "text/html; charset=utf-8")
        else:
            self._send(404, b"not found: try /metrics\n", "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the scraper gave up; nothing to do

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        log.debug("%s %s", self.address_string(), format % args)


def make_server(listen: str, port: int, exporter: Exporter) -> HTTPServer:
    """Bind (port 0 picks a free one); the caller runs ``serve_forever``. (ThreadingMixIn +
    HTTPServer is http.server.ThreadingHTTPServer, which Python 3.6 lacks.)"""
    handler = type("BoundHandler", (Handler,), {"exporter": exporter})
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    attrs = {"address_family": family, "daemon_threads": True, "allow_reuse_address": True}
    server_cls = type("Server", (ThreadingMixIn, HTTPServer), attrs)
    return server_cls((listen, port), handler)


def default_host() -> str:
    return socket.gethostname().split(".")[0]
