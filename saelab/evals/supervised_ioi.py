"""Running the supervised-dictionary evaluation on a model: per location, a context computed once
(activations, attribute codes, ablation baselines, counterfactual patches), then every dictionary scored
against it.

    ctx = location_context(model, fit, evaluation, location, name_ids(model.tokenizer, names), cfg)
    if (reason := refusal(ctx, cfg)) is None:
        scores = [evaluate_dictionary(model, ctx, d, cfg) for d in (no_edit_dictionary(), supervised, *saes)]
    rows = [row for s in scores for row in score_rows(s, run_id)]
"""

from collections.abc import Callable
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.evals.ioi import (
    ATTRIBUTES,
    COUNTERFACTUALS,
    Location,
    NameIds,
    Prompts,
    location_acts,
    logit_diff,
    patched_end_logits,
    subset,
)
from saelab.evals.supervised import (
    EVAL_KIND,
    Dictionary,
    Interpretability,
    SupervisedDictionary,
    SupervisedEvalConfig,
    attribute_vocab,
    decode_attributes,
    encode_attributes,
    fit_supervised,
    interpretability,
    supervised_dictionary,
)

DEFAULT_CONFIG = SupervisedEvalConfig()


class AttributeCounterfactual(NamedTuple):
    """The evaluation prompts with one attribute changed, and the model with the true counterfactual patched
    in."""

    target: Int[Tensor, " n"]
    """Codes of the new values."""
    acts: Float[Tensor, "n d"]
    """The location's activation on the counterfactual prompts."""
    prediction: Int[Tensor, " n"]
    """Top token at END of the clean prompt with `acts` patched in."""
    changed: Bool[Tensor, " n"]
    """Whether that patch changes the clean prediction."""


class LocationContext(NamedTuple):
    """Everything about one location that does not depend on the dictionary being scored."""

    location: Location
    prompts: Prompts
    """The evaluation prompts."""
    fit_acts: Float[Tensor, "n_fit d"]
    eval_acts: Float[Tensor, "n d"]
    fit_codes: dict[str, Int[Tensor, " n_fit"]]
    eval_codes: dict[str, Int[Tensor, " n"]]
    vocab: dict[str, tuple]
    supervised: SupervisedDictionary
    decodable: dict[str, Bool[Tensor, " n_values"]]
    ld_clean: float
    ld_mean_ablation: float
    clean_prediction: Int[Tensor, " n"]
    counterfactuals: dict[str, AttributeCounterfactual]

    @property
    def n_values(self) -> dict[str, int]:
        return {name: len(values) for name, values in self.vocab.items()}

    @property
    def n_changed(self) -> dict[str, int]:
        """Per attribute, the evaluation prompts whose prediction the true counterfactual patch changes."""
        return {name: int(cf.changed.sum()) for name, cf in self.counterfactuals.items()}


def refusal(ctx: LocationContext, cfg: SupervisedEvalConfig = DEFAULT_CONFIG) -> str | None:
    """Why the location cannot be scored (one line), or None: a location whose mean-ablation gap is below
    `cfg.min_gap_fraction` of the clean logit difference barely matters to the metric, and every ratio to
    that gap would divide by about zero."""
    gap = ctx.ld_clean - ctx.ld_mean_ablation
    if abs(gap) > cfg.min_gap_fraction * abs(ctx.ld_clean):
        return None
    return (f"refused {ctx.location.name}: mean-ablating it moves the logit difference {ctx.ld_clean:.3f} -> "
            f"{ctx.ld_mean_ablation:.3f} (gap {gap:.3f}, at most min_gap_fraction={cfg.min_gap_fraction} of "
            "the clean value)")


def _chunked(fn: Callable[[Tensor], Tensor], n: int, batch_size: int) -> Tensor:
    """fn(rows) over row blocks of size `batch_size`, concatenated."""
    return torch.cat([fn(torch.arange(s, min(s + batch_size, n))) for s in range(0, n, batch_size)])


