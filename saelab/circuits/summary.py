"""Mean ± std over seeds of circuit results, and the methods × tasks table."""

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from saelab.circuits.registry import METHODS
from saelab.circuits.scoring import mean_std


class RunRecord(NamedTuple):
    """One method run on one seed, as the table needs it (from memory or from the results store)."""

    task: str
    model: str
    method: str
    seed: int
    seconds: float
    peak_mb: float
    values: dict[str, float]
    """Evaluation metrics by name (node_auc, edge_auc, head_edge_auc, …)."""


def _fmt(stat: tuple[float, float] | None, n: int) -> str:
    if stat is None or math.isnan(stat[0]):
        return "—"
    return f"{stat[0]:.3f} ± {stat[1]:.3f}" if n > 1 else f"{stat[0]:.3f}"


class SummaryRow(NamedTuple):
    """One method's results on one task, aggregated over seeds."""

    task: str
    model: str
    method: str
    n_seeds: int
    node_auc: tuple[float, float] | None
    edge_auc: tuple[float, float] | None
    edge_auc_heads_only: bool
    """The edge AUC is over head → head pairs (the method scores no other edges)."""
    seconds: float
    peak_mb: float

    @property
    def node_auc_text(self) -> str:
        return _fmt(self.node_auc, self.n_seeds)

    @property
    def edge_auc_text(self) -> str:
        text = _fmt(self.edge_auc, self.n_seeds)
        return text + " †" if self.edge_auc_heads_only and self.edge_auc is not None else text


def _stat(records: Sequence[RunRecord], key: str) -> tuple[float, float] | None:
    values = [r.values[key] for r in records if key in r.values and not math.isnan(r.values[key])]
    return mean_std(values) if values else None


def summarize(records: Iterable[RunRecord]) -> list[SummaryRow]:
    """Group by (task, model, method) and aggregate over seeds."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.task, r.model, r.method), []).append(r)
    rows = []
    for (task, model, method), group in groups.items():
        heads_only = method in METHODS and METHODS[method].edge_scope == "heads"
        rows.append(SummaryRow(task, model, method, len(group), _stat(group, "node_auc"),
                               _stat(group, "head_edge_auc" if heads_only else "edge_auc"), heads_only,
                               mean_std([r.seconds for r in group])[0], max(r.peak_mb for r in group)))
    return rows


def records_from_runs(runs, task: str, model: str) -> list[RunRecord]:
    """RunRecords of `runner.MethodRun`s."""
    return [RunRecord(task, model, r.method, r.seed, r.scores.seconds, r.scores.peak_memory_mb,
                      dict(r.evaluation.values) if r.evaluation else {}) for r in runs]


def summary_rows(runs, task: str = "", model: str = "") -> list[SummaryRow]:
    return summarize(records_from_runs(runs, task, model))


def markdown_table(rows: Sequence[SummaryRow], columns: Sequence[tuple[str, str, str]]) -> str:
    """Methods × (task, model) columns; each cell "node AUC ± std / edge AUC / seconds".

    `columns` lists (header, task, model)."""
    by_key = {(r.task, r.model, r.method): r for r in rows}
    methods = sorted({r.method for r in rows}, key=lambda m: (not m.startswith("sae_codes"), m))
    lines = ["| method | " + " | ".join(h for h, _, _ in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for method in methods:
        cells = []
        for _, task, model in columns:
            row = by_key.get((task, model, method))
            cells.append("—" if row is None else
                         f"{row.node_auc_text} / {row.edge_auc_text} / {row.seconds:.1f} s")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def time_ratio(rows: Sequence[SummaryRow], task: str, model: str, slow: str = "acdc", fast: str = "sae_codes"
               ) -> float | None:
    """Mean seconds of `slow` over mean seconds of `fast` on (task, model), if both ran."""
    by_method = {r.method: r for r in rows if r.task == task and r.model == model}
    if slow not in by_method or fast not in by_method or by_method[fast].seconds <= 0:
        return None
    return by_method[slow].seconds / by_method[fast].seconds
