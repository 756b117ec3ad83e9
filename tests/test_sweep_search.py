"""The halving schedule and the promotion decision, pure (nexa_ops/sweep/search.py)."""

import pytest

from nexa_ops.sweep import search
from nexa_ops.sweep.search import Decision, Outcome, Schedule


def plan(n=9, eta=3, low=1, high=9, mode="min"):
    return search.plan(n, "epochs", "val_loss", mode, eta, low, high)


@pytest.mark.parametrize(
    "low, high, eta, expected",
    [
        (1, 27, 3, [1, 3, 9, 27]),
        (1, 9, 3, [1, 3, 9]),
        (1, 10, 3, [1, 3, 9, 10]),  # the last rung clipped to max
        (2, 9, 3, [2, 6, 9]),
        (1, 2, 3, [1, 2]),
        (1, 16, 2, [1, 2, 4, 8, 16]),
        (0.5, 4.0, 2, [0.5, 1.0, 2.0, 4.0]),
    ],
)
def test_budgets_grow_by_eta_up_to_max(low, high, eta, expected):
    assert search.budgets(low, high, eta) == expected


def test_sizes_floor_by_eta_at_least_one():
    assert search.sizes(9, 3, 3) == [9, 3, 1]
    assert search.sizes(10, 3, 4) == [10, 3, 1, 1]
    assert search.sizes(2, 3, 3) == [2, 1, 1]
    assert search.sizes(100, 2, 5) == [100, 50, 25, 12, 6]


def test_schedule_layout_and_units():
    s = plan()
    assert [(r.rung, r.budget, r.trials) for r in s.rungs] == [(0, 1, 9), (1, 3, 3), (2, 9, 1)]
    assert s.task_count == 27 and s.most_tasks == 13
    assert s.index(1, 4) == 13 and s.locate(13) == (1, 4) and s.locate(8) == (0, 8)
    assert s.budget_units == 9 * 1 + 3 * 3 + 1 * 9 and s.full_units == 81
    assert s.min == 1 and s.max == 9 and s.is_last(2) and not s.is_last(1)


def test_schedule_json_round_trip_and_refusal():
    s = plan(n=5, eta=2, low=1, high=8, mode="max")
    assert Schedule.from_json(s.as_json()) == s
    for bad in ({}, dict(s.as_json(), method="grid"), dict(s.as_json(), n="x"), dict(s.as_json(), mode="up")):
        with pytest.raises(ValueError):
            Schedule.from_json(bad)


def outcomes(values, failed=(), silent=()):
    out = []
    for trial, value in enumerate(values):
        if trial in failed:
            out.append(Outcome(trial, "FAILED", None))
        elif trial in silent:
            out.append(Outcome(trial, "COMPLETED", None))
        else:
            out.append(Outcome(trial, "COMPLETED", value))
    return out


def test_decide_keeps_the_best_third_ties_by_configuration_index():
    # (x - 3)^2 + 1 for x = 0..8: trials 2 and 4 tie, 1 and 5 tie; trial 3 (the best) failed
    values = [(x - 3) ** 2 + 1.0 for x in range(9)]
    d = search.decide(plan(), 0, outcomes(values, failed={3}), decided_at="T", by="test")
    assert d.keep == 3 and d.promoted == [2, 4, 1] and not d.final and d.winner is None
    assert d.next_budget == 3 and d.budget == 1 and d.by == "test" and d.decided_at == "T"
    verdicts = {v.trial: v for v in d.verdicts}
    assert verdicts[3].promoted is False and verdicts[3].rank is None and "FAILED" in verdicts[3].why
    assert verdicts[5].rank == 4 and not verdicts[5].promoted and "below the best 3" in verdicts[5].why
    assert verdicts[1].why == "rank 3 of 8 by val_loss (min): in the best 3"
    assert [v.index for v in d.verdicts] == list(range(9))
    assert d.summary() == "promoted 3 of 8 with val_loss: 2, 4, 1"


def test_decide_max_mode_and_failed_or_silent_never_promoted():
    s = plan(n=6, eta=2, low=1, high=4, mode="max")
    d = search.decide(s, 0, outcomes([0.1, 0.9, 0.95, 0.5, 0.99, 0.2], failed={4}, silent={2}))
    assert d.keep == 3 and d.promoted == [1, 3, 5]
    assert {v.trial: v.promoted for v in d.verdicts}[4] is False
    assert "reported no val_loss" in {v.trial: v.why for v in d.verdicts}[2]


