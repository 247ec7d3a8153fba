"""Supervised dictionaries: recovery of planted attribute vectors, F1 tables and failure-mode rules, SAE
edits, IOI counterfactuals and the fit/eval split, and the whole evaluation on the small random model."""

import itertools
import math

import pytest
import torch

from saelab.evals.ioi import (
    COUNTERFACTUALS,
    Location,
    Prompts,
    locations_from_circuit,
    locations_from_classified,
    name_ids,
    prompts_from_dataset,
    split_fit_eval,
    synthetic_prompts,
)
from saelab.evals.supervised import (
    Dictionary,
    SupervisedEvalConfig,
    assign_latents,
    attribute_vocab,
    decode_attributes,
    encode_attributes,
    f1_table,
    fit_supervised,
    makelov_sae_edit,
    no_edit_dictionary,
    occluded_values,
    over_split_values,
    sae_dictionary,
    sae_edit,
    supervised_edit,
    supervised_reconstruction,
)
from saelab.evals.supervised_ioi import (
    edit_accuracy,
    evaluate_dictionary,
    location_context,
    refusal,
    score_metrics,
    score_rows,
    supervised_for,
)
from saelab.sae import SAE, SAEConfig
from saelab.sae.types import InitialState

N_VALUES = {"IO": 5, "S": 4, "pos": 2}


def planted(d: int, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g), {a: torch.randn(n, d, generator=g) for a, n in N_VALUES.items()}


def factorial_codes(repeats: int = 1) -> dict[str, torch.Tensor]:
    rows = list(itertools.product(*(range(n) for n in N_VALUES.values()))) * repeats
    table = torch.tensor(rows)
    return {a: table[:, i] for i, a in enumerate(N_VALUES)}


def synthesize(base, vectors, codes, noise=0.0, seed=1):
    acts = base + sum(vectors[a][c] for a, c in codes.items())
    return acts + noise * torch.randn(acts.shape, generator=torch.Generator().manual_seed(seed))


def test_balanced_design_recovers_centred_planted_vectors_exactly():
    base, vectors = planted(12)
    codes = factorial_codes()
    acts = synthesize(base, vectors, codes)
    dictionary = fit_supervised(acts, codes, N_VALUES)
    for attribute, planted_vectors in vectors.items():
        torch.testing.assert_close(dictionary.vectors[attribute], planted_vectors - planted_vectors.mean(0),
                                   atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(supervised_reconstruction(dictionary, codes), acts, atol=1e-5, rtol=1e-5)
    edited = supervised_edit(dictionary, acts, "IO", codes["IO"], (codes["IO"] + 1) % 5)
    moved = {**codes, "IO": (codes["IO"] + 1) % 5}
    torch.testing.assert_close(edited, synthesize(base, vectors, moved), atol=1e-5, rtol=1e-5)


def test_random_noisy_attributes_recover_planted_vectors():
    base, vectors = planted(16, seed=3)
    g = torch.Generator().manual_seed(4)
    codes = {a: torch.randint(0, n, (6000,), generator=g) for a, n in N_VALUES.items()}
    dictionary = fit_supervised(synthesize(base, vectors, codes, noise=0.3), codes, N_VALUES)
    for attribute, planted_vectors in vectors.items():
        expected = planted_vectors - planted_vectors.mean(0)
        cosine = torch.nn.functional.cosine_similarity(dictionary.vectors[attribute], expected, dim=-1)
        assert cosine.min() > 0.97, (attribute, cosine)
    test_codes = {a: torch.randint(0, n, (200,), generator=g) for a, n in N_VALUES.items()}
    decoded = decode_attributes(dictionary, synthesize(base, vectors, test_codes, noise=0.3, seed=9))
    for attribute, code in test_codes.items():
        assert (decoded[attribute] == code).double().mean() > 0.98, attribute
    approximate = decode_attributes(dictionary, synthesize(base, vectors, test_codes, noise=0.3, seed=9), 1)
    assert (approximate["pos"] == test_codes["pos"]).double().mean() > 0.9  # coordinate descent


# ---------------------------------------------------------------- the formulas by hand


def test_supervised_dictionary_by_hand_on_an_unbalanced_design():
    """u_A[v] = E[a | A=v] − E[a] and â = E[a] + Σ_A u_A[v_A], computed by hand on four rows; the design is
    unbalanced, so the mean of the conditional means ([8/3, 2] for B) differs from E[a] = [3, 3]."""
    acts = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 3.0], [6.0, 9.0]])
    codes = {"A": torch.tensor([0, 0, 1, 1]), "B": torch.tensor([0, 1, 1, 1])}
    dictionary = fit_supervised(acts, codes, {"A": 2, "B": 3})
    torch.testing.assert_close(dictionary.mean, torch.tensor([3.0, 3.0]))
    # E[a|A=0] = [3, 0], E[a|A=1] = [3, 6]
    torch.testing.assert_close(dictionary.vectors["A"], torch.tensor([[0.0, -3.0], [0.0, 3.0]]))
    # E[a|B=0] = [2, 0], E[a|B=1] = [10/3, 4], B=2 never seen
    torch.testing.assert_close(
        dictionary.vectors["B"], torch.tensor([[-1.0, -3.0], [1 / 3, 1.0], [0.0, 0.0]])
    )
    assert dictionary.counts["B"].tolist() == [1, 3, 0]
    expected = torch.tensor([[2.0, -3.0], [10 / 3, 1.0], [10 / 3, 7.0], [10 / 3, 7.0]])
    torch.testing.assert_close(supervised_reconstruction(dictionary, codes), expected)
    # a − u_A[0] + u_A[1] on row 0: [2, 0] + [0, 6]
    edited = supervised_edit(dictionary, acts[:1], "A", torch.tensor([0]), torch.tensor([1]))
    torch.testing.assert_close(edited, torch.tensor([[2.0, 6.0]]))


