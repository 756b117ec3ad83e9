"""nexa_ops/style.py: the one table layout and when output is coloured (pure; the real
terminal and pipe cases run the CLI in tests/test_cli_usage.py)."""

import io

import pytest

from nexa_ops import style


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_layout_is_lower_case_headers_over_dashes_two_spaces_apart():
    text = style.layout(["task", "state", "log"], [[0, "COMPLETED", None], [12, "FAILED", "x.out"]], right=[0])
    assert text.splitlines() == [
        "task  state      log",
        "----  ---------  -----",
        "   0  COMPLETED",
        "  12  FAILED     x.out",
    ]


def test_layout_measures_coloured_cells_by_what_shows():
    red = style.paint("FAILED", "red", True)
    plain = style.layout(["s", "n"], [["FAILED", 1], ["COMPLETED", 2]])
    coloured = style.layout(["s", "n"], [[red, 1], ["COMPLETED", 2]])
    assert style.ANSI_RE.sub("", coloured) == plain
    assert red == "\x1b[31mFAILED\x1b[0m" and style.visible_len(red) == 6


def test_layout_of_no_rows_is_the_header():
    assert style.layout(["a", "bb"], []) == "a  bb\n-  --"


@pytest.mark.parametrize(
    "env, tty, flag, expected",
    [
        ({}, True, None, True),
        ({}, False, None, False),  # a pipe, a file, cron
        ({"NO_COLOR": "1"}, True, None, False),
        ({"NO_COLOR": ""}, True, None, True),  # no-color.org: only a non-empty value counts
        ({"TERM": "dumb"}, True, None, False),
        ({}, True, False, False),  # --no-color
    ],
)
def test_colour_only_on_a_terminal_without_no_color(monkeypatch, env, tty, flag, expected):
    monkeypatch.setattr(style, "COLOR", flag)
    stream = Tty() if tty else io.StringIO()
    assert style.color_enabled(stream, env) is expected


def test_paint_off_leaves_the_text_alone():
    assert style.paint("FAILED", "red", False) == "FAILED"
    assert style.paint("", "red", True) == ""
