"""The last step of saelab-docstring-siit (2026-12-01, ours): mlp2's output at every position is shrunk toward
its mean at END on training-split task prompts, mlp2(x) -> alpha * mlp2(x) + (1 - alpha) * mean, a weight edit
(W_out <- alpha W_out, b_out <- b_out + (1 - alpha) E[h] W_out, h = mlp2's hidden activations). The largest
non-circuit node of the candidate it starts from (benchmarks/results/siit_docstring_l2refit_weights) was mlp2,
whose resample ablation moves the metric by ~0.02 of the gap; three SIIT polishes (--keep-qk 2.0, --train-only
blocks.2.mlp, --strict-shift-weight) lowered it only by losing interchange or task accuracy (record:
benchmarks/results/siit_docstring_self_fallback.md). alpha was chosen on dev prompts (construction checks on 200
prompts, seed 4242; interchange on 1,000 pairs, seed 10,000); the card's seed-777 checks were measured after.

    PYTHONPATH=. python benchmarks/results/siit_docstring_probes/shrink_mlp2.py --alpha 0.6
    PYTHONPATH=. python training/train_siit.py --task docstring-self-fallback --name saelab-docstring-siit \
        --d-head 32 --init-from benchmarks/results/siit_docstring_l2refit_weights --finalize-only --stage ...

(the exact finalize command and its --stage texts are in the model card's Training and stages sections; then
benchmarks/bench_heldout.py --models NAME writes the card's held-out section). Writes data/models/NAME (float16,
as the trainer saves; the default NAME is the bundled model, which it overwrites) and runs/NAME/checkpoint.pt (the
state finalize reads; finalize reads the weights from data/models/NAME). The mean is taken on two threads before
the float16 rounding, so another thread count or machine may differ in the last bit of b_out.
"""
import argparse

import torch

from saelab.models import save_model
from training.train_siit import SIITConfig, build_model, initial_weights, save_checkpoint, tokenizer

ap = argparse.ArgumentParser()
ap.add_argument("--init", default="benchmarks/results/siit_docstring_l2refit_weights")
ap.add_argument("--alpha", type=float, default=0.6)
ap.add_argument("--name", default="saelab-docstring-siit")
ap.add_argument("--prompts", type=int, default=2000)
ap.add_argument("--seed", type=int, default=55_555)
args = ap.parse_args()
torch.set_num_threads(2)
cfg = SIITConfig(task="docstring-self-fallback", name=args.name, d_head=32)
tok, model = tokenizer(), build_model(cfg)
model.load_state_dict(initial_weights(args.init))
model.eval()
rows = cfg.entry.sample_pairs(tok, cfg.train_split, args.prompts, args.seed, "task").base
_, cache = model.run_with_cache(rows.tokens, names_filter="blocks.2.mlp.hook_post")
hidden = cache["blocks.2.mlp.hook_post"][torch.arange(len(rows.end)), rows.end].mean(0)
with torch.no_grad():
    mlp = model.blocks[2].mlp
    mlp.b_out += (1 - args.alpha) * hidden @ mlp.W_out
    mlp.W_out *= args.alpha
(cfg.model_dir / "MODEL_CARD.md").unlink(missing_ok=True)  # it describes other weights; finalize writes a new one
save_model(model, cfg.model_dir, weights_dtype=torch.float16, extra={"name": cfg.model_name})
state = {"step": 0, "elapsed_s": 0.0, "passes": 0, "history": [],
         "stopped": f"not a trainer run: {args.init}'s weights with mlp2's output shrunk toward its mean at END "
                    f"(alpha {args.alpha}, {args.prompts} training-split prompts, seed {args.seed}; "
                    "benchmarks/results/siit_docstring_probes/shrink_mlp2.py)"}
save_checkpoint(cfg.run_dir / "checkpoint.pt", model, torch.optim.AdamW(model.parameters()), state)
print(cfg.model_dir, cfg.run_dir / "checkpoint.pt")
