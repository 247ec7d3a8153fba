"""Mean ± std over seeds of circuit results, and the tables that read every method against the baselines."""

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from saelab.circuits.registry import METHODS
from saelab.circuits.scoring import mean_std

Stat = tuple[float, float] | None
"""(mean, std) over seeds, or None where no seed has the value."""


class RunRecord(NamedTuple):
    """One method run on one seed, as the table needs it (from memory or from the results store)."""

    task: str
    model: str
    method: str
    seed: int
    seconds: float
    peak_mb: float
    values: dict[str, float]
    """Evaluation metrics by name (node_auc, node_ap, edge_auc, head_edge_auc, …)."""


def stat_text(stat: Stat, n: int) -> str:
    """"mean ± std" over n seeds ("mean" for one seed, "—" for none)."""
    if stat is None or math.isnan(stat[0]):
        return "—"
    return f"{stat[0]:.3f} ± {stat[1]:.3f}" if n > 1 else f"{stat[0]:.3f}"


class SummaryRow(NamedTuple):
    """One method's results on one task, aggregated over seeds."""

    task: str
    model: str
    method: str
    n_seeds: int
    node_auc: Stat
    edge_auc: Stat
    edge_auc_heads_only: bool
    """The edge metrics are over head → head pairs (the method scores no other edges)."""
    seconds: float
    peak_mb: float
    node_precision: Stat = None
    """Precision of the top-|circuit| heads."""
    node_ap: Stat = None
    edge_precision: Stat = None
    edge_ap: Stat = None

    @property
    def node_auc_text(self) -> str:
        return stat_text(self.node_auc, self.n_seeds)

    @property
    def edge_auc_text(self) -> str:
        text = stat_text(self.edge_auc, self.n_seeds)
        return text + " †" if self.edge_auc_heads_only and self.edge_auc is not None else text


def _stat(records: Sequence[RunRecord], key: str) -> Stat:
    values = [r.values[key] for r in records if key in r.values and not math.isnan(r.values[key])]
    return mean_std(values) if values else None


VARIANT_ROWS = {"from_pairs": "pair→head"}
"""Node-score variants shown as rows of their own: the paper's head score from pair counts."""


def summarize(records: Iterable[RunRecord]) -> list[SummaryRow]:
    """Group by (task, model, method) and aggregate over seeds; a method's node-score variant named in
    VARIANT_ROWS gets its own row "METHOD (LABEL)"."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.task, r.model, r.method), []).append(r)
    rows = []
    for (task, model, method), group in groups.items():
        heads_only = method in METHODS and METHODS[method].edge_scope == "heads"
        edge = "head_edge" if heads_only else "edge"
        seconds, peak = mean_std([r.seconds for r in group])[0], max(r.peak_mb for r in group)
        rows.append(SummaryRow(task, model, method, len(group), _stat(group, "node_auc"),
                               _stat(group, f"{edge}_auc"), heads_only, seconds, peak,
                               _stat(group, "node_precision_at_size"), _stat(group, "node_ap"),
                               _stat(group, f"{edge}_precision_at_size"), _stat(group, f"{edge}_ap")))
        for variant, label in VARIANT_ROWS.items():
            if _stat(group, f"node_{variant}_auc") is not None:
                rows.append(SummaryRow(task, model, f"{method} ({label})", len(group),
                                       _stat(group, f"node_{variant}_auc"), None, False, seconds, peak,
                                       _stat(group, f"node_{variant}_precision_at_size"),
                                       _stat(group, f"node_{variant}_ap")))
    return rows


def records_from_runs(runs, task: str, model: str) -> list[RunRecord]:
    """RunRecords of `runner.MethodRun`s."""
    return [RunRecord(task, model, r.method, r.seed, r.scores.seconds, r.scores.peak_memory_mb,
                      dict(r.evaluation.values) if r.evaluation else {}) for r in runs]


def summary_rows(runs, task: str = "", model: str = "") -> list[SummaryRow]:
    return summarize(records_from_runs(runs, task, model))


def _base(method: str) -> str:
    return method.split(" (")[0]


def _kind(method: str) -> str:
    spec = METHODS.get(_base(method))
    return spec.kind if spec is not None else "method"


def reading(row: SummaryRow, rows: Sequence[SummaryRow], truth_by_patching: bool = True) -> str:
    """How a method's node AUC reads against the baselines of the same column: the best baseline it does
    not beat (mean ± std), or that it beats them all; plus a warning where the ground truth is made of
    the method's own kind of ablation (`truth_by_patching`; not for circuits known by construction)."""
    spec = METHODS.get(_base(row.method))
    if spec is not None and spec.kind == "baseline":
        return "baseline"
    notes = []
    baselines = [b for b in rows if _kind(b.method) == "baseline" and b.node_auc is not None]
    if row.node_auc is not None and baselines:
        best = max(baselines, key=lambda b: b.node_auc[0])
        if abs(row.node_auc[0] - best.node_auc[0]) < 5e-4:
            notes.append(f"**ties baseline {best.method}** ({best.node_auc[0]:.3f})")
        elif row.node_auc[0] < best.node_auc[0]:
            notes.append(f"**baseline {best.method} wins** ({best.node_auc[0]:.3f})")
        elif row.node_auc[0] - row.node_auc[1] <= best.node_auc[0] + best.node_auc[1]:
            notes.append(f"above every baseline, within one std of {best.method}")
        else:
            notes.append("above every baseline")
    if spec is not None and spec.self_scored and truth_by_patching:
        notes.append("scored partly against itself (ground truth is resample patching)")
    return "; ".join(notes)