def test_makelov_sae_edit_by_hand():
    """Remove the k active latents of a ranked best by F1 with the source value (at a's strengths), add the k
    active latents of the counterfactual's encoding ranked best for the target value (at its strengths)."""
    W_dec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
    f1 = torch.tensor([[0.9, 0.1], [0.1, 0.8], [0.5, 0.2], [0.2, 0.6]])  # latent x value
    acts = torch.tensor([[10.0, 10.0], [0.0, 0.0]])
    latents = torch.tensor([[2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    cf_latents = torch.tensor([[0.0, 5.0, 0.0, 4.0], [0.0, 0.0, 1.0, 4.0]])
    source, target = torch.tensor([0, 1]), torch.tensor([1, 0])
    one = makelov_sae_edit(W_dec, acts, latents, cf_latents, f1, source, target, k=1)
    # row 0: − 2·d0 + 5·d1; row 1: − 1·d3 + 1·d2 (latent 3 ranks below 2 for value 0; latent 1 is inactive)
    torch.testing.assert_close(one, torch.tensor([[8.0, 15.0], [-1.0, 1.0]]))
    two = makelov_sae_edit(W_dec, acts, latents, cf_latents, f1, source, target, k=2)
    # row 0: − (2·d0 + 3·d2) + (5·d1 + 4·d3); row 1 has one active latent to remove: − d3 + (d2 + 4·d3)
    torch.testing.assert_close(two, torch.tensor([[13.0, 12.0], [7.0, 1.0]]))


def test_edit_accuracy_over_changed_prompts_by_hand():
    clean = torch.tensor([0, 2, 0, 4, 5])
    counterfactual = torch.tensor([1, 2, 0, 4, 0])
    changed = counterfactual != clean  # prompts 0 and 4
    edited = torch.tensor([1, 2, 3, 4, 5])  # agrees on 0, 1, 3
    assert edit_accuracy(edited, counterfactual, changed) == pytest.approx((0.6, 0.5))
    no_edit = edit_accuracy(clean, counterfactual, changed)
    assert no_edit.all_prompts == pytest.approx(0.6) and no_edit.changed_only == 0.0
    assert math.isnan(edit_accuracy(edited, counterfactual, torch.zeros(5, dtype=torch.bool)).changed_only)


def test_encode_attributes_and_unseen_values():
    vocab = attribute_vocab({"IO": ["b", "a", "b"], "pos": ["ABB", "BAB"]})
    assert vocab == {"IO": ("a", "b"), "pos": ("ABB", "BAB")}
    assert encode_attributes({"IO": ["b", "a"]}, vocab)["IO"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="never had"):
        encode_attributes({"IO": ["c"]}, vocab)
    dictionary = fit_supervised(torch.randn(4, 3), {"IO": torch.tensor([0, 0, 1, 1])}, {"IO": 3})
    assert dictionary.counts["IO"].tolist() == [2, 2, 0] and dictionary.vectors["IO"][2].abs().sum() == 0


def test_f1_table_by_hand():
    fires = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 0]], dtype=torch.bool)
    code = torch.tensor([0, 0, 1, 1])
    table = f1_table(fires, code, 2)
    # latent 0 fires on rows 0, 1, 3: precision for value 0 = 2/3, recall 2/2
    assert table.precision[0, 0] == pytest.approx(2 / 3) and table.recall[0, 0] == pytest.approx(1.0)
    assert table.f1[0, 0] == pytest.approx(0.8)
    assert table.precision[1, 1] == pytest.approx(0.5) and table.recall[1, 1] == pytest.approx(0.5)
    assert table.support.tolist() == [2, 2]