def test_keep_counts_the_trials_that_entered_not_those_that_qualified():
    # 9 entered, only 2 qualified: both go on (floor(9/3) = 3 would be kept)
    d = search.decide(plan(), 0, outcomes([5.0, 1.0] + [0.0] * 7, failed=set(range(2, 9))))
    assert d.promoted == [1, 0] and d.keep == 3


def test_a_trial_without_an_end_record_is_never_promoted():
    d = search.decide(plan(n=3), 0, [Outcome(0, None, 0.1), Outcome(1, "COMPLETED", 0.5), Outcome(2, "TIMEOUT", 0.01)])
    assert d.promoted == [1]
    assert "no end record" in d.verdicts[0].why and "TIMEOUT" in d.verdicts[2].why


def test_the_last_rung_names_a_winner():
    d = search.decide(plan(), 2, [Outcome(2, "COMPLETED", 1.11)])
    assert d.final and d.winner == 2 and d.promoted == [] and d.keep == 1 and d.next_budget is None
    assert d.summary() == "winner: trial 2 (val_loss = 1.11)"
    assert d.verdicts[0].why == "the best of the last rung: the winner"


def test_nothing_qualified_stops_the_schedule():
    d = search.decide(plan(), 1, outcomes([1.0, 2.0, 3.0], failed={0, 1, 2}))
    assert d.final and d.winner is None and d.promoted == []
    assert d.summary() == "stopped: no trial of 3 completed with val_loss"


def test_nan_and_inf_never_qualify():
    seen = [Outcome(0, "COMPLETED", float("nan")), Outcome(1, "COMPLETED", float("inf")), Outcome(2, "COMPLETED", 7.0)]
    d = search.decide(plan(n=3), 0, seen)
    assert d.promoted == [2]


def test_decision_json_round_trip():
    d = search.decide(plan(), 0, outcomes([(x - 3) ** 2 + 1.0 for x in range(9)], failed={3}), decided_at="T", by="job 7")
    doc = d.as_json()
    assert doc["summary"] == d.summary() and doc["trials"][3]["state"] == "FAILED"
    back = Decision.from_json(doc)
    assert back == d
    with pytest.raises(ValueError):
        Decision.from_json({"rung": 0})


# --- where a schedule stands -------------------------------------------------------------------


def entry(rung, trials, jobs=("100",), promote="101", **extra):
    return dict({"rung": rung, "trials": list(trials), "job_ids": list(jobs), "promote_job_id": promote}, **extra)


def status(entries, decisions=None, errors=None, buckets=None, states=None, **kw):
    s = plan()
    return search.schedule_status(s, entries, decisions or {}, errors or {}, buckets or {}, states or {}, **kw)


def test_status_running_then_deciding():
    st = status([entry(0, range(9))], buckets={i: "running" for i in range(9)}, states={"101": "PENDING"})
    assert st.state == "running" and not st.finished
    assert [r.state for r in st.rungs] == ["running", "planned", "planned"]
    assert st.rungs[0].buckets["running"] == 9 and st.rungs[0].note == "promotion job 101 PENDING"
    st = status([entry(0, range(9))], buckets={i: "done" for i in range(9)}, states={"101": "RUNNING"})
    assert st.rungs[0].state == "deciding" and st.state == "running"
    assert st.summary() == "rung 0 of 2 (epochs=1): deciding; schedule running"


def test_status_finished_with_a_winner():
    s = plan()
    d0 = search.decide(s, 0, outcomes([(x - 3) ** 2 + 1.0 for x in range(9)], failed={3}))
    d1 = search.decide(s, 1, [Outcome(t, "COMPLETED", float(t)) for t in (2, 4, 1)])
    d2 = search.decide(s, 2, [Outcome(1, "COMPLETED", 0.5)])
    entries = [entry(0, range(9)), entry(1, [1, 2, 4], ("110",), "111"), entry(2, [1], ("120",), "121")]
    st = status(entries, {0: d0, 1: d1, 2: d2}, buckets={i: "done" for i in range(27)})
    assert st.state == "finished" and st.finished and st.winner == 1
    assert [r.state for r in st.rungs] == ["decided"] * 3 and st.message == "winner: trial 1 (val_loss = 0.5)"
    assert st.as_json()["rung_status"][0]["promoted"] == [2, 4, 1]


