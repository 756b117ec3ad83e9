"""``nexa results``: which configuration won, as a table, a file and a picture."""

from typing import Any, Optional

from .common import PROJECT_HELP, RUN_HELP, OptionalRun, echo, load_project, nexa_task, parse_int

TOP_SHOWN = 5  # rows after `nexa sweep --local` and `--submit --wait`; curves in a plot


@nexa_task(
    klass=OptionalRun,
    positional=["run"],
    help={
        "run": RUN_HELP,
        "metric": "Metric to rank by (default: a halving run's [search] metric, else the first metric name the tasks reported).",
        "mode": "min (default: smaller is better) or max; a halving run's default is its [search] mode.",
        "reduce": "last (default: the value at the highest step) or best (the best value over all steps, by --mode).",
        "top": "Show only the first K rows; with --plot, the curves of the top K tasks (default 5).",
        "state": "Only tasks in these states: COMPLETED, FAILED, RUNNING... or pending, running, done, failed (comma-separated).",
        "format": "table (default), csv, json or markdown.",
        "output": "Write the table (in --format) to this file instead of printing it (atomically).",
        "plot": "Also draw the results to this .svg or .html file: the metric against each varying parameter, and over steps.",
        "campaign": "Rank every run of this campaign in the runs directory together, with a run column (instead of RUN).",
        "project": PROJECT_HELP,
    },
)
def results(
    c,
    run=None,
    metric=None,
    mode=None,
    reduce="last",
    top=None,
    state=None,
    format="table",
    output=None,
    plot=None,
    campaign=None,
    project=None,
):
    """Rank the tasks of a run by a metric they reported.

    The best is marked; --plot draws them.
    """
    import dataclasses
    import sys
    from pathlib import Path

    from ..errors import ConfigError
    from ..results import load, table

    k = parse_int(top, "--top", minimum=1)
    table.check_options(mode or "min", reduce, k)
    if format not in table.FORMATS:
        raise ConfigError(f"--format: expected one of {', '.join(table.FORMATS)}, got {format!r}")
    for option, value in (("--output", output), ("--plot", plot), ("--metric", metric), ("--campaign", campaign)):
        if value is not None and not str(value).strip():
            raise ConfigError(f"{option}: expected a value, got ''")
    if plot is not None and Path(plot).suffix.lower() not in (".svg", ".html", ".htm"):
        raise ConfigError(f"--plot: expected a file name ending in .svg or .html, got {plot!r}")
    if plot is not None and output is not None and Path(plot).resolve() == Path(output).resolve():
        raise ConfigError("--plot and --output name the same file")
    found = load.load_results(run, metric=metric, mode=mode, reduce=reduce, state=state, campaign=campaign, config=load_project(project))
    shown = found if k is None else dataclasses.replace(found, rows=found.rows[:k])
    text = table.render(shown, format)
    picture = None
    if plot is not None:
        from ..results import plot as plotting  # html and the SVG writer: --plot only

        if found.metric is None:
            raise ConfigError("--plot: no task has reported a metric yet: nothing to draw")
        picture = plotting.render(found, load.curves(found, k or TOP_SHOWN), Path(plot).suffix)
    if output is not None:
        _write_file(output, text + "\n")
        print(f"nexa: wrote {output}", file=sys.stderr)
    else:
        echo(text)
    if picture is not None:
        _write_file(plot, picture)
        print(f"nexa: wrote {plot}", file=sys.stderr)


def _write_file(path: Any, text: str) -> None:
    """Atomically (``fs`` and its tempfile are imported only when a file is written)."""
    from ..fs import atomic_write_text

    atomic_write_text(path, text)


def print_top(run_dir: Any, config: Any, status: Optional[Any] = None, k: int = TOP_SHOWN) -> None:
    """The top ``k`` tasks by their first metric, after ``nexa sweep --local`` and ``--wait``;
    nothing when no task wrote metrics. A problem reading them is a warning, not a failure
    of the run that was just waited for."""
    import sys

    from .. import track
    from ..errors import NexaError
    from ..results import load, table

    if not load.any_metrics(run_dir):
        return
    try:
        st = status if status is not None else track.status(run_dir, config=config)
        found = load.results_of(st, top=k)
    except NexaError as exc:
        print(f"nexa: warning: cannot rank the results: {exc}", file=sys.stderr)
        return
    echo()
    echo(f"Top {len(found.rows)} by {table.metric_header(found)}  (all: nexa results {st.run_dir})")
    echo(table.render_table(found))


TASKS = [results]
