"""Train saelab-ioi-siit with strict interchange intervention training (SIIT; Gupta et al. 2024, InterpBench).

Losses per step, each a cross-entropy at the answer position against the high-level causal model of
`saelab.circuits.siit` (DUP at S2 → S-INH at END → NAME at END):
  task   : no intervention (IOI prompts, and ABC prompts whose high-level output is ½/½ over both names);
  IIT    : one aligned head patched at its position from a same-template source prompt (IOI or ABC); the target is
           the high-level output under the same intervention;
  strict : non-aligned units (other heads, MLPs, aligned heads at other positions) patched from a source, one at
           a time or a random half at once; the target is the unchanged high-level output.
Held-out templates and places/objects (`saelab.circuits.siit`) are never used in training or stopping. Resumes
from runs/NAME/checkpoint.pt; stops when every dev check is ≥ --stop-at twice in a row, or at the time limit.
Then writes data/models/NAME (float16 weights, config saelab section, MODEL_CARD.md) and
data/circuits/NAME/ioi.json with the construction checks measured on the saved model.

  PYTHONPATH=. .venv/bin/python training/train_siit.py            # train (or resume), then finalise
  PYTHONPATH=. .venv/bin/python training/train_siit.py --finalize-only
"""

import argparse
import dataclasses
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.circuits.graph import Graph
from saelab.circuits.ground_truth import edge_effects
from saelab.circuits.patching import metric_means, node_effects
from saelab.circuits.problem import problem_from_task
from saelab.circuits.siit import (
    HELD_OUT_TEMPLATE_SPLIT,
    HELD_OUT_WORD_SPLIT,
    TRAIN_SPLIT,
    AlignedNode,
    IOISplit,
    Patch,
    Target,
    dataset_rows,
    encode_specs,
    high_level_output,
    interchange_accuracy,
    non_aligned_units,
    patch_unit,
    patched_end_logits,
    patched_logits,
    sample_pairs,
    sample_spec,
    source_cache,
    strict_accuracy,
    target_loss,
    task_accuracy,
)
from saelab.models import load_model, save_model
from saelab.models.tokenizer import load_tokenizer
from saelab.paths import data_dir
from saelab.tasks.ioi import BABA_TEMPLATES
from saelab.tasks.registry import get_task

log = logging.getLogger("train_siit")
ROOT = Path(__file__).resolve().parent.parent

ALIGNMENT = (
    AlignedNode("DUP", 0, 2, "S2", "the earlier name the name at S2 does not repeat (the indirect object); both "
                "earlier names at 1/2 when it repeats neither (ABC)"),
    AlignedNode("S-INH", 1, 1, "end", "DUP, moved from S2 to END"),
    AlignedNode("NAME", 2, 3, "end", "S-INH, written to the output (the answer)"),
)
CIRCUIT_EDGES = (
    "input->0.2.q", "input->0.2.k", "input->0.2.v", "0.2->1.1.v", "input->1.1.q", "input->1.1.k",
    "1.1->2.3.v", "input->2.3.q", "input->2.3.k", "2.3->logits",
)
"""The edges the high-level model's data flow implies (head → head edges are the ones SIIT constrains)."""
DESIGN_HISTORY = (
    "A first high-level model carried Wang et al.'s positional S-inhibition signal (DUP and S-INH = the slot of "
    "the subject, NAME = the name at the other slot). In three runs (lr 2e-3 and 3e-3, IIT weight 1 and 3, "
    "600-1600 steps) the task reached 0.94-0.99 and NAME interchange 0.39-0.87, but DUP and S-INH interchange "
    "stayed at chance (0.42-0.54): head 0.2 at S2 attended to the indirect object (0.99 of its attention), and "
    "the name mover read it from S2. The high-level model was changed to that relay."
)


