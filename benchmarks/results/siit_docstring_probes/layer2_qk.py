"""Layer-2-only experiment: can MOVER's (head 2.0's) query/key alone, everything else frozen, implement the
docstring high-level model's match and no-match fallback? Residuals into layer 2 are precomputed under the
interventions; only head 2.0's W_Q, W_K, b_Q, b_K (old dims, or new dims after widening) are trained."""
import argparse
import random
import time

import torch
import torch.nn.functional as F

from saelab.circuits.siit import Patch, non_aligned_units, patch_unit, source_cache
from training.train_siit import build_model, initial_weights, parse_args, tokenizer, widen_heads

torch.set_num_threads(1)
ap = argparse.ArgumentParser()
ap.add_argument("--init", default="data/models/saelab-docstring-siit")
ap.add_argument("--d-head", type=int, default=16)
ap.add_argument("--pairs", type=int, default=1500)
ap.add_argument("--steps", type=int, default=1500)
ap.add_argument("--lr", type=float, default=3e-3)
ap.add_argument("--train-old", action="store_true", help="also train the old query/key dims")
ap.add_argument("--out", default="")
ap.add_argument("--seed", type=int, default=50_000)
ap.add_argument("--new-std", type=float, default=0.02, help="std of the widened query/key dims' start")
ap.add_argument("--fallback", choices=("method", "self"), default="method",
                help="the no-match output the rows ask for: the method's name (the shipped design) or 'self' "
                     "(siit_task('docstring-self-fallback'))")
ap.add_argument("--train-ov", action="store_true", help="also train head 2.0's W_V, W_O, b_V")
ap.add_argument("--qk-norm", action="store_true",
                help="head 2.0's query and key RMS-normalised, each times a learned per-dimension scale started "
                     "at its mean RMS on the training rows (as TransformerLens use_qk_norm, for this head only)")
args = ap.parse_args()

task = "docstring" if args.fallback == "method" else "docstring-self-fallback"
cfg, _ = parse_args(["--task", task, "--name", "l2exp", "--d-head", str(args.d_head)])
entry, tok = cfg.entry, tokenizer()
model = build_model(cfg)
start = initial_weights(args.init)
model.load_state_dict(widen_heads(start, model, seed=0, std=0.0))
model.eval()
for p in model.parameters():
    p.requires_grad_(False)
VARS = ("B_NAME", "C_NAME", "PREV", "LAST")
nodes = {a.variable: a for a in entry.alignment}


def resid_under(base, cache, patch):
    store = {}

    def z_hook(x, hook, layer):
        return torch.where(patch.z[layer][..., None], cache[hook.name], x)

    def mlp_hook(x, hook, layer):
        return torch.where(patch.mlp[layer][..., None], cache[hook.name], x)

    hooks = []
    for layer in range(2):
        if patch.z[layer].any():
            hooks.append((f"blocks.{layer}.attn.hook_z", lambda x, hook, layer=layer: z_hook(x, hook, layer)))
        if patch.mlp[layer].any():
            hooks.append((f"blocks.{layer}.hook_mlp_out", lambda x, hook, layer=layer: mlp_hook(x, hook, layer)))
    hooks.append(("blocks.2.hook_resid_pre", lambda x, hook: store.__setitem__("r", x.clone())))
    with torch.no_grad():
        model.run_with_hooks(base.tokens, fwd_hooks=hooks, stop_at_layer=3)
    return store["r"]


def make_rows(seed, n):
    """(resid, end, target, group, kind) for interchange rows of each variable, task rows and strict rows."""
    out = []
    pairs = entry.sample_pairs(tok, cfg.train_split, n, seed, "iit")
    base, source = pairs
    idx = torch.arange(len(base.end))
    cache = source_cache(model, source.tokens)  # once for the four variables
    for var in VARS:
        patch = Patch.empty(model, *base.tokens.shape)
        patch.aligned(idx, nodes[var], base)
        high = entry.high_level_output(base, source, var).ids[:, 0]
        nomatch = ~(high[:, None] == base.def_tokens).any(-1)  # the output is a base argument or the fallback
        out.append((resid_under(base, cache, patch), base.end, high, var, nomatch))
    high = entry.high_level_output(base, base, None).ids[:, 0]
    out.append((resid_under(base, {}, Patch.empty(model, *base.tokens.shape)), base.end, high, "task",
                torch.zeros_like(high, dtype=torch.bool)))
    sp = entry.sample_pairs(tok, cfg.train_split, n, seed + 1, "strict")
    sbase = sp.base
    units = [u for u in non_aligned_units(model, entry.alignment) if u[1] < 2]
    rng = random.Random(seed)
    patch = Patch.empty(model, *sbase.tokens.shape)
    for row in range(len(sbase.end)):
        chosen = units if row % 4 == 0 else [rng.choice(units)]
        for u in chosen:
            patch_unit(patch, row, u, sbase, entry.alignment)
    high = entry.high_level_output(sbase, sbase, None).ids[:, 0]
    out.append((resid_under(sbase, source_cache(model, sp.source.tokens), patch), sbase.end, high, "strict",
                torch.zeros_like(high, dtype=torch.bool)))
    return out


