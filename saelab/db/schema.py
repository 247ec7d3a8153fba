"""The results-store schema: one ordered list of forward migrations, the only place that defines tables.

Version N of the schema is what migrations 1..N create. A store records its version in `schema_version`;
opening an older store applies the missing migrations in one transaction.
"""

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs, SAEs, metrics, features, circuits", (
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, kind VARCHAR NOT NULL, name VARCHAR, config JSON,
            status VARCHAR NOT NULL, message VARCHAR,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
        """CREATE TABLE cached_sites (
            run_id VARCHAR NOT NULL, model VARCHAR NOT NULL, site VARCHAR NOT NULL, dtype VARCHAR NOT NULL,
            d INTEGER NOT NULL, n_tokens BIGINT NOT NULL, manifest_path VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
        """CREATE TABLE saes (
            sae_id VARCHAR PRIMARY KEY, run_id VARCHAR, model VARCHAR, site VARCHAR, architecture VARCHAR NOT NULL,
            d_in INTEGER NOT NULL, d_sae INTEGER NOT NULL, k INTEGER, config JSON, path VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
        """CREATE TABLE training_metrics (
            run_id VARCHAR NOT NULL, sae_id VARCHAR NOT NULL, step BIGINT NOT NULL, tokens BIGINT NOT NULL,
            metric VARCHAR NOT NULL, value DOUBLE)""",
        """CREATE TABLE eval_metrics (
            run_id VARCHAR, sae_id VARCHAR NOT NULL, eval_kind VARCHAR NOT NULL, metric VARCHAR NOT NULL,
            value DOUBLE, created_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
        """CREATE TABLE features (
            sae_id VARCHAR NOT NULL, latent INTEGER NOT NULL, density DOUBLE, mean_act DOUBLE, max_act DOUBLE,
            histogram JSON, top_logits JSON, bottom_logits JSON, head_attribution JSON,
            PRIMARY KEY (sae_id, latent))""",
        """CREATE TABLE feature_examples (
            sae_id VARCHAR NOT NULL, latent INTEGER NOT NULL, kind VARCHAR NOT NULL, rank INTEGER NOT NULL,
            activation DOUBLE, tokens JSON, activations JSON, center INTEGER)""",
        """CREATE TABLE circuit_runs (
            circuit_run_id VARCHAR PRIMARY KEY, run_id VARCHAR, task VARCHAR NOT NULL, model VARCHAR NOT NULL,
            method VARCHAR NOT NULL, config JSON, seed INTEGER, seconds DOUBLE, peak_memory_mb DOUBLE,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
        """CREATE TABLE circuit_scores (
            circuit_run_id VARCHAR NOT NULL, level VARCHAR NOT NULL, node VARCHAR NOT NULL, target VARCHAR,
            score DOUBLE)""",
        """CREATE TABLE circuit_evals (
            circuit_run_id VARCHAR NOT NULL, ground_truth VARCHAR NOT NULL, metric VARCHAR NOT NULL,
            value DOUBLE, curve JSON)""",
    )),
    Migration(2, "task datasets and per-metric indexes", (
        """CREATE TABLE task_prompts (
            dataset_id VARCHAR NOT NULL, task VARCHAR NOT NULL, seed INTEGER NOT NULL, idx INTEGER NOT NULL,
            kind VARCHAR NOT NULL, prompt VARCHAR NOT NULL, answer VARCHAR, attributes JSON)""",
        "CREATE INDEX training_metrics_sae ON training_metrics (sae_id, metric)",
        "CREATE INDEX feature_examples_latent ON feature_examples (sae_id, latent)",
    )),
    Migration(3, "one metric row per key; the process that owns a run", (
        # Two processes training the same run once stored each row twice: keep the first of each key.
        """CREATE TABLE training_metrics_keyed (
            run_id VARCHAR NOT NULL, sae_id VARCHAR NOT NULL, step BIGINT NOT NULL, tokens BIGINT NOT NULL,
            metric VARCHAR NOT NULL, value DOUBLE, PRIMARY KEY (run_id, sae_id, step, metric))""",
        """INSERT INTO training_metrics_keyed SELECT run_id, sae_id, step, tokens, metric, value
            FROM training_metrics
            QUALIFY row_number() OVER (PARTITION BY run_id, sae_id, step, metric ORDER BY rowid) = 1""",
        "DROP INDEX training_metrics_sae",
        "DROP TABLE training_metrics",
        "ALTER TABLE training_metrics_keyed RENAME TO training_metrics",
        "CREATE INDEX training_metrics_sae ON training_metrics (sae_id, metric)",
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
    )),
    Migration(4, "researchers' labels and notes on latents", (
        # written by the app (its one write), one row per latent: saving again replaces the row
        """CREATE TABLE feature_labels (
            sae_id VARCHAR NOT NULL, latent INTEGER NOT NULL, label VARCHAR NOT NULL, note VARCHAR,
            updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp, PRIMARY KEY (sae_id, latent))""",
    )),
    Migration(5, "transcoders: the site a dictionary reconstructs and its width", (
        # NULL for an SAE (it reconstructs its own input at `site`, d_in wide)
        "ALTER TABLE saes ADD COLUMN output_site VARCHAR",
        "ALTER TABLE saes ADD COLUMN d_out INTEGER",
    )),
    Migration(6, "feature graphs: feature circuits and attribution graphs, their nodes and edges", (
        # one row per graph; metrics as a JSON object (NaN stored as null), dictionaries as a JSON list of sae_ids
        """CREATE TABLE feature_graphs (
            graph_id VARCHAR PRIMARY KEY, run_id VARCHAR, kind VARCHAR NOT NULL, model VARCHAR NOT NULL,
            task VARCHAR, prompt VARCHAR, dictionaries JSON, metrics JSON, params JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp)""",
        # `ord` keeps the graph's own node and edge order, so a loaded graph equals the saved one
        """CREATE TABLE feature_graph_nodes (
            graph_id VARCHAR NOT NULL, ord INTEGER NOT NULL, node VARCHAR NOT NULL, kind VARCHAR NOT NULL,
            layer INTEGER, site VARCHAR, dictionary VARCHAR, idx INTEGER, position INTEGER, activation DOUBLE,
            effect DOUBLE, label VARCHAR, PRIMARY KEY (graph_id, node))""",
        """CREATE TABLE feature_graph_edges (
            graph_id VARCHAR NOT NULL, ord INTEGER NOT NULL, source VARCHAR NOT NULL, target VARCHAR NOT NULL,
            weight DOUBLE, PRIMARY KEY (graph_id, ord))""",
    )),
    Migration(7, "dashboards: the document of each example, and each latent's exact quantile groups", (
        # NULL on rows written before: the app falls back to telling shifted copies apart by their text
        "ALTER TABLE feature_examples ADD COLUMN document BIGINT",
        # [{"index", "low", "high", "count"}] over all of the latent's firing tokens, weakest group first
        "ALTER TABLE features ADD COLUMN quantiles JSON",
    )),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def pending(current_version: int) -> list[Migration]:
    """The migrations a store at `current_version` still needs, in order."""
    return [m for m in MIGRATIONS if m.version > current_version]
