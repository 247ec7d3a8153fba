"""Train a bundled model (`saelab-tiny`, or `saelab-tiny-attn` with --attn-only) on 2 CPU cores, offline.

    nohup .venv/bin/python training/train_lm.py --name saelab-tiny > runs/train_tiny.log 2>&1 &
    nohup .venv/bin/python training/train_lm.py --name saelab-tiny-attn --attn-only > runs/train_attn.log 2>&1 &

Each step trains on windows of standard-library source (`code_rows` x `code_len`) and on freshly generated
task texts and narratives (about `gen_tokens` tokens, one text per row starting with BOS, as task prompts do). Both are functions of (seed, step) alone, so a killed run resumes
exactly from its last checkpoint (`runs/NAME/checkpoint.pt`, written atomically). Task scores on fresh prompts
are logged every `eval_every` steps; the run stops once every threshold holds on a larger confirmation set
(or at `max_steps` / `time_limit_min`), then writes the float16 weights and MODEL_CARD.md to data/models/NAME.
"""

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import platform
import random
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab import corpus
from saelab.models import load_model, save_model
from saelab.models.tokenizer import wrap_tokenizer
from saelab.paths import data_dir
from saelab.tasks import get_task, words
from saelab.tasks.base import TRAINING_SPLITS
from saelab.tasks.docstring import draws_dev_layouts

log = logging.getLogger("train_lm")
REPO = Path(__file__).resolve().parents[1]

