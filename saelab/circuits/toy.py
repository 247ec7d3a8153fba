"""A hand-built model with a planted two-head circuit, for testing circuit methods against a known answer.

Prompts are [BOS, A, FILL, FILL, FILL, FILL] with A one of eight letters; the model must predict A at the last
position. Head 0.1 attends from the last position to position 1 and writes A into a private subspace; head
1.2 attends to the last position itself and copies that subspace onto A's unembedding direction. The other
heads read only positions and write into a subspace the unembedding ignores (noise), and the optional MLPs
have zero weights. Corrupted prompts put NULL (no letter) at position 1, so the answer is not inferable.

Ground truth: nodes {0.1, 1.2}; edges {input → 0.1.v, 0.1 → 1.2.v, 1.2 → logits}.
"""

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.circuits.problem import CircuitProblem, PromptBatch, make_problem

BOS, NULL, FILL = 0, 1, 2
LETTERS = tuple(range(3, 11))
N_VOCAB, N_CTX, SEQ_LEN = 11, 8, 6
_POS, _S, _JUNK = 11, 19, 27
"""First residual dimension of the position one-hots, of the private letter subspace, of the junk subspace."""

PLANTED_NODES = ("0.1", "1.2")
PLANTED_EDGES = ("input->0.1.v", "0.1->1.2.v", "1.2->logits")


def planted_model(with_mlps: bool = False, seed: int = 0) -> HookedTransformer:
    """The planted model (2 layers, 4 heads, d_model 32), deterministic per seed (noise-head weights)."""
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_head=8,
        d_mlp=16 if with_mlps else None,
        n_ctx=N_CTX,
        d_vocab=N_VOCAB,
        act_fn="gelu",
        normalization_type=None,
        attn_only=not with_mlps,
        seed=seed,
    )
    model = HookedTransformer(cfg, move_to_device=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.embed.W_E[:, :N_VOCAB] = torch.eye(N_VOCAB)
        model.pos_embed.W_pos[:, _POS : _POS + N_CTX] = torch.eye(N_CTX)
        for letter in LETTERS:
            model.unembed.W_U[letter, letter] = 1.0
        _plant_heads(model)
        _noise_heads(model, generator)
    return model.eval()


def _plant_heads(model: HookedTransformer, beta: float = 6.0) -> None:
    last = _POS + SEQ_LEN - 1
    mover, copier = model.blocks[0].attn, model.blocks[1].attn
    mover.W_Q[1, last, 0], mover.W_K[1, _POS + 1, 0] = beta, beta
    copier.W_Q[2, last, 0], copier.W_K[2, last, 0] = beta, beta
    for i, letter in enumerate(LETTERS):
        mover.W_V[1, letter, i] = 1.0
        mover.W_O[1, i, _S + i] = 1.0
        copier.W_V[2, _S + i, i] = 1.0
        copier.W_O[2, i, letter] = 1.0


def _noise_heads(model: HookedTransformer, generator: torch.Generator) -> None:
    """Heads other than 0.1 and 1.2 read positions (and FILL) only and write only to the junk subspace."""
    reads = [FILL, *range(_POS, _POS + N_CTX)]
    for layer, planted in ((0, 1), (1, 2)):
        attn = model.blocks[layer].attn
        for head in range(attn.W_Q.shape[0]):
            if head == planted:
                continue
            for W in (attn.W_Q, attn.W_K, attn.W_V):
                W[head, reads] = torch.randn(len(reads), W.shape[2], generator=generator)
            attn.W_O[head, :, _JUNK:] = torch.randn(attn.W_O.shape[1], 32 - _JUNK, generator=generator)


def planted_tokens(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean tokens, corrupted tokens (NULL at position 1) and the answers, n prompts."""
    generator = torch.Generator().manual_seed(seed)
    answers = torch.tensor(LETTERS)[torch.randint(len(LETTERS), (n,), generator=generator)]
    clean = torch.full((n, SEQ_LEN), FILL)
    clean[:, 0], clean[:, 1] = BOS, answers
    corrupted = clean.clone()
    corrupted[:, 1] = NULL
    return clean, corrupted, answers


def planted_problem(n: int = 16, seed: int = 0, batch_size: int = 8) -> CircuitProblem:
    """Prompt batches for the planted model; metric = logit(A) − mean logit over the eight letters."""
    clean, corrupted, answers = planted_tokens(n, seed)
    batches = []
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        batches.append(
            PromptBatch(
                clean[rows],
                corrupted[rows],
                torch.full((len(answers[rows]),), SEQ_LEN - 1),
                _letter_metric(answers[rows]),
            )
        )
    return make_problem("planted", batches)


def _letter_metric(answers: torch.Tensor):
    def metric(end_logits: torch.Tensor) -> torch.Tensor:
        letters = end_logits[:, list(LETTERS)]
        return end_logits.gather(1, answers[:, None])[:, 0] - letters.mean(dim=1)

    return metric