def test_over_splitting_and_occlusion_rules():
    code = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    # latents 0 and 1 each cover half of value 0 with perfect precision; latent 2 covers value 1 fully
    fires = torch.zeros(8, 3, dtype=torch.bool)
    fires[:2, 0], fires[2:4, 1], fires[4:, 2] = True, True, True
    table = f1_table(fires, code, 2)
    assert over_split_values(fires, code, table, 0.8, 0.8).tolist() == [True, False]
    fires[:, 2] = False  # now nothing tracks value 1
    table = f1_table(fires, code, 2)
    assert occluded_values(table, torch.tensor([True, True]), 0.5).tolist() == [False, True]
    assert occluded_values(table, torch.tensor([True, False]), 0.5).tolist() == [False, False]


def indicator_sae(vectors: dict[str, torch.Tensor], base: torch.Tensor) -> SAE:
    """A JumpReLU SAE whose latents are the planted attribute vectors, read off by a least-squares encoder
    (coefficient 1 for the values present, 0 for the others; threshold 0.5)."""
    W_dec = torch.cat(list(vectors.values()))
    d_sae, d = W_dec.shape
    W_enc = torch.linalg.pinv(W_dec)
    params = {"W_enc": W_enc, "b_enc": -base @ W_enc, "W_dec": W_dec, "b_dec": base,
              "threshold": torch.full((d_sae,), 0.5)}
    return SAE(SAEConfig("jumprelu", d, d_sae, k=1), InitialState(params, {}))


def test_sae_edit_through_assigned_latents_matches_true_edit():
    base, vectors = planted(32, seed=5)
    codes = factorial_codes(repeats=2)
    acts = synthesize(base, vectors, codes)
    sae = indicator_sae(vectors, base)
    latents = sae.encode(acts).detach()
    assignment = assign_latents(latents, codes, N_VALUES, min_f1=0.5)
    assert assignment["IO"].best.tolist() == [0, 1, 2, 3, 4]
    assert assignment["S"].best.tolist() == [5, 6, 7, 8]
    target = (codes["S"] + 1) % 4
    edited = sae_edit(sae.W_dec.detach(), acts, latents, assignment["S"], codes["S"], target)
    torch.testing.assert_close(
        edited, synthesize(base, vectors, {**codes, "S": target}), atol=1e-4, rtol=1e-4
    )
    dictionary = sae_dictionary(sae, "ind", acts, codes, N_VALUES, SupervisedEvalConfig(assign_f1=0.5))
    torch.testing.assert_close(dictionary.reconstruct(acts, codes), acts, atol=1e-4, rtol=1e-4)
    moved = synthesize(base, vectors, {**codes, "S": target})
    torch.testing.assert_close(dictionary.edits["saelab"](acts, codes, "S", target, moved), moved, atol=1e-4,
                               rtol=1e-4)
    # the paper's edit reads the counterfactual's encoding: d_{S=v'} at strength 1 replaces d_{S=v}
    torch.testing.assert_close(dictionary.edits["makelov"](acts, codes, "S", target, moved), moved, atol=1e-4,
                               rtol=1e-4)
    weaker = base + 0.75 * (moved - base)  # the counterfactual's latents at 0.75 (threshold 0.5)
    weaker_edit = dictionary.edits["makelov"](acts, codes, "S", target, weaker)
    expected = acts - vectors["S"][codes["S"]] + 0.75 * vectors["S"][target]
    assert not torch.allclose(expected, moved, atol=1e-2)
    torch.testing.assert_close(weaker_edit, expected, atol=1e-4, rtol=1e-4)
    discrete = sae_dictionary(
        sae, "ind-argmax", acts, codes, N_VALUES, SupervisedEvalConfig(), argmax_code=True
    )
    kept = discrete.latents(acts)
    assert ((kept > 0).sum(-1) == 1).all()
    torch.testing.assert_close(kept.max(-1).values, latents.max(-1).values)
    assert (
        discrete.reconstruct(acts, codes) - acts
    ).norm() > 1e-2  # one code cannot rebuild three attributes