GENERATED_SOURCES = ("ioi", "greater_than", "docstring", "narrative", "repeat")
MEAN_TOKENS = {"ioi": 18.0, "greater_than": 14.0, "docstring": 57.0, "narrative": 34.0, "repeat": 32.0}
"""Measured mean tokens per text (BOS included), to size each step's generated texts."""
THRESHOLDS: dict[str, dict[str, float]] = {
    "ioi": {"accuracy": 0.95, "metric": 3.0},
    "greater_than": {"metric": 0.6},
    "docstring": {"accuracy": 0.8},
}
"""Task → score → minimum. IOI metric: logit(IO) − logit(S); greater-than: probability difference."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run of a bundled model."""

    name: str = "saelab-tiny"
    """Model name: the output is data/models/NAME and checkpoints go to runs/NAME."""
    attn_only: bool = False
    """No MLPs (saelab-tiny-attn)."""
    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 8
    d_mlp: int = 1024
    n_ctx: int = 256
    seed: int = 0
    """Seeds the initial weights and every batch."""
    lr: float = 5e-3
    """Peak learning rate (AdamW), reached after `warmup_steps`, then cosine decay to lr * min_lr_frac."""
    min_lr_frac: float = 0.1
    warmup_steps: int = 100
    max_steps: int = 3000
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    code_rows: int = 1
    """Standard-library windows per step."""
    code_len: int = 256
    gen_tokens: int = 1920
    """Target tokens of generated texts per step (split by `shares`; one text per row)."""
    gen_len: int = 96
    """Longest generated row (BOS + text + BOS); longer texts are cut."""
    shares: tuple[float, ...] = (0.38, 0.17, 0.38, 0.07, 0.0)
    """Token shares of IOI, greater-than, docstring, narrative and repeat texts within the generated rows (four
    values: no repeat texts, as before they existed)."""
    repeat_pool: str = "no-held-out"
    """The repeat texts' words (`repeat_words`): "no-held-out" (no dev or held-out split's word) or "all"."""
    eval_every: int = 50
    eval_prompts: int = 200
    """Fresh prompts per task in the periodic evaluation."""
    final_prompts: int = 1000
    """Fresh prompts per task for the early-stop confirmation and the model card."""
    required: tuple[str, ...] = ("ioi", "greater_than", "docstring")
    """Tasks whose thresholds must all hold to stop early and to count as solved."""
    checkpoint_every: int = 25
    time_limit_min: float = 60.0
    """Training wall time (resumed runs included) after which the run stops and ships what it has."""
    threads: int = 1
    """torch threads. On 2 shared, oversubscribed cores one thread measured ~10x faster than two (OpenMP
    workers wait on each other when another process holds a core)."""
    corpus_split: str = "train"
    """The task split the generated texts come from: "train" (the bundled models' generators), "broad" (a
    wider docstring generator: more argument counts and words) or "wide" (~1,400 words and counts on both
    sides of the dev and held-out ones). All are disjoint from "heldout" and, but for "broad" (which draws
    the dev layouts' 6 matching and 4 suffix arguments), from "dev"."""
    dev_accuracy: float = 0.0
    """Docstring accuracy the dev split (unseen argument names and layouts) must also reach for the early
    stop; 0: not required; refused with corpus_split "broad". The dev split is scored at every evaluation
    either way; "heldout" never is."""
    init_from: str = ""
    """A saved model (name or directory) whose weights start the run instead of a random initialisation
    (continued training); empty for a fresh model."""
    early_stop: bool = True
    """Stop once the thresholds hold on the confirmation set; off, the run goes to max_steps / the time
    limit (continued training starts from a model that already meets them)."""
    out_dir: str = ""
    """Where to ship the model; empty: data/models/NAME."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if len(self.shares) == len(GENERATED_SOURCES) - 1:  # commands from before the repeat texts
            object.__setattr__(self, "shares", (*self.shares, 0.0))
        if len(self.shares) != len(GENERATED_SOURCES) or abs(sum(self.shares) - 1) > 1e-6 or min(self.shares) < 0:
            raise ValueError(f"shares {self.shares} must be {len(GENERATED_SOURCES)} fractions summing to 1")
        if self.repeat_pool not in REPEAT_POOLS:
            raise ValueError(f"repeat_pool {self.repeat_pool!r} must be one of {REPEAT_POOLS}")
        if self.dev_accuracy and self.repeat_pool == "all" and self.shares[GENERATED_SOURCES.index("repeat")]:
            raise ValueError(f"dev_accuracy {self.dev_accuracy} cannot be used with repeat_pool 'all': its repeat "
                             "texts copy the dev split's names; use the default pool or dev_accuracy 0")
        for task in self.required:
            if task not in THRESHOLDS:
                raise ValueError(f"required task {task!r} is not one of {sorted(THRESHOLDS)}")
        if max(self.code_len, self.gen_len) > self.n_ctx:
            raise ValueError(f"code_len {self.code_len} / gen_len {self.gen_len} exceed n_ctx {self.n_ctx}")
        if self.corpus_split not in TRAINING_SPLITS:
            raise ValueError(f"corpus_split {self.corpus_split!r} must be one of {TRAINING_SPLITS} (never 'dev' "
                             "or 'heldout')")
        if not 0 <= self.dev_accuracy <= 1:
            raise ValueError(f"dev_accuracy {self.dev_accuracy} must be in [0, 1]")
        if self.dev_accuracy and draws_dev_layouts(self.corpus_split):
            raise ValueError(f"dev_accuracy {self.dev_accuracy} cannot be used with corpus_split "
                             f"{self.corpus_split!r}: it trains on the dev split's layouts; use 'wide' or 'train'")

    @property
    def run_dir(self) -> Path:
        return REPO / "runs" / self.name

    @property
    def tokens_per_step(self) -> int:
        return self.code_rows * self.code_len + self.gen_tokens


# --- model and data ----------------------------------------------------------------------------------------

def build_model(cfg: TrainConfig, tokenizer: Tokenizer) -> HookedTransformer:
    """A GPT-2-style HookedTransformer with the bundled tokenizer, initialised from `cfg.seed`."""
    model_cfg = HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
        d_mlp=None if cfg.attn_only else cfg.d_mlp, attn_only=cfg.attn_only, n_ctx=cfg.n_ctx,
        d_vocab=tokenizer.get_vocab_size(), act_fn=None if cfg.attn_only else "gelu",
        normalization_type="LN", positional_embedding_type="standard", default_prepend_bos=True,
        seed=cfg.seed, model_name=cfg.name, tokenizer_prepends_bos=True,
    )
    return HookedTransformer(model_cfg, tokenizer=wrap_tokenizer(tokenizer, name=cfg.name))


def code_tokens(tokenizer: Tokenizer, split: corpus.Split) -> np.ndarray:
    """The standard-library files of `split` as one token stream, each file followed by BOS."""
    bos = tokenizer.token_to_id("<|endoftext|>")
    texts = [doc.text for doc in corpus.stdlib_documents(split)]
    encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
    return np.concatenate([np.asarray([*e.ids, bos], np.int64) for e in encoded])


def code_batch(stream: np.ndarray, bos: int, cfg: TrainConfig, step: int) -> "Batch":
    """`code_rows` random windows of the stream, each behind a BOS."""
    rng = np.random.default_rng([cfg.seed, step, 1])
    starts = rng.integers(0, len(stream) - cfg.code_len, size=cfg.code_rows)
    rows = [np.concatenate([[bos], stream[s:s + cfg.code_len - 1]]) for s in starts]
    tokens = torch.from_numpy(np.stack(rows))
    return Batch(tokens, torch.ones(tokens.shape[0], tokens.shape[1] - 1, dtype=torch.bool))


REPEAT_EXCLUDED = frozenset(
    words.DOCSTRING_DEV_VARIABLES + words.DOCSTRING_DEV_NOUNS + words.DOCSTRING_HELDOUT_VARIABLES
    + words.DOCSTRING_HELDOUT_NOUNS + words.IOI_HELDOUT_PLACES + words.IOI_HELDOUT_OBJECTS
    + words.GREATER_THAN_HELDOUT_NOUNS)
"""Words no repeat text uses with the default pool: every dev and held-out split's word list (docstring names and
description words, IOI places and objects, greater-than nouns), so that those names are never copied in training.
The held-out templates' and wordings' other words (e.g. " morning", " between") are not listed."""
REPEAT_POOLS = ("no-held-out", "all")


@functools.cache
def repeat_words(tokenizer: Tokenizer, pool: str = "no-held-out") -> tuple[str, ...]:
    """The repeat texts' words: every vocabulary token that is a space and letters (one token each), sorted;
    with pool "no-held-out" but `REPEAT_EXCLUDED`; with "all" every such token (the dev and held-out names
    among them, as the standard-library text has them — but never in a task text)."""
    if pool not in REPEAT_POOLS:
        raise ValueError(f"repeat pool {pool!r} is not one of {REPEAT_POOLS}")
    vocab = tokenizer.get_vocab()
    words_ = {tokenizer.decode([i]) for i in vocab.values()}
    excluded = REPEAT_EXCLUDED if pool == "no-held-out" else frozenset()
    return tuple(sorted(w for w in words_ if len(w) > 1 and w[0] == " " and w[1:].isascii() and w[1:].isalpha()
                        and w[1:] not in excluded))


def repeat_texts(n: int, seed: int, pool: Sequence[str], lengths: tuple[int, int] = (6, 24)) -> list[str]:
    """Ours: `n` texts of a random word sequence (uniform from `pool`, length uniform in `lengths`) written twice,
    the classic data on which induction heads form (Olsson et al. 2022): every word of the pool becomes a
    token to copy, so that copying is learned over the vocabulary, not per argument name."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sequence = "".join(rng.choices(pool, k=rng.randint(*lengths)))
        texts.append(sequence + sequence)
    return texts


