"""Single latents against the high-level variables of a model whose circuit is known by construction.

A by-construction model (saelab-ioi-siit, trained with SIIT) carries each high-level variable in one named
head at one named prompt position (`saelab.circuits.siit.AlignedNode`). At that node's site (the layer's
hook_z, or its residual stream after the layer) and position, each *unit* — an SAE latent, or a baseline's
unit — is scored as a detector of each value of the variable: the unit predicts "value = v" when it exceeds a
threshold. Protocol:

* the threshold of every (unit, value) is the one with the best F1 on a dev set of prompts; the unit for value
  v is the one with the best dev F1 for v; precision, recall and F1 of that unit and threshold are measured on
  a separate test set of prompts (never used to choose anything);
* a variable's score is the mean over its values (present in both sets) of that test F1 (macro F1);
* baselines at the same site and position, with the same protocol: "neurons" (every raw dimension, both signs:
  x and −x) and "random" (as many random unit directions as the SAE has latents, x·r); "chance" is the
  predict-every-row classifier, F1 = 2p / (1 + p) for a value of prevalence p.

Attributes (the variable's value as classes) come from the design's entry (`SIITTask.variable_values`), on IOI
prompts (no ABC prompts, where the value is a mixture): in the relay (saelab-ioi-siit) every variable carries
the indirect object ("name", its token; "slot", which of the two name slots holds it); in the copies design
(saelab-ioi-siit-copies) SLOT1 / SLOT2 carry their slot's name, DUP and S-INH the subject, NAME the indirect
object.
"""

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.collect import forward_sites
from saelab.activations.sites import HookSite
from saelab.circuits.siit import (
    TRAIN_SPLIT,
    AlignedNode,
    IOIRows,
    IOISplit,
    SIITTask,
    encode_specs,
    sample_spec,
)
from saelab.evals.supervised import f1_table
from saelab.sae.functional import random_unit_rows

UNIT_KINDS = ("sae", "neurons", "random", "chance")


class BestCuts(NamedTuple):
    """For every unit and value, the threshold with the best F1 of "unit > threshold" against "value = v"."""

    f1: Float[Tensor, "units n_values"]
    threshold: Float[Tensor, "units n_values"]
    """Midway between the last score predicted positive and the next lower one; −inf: every row positive."""


