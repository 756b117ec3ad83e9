"""``nexa gpu-exporter``: GPU metrics for Prometheus from ``nvidia-smi``, standard library only.

For clusters without dcgm-exporter. A collection runs ``nvidia-smi --query-gpu=...`` once
for every field, plus ``--query-compute-apps`` once (both through ``tools/nvidia_smi``, within
one timeout), and is shared: concurrent scrapes wait for the one in flight, and its result
is served again for ``cache_seconds``. Answers use the metric names of
utkuozdemir/nvidia_gpu_exporter, so the same rules and dashboards work with either, plus
``nexa_gpu_job_info``: which Slurm job (and user) holds each GPU, read from the processes'
``/proc/<pid>/cgroup`` or environment. A missing, slow or failing ``nvidia-smi`` gives
``nvidia_smi_last_collect_success 0`` and a log line, never a crash or a hung scrape.

The HTTP server has a fixed number of handler threads, a bounded queue of accepted
connections and a real listen backlog; a connection must deliver its whole request within
``request_timeout`` seconds of being accepted (not per read), so slow clients cannot pile up
threads.
"""

import io
import logging
import os
import queue
import re
import socket
import threading
import time
from dataclasses import field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .structs import frozen, mutable
from .tools import nvidia_smi
from .tools.nvidia_smi import ParseError, parse_value  # noqa: F401 (part of this module's API)

log = logging.getLogger("nexa.gpu_exporter")

DEFAULT_PORT = 9835
DEFAULT_LISTEN = "127.0.0.1"
DEFAULT_TIMEOUT = 5.0
DEFAULT_CACHE_SECONDS = 1.0
DEFAULT_WORKERS = 8
DEFAULT_REQUEST_TIMEOUT = 10.0
BACKLOG = 128
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
GPU_ARGV = nvidia_smi.gpu_argv(QUERY_GPU)
APPS_ARGV = nvidia_smi.apps_argv()


@frozen
class Holder:
    """Who runs a compute process: its Slurm job ("" when not a Slurm job's) and user."""

    slurm_job_id: str
    user: str


@mutable
class Gpu:
    index: str
    uuid: str  # without nvidia-smi's "GPU-" prefix, as nvidia_gpu_exporter labels it
    name: str
    driver_version: str
    values: Dict[str, float] = field(default_factory=dict)  # metric name -> value
    compute_apps: Optional[int] = None
    holders: List[Holder] = field(default_factory=list)  # one per distinct (job, user), in pid order


@mutable
class Collection:
    """One collection (the nvidia-smi runs it took): the GPUs, or why there are none."""

    success: bool
    gpus: List[Gpu] = field(default_factory=list)
    exit_code: int = 0
    error: str = ""
    duration: float = 0.0
    timestamp: float = 0.0


# --- parsing (pure) ---------------------------------------------------------------------


def parse_gpus(stdout: str) -> List[Gpu]:
    """Rows of ``--query-gpu=QUERY_GPU --format=csv,noheader,nounits``."""
    gpus = []
    for lineno, row in enumerate(nvidia_smi.parse_rows(stdout, QUERY_GPU), 1):
        if not row["index"].isdigit():
            raise ParseError(f"row {lineno}: expected a GPU index, got {row['index']!r}")
        gpu = Gpu(index=row["index"], uuid=nvidia_smi.strip_uuid(row["uuid"]), name=row["name"], driver_version=row["driver_version"])
        for fld, metric, scale, _ in METRIC_FIELDS:
            value = parse_value(row[fld])
            if value is not None:
                gpu.values[metric] = value * scale
        gpus.append(gpu)
    return gpus


def count_apps(stdout: str) -> Dict[str, int]:
    """Compute processes per GPU uuid (no ``GPU-`` prefix) from ``--query-compute-apps``."""
    counts: Dict[str, int] = {}
    for app in nvidia_smi.parse_apps(stdout):
        counts[app.gpu_uuid] = counts.get(app.gpu_uuid, 0) + 1
    return counts


_CGROUP_JOB_RE = re.compile(r"/job_(\d+)(?:/|$)")


