"""The results picture: its structure (pure), and what a real browser makes of it."""

import math
import xml.etree.ElementTree as ET

import pytest

from nexa_ops.results import load, plot
from nexa_ops.results.metrics import TaskMetrics
from tests.services.chromium import pixel_counts
from tests.test_results_table import status

SVG = "{http://www.w3.org/2000/svg}"


def sweep_results():
    """A 3 x 2 x 2 grid over lr (four decades apart), a depth and an optimizer; task 11 fails
    before reporting."""
    params, metrics = [], {}
    index = 0
    for lr in (1e-4, 1e-3, 1e-2):
        for depth in (2, 4):
            for opt in ("adam", "sgd"):
                params.append({"lr": lr, "depth": depth, "opt": opt, "seed": 0})
                loss = abs(math.log10(lr) + 3) + 0.1 * depth + (0.2 if opt == "sgd" else 0)
                if index != 11:
                    metrics[index] = TaskMetrics({"loss": loss}, {"loss": loss}, {"loss": loss}, 5, {}, 5, 0)
                index += 1
    st = status(params=params, states=["COMPLETED"] * 11 + ["FAILED"])
    results = load.combine([load.RunData(st, metrics)])
    curves = [load.Curve(row, [(s, row.value + 1.0 / s) for s in range(1, 6)]) for row in results.rows[:5]]
    return results, curves


def elements(svg_text, tag, cls=None):
    root = ET.fromstring(svg_text)
    found = root.iter(SVG + tag)
    return [e for e in found if cls is None or cls in e.get("class", "").split()]


def test_one_panel_per_varying_parameter_with_a_point_per_task():
    results, curves = sweep_results()
    svg = plot.render_svg(results, curves)
    panels = elements(svg, "g", "param")
    assert [(p.get("data-param"), p.get("data-scale")) for p in panels] == [("lr", "log"), ("depth", "linear"), ("opt", "category")]
    for panel in panels:
        points = [c for c in panel.iter(SVG + "circle") if "point" in c.get("class", "")]
        assert len(points) == 11  # the failed task has no value to draw
        best = [c for c in points if "best" in c.get("class").split()]
        assert [c.get("data-index") for c in best] == ["4"] and best[0].get("r") == "7"
    assert "seed" not in svg  # a parameter that does not vary gets no panel


def test_the_best_point_is_where_its_values_are():
    results, curves = sweep_results()
    svg = plot.render_svg(results, curves)
    lr_panel = elements(svg, "g", "param")[0]
    xs = {c.get("data-index"): float(c.get("cx")) for c in lr_panel.iter(SVG + "circle")}
    ys = {c.get("data-index"): float(c.get("cy")) for c in lr_panel.iter(SVG + "circle")}
    # lr 1e-4 (tasks 0-3) left of 1e-3 (4-7) left of 1e-2 (8-10), evenly on the log axis
    assert max(xs[str(i)] for i in range(4)) < min(xs[str(i)] for i in range(4, 8))
    assert abs((xs["8"] - xs["4"]) - (xs["4"] - xs["0"])) < 12
    assert ys["4"] == max(ys.values())  # the smallest loss is lowest in the picture


def test_curves_of_the_top_tasks_with_a_legend():
    results, curves = sweep_results()
    svg = plot.render_svg(results, curves)
    lines = elements(svg, "polyline", "curve")
    assert [c.get("data-index") for c in lines][-1] == "4"  # the best drawn last, on top
    assert sorted(c.get("data-index") for c in lines) == sorted(str(r.index) for r in results.rows[:5])
    assert all(len(c.get("points").split()) == 5 for c in lines)
    (panel,) = elements(svg, "g", "curves")
    assert panel.get("data-tasks") == "5"
    texts = [t.text for t in panel.iter(SVG + "text")]
    assert "task 4: 0.2  best" in texts and "loss over steps, top 5" in texts and "step" in texts


def test_ticks_and_labels():
    assert plot.linear_ticks(0, 10, 5) == [0, 2, 4, 6, 8, 10]
    assert plot.linear_ticks(0.1, 0.95, 4) == [0.25, 0.5, 0.75]
    assert plot.linear_ticks(1, 3, 5, whole=True) == [1, 2, 3]
    assert plot.log_ticks(1e-5, 2e-1) == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert plot.log_ticks(0.01, 0.1) == [0.01, 0.02, 0.05, 0.1]
    assert [plot.tick_label(v) for v in (0, 1e-5, 3e4, 2.5e5, 0.001, 250)] == ["0", "1e-5", "3e+04", "2.5e5", "0.001", "250"]
    assert plot.tick_label(0.30000000000000004, 0.1) == "0.3"
    assert plot.wants_log([1e-4, 1e-3]) and not plot.wants_log([16, 128]) and not plot.wants_log([-1, 10])


def test_text_is_escaped_and_html_has_the_table():
    results, curves = sweep_results()
    results.rows[0].params["opt"] = "<b>&"
    page = plot.render(results, curves, ".html")
    assert page.startswith("<!DOCTYPE html>") and "&lt;b&gt;&amp;" in page and "<b>&" not in page
    assert '<tr class="best">' in page and page.count("<svg") == 1
    ET.fromstring(plot.render(results, curves, ".svg"))  # well-formed XML


def test_single_value_and_no_curves_still_draw():
    results, _ = sweep_results()
    results.rows = results.rows[:1]
    svg = plot.render_svg(results, [])
    assert "no steps reported" in svg
    ET.fromstring(svg)


@pytest.mark.parametrize("suffix", [".svg", ".html"])
def test_a_real_browser_draws_it(chromium, tmp_path, suffix):
    results, curves = sweep_results()
    path = tmp_path / f"results{suffix}"
    path.write_text(plot.render(results, curves, suffix), encoding="utf-8")
    pixels, ink, red = pixel_counts(chromium(path, tmp_path / "shot.png", 1000, 960))
    assert ink > pixels * 0.02, f"only {ink} of {pixels} pixels drawn"
    assert red > 100, "the best task (red) is not visible"
