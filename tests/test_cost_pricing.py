"""The pure cost arithmetic: price lookup, the estimate, its table and JSON, actual figures."""

import json

import pytest

from nexa_ops import toml
from nexa_ops.config import CostConfig, Resources
from nexa_ops.cost import actual, pricing
from nexa_ops.cost.estimate import shipped_prices
from nexa_ops.errors import ConfigError
from nexa_ops.resources import read_text
from nexa_ops.tools import slurm

TABLE = shipped_prices()


def est(res=None, tasks=1, cli_provider=None, **cfg):
    return pricing.estimate(res or Resources(), tasks, TABLE, CostConfig(**cfg), provider=cli_provider)


def test_shipped_table_has_the_issue_figures_with_source_and_date():
    raw = toml.loads(read_text("data/prices.toml"), "prices.toml")
    rows = {(r["gpu_type"], r["provider"], r["sku"]): r for r in raw["price"]}
    expected = {
        ("H100-80GB", "aws", "p5.48xlarge"): 6.88,
        ("H100-80GB", "lambda", "gpu_8x_h100_sxm5"): 3.99,
        ("H100-80GB", "lambda", "gpu_1x_h100_pcie"): 3.29,
        ("A100-80GB", "aws", "p4de.24xlarge"): 3.43,
        ("A100-80GB", "lambda", "gpu_8x_a100_80gb_sxm4"): 2.79,
        ("A100-80GB", "runpod", "1x_A100-80GB_SECURE"): 1.39,
        ("A100-40GB", "aws", "p4d.24xlarge"): 2.74,
        ("A100-40GB", "lambda", "gpu_1x_a100_sxm4"): 1.99,
        ("RTX4090", "runpod", "1x_RTX4090_SECURE"): 0.74,
    }
    for key, rate in expected.items():
        assert rows[key]["usd_per_gpu_hour"] == rate, key
    for row in raw["price"]:
        assert row["source"].startswith("skypilot-org/skypilot-catalog") and row["fetched"]
        assert row["sku"] and row["region"]
        if row.get("usd_per_instance_hour"):  # the per-GPU figure is the instance price / GPUs
            assert abs(row["usd_per_instance_hour"] / row["gpus_per_instance"] - row["usd_per_gpu_hour"]) < 0.01
    assert rows[("H100-80GB", "aws", "p5.48xlarge")]["usd_per_instance_hour"] == 55.04


@pytest.mark.parametrize(
    "name, canonical",
    [
        ("h100", "H100-80GB"),
        ("H100_80GB", "H100-80GB"),
        ("a100-80gb", "A100-80GB"),
        ("A100 40GB", "A100-40GB"),
        ("4090", "RTX4090"),
        ("rtx-4090", "RTX4090"),
        ("L40S", "L40S"),
    ],
)
def test_gpu_names_resolve(name, canonical):
    assert TABLE.resolve(name) == canonical


def test_ambiguous_gpu_name_is_refused_with_choices():
    with pytest.raises(ConfigError, match="'a100' is ambiguous: say one of A100-40GB, A100-80GB"):
        TABLE.resolve("a100")


def test_estimate_arithmetic_uses_estimated_hours_first():
    res = Resources(nodes=2, gpus_per_node=8, gpu_type="H100", time="10:00:00", estimated_hours=1.5)
    e = est(res, tasks=12, cli_provider="aws")
    assert (e.hours, e.hours_from) == (1.5, "estimated_hours")
    assert e.gpu_hours == 12 * 2 * 8 * 1.5 == 288
    assert e.total_usd == pytest.approx(288 * 6.88)
    assert (e.provider, e.sku, e.region, e.rate_from) == ("aws", "p5.48xlarge", "us-east-1", pricing.FROM_TABLE)