def logits_from(resid, end):
    r = model(resid, start_at_layer=2)
    return r[torch.arange(len(end)), end]


def report(rows, label):
    res = {}
    with torch.no_grad():
        for resid, end, high, group, nomatch in rows:
            ok = logits_from(resid, end).argmax(-1) == high
            res[group] = round(float(ok.float().mean()), 3)
            if nomatch.any():
                res[group + "_nm"] = round(float(ok[nomatch].float().mean()), 3)
                res[group + "_m"] = round(float(ok[~nomatch].float().mean()), 3)
    print(label, res, flush=True)
    return res


t0 = time.time()
train_rows = make_rows(args.seed, args.pairs)
dev_rows = make_rows(4321, 300)
print(f"rows ready {time.time() - t0:.0f}s", flush=True)
attn = model.blocks[2].attn
scales = {}
if args.qk_norm:
    with torch.no_grad():
        for kind in ("q", "k"):
            _, c = model.run_with_cache(train_rows[-2][0][:256], start_at_layer=2,
                                        names_filter=f"blocks.2.attn.hook_{kind}")
            rms = c[f"blocks.2.attn.hook_{kind}"][:, :, 0].pow(2).mean(-1).sqrt().mean()
            scales[kind] = torch.nn.Parameter(torch.full((model.cfg.d_head,), float(rms)))

    def normalise(x, hook, kind):
        head = x[:, :, :1]
        head = head * torch.rsqrt(head.pow(2).mean(-1, keepdim=True) + 1e-5) * scales[kind]
        return torch.cat([head, x[:, :, 1:]], dim=2)

    for kind in ("q", "k"):
        getattr(attn, f"hook_{kind}").add_hook(lambda x, hook, kind=kind: normalise(x, hook, kind), is_permanent=True)
report(dev_rows, "dev before")
old = cfg.d_model // cfg.n_heads
params = [attn.W_Q, attn.W_K, attn.b_Q, attn.b_K] + ([attn.W_V, attn.W_O, attn.b_V] if args.train_ov else [])
params += list(scales.values())
for p in params:
    p.requires_grad_(True)
masks = []
for p in params:
    m = torch.zeros_like(p)
    if p.dim() == 1:  # a query/key scale (--qk-norm): head 2.0's own
        m[:] = 1.0
    elif args.train_old or p is attn.W_V or p is attn.W_O or p is attn.b_V:
        m[0] = 1.0  # head 0, every dim
    else:
        m[0, ..., old:] = 1.0
    masks.append(m)
width = start["blocks.0.attn.W_Q"].shape[-1]
if args.d_head > width:  # new query dims start at zero: give them (not already trained ones) a small start
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        attn.W_Q[0, :, width:] = args.new_std * torch.randn(attn.W_Q[0, :, width:].shape, generator=g)
        attn.W_K[0, :, width:] = args.new_std * torch.randn(attn.W_K[0, :, width:].shape, generator=g)
opt = torch.optim.Adam(params, lr=args.lr)
width = max(r[0].shape[1] for r in train_rows)
resid = torch.cat([F.pad(r[0], (0, 0, 0, width - r[0].shape[1])) for r in train_rows])
end = torch.cat([r[1] for r in train_rows])
high = torch.cat([r[2] for r in train_rows])
gen = torch.Generator().manual_seed(2)
for step in range(1, args.steps + 1):
    b = torch.randint(0, len(end), (128,), generator=gen)
    loss = F.cross_entropy(logits_from(resid[b], end[b]), high[b])
    opt.zero_grad()
    loss.backward()
    for p, m in zip(params, masks, strict=True):
        p.grad *= m
    opt.step()
    if step % 250 == 0:
        print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
        report(dev_rows, f"dev step {step}")
report(train_rows, "train")
if args.out:
    torch.save({"model": model.state_dict(), "qk_scales": {k: v.detach() for k, v in scales.items()}}, args.out)
    print("saved", args.out)