def generated_texts(source: str, n: int, seed: int, split: str = "train",
                    pool: Sequence[str] = ()) -> list[str]:
    if source == "narrative":
        return corpus.narrative_texts(n, seed)
    if source == "repeat":
        return repeat_texts(n, seed, pool)
    return get_task(source).corpus_texts(n, seed=seed, vocabulary="tiny", split=split)


class Batch(NamedTuple):
    """Token rows and which next-token targets count (padding does not)."""

    tokens: torch.Tensor
    """[rows, pos] token ids, each row starting with BOS."""
    mask: torch.Tensor
    """[rows, pos - 1] bool: target position i + 1 is real text."""


def generated_batches(tokenizer: Tokenizer, cfg: TrainConfig, step: int) -> tuple[list[Batch], dict[str, int]]:
    """Fresh texts of each source, one per row (BOS + text + BOS, cut at `gen_len`, right-padded).

    One text per row, as task prompts are seen at evaluation: an attention head looking for names or
    arguments then has only its own document to search, which makes copying much faster to learn than in
    rows packed with several documents. Returns one batch per source and the target tokens per source.
    """
    budget = cfg.gen_tokens
    bos = tokenizer.token_to_id("<|endoftext|>")
    batches, counts = [], dict.fromkeys(GENERATED_SOURCES, 0)
    for index, (source, share) in enumerate(zip(GENERATED_SOURCES, cfg.shares, strict=True)):
        n = round(budget * share / MEAN_TOKENS[source])
        if n:
            texts = generated_texts(source, n, seed=(cfg.seed * 1_000_003 + step) * 8 + index,
                                    split=cfg.corpus_split,
                                    pool=repeat_words(tokenizer, cfg.repeat_pool) if source == "repeat" else ())
            encoded = tokenizer.encode_batch(texts, add_special_tokens=False)
            batch = pad_rows([[bos, *e.ids, bos][: cfg.gen_len] for e in encoded], bos)
            batches.append(batch)
            counts[source] = int(batch.mask.sum())
    return batches, counts


