"""SAE training data on saelab-ioi-siit's own distribution (`saelab.workflows.train.siit_batches`)."""

import random

import pytest
import torch

from saelab.activations.collect import forward_sites
from saelab.activations.sites import HookSite
from saelab.circuits.siit import TRAIN_SPLIT, encode_specs, sample_spec
from saelab.models import bundled_models, load_model
from saelab.workflows.train import SAESpec, TrainSpec, siit_batches, train_on_siit

NAME = "saelab-ioi-siit"
needs_siit = pytest.mark.skipif(
    not any(m.name == NAME and m.available for m in bundled_models()), reason=f"{NAME} is not available"
)


@pytest.fixture(scope="module")
def siit():
    torch.set_num_threads(1)
    return load_model(NAME)


def _prompt_rows(model, site: HookSite, seed: int) -> torch.Tensor:
    """The first 256 prompts' activations at every position 1..END, drawn as `siit_batches` draws them."""
    rng = random.Random(seed)
    specs = [sample_spec(rng, TRAIN_SPLIT, rng.choice(TRAIN_SPLIT.templates), abc=rng.random() < 0.5)
             for _ in range(256)]
    prompts = encode_specs(model.tokenizer, specs)
    with torch.no_grad():
        act = forward_sites(model, prompts.tokens, [site])[site]
    act = act.reshape(*act.shape[:2], -1)
    return torch.cat([act[i, 1 : int(prompts.end[i]) + 1] for i in range(len(prompts.end))])


@needs_siit
def test_batches_are_the_positions_after_bos_up_to_end(siit):
    """Every row of a batch is one of the prompts' rows at positions 1..END: no BOS row, none past END
    (padding or the answer)."""
    site = HookSite(1, "attn_z")
    wanted = _prompt_rows(siit, site, seed=3)
    stream = siit_batches(siit, [site], batch_size=64, seed=3)
    batches = [next(stream)[str(site)] for _ in range(len(wanted) // 64)]  # one shuffled pass
    batch = batches[0]
    assert batch.shape == (64, siit.cfg.n_heads * siit.cfg.d_head)
    rows = torch.cat(batches)
    distance = torch.cdist(rows, wanted, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    assert distance.max() < 1e-4

    def distinct(x: torch.Tensor) -> int:  # rows repeat: position 1 sees only BOS and the first word
        return len(torch.unique((x * 1e3).round(), dim=0))

    assert distinct(rows) > distinct(wanted) - 64  # the pass uses every position 1..END, END and 1 included
    with torch.no_grad():
        bos = forward_sites(siit, torch.full((1, 1), siit.tokenizer.bos_token_id), [site])
    assert torch.cdist(batch, bos[site].reshape(1, -1)).min() > 1e-3


@needs_siit
def test_train_on_siit_writes_one_sae_per_spec_entry(siit, tmp_path):
    spec = TrainSpec(model=NAME, saes=(SAESpec(site="0.attn_z", width=32, k=4),
                                       SAESpec(site="2.mlp_out", width=32, k=4)),
                     tokens=4096, batch_size=1024, checkpoint_every_tokens=None)
    saes = train_on_siit(siit, spec, tmp_path)
    assert sorted(p.name.split("-")[0] for p in saes.values()) == ["0.attn_z", "2.mlp_out"]
    assert all((path / "cfg.json").exists() for path in saes.values())


@pytest.mark.skipif(not any(m.name == "saelab-docstring-siit" and m.available for m in bundled_models()),
                    reason="saelab-docstring-siit is not available")
def test_docstring_batches_are_its_task_prompts_positions_after_bos_up_to_end():
    """task="docstring": rows come from the docstring entry's task prompts of its training split (not IOI's),
    positions 1..END only."""
    from saelab.circuits.siit import siit_task

    model = load_model("saelab-docstring-siit")
    entry, site = siit_task("docstring"), HookSite(2, "attn_z")
    rng = random.Random(5)
    split = entry.train_split(frozenset())
    prompts = entry.encode(model.tokenizer, [entry.pair_specs(rng, split, "task", entry.source_share)[0]
                                             for _ in range(256)])
    with torch.no_grad():
        act = forward_sites(model, prompts.tokens, [site])[site]
    act = act.reshape(*act.shape[:2], -1)
    wanted = torch.cat([act[i, 1 : int(prompts.end[i]) + 1] for i in range(len(prompts.end))])
    stream = siit_batches(model, [site], batch_size=64, seed=5, task="docstring")
    rows = torch.cat([next(stream)[str(site)] for _ in range(len(wanted) // 64)])
    distance = torch.cdist(rows, wanted, compute_mode="donot_use_mm_for_euclid_dist").min(1).values
    assert distance.max() < 1e-4
    with pytest.raises(ValueError):
        next(siit_batches(model, [site], batch_size=64, seed=5, task="nope"))
