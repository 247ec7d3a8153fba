"""Where MOVER (head 2.0) attends on the interchange rows it gets wrong: no-match rows (high-level output the
method's name, or "self" under --task docstring-self-fallback) answered right or wrong, and rows with a match;
the mass on the signature's arguments and on "self".

PYTHONPATH=. .venv/bin/python benchmarks/results/siit_docstring_probes/mover_misses.py WEIGHTS [--d-head 32]
[--task docstring-self-fallback]"""
import sys

import torch

from saelab.circuits.siit import Patch, patched_logits, source_cache
from training.train_siit import build_model, initial_weights, parse_args, tokenizer

torch.set_num_threads(1)
cfg, _ = parse_args(["--task", "docstring", "--name", "diag", *sys.argv[2:]])
entry = cfg.entry
model = build_model(cfg)
model.load_state_dict(initial_weights(sys.argv[1]))
model.eval()
tok = tokenizer()
base, source = entry.sample_pairs(tok, cfg.train_split, 300, 4321, "iit")
rows = torch.arange(len(base.end))
positions = torch.arange(base.tokens.shape[1])
arguments = (positions[None, None, :] == base.def_pos[:, :, None]).any(dim=1)
seen = {}
hooks = [("blocks.2.attn.hook_pattern", lambda x, hook: seen.__setitem__("p", x.detach())),
         ("blocks.2.attn.hook_attn_scores", lambda x, hook: seen.__setitem__("s", x.detach()))]
for var in ("LAST", "PREV", "B_NAME"):
    node = next(a for a in entry.alignment if a.variable == var)
    high = entry.high_level_output(base, source, var).ids[:, 0]
    no_match = ~(high[:, None] == base.def_tokens).any(-1)  # these variables output a base argument or the fallback
    patch = Patch.empty(model, *base.tokens.shape)
    patch.aligned(rows, node, base)
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        logits = patched_logits(model, base, source_cache(model, source.tokens), patch)
    right = logits.argmax(-1) == high
    on_args = (seen["p"][rows, 0, base.end] * arguments).sum(-1)
    on_self = seen["p"][rows, 0, base.end, base.self_pos]
    scores = seen["s"][rows, 0, base.end]  # MOVER's pre-softmax scores from END
    best_arg = scores.masked_fill(~arguments, float("-inf")).max(-1).values
    self_score = scores[rows, base.self_pos]
    out = {}
    for name, sel in (("no-match right", no_match & right), ("no-match wrong", no_match & ~right),
                      ("match right", ~no_match & right), ("match wrong", ~no_match & ~right)):
        if sel.any():
            out[name] = (f"{int(sel.sum())} rows, attention on arguments {float(on_args[sel].mean()):.3f}, "
                         f"on self {float(on_self[sel].mean()):.3f}; score best argument "
                         f"{float(best_arg[sel].mean()):.1f} ± {float(best_arg[sel].std()):.1f}, self "
                         f"{float(self_score[sel].mean()):.1f} ± {float(self_score[sel].std()):.1f}")
    miss = no_match & ~right
    predicted = logits.argmax(-1)
    out["no-match wrong, answer an argument"] = int((predicted[:, None] == base.def_tokens)[miss].any(-1).sum())
    print(var, out)
