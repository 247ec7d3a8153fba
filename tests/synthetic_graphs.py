"""A small synthetic feature graph for the store, app-support and app tests (test code only: the library's
graphs come from `saelab.feature_circuits.sparse` and `.attribution`).

Shape: the prompt's tokens -> latents of each dictionary (one layer per dictionary) and an error node per
dictionary -> two logits, with deterministic weights and effects, edges between successive layers only.
"""

import numpy as np

from saelab.feature_circuits.types import FeatureEdge, FeatureGraph, FeatureNode, node_id
from saelab.testing.demo_workspace import DEMO_MODEL, DEMO_SAES, N_LAYERS

DEMO_DICTS = ((DEMO_SAES[0].sae_id, "0.attn_z", 0), (DEMO_SAES[2].sae_id, "1.resid_post", 1))
"""(sae_id, site, layer) of two demo-workspace SAEs: dashboards and SAE files exist for them."""
PROMPT_TOKENS = ("<|BOS|>", "When", " Mary", " and", " John")


def synthetic_graph(dicts=DEMO_DICTS, latents_per_dict: int = 4, kind: str = "attribution_graph",
                    model: str = DEMO_MODEL, seed: int = 0, positions: bool = True) -> FeatureGraph:
    rng = np.random.default_rng(seed)
    last = len(PROMPT_TOKENS) - 1
    tokens = [FeatureNode(node_id("token", position=p), "token", None, index=p, position=p, label=t)
              for p, t in enumerate(PROMPT_TOKENS)]
    layers: list[list[FeatureNode]] = [tokens]
    for sae_id, site, layer in dicts:
        nodes = []
        for j in range(latents_per_dict):
            latent, position = 3 * j + 1, (j % len(PROMPT_TOKENS) if positions else None)
            nodes.append(FeatureNode(node_id("latent", site, latent, position), "latent", layer, site, sae_id,
                                     latent, position, activation=float(rng.uniform(0.5, 3)),
                                     effect=round(float(rng.uniform(0.01, 1.0)) * (-1) ** j, 4)))
        nodes.append(FeatureNode(node_id("error", site, position=last if positions else None), "error", layer,
                                 site, sae_id, None, last if positions else None, effect=0.05))
        layers.append(nodes)
    logits = [FeatureNode(node_id("logit", index=i), "logit", N_LAYERS, index=i,
                          effect=1.0, label=label) for i, label in ((7, " Mary"), (9, " John"))]
    layers.append(logits)
    edges = [FeatureEdge(a.id, b.id, round(float(rng.normal(0, 1)), 4))
             for early, late in zip(layers, layers[1:], strict=False) for a in early for b in late]
    return FeatureGraph(kind=kind, model=model, dictionaries=tuple(d[0] for d in dicts),
                        nodes=tuple(n for layer in layers for n in layer), edges=tuple(edges),
                        task="ioi" if kind == "feature_circuit" else "",
                        prompt="When Mary and John",
                        metrics={"faithfulness": 0.8, "completeness": float("nan")},
                        params={"method": "synthetic", "threshold": 0.1, "seed": seed})