def acts_at(model: HookedTransformer, prompts: Prompts, location: Location, batch_size: int) -> Tensor:
    position = prompts.positions[location.position]
    return _chunked(
        lambda r: location_acts(model, prompts.tokens[r], position[r], location).cpu(),
        prompts.size,
        batch_size,
    )


def end_logits(
    model: HookedTransformer,
    prompts: Prompts,
    location: Location,
    replacement: Tensor | None,
    batch_size: int,
) -> Tensor:
    """Logits at END of the prompts with the location patched (None: clean)."""
    position, end = prompts.positions[location.position], prompts.positions["end"]

    def run(r: Tensor) -> Tensor:
        value = None if replacement is None else replacement[r]
        return patched_end_logits(model, prompts.tokens[r], position[r], end[r], location, value).cpu()

    return _chunked(run, prompts.size, batch_size)


def mean_logit_diff(logits: Tensor, prompts: Prompts) -> float:
    return float(logit_diff(logits, prompts.io_ids, prompts.s_ids).mean())


def _decodable(
    dictionary: SupervisedDictionary,
    acts: Tensor,
    codes: dict[str, Tensor],
    n_values: dict[str, int],
    threshold: float,
) -> dict[str, Tensor]:
    """Per attribute value: the supervised dictionary decodes it with accuracy ≥ threshold on `acts`."""
    out = {}
    decoded = decode_attributes(dictionary, acts)
    for name, code in codes.items():
        correct = (decoded[name] == code).double()
        hits = torch.zeros(n_values[name], dtype=torch.float64).index_add_(0, code, correct)
        support = torch.bincount(code, minlength=n_values[name]).double()
        out[name] = (support > 0) & (hits / support.clamp_min(1) >= threshold)
    return out


def _counterfactual(model, prompts, location, attribute, vocab, ids, generator, clean_prediction, batch_size):
    cf = COUNTERFACTUALS[attribute](prompts, list(vocab[attribute]), ids, generator)
    target = encode_attributes({attribute: cf.values}, vocab)[attribute]
    acts = acts_at(model, cf.prompts, location, batch_size)
    prediction = end_logits(model, prompts, location, acts, batch_size).argmax(-1)
    return AttributeCounterfactual(target, acts, prediction, prediction != clean_prediction)


def location_context(
    model: HookedTransformer,
    fit: Prompts,
    evaluation: Prompts,
    location: Location,
    ids: NameIds,
    cfg: SupervisedEvalConfig = DEFAULT_CONFIG,
) -> LocationContext:
    """Fit the supervised dictionary at `location` on `fit`; compute the baselines on `evaluation`."""
    for layer, head in location.heads:
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
            raise ValueError(f"location {location.name!r}: head {layer}.{head} is not in this model")
    vocab = attribute_vocab({a: fit.attributes[a] for a in ATTRIBUTES})
    fit_codes = encode_attributes({a: fit.attributes[a] for a in ATTRIBUTES}, vocab)
    eval_codes = encode_attributes({a: evaluation.attributes[a] for a in ATTRIBUTES}, vocab)
    fit_acts, eval_acts = (acts_at(model, p, location, cfg.batch_size) for p in (fit, evaluation))
    n_values = {name: len(values) for name, values in vocab.items()}
    supervised = fit_supervised(fit_acts, fit_codes, n_values)
    clean = end_logits(model, evaluation, location, None, cfg.batch_size)
    ablated = end_logits(model, evaluation, location, supervised.mean.expand_as(eval_acts), cfg.batch_size)
    generator = torch.Generator().manual_seed(cfg.seed)
    prediction = clean.argmax(-1)
    counterfactuals = {
        a: _counterfactual(model, evaluation, location, a, vocab, ids, generator, prediction, cfg.batch_size)
        for a in ATTRIBUTES
    }
    return LocationContext(
        location,
        evaluation,
        fit_acts,
        eval_acts,
        fit_codes,
        eval_codes,
        vocab,
        supervised,
        _decodable(supervised, eval_acts, eval_codes, n_values, cfg.decodable_accuracy),
        mean_logit_diff(clean, evaluation),
        mean_logit_diff(ablated, evaluation),
        prediction,
        counterfactuals,
    )


