"""Supervised dictionaries for IOI and the three-axis comparison with SAEs (Makelov, Lange & Nanda 2024).

Supervised dictionary at one location, for attributes A (IO name, S name, order "pos"):
u_A[v] = E[a | A = v] − E[a], and â = E[a] + Σ_A u_A[value of A], fitted on one prompt set and evaluated on
another whose (IO, S) name pairs never occur in the first (each name is seen in its role, so every vector the
evaluation needs was fitted).

Axes, for the supervised dictionary and any SAE at the same location (an SAE whose input is the location's
concatenated z):
- approximation: with F the mean logit difference logit(IO) − logit(S),
  sufficiency = (F[a → â] − F[a → E a]) / (F_clean − F[a → E a]) (the reconstruction alone, relative to
  mean-ablation) and necessity = (F_clean − F[a → a − â + E â]) / (F_clean − F[a → E a]) (mean-ablating only
  what the dictionary explains hurts as much as mean-ablating everything);
- control: edit A from v to v′ and patch the edited activation in; edit accuracy is the fraction of prompts
  where the model's top token at END equals its top token when the true counterfactual activation (from the
  prompt with A = v′) is patched in. Reported twice: over all prompts, and over only the prompts where that
  patch changes the prediction ("changed-only"; over all prompts an edit that does nothing scores the
  fraction whose answer never changes, so the no-edit row is shown beside every table). Edits, each named:
  "supervised": a − u_A[v] + u_A[v′] (the paper's supervised edit). "makelov": the paper's SAE edit
  (`get_edit_using_f1_scores` in github.com/amakelov/sae): rank latents by F1 with A = v, subtract the
  `exchange_latents` best-ranked latents active in a (at their strengths in a), and add the
  `exchange_latents` best-ranked latents for A = v′ active in the encoding of the counterfactual activation
  (at their strengths there). The paper ranks on its evaluation prompts; saelab ranks on the fit prompts, the
  same data the supervised dictionary is fitted on. "saelab" (our variant, no counterfactual activation
  needed): remove the active latents assigned to (A, v), add the latent best assigned to (A, v′) at its mean
  firing activation for A = v′ (latents are assigned to the attribute value they have the best F1 with on the
  fit set, if that F1 ≥ `assign_f1`). "none": the unedited activation. Edit magnitude:
  mean ‖edit‖ / mean ‖a_counterfactual − a‖;
- interpretability: per attribute value, the best latent's F1 (precision, recall) of "latent fires" against
  "A = v" on the evaluation prompts, averaged over values.
A location whose mean-ablation gap |F_clean − F[a → E a]| is below `min_gap_fraction` × |F_clean| is refused
(the ratios above would divide by about zero).
Stated rules for the failure modes the paper reports: a value is *over-split* when at least two latents have
precision ≥ `split_precision` for it, none alone has recall ≥ `split_recall`, and together they do; a value is
*occluded* when the information is at the location (the supervised dictionary decodes it with accuracy ≥
`decodable_accuracy`) yet no latent reaches F1 ≥ `occlusion_f1` for it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

EVAL_KIND = "supervised_ioi"

# ---------------------------------------------------------------- attributes as integer codes


def attribute_vocab(attributes: dict[str, list]) -> dict[str, tuple]:
    """The sorted distinct values of each attribute."""
    return {name: tuple(sorted(set(values))) for name, values in attributes.items()}


def encode_attributes(attributes: dict[str, list], vocab: dict[str, tuple]) -> dict[str, Int[Tensor, " n"]]:
    """Each attribute's values as indices into `vocab`; a value the vocabulary lacks is an error."""
    codes = {}
    for name, values in attributes.items():
        index = {v: i for i, v in enumerate(vocab[name])}
        missing = sorted({v for v in values if v not in index}, key=str)
        if missing:
            raise ValueError(f"attribute {name!r} has values {missing[:5]} the fit set never had")
        codes[name] = torch.tensor([index[v] for v in values], dtype=torch.long)
    return codes


# ---------------------------------------------------------------- the supervised dictionary


class SupervisedDictionary(NamedTuple):
    """E[a] and u_A[v] = E[a | A = v] − E[a] for every attribute A and value v."""

    mean: Float[Tensor, " d"]
    vectors: dict[str, Float[Tensor, "n_values d"]]
    counts: dict[str, Int[Tensor, " n_values"]]
    """Fit examples per value (a value with count 0 has a zero vector)."""


