"""Where MOVER (head 2.0) attends on the interchange rows it gets wrong: no-match rows (high-level output the
method's name) answered right or wrong, and rows with a match; the mass on the signature's arguments.

PYTHONPATH=. .venv/bin/python benchmarks/results/siit_docstring_probes/mover_misses.py WEIGHTS [--d-head 32]"""
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
hook = ("blocks.2.attn.hook_pattern", lambda x, hook: seen.__setitem__("p", x.detach()))
for var in ("LAST", "PREV", "B_NAME"):
    node = next(a for a in entry.alignment if a.variable == var)
    high = entry.high_level_output(base, source, var).ids[:, 0]
    no_match = high == base.method
    patch = Patch.empty(model, *base.tokens.shape)
    patch.aligned(rows, node, base)
    with torch.no_grad(), model.hooks(fwd_hooks=[hook]):
        logits = patched_logits(model, base, source_cache(model, source.tokens), patch)
    right = logits.argmax(-1) == high
    on_args = (seen["p"][rows, 0, base.end] * arguments).sum(-1)
    out = {}
    for name, sel in (("no-match right", no_match & right), ("no-match wrong", no_match & ~right),
                      ("match right", ~no_match & right), ("match wrong", ~no_match & ~right)):
        if sel.any():
            out[name] = f"{int(sel.sum())} rows, attention on arguments {float(on_args[sel].mean()):.3f}"
    miss = no_match & ~right
    predicted = logits.argmax(-1)
    out["no-match wrong, answer an argument"] = int((predicted[:, None] == base.def_tokens)[miss].any(-1).sum())
    print(var, out)