class EditScores(NamedTuple):
    """One named edit's control scores, per attribute."""

    accuracy: dict[str, float]
    """Over all evaluation prompts."""
    accuracy_changed: dict[str, float]
    """Over the prompts whose prediction the true counterfactual patch changes (NaN: none)."""
    magnitude: dict[str, float]


class DictionaryScores(NamedTuple):
    """One dictionary at one location on the three axes (interpretability empty for the supervised one;
    approximation NaN for the no-edit row)."""

    location: str
    dictionary: str
    fvu: float
    """Of the reconstruction on the evaluation activations."""
    ld_clean: float
    ld_mean_ablation: float
    ld_spliced: float
    ld_necessity: float
    sufficiency: float
    necessity: float
    edits: dict[str, EditScores]
    n_changed: dict[str, int]
    """Per attribute, the prompts the changed-only accuracy is over."""
    n_prompts: int
    interpretability: Interpretability | None


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator != 0 else float("nan")


class EditAccuracy(NamedTuple):
    all_prompts: float
    changed_only: float
    """NaN when no prompt changes."""


def edit_accuracy(
    edited: Int[Tensor, " n"], counterfactual: Int[Tensor, " n"], changed: Bool[Tensor, " n"]
) -> EditAccuracy:
    """Agreement of the edited run's top tokens with the true counterfactual patch's: over all prompts, and
    over the prompts where that patch changes the clean prediction (`changed`)."""
    agree = (edited == counterfactual).double()
    return EditAccuracy(float(agree.mean()), float(agree[changed].mean()) if changed.any() else float("nan"))


def _edit_scores(model, ctx: LocationContext, edit, cfg: SupervisedEvalConfig) -> EditScores:
    accuracy, accuracy_changed, magnitude = {}, {}, {}
    for attribute, cf in ctx.counterfactuals.items():
        edited = edit(ctx.eval_acts, ctx.eval_codes, attribute, cf.target, cf.acts)
        prediction = end_logits(model, ctx.prompts, ctx.location, edited, cfg.batch_size).argmax(-1)
        accuracy[attribute], accuracy_changed[attribute] = edit_accuracy(
            prediction, cf.prediction, cf.changed
        )
        true_change = (cf.acts - ctx.eval_acts).norm(dim=-1).mean()
        magnitude[attribute] = _ratio(float((edited - ctx.eval_acts).norm(dim=-1).mean()), float(true_change))
    return EditScores(accuracy, accuracy_changed, magnitude)


class Approximation(NamedTuple):
    fvu: float
    ld_spliced: float
    ld_necessity: float
    sufficiency: float
    necessity: float


def _approximation(
    model, ctx: LocationContext, dictionary: Dictionary, cfg: SupervisedEvalConfig
) -> Approximation:
    if dictionary.reconstruct is None:
        return Approximation(*[float("nan")] * 5)
    a = ctx.eval_acts
    recon = dictionary.reconstruct(a, ctx.eval_codes)
    fvu = float((recon - a).pow(2).sum() / (a - a.mean(0)).pow(2).sum().clamp_min(1e-12))
    fit_recon_mean = dictionary.reconstruct(ctx.fit_acts, ctx.fit_codes).mean(0)
    ld_spliced = mean_logit_diff(
        end_logits(model, ctx.prompts, ctx.location, recon, cfg.batch_size), ctx.prompts
    )
    necessity_acts = a - recon + fit_recon_mean
    ld_nec = mean_logit_diff(
        end_logits(model, ctx.prompts, ctx.location, necessity_acts, cfg.batch_size), ctx.prompts
    )
    gap = ctx.ld_clean - ctx.ld_mean_ablation
    return Approximation(
        fvu,
        ld_spliced,
        ld_nec,
        _ratio(ld_spliced - ctx.ld_mean_ablation, gap),
        _ratio(ctx.ld_clean - ld_nec, gap),
    )


