"""Plain-text layout shared by the commands and the library (pure, standard library only,
cheap to import: ``nexa status`` loads it for 10,000 rows without the results package)."""

from typing import List


def align(lines: List[List[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart, a dashed line under the header:
    the look of tabulate's "simple" format at a tenth of its cost for 10,000 rows."""
    widths = [max(map(len, column)) for column in zip(*lines)]
    out = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