def best_cuts(scores: Float[Tensor, "n units"], code: Int[Tensor, " n"], n_values: int,
              max_elements: int = 2**23) -> BestCuts:
    """Every (unit, value)'s best threshold on these rows, over all cuts between distinct scores."""
    n, units = scores.shape
    onehot = F.one_hot(code, n_values).float()
    support = onehot.sum(0)
    predicted = torch.arange(1, n + 1, dtype=torch.float32)[:, None, None]
    f1s, thresholds = [], []
    step = max(1, max_elements // max(1, n * n_values))
    for first in range(0, units, step):
        ranked, order = scores[:, first:first + step].float().sort(dim=0, descending=True)
        true_pos = onehot[order].cumsum(0)  # [n, chunk, n_values]: rows ranked 0..i predicted positive
        f1 = 2 * true_pos / (predicted + support)
        valid = torch.cat([ranked[:-1] > ranked[1:], torch.ones(1, ranked.shape[1], dtype=torch.bool)])
        best_f1, cut = torch.where(valid[..., None], f1, -1.0).max(0)  # [chunk, n_values]
        below = torch.cat([ranked[1:], torch.full((1, ranked.shape[1]), -torch.inf)])
        midway = (ranked + below) / 2  # -inf after the last row
        thresholds.append(midway.t().gather(1, cut))
        f1s.append(best_f1)
    return BestCuts(torch.cat(f1s), torch.cat(thresholds))


class ValueF1(NamedTuple):
    """Per value: the unit and threshold chosen on the dev rows, and their test precision, recall and F1."""

    unit: Int[Tensor, " n_values"]
    threshold: Float[Tensor, " n_values"]
    dev_f1: Float[Tensor, " n_values"]
    precision: Float[Tensor, " n_values"]
    recall: Float[Tensor, " n_values"]
    f1: Float[Tensor, " n_values"]
    dev_support: Int[Tensor, " n_values"]
    test_support: Int[Tensor, " n_values"]


def threshold_f1(dev_scores: Float[Tensor, "n_dev units"], dev_code: Int[Tensor, " n_dev"],
                 test_scores: Float[Tensor, "n_test units"], test_code: Int[Tensor, " n_test"],
                 n_values: int) -> ValueF1:
    """Choose unit and threshold per value on the dev rows; measure them on the test rows."""
    cuts = best_cuts(dev_scores, dev_code, n_values)
    dev_f1, unit = cuts.f1.max(0)
    values = torch.arange(n_values)
    threshold = cuts.threshold[unit, values]
    fires = test_scores[:, unit].float() > threshold  # column v: value v's unit at its threshold
    table = f1_table(fires, test_code, n_values)
    return ValueF1(unit, threshold, dev_f1, table.precision[values, values], table.recall[values, values],
                   table.f1[values, values], torch.bincount(dev_code, minlength=n_values), table.support)


def chance_f1(test_code: Int[Tensor, " n_test"], n_values: int) -> Float[Tensor, " n_values"]:
    """F1 of predicting every row as value v: precision p (v's prevalence), recall 1."""
    prevalence = torch.bincount(test_code, minlength=n_values).float() / len(test_code)
    return 2 * prevalence / (1 + prevalence)


class VariableScore(NamedTuple):
    """Macro averages over the values present in both the dev and the test rows."""

    f1: float
    precision: float
    recall: float
    n_values: int
    distinct_units: int
    """How many different units the values chose (1: one unit for all values)."""


def chance_score(dev_code: Int[Tensor, " n_dev"], test_code: Int[Tensor, " n_test"],
                 n_values: int) -> VariableScore:
    """The predict-every-row classifier's macro scores over the values present in both sets."""
    present = ((torch.bincount(dev_code, minlength=n_values) > 0)
               & (torch.bincount(test_code, minlength=n_values) > 0))
    prevalence = torch.bincount(test_code, minlength=n_values).float()[present] / len(test_code)
    return VariableScore(float(chance_f1(test_code, n_values)[present].mean()), float(prevalence.mean()), 1.0,
                         int(present.sum()), 0)


def macro_score(result: ValueF1) -> VariableScore:
    present = (result.dev_support > 0) & (result.test_support > 0)
    return VariableScore(float(result.f1[present].mean()), float(result.precision[present].mean()),
                         float(result.recall[present].mean()), int(present.sum()),
                         int(result.unit[present].unique().numel()))


# ---------------------------------------------------------------- the IOI relay's variables on prompts


def ioi_prompts(tokenizer, n: int, seed: int, split: IOISplit = TRAIN_SPLIT) -> IOIRows:
    """n IOI prompts (no ABC ones) of the SIIT generator, templates drawn uniformly."""
    rng = random.Random(seed)
    return encode_specs(tokenizer, [sample_spec(rng, split, rng.choice(split.templates), abc=False)
                                    for _ in range(n)])


def as_codes(dev: Tensor, test: Tensor) -> tuple[Int[Tensor, " n_dev"], Int[Tensor, " n_test"], int]:
    """Raw values of both sets as class indices 0..n_values−1 over their union."""
    _, inverse = torch.unique(torch.cat([dev, test]), return_inverse=True)
    return inverse[:len(dev)], inverse[len(dev):], int(inverse.max()) + 1


@torch.no_grad()
def node_activations(model: HookedTransformer, rows: IOIRows, site: HookSite,
                     node: AlignedNode, batch_size: int = 512) -> Float[Tensor, "n d"]:
    """The site's activation at the node's position (S2, end, slot1, slot2) of every prompt."""
    position = rows.position(node.position)
    site = site.validate(model.cfg)
    out = []
    for first in range(0, len(position), batch_size):
        tokens = rows.tokens[first:first + batch_size].to(model.cfg.device)
        act = forward_sites(model, tokens, [site])[site]
        act = act.reshape(*act.shape[:2], -1)
        out.append(act[torch.arange(len(tokens)), position[first:first + batch_size]].float().cpu())
    return torch.cat(out)


@dataclass(frozen=True)
class KnownVariablesConfig:
    """Prompt sets and the random baseline of `known_variable_scores`."""

    n_dev: int = 3000
    """Prompts the units and thresholds are chosen on."""
    n_test: int = 3000
    """Prompts the reported precision, recall and F1 are measured on."""
    dev_seed: int = 101
    """Seed of the dev prompts."""
    test_seed: int = 202
    """Seed of the test prompts (must differ from `dev_seed`)."""
    random_seed: int = 0
    """Seed of the random directions."""
    baselines: bool = True
    """Score the neurons, random and chance baselines beside the SAEs (False: the SAEs alone, e.g. a second
    set of SAEs at sites already scored)."""

    def __post_init__(self) -> None:
        for name in ("n_dev", "n_test"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} {getattr(self, name)} must be at least 2")
        if self.dev_seed == self.test_seed:
            raise ValueError(f"dev_seed and test_seed are both {self.dev_seed}; the splits must be "
                             "different prompts")


class KnownVariableRow(NamedTuple):
    variable: str
    node: str
    position: str
    site: str
    attribute: str
    units: str
    """"sae", "neurons", "random" or "chance"."""
    score: VariableScore
    sae_id: str = ""


def unit_scores(kind: str, x: Float[Tensor, "n d"], sae=None, n_random: int = 0,
                seed: int = 0) -> Float[Tensor, "n units"]:
    """The units of one kind at a site: SAE latents, raw dimensions of both signs, or random directions."""
    if kind == "sae":
        with torch.no_grad():
            return sae.encode(x.to(sae.W_enc.dtype)).float()
    if kind == "neurons":
        return torch.cat([x, -x], dim=1)
    if kind == "random":
        directions = random_unit_rows(n_random, x.shape[1], torch.Generator().manual_seed(seed))
        return x @ directions.t()
    raise ValueError(f"unit kind {kind!r} is not one of sae, neurons, random")


def known_variable_scores(model: HookedTransformer, entry: SIITTask,
                          saes: Mapping[str, tuple[HookSite, object]], cfg: KnownVariablesConfig
                          ) -> list[KnownVariableRow]:
    """Every aligned variable of the IOI design `entry` (`siit_task`) against every SAE (sae_id -> (site,
    SAE)) whose site is in the variable's layer, beside the neurons, random and chance baselines at the same
    site; each variable's attributes are the values the design says it carries (`entry.variable_values`)."""
    if entry.variable_values is None:
        raise ValueError(f"the SIIT entry of {entry.model} states no variable values; known-variable scores "
                         "need an IOI design (siit_task('ioi'), 'ioi-inhibition', 'ioi-copies')")
    dev = ioi_prompts(model.tokenizer, cfg.n_dev, cfg.dev_seed)
    test = ioi_prompts(model.tokenizer, cfg.n_test, cfg.test_seed)
    dev_values, test_values = entry.variable_values(dev), entry.variable_values(test)
    rows = []
    for node in entry.alignment:
        codes = {name: as_codes(values, test_values[node.variable][name])
                 for name, values in dev_values[node.variable].items()}
        for sae_id, (site, sae) in saes.items():
            if site.layer != node.layer:
                continue
            x_dev = node_activations(model, dev, site, node)
            x_test = node_activations(model, test, site, node)
            for attribute, (dev_code, test_code, n_values) in codes.items():
                base = (node.variable, node.node, node.position, str(site), attribute)
                for kind in ("sae", "neurons", "random") if cfg.baselines else ("sae",):
                    score = macro_score(threshold_f1(
                        unit_scores(kind, x_dev, sae, sae.cfg.d_sae, cfg.random_seed), dev_code,
                        unit_scores(kind, x_test, sae, sae.cfg.d_sae, cfg.random_seed), test_code, n_values))
                    rows.append(KnownVariableRow(*base, kind, score, sae_id if kind == "sae" else ""))
                if cfg.baselines:
                    rows.append(KnownVariableRow(*base, "chance",
                                                 chance_score(dev_code, test_code, n_values)))
    return rows
