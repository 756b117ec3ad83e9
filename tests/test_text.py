"""``nexa_ops.text``: the plain-text table of ``nexa status`` and ``nexa results``."""

from nexa_ops.text import align


def test_columns_padded_to_the_widest_cell_under_a_dashed_line():
    text = align([["task", "state", "exit"], ["0", "COMPLETED", "0"], ["10", "FAILED", ""]])
    assert text.splitlines() == [
        "task  state      exit",
        "----  ---------  ----",
        "0     COMPLETED  0",
        "10    FAILED",  # no trailing blanks
    ]
