"""evals/feature_circuits.py: the dev-seed choice of T_N, and the aligned-head report on saelab-ioi-siit (its
counts add up to the circuit, its position fraction is the hand ratio of per-position effects)."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evals"))

import feature_circuits as script  # noqa: E402  (evals/ is a folder of scripts, not a package)

from saelab.circuits.problem import problem_from_task  # noqa: E402
from saelab.feature_circuits import sparse  # noqa: E402
from saelab.models import load_model  # noqa: E402
from saelab.sae import SAE, SAEConfig  # noqa: E402
from saelab.sae.io import load_sae, save_sae  # noqa: E402
from saelab.tasks import get_task  # noqa: E402


def test_the_largest_threshold_that_keeps_dev_faithfulness_is_chosen() -> None:
    # not monotone, and exactly 0.9 counts
    faithfulness = {0.003: 1.0, 0.01: 0.95, 0.03: 0.4, 0.1: 0.9, 0.3: 0.89, 1.0: 0.0}
    rows = [{"node_threshold": t, "faithfulness": f} for t, f in faithfulness.items()]
    assert script.choose(rows) == 0.1
    assert script.choose([{**r, "faithfulness": 0.5} for r in rows]) == min(script.GRID)  # none: most nodes


@pytest.fixture(scope="module")
def siit_run(tmp_path_factory) -> tuple[Path, dict]:
    """The script on saelab-ioi-siit with random TopK SAEs of its three attn_z sites, at a fixed T_N."""
    root = tmp_path_factory.mktemp("fc")
    model = load_model("saelab-ioi-siit")
    d_in = model.cfg.n_heads * model.cfg.d_head
    for layer in range(model.cfg.n_layers):
        site = f"{layer}.attn_z"
        cfg = SAEConfig(architecture="topk", d_in=d_in, d_sae=48, k=4, hook_site=site, seed=layer)
        save_sae(SAE(cfg), root / site)
    saes = [str(root / f"{layer}.attn_z") for layer in range(model.cfg.n_layers)]
    out = root / "out.json"
    assert script.main(["--model", "saelab-ioi-siit", "--task", "ioi", "--saes", *saes, "--prompts", "8",
                        "--node-threshold", "0.03", "--draws", "1", "--threads", "1", "--out", str(out)]) == 0
    return root, json.loads(out.read_text())


def test_aligned_report_adds_up_to_the_circuit(siit_run) -> None:
    _, result = siit_run
    aligned = result["aligned"]
    assert aligned["aligned_heads"] == ["0.2", "1.1", "2.3"]  # from data/circuits/saelab-ioi-siit/ioi.json
    counts, effects = aligned["latents_per_component"], aligned["abs_effect_per_component"]
    in_circuit = sum(d["circuit_latents"] for d in result["per_dictionary"])
    assert in_circuit > 0 and sum(counts.values()) == aligned["circuit_latents"] == in_circuit
    assert aligned["latents_in_aligned_heads"] == sum(counts.get(h, 0) for h in aligned["aligned_heads"])
    share = sum(effects.get(h, 0.0) for h in aligned["aligned_heads"]) / sum(effects.values())
    assert aligned["abs_effect_fraction_in_aligned_heads"] == pytest.approx(share)
    assert result["node_threshold"] == 0.03 and result["edge_threshold"] == pytest.approx(0.003)


def test_position_fraction_is_the_share_of_effect_at_the_named_position(siit_run) -> None:
    root, _ = siit_run
    model, task = load_model("saelab-ioi-siit"), get_task("ioi")
    placed = sparse.place(model, {"1.attn_z": load_sae(root / "1.attn_z")})
    data = task.generate(model.tokenizer, 8, 100, vocabulary="tiny")
    wanted = [(0, j, ("S2",)) for j in range(5)] + [(0, 7, ("end", "S2"))]  # a head aligned at two positions
    at, even = script.position_fraction(model, placed, task, data, wanted)
    # by hand: each wanted latent's |∇m·Δa| at the named position of each prompt, over all its positions
    batch = problem_from_task(task, data, len(data)).batches[0]
    clean, _ = sparse.recorded_states(model, placed, batch.clean, batch.end)
    corrupt, _ = sparse.recorded_states(model, placed, batch.corrupted, batch.end)
    grads = sparse.attribution_gradients(model, placed, batch, clean, corrupt,
                                         sparse.FeatureCircuitConfig(node_method="attrib"))
    effect = (grads[0].acts * (corrupt[0].acts - clean[0].acts)).abs()  # [prompt, position, latent]
    hand_at = hand_even = hand_total = 0.0
    for _, j, names in wanted:
        for prompt in range(len(data)):
            row = effect[prompt, :, j]
            length = int(batch.end[prompt]) + 1  # positions 0..end
            hand_at += sum(float(row[int(data.positions[name][prompt])]) for name in names)
            hand_even += len(names) * float(row.sum()) / length
            hand_total += float(row.sum())
    assert hand_total > 0
    assert at == pytest.approx(hand_at / hand_total, rel=1e-5)
    assert even == pytest.approx(hand_even / hand_total, rel=1e-5)
    assert not torch.isclose(torch.tensor(at), torch.tensor(even))  # the named position is not an average one