def test_estimate_falls_back_to_the_time_limit_and_says_so():
    e = est(Resources(gpus_per_node=1, gpu_type="4090", time="1-12:30:00"), tasks=3)
    assert (e.hours, e.hours_from) == (36.5, "time limit")
    assert e.total_usd == pytest.approx(3 * 36.5 * 0.74)
    assert "(time limit)" in e.formula()


def test_default_provider_is_the_cheapest_row_that_holds_a_node():
    one = est(Resources(gpus_per_node=1, gpu_type="H100", time="60"))
    eight = est(Resources(gpus_per_node=8, gpu_type="H100", time="60"))
    assert (one.provider, one.sku, one.rate_usd_per_gpu_hour) == ("lambda", "gpu_1x_h100_pcie", 3.29)
    assert (eight.provider, eight.sku, eight.rate_usd_per_gpu_hour) == ("lambda", "gpu_8x_h100_sxm5", 3.99)


def test_config_provider_and_rate_override():
    res = Resources(gpus_per_node=4, gpu_type="A100-80GB", time="02:00:00")
    assert est(res, provider="aws").rate_usd_per_gpu_hour == 3.43
    own = est(res, provider="campus", rates={"a100_80gb": 0.5})
    assert (own.provider, own.rate_usd_per_gpu_hour, own.rate_from) == ("campus", 0.5, pricing.FROM_CONFIG)
    assert own.total_usd == pytest.approx(4 * 2 * 0.5)
    # an explicit, different --provider prices from the table, to compare
    assert est(res, cli_provider="runpod", provider="campus", rates={"A100-80GB": 0.5}).rate_usd_per_gpu_hour == 1.39
    # a GPU the table does not know, priced only by nexa.toml
    l40 = est(Resources(gpus_per_node=2, gpu_type="L40S", time="60"), rates={"L40S": 1.0})
    assert l40.total_usd == pytest.approx(2.0)


def test_gpu_type_from_cost_section():
    e = est(Resources(gpus_per_node=2, time="60"), gpu_type="a100-40gb", provider="lambda")
    assert (e.gpu_type, e.rate_usd_per_gpu_hour) == ("A100-40GB", 1.99)


@pytest.mark.parametrize(
    "res, cfg, problem",
    [
        (Resources(gpus_per_node=1, time="60"), {}, "no GPU type"),
        (Resources(gpus_per_node=1, gpu_type="h100"), {}, "no hours"),
        (Resources(gpus_per_node=1, gpu_type="a100", time="60"), {}, "ambiguous"),
        (Resources(gpus_per_node=1, gpu_type="L40S", time="60"), {}, "no price for GPU type 'L40S'"),
        (
            Resources(gpus_per_node=1, gpu_type="h100", time="60"),
            {"provider": "campus"},
            "from provider 'campus' (the table has aws, lambda)",
        ),
    ],
)
def test_no_figure_says_why(res, cfg, problem):
    e = est(res, **cfg)
    assert not e.priced and e.total_usd is None and problem in e.problem
    assert "unknown" in e.table()
    with pytest.raises(ConfigError, match="no cost estimate: .*" + problem.split(" (")[0].replace("(", r"\(")):
        e.require()


def test_cpu_only_costs_nothing():
    e = est(Resources(gpus_per_node=0), tasks=100)
    assert e.priced and e.total_usd == 0.0 and "no GPUs" in e.summary()


def test_bad_cost_config():
    with pytest.raises(ConfigError, match=r"nexa.toml: cost.currency: expected \"USD\""):
        est(Resources(gpus_per_node=1, gpu_type="h100", time="60"), currency="EUR")
    with pytest.raises(ConfigError, match="cost.rates.x: expected a number >= 0"):
        est(Resources(), rates={"x": -1.0})
    with pytest.raises(ConfigError, match="cost.rates.a100: GPU type 'a100' is ambiguous"):
        est(Resources(), rates={"a100": 1.0})