def fit_supervised(
    acts: Float[Tensor, "n d"], codes: dict[str, Int[Tensor, " n"]], n_values: dict[str, int]
) -> SupervisedDictionary:
    """Fit the supervised dictionary on activations and their attribute codes."""
    acts = acts.double()
    mean = acts.mean(0)
    vectors, counts = {}, {}
    for name, code in codes.items():
        count = torch.bincount(code, minlength=n_values[name])
        sums = acts.new_zeros(n_values[name], acts.shape[1]).index_add_(0, code.to(acts.device), acts)
        conditional = sums / count.clamp_min(1)[:, None].to(acts)
        vectors[name] = torch.where(count[:, None].to(acts.device) > 0, conditional - mean, 0.0).float()
        counts[name] = count
    return SupervisedDictionary(mean.float(), vectors, counts)


def supervised_reconstruction(
    dictionary: SupervisedDictionary, codes: dict[str, Int[Tensor, " n"]]
) -> Float[Tensor, "n d"]:
    """â = E[a] + Σ_A u_A[code_A]."""
    n = next(iter(codes.values())).shape[0]
    recon = dictionary.mean.expand(n, -1).clone()
    for name, code in codes.items():
        recon += dictionary.vectors[name][code]
    return recon


def supervised_edit(
    dictionary: SupervisedDictionary,
    acts: Float[Tensor, "n d"],
    attribute: str,
    source: Int[Tensor, " n"],
    target: Int[Tensor, " n"],
) -> Float[Tensor, "n d"]:
    """a − u_A[source] + u_A[target]."""
    vectors = dictionary.vectors[attribute]
    return acts + vectors[target] - vectors[source]


def _nearest(residual: Float[Tensor, "n d"], vectors: Tensor, counts: Tensor) -> Int[Tensor, " n"]:
    distance = torch.cdist(residual.float(), vectors)
    distance[:, counts == 0] = float("inf")
    return distance.argmin(-1)


def _coordinate_descent(dictionary: SupervisedDictionary, centred: Tensor, rounds: int) -> dict[str, Tensor]:
    codes = {
        name: _nearest(centred, vectors, dictionary.counts[name])
        for name, vectors in dictionary.vectors.items()
    }
    for _ in range(rounds):
        for name, vectors in dictionary.vectors.items():
            others = sum(dictionary.vectors[o][codes[o]] for o in codes if o != name)
            codes[name] = _nearest(centred - others, vectors, dictionary.counts[name])
    return codes


def _exhaustive(dictionary: SupervisedDictionary, centred: Tensor, chunk: int = 4096) -> dict[str, Tensor]:
    fitted = [dictionary.counts[name].nonzero().squeeze(1) for name in dictionary.vectors]
    combos = torch.cartesian_prod(*fitted).reshape(-1, len(fitted))
    best_distance = torch.full((centred.shape[0],), float("inf"))
    best = torch.zeros(centred.shape[0], dtype=torch.long)
    for start in range(0, combos.shape[0], chunk):
        part = combos[start : start + chunk]
        recon = sum(v[part[:, i]] for i, v in enumerate(dictionary.vectors.values()))
        distance, index = torch.cdist(centred, recon).min(-1)
        better = distance < best_distance
        best_distance, best = (
            torch.where(better, distance, best_distance),
            torch.where(better, index + start, best),
        )
    return {name: combos[best, i] for i, name in enumerate(dictionary.vectors)}


def decode_attributes(
    dictionary: SupervisedDictionary,
    acts: Float[Tensor, "n d"],
    max_combinations: int = 200_000,
    rounds: int = 5,
) -> dict[str, Int[Tensor, " n"]]:
    """The attribute values whose reconstruction E[a] + Σ_A u_A[v_A] is nearest to each activation: exactly,
    over every combination of fitted values when there are at most `max_combinations`, else by coordinate
    descent (each attribute in turn, the others held)."""
    centred = acts.float() - dictionary.mean
    n_combinations = 1
    for count in dictionary.counts.values():
        n_combinations *= int((count > 0).sum())
    if n_combinations <= max_combinations:
        return _exhaustive(dictionary, centred)
    return _coordinate_descent(dictionary, centred, rounds)


# ---------------------------------------------------------------- latents against attribute values


