"""Which of MOVER's (head 2.0's) rotary dimension pairs carry its match: on clean training-distribution prompts
(600, seed 7), the mean over prompts of each pair's contribution to the pre-softmax score of the answer's key
(C_def) minus its mean over the other signature arguments, from END. A pair j rotates by theta_j radians per
token of distance (TransformerLens' rotary: dimension j pairs with j + d_head/2).

PYTHONPATH=. .venv/bin/python benchmarks/results/siit_docstring_probes/rotary_pairs.py WEIGHTS"""
import sys

import torch

from training.train_siit import build_model, initial_weights, parse_args, tokenizer

torch.set_num_threads(1)
cfg, _ = parse_args(["--task", "docstring", "--name", "rotary"])
entry, tok = cfg.entry, tokenizer()
model = build_model(cfg)
model.load_state_dict(initial_weights(sys.argv[1]))
model.eval()
base, _ = entry.sample_pairs(tok, cfg.train_split, 600, 7, "task")
HOOKS = ("blocks.2.attn.hook_rot_q", "blocks.2.attn.hook_rot_k")
with torch.no_grad():
    _, cache = model.run_with_cache(base.tokens, names_filter=lambda name: name in HOOKS)
q, k = cache[HOOKS[0]][:, :, 0], cache[HOOKS[1]][:, :, 0]
half = model.cfg.rotary_dim // 2
scale = model.cfg.attn_scale
advantage = torch.zeros(half)
for row in range(len(base.end)):
    query = q[row, base.end[row]]

    def per_pair(position: int, query=query, row=row) -> torch.Tensor:
        product = query[: 2 * half] * k[row, position, : 2 * half]
        return product.view(2, half).sum(0) / scale

    answer = int(base.answer_def[row])
    others = [p for p in base.def_pos[row].tolist() if p >= 0 and p != answer]
    advantage += per_pair(answer) - torch.stack([per_pair(p) for p in others]).mean(0)
advantage /= len(base.end)
theta = model.cfg.rotary_base ** (-2 * torch.arange(half).float() / model.cfg.rotary_dim)
for j in range(half):
    print(f"pair {j}: theta {theta[j]:.5f} rad/token; answer's key minus the other arguments' mean: "
          f"{advantage[j]:.2f}")
print(f"all pairs: {advantage.sum():.2f}")