def markdown_table(rows: Sequence[SummaryRow], columns: Sequence[tuple[str, str, str]]) -> str:
    """Methods × (task, model) columns; each cell "node AUC ± std / edge AUC / seconds".

    `columns` lists (header, task, model)."""
    by_key = {(r.task, r.model, r.method): r for r in rows}
    methods = sorted({r.method for r in rows}, key=_order)
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


def _order(method: str) -> tuple[int, str]:
    """Baselines first, then the discrete-SAE methods, then the rest, alphabetically within each."""
    rank = 0 if _kind(method) == "baseline" else 1 if method.startswith("sae_codes") else 2
    return rank, method


def column_table(rows: Sequence[SummaryRow], task: str, model: str, truth_by_patching: bool = True) -> str:
    """One (task, model) column as a table: a row per method with node and edge AUC, precision at the
    circuit's size, average precision, seconds, and how it reads against the baselines."""
    mine = sorted((r for r in rows if r.task == task and r.model == model), key=lambda r: _order(r.method))
    lines = [
        "| method | node AUC | node P@size | node AP | edge AUC | edge P@size | edge AP | s | read against "
        "baselines |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    most = max((r.n_seeds for r in mine), default=0)
    for r in mine:
        n = r.n_seeds
        name = r.method if n == most else f"{r.method} (only {n} seed{'s' if n > 1 else ''})"
        edge_mark = " †" if r.edge_auc_heads_only and r.edge_auc is not None else ""
        cells = [
            stat_text(r.node_auc, n),
            stat_text(r.node_precision, n),
            stat_text(r.node_ap, n),
            stat_text(r.edge_auc, n) + edge_mark,
            stat_text(r.edge_precision, n),
            stat_text(r.edge_ap, n),
            f"{r.seconds:.1f}",
            reading(r, mine, truth_by_patching),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def time_ratio(rows: Sequence[SummaryRow], task: str, model: str, slow: str = "acdc", fast: str = "sae_codes"
               ) -> float | None:
    """Mean seconds of `slow` over mean seconds of `fast` on (task, model), if both ran."""
    by_method = {r.method: r for r in rows if r.task == task and r.model == model}
    if slow not in by_method or fast not in by_method or by_method[fast].seconds <= 0:
        return None
    return by_method[slow].seconds / by_method[fast].seconds