# ---------------------------------------------------------------- IOI prompts (GPT-2 tokenizer, no model)


@pytest.fixture(scope="module")
def gpt2():
    from saelab.tasks import gpt2_tokenizer

    return gpt2_tokenizer()


def test_counterfactuals_change_exactly_one_attribute(gpt2):
    from saelab.tasks import get_task

    data = get_task("ioi").generate(gpt2, 12, seed=0)
    prompts = prompts_from_dataset(data)
    names = sorted(set(prompts.attributes["IO"]) | set(prompts.attributes["S"]))
    ids = name_ids(gpt2, names)
    g = torch.Generator().manual_seed(0)
    rows = torch.arange(prompts.size)
    io = COUNTERFACTUALS["IO"](prompts, names, ids, g)
    for i, new in enumerate(io.values):
        assert new not in (prompts.attributes["IO"][i], prompts.attributes["S"][i])
        text = gpt2.decode(io.prompts.tokens[i, 1:data.positions["end"][i] + 1])
        assert text == data.clean_prompts[i].replace(" " + prompts.attributes["IO"][i], " " + new)
    assert torch.equal(io.prompts.io_ids, torch.tensor([ids[n] for n in io.values]))
    s = COUNTERFACTUALS["S"](prompts, names, ids, g)
    assert torch.equal(
        s.prompts.tokens[rows, prompts.positions["S1"]], s.prompts.tokens[rows, prompts.positions["S2"]]
    )
    assert torch.equal(s.prompts.s_ids, s.prompts.tokens[rows, prompts.positions["S2"]])
    flipped = COUNTERFACTUALS["pos"](prompts, ["ABB", "BAB"], ids, g)
    assert all(a != b for a, b in zip(flipped.values, prompts.attributes["pos"], strict=True))
    # the flipped prompt is the template in the other order: IO now sits where S1 was
    assert torch.equal(flipped.prompts.tokens[rows, flipped.prompts.positions["IO"]], prompts.io_ids)
    assert torch.equal(
        flipped.prompts.tokens[rows, prompts.positions["end"]], prompts.tokens[rows, prompts.positions["end"]]
    )


def test_split_has_unseen_pairs_of_seen_names(gpt2):
    from saelab.tasks import get_task

    task = get_task("ioi")
    fit, evaluation = split_fit_eval(task.generate(gpt2, 300, seed=0), task.generate(gpt2, 200, seed=1))
    fit_pairs = set(zip(fit.attributes["IO"], fit.attributes["S"], strict=True))
    assert evaluation.size > 50
    for io, s in zip(evaluation.attributes["IO"], evaluation.attributes["S"], strict=True):
        assert (io, s) not in fit_pairs and io in fit.attributes["IO"] and s in fit.attributes["S"]


def test_locations_from_circuit_groups_classes():
    circuit = {"heads": [{"layer": 3, "head": 1, "class": "name mover", "position": "end"},
                         {"layer": 2, "head": 0, "class": "name mover", "position": "end"},
                         {"layer": 1, "head": 2, "class": "induction", "position": "S2"},
                         {"layer": 0, "head": 2, "class": "previous token", "position": "S1+1"}]}
    locations = locations_from_circuit(circuit)
    assert [(loc.name, loc.heads, loc.position) for loc in locations] == [
        ("name mover@end", ((3, 1), (2, 0)), "end"), ("induction@S2", ((1, 2),), "S2")]
    with pytest.raises(ValueError, match="heads"):
        locations_from_circuit({})
    classified = [{"layer": 0, "head": 3, "class": "name mover", "position": "end", "attention": 0.4},
                  {"layer": 0, "head": 5, "class": "name mover", "position": "end", "attention": 0.5},
                  {"layer": 1, "head": 7, "class": "induction", "position": "S2", "attention": 0.27},
                  {"layer": 2, "head": 0, "class": "other", "position": None, "attention": 0.1}]
    assert locations_from_classified(classified) == [
        Location("0.3+0.5@end attends end→IO 0.45", ((0, 3), (0, 5)), "end"),
        Location("1.7@S2 attends S2→S1+1 0.27", ((1, 7),), "S2")]
    with pytest.raises(ValueError, match="twice"):
        Location("x", ((0, 0), (0, 0)), "end")


# ---------------------------------------------------------------- the whole evaluation on saelab-random

NAMES = [chr(c) for c in range(ord("A"), ord("A") + 12)]