class F1Table(NamedTuple):
    """Precision, recall and F1 of "latent i fires" against "attribute = v"."""

    precision: Float[Tensor, "d_sae n_values"]
    recall: Float[Tensor, "d_sae n_values"]
    f1: Float[Tensor, "d_sae n_values"]
    support: Int[Tensor, " n_values"]
    """Examples with each value."""


def f1_table(fires: Bool[Tensor, "n d_sae"], code: Int[Tensor, " n"], n_values: int) -> F1Table:
    """The F1 table of every latent against every value of one attribute."""
    onehot = F.one_hot(code, n_values).double()
    fired = fires.double()
    true_pos = fired.t() @ onehot
    precision = true_pos / fired.sum(0)[:, None].clamp_min(1)
    recall = true_pos / onehot.sum(0)[None, :].clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return F1Table(precision.float(), recall.float(), f1.float(), onehot.sum(0).long())


def over_split_values(
    fires: Bool[Tensor, "n d_sae"],
    code: Int[Tensor, " n"],
    table: F1Table,
    split_precision: float,
    split_recall: float,
) -> Bool[Tensor, " n_values"]:
    """Values covered only by several precise latents together (see the module docstring)."""
    out = torch.zeros(len(table.support), dtype=torch.bool)
    for v in (table.support > 0).nonzero().squeeze(1).tolist():
        precise = (table.precision[:, v] >= split_precision).nonzero().squeeze(1)
        if precise.numel() < 2 or bool((table.recall[precise, v] >= split_recall).any()):
            continue
        union = fires[code == v][:, precise].any(1).double().mean()
        out[v] = bool(union >= split_recall)
    return out


def occluded_values(
    table: F1Table, decodable: Bool[Tensor, " n_values"], occlusion_f1: float
) -> Bool[Tensor, " n_values"]:
    """Values the location carries (decodable) that no latent tracks (best F1 below `occlusion_f1`)."""
    return decodable & (table.f1.max(0).values < occlusion_f1) & (table.support > 0)


class Interpretability(NamedTuple):
    """Per attribute, averaged over the values present in the evaluation prompts."""

    f1: dict[str, float]
    precision: dict[str, float]
    recall: dict[str, float]
    over_splitting: dict[str, float]
    occlusion: dict[str, float]


def interpretability(
    latents: Float[Tensor, "n d_sae"],
    codes: dict[str, Int[Tensor, " n"]],
    n_values: dict[str, int],
    decodable: dict[str, Bool[Tensor, " n_values"]],
    cfg: "SupervisedEvalConfig",
) -> Interpretability:
    fires = latents > 0
    out: dict[str, dict[str, float]] = {k: {} for k in Interpretability._fields}
    for name, code in codes.items():
        table = f1_table(fires, code, n_values[name])
        present = table.support > 0
        best = table.f1.argmax(0)
        columns = torch.arange(n_values[name])
        out["f1"][name] = float(table.f1[best, columns][present].mean())
        out["precision"][name] = float(table.precision[best, columns][present].mean())
        out["recall"][name] = float(table.recall[best, columns][present].mean())
        split = over_split_values(fires, code, table, cfg.split_precision, cfg.split_recall)
        out["over_splitting"][name] = float(split[present].double().mean())
        occluded = occluded_values(table, decodable[name], cfg.occlusion_f1)
        out["occlusion"][name] = float(occluded[present].double().mean())
    return Interpretability(**out)


# ---------------------------------------------------------------- SAE edits through latent interpretations


class Assignment(NamedTuple):
    """Which latents stand for which values of one attribute (from the fit set)."""

    members: Bool[Tensor, "d_sae n_values"]
    """Latent i is assigned to value v."""
    best: Int[Tensor, " n_values"]
    """The member with the highest F1 for each value (−1: none)."""
    activation: Float[Tensor, " n_values"]
    """The best member's mean activation when it fires on fit prompts with that value."""


