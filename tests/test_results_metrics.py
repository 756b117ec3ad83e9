"""Reading metrics files (pure): the protocol's rules, bad lines, requeued attempts."""

import json

import pytest

from nexa_ops.results import metrics


def lines(*objects):
    return ("\n".join(o if isinstance(o, str) else json.dumps(o) for o in objects) + "\n").encode()


def test_numbers_are_metrics_step_orders_them_other_keys_are_text():
    parsed = metrics.parse(lines({"step": 1, "loss": 0.5, "acc": 1, "phase": "warmup"}, {"step": 2, "loss": 0.25, "ok": True, "tags": [1]}))
    assert parsed.points == {"loss": {1: 0.5, 2: 0.25}, "acc": {1: 1}}
    assert parsed.text == {"phase": "warmup", "ok": "true", "tags": "[1]"}
    assert (parsed.lines, parsed.skipped) == (2, 0)
    assert list(parsed.points) == ["loss", "acc"]  # the order first seen


def test_without_step_the_place_in_the_file_is_the_step():
    parsed = metrics.parse(lines({"loss": 3}, {"loss": 2}, {"loss": 1, "step": "soon"}))
    assert parsed.points["loss"] == {0: 3, 1: 2, 2: 1}


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        "42",
        '"text"',
        '{"loss": NaN}',
        '{"loss": Infinity}',
        '{"loss": -Infinity}',
        '{"loss": 1e999}',
        '{"loss": -1E+0400}',
        '{"loss": 1' + "0" * 400 + "}",
        '{"loss": 0.1}, {"loss": 0.2}',  # two objects on one line: not a line of the protocol
        "\xff\xfe",
    ],
)
def test_bad_lines_are_skipped_and_counted_never_fatal(bad):
    data = lines({"step": 1, "loss": 0.5}) + bad.encode("latin-1") + b"\n" + lines({"step": 2, "loss": 0.4})
    parsed = metrics.parse(data)
    assert parsed.points == {"loss": {1: 0.5, 2: 0.4}}
    assert (parsed.lines, parsed.skipped) == (2, 1)


def test_a_half_written_last_line_is_skipped_and_blank_lines_ignored():
    data = lines({"step": 1, "loss": 0.5}) + b"\n  \n" + b'{"step": 2, "lo'
    parsed = metrics.parse(data)
    assert parsed.points == {"loss": {1: 0.5}}
    assert (parsed.lines, parsed.skipped) == (1, 1)
    # a complete last line without its newline is a line
    assert metrics.parse(b'{"loss": 1}\n{"loss": 2}').points == {"loss": {0: 1, 1: 2}}


def test_small_exponents_and_long_strings_of_digits_in_text_are_fine():
    parsed = metrics.parse(lines({"loss": 1e-300, "big": 1.5e300, "id": "1" * 400}))
    assert parsed.points == {"loss": {0: 1e-300}, "big": {0: 1.5e300}} and parsed.skipped == 0


def test_a_requeued_attempt_appends_and_its_steps_replace_the_first_ones():
    first = lines(*({"step": s, "loss": 10.0 - s} for s in (1, 2, 3)))
    again = lines(*({"step": s, "loss": 5.0 - s} for s in (2, 3, 4)))  # resumed from the step-1 checkpoint
    summary = metrics.summarise(metrics.parse(first + again))
    assert summary.last == {"loss": 1.0} and summary.low == {"loss": 1.0} and summary.high == {"loss": 9.0}
    assert summary.steps == 4 and summary.lines == 6
    assert metrics.series(metrics.parse(first + again), "loss") == [(1, 9.0), (2, 3.0), (3, 2.0), (4, 1.0)]


def test_last_is_the_value_at_the_highest_step_not_the_last_line():
    summary = metrics.summarise(metrics.parse(lines({"step": 9, "acc": 0.9}, {"step": 3, "acc": 0.3})))
    assert summary.last == {"acc": 0.9}


def test_empty_and_missing_files(tmp_path):
    assert metrics.parse(b"") == metrics.Parsed()
    assert metrics.parse(b"\n\n") == metrics.Parsed()
    assert metrics.read(tmp_path / "nope.jsonl") == metrics.Parsed()
    assert metrics.read_run(tmp_path) == {}


def test_read_run_takes_only_task_files(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "0.jsonl").write_bytes(lines({"loss": 1}))
    (folder / "12.jsonl").write_bytes(lines({"loss": 2}, "garbage"))
    for name in ("007.jsonl", "x.jsonl", "3.json", "\u0663.jsonl", ".4.jsonl.tmp"):
        (folder / name).write_bytes(lines({"loss": 9}))
    found = metrics.read_run(tmp_path)
    assert sorted(found) == [0, 12]
    assert found[12].last == {"loss": 2} and found[12].skipped == 1
    assert metrics.metrics_path(tmp_path, 12) == folder / "12.jsonl"


@pytest.mark.parametrize(
    "objects",
    [
        [{"step": s, "loss": 1 / s, "acc": s / 10, "tag": f"t{s}"} for s in range(1, 9)],
        [{"loss": 3 - s, "done": s > 1, "extra": None} for s in range(3)],  # no steps; bools and null are text
        [{"step": 2, "loss": 1.0}, {"loss": 0.5, "step": 1}, {"step": 2, "loss": 0.25}],  # key order, a step again
        [{"step": 1, "loss": 1.0}, {"step": 2, "loss": "diverged"}],  # a number, then text
        [{"step": 1, "loss": 1.0}, {"step": 2, "acc": 0.5}],  # other keys
        [{"step": 1, "loss": 1.0}, {"step": True, "loss": 2.0}],  # a step that is no number
        [{"step": 1, "loss": 1.0}, '{"step": 2, "loss": 1e999}'],  # an infinity, as json reads 1e999
        [{"step": 1.5, "loss": 10**400}],  # an integer beyond a float
    ],
)
def test_the_column_reader_agrees_with_the_line_reader(objects):
    data = lines(*objects)
    reference = metrics.Parsed()
    metrics._add(reference, metrics._each_line(data.strip(), reference), check=True)
    assert metrics.parse(data) == reference
