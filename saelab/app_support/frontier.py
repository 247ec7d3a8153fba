"""The sparsity–fidelity frontier of a set of SAEs (FVU against L0, lower is better on both)."""

import pandas as pd

FVU_NAMES = ("fvu", "fraction_variance_unexplained", "frac_variance_unexplained")
"""Core-metric names read as the fraction of variance unexplained, first found wins."""
L0_NAMES = ("l0", "mean_l0")
"""Core-metric names read as the mean number of active latents per token."""


def _first_present(columns: pd.Index, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in columns), None)


def frontier_points(core: pd.DataFrame) -> pd.DataFrame:
    """One row per SAE with architecture, l0 and fvu, from long core metrics (sae_id, architecture, metric,
    value, and site when present); SAEs missing either metric are left out. Columns: sae_id, architecture,
    site, d_sae, l0, fvu."""
    columns = ["sae_id", "architecture", "site", "d_sae", "l0", "fvu"]
    if core.empty:
        return pd.DataFrame(columns=columns)
    wide = core.pivot_table(index="sae_id", columns="metric", values="value", aggfunc="last")
    fvu, l0 = _first_present(wide.columns, FVU_NAMES), _first_present(wide.columns, L0_NAMES)
    if fvu is None or l0 is None:
        return pd.DataFrame(columns=columns)
    meta = core.assign(site=core["site"] if "site" in core.columns else None)
    meta = meta.drop_duplicates("sae_id").set_index("sae_id")[["architecture", "site", "d_sae"]]
    points = wide[[l0, fvu]].rename(columns={l0: "l0", fvu: "fvu"}).join(meta).dropna(subset=["l0", "fvu"])
    points["architecture"] = points["architecture"].fillna("(not an SAE row)")
    points["site"] = points["site"].fillna("(no site)")
    return points.reset_index()[columns]


def pareto_frontier(points: pd.DataFrame, x: str = "l0", y: str = "fvu") -> pd.DataFrame:
    """The points no other point beats on both x and y (lower is better), sorted by x."""
    ordered = points.sort_values([x, y]).reset_index(drop=True)
    keep, best = [], float("inf")
    for i, value in enumerate(ordered[y]):
        if value < best:
            keep.append(i)
            best = value
    return ordered.iloc[keep].reset_index(drop=True)