def synthetic(n: int, seed: int) -> Prompts:
    return synthetic_prompts(n, seed, NAMES, {name: ord(name) for name in NAMES}, 256, 256)


@pytest.fixture(scope="module")
def context(random_model):
    location = Location("heads@end", ((1, 0), (1, 2)), "end")
    ids = {name: ord(name) for name in NAMES}
    cfg = SupervisedEvalConfig(batch_size=64)
    return location_context(random_model, synthetic(160, 0), synthetic(60, 1), location, ids, cfg)


def test_context_baselines(context):
    assert context.fit_acts.shape == (160, 32) and context.eval_acts.shape == (60, 32)
    assert context.ld_clean != context.ld_mean_ablation
    for attribute, cf in context.counterfactuals.items():
        assert cf.acts.shape == (60, 32) and cf.target.shape == (60,)
        if attribute != "pos":
            assert (cf.target != context.eval_codes[attribute]).all()


def test_identity_and_mean_dictionaries_bound_the_approximation_scores(random_model, context):
    identity = Dictionary("identity", lambda a, c: a.clone(), {"none": lambda a, c, attr, t, cf: a}, None)
    scores = evaluate_dictionary(random_model, context, identity)
    assert scores.sufficiency == pytest.approx(1.0, abs=1e-4) and scores.necessity == pytest.approx(
        1.0, abs=1e-4
    )
    assert scores.fvu == pytest.approx(0.0, abs=1e-8)
    mean = context.fit_acts.mean(0)
    constant = Dictionary(
        "mean", lambda a, c: mean.expand_as(a).clone(), {"none": lambda a, c, attr, t, cf: a}, None
    )
    scores = evaluate_dictionary(random_model, context, constant)
    assert scores.sufficiency == pytest.approx(0.0, abs=1e-4) and scores.necessity == pytest.approx(
        0.0, abs=1e-4
    )


def test_oracle_and_no_edit_rows(random_model, context):
    oracle = Dictionary("oracle", lambda a, c: a, {"oracle": lambda a, c, attr, t, cf: cf}, None)
    scores = evaluate_dictionary(random_model, context, oracle).edits["oracle"]
    assert scores.accuracy == {"IO": 1.0, "S": 1.0, "pos": 1.0}
    assert all(v == 1.0 or math.isnan(v) for v in scores.accuracy_changed.values())
    assert all(m == pytest.approx(1.0) for m in scores.magnitude.values())
    no_edit = evaluate_dictionary(random_model, context, no_edit_dictionary())
    assert math.isnan(no_edit.sufficiency) and math.isnan(no_edit.fvu) and no_edit.interpretability is None
    scores = no_edit.edits["none"]
    for attribute, cf in context.counterfactuals.items():
        assert no_edit.n_changed[attribute] == int(cf.changed.sum()) == context.n_changed[attribute]
        assert scores.accuracy[attribute] == pytest.approx(1 - no_edit.n_changed[attribute] / 60)
        if no_edit.n_changed[attribute]:
            assert scores.accuracy_changed[attribute] == 0.0
    assert sum(no_edit.n_changed.values()) > 0  # the changed-only accuracy is tested on something
    assert all(m == 0 for m in scores.magnitude.values())
    metrics = score_metrics(no_edit)
    assert metrics["none_edit_accuracy_IO"] == scores.accuracy["IO"]
    assert metrics["n_changed_S"] == no_edit.n_changed["S"] and metrics["n_prompts"] == 60


def test_refusal_of_a_location_ablation_barely_moves(random_model, context):
    flat = context._replace(ld_clean=4.092, ld_mean_ablation=4.091)
    reason = refusal(flat, SupervisedEvalConfig())
    assert reason is not None and "\n" not in reason and "4.092 -> 4.091" in reason and "heads@end" in reason
    with pytest.raises(ValueError, match="refused heads@end"):
        evaluate_dictionary(random_model, flat, no_edit_dictionary())
    moved = context._replace(ld_clean=4.0, ld_mean_ablation=3.7)  # gap 0.3 = 7.5% of clean
    assert refusal(moved, SupervisedEvalConfig(min_gap_fraction=0.05)) is None
    assert refusal(moved, SupervisedEvalConfig(min_gap_fraction=0.1)) is not None
    negative = context._replace(ld_clean=-2.0, ld_mean_ablation=-2.15)  # |gap| 0.15 = 7.5% of |clean|
    assert refusal(negative, SupervisedEvalConfig(min_gap_fraction=0.05)) is None
    assert refusal(negative, SupervisedEvalConfig(min_gap_fraction=0.1)) is not None
    grown = context._replace(ld_clean=4.0, ld_mean_ablation=4.1)  # ablation helps slightly
    assert refusal(grown, SupervisedEvalConfig(min_gap_fraction=0.05)) is not None
    helps = context._replace(ld_clean=4.0, ld_mean_ablation=6.0)  # ablation helps a lot: the location matters
    assert refusal(helps, SupervisedEvalConfig(min_gap_fraction=0.05)) is None
    small = context._replace(ld_clean=1.0, ld_mean_ablation=0.5)  # the fraction is of the clean value
    assert refusal(small, SupervisedEvalConfig(min_gap_fraction=0.45)) is None
    assert refusal(small, SupervisedEvalConfig(min_gap_fraction=0.6)) is not None
    with pytest.raises(ValueError, match="min_gap_fraction"):
        SupervisedEvalConfig(min_gap_fraction=1.0)


