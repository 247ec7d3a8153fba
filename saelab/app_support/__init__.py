"""Helpers behind the web app (`app/`): pure functions the pages call, kept out of `app/` so they are
testable and the pages stay a thin shell.

Where the library lacks a piece a page needs (per-token top latents of a prompt, direct feature attribution
of attention SAEs), a small function in `saelab.app_support.prompts` composes the library pieces that exist;
that module loads torch and TransformerLens, so it is imported from there, not from this package, which every
page imports. How `saelab app` starts the server is `saelab.cli.app`.
"""

from saelab.app_support.circuits import HeadGrid, ground_truth_heads, head_grid, parse_head_node, roc_points
from saelab.app_support.frontier import frontier_points, pareto_frontier
from saelab.app_support.render import (
    context_html,
    histogram_bars,
    logit_entries,
    strongest_heads,
    token_spans_html,
    visible_token,
)
from saelab.app_support.resources import (
    AppContext,
    MissingArtifactError,
    dashboards_command,
    open_context,
    resolve_sae_dir,
    workspace_from_argv,
)

__all__ = [
    "AppContext",
    "HeadGrid",
    "MissingArtifactError",
    "context_html",
    "dashboards_command",
    "frontier_points",
    "ground_truth_heads",
    "head_grid",
    "histogram_bars",
    "logit_entries",
    "open_context",
    "pareto_frontier",
    "parse_head_node",
    "resolve_sae_dir",
    "roc_points",
    "strongest_heads",
    "token_spans_html",
    "visible_token",
    "workspace_from_argv",
]