def assign_latents(
    latents: Float[Tensor, "n d_sae"],
    codes: dict[str, Int[Tensor, " n"]],
    n_values: dict[str, int],
    min_f1: float,
) -> dict[str, Assignment]:
    """Assign each latent to the (attribute, value) it has the best F1 with, if that F1 ≥ min_f1."""
    fires = latents > 0
    tables = {name: f1_table(fires, code, n_values[name]) for name, code in codes.items()}
    joined = torch.cat([t.f1 for t in tables.values()], dim=1)
    best_f1, best_column = joined.max(1)
    assigned = best_f1 >= min_f1
    out, offset = {}, 0
    for name, table in tables.items():
        columns = torch.arange(offset, offset + n_values[name])
        members = assigned[:, None] & (best_column[:, None] == columns[None, :])
        scores = torch.where(members, table.f1, -1.0)
        top, best = scores.max(0)
        best = torch.where(top >= 0, best, -1)
        out[name] = Assignment(members, best, _firing_means(latents, codes[name], best))
        offset += n_values[name]
    return out


def _firing_means(latents: Tensor, code: Tensor, best: Tensor) -> Tensor:
    """Per value v, the mean activation of latent best[v] over fit prompts with value v where it fires."""
    values = torch.zeros(len(best))
    for v in (best >= 0).nonzero().squeeze(1).tolist():
        column = latents[code == v, best[v]]
        column = column[column > 0]
        values[v] = float(column.mean()) if column.numel() else 0.0
    return values


def sae_edit(
    W_dec: Float[Tensor, "d_sae d"],
    acts: Float[Tensor, "n d"],
    latents: Float[Tensor, "n d_sae"],
    assignment: Assignment,
    source: Int[Tensor, " n"],
    target: Int[Tensor, " n"],
) -> Float[Tensor, "n d"]:
    """Remove the active latents assigned to the source value, add the target value's best latent."""
    remove = assignment.members[:, source].t() & (latents > 0)
    delta = -(latents * remove) @ W_dec
    best = assignment.best[target]
    scale = torch.where(best >= 0, assignment.activation[target], 0.0)
    delta = delta + scale[:, None] * W_dec[best.clamp_min(0)]
    return acts + delta.to(acts.dtype)


def top_active_latents(
    latents: Float[Tensor, "n d_sae"], rank: Float[Tensor, "n d_sae"], k: int
) -> Float[Tensor, "n d_sae"]:
    """Per row, the k active latents (latents > 0) that rank highest, at their strengths; the rest zeroed. A
    row with fewer than k active latents keeps all of them."""
    masked = rank.masked_fill(latents <= 0, float("-inf"))
    index = masked.topk(min(k, latents.shape[1]), dim=-1).indices
    kept = latents.gather(-1, index).clamp_min(0)
    return torch.zeros_like(latents).scatter_(-1, index, kept)


def makelov_sae_edit(
    W_dec: Float[Tensor, "d_sae d"],
    acts: Float[Tensor, "n d"],
    latents: Float[Tensor, "n d_sae"],
    cf_latents: Float[Tensor, "n d_sae"],
    f1: Float[Tensor, "d_sae n_values"],
    source: Int[Tensor, " n"],
    target: Int[Tensor, " n"],
    k: int,
) -> Float[Tensor, "n d"]:
    """Makelov et al.'s SAE edit: a − Σ f_j(a) d_j over the k active latents of a with the best F1 for the
    source value + Σ f_j(a′) d_j over the k active latents of the counterfactual a′ with the best F1 for the
    target value."""
    removed = top_active_latents(latents, f1[:, source].t(), k)
    added = top_active_latents(cf_latents, f1[:, target].t(), k)
    return acts + ((added - removed) @ W_dec).to(acts.dtype)


# ---------------------------------------------------------------- dictionaries behind one interface


EditFn = Callable[[Tensor, dict[str, Tensor], str, Tensor, Tensor], Tensor]
"""(activations, their codes, attribute, target codes, counterfactual activations) -> edited activations. Only
edits that follow the paper's SAE protocol read the counterfactual activations."""


class Dictionary(NamedTuple):
    """What the evaluation needs from a dictionary at one location."""

    name: str
    reconstruct: Callable[[Tensor, dict[str, Tensor]], Tensor] | None
    """(activations, attribute codes) -> reconstructions (SAEs ignore the codes); None for the no-edit row,
    which has no approximation scores."""
    edits: dict[str, EditFn]
    """Named edits, each scored on its own (see the module docstring)."""
    latents: Callable[[Tensor], Tensor] | None
    """Activations -> latent activations, for interpretability (None for the supervised dictionary, whose
    features are the attribute values themselves)."""