@dataclass(frozen=True)
class SIITConfig:
    """Model shape and training settings."""

    name: str = "saelab-ioi-siit"
    """Output: data/models/NAME, data/circuits/NAME/ioi.json; checkpoints in runs/NAME."""
    n_layers: int = 3
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 128
    n_ctx: int = 64
    seed: int = 0
    lr: float = 2e-3
    """AdamW peak learning rate (linear warm-up over `warmup_steps`, then constant)."""
    warmup_steps: int = 100
    batch: int = 24
    """Rows per loss group (task, each aligned node, strict ×2)."""
    abc_share: float = 0.25
    """Share of source prompts (and task prompts) that are ABC prompts (no repeated name)."""
    strict_weight: float = 1.0
    iit_weight: float = 1.0
    strict_kl_weight: float = 0.0
    """Ours, not InterpBench's: on the strict rows also KL(unpatched output ‖ patched output), so that patching a
    non-aligned unit moves the logits, not only the top-1 label (0: off)."""
    eval_every: int = 200
    eval_prompts: int = 256
    stop_at: float = 0.99
    """Stop when task, every interchange and the strict accuracy on dev prompts are all ≥ this, twice running."""
    time_limit_min: float = 60.0
    checkpoint_every_s: float = 120.0
    threads: int = 1
    hold_out_templates: bool = True
    """Keep templates 3, 8, 14 out of training (False: train on all 15; only places/objects are held out)."""
    hold_out_words: bool = True
    """Keep the held-out places/objects out of training (False: train on every place and object)."""
    init_from: str | None = None
    """A checkpoint whose weights a fresh run starts from (None: random initialisation, seed `seed`)."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if not 0 <= self.abc_share < 1:
            raise ValueError(f"abc_share must be in [0, 1), got {self.abc_share}")
        if not 0 < self.stop_at <= 1:
            raise ValueError(f"stop_at must be in (0, 1], got {self.stop_at}")

    @property
    def train_split(self) -> IOISplit:
        templates = TRAIN_SPLIT.templates if self.hold_out_templates else tuple(range(len(BABA_TEMPLATES)))
        places = TRAIN_SPLIT.places if self.hold_out_words else TRAIN_SPLIT.places + HELD_OUT_WORD_SPLIT.places
        objects = TRAIN_SPLIT.objects if self.hold_out_words else TRAIN_SPLIT.objects + HELD_OUT_WORD_SPLIT.objects
        return IOISplit(templates, TRAIN_SPLIT.names, places, objects)

    @property
    def run_dir(self) -> Path:
        return ROOT / "runs" / self.name

    @property
    def model_dir(self) -> Path:
        return data_dir() / "models" / self.name


def tokenizer():
    return load_tokenizer(data_dir() / "models" / "saelab-tiny" / "tokenizer.json", name="saelab-tiny")


def build_model(cfg: SIITConfig) -> HookedTransformer:
    tok = tokenizer()
    hcfg = HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
        d_mlp=cfg.d_mlp, n_ctx=cfg.n_ctx, d_vocab=len(tok), act_fn="gelu", normalization_type="LN",
        default_prepend_bos=True, seed=cfg.seed, model_name=cfg.name,
    )
    return HookedTransformer(hcfg, tokenizer=tok, move_to_device=False)


# --- one training step --------------------------------------------------------------------------------------

GROUPS = ("task", "DUP", "S-INH", "NAME", "strict-one", "strict-many")


def step_batch(cfg: SIITConfig, model: HookedTransformer, tok, step: int):
    """Base and source rows for every loss group, the patch, the targets and each row's group."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    bases, sources, groups = [], [], []
    for group in GROUPS:
        for _ in range(cfg.batch):
            split = cfg.train_split
            template = rng.choice(split.templates)
            abc_base = group == "task" and rng.random() < cfg.abc_share
            bases.append(sample_spec(rng, split, template, abc=abc_base))
            sources.append(sample_spec(rng, split, template, abc=rng.random() < cfg.abc_share))
            groups.append(group)
    base, source = encode_specs(tok, bases), encode_specs(tok, sources)
    patch = Patch.empty(model, *base.tokens.shape)
    units = non_aligned_units(model, ALIGNMENT)
    ids, weights = [], []
    for row, group in enumerate(groups):
        node = next((a for a in ALIGNMENT if a.variable == group), None)
        if node is not None:
            patch.aligned(torch.tensor([row]), node, base)
        elif group == "strict-one":
            patch_unit(patch, row, rng.choice(units), base, ALIGNMENT)
        elif group == "strict-many":
            for unit in units:
                if rng.random() < 0.5:
                    patch_unit(patch, row, unit, base, ALIGNMENT)
    for variable in (None, "DUP", "S-INH", "NAME"):
        target = high_level_output(base, source, variable)
        ids.append(target.ids)
        weights.append(target.weights)
    variable_index = torch.tensor([{"DUP": 1, "S-INH": 2, "NAME": 3}.get(g, 0) for g in groups])
    rows = torch.arange(len(groups))
    target_ids = torch.stack(ids)[variable_index, rows]
    target_weights = torch.stack(weights)[variable_index, rows]
    return base, source, patch, (target_ids, target_weights), groups