def evaluate_dictionary(
    model: HookedTransformer,
    ctx: LocationContext,
    dictionary: Dictionary,
    cfg: SupervisedEvalConfig = DEFAULT_CONFIG,
) -> DictionaryScores:
    """Approximation, control (each named edit) and (for SAEs) interpretability of `dictionary` at the
    context's location. A location `refusal` names is an error."""
    if (reason := refusal(ctx, cfg)) is not None:
        raise ValueError(reason)
    approx = _approximation(model, ctx, dictionary, cfg)
    edits = {name: _edit_scores(model, ctx, edit, cfg) for name, edit in dictionary.edits.items()}
    interp = None
    if dictionary.latents is not None:
        interp = interpretability(
            dictionary.latents(ctx.eval_acts), ctx.eval_codes, ctx.n_values, ctx.decodable, cfg
        )
    return DictionaryScores(
        ctx.location.name,
        dictionary.name,
        approx.fvu,
        ctx.ld_clean,
        ctx.ld_mean_ablation,
        approx.ld_spliced,
        approx.ld_necessity,
        approx.sufficiency,
        approx.necessity,
        edits,
        ctx.n_changed,
        ctx.prompts.size,
        interp,
    )


def supervised_for(ctx: LocationContext, name: str | None = None) -> Dictionary:
    """The context's supervised dictionary behind the common interface."""
    return supervised_dictionary(ctx.supervised, name or f"supervised:ioi:{ctx.location.name}")


def _mean(values: dict[str, float]) -> float:
    finite = [v for v in values.values() if v == v]
    return sum(finite) / len(finite) if finite else float("nan")


def score_metrics(scores: DictionaryScores) -> dict[str, float]:
    """Flat metric name -> value. Per-attribute values are suffixed with _IO, _S, _pos and plain names are
    their means; control metrics are prefixed with the edit's name ("saelab_edit_accuracy_changed_IO")."""
    out = {
        name: getattr(scores, name)
        for name in (
            "fvu",
            "ld_clean",
            "ld_mean_ablation",
            "ld_spliced",
            "ld_necessity",
            "sufficiency",
            "necessity",
            "n_prompts",
        )
    }
    out.update({f"n_changed_{attribute}": float(n) for attribute, n in scores.n_changed.items()})
    groups = {}
    for edit, edit_scores in scores.edits.items():
        groups[f"{edit}_edit_accuracy"] = edit_scores.accuracy
        groups[f"{edit}_edit_accuracy_changed"] = edit_scores.accuracy_changed
        groups[f"{edit}_edit_magnitude"] = edit_scores.magnitude
    if scores.interpretability is not None:
        groups.update(scores.interpretability._asdict())
    for group, values in groups.items():
        out[group] = _mean(values)
        out.update({f"{group}_{attribute}": value for attribute, value in values.items()})
    return out


def score_rows(scores: DictionaryScores, run_id: str | None) -> list[dict]:
    """`eval_metrics` rows (eval_kind "supervised_ioi"); the sae_id is the dictionary's name. NaNs left
    out."""
    return [
        {
            "run_id": run_id,
            "sae_id": scores.dictionary,
            "eval_kind": EVAL_KIND,
            "metric": name,
            "value": float(value),
        }
        for name, value in score_metrics(scores).items()
        if value == value
    ]


def subset_prompts(prompts: Prompts, n: int) -> Prompts:
    """The first n prompts."""
    return subset(prompts, torch.arange(min(n, prompts.size)))