def job_from_cgroup(text: str) -> Optional[str]:
    """The Slurm job id in ``/proc/<pid>/cgroup``: Slurm's cgroup plugins put every task
    under ``.../slurm/uid_U/job_J/step_S`` (v1) or ``.../slurmstepd.scope/job_J/...`` (v2)."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        if "slurm" not in path:
            continue
        match = _CGROUP_JOB_RE.search(path)
        if match:
            return match.group(1)
    return None


def job_from_environ(data: bytes) -> Optional[str]:
    """``SLURM_JOB_ID`` in ``/proc/<pid>/environ`` (NUL-separated): every process Slurm
    starts inherits it. For an array task this is the task's own job id, as in the cgroup."""
    for item in data.split(b"\0"):
        if item.startswith(b"SLURM_JOB_ID="):
            value = item[len(b"SLURM_JOB_ID=") :].decode("ascii", "replace")
            return value if value.isdigit() else None
    return None


def assign_holders(gpus: Sequence[Gpu], apps: Sequence[nvidia_smi.App], holder: Callable[[int], Holder]) -> None:
    """Count each GPU's compute processes and note who holds it (``holder(pid)``)."""
    by_uuid = {g.uuid: g for g in gpus}
    for gpu in gpus:
        gpu.compute_apps = 0
        gpu.holders = []
    for app in apps:
        gpu = by_uuid.get(app.gpu_uuid)
        if gpu is None:
            continue
        gpu.compute_apps = (gpu.compute_apps or 0) + 1
        who = holder(app.pid)
        if who not in gpu.holders:
            gpu.holders.append(who)


# --- reading /proc (the processes nvidia-smi listed) -------------------------------------


def _read(path: str) -> Optional[bytes]:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:  # gone, or not ours to read (environ needs root or the owner)
        return None


def process_holder(pid: int, proc_root: str = "/proc", users: Optional[Dict[int, str]] = None) -> Holder:
    """The Slurm job and user of ``pid``: the cgroup path first, else the environment.
    A process that ended meanwhile or cannot be read is ``Holder("", "")``."""
    base = os.path.join(proc_root, str(pid))
    try:
        uid = os.stat(base).st_uid
    except OSError:
        return Holder("", "")
    cgroup = _read(os.path.join(base, "cgroup"))
    job = job_from_cgroup(cgroup.decode("utf-8", "replace")) if cgroup else None
    if job is None:
        environ = _read(os.path.join(base, "environ"))
        job = job_from_environ(environ) if environ else None
    return Holder(job or "", user_name(uid, users))


def user_name(uid: int, cache: Optional[Dict[int, str]] = None) -> str:
    if cache is not None and uid in cache:
        return cache[uid]
    try:
        import pwd

        name = pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        name = str(uid)
    if cache is not None:
        cache[uid] = name
    return name


# --- collecting (runs nvidia-smi) -------------------------------------------------------


def collect(timeout: float = DEFAULT_TIMEOUT, apps: bool = True) -> Collection:
    """Run the GPU query once and (with ``apps``) the compute-apps query once, within
    ``timeout`` seconds in all; map each process to its Slurm job. Never raises."""
    start = time.monotonic()
    now = time.time()
    answer = nvidia_smi.query(GPU_ARGV, timeout)
    error = answer.error
    gpus: List[Gpu] = []
    if not error:
        try:
            gpus = parse_gpus(answer.stdout)
        except ParseError as exc:
            error = f"cannot read nvidia-smi output: {exc}"
    if not error and apps and gpus:
        left = max(0.1, timeout - (time.monotonic() - start))
        listed = nvidia_smi.query(APPS_ARGV, left)
        if listed.error:
            log.warning("compute-apps query failed (GPU metrics still served): %s", listed.error)
        else:
            users: Dict[int, str] = {}
            assign_holders(gpus, nvidia_smi.parse_apps(listed.stdout), lambda pid: process_holder(pid, users=users))
    duration = time.monotonic() - start
    if error:
        log.warning("collection failed: %s", error)
        return Collection(False, [], answer.code, error, duration, now)
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


class _Lines:
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