def train_step(cfg, model, optimizer, tok, step) -> dict[str, float]:
    base, source, patch, (ids, weights), groups = step_batch(cfg, model, tok, step)
    cache = source_cache(model, source.tokens)
    logits = patched_logits(model, base, cache, patch)
    losses = target_loss(logits, Target(ids, weights))
    by_group = {g: losses[[i for i, x in enumerate(groups) if x == g]].mean() for g in GROUPS}
    iit = (by_group["DUP"] + by_group["S-INH"] + by_group["NAME"]) / 3
    strict = (by_group["strict-one"] + by_group["strict-many"]) / 2
    if cfg.strict_kl_weight:
        rows = [i for i, g in enumerate(groups) if g.startswith("strict")]
        with torch.no_grad():
            clean = patched_logits(model, base, {}, Patch.empty(model, *base.tokens.shape))[rows]
        strict = strict + cfg.strict_kl_weight * torch.nn.functional.kl_div(
            logits[rows].log_softmax(-1), clean.log_softmax(-1), log_target=True, reduction="batchmean")
    loss = by_group["task"] + cfg.iit_weight * iit + cfg.strict_weight * strict
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return {k: float(v.detach()) for k, v in {"loss": loss, "task": by_group["task"], "iit": iit, "strict": strict}.items()}


def dev_scores(cfg: SIITConfig, model: HookedTransformer, tok, seed: int = 10_000) -> dict[str, float]:
    """Task, per-node interchange and strict accuracy on fresh training-distribution prompts (the stop rule)."""
    model.eval()
    pairs = sample_pairs(tok, cfg.train_split, cfg.eval_prompts, seed, abc_share=0.0)
    abc_pairs = sample_pairs(tok, cfg.train_split, cfg.eval_prompts, seed + 1, abc_share=0.5)
    scores = {"task": task_accuracy(model, pairs)}
    scores |= {f"iit_{a.variable}": interchange_accuracy(model, pairs, a) for a in ALIGNMENT}
    scores["strict_all"] = strict_accuracy(model, abc_pairs, ALIGNMENT)
    model.train()
    return scores


# --- checkpoints --------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, model, optimizer, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, tmp)
    os.replace(tmp, path)


def train(cfg: SIITConfig) -> HookedTransformer:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = tokenizer()
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    checkpoint = cfg.run_dir / "checkpoint.pt"
    state = {"step": 0, "elapsed_s": 0.0, "passes": 0, "history": [], "stopped": None}
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        if (state["stopped"] or "").startswith("time limit") and state["elapsed_s"] < cfg.time_limit_min * 60:
            state["stopped"] = None  # resumed with a longer time limit
        log.info("resumed from %s at step %d", checkpoint, state["step"])
    elif cfg.init_from is not None:
        model.load_state_dict(torch.load(cfg.init_from, weights_only=False)["model"])
        log.info("initialised from %s", cfg.init_from)
    model.train()
    started, last_save = time.time() - state["elapsed_s"], time.time()
    while state["stopped"] is None:
        losses = train_step(cfg, model, optimizer, tok, state["step"])
        state["step"] += 1
        state["elapsed_s"] = time.time() - started
        if state["step"] % cfg.eval_every == 0:
            scores = dev_scores(cfg, model, tok)
            state["history"].append({"step": state["step"], "elapsed_s": round(state["elapsed_s"]), **losses,
                                     **scores})
            log.info("step %d %.0fs %s %s", state["step"], state["elapsed_s"],
                     {k: round(v, 3) for k, v in losses.items()}, {k: round(v, 3) for k, v in scores.items()})
            state["passes"] = state["passes"] + 1 if min(scores.values()) >= cfg.stop_at else 0
            if state["passes"] >= 2:
                state["stopped"] = f"dev checks >= {cfg.stop_at} twice at step {state['step']}"
        if state["stopped"] is None and state["elapsed_s"] > cfg.time_limit_min * 60:
            state["stopped"] = f"time limit {cfg.time_limit_min} min at step {state['step']}"
        if time.time() - last_save > cfg.checkpoint_every_s or state["stopped"]:
            save_checkpoint(checkpoint, model, optimizer, state)
            last_save = time.time()
    log.info("stopped: %s", state["stopped"])
    model.eval()
    save_model(model, cfg.model_dir, weights_dtype=torch.float16, extra={"name": cfg.name})
    return state


