"""A hand-built model with a planted two-head circuit, for testing circuit methods against a known answer.

Prompts are [BOS, A, FILL, FILL, FILL, FILL] with A one of eight letters; the model must predict A at the last
position. Head 0.1 attends from the last position to position 1 and writes A into a private subspace; head
1.2 attends to the last position itself and copies that subspace onto A's unembedding direction. The other
heads read only positions and write into a subspace the unembedding ignores (noise), and the optional MLPs
have zero weights. Corrupted prompts put NULL (no letter) at position 1, so the answer is not inferable.

Ground truth: nodes {0.1, 1.2}; edges {input → 0.1.v, 0.1 → 1.2.v, 1.2 → logits}.

With `distractors=True` three heads are rebuilt so that "its output varies under corruption" is no longer the
same as "it is in the circuit":
- 0.3, a distractor: reads the letter at position 1 exactly as 0.1 does, but writes it into a subspace
  nothing reads and the unembedding ignores (its output changes under corruption; it does nothing);
- 0.0, a gate: attends to BOS from every position and writes a constant into a gate dimension that 1.2's
  query needs (without it 1.2 attends uniformly and most of the answer is lost). Its output is the same on
  clean and corrupted prompts, so resample ablation (and so the patching ground truth) cannot see it; it is
  in the circuit by construction (DISTRACTOR_CIRCUIT_NODES), as zero-ablation shows;
- 0.2, varying alike: reads a random letter put at position 2 of both the clean prompt and its corruption
  and writes it into the junk subspace (its output varies across prompts, identically on each pair).
"""

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.circuits.problem import CircuitProblem, PromptBatch, make_problem

BOS, NULL, FILL = 0, 1, 2
LETTERS = tuple(range(3, 11))
N_VOCAB, N_CTX, SEQ_LEN = 11, 8, 6
_POS, _S, _JUNK, _GATE, _IGNORED, D_MODEL = 11, 19, 27, 32, 33, 40
"""First residual dimension of the position one-hots, of the private letter subspace, of the junk subspace
(5 dims), the gate dimension, the ignored subspace the distractor writes (7 dims); the width."""

PLANTED_NODES = ("0.1", "1.2")
PLANTED_EDGES = ("input->0.1.v", "0.1->1.2.v", "1.2->logits")
DISTRACTOR_CIRCUIT_NODES = ("0.0", "0.1", "1.2")
"""The circuit of the distractor model by construction (the gate 0.0 included)."""
GATE, VARIES_ALIKE, DISTRACTOR = "0.0", "0.2", "0.3"


def planted_model(with_mlps: bool = False, seed: int = 0, distractors: bool = False) -> HookedTransformer:
    """The planted model (2 layers, 4 heads, d_model 40), deterministic per seed (noise-head weights)."""
    cfg = HookedTransformerConfig(
        n_layers=2,
        d_model=D_MODEL,
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
        _noise_heads(model, generator, skip=(0, 2, 3) if distractors else ())
        if distractors:
            _distractor_heads(model, generator)
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


def _noise_heads(model: HookedTransformer, generator: torch.Generator, skip: tuple[int, ...] = ()) -> None:
    """Heads other than 0.1 and 1.2 (and layer-0 heads in `skip`) read positions (and FILL) only and write
    only to the junk subspace."""
    reads = [FILL, *range(_POS, _POS + N_CTX)]
    for layer, planted in ((0, 1), (1, 2)):
        attn = model.blocks[layer].attn
        for head in range(attn.W_Q.shape[0]):
            if head == planted:
                continue
            weights = [torch.randn(len(reads), W.shape[2], generator=generator)
                       for W in (attn.W_Q, attn.W_K, attn.W_V)]
            out = torch.randn(attn.W_O.shape[1], _GATE - _JUNK, generator=generator)
            if layer == 0 and head in skip:
                continue
            for W, w in zip((attn.W_Q, attn.W_K, attn.W_V), weights, strict=True):
                W[head, reads] = w
            attn.W_O[head, :, _JUNK:_GATE] = out


def _distractor_heads(model: HookedTransformer, generator: torch.Generator, beta: float = 6.0) -> None:
    """The gate 0.0 (feeds 1.2's query), 0.2 (reads the letter at position 2) and the distractor 0.3 (reads
    the letter at position 1 into an ignored subspace); see the module docstring."""
    last = _POS + SEQ_LEN - 1
    layer0, copier = model.blocks[0].attn, model.blocks[1].attn
    layer0.W_Q[0, _POS : _POS + N_CTX, 0], layer0.W_K[0, _POS, 0] = beta, beta
    layer0.W_V[0, BOS, 0], layer0.W_O[0, 0, _GATE] = 1.0, 1.0
    copier.W_Q[2, last, 0], copier.W_Q[2, _GATE, 0] = 0.0, beta
    # 0.2 attends to BOS before position 2 exists and to position 2 from there on (so it never reads the
    # letter at position 1); 0.3 attends from the last position to position 1, like the mover.
    layer0.W_Q[2, _POS : _POS + N_CTX, 0] = beta
    layer0.W_K[2, _POS, 0], layer0.W_K[2, _POS + 2, 0] = 3 * beta, 6 * beta
    layer0.W_Q[3, last, 0], layer0.W_K[3, _POS + 1, 0] = beta, beta
    for head, width, start in ((2, _GATE - _JUNK, _JUNK), (3, D_MODEL - _IGNORED, _IGNORED)):
        for i, letter in enumerate(LETTERS):
            layer0.W_V[head, letter, i] = 1.0
        layer0.W_O[head, : len(LETTERS), start : start + width] = 3.0 * torch.randn(
            len(LETTERS), width, generator=generator)


def planted_tokens(n: int, seed: int = 0, distractors: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean tokens, corrupted tokens (NULL at position 1) and the answers, n prompts; with `distractors`,
    position 2 holds a random letter in both."""
    generator = torch.Generator().manual_seed(seed)
    answers = torch.tensor(LETTERS)[torch.randint(len(LETTERS), (n,), generator=generator)]
    clean = torch.full((n, SEQ_LEN), FILL)
    clean[:, 0], clean[:, 1] = BOS, answers
    if distractors:
        clean[:, 2] = torch.tensor(LETTERS)[torch.randint(len(LETTERS), (n,), generator=generator)]
    corrupted = clean.clone()
    corrupted[:, 1] = NULL
    return clean, corrupted, answers


def planted_problem(n: int = 16, seed: int = 0, batch_size: int = 8,
                    distractors: bool = False) -> CircuitProblem:
    """Prompt batches for the planted model; metric = logit(A) − mean logit over the eight letters."""
    clean, corrupted, answers = planted_tokens(n, seed, distractors)
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
