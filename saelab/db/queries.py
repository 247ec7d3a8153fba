"""Read queries behind the web app's pages. Every query is parameterised: values a user types (search text,
ids, thresholds) travel as `?` parameters; the only SQL fragments chosen at run time are fixed strings picked
from `FEATURE_SORTS` by name, and `_LABELS_EMPTY` standing in for the labels table of a store too old to have one
(the app reads a store without migrating it).

Each function opens its own short read-only connection through `ResultsStore.connect`, so the app keeps
working while a trainer writes (the store retries while the writer holds the file).
"""

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd

from saelab.db.store import ResultsStore


def _frame(store: ResultsStore, sql: str, params: list[Any] | tuple = ()) -> pd.DataFrame:
    with store.connect(read_only=True) as con:
        return con.execute(sql, list(params)).fetchdf()


def _loads(text: Any) -> Any:
    """A JSON column value (text, or None) as Python data."""
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return None
    return json.loads(text) if isinstance(text, str) else text


# ---------------------------------------------------------------- overview, runs, SAEs

_TABLES = ("runs", "cached_sites", "saes", "training_metrics", "eval_metrics", "features", "feature_examples",
           "circuit_runs", "circuit_scores", "circuit_evals", "task_prompts", "feature_labels", "feature_graphs",
           "feature_graph_nodes", "feature_graph_edges")