@dataclass(frozen=True)
class SupervisedEvalConfig:
    """Thresholds and sizes of the supervised-dictionary evaluation."""

    assign_f1: float = 0.2
    """A latent stands for the attribute value it has the best fit-set F1 with, if that F1 reaches this."""
    occlusion_f1: float = 0.5
    """A decodable value with no latent reaching this F1 counts as occluded."""
    decodable_accuracy: float = 0.5
    """A value is carried by the location when the supervised dictionary decodes it this accurately."""
    split_precision: float = 0.8
    """Precision a latent needs to count as one of a value's split pieces."""
    split_recall: float = 0.8
    """Recall that counts as covering a value."""
    exchange_latents: int = 1
    """Latents removed and added by the "makelov" SAE edit (the paper sweeps 1, 2, 4, 8 per side; 1 is its
    smallest and matches saelab's edit, which adds one latent; not tuned on any table)."""
    min_gap_fraction: float = 0.05
    """A location is refused when |clean − mean-ablated logit difference| < this × |clean logit difference|:
    ablating it barely moves the metric, so sufficiency and necessity would divide by about zero."""
    batch_size: int = 128
    """Prompts per forward pass."""
    seed: int = 0
    """Seed of the counterfactual values."""

    def __post_init__(self) -> None:
        for name in ("assign_f1", "occlusion_f1", "decodable_accuracy", "split_precision", "split_recall"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.exchange_latents < 1:
            raise ValueError(f"exchange_latents must be positive, got {self.exchange_latents}")
        if not 0 <= self.min_gap_fraction < 1:
            raise ValueError(f"min_gap_fraction must be in [0, 1), got {self.min_gap_fraction}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


def supervised_dictionary(dictionary: SupervisedDictionary, name: str) -> Dictionary:
    def edit(acts, codes, attribute, target, cf_acts):
        return supervised_edit(dictionary, acts, attribute, codes[attribute], target)

    return Dictionary(
        name,
        lambda acts, codes: supervised_reconstruction(dictionary, codes).to(acts),
        {"supervised": edit},
        None,
    )


def no_edit_dictionary(name: str = "no-edit") -> Dictionary:
    """The baseline row: the activation left as it is (control scores only)."""
    return Dictionary(name, None, {"none": lambda acts, codes, attribute, target, cf_acts: acts}, None)


def top1(latents: Float[Tensor, "n d_sae"]) -> Float[Tensor, "n d_sae"]:
    """Only each row's largest latent (the argmax code of O'Neill & Bui's discretisation, with its value)."""
    values, index = latents.max(-1, keepdim=True)
    return torch.zeros_like(latents).scatter_(-1, index, values)


def sae_dictionary(
    sae, name: str, fit_acts: Float[Tensor, "n d"], fit_codes: dict[str, Tensor], n_values: dict[str, int],
    cfg: SupervisedEvalConfig, argmax_code: bool = False,
) -> Dictionary:
    """An SAE whose input is the location's activation, with latents assigned to values on the fit set.
    With `argmax_code`, only each input's strongest latent is kept (a discrete, one-code dictionary)."""
    if sae.cfg.d_in != fit_acts.shape[1]:
        raise ValueError(
            f"SAE {name!r} reads {sae.cfg.d_in} values, the location is {fit_acts.shape[1]} wide; "
            "use an SAE trained on this location's activations"
        )

    @torch.no_grad()
    def latents(acts: Tensor) -> Tensor:
        dense = sae.encode(acts.to(sae.cfg.torch_dtype)).float()
        return top1(dense) if argmax_code else dense

    fit_latents = latents(fit_acts)
    assignment = assign_latents(fit_latents, fit_codes, n_values, cfg.assign_f1)
    fires = fit_latents > 0
    f1 = {a: f1_table(fires, code, n_values[a]).f1 for a, code in fit_codes.items()}
    W_dec = sae.W_dec.detach().float()

    @torch.no_grad()
    def reconstruct(acts, codes):
        return sae.decode(latents(acts)).to(acts.dtype)

    def saelab(acts, codes, attribute, target, cf_acts):
        return sae_edit(W_dec, acts, latents(acts), assignment[attribute], codes[attribute], target)

    def makelov(acts, codes, attribute, target, cf_acts):
        return makelov_sae_edit(W_dec, acts, latents(acts), latents(cf_acts), f1[attribute], codes[attribute],
                                target, cfg.exchange_latents)

    return Dictionary(name, reconstruct, {"saelab": saelab, "makelov": makelov}, latents)