@mutable
class Stats:
    """Counters kept across scrapes by the server."""

    failed: int = 0
    last_success: float = 0.0


def render(col: Collection, host: str, stats: Optional[Stats] = None) -> str:
    """The scrape body. GPU series carry ``gpu`` (index), ``uuid``, ``name`` and ``host``;
    ``nexa_gpu_job_info`` carries ``gpu``, ``uuid``, ``host``, ``slurm_job_id`` and ``user``."""
    stats = stats or Stats(failed=0 if col.success else 1, last_success=col.timestamp if col.success else 0.0)
    w = _Lines()

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
    w.family(
        "nexa_gpu_job_info",
        "gauge",
        "1 for each Slurm job (slurm_job_id, \"\" when a process is not a Slurm job's) and user with a compute process on the GPU.",
        [
            ([("gpu", g.index), ("uuid", g.uuid), ("host", host), ("slurm_job_id", h.slurm_job_id), ("user", h.user)], 1)
            for g in col.gpus
            for h in g.holders
        ],
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
    w.family(
        "nvidia_smi_failed_scrapes_total",
        "counter",
        "Number of failed collections, and of scrapes that gave up waiting for one",
        [(me, stats.failed)],
    )
    w.family("nvidia_smi_command_exit_code", "gauge", "Exit code of the most recent nvidia-smi run", [(me, col.exit_code)])
    return w.text()


# --- one collection shared by concurrent scrapes -------------------------------------------


class Exporter:
    """State shared by the request threads: at most one collection at a time, whose result
    every scrape waiting for it gets, and which is served again for ``cache_seconds``."""

    def __init__(
        self,
        host: str,
        timeout: float = DEFAULT_TIMEOUT,
        apps: bool = True,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
        collector: Callable[[float, bool], Collection] = collect,
    ):
        self.host = host
        self.timeout = timeout
        self.apps = apps
        self.cache_seconds = cache_seconds
        self.stats = Stats()
        self._collector = collector
        self._cond = threading.Condition()
        self._cached: Optional[Collection] = None
        self._cached_at = 0.0  # time.monotonic() when it finished
        self._running = False
        self._generation = 0  # finished collections

    def collection(self, budget: Optional[float] = None) -> Collection:
        """A fresh (or ``cache_seconds``-old) collection; ``budget`` (Prometheus's scrape
        timeout) caps both the nvidia-smi runs this scrape starts and its wait for another's."""
        timeout = self.timeout if budget is None else max(0.5, min(self.timeout, budget - 0.5))
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._cached is not None and time.monotonic() - self._cached_at <= self.cache_seconds:
                    return self._cached
                if not self._running:
                    self._running = True
                    break
                seen = self._generation
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                if self._generation != seen and self._cached is not None:
                    return self._cached  # the collection this scrape waited for
                if time.monotonic() >= deadline:
                    self.stats.failed += 1
                    error = f"gave up after {timeout:g} s waiting for the collection another scrape started"
                    log.warning("scrape failed: %s", error)
                    return Collection(False, exit_code=124, error=error, timestamp=time.time())
        col: Optional[Collection] = None
        try:
            col = self._collector(timeout, self.apps)
        finally:
            with self._cond:
                if col is None:  # the collector raised (a bug): the waiting scrapes fail too
                    shared = Collection(False, exit_code=1, error="the collection failed with an internal error", timestamp=time.time())
                else:
                    shared = col
                self._cached, self._cached_at = shared, time.monotonic()
                if shared.success:
                    self.stats.last_success = shared.timestamp
                else:
                    self.stats.failed += 1
                self._running = False
                self._generation += 1
                self._cond.notify_all()
        return col

    def scrape(self, budget: Optional[float] = None) -> str:
        """Collect (or share a collection) and render it."""
        return render(self.collection(budget), self.host, self.stats)


# --- the HTTP server ---------------------------------------------------------------------

INDEX_PAGE = b"""<html><head><title>nexa gpu-exporter</title></head>
<body><h1>nexa gpu-exporter</h1><p><a href="/metrics">Metrics</a></p></body></html>
"""


class _DeadlineReader(io.RawIOBase):
    """Socket reads that all end by one ``deadline`` (``time.monotonic()``): a client that
    drips a byte at a time is cut when its time is up, not when it pauses too long."""

    def __init__(self, sock: socket.socket, deadline: float):
        super().__init__()
        self.sock = sock
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("request deadline passed")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _DeadlineWriter(io.RawIOBase):
    """``sendall`` with one deadline for the whole response, starting at its first byte."""

    def __init__(self, sock: socket.socket, seconds: float):
        super().__init__()
        self.sock = sock
        self.seconds = seconds
        self.deadline: Optional[float] = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("response deadline passed")
        self.sock.settimeout(left)
        self.sock.sendall(data)
        return len(data)


class Handler(BaseHTTPRequestHandler):
    exporter: Exporter  # set on the subclass made by make_server
    server_version = "nexa-gpu-exporter"

    def setup(self) -> None:
        self.connection = self.request
        seconds = getattr(self.server, "request_timeout", DEFAULT_REQUEST_TIMEOUT)
        deadline = getattr(self.server, "current_deadline", lambda: None)() or (time.monotonic() + seconds)
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))
        self.wfile = _DeadlineWriter(self.connection, seconds)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            budget = None
            header = self.headers.get("X-Prometheus-Scrape-Timeout-Seconds")
            try:
                budget = float(header) if header else None
            except ValueError:
                budget = None
            if budget is not None and not budget > 0:  # nan, inf, negative: not a budget
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


