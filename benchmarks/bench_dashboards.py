"""Time feature dashboards of a 4,096-latent SAE over N tokens, against the model's forward pass on the same
tokens, and extrapolate to 1M tokens (target: at most 10 minutes).

    .venv/bin/python benchmarks/bench_dashboards.py --tokens 64k

Model: saelab-tiny when it is trained; otherwise an untrained model of saelab-tiny's shape (4 layers, d_model
256, 8 heads, d_mlp 1024) so the arithmetic is representative (weights do not change the cost). The SAE is
untrained TopK (k=32) at 2.resid_post; its latents fire like a trained TopK SAE's (exactly k per token), which
is what the streaming top-k costs depend on. Streaming cost grows linearly in tokens; building the store rows
depends on d_sae only, so the extrapolation scales the first and adds the second once.
"""

import argparse
import json
import time

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.data.counts import parse_token_count
from saelab.evals.dashboard_rows import example_rows, feature_rows, vocab_strings
from saelab.evals.features import DashboardConfig, compute_dashboards
from saelab.sae import SAE, SAEConfig

TARGET_TOKENS = 1_000_000
TARGET_SECONDS = 600.0


def tiny_shaped_model(d_vocab: int) -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024, n_ctx=256,
                                  d_vocab=d_vocab, act_fn="gelu", normalization_type="LN", seed=0)
    return HookedTransformer(cfg).eval()


def load(model_name: str | None) -> tuple[HookedTransformer, str]:
    from saelab.models import get_bundled, load_model

    name = model_name or "saelab-tiny"
    bundled = get_bundled(name)
    if model_name is None and (bundled is None or not bundled.available):
        return tiny_shaped_model(8192), "untrained saelab-tiny-shaped model (saelab-tiny is not trained yet)"
    return load_model(name), name


def token_set(model: HookedTransformer, n_tokens: int, context_len: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Training-corpus tokens and their document ids for a real model, as `saelab eval --dashboards` reads them
    (random ids and no documents for the stand-in, which has no tokenizer)."""
    if getattr(model, "tokenizer", None) is None:
        tokens = torch.randint(1, model.cfg.d_vocab, (-(-n_tokens // context_len), context_len),
                               generator=torch.Generator().manual_seed(0))
        tokens[:, 0] = 0
        return tokens, None
    from saelab.evals.tokens import document_contexts, training_source

    return document_contexts(model.tokenizer, training_source(), n_tokens, context_len)


class Clock:
    """Wall and CPU seconds of a block (CPU time is what counts on a shared machine: with one torch thread
    it is the wall time the block would take on an idle core)."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


@torch.no_grad()
def run_forward(model: HookedTransformer, tokens: torch.Tensor, batch_size: int) -> None:
    for part in tokens.split(batch_size):
        model(part, return_type="logits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="64k", help="tokens to run (default 64k)")
    parser.add_argument("--model", default=None, help="model name (default saelab-tiny, or its shape untrained)")
    parser.add_argument("--site", default="2.resid_post")
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--context-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, described = load(args.model)
    tokens, documents = token_set(model, parse_token_count(args.tokens), args.context_len)
    n_tokens = tokens.numel()
    d_in = model.cfg.d_model
    sae = SAE(SAEConfig("topk", d_in, args.d_sae, k=args.k, hook_site=args.site))
    cfg = DashboardConfig(batch_size=args.batch_size)

    with Clock() as forward:
        run_forward(model, tokens, args.batch_size)
    with Clock() as stream:
        dash = compute_dashboards(model, sae, tokens, cfg, documents=documents)
    with Clock() as rows:
        strings = vocab_strings(getattr(model, "tokenizer", None), model.cfg.d_vocab)
        n_rows = len(feature_rows(dash, "bench", strings)) + len(example_rows(dash, "bench", strings, cfg))
    scale = TARGET_TOKENS / n_tokens
    result = {"model": described, "site": args.site, "d_sae": args.d_sae, "k": args.k, "tokens": n_tokens,
              "documents": None if documents is None else int(documents.unique().numel()),
              "threads": torch.get_num_threads(), "rows": n_rows}
    for kind in ("wall", "cpu"):
        f, s_, r = getattr(forward, kind), getattr(stream, kind), getattr(rows, kind)
        result[kind] = {"forward_s": round(f, 2), "dashboards_stream_s": round(s_, 2), "rows_s": round(r, 2),
                        "ratio_to_forward": round(s_ / f, 2), "projected_1M_tokens_s": round(s_ * scale + r, 1),
                        "projected_1M_forward_s": round(f * scale, 1)}
    result["within_target_cpu"] = result["cpu"]["projected_1M_tokens_s"] <= TARGET_SECONDS
    print(json.dumps(result, indent=2))
    cpu = result["cpu"]
    print(f"{n_tokens:,} tokens (CPU time): forward {cpu['forward_s']:.1f} s, dashboards {cpu['dashboards_stream_s']:.1f} s "
          f"({cpu['ratio_to_forward']:.1f}x forward) + rows {cpu['rows_s']:.1f} s; "
          f"1M tokens ≈ {cpu['projected_1M_tokens_s'] / 60:.1f} min (target ≤ 10 min)")


if __name__ == "__main__":
    main()