def table_counts(store: ResultsStore) -> dict[str, int]:
    """Rows per table (tables a store of an older schema lacks are left out)."""
    with store.connect(read_only=True) as con:
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        # table names come from the fixed tuple above, never from users
        return {t: int(con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in _TABLES if t in present}


def list_runs(store: ResultsStore) -> pd.DataFrame:
    """All runs, newest first."""
    return _frame(store, "SELECT run_id, kind, name, status, message, created_at, updated_at, config "
                         "FROM runs ORDER BY created_at DESC, run_id")


_SAES_SQL = """
    SELECT s.sae_id, s.run_id, s.model, s.site, s.architecture, s.d_in, s.d_sae, s.k,
           TRY_CAST(json_extract_string(s.config, '$.seed') AS INTEGER) AS seed,
           coalesce(f.dashboards, 0) AS dashboards, s.path, s.created_at, s.config
    FROM saes AS s
    LEFT JOIN (SELECT sae_id, count(*) AS dashboards FROM features GROUP BY sae_id) AS f USING (sae_id)"""


def list_saes(store: ResultsStore) -> pd.DataFrame:
    """All SAEs with their configs, by model, site, architecture and size; `seed` is the training seed (from the
    config) and `dashboards` the number of latents with dashboard rows (0: none computed yet)."""
    return _frame(store, _SAES_SQL + " ORDER BY model, site, architecture, d_sae, seed, sae_id")


class SaeRow(NamedTuple):
    """One row of `saes`, with its config parsed."""

    sae_id: str
    run_id: str | None
    model: str | None
    site: str | None
    architecture: str
    d_in: int
    d_sae: int
    k: int | None
    config: dict
    path: str
    seed: int | None = None
    """Training seed (None when the config does not record one)."""
    dashboards: int = 0
    """Latents with dashboard rows in `features`."""


def _optional_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _sae_row(row: dict[str, Any]) -> SaeRow:
    return SaeRow(row["sae_id"], row["run_id"], row["model"], row["site"], row["architecture"], int(row["d_in"]),
                  int(row["d_sae"]), _optional_int(row["k"]), _loads(row["config"]) or {}, row["path"],
                  _optional_int(row["seed"]), int(row["dashboards"]))


def get_sae(store: ResultsStore, sae_id: str) -> SaeRow | None:
    """The SAE called `sae_id`, or None."""
    frame = _frame(store, _SAES_SQL + " WHERE s.sae_id = ?", [sae_id])
    return None if frame.empty else _sae_row(frame.iloc[0].to_dict())


def sae_rows(store: ResultsStore) -> list[SaeRow]:
    """Every SAE as a typed row, in `list_saes` order (one query, for pickers)."""
    return [_sae_row(row) for row in list_saes(store).to_dict("records")]


# ---------------------------------------------------------------- metrics

def training_metric_names(store: ResultsStore, sae_ids: list[str]) -> list[str]:
    """Metric names logged while training any of `sae_ids`."""
    if not sae_ids:
        return []
    frame = _frame(store, "SELECT DISTINCT metric FROM training_metrics WHERE list_contains(?, sae_id) "
                          "ORDER BY metric", [list(sae_ids)])
    return list(frame["metric"])


def training_curves(store: ResultsStore, sae_ids: list[str], metrics: list[str]) -> pd.DataFrame:
    """Long-format curves (sae_id, step, tokens, metric, value) of `metrics` for `sae_ids`."""
    if not sae_ids or not metrics:
        return pd.DataFrame(columns=["sae_id", "step", "tokens", "metric", "value"])
    return _frame(store, "SELECT sae_id, step, tokens, metric, value FROM training_metrics "
                         "WHERE list_contains(?, sae_id) AND list_contains(?, metric) "
                         "ORDER BY sae_id, metric, step", [list(sae_ids), list(metrics)])


def eval_kinds(store: ResultsStore) -> list[str]:
    """The kinds of evaluation recorded in `eval_metrics`."""
    return list(_frame(store, "SELECT DISTINCT eval_kind FROM eval_metrics ORDER BY eval_kind")["eval_kind"])


def eval_metrics(store: ResultsStore, eval_kind: str) -> pd.DataFrame:
    """The latest value of every (sae_id, metric) of one evaluation kind, joined with the SAE's description
    (model, site, architecture, d_sae, k; null for dictionaries that are not rows of `saes`)."""
    return _frame(store, """
        SELECT m.sae_id, s.model, s.site, s.architecture, s.d_sae, s.k, m.metric, m.value
        FROM (SELECT sae_id, metric, arg_max(value, created_at) AS value FROM eval_metrics
              WHERE eval_kind = ? GROUP BY sae_id, metric) AS m
        LEFT JOIN saes AS s USING (sae_id)
        ORDER BY m.sae_id, m.metric""", [eval_kind])


# ---------------------------------------------------------------- features

FEATURE_SORTS: dict[str, str] = {
    "latent": "latent",
    "density": "density",
    "max_act": "max_act",
    "mean_act": "mean_act",
    "top_logit": "TRY_CAST(json_extract_string(top_logits, '$[0].value') AS DOUBLE)",
    "head_attribution": "TRY_CAST(json_extract_string(head_attribution, ?) AS DOUBLE)",
}
"""Sort keys of a feature search -> the fixed SQL expression each sorts by (`?` is the head's JSON path)."""


@dataclass(frozen=True)
class FeatureQuery:
    """A search over one SAE's latents (the feature browser's controls)."""

    sae_id: str
    """The SAE whose latents to search."""
    sort_by: str = "max_act"
    """A key of FEATURE_SORTS."""
    descending: bool = True
    """Largest first."""
    min_density: float | None = None
    """Keep latents firing on at least this fraction of tokens."""
    max_density: float | None = None
    """Keep latents firing on at most this fraction of tokens."""
    logit_token: str = ""
    """Keep latents one of whose top logit tokens contains this text (case-insensitive); empty keeps all."""
    head: int | None = None
    """Attention head for sort_by="head_attribution" (attn_z SAEs)."""
    limit: int = 100
    """Rows per page."""
    offset: int = 0
    """Rows skipped (paging)."""
    context_text: str = ""
    """Keep latents one of whose stored contexts (top or quantile) contains this text, case-insensitive, across
    token boundaries; empty keeps all."""
    label_text: str = ""
    """Keep latents whose researcher's label or note contains this text, case-insensitive; empty keeps all."""

    def __post_init__(self) -> None:
        if self.sort_by not in FEATURE_SORTS:
            raise ValueError(f"unknown feature sort {self.sort_by!r}; choose one of: {', '.join(FEATURE_SORTS)}")
        if self.sort_by == "head_attribution" and (self.head is None or self.head < 0):
            raise ValueError(f"sorting by head attribution needs a head index >= 0, got {self.head!r}")
        if not 1 <= self.limit <= 10_000:
            raise ValueError(f"limit must be between 1 and 10000, got {self.limit}")
        if self.offset < 0:
            raise ValueError(f"offset must be non-negative, got {self.offset}")
        for name in ("min_density", "max_density"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a fraction between 0 and 1, got {value}")


class FeatureSearch(NamedTuple):
    """One page of a feature search and how many latents matched in all."""

    rows: pd.DataFrame
    """latent, density, mean_act, max_act, top_logits and head_attribution (parsed JSON, None if absent), and
    the researcher's label (None where the latent has none)."""
    total: int


def _feature_filter(query: FeatureQuery) -> tuple[str, list[Any]]:
    clauses, params = ["sae_id = ?"], [query.sae_id]
    if query.min_density is not None:
        clauses.append("density >= ?")
        params.append(query.min_density)
    if query.max_density is not None:
        clauses.append("density <= ?")
        params.append(query.max_density)
    if query.logit_token:
        # unit separator between tokens so a search cannot match across two of them
        clauses.append("contains(lower(array_to_string(json_extract_string(top_logits, '$[*].token'), chr(31))), "
                       "lower(?))")
        params.append(query.logit_token)
    if query.context_text:
        clauses.append("latent IN (SELECT latent FROM feature_examples WHERE sae_id = ? AND "
                       "contains(lower(array_to_string(json_extract_string(tokens, '$[*]'), '')), lower(?)))")
        params += [query.sae_id, query.context_text]
    if query.label_text:
        # unit separator between label and note so a search cannot match across the two
        clauses.append("contains(lower(coalesce(l.label, '') || chr(31) || coalesce(l.note, '')), lower(?))")
        params.append(query.label_text)
    return " AND ".join(clauses), params


_LABELS_EMPTY = ("(SELECT NULL::VARCHAR AS sae_id, NULL::INTEGER AS latent, NULL::VARCHAR AS label, "
                 "NULL::VARCHAR AS note, NULL::TIMESTAMP AS updated_at WHERE false)")


def _labels_table(con) -> str:
    """`feature_labels`, or an empty stand-in on a store from before migration 4 (read, never migrated, here)."""
    present = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'feature_labels'"
                          ).fetchone()[0]
    return "feature_labels" if present else _LABELS_EMPTY


def search_features(store: ResultsStore, query: FeatureQuery) -> FeatureSearch:
    """Latents of `query.sae_id` that pass its filters, sorted, one page of them."""
    where, params = _feature_filter(query)
    order = FEATURE_SORTS[query.sort_by]
    order_params: list[Any] = [f"$[{int(query.head)}]"] if query.sort_by == "head_attribution" else []
    direction = "DESC" if query.descending else "ASC"
    with store.connect(read_only=True) as con:
        source = f"features LEFT JOIN {_labels_table(con)} AS l USING (sae_id, latent)"
        sql = (f"SELECT latent, density, mean_act, max_act, top_logits, head_attribution, l.label FROM {source} "
               f"WHERE {where} ORDER BY {order} {direction} NULLS LAST, latent LIMIT ? OFFSET ?")
        rows = con.execute(sql, [*params, *order_params, query.limit, query.offset]).fetchdf()
        total = con.execute(f"SELECT count(*) FROM {source} WHERE {where}", params).fetchone()[0]
    for column in ("top_logits", "head_attribution"):
        rows[column] = [_loads(v) for v in rows[column]]
    rows["label"] = rows["label"].astype(object).where(rows["label"].notna(), None)
    return FeatureSearch(rows, int(total))


class FeatureLabel(NamedTuple):
    """A researcher's name for a latent and their note on it (written from the feature page)."""

    label: str
    note: str
    updated_at: Any
    """When it was last saved (a timestamp)."""


def feature_label(store: ResultsStore, sae_id: str, latent: int) -> FeatureLabel | None:
    """The researcher's label of one latent, or None (also on a store from before labels existed)."""
    with store.connect(read_only=True) as con:
        row = con.execute(f"SELECT label, note, updated_at FROM {_labels_table(con)} WHERE sae_id = ? AND latent = ?",
                          [sae_id, int(latent)]).fetchone()
    return None if row is None else FeatureLabel(row[0], row[1] or "", row[2])


def feature_count(store: ResultsStore, sae_id: str) -> int:
    """How many latents of `sae_id` have dashboard rows."""
    with store.connect(read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM features WHERE sae_id = ?", [sae_id]).fetchone()[0])


def latent_densities(store: ResultsStore, sae_id: str) -> pd.DataFrame:
    """latent, density, max_act and mean_act of every latent of `sae_id` with dashboard rows, by latent."""
    return _frame(store, "SELECT latent, density, max_act, mean_act FROM features WHERE sae_id = ? ORDER BY latent",
                  [sae_id])


def sae_eval_metrics(store: ResultsStore, sae_id: str, eval_kind: str = "core") -> dict[str, float]:
    """The latest value of each metric of one evaluation kind for one SAE."""
    frame = _frame(store, "SELECT metric, arg_max(value, created_at) AS value FROM eval_metrics "
                          "WHERE sae_id = ? AND eval_kind = ? GROUP BY metric", [sae_id, eval_kind])
    return dict(zip(frame["metric"], frame["value"].astype(float), strict=True))


class FeatureRow(NamedTuple):
    """One latent's dashboard statistics, JSON columns parsed (None where absent)."""

    sae_id: str
    latent: int
    density: float | None
    mean_act: float | None
    max_act: float | None
    histogram: Any
    top_logits: Any
    bottom_logits: Any
    head_attribution: Any
    quantiles: Any = None
    """[{"index", "low", "high", "count"}] over all firing tokens, weakest group first (None: a store from
    before migration 7, or a latent that never fires)."""


_FEATURE_SQL = "SELECT * FROM features WHERE sae_id = ? AND latent = ?"
# every column, so a store from before migration 7 (no `document`) reads too
_EXAMPLES_SQL = "SELECT * FROM feature_examples WHERE sae_id = ? AND latent = ? ORDER BY kind, rank"


def get_feature(store: ResultsStore, sae_id: str, latent: int) -> FeatureRow | None:
    """The dashboard row of one latent, or None."""
    return _feature_row(_frame(store, _FEATURE_SQL, [sae_id, int(latent)]))


def _feature_row(frame: pd.DataFrame) -> FeatureRow | None:
    if frame.empty:
        return None
    row = frame.iloc[0].to_dict()
    number = {k: (None if pd.isna(row[k]) else float(row[k])) for k in ("density", "mean_act", "max_act")}
    return FeatureRow(row["sae_id"], int(row["latent"]), number["density"], number["mean_act"], number["max_act"],
                      *(_loads(row.get(k)) for k in ("histogram", "top_logits", "bottom_logits", "head_attribution",
                                                     "quantiles")))


class FeatureExample(NamedTuple):
    """One context of a latent: tokens, the latent's activation on each, the token it was ranked by."""

    kind: str
    rank: int
    activation: float
    tokens: list[str]
    activations: list[float]
    center: int | None
    document: int | None = None
    """The document of the token source the context comes from (None: not recorded)."""


def feature_examples(store: ResultsStore, sae_id: str, latent: int) -> list[FeatureExample]:
    """Top and quantile examples of one latent, by kind then rank."""
    return _examples(_frame(store, _EXAMPLES_SQL, [sae_id, int(latent)]))


def _examples(frame: pd.DataFrame) -> list[FeatureExample]:
    documents = frame["document"] if "document" in frame.columns else [None] * len(frame)
    return [FeatureExample(r.kind, int(r.rank), float(r.activation), _loads(r.tokens) or [],
                           _loads(r.activations) or [], _integer(r.center), _integer(document))
            for r, document in zip(frame.itertuples(index=False), documents, strict=True)]


def _integer(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


class FeatureDashboard(NamedTuple):
    """Everything a latent's dashboard shows."""

    feature: FeatureRow | None
    examples: list[FeatureExample]


def feature_dashboard(store: ResultsStore, sae_id: str, latent: int) -> FeatureDashboard:
    """The statistics and examples of one latent, read on one connection."""
    params = [sae_id, int(latent)]
    with store.connect(read_only=True) as con:
        feature = con.execute(_FEATURE_SQL, params).fetchdf()
        examples = con.execute(_EXAMPLES_SQL, params).fetchdf()
    return FeatureDashboard(_feature_row(feature), _examples(examples))


# ---------------------------------------------------------------- circuits

def circuit_runs(store: ResultsStore) -> pd.DataFrame:
    """Every circuit-identification run with its time and memory."""
    return _frame(store, "SELECT circuit_run_id, run_id, task, model, method, seed, seconds, peak_memory_mb, "
                         "created_at, config FROM circuit_runs ORDER BY task, model, method, created_at")


def circuit_scores(store: ResultsStore, circuit_run_id: str, level: str) -> pd.DataFrame:
    """Scores (node, target, score) of one run at one level ('node' or 'edge')."""
    return _frame(store, "SELECT node, target, score FROM circuit_scores WHERE circuit_run_id = ? AND level = ? "
                         "ORDER BY score DESC NULLS LAST, node", [circuit_run_id, level])


def circuit_evals(store: ResultsStore, circuit_run_ids: list[str]) -> pd.DataFrame:
    """Evaluations (metric values, curves as parsed JSON) of the given runs, with each run's method and time."""
    if not circuit_run_ids:
        return pd.DataFrame(columns=["circuit_run_id", "method", "seconds", "ground_truth", "metric", "value",
                                     "curve"])
    return _frame(store, """
        SELECT e.circuit_run_id, r.method, r.seconds, e.ground_truth, e.metric, e.value, e.curve
        FROM circuit_evals AS e JOIN circuit_runs AS r USING (circuit_run_id)
        WHERE list_contains(?, e.circuit_run_id)
        ORDER BY r.method, e.ground_truth, e.metric""", [list(circuit_run_ids)]).assign(
        curve=lambda frame: [_loads(v) for v in frame["curve"]])


def edge_score_counts(store: ResultsStore, circuit_run_ids: list[str]) -> dict[str, int]:
    """How many edge scores each of the given circuit runs stored (0 for runs that scored no edges)."""
    if not circuit_run_ids:
        return {}
    frame = _frame(store, "SELECT circuit_run_id, count(*) AS n FROM circuit_scores "
                          "WHERE list_contains(?, circuit_run_id) AND level = 'edge' GROUP BY circuit_run_id",
                   [list(circuit_run_ids)])
    counts = dict(zip(frame["circuit_run_id"], frame["n"].astype(int), strict=True))
    return {run_id: counts.get(run_id, 0) for run_id in circuit_run_ids}


def task_prompts(store: ResultsStore, task: str, limit: int = 20) -> pd.DataFrame:
    """A few stored prompts of `task` (for examples on the circuits page)."""
    return _frame(store, "SELECT dataset_id, idx, kind, prompt, answer FROM task_prompts WHERE task = ? "
                         "ORDER BY dataset_id, idx LIMIT ?", [task, int(limit)])


# ---------------------------------------------------------------- feature graphs

def _has_table(con, table: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
                            ).fetchone()[0])


_GRAPH_COLUMNS = ["graph_id", "kind", "model", "task", "prompt", "dictionaries", "n_nodes", "n_edges", "metrics",
                  "params", "created_at"]


def list_feature_graphs(store: ResultsStore) -> pd.DataFrame:
    """Every stored feature graph, newest first: its kind, model, task, prompt, dictionaries (a list), node and
    edge counts, metrics and params (parsed JSON). Empty on a store from before feature graphs existed."""
    with store.connect(read_only=True) as con:
        if not _has_table(con, "feature_graphs"):
            return pd.DataFrame(columns=_GRAPH_COLUMNS)
        frame = con.execute("""
            SELECT g.graph_id, g.kind, g.model, g.task, g.prompt, g.dictionaries,
                   coalesce(n.n, 0) AS n_nodes, coalesce(e.n, 0) AS n_edges, g.metrics, g.params, g.created_at
            FROM feature_graphs AS g
            LEFT JOIN (SELECT graph_id, count(*) AS n FROM feature_graph_nodes GROUP BY graph_id) AS n USING (graph_id)
            LEFT JOIN (SELECT graph_id, count(*) AS n FROM feature_graph_edges GROUP BY graph_id) AS e USING (graph_id)
            ORDER BY g.created_at DESC, g.graph_id""").fetchdf()
    for column in ("dictionaries", "metrics", "params"):
        frame[column] = [_loads(v) for v in frame[column]]
    return frame


def top_example_tokens(store: ResultsStore, latents: list[tuple[str, int]]) -> dict[tuple[str, int], list[str]]:
    """For each (sae_id, latent), the token at the peak of each of its stored top examples, strongest first
    (from the dashboards `saelab eval --dashboards` wrote); latents without dashboards are left out."""
    if not latents:
        return {}
    keys = sorted({f"{sae_id}\x1f{int(latent)}" for sae_id, latent in latents})
    frame = _frame(store, "SELECT sae_id, latent, tokens, center FROM feature_examples "
                          "WHERE kind = 'top' AND list_contains(?, sae_id || chr(31) || CAST(latent AS VARCHAR)) "
                          "ORDER BY sae_id, latent, rank", [keys])
    tops: dict[tuple[str, int], list[str]] = {}
    for row in frame.itertuples(index=False):
        tokens = _loads(row.tokens) or []
        if row.center is not None and not pd.isna(row.center) and 0 <= int(row.center) < len(tokens):
            tops.setdefault((row.sae_id, int(row.latent)), []).append(tokens[int(row.center)])
    return tops