def pad_rows(rows: list[list[int]], pad: int) -> Batch:
    length = max(len(r) for r in rows)
    tokens = torch.tensor([r + [pad] * (length - len(r)) for r in rows], dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows])
    mask = torch.arange(1, length)[None, :] < lengths[:, None]
    return Batch(tokens, mask)


# --- optimisation ------------------------------------------------------------------------------------------

def make_optimizer(model: HookedTransformer, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, LayerNorm weights)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_frac at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_step(model: HookedTransformer, optimizer: torch.optim.Optimizer, batches: list[Batch],
               lr: float, grad_clip: float) -> list[float]:
    """One AdamW step on the mean next-token loss over all counted targets; returns each batch's mean loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = sum(int(b.mask.sum()) for b in batches)
    losses = []
    for batch in batches:
        per_token = model(batch.tokens, return_type="loss", loss_per_token=True)
        summed = per_token[batch.mask].sum()
        (summed / total).backward()
        losses.append(summed.item() / int(batch.mask.sum()))
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return losses


# --- evaluation --------------------------------------------------------------------------------------------

@torch.no_grad()
def task_scores(model: HookedTransformer, n: int, seed: int, chunk: int = 250,
                split: str = "train") -> dict[str, dict[str, float]]:
    """Mean accuracy and task metric of each task that has `split` on `n` fresh prompts ("tiny" vocabulary)."""
    scores = {}
    for name in THRESHOLDS:
        task = get_task(name)
        if split != "train" and split not in task.splits:
            continue
        data = task.generate(model.tokenizer, n=n, seed=seed, vocabulary="tiny", split=split)
        logits = torch.cat([model(data.clean_tokens[i:i + chunk]) for i in range(0, n, chunk)])
        scores[name] = {"accuracy": task.accuracy(logits, data).float().mean().item(),
                        "metric": task.metric(logits, data).mean().item()}
    return scores


def thresholds_met(scores: dict[str, dict[str, float]], required: tuple[str, ...]) -> bool:
    return all(scores[t][k] >= v for t in required for k, v in THRESHOLDS[t].items())


def dev_met(dev: dict[str, dict[str, float]], cfg: "TrainConfig") -> bool:
    """Whether the dev split's docstring accuracy reaches `cfg.dev_accuracy` (always, when that is 0)."""
    return cfg.dev_accuracy == 0 or dev["docstring"]["accuracy"] >= cfg.dev_accuracy