# --- construction checks on the saved model ----------------------------------------------------------------


def split_scores(model, tok, split, seed: int, n: int) -> dict[str, float]:
    pairs = sample_pairs(tok, split, n, seed, abc_share=0.0)
    abc_pairs = sample_pairs(tok, split, n, seed + 1, abc_share=0.5)
    scores = {"task_top1": task_accuracy(model, pairs)}
    scores |= {f"interchange_{a.variable}": interchange_accuracy(model, pairs, a) for a in ALIGNMENT}
    scores["strict_all_units"] = strict_accuracy(model, abc_pairs, ALIGNMENT)
    return {k: round(v, 4) for k, v in scores.items()}


@torch.no_grad()
def all_non_circuit_effect(model, data, circuit: set[str]) -> float:
    """Mean metric change when every non-circuit head and MLP is resample-ablated at once (ABC corruption)."""
    task = get_task("ioi")
    rows = dataset_rows(data)
    patch = Patch.empty(model, *rows.tokens.shape)
    for node in Graph.from_config(model.cfg).nodes:
        if node.name in circuit:
            continue
        if node.kind == "head":
            patch.z[node.layer][:, :, node.head] = True
        else:
            patch.mlp[node.layer][:] = True
    cache = source_cache(model, data.corrupted_tokens)
    clean = task.metric_fn(patched_end_logits(model, rows.tokens, rows.end, {}, Patch.empty(
        model, *rows.tokens.shape))[:, None], _at_zero(data))
    ablated = task.metric_fn(patched_end_logits(model, rows.tokens, rows.end, cache, patch)[:, None], _at_zero(data))
    return float((ablated - clean).mean())


def _at_zero(data):
    return dataclasses.replace(data, positions={**data.positions, "end": torch.zeros(len(data), dtype=torch.long)})


def construction_checks(model, tok, n: int = 400, seed: int = 777) -> dict:
    """The issue's checks on saelab's own IOI generator (vocabulary "tiny", ABC corruption, resample ablation)."""
    task = get_task("ioi")
    data = task.generate(tok, n, seed=seed, vocabulary="tiny")
    logits = model(data.clean_tokens)
    problem = problem_from_task(task, data)
    clean, corrupted = metric_means(model, problem)
    gap = clean - corrupted
    effects = node_effects(model, problem, "resample")
    circuit = {a.node for a in ALIGNMENT}
    relative = {node.name: effect / gap for node, effect in effects.items()}
    outside = {k: v for k, v in relative.items() if k not in circuit}
    together = all_non_circuit_effect(model, data, circuit) / gap
    checks = {
        "ioi_accuracy_io_vs_s": round(float(task.accuracy(logits, data).float().mean()), 4),
        "metric_clean": round(clean, 4),
        "metric_corrupted": round(corrupted, 4),
        "max_single_non_circuit_effect_over_gap": round(max(abs(v) for v in outside.values()), 4),
        "all_non_circuit_together_effect_over_gap": round(abs(together), 4),
        "min_circuit_effect_over_gap": round(min(abs(relative[c]) for c in circuit), 4),
    }
    checks["passed"] = {
        "task_accuracy>=0.95": checks["ioi_accuracy_io_vs_s"] >= 0.95,
        "single_non_circuit<0.02": checks["max_single_non_circuit_effect_over_gap"] < 0.02,
        "all_non_circuit<0.10": checks["all_non_circuit_together_effect_over_gap"] < 0.10,
        "each_circuit_node>0.20": checks["min_circuit_effect_over_gap"] > 0.20,
    }
    return {"n_prompts": n, "seed": seed, **checks}, effects, problem, (clean, corrupted)


