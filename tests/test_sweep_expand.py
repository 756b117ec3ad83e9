"""Sweep expansion: order, excludes, random draws, formatting; no tools involved."""

import pytest

from nexa_ops.config import parse_sweep
from nexa_ops.errors import ConfigError
from nexa_ops.sweep.expand import MAX_TASKS, count, expand, format_value

HOSTILE = ["a b", "it's", 'say "hi"', "$(touch /tmp/pwned)", "x; rm -rf /", "ünïcødé ✓", "--leading-dash", "{value}", ""]


def sweep(**table):
    base = {"name": "t", "command": ["prog"]}
    base.update(table)
    return parse_sweep(base, "s.toml")


def test_grid_order_last_key_fastest_and_dense_ids():
    tasks = expand(sweep(grid={"lr": [0.1, 0.01], "bs": [16, 32]}))
    assert [t.index for t in tasks] == [0, 1, 2, 3]
    assert [t.params for t in tasks] == [
        {"lr": 0.1, "bs": 16},
        {"lr": 0.1, "bs": 32},
        {"lr": 0.01, "bs": 16},
        {"lr": 0.01, "bs": 32},
    ]
    assert tasks[1].argv == ["prog", "--lr=0.1", "--bs=32"]


def test_exclude_drops_matches_and_renumbers():
    defn = sweep(grid={"lr": [0.1, 0.01], "bs": [16, 32]}, exclude=[{"lr": 0.1, "bs": 32}])
    tasks = expand(defn)
    assert [t.params for t in tasks] == [{"lr": 0.1, "bs": 16}, {"lr": 0.01, "bs": 16}, {"lr": 0.01, "bs": 32}]
    assert [t.index for t in tasks] == [0, 1, 2]
    assert count(defn) == 3


def test_exclude_bool_does_not_match_int():
    tasks = expand(sweep(grid={"flag": [True, 1]}, exclude=[{"flag": True}]))
    assert [t.params["flag"] for t in tasks] == [1]
    assert type(tasks[0].params["flag"]) is int


def test_fixed_follow_grid_and_reach_every_task():
    tasks = expand(sweep(grid={"lr": [1, 2]}, fixed={"epochs": 3}))
    assert [t.argv[1:] for t in tasks] == [["--lr=1", "--epochs=3"], ["--lr=2", "--epochs=3"]]


def test_random_is_reproducible_and_within_bounds():
    table = {
        "grid": {"lr": [0.1, 0.01]},
        "random": {
            "samples": 4,
            "seed": 7,
            "params": {
                "dropout": {"uniform": [0.0, 0.3]},
                "wd": {"log_uniform": [1e-6, 1e-2]},
                "opt": {"choice": ["adam", "sgd"]},
                "layers": {"int_uniform": [2, 4]},
            },
        },
    }
    first = expand(sweep(**table))
    again = expand(sweep(**table))
    assert [t.as_json() for t in first] == [t.as_json() for t in again]
    assert len(first) == 8
    for t in first:
        assert 0.0 <= t.params["dropout"] <= 0.3
        assert 1e-6 <= t.params["wd"] <= 1e-2
        assert t.params["opt"] in ("adam", "sgd")
        assert t.params["layers"] in (2, 3, 4)
    other_seed = dict(table, random=dict(table["random"], seed=8))
    assert [t.params for t in expand(sweep(**other_seed))] != [t.params for t in first]


def test_exclude_does_not_shift_other_random_draws():
    table = {"grid": {"a": [1, 2]}, "random": {"samples": 2, "seed": 0, "params": {"x": {"uniform": [0, 1]}}}}
    full = expand(sweep(**table))
    cut = expand(sweep(exclude=[{"a": 1}], **table))
    assert [t.params for t in cut] == [t.params for t in full if t.params["a"] == 2]


def test_random_only_samples():
    tasks = expand(sweep(random={"samples": 5, "params": {"x": {"choice": [1, 2]}}}))
    assert len(tasks) == 5


def test_value_formatting_is_documented_and_stable():
    assert format_value(True) == "true" and format_value(False) == "false"
    assert format_value(3) == "3"
    assert format_value(0.1) == "0.1" and format_value(1e-06) == "1e-06" and format_value(3.0) == "3.0"
    assert format_value("x y") == "x y"


def test_hostile_values_stay_literal_in_every_arg_format():
    for fmt, expected in [
        ("--{key}={value}", lambda v: ["--msg=" + v]),
        ("--{key} {value}", lambda v: ["--msg", v]),
        ("{key}={value}", lambda v: ["msg=" + v]),
    ]:
        tasks = expand(sweep(grid={"msg": HOSTILE}, arg_format=fmt))
        assert [t.argv[1:] for t in tasks] == [expected(v) for v in HOSTILE]


def test_no_grid_is_one_task():
    tasks = expand(sweep(fixed={"a": 1}))
    assert len(tasks) == 1 and tasks[0].argv == ["prog", "--a=1"]


def test_large_grid_count_matches_expand():
    defn = sweep(grid={"a": list(range(50)), "b": list(range(40)), "c": ["x", "y"]})
    tasks = expand(defn)
    assert len(tasks) == count(defn) == 4000
    assert tasks[-1].params == {"a": 49, "b": 39, "c": "y"}


def test_an_absurd_grid_is_refused_before_anything_is_built():
    grid = {k: list(range(100)) for k in "abcd"}  # 100**4 = 100,000,000 combinations
    defn = parse_sweep({"name": "big", "command": ["x"], "grid": grid}, "big.toml")
    with pytest.raises(ConfigError, match=f"grid: 100,000,000 combinations: more than {MAX_TASKS:,} tasks"):
        expand(defn)
