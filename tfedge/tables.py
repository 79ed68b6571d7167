"""One plain-text table printer for every result object (``format_table``) and the CLI.

>>> print(format_table([["conv", 12, "4.0%"], ["dense", 3, "0.5%"]], ["layer", "channels", "sparsity"]))
layer  channels  sparsity
-----  --------  --------
conv         12      4.0%
dense         3      0.5%
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(
    rows: Sequence[Sequence[Any]], headers: Sequence[str], *, title: str | None = None, indent: str = ""
) -> str:
    """Columns sized to their widest cell; text columns left-aligned, numeric ones right-aligned.

    A column is numeric when every non-empty cell in it is a number or ends in ``%``/``B``/``x``
    after a digit. ``None`` prints as ``-``.
    """
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for j, c in enumerate(row):
            widths[j] = max(widths[j], len(c))

    def numeric(j: int) -> bool:
        values = [row[j] for row in rows if j < len(row) and row[j] is not None]
        return bool(values) and all(
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            or isinstance(v, str)
            and v[:1].lstrip("-+").isdigit()
            and v[-1:] in "%Bx0123456789"
            for v in values
        )

    right = [numeric(j) for j in range(len(headers))]

    def line(parts: Sequence[str]) -> str:
        out = [p.rjust(w) if r else p.ljust(w) for p, w, r in zip(parts, widths, right)]
        return (indent + "  ".join(out)).rstrip()

    lines = [title] if title else []
    lines += [line(list(headers)), line(["-" * w for w in widths])]
    lines += [line(row) for row in cells]
    return "\n".join(lines)


__all__ = ["format_table"]