def write_ground_truth(cfg, model, effects, problem, means, checks) -> Path:
    graph = Graph.from_config(model.cfg)
    edges = [graph.edge(e) for e in CIRCUIT_EDGES]
    measured = edge_effects(model, problem, edges)
    order = sorted(effects)
    payload = {
        "format_version": 1,
        "task": "ioi",
        "model": cfg.name,
        "kind": "by construction",
        "rule": {"node_fraction": 0.1, "edge_fraction": 0.05,
                 "text": "by construction (SIIT): the nodes are the heads the high-level model is aligned to; the "
                         "edges are its data flow. node_effects and edge_effects are measured (resample ablation "
                         "from ABC prompts, path patching) only to show the construction holds; they do not "
                         "define the circuit"},
        "metric": {"clean": round(means[0], 6), "corrupted": round(means[1], 6),
                   "gap": round(means[0] - means[1], 6)},
        "nodes": sorted(a.node for a in ALIGNMENT),
        "edges": sorted(CIRCUIT_EDGES),
        "node_effects": {n.name: round(effects[n], 6) for n in order},
        "edge_effects": {e.name: round(v, 6) for e, v in sorted(measured.items())},
        "alignment": [a.to_json() for a in ALIGNMENT],
        "high_level_model": "saelab.circuits.siit (DUP at S2 -> S-INH at END -> NAME at END)",
        "construction_checks": checks,
    }
    path = data_dir() / "circuits" / cfg.name / "ioi.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def finalize(cfg: SIITConfig, state: dict, command: str, stages: tuple[str, ...] = ()) -> None:
    """Measure the construction checks on the saved model and write its card, config section and circuit file;
    `stages` are earlier training stages (command and held-out scores) the run was initialised from."""
    torch.set_num_threads(cfg.threads)
    tok = tokenizer()
    model = load_model(str(cfg.model_dir))
    model.cfg.model_name = cfg.name
    checks, effects, problem, means = construction_checks(model, tok)
    splits = {
        "train_distribution_fresh": split_scores(model, tok, cfg.train_split, 20_000, 500),
        ("held_out_templates" if cfg.hold_out_templates else "templates_3_8_14_trained_on"):
            split_scores(model, tok, HELD_OUT_TEMPLATE_SPLIT, 30_000, 500),
        ("held_out_places_objects" if cfg.hold_out_words else "places_objects_trained_on"): split_scores(model, tok, HELD_OUT_WORD_SPLIT, 40_000, 500),
    }
    iit_ok = all(v >= 0.95 for s in splits.values() for k, v in s.items() if k.startswith("interchange"))
    checks["passed"]["interchange>=0.95_every_node_every_split"] = iit_ok
    checks["passed"]["task_top1>=0.95_every_split"] = all(s["task_top1"] >= 0.95 for s in splits.values())
    write_ground_truth(cfg, model, effects, problem, means, checks)
    extra = {
        "name": cfg.name,
        "description": (f"SIIT IOI model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
                        f"d_mlp {cfg.d_mlp}, saelab-tiny tokenizer; circuit known by construction"),
        "trained_on": "IOI prompts from saelab's generator (12 of 15 templates) with SIIT losses",
        "alignment": [a.to_json() for a in ALIGNMENT],
        "design_history": DESIGN_HISTORY,
        "stages": list(stages),
        "held_out": {"templates": list(HELD_OUT_TEMPLATE_SPLIT.templates) if cfg.hold_out_templates else [], "places": list(HELD_OUT_WORD_SPLIT.places) if cfg.hold_out_words else [],
                     "objects": list(HELD_OUT_WORD_SPLIT.objects) if cfg.hold_out_words else [],
                     "names": "not held out (an IOI-only model never trains an unseen name's embedding)"},
        "construction_checks": checks,
        "split_scores": splits,
        "training": {"steps": state["step"], "wall_time_s": round(state["elapsed_s"]), "stopped": state["stopped"],
                     "history_tail": state["history"][-3:], "config": asdict(cfg), "command": command,
                     "torch": torch.__version__},
    }
    # Re-save from the loaded (float16-rounded) model so the weights are exactly the ones checked.
    save_model(model, cfg.model_dir, weights_dtype=torch.float16, extra=extra)
    (cfg.model_dir / "MODEL_CARD.md").write_text(model_card(extra))


