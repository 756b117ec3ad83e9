"""Prometheus's HTTP API: instant queries (``/api/v1/query``), standard library only.

Never raises for what the server or the network does: the caller gets the series, or None
and one line saying why (connection refused, a PromQL error in Prometheus's words, ...),
because a missing figure must be reported as unknown, not crash a report.
"""

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional

from ..structs import frozen


@frozen
class Answer:
    """An instant query's vector (``[{"metric": {...}, "value": [t, "v"]}]``), or why not."""

    series: Optional[List[Dict[str, Any]]]
    error: str = ""


def query_url(base_url: str, expr: str, at: Optional[float] = None) -> str:
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    return base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(params)


def query(base_url: str, expr: str, at: Optional[float] = None, timeout: float = 10.0) -> Answer:
    """Evaluate ``expr`` at ``at`` (Unix seconds; None: now) on the Prometheus at ``base_url``."""
    url = query_url(base_url, expr, at)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:  # 400/422: Prometheus says what is wrong in JSON
        try:
            detail = json.loads(exc.read().decode("utf-8")).get("error") or exc.reason
        except (ValueError, OSError, AttributeError):
            detail = exc.reason
        return Answer(None, f"Prometheus at {base_url} answered HTTP {exc.code}: {detail}")
    except urllib.error.URLError as exc:
        return Answer(None, f"cannot reach Prometheus at {base_url}: {getattr(exc.reason, 'strerror', None) or exc.reason}")
    except (socket.timeout, TimeoutError):
        return Answer(None, f"Prometheus at {base_url} did not answer within {timeout:g} s")
    except (OSError, ValueError) as exc:
        return Answer(None, f"Prometheus at {base_url}: unreadable answer ({exc})")
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        return Answer(None, f"Prometheus at {base_url}: {error or 'query failed'}")
    data = body.get("data") or {}
    if data.get("resultType") == "scalar":
        return Answer([{"metric": {}, "value": data.get("result")}])
    result = data.get("result")
    if data.get("resultType") != "vector" or not isinstance(result, list):
        return Answer(None, f"Prometheus at {base_url}: expected a vector, got {data.get('resultType')!r}")
    return Answer(result)
