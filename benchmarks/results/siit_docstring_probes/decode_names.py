"""How well a linear read-out recovers LAST's and PREV's names from the heads that compute them (their z,
16-d) and from the residual stream MOVER's query and key read (layer 2's normalised input), on clean
training-distribution prompts (fit on --fit prompts, default 4,000; scored on 600 others).

PYTHONPATH=. .venv/bin/python benchmarks/results/siit_docstring_probes/decode_names.py WEIGHTS [--fit N] [--d-head 32]"""
import argparse

import torch
import torch.nn.functional as F

from training.train_siit import build_model, initial_weights, parse_args, tokenizer

torch.set_num_threads(1)
parser = argparse.ArgumentParser()
parser.add_argument("weights")
parser.add_argument("--fit", type=int, default=4000)
args, rest = parser.parse_known_args()
cfg, _ = parse_args(["--task", "docstring", "--name", "decode", *rest])
entry, tok = cfg.entry, tokenizer()
model = build_model(cfg)
model.load_state_dict(initial_weights(args.weights))
model.eval()
HOOKS = ("blocks.2.ln1.hook_normalized", "blocks.0.attn.hook_z", "blocks.1.attn.hook_z")


def features(seed: int, n: int) -> dict:
    base, _ = entry.sample_pairs(tok, cfg.train_split, n, seed, "task")
    cache = {name: [] for name in HOOKS}
    with torch.no_grad():
        for chunk in base.tokens.split(500):
            _, part = model.run_with_cache(chunk, names_filter=lambda name: name in HOOKS)
            for name in HOOKS:
                cache[name].append(part[name])
    cache = {name: torch.cat(parts) for name, parts in cache.items()}
    i = torch.arange(len(base.end))
    return {"LAST: layer-2 input at END": (cache[HOOKS[0]][i, base.end], base.last_doc),
            "LAST: head 1.2's z at END": (cache[HOOKS[2]][i, base.end, 2], base.last_doc),
            "PREV: layer-2 input at C_def": (cache[HOOKS[0]][i, base.answer_def], base.prev_at_answer),
            "PREV: head 0.1's z at C_def": (cache[HOOKS[1]][i, base.answer_def, 1], base.prev_at_answer)}


fit, test = features(1, args.fit), features(2, 600)
for name, ((xa, ya), (xb, yb)) in ((k, (fit[k], test[k])) for k in fit):
    ids = torch.unique(torch.cat([ya, yb]))
    ya, yb = (torch.searchsorted(ids, y) for y in (ya, yb))
    weight = torch.zeros(xa.shape[1], len(ids), requires_grad=True)
    bias = torch.zeros(len(ids), requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(1500):
        loss = F.cross_entropy(xa @ weight + bias, ya) + 1e-4 * weight.pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        fit_acc, test_acc = (float(((x @ weight + bias).argmax(-1) == y).float().mean()) for x, y in ((xa, ya), (xb, yb)))
    print(f"{name}: {len(ids)} classes, fit {fit_acc:.3f}, test {test_acc:.3f}")