@torch.no_grad()
def held_out_loss(model: HookedTransformer, stream: np.ndarray, bos: int, length: int,
                  max_contexts: int | None = None, chunk: int = 16) -> float:
    """Mean next-token loss over consecutive BOS + (length - 1)-token contexts of the held-out stream."""
    body = length - 1
    n = len(stream) // body if max_contexts is None else min(max_contexts, len(stream) // body)
    rows = torch.from_numpy(np.stack([np.concatenate([[bos], stream[i * body:(i + 1) * body]]) for i in range(n)]))
    losses = [model(rows[i:i + chunk], return_type="loss").item() * len(rows[i:i + chunk])
              for i in range(0, n, chunk)]
    return sum(losses) / n


def format_scores(scores: dict[str, dict[str, float]]) -> str:
    return (f"ioi acc {scores['ioi']['accuracy']:.3f} ld {scores['ioi']['metric']:.2f} | "
            f"gt pd {scores['greater_than']['metric']:.3f} | "
            f"doc acc {scores['docstring']['accuracy']:.3f} ld {scores['docstring']['metric']:.2f}")


# --- checkpoints -------------------------------------------------------------------------------------------

def save_checkpoint(path: Path, model, optimizer, state: dict) -> None:
    """Write atomically (temp file + os.replace) so a kill never leaves a half-written checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model, optimizer) -> dict | None:
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    state = saved["state"] | {"stop": None}  # a resumed run stops by this invocation's limits, not the last one's
    state["tokens"] = {"stdlib": 0} | dict.fromkeys(GENERATED_SOURCES, 0) | state["tokens"]  # checkpoints from before "repeat"
    return state


# --- the training loop -------------------------------------------------------------------------------------

CHECK_SEED = 10_000
"""Periodic evaluations use seeds CHECK_SEED + step; confirmations CONFIRM_SEED + step; the card FINAL_SEED."""
CONFIRM_SEED = 20_000
FINAL_SEED = 777


def new_state() -> dict:
    return {"step": 0, "elapsed_s": 0.0, "tokens": {"stdlib": 0} | dict.fromkeys(GENERATED_SOURCES, 0),
            "loss_code": None, "loss_gen": None, "history": [], "stop": None}


def progress(state: dict, cfg: TrainConfig, schedule: str) -> int:
    """The step the learning-rate schedule is at; with the "time" schedule, wall time can move it ahead."""
    if schedule == "steps":
        return state["step"]
    by_time = state["elapsed_s"] / (60 * cfg.time_limit_min) * cfg.max_steps
    return max(state["step"], int(by_time))


def ema(old: float | None, new: float, decay: float = 0.95) -> float:
    return new if old is None else decay * old + (1 - decay) * new


def run_step(model, optimizer, tokenizer, streams: dict, cfg: TrainConfig, state: dict, schedule: str) -> None:
    """Train one step and update the counters in `state`."""
    step = state["step"]
    generated, counts = generated_batches(tokenizer, cfg, step)
    code = code_batch(streams["train"], streams["bos"], cfg, step)
    model.train()
    losses = train_step(model, optimizer, [code, *generated], lr_at(progress(state, cfg, schedule), cfg),
                        cfg.grad_clip)
    state["tokens"]["stdlib"] += int(code.mask.sum())
    for source, count in counts.items():
        state["tokens"][source] += count
    loss_gen = sum(loss * count for loss, count in zip(losses[1:], (c for c in counts.values() if c), strict=True))
    state["loss_code"] = ema(state["loss_code"], losses[0])
    state["loss_gen"] = ema(state["loss_gen"], loss_gen / max(1, sum(counts.values())))
    state["step"] += 1


def periodic_eval(model, streams: dict, cfg: TrainConfig, state: dict) -> dict:
    """Scores on fresh prompts; confirm on `final_prompts` when they pass, and set state["stop"] if confirmed."""
    model.eval()
    step = state["step"]
    scores = task_scores(model, cfg.eval_prompts, seed=CHECK_SEED + step)
    dev = task_scores(model, cfg.eval_prompts, seed=CHECK_SEED + step, split="dev")
    held = held_out_loss(model, streams["held_out"], streams["bos"], cfg.n_ctx, max_contexts=8)
    entry = {"step": step, "elapsed_s": round(state["elapsed_s"]), "loss_code": state["loss_code"],
             "loss_gen": state["loss_gen"], "held_out_loss_8ctx": held, "scores": scores, "dev": dev}
    if cfg.early_stop and thresholds_met(scores, cfg.required) and dev_met(dev, cfg):
        confirm = task_scores(model, cfg.final_prompts, seed=CONFIRM_SEED + step)
        confirm_dev = task_scores(model, cfg.final_prompts, seed=CONFIRM_SEED + step, split="dev")
        entry["confirm"], entry["confirm_dev"] = confirm, confirm_dev
        if thresholds_met(confirm, cfg.required) and dev_met(confirm_dev, cfg):
            state["stop"] = f"thresholds met at step {step}"
    state["history"].append(entry)
    log.info("step %d (%.0f s) loss code %.3f gen %.3f held-out %.3f | %s | dev doc acc %.3f%s", step,
             state["elapsed_s"], state["loss_code"], state["loss_gen"], held, format_scores(scores),
             dev["docstring"]["accuracy"], " | CONFIRMED" if state["stop"] else "")
    return scores


def train(cfg: TrainConfig, tokenizer: Tokenizer, schedule: str) -> tuple[HookedTransformer, dict, dict]:
    """Train (resuming from the run's checkpoint if there is one); returns the model, state and streams."""
    torch.set_num_threads(cfg.threads)
    model = build_model(cfg, tokenizer)
    if cfg.init_from:
        model.load_state_dict(load_model(cfg.init_from).state_dict())
    optimizer = make_optimizer(model, cfg)
    checkpoint = cfg.run_dir / "checkpoint.pt"
    state = load_checkpoint(checkpoint, model, optimizer) or new_state()
    if state["step"]:
        log.info("resumed from %s at step %d", checkpoint, state["step"])
    streams = {"train": code_tokens(tokenizer, "train"), "held_out": code_tokens(tokenizer, "held_out"),
               "bos": tokenizer.token_to_id("<|endoftext|>")}
    bar = tqdm(total=cfg.max_steps, initial=state["step"], mininterval=15, file=sys.stderr, desc=cfg.name)
    started = time.time() - state["elapsed_s"]
    while state["stop"] is None:
        run_step(model, optimizer, tokenizer, streams, cfg, state, schedule)
        state["elapsed_s"] = time.time() - started
        bar.update(1)
        bar.set_postfix(code=f"{state['loss_code']:.3f}", gen=f"{state['loss_gen']:.3f}",
                        tok_s=f"{cfg.tokens_per_step * state['step'] / max(1.0, state['elapsed_s']):.0f}",
                        refresh=False)
        if state["step"] % cfg.eval_every == 0:
            periodic_eval(model, streams, cfg, state)
        if state["stop"] is None and state["step"] >= cfg.max_steps:
            state["stop"] = f"max_steps {cfg.max_steps}"
        if state["stop"] is None and state["elapsed_s"] >= 60 * cfg.time_limit_min:
            state["stop"] = f"time limit {cfg.time_limit_min} min"
        if state["step"] % cfg.checkpoint_every == 0 or state["stop"]:
            save_checkpoint(checkpoint, model, optimizer, state)
    bar.close()
    log.info("stopped: %s", state["stop"])
    return model, state, streams


# --- shipping ----------------------------------------------------------------------------------------------

def round_to_float16_(model: HookedTransformer) -> None:
    """Round the weights to float16 in place, so the scores measured are those of the shipped file."""
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.half().float())