def model_card(extra: dict) -> str:
    checks, splits = extra["construction_checks"], extra["split_scores"]
    lines = [
        f"# {extra['name']}", "", extra["description"] + ".", "",
        "Trained with strict interchange intervention training (SIIT; Gupta et al. 2024, InterpBench) so that a "
        "high-level causal model of IOI in the shape of Wang et al.'s circuit is implemented by three named heads "
        "at named positions and nothing else matters:", "",
    ]
    lines += [f"- `{a['variable']}` → head {a['node']} at {a['position']}: {a['meaning']}" for a in extra["alignment"]]
    lines += [
        "", "Every other head, every MLP and the aligned heads at other positions are non-aligned (strict loss). "
        "The circuit is `data/circuits/saelab-ioi-siit/ioi.json`.", "",
        "## Construction checks (saelab's IOI generator, vocabulary tiny, ABC resample ablation, "
        f"{checks['n_prompts']} prompts, seed {checks['seed']})", "",
        "| check | measured | passed |", "|---|---|---|",
        f"| IOI accuracy (IO vs S) ≥ 0.95 | {checks['ioi_accuracy_io_vs_s']} | "
        f"{checks['passed']['task_accuracy>=0.95']} |",
        f"| max single non-circuit node effect / gap < 0.02 | {checks['max_single_non_circuit_effect_over_gap']} | "
        f"{checks['passed']['single_non_circuit<0.02']} |",
        f"| all non-circuit nodes together / gap < 0.10 | {checks['all_non_circuit_together_effect_over_gap']} | "
        f"{checks['passed']['all_non_circuit<0.10']} |",
        f"| min circuit node effect / gap > 0.20 | {checks['min_circuit_effect_over_gap']} | "
        f"{checks['passed']['each_circuit_node>0.20']} |",
        f"| interchange accuracy ≥ 0.95, every node, every split | see below | "
        f"{checks['passed']['interchange>=0.95_every_node_every_split']} |",
        "", f"Clean metric {checks['metric_clean']}, corrupted {checks['metric_corrupted']}.", "",
        "## Per split (500 pairs each; top-1 over the whole vocabulary; strict = all non-aligned units patched "
        "from a same-template source, half ABC)", "",
    ]
    keys = list(next(iter(splits.values())))
    lines += ["| split | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(str(s[k]) for k in keys) + " |" for name, s in splits.items()]
    held = extra["held_out"]
    t = extra["training"]
    lines += [
        "", f"Held out of training and stopping: templates {held['templates']}, places {held['places']}, objects "
        f"{held['objects']}. Names: {held['names']}.", "",
        "## Training", "", f"`{t['command']}`: {t['steps']} steps, {t['wall_time_s']} s on one CPU thread; "
        f"stopped: {t['stopped']}. Initialised from: {t['config']['init_from'] or 'random (seed ' + str(t['config']['seed']) + ')'}.",
        "", "## Design history", "", extra["design_history"], "",
    ]
    if extra["stages"]:
        lines += ["## Earlier stages this model was initialised from", ""]
        lines += [f"{i + 1}. {stage}" for i, stage in enumerate(extra["stages"])] + [""]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[SIITConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=SIITConfig.name)
    parser.add_argument("--seed", type=int, default=SIITConfig.seed)
    parser.add_argument("--lr", type=float, default=SIITConfig.lr)
    parser.add_argument("--strict-weight", type=float, default=SIITConfig.strict_weight)
    parser.add_argument("--all-templates", action="store_true", help="train on all 15 templates")
    parser.add_argument("--strict-kl-weight", type=float, default=SIITConfig.strict_kl_weight)
    parser.add_argument("--all-words", action="store_true", help="train on every place and object")
    parser.add_argument("--iit-weight", type=float, default=SIITConfig.iit_weight)
    parser.add_argument("--time-limit-min", type=float, default=SIITConfig.time_limit_min)
    parser.add_argument("--batch", type=int, default=SIITConfig.batch)
    parser.add_argument("--eval-every", type=int, default=SIITConfig.eval_every)
    parser.add_argument("--finalize-only", action="store_true")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from another run's checkpoint weights (fresh optimizer, step 0)")
    args = parser.parse_args(argv)
    cfg = SIITConfig(name=args.name, seed=args.seed, lr=args.lr, iit_weight=args.iit_weight,
                     strict_weight=args.strict_weight, hold_out_templates=not args.all_templates,
                     hold_out_words=not args.all_words, strict_kl_weight=args.strict_kl_weight,
                     init_from=None if args.init_from is None else str(args.init_from), time_limit_min=args.time_limit_min, batch=args.batch,
                     eval_every=args.eval_every)
    return cfg, args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg, args = parse_args(argv)
    command = "PYTHONPATH=. .venv/bin/python training/train_siit.py " + " ".join(argv)
    if args.finalize_only:
        state = torch.load(cfg.run_dir / "checkpoint.pt", weights_only=False)["state"]
    else:
        state = train(cfg)
    finalize(cfg, state, command.strip())


if __name__ == "__main__":
    main()