def test_json_has_the_documented_keys():
    e = est(Resources(gpus_per_node=2, gpu_type="rtx4090", time="00:30:00"), tasks=4)
    doc = json.loads(json.dumps(e.as_json()))
    for key in ("gpu_type", "provider", "rate_usd_per_gpu_hour", "tasks", "gpu_hours", "total_usd"):
        assert key in doc
    assert doc["gpu_hours"] == 4.0 and doc["total_usd"] == pytest.approx(2.96) and doc["hours_from"] == "time limit"


def test_table_stars_the_chosen_provider_and_shows_each_total():
    e = est(Resources(gpus_per_node=8, gpu_type="A100-80GB", time="10:00:00"), tasks=2, cli_provider="lambda")
    text = e.table()
    lines = text.splitlines()
    assert lines[0] == "Cost estimate: 2 task(s) x 1 node(s) x 8 GPU(s) x 10 h (time limit) = 160.00 GPU-hours"
    assert lines[1].split() == ["gpu", "provider", "sku", "region", "$/gpu-h", "total", "($)", "chosen"]
    chosen = [line for line in lines if line.rstrip().endswith("*")]
    assert len(chosen) == 1 and "lambda" in chosen[0] and "446.40" in chosen[0]
    assert any("aws" in line and "548.80" in line for line in lines)  # 160 x 3.43
    assert lines[-1] == "Estimated cost: $446.40 (lambda gpu_8x_a100_80gb_sxm4, price read 2025-12)"


def test_user_price_table_replaces_a_provider_row():
    extra = pricing.parse_price_table(
        {
            "price": [
                {
                    "gpu_type": "H100-80GB",
                    "provider": "aws",
                    "sku": "p5-reserved",
                    "usd_per_gpu_hour": 4.0,
                    "source": "contract",
                    "fetched": "2026-01",
                }
            ]
        },
        "mine.toml",
    )
    merged = pricing.merge_tables(TABLE, extra)
    e = pricing.estimate(Resources(gpus_per_node=1, gpu_type="h100", time="60"), 1, merged, CostConfig(provider="aws"))
    assert (e.sku, e.rate_usd_per_gpu_hour, e.source) == ("p5-reserved", 4.0, "contract")


@pytest.mark.parametrize(
    "table, message",
    [
        ({"currency": "EUR"}, 't.toml: currency: expected "USD"'),
        (
            {"price": [{"gpu_type": "X", "provider": "p", "usd_per_gpu_hour": -1}]},
            r"t.toml: price\[0\].usd_per_gpu_hour: expected a number >= 0",
        ),
        ({"price": [{"gpu_type": "X", "provider": "p"}]}, r"price\[0\].usd_per_gpu_hour: missing required key"),
        ({"price": [{"gpu_type": "X", "provider": "p", "usd_per_gpu_hour": 1, "colour": 1}]}, r"price\[0\].colour: unknown key"),
    ],
)
def test_bad_price_table(table, message):
    with pytest.raises(ConfigError, match=message):
        pricing.parse_price_table(table, "t.toml")


def test_actual_from_worker_records():
    records = {
        0: {"start": 100.25, "end": 160, "exit_code": 0},
        1: {"start": 100.0, "end": 220, "exit_code": 3},
        2: {"start": 150.0},  # running
        3: {"end": 101, "exit_code": 2},  # the worker failed before starting the program
        4: {"start": 200.7, "end": 200, "exit_code": 0},  # end is whole seconds: never negative
    }
    a = actual.actual_from_records(records, gpus_per_task=4, rate=2.0)
    seconds = 59.75 + 120
    assert a.gpu_hours == pytest.approx(seconds / 3600 * 4)
    assert a.usd == pytest.approx(seconds / 3600 * 4 * 2.0)
    assert (a.ok, a.failed, a.running, a.done, a.source) == (2, 2, 1, 4, "worker")


