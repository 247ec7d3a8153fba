"""Microbenchmark: one TopK SAE training step (forward, loss, backward, Adam) on CPU, in tokens per second.

    .venv/bin/python benchmarks/bench_sae_step.py            # d_in 256 and 768, width 16 x d_in, k 32, batch 4096
    .venv/bin/python benchmarks/bench_sae_step.py --quick    # small sizes, a smoke test

Compares saelab's sparse TopK step with a plain dense PyTorch TopK step and, when installed, EleutherAI
sparsify's SparseCoder and SAELens' TopKTrainingSAE. Every implementation uses the same optimiser
(torch.optim.Adam, fused) and no dead-latent mask (so no AuxK pass). Steps are timed in interleaved rounds and the
median is reported, which keeps the comparison fair on a machine shared with other jobs. A last row times the
encoder matmul alone (the floor: every TopK step computes it densely) in the same rounds, and saelab's step is
reported as a fraction of it.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from saelab.sae import SAE, SAEConfig
from saelab.sae.config import DTYPES
from saelab.training import reuse_freed_memory

Step = Callable[[], None]


def adam(params) -> torch.optim.Adam:
    """The optimiser every implementation gets (the fused CPU kernel, as saelab's trainer uses)."""
    return torch.optim.Adam(params, lr=1e-4, fused=True)


def saelab_step(d_in: int, d_sae: int, k: int, x: torch.Tensor) -> Step:
    """saelab's step as its trainer runs it: parameters in x's dtype on x's device, the forward writing into a
    workspace reused step after step."""
    dtype = next(name for name, value in DTYPES.items() if value == x.dtype)
    sae = SAE(SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=k, dtype=dtype)).to(x.device)
    opt = adam(sae.parameters())
    work = sae.new_workspace(x.shape[0])

    def step() -> None:
        out = sae(x, None, work)
        loss = sae.loss(x, out)
        opt.zero_grad(set_to_none=False)  # as the trainer does with a workspace: .grad kept, never copied afresh
        loss.total.backward()
        opt.step()
        sae.post_step_(out)

    return step


def dense_step(d_in: int, d_sae: int, k: int, x: torch.Tensor) -> Step:
    """The textbook TopK step: dense latents, dense decoder matmul, autograd everywhere."""
    W_dec = torch.nn.Parameter(F.normalize(torch.randn(d_sae, d_in, device=x.device), dim=-1).to(x.dtype))
    W_enc = torch.nn.Parameter(W_dec.detach().t().clone())
    b_enc = torch.nn.Parameter(x.new_zeros(d_sae))
    b_dec = torch.nn.Parameter(x.new_zeros(d_in))
    opt = adam([W_enc, b_enc, W_dec, b_dec])

    def step() -> None:
        pre = (x - b_dec) @ W_enc + b_enc
        values, indices = pre.topk(k, dim=-1, sorted=False)
        acts = torch.zeros_like(pre).scatter(1, indices, values.relu())
        loss = ((acts @ W_dec + b_dec - x) ** 2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=-1, keepdim=True))

    return step


def sparsify_step(d_in: int, d_sae: int, k: int, x: torch.Tensor) -> Step:
    from sparsify import SparseCoder, SparseCoderConfig

    sae = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=k), device=x.device, dtype=x.dtype)
    opt = adam(sae.parameters())

    def step() -> None:
        out = sae(x)
        opt.zero_grad(set_to_none=True)
        out.fvu.backward()
        opt.step()
        sae.set_decoder_norm_to_unit_norm()

    return step


def saelens_step(d_in: int, d_sae: int, k: int, x: torch.Tensor) -> Step:
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k)).to(device=x.device, dtype=x.dtype)
    opt = adam(sae.parameters())
    step_input = TrainStepInput(
        sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False
    )

    def step() -> None:
        out = sae.training_forward_pass(step_input)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return step


