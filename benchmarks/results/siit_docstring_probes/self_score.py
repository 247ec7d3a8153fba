"""How constant is MOVER's (head 2.0's) score for the "self" key, the self-fallback design's no-match key: on clean
training-distribution prompts (600, seed 7), the pre-softmax score from END to "self"'s position, split over the
rotary dimension pairs (pair j turns by theta_j radians per token of distance) and the non-rotary dimensions.

PYTHONPATH=. .venv/bin/python benchmarks/results/siit_docstring_probes/self_score.py WEIGHTS [--d-head 32]"""
import sys

import torch

from training.train_siit import build_model, initial_weights, parse_args, tokenizer

torch.set_num_threads(1)
cfg, _ = parse_args(["--task", "docstring-self-fallback", "--name", "self-score", *sys.argv[2:]])
entry, tok = cfg.entry, tokenizer()
model = build_model(cfg)
model.load_state_dict(initial_weights(sys.argv[1]))
model.eval()
base, _ = entry.sample_pairs(tok, cfg.train_split, 600, 7, "task")
HOOKS = ("blocks.2.attn.hook_rot_q", "blocks.2.attn.hook_rot_k")
with torch.no_grad():
    _, cache = model.run_with_cache(base.tokens, names_filter=lambda name: name in HOOKS)
rows = torch.arange(len(base.end))
product = cache[HOOKS[0]][rows, base.end, 0] * cache[HOOKS[1]][rows, base.self_pos, 0] / model.cfg.attn_scale
half = model.cfg.rotary_dim // 2
pairs = product[:, : 2 * half].view(-1, 2, half).sum(1)
free = product[:, 2 * half :].sum(1)
theta = model.cfg.rotary_base ** (-2 * torch.arange(half).float() / model.cfg.rotary_dim)
total = product.sum(1)
distance = base.end - base.self_pos
print(f"self score: mean {total.mean():.1f}, std {total.std():.1f} over {len(rows)} prompts "
      f"(END to self: {int(distance.min())}-{int(distance.max())} tokens)")
for j in range(half):
    print(f"pair {j}: theta {theta[j]:.5f} rad/token; mean {pairs[:, j].mean():.2f}, std {pairs[:, j].std():.2f}")
norm = cache[HOOKS[0]][rows, base.end, 0].norm(dim=-1)
print(f"correlation with the query's norm {torch.corrcoef(torch.stack([total, norm]))[0, 1]:.2f}; with the "
      f"distance {torch.corrcoef(torch.stack([total, distance.float()]))[0, 1]:.2f}")
print(f"non-rotary dimensions ({model.cfg.d_head - 2 * half}): mean {free.mean():.2f}, std {free.std():.2f}")