def test_status_failed_promotion_job():
    st = status([entry(0, range(9))], buckets={i: "done" for i in range(9)}, states={"101": "FAILED"})
    assert st.state == "failed" and st.finished and "promotion job 101 FAILED without a decision" in st.message
    st = status([entry(0, range(9))], buckets={i: "done" for i in range(9)}, states={"101": None})
    assert st.state == "failed" and "Slurm no longer knows it" in st.message
    error = {"job_id": "101", "error": "sbatch exited with 1: Unable to open file"}
    st = status([entry(0, range(9))], errors={0: error}, states={"101": "FAILED"})
    assert st.state == "failed" and st.message == "promotion failed: sbatch exited with 1: Unable to open file"
    # an error of an earlier promotion job (a resume has submitted another since) does not count
    st = status([entry(0, range(9), promote="130")], errors={0: error}, states={"130": "PENDING"})
    assert st.state == "running"


def test_status_cancelled():
    st = status([entry(0, range(9))], buckets={i: "failed" for i in range(9)}, states={"101": "CANCELLED"}, cancelled=True)
    assert st.state == "cancelled" and st.finished and "nexa resume" in st.message


def test_status_of_a_rung_being_submitted():
    # submitted by a promotion job that is still running: fine; by one that died: failed
    e = entry(1, [1, 2, 4], ("110",), None, by_job="101")
    d0 = search.decide(plan(), 0, outcomes([(x - 3) ** 2 + 1.0 for x in range(9)]))
    st = status([entry(0, range(9)), e], {0: d0}, states={"101": "RUNNING"})
    assert st.rungs[1].state == "running" and "being submitted by promotion job 101" in st.rungs[1].note
    st = status([entry(0, range(9)), e], {0: d0}, states={"101": "COMPLETED"})
    assert st.state == "failed" and "no promotion job was submitted" in st.message
    # from the command line: a grace period, then failed
    e0 = entry(0, range(9), promote=None, by_job=None, submitting_since=1000.0)
    assert status([e0], now=1010.0).state == "running"
    assert status([e0], now=1000.0 + search.SUBMIT_GRACE + 1).state == "failed"


def test_status_decided_but_next_rung_never_submitted():
    d0 = search.decide(plan(), 0, outcomes([(x - 3) ** 2 + 1.0 for x in range(9)]))
    st = status([entry(0, range(9))], {0: d0}, states={"101": "RUNNING"})
    assert st.state == "running"
    st = status([entry(0, range(9))], {0: d0}, states={"101": "COMPLETED"})
    assert st.state == "failed" and st.message == "rung 1 was never submitted (nexa resume submits it)"
    st = status([entry(0, range(9))], {0: d0}, states={"101": "COMPLETED"}, cancelled=True)
    assert st.state == "cancelled"


def test_status_local_runs_have_no_promotion_jobs():
    st = status([entry(0, range(9), jobs=(), promote=None)], buckets={i: "done" for i in range(9)}, local=True)
    assert st.state == "running" and st.rungs[0].state == "deciding"


def test_status_names_the_error_of_a_promotion_job_that_decided_then_failed():
    d0 = search.decide(plan(), 0, outcomes([(x - 3) ** 2 + 1.0 for x in range(9)]))
    error = {"job_id": "101", "error": "sbatch exited with 1: Unable to open file"}
    st = status([entry(0, range(9))], {0: d0}, errors={0: error}, states={"101": "FAILED"})
    assert st.state == "failed"
    why = "sbatch exited with 1: Unable to open file"
    assert st.message == f"promotion job 101 decided rung 0, then failed: {why} (nexa resume submits rung 1)"


def test_status_names_the_error_of_a_promotion_job_that_submitted_a_rung_then_failed():
    d0 = search.decide(plan(), 0, outcomes([(x - 3) ** 2 + 1.0 for x in range(9)]))
    e = entry(1, [1, 2, 4], ("110",), None, by_job="101")
    error = {"job_id": "101", "error": "sbatch exited with 1: Job violates accounting/QOS policy"}
    st = status([entry(0, range(9)), e], {0: d0}, errors={0: error}, states={"101": "FAILED"})
    assert st.state == "failed" and st.message.startswith("promotion job 101 submitted rung 1, then failed: sbatch exited with 1")