# What `sacct -n -P -X -o JobID,State,ElapsedRaw,ExitCode,AllocTRES -j 41,57` prints on a cluster
# with accounting (pipe-separated, no header; array elements as <array job>_<index>).
SACCT = """\
41_0|COMPLETED|3600|0:0|billing=16,cpu=16,gres/gpu=2,mem=64G,node=1
41_1|FAILED|1800|1:0|billing=16,cpu=16,gres/gpu=2,mem=64G,node=1
41_2|TIMEOUT|7200|0:15|billing=16,cpu=16,gres/gpu=2,mem=64G,node=1
41_3|RUNNING|600|0:0|billing=16,cpu=16,gres/gpu=2,mem=64G,node=1
41_[4-9]|PENDING|0|0:0|billing=16,cpu=16,mem=64G,node=1
57_0|CANCELLED by 0|60|0:0|cpu=1,mem=1G,node=1
99_0|COMPLETED|5|0:0|cpu=1
"""


def test_actual_from_sacct_bills_killed_tasks_and_maps_chunk_offsets():
    rows = slurm.parse_sacct(SACCT)
    assert rows[0].gpus == 2 and rows[5].state == "CANCELLED" and rows[5].gpus is None
    a, states = actual.actual_from_sacct(rows, {"41": 0, "57": 25}, gpus_per_task=2, rate=3.0)
    gpu_seconds = (3600 + 1800 + 7200) * 2 + 60 * 2
    assert a.gpu_hours == pytest.approx(gpu_seconds / 3600)
    assert a.usd == pytest.approx(gpu_seconds / 3600 * 3.0)
    assert (a.ok, a.failed, a.running, a.source) == (1, 3, 1, "sacct")
    assert states == {0: "COMPLETED", 1: "FAILED", 2: "TIMEOUT", 25: "CANCELLED"}


def test_actual_from_sacct_bills_every_attempt_of_a_resubmitted_task():
    """Task 1 failed in job 7 and was resubmitted as job 9 (same offset): both attempts ran
    and are billed; the later one says how the task ended."""
    text = "9_1|COMPLETED|400|0:0|gres/gpu=2\n7_0|COMPLETED|600|0:0|gres/gpu=2\n7_1|FAILED|300|1:0|gres/gpu=2\n"
    a, states = actual.actual_from_sacct(slurm.parse_sacct(text), {"7": 0, "9": 0}, gpus_per_task=2, rate=1.0)
    assert (a.ok, a.failed, a.running, states) == (2, 0, 0, {0: "COMPLETED", 1: "COMPLETED"})
    assert a.gpu_hours == pytest.approx((600 + 300 + 400) * 2 / 3600)
    pending = "7_0|COMPLETED|600|0:0|gres/gpu=2\n7_1|FAILED|300|1:0|gres/gpu=2\n9_1|PENDING|0|0:0|\n"
    a, states = actual.actual_from_sacct(slurm.parse_sacct(pending), {"7": 0, "9": 0}, gpus_per_task=2, rate=1.0)
    assert (a.ok, a.failed, a.done, states) == (1, 0, 1, {0: "COMPLETED"})  # task 1 is not over yet


def test_actual_from_sacct_skips_an_array_element_not_yet_recorded_as_one():
    """Seen on the real slurmdbd: a few seconds after an array's last element ends, it is
    listed under the bare array id; a plain job (nexa launch) is always listed so."""
    rows = slurm.parse_sacct("7|FAILED|1|2:0|billing=1,cpu=1,gres/gpu=2,node=1\n7_0|COMPLETED|1|0:0|billing=1,cpu=1,gres/gpu=2,node=1\n")
    a, states = actual.actual_from_sacct(rows, {"7": 0}, gpus_per_task=2, rate=1.0)
    assert (a.ok, a.failed, states) == (1, 0, {0: "COMPLETED"})
    a, states = actual.actual_from_sacct(rows[:1], {"7": 0}, gpus_per_task=2, rate=1.0, array=False)
    assert (a.ok, a.failed, states, a.gpu_hours) == (0, 1, {0: "FAILED"}, pytest.approx(2 / 3600))
