"""The one table every scenario prints."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    figure: str
    value: float | None
    unit: str
    baseline: float | None = None  # measured in the same run
    baseline_label: str = ""
    bar: str = ""  # e.g. "ratio >= 0.5", ">= 20000", "<= 300"
    ok: bool | None = None
    ratio: float | None = None  # set by add(); value / baseline unless given


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if v else "0"


class Table:
    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[Row] = []
        self.notes: list[str] = []

    def add(self, row: Row, *, lo: float | None = None, hi: float | None = None,
            on_ratio: bool = False) -> Row:
        if row.ratio is None and row.value is not None and row.baseline:
            row.ratio = row.value / row.baseline
        probe = row.ratio if on_ratio else row.value
        if probe is not None and (lo is not None or hi is not None):
            row.ok = (lo is None or probe >= lo) and (hi is None or probe <= hi)
        elif lo is not None or hi is not None:
            row.ok = False  # nothing measured: the bar does not hold
        self.rows.append(row)
        return row

    def render(self) -> str:
        head = ["figure", "value", "baseline (same run)", "ratio", "bar", "holds"]
        body = []
        for r in self.rows:
            base = "-" if r.baseline is None else f"{fmt(r.baseline)} {r.unit} ({r.baseline_label})"
            holds = {True: "yes", False: "NO", None: "-"}[r.ok]
            body.append([r.figure, f"{fmt(r.value)} {r.unit}", base,
                         "-" if r.ratio is None else f"{r.ratio:.2f}", r.bar or "-", holds])
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [f"### {self.title}", "", line(head),
               "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(b) for b in body]
        if self.notes:
            out.append("")
            out += [f"- {n}" for n in self.notes]
        return "\n".join(out)