def encoder_matmul_floor(d_in: int, d_sae: int, k: int, x: torch.Tensor) -> Step:
    """Not a training step: the one dense product every TopK step must compute, (batch, d_in) @ (d_in, d_sae).
    Timed beside the steps, it is the floor the issue measures saelab against, on this machine and this run."""
    W_enc = (torch.randn(d_in, d_sae, device=x.device) / d_in**0.5).to(x.dtype)

    def step() -> None:
        torch.mm(x, W_enc)

    return step


IMPLEMENTATIONS: dict[str, Callable[[int, int, int, torch.Tensor], Step]] = {
    "saelab": saelab_step,
    "dense torch": dense_step,
    "sparsify": sparsify_step,
    "sae-lens": saelens_step,
    "floor": encoder_matmul_floor,
}


def build_steps(
    d_in: int, expansion: int, k: int, batch: int, device: str = "cpu", dtype: torch.dtype = torch.float32,
    names: tuple[str, ...] = tuple(IMPLEMENTATIONS), d_sae: int | None = None,
) -> dict[str, Step]:
    """The implementations `names` on a batch of `batch` rows in `dtype` on `device` (width d_sae, else
    expansion x d_in)."""
    x = torch.randn(batch, d_in, generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    steps = {}
    for name in names:
        try:
            steps[name] = IMPLEMENTATIONS[name](d_in, d_sae or expansion * d_in, k, x)
        except ImportError as error:
            print(f"  {name}: skipped ({error.name} is not installed)")
    return steps


def time_rounds(
    steps: dict[str, Step], rounds: int, warmup: int, device: str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median seconds per step of each implementation, timing them in interleaved rounds (on CUDA each step is
    waited for before its clock stops). `clock` may be time.process_time: with one torch thread, CPU seconds are
    the wall time on an idle core, which a machine shared with other jobs cannot give."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = clock()
            step()
            sync()
            seconds[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--d-in", type=int, nargs="+", default=[256, 768])
    parser.add_argument("--expansion", type=int, default=16)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="d_in 64, batch 512, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.d_in, args.batch, args.rounds, args.warmup = [64], 512, 3, 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, k {args.k}")
    default_ms = {}
    for d_in in args.d_in:
        print(f"d_in {d_in}, d_sae {args.expansion * d_in}:")
        medians = time_rounds(build_steps(d_in, args.expansion, args.k, args.batch), args.rounds, args.warmup)
        ours, floor = medians["saelab"], medians.pop("floor")
        for name, seconds in medians.items():
            print(
                f"  {name:12s} {seconds * 1000:8.1f} ms/step {args.batch / seconds:10.0f} tokens/s"
                f"   saelab speed-up x{seconds / ours:.2f}"
            )
        gflops = 2 * args.batch * d_in * args.expansion * d_in / floor / 1e9
        print(f"  floor: the encoder matmul alone {floor * 1000:.1f} ms ({args.batch / floor:.0f} tokens/s, "
              f"{gflops:.0f} GFLOP/s); saelab's step runs at {floor / ours:.0%} of it")
        default_ms[d_in] = ours
    # Last, as it changes the whole process: the malloc setting every saelab command applies to its own process
    # (saelab.training.reuse_freed_memory). The table above is like for like, every step on the default allocator.
    if reuse_freed_memory():
        print("with the allocator setting of saelab's commands (freed large blocks kept for reuse):")
        for d_in in args.d_in:
            x = torch.randn(args.batch, d_in, generator=torch.Generator().manual_seed(0))
            steps = {name: IMPLEMENTATIONS[name](d_in, args.expansion * d_in, args.k, x) for name in ("saelab", "floor")}
            medians = time_rounds(steps, args.rounds, args.warmup)
            ours, floor = medians["saelab"], medians["floor"]
            print(f"  d_in {d_in}: saelab {ours * 1000:8.1f} ms/step {args.batch / ours:10.0f} tokens/s, "
                  f"x{default_ms[d_in] / ours:.2f} the default allocator's; {floor / ours:.0%} of the floor "
                  f"({floor * 1000:.1f} ms)")


if __name__ == "__main__":
    main()