class BoundedServer(HTTPServer):
    """An HTTP server with ``workers`` handler threads, at most ``pending`` accepted
    connections waiting for one (more are closed at once) and a ``BACKLOG``-deep listen
    queue. Every connection's request must arrive within ``request_timeout`` seconds of
    its accept, and its response is written within as many more."""

    request_queue_size = BACKLOG
    allow_reuse_address = True

    def __init__(
        self,
        address: Tuple[str, int],
        handler: type,
        *,
        workers: int = DEFAULT_WORKERS,
        pending: Optional[int] = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    ):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.request_timeout = request_timeout
        self.workers = workers
        self._queue = queue.Queue(pending or 4 * workers)  # type: queue.Queue  # (socket, address, deadline); None ends a thread
        self._local = threading.local()
        self._dropped = 0
        self._dropped_logged = 0.0
        self._threads: List[threading.Thread] = []  # server_close runs when the bind fails
        HTTPServer.__init__(self, address, handler)
        self._threads = [threading.Thread(target=self._work, name=f"nexa-exporter-{i}", daemon=True) for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def current_deadline(self) -> Optional[float]:
        return getattr(self._local, "deadline", None)

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        try:
            self._queue.put_nowait((request, client_address, time.monotonic() + self.request_timeout))
        except queue.Full:
            self._dropped += 1
            now = time.monotonic()
            if now - self._dropped_logged >= 10:
                self._dropped_logged = now
                log.warning(
                    "all %d handler threads busy and %d connections waiting: closed %d connection(s)",
                    self.workers,
                    self._queue.maxsize,
                    self._dropped,
                )
                self._dropped = 0
            self.shutdown_request(request)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            request, client_address, deadline = item
            self._local.deadline = deadline
            try:
                if time.monotonic() < deadline:  # else it waited its whole time in the queue
                    self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one bad connection must not end a worker
                log.debug("connection from %s failed", client_address, exc_info=True)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        log.debug("connection from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        HTTPServer.server_close(self)
        while True:  # connections still waiting for a thread are closed, not served
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self.shutdown_request(item[0])
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=self.request_timeout * 2 + 1)


def make_server(
    listen: str,
    port: int,
    exporter: Exporter,
    *,
    workers: int = DEFAULT_WORKERS,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> BoundedServer:
    """Bind (port 0 picks a free one) and start the handler threads; the caller runs
    ``serve_forever`` and, at the end, ``server_close``."""
    handler = type("BoundHandler", (Handler,), {"exporter": exporter})
    return BoundedServer((listen, port), handler, workers=workers, request_timeout=request_timeout)


def default_host() -> str:
    return socket.gethostname().split(".")[0]