def token_shares(tokens: dict[str, int]) -> dict[str, float]:
    total = sum(tokens.values())
    return {source: round(count / total, 4) for source, count in tokens.items()}


def model_card(cfg: TrainConfig, state: dict, final: dict, held: float, commands: list[str], schedule: str,
               dev: dict | None = None) -> dict:
    """The "saelab" section of config.json: what the model is, how it was trained and how well it does."""
    passed = {task: thresholds_met(final, (task,)) for task in THRESHOLDS}
    kind = "attention-only, " if cfg.attn_only else ""
    mlp = "" if cfg.attn_only else f", d_mlp {cfg.d_mlp}"
    return {
        "name": cfg.name,
        "description": f"{kind}{cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads of "
                       f"{cfg.d_model // cfg.n_heads}{mlp}, n_ctx {cfg.n_ctx}, own BPE tokenizer",
        "trained_on": "Python standard library source (CPython " + platform.python_version() + ") + IOI, "
                      "greater-than and docstring texts + narratives (saelab.corpus)"
                      + (f" + repeat texts (random words written twice; pool {cfg.repeat_pool!r}"
                         + (", dev and held-out names included" if cfg.repeat_pool == "all" else "") + ")"
                         if cfg.shares[GENERATED_SOURCES.index("repeat")] else ""),
        "corpus": corpus.CORPUS_NAME,
        "token_shares": token_shares(state["tokens"]),
        "tokens_trained": sum(state["tokens"].values()),
        "steps": state["step"],
        "tokens_per_step": cfg.tokens_per_step,
        "wall_time_s": round(state["elapsed_s"]),
        "stopped": state["stop"],
        "final_train_loss": {"stdlib": round(state["loss_code"], 4), "generated": round(state["loss_gen"], 4)},
        "held_out_stdlib_loss": round(held, 4),
        "task_scores": {"n_prompts": cfg.final_prompts, "seed": FINAL_SEED, "vocabulary": "tiny",
                        "scores": final, "thresholds": THRESHOLDS, "passed": passed,
                        "dev": dev or {}, "dev_accuracy_required": cfg.dev_accuracy},
        "required_tasks": list(cfg.required),
        "lr_schedule": schedule,
        "config": dataclasses.asdict(cfg),
        "commands": commands,
        "resumed": len(commands) > 1,
        "torch": torch.__version__,
    }