def test_supervised_and_sae_scores_and_rows(random_model, context):
    supervised = evaluate_dictionary(random_model, context, supervised_for(context))
    assert supervised.interpretability is None and 0 <= supervised.edits["supervised"].accuracy["IO"] <= 1
    sae = SAE(SAEConfig("topk", 32, 48, k=4))
    dictionary = sae_dictionary(sae, "topk-48", context.fit_acts, context.fit_codes, context.n_values,
                                SupervisedEvalConfig())
    scores = evaluate_dictionary(random_model, context, dictionary)
    assert set(scores.interpretability.f1) == {"IO", "S", "pos"}
    assert all(0 <= v <= 1 for v in scores.interpretability.f1.values())
    rows = score_rows(scores, "run")
    names = {r["metric"] for r in rows}
    assert set(scores.edits) == {"saelab", "makelov"}
    assert {"sufficiency", "necessity", "saelab_edit_accuracy", "makelov_edit_accuracy_changed_IO",
            "saelab_edit_magnitude_IO", "n_changed_pos", "f1_pos", "occlusion", "over_splitting"} <= names
    assert all(r["eval_kind"] == "supervised_ioi" and not math.isnan(r["value"]) for r in rows)
    assert {r["sae_id"] for r in score_rows(supervised, None)} == {"supervised:ioi:heads@end"}
    with pytest.raises(ValueError, match="wide"):
        sae_dictionary(SAE(SAEConfig("topk", 16, 8, k=2)), "x", context.fit_acts, context.fit_codes,
                       context.n_values, SupervisedEvalConfig())


def test_attention_classes_read_the_right_pattern_entries(random_model):
    from saelab.evals.ioi import (
        ATTENTION_CLASSES,
        attention_scores,
        circuit_heads,
        classify_heads,
        ioi_locations,
    )

    prompts = synthetic(20, 3)
    _, cache = random_model.run_with_cache(prompts.tokens)
    scores = attention_scores(random_model, prompts, [(1, 3), (0, 0)])
    rows = torch.arange(20)
    pattern = cache["blocks.1.attn.hook_pattern"][:, 3]
    assert scores[(1, 3)]["name mover"] == pytest.approx(
        float(pattern[rows, prompts.positions["end"], prompts.positions["IO"]].mean()))
    assert scores[(1, 3)]["induction"] == pytest.approx(
        float(pattern[rows, 7, prompts.positions["S1"] + 1].mean())
    )
    classified = classify_heads(random_model, prompts, [(1, 3), (0, 0)], min_attention=0.0)
    for head in classified:
        assert head["class"] in ATTENTION_CLASSES and head["position"] == ATTENTION_CLASSES[head["class"]][0]
    assert all(
        h["class"] == "other" for h in classify_heads(random_model, prompts, [(1, 3)], min_attention=1.1)
    )
    assert circuit_heads({"nodes": ["input", "0.1", "mlp0", "1.2", "logits"]}) == [(0, 1), (1, 2)]
    locations = ioi_locations({"nodes": ["1.3", "0.0"]}, random_model, prompts, min_attention=0.0)
    assert locations and all(loc.position in ("end", "S2") and "attends" in loc.name for loc in locations)
    with pytest.raises(ValueError, match="attends"):
        ioi_locations({"nodes": ["1.3"]}, random_model, prompts, min_attention=1.1)
    published = ioi_locations({"heads": [{"layer": 1, "head": 0, "class": "name mover", "position": "end"}]},
                              random_model, prompts)
    assert published == [Location("name mover@end", ((1, 0),), "end")]