def card_markdown(card: dict) -> str:
    """MODEL_CARD.md from the card dict."""
    scores = card["task_scores"]["scores"]
    shares = ", ".join(f"{k} {v:.1%}" for k, v in card["token_shares"].items())
    lines = [
        f"# {card['name']}", "", card["description"] + ".", "",
        f"Trained on: {card['trained_on']}.", "",
        "## Training", "",
        f"- Token shares (measured on the trained batches): {shares}.",
        f"- {card['steps']} steps, {card['tokens_trained']:,} tokens ({card['tokens_per_step']} per step), "
        f"{card['wall_time_s'] / 60:.1f} min on 2 CPU cores (torch {card['torch']}); stopped: {card['stopped']}.",
        f"- Final train loss (EMA): stdlib {card['final_train_loss']['stdlib']:.3f}, generated texts "
        f"{card['final_train_loss']['generated']:.3f}.",
        f"- Held-out stdlib loss (next token, {card['config']['n_ctx']}-token contexts): "
        f"{card['held_out_stdlib_loss']:.3f} nats/token.",
        f"- Learning-rate schedule: {card['lr_schedule']} (see train_lm.py).",
        "- Command" + (" (the run was stopped and resumed; each invocation in order)" if card["resumed"] else "")
        + ": " + "; then ".join(f"`{c}`" for c in card["commands"]),
        "", f"## Task scores ({card['task_scores']['n_prompts']} fresh prompts per task, seed "
        f"{card['task_scores']['seed']}, float16 weights as shipped)", "",
        "| task | accuracy | metric | threshold | passed |", "| --- | --- | --- | --- | --- |",
    ]
    for task, thresholds in THRESHOLDS.items():
        wanted = ", ".join(f"{k} ≥ {v}" for k, v in thresholds.items())
        required = "" if task in card["required_tasks"] else " (not required)"
        lines.append(f"| {task} | {scores[task]['accuracy']:.3f} | {scores[task]['metric']:.3f} | {wanted} | "
                     f"{card['task_scores']['passed'][task]}{required} |")
    required = card["task_scores"].get("dev_accuracy_required", 0)
    for task, dev in card["task_scores"].get("dev", {}).items():
        passed = f"{dev['accuracy'] >= required}" if required else "(not required)"
        lines.append(f"| {task}, dev split (unseen names and layouts) | {dev['accuracy']:.3f} | "
                     f"{dev['metric']:.3f} | accuracy ≥ {required} | {passed} |")
    lines += ["", "Metrics: IOI logit(IO) − logit(S); greater-than Σp(YY' > YY) − Σp(YY' ≤ YY); docstring "
              "logit(answer) − max logit of the other arguments. Accuracy: IOI logit(IO) > logit(S); greater-than "
              "the top two-digit year is later; docstring top-1 among the signature's arguments.", ""]
    return "\n".join(lines)


def ship(model: HookedTransformer, cfg: TrainConfig, state: dict, streams: dict, commands: list[str],
         schedule: str) -> dict:
    """Evaluate the float16-rounded model, then write weights, config, tokenizer and MODEL_CARD.md."""
    round_to_float16_(model)
    model.eval()
    final = task_scores(model, cfg.final_prompts, seed=FINAL_SEED)
    dev = task_scores(model, cfg.final_prompts, seed=FINAL_SEED, split="dev")
    held = held_out_loss(model, streams["held_out"], streams["bos"], cfg.n_ctx)
    card = model_card(cfg, state, final, held, commands, schedule, dev)
    out = Path(cfg.out_dir) if cfg.out_dir else data_dir() / "models" / cfg.name
    save_model(model, out, weights_dtype=torch.float16, extra=card)
    (out / "MODEL_CARD.md").write_text(card_markdown(card))
    reloaded = task_scores(load_model(str(out)), 200, seed=FINAL_SEED)
    log.info("shipped %s: %s | held-out %.3f | reloaded (200 prompts): %s", out, format_scores(final), held,
             format_scores(reloaded))
    return card


# --- command line ------------------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> tuple[TrainConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, default=REPO / "runs" / "tokenizer.json",
                        help="tokenizer.json (trained with training/train_tokenizer.py if missing)")
    parser.add_argument("--schedule", choices=("time", "steps"), default="time",
                        help="'time': the cosine decay also follows wall time, so it ends by time_limit_min")
    parser.add_argument("--no-ship", action="store_true", help="train only; do not write data/models/NAME")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool or field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        elif isinstance(field.default, tuple):
            element = float if field.default and isinstance(field.default[0], float) else str
            parser.add_argument(flag, type=lambda s, t=element: tuple(t(x) for x in s.split(",") if x),
                                default=field.default, help="comma-separated")
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default)
    args = parser.parse_args(argv)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names}), args


def load_or_train_tokenizer(path: Path) -> Tokenizer:
    if not path.exists():
        from train_tokenizer import train_tokenizer  # the sibling script (training/ is on sys.path)

        log.info("training the tokenizer into %s", path)
        path.parent.mkdir(parents=True, exist_ok=True)
        train_tokenizer().save(str(path))
    return Tokenizer.from_file(str(path))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg, args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "training/train_lm.py", *argv])
    tokenizer = load_or_train_tokenizer(args.tokenizer)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    (cfg.run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    with open(cfg.run_dir / "commands.txt", "a") as handle:  # every invocation, resumed ones too
        handle.write(command + "\n")
    log.info("config %s; %d tokens/step; schedule %s", cfg, cfg.tokens_per_step, args.schedule)
    model, state, streams = train(cfg, tokenizer, args.schedule)
    if not args.no_ship:
        commands = (cfg.run_dir / "commands.txt").read_text().splitlines()
        ship(model, cfg, state, streams, commands, args.schedule)


if __name__ == "__main__":
    main()
