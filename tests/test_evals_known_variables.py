"""Single-latent F1 against known variables: thresholds chosen on dev, scores on test, checked by hand and
against scikit-learn."""

import pytest
import torch
from sklearn.metrics import f1_score, precision_score, recall_score

from saelab.evals.known_variables import (
    KnownVariablesConfig,
    as_codes,
    best_cuts,
    chance_f1,
    macro_score,
    threshold_f1,
    unit_scores,
)


def _planted(code: torch.Tensor, n_values: int, noise_units: int, generator: torch.Generator) -> torch.Tensor:
    """One unit per value that equals "code == v", then noise units."""
    onehot = torch.nn.functional.one_hot(code, n_values).float()
    return torch.cat([onehot, torch.rand(len(code), noise_units, generator=generator)], dim=1)


def test_a_latent_that_equals_the_variable_scores_one() -> None:
    g = torch.Generator().manual_seed(0)
    dev, test = torch.randint(0, 7, (400,), generator=g), torch.randint(0, 7, (400,), generator=g)
    result = threshold_f1(_planted(dev, 7, 20, g), dev, _planted(test, 7, 20, g), test, 7)
    assert torch.equal(result.unit, torch.arange(7))
    assert macro_score(result).f1 == pytest.approx(1.0)
    assert macro_score(result).distinct_units == 7


def test_a_shuffled_latent_scores_about_chance() -> None:
    g = torch.Generator().manual_seed(1)
    dev, test = torch.randint(0, 2, (2000,), generator=g), torch.randint(0, 2, (2000,), generator=g)
    shuffled = lambda code: _planted(code[torch.randperm(len(code), generator=g)], 2, 0, g)  # noqa: E731
    score = macro_score(threshold_f1(shuffled(dev), dev, shuffled(test), test, 2)).f1
    chance = float(chance_f1(test, 2).mean())  # about 2/3 for two balanced values
    assert score == pytest.approx(chance, abs=0.03)


def test_threshold_and_unit_are_chosen_on_dev_and_scored_on_test() -> None:
    # dev: value 1 at scores {2, 3}, value 0 at {0, 1} -> threshold 1.5; on test that threshold misses the 1.2
    dev_scores, dev_code = torch.tensor([[0.0], [1.0], [2.0], [3.0]]), torch.tensor([0, 0, 1, 1])
    test_scores, test_code = torch.tensor([[0.0], [0.5], [1.2], [3.0]]), torch.tensor([0, 0, 1, 1])
    result = threshold_f1(dev_scores, dev_code, test_scores, test_code, 2)
    assert float(result.threshold[1]) == pytest.approx(1.5)
    assert float(result.dev_f1[1]) == pytest.approx(1.0)
    assert float(result.precision[1]) == pytest.approx(1.0)
    assert float(result.recall[1]) == pytest.approx(0.5)
    assert float(result.f1[1]) == pytest.approx(2 / 3)  # the test split's own best threshold would give 1.0


def test_noise_units_do_not_beat_chance_on_test() -> None:
    """Choosing among 300 noise units on dev must not carry their luck to test (choosing on test would)."""
    g = torch.Generator().manual_seed(3)
    dev, test = (torch.rand(120, generator=g) < 0.2).long(), (torch.rand(120, generator=g) < 0.2).long()
    result = threshold_f1(torch.rand(120, 300, generator=g), dev, torch.rand(120, 300, generator=g), test, 2)
    chance = chance_f1(test, 2)
    assert float(result.dev_f1[1]) > float(chance[1]) + 0.1  # the dev optimum is lucky ...
    assert float(result.f1[1]) < float(chance[1]) + 0.05  # ... and the test score is not


def test_best_cuts_and_test_scores_match_scikit_learn() -> None:
    g = torch.Generator().manual_seed(3)
    dev_scores = torch.randint(0, 6, (60, 5), generator=g).float()  # ties on purpose
    dev_code, test_code = torch.randint(0, 3, (60,), generator=g), torch.randint(0, 3, (80,), generator=g)
    test_scores = torch.randint(0, 6, (80, 5), generator=g).float()
    cuts = best_cuts(dev_scores, dev_code, 3, max_elements=200)  # several unit chunks
    for unit in range(5):
        candidates = [float("-inf")] + [t + 0.5 for t in range(6)]
        for value in range(3):
            truth = (dev_code == value).numpy()
            brute = max(f1_score(truth, (dev_scores[:, unit] > t).numpy(), zero_division=0)
                        for t in candidates)
            assert float(cuts.f1[unit, value]) == pytest.approx(brute, abs=1e-6)
            chosen = (dev_scores[:, unit] > cuts.threshold[unit, value]).numpy()
            assert f1_score(truth, chosen, zero_division=0) == pytest.approx(brute, abs=1e-6)
    result = threshold_f1(dev_scores, dev_code, test_scores, test_code, 3)
    for value in range(3):
        truth = (test_code == value).numpy()
        fired = (test_scores[:, result.unit[value]] > result.threshold[value]).numpy()
        assert float(result.precision[value]) == pytest.approx(precision_score(truth, fired, zero_division=0))
        assert float(result.recall[value]) == pytest.approx(recall_score(truth, fired, zero_division=0))
        assert float(result.f1[value]) == pytest.approx(f1_score(truth, fired, zero_division=0), abs=1e-6)
    assert not torch.allclose(result.precision, result.recall)  # the case tells precision from recall


def test_chance_is_the_predict_all_f1() -> None:
    code = torch.tensor([0, 0, 0, 1])
    assert chance_f1(code, 2).tolist() == pytest.approx([2 * 0.75 / 1.75, 2 * 0.25 / 1.25])


def test_units_and_codes() -> None:
    x = torch.tensor([[1.0, -2.0]])
    assert unit_scores("neurons", x).tolist() == [[1.0, -2.0, -1.0, 2.0]]
    assert unit_scores("random", x, n_random=5, seed=0).shape == (1, 5)
    with pytest.raises(ValueError, match="unit kind"):
        unit_scores("pca", x)
    dev_code, test_code, n = as_codes(torch.tensor([7, 3, 7]), torch.tensor([9, 3]))
    assert (dev_code.tolist(), test_code.tolist(), n) == ([1, 0, 1], [2, 0], 3)
    with pytest.raises(ValueError, match="dev_seed"):
        KnownVariablesConfig(dev_seed=1, test_seed=1)


def _rows():
    from saelab.circuits.siit import IOIRows

    return IOIRows(tokens=torch.zeros(2, 3, dtype=torch.long), end=torch.tensor([2, 2]),
                   s2=torch.tensor([1, 1]),
                   slot_names=torch.tensor([[10, 11], [12, 13]]), dup=torch.tensor([1, 0]), templates=(0, 0),
                   io=torch.tensor([0, 1]), slots=torch.tensor([[0, 1], [0, 1]]))


def test_each_ioi_design_states_the_values_its_variables_carry() -> None:
    """dup 1: S2 repeats the second slot (subject 11, indirect object 10); dup 0: subject 12, IO 13."""
    from saelab.circuits.siit import siit_task

    rows = _rows()
    relay = siit_task("ioi").variable_values(rows)
    assert set(relay) == {"DUP", "S-INH", "NAME"}
    for values in relay.values():  # the relay's variables all carry the indirect object
        assert values["name"].tolist() == [10, 13] and values["slot"].tolist() == [0, 1]
    copies = siit_task("ioi-copies").variable_values(rows)
    assert set(copies) == {"SLOT1", "SLOT2", "DUP", "S-INH", "NAME"}
    assert copies["SLOT1"]["name"].tolist() == [10, 12] and copies["SLOT2"]["name"].tolist() == [11, 13]
    for variable in ("DUP", "S-INH"):  # the subject
        assert copies[variable]["name"].tolist() == [11, 12] and copies[variable]["slot"].tolist() == [1, 0]
    assert copies["NAME"]["name"].tolist() == [10, 13] and copies["NAME"]["slot"].tolist() == [0, 1]
    inhibition = siit_task("ioi-inhibition").variable_values(rows)
    assert {k: {a: v.tolist() for a, v in d.items()} for k, d in inhibition.items()} == {
        k: {a: v.tolist() for a, v in copies[k].items()} for k in ("DUP", "S-INH", "NAME")}
    for task in ("ioi", "ioi-copies"):
        with pytest.raises(ValueError, match="ABC"):
            siit_task(task).variable_values(rows._replace(dup=torch.tensor([-1, 0])))
    assert siit_task("docstring").variable_values is None


def test_node_activations_read_each_node_at_its_own_position() -> None:
    """SLOT1 / SLOT2 at the name slots, DUP at S2, NAME at END: checked against TransformerLens' cache."""
    from saelab.activations.sites import HookSite
    from saelab.circuits.siit import siit_task
    from saelab.evals.known_variables import ioi_prompts, node_activations
    from saelab.models import load_model

    entry = siit_task("ioi-copies")
    model = load_model(entry.model)
    rows = ioi_prompts(model.tokenizer, 6, seed=3)
    for node in entry.alignment:
        site = HookSite.parse(f"{node.layer}.attn_z")
        _, cache = model.run_with_cache(rows.tokens, names_filter=f"blocks.{node.layer}.attn.hook_z")
        z = cache[f"blocks.{node.layer}.attn.hook_z"].flatten(2)
        at = {"slot1": rows.slots[:, 0], "slot2": rows.slots[:, 1], "S2": rows.s2,
              "end": rows.end}[node.position]
        expected = z[torch.arange(len(at)), at]
        torch.testing.assert_close(node_activations(model, rows, site, node), expected.float(), atol=1e-5,
                                   rtol=0)
    assert not torch.equal(rows.slots[:, 0], rows.end) and not torch.equal(rows.slots[:, 0], rows.s2)


def test_known_variable_scores_score_each_variable_on_its_own_values_at_its_node() -> None:
    """On the copies design (layer 0: SLOT1, SLOT2, DUP), each row's attributes are its variable's, and the
    chance row's value counts are those of that variable's values (a bug that took every node's codes from one
    variable, or the relay's, would change them); a planted "SAE" whose latents are the raw activations scores
    no higher than the neurons baseline (which has them and their negatives)."""
    from types import SimpleNamespace

    from saelab.activations.sites import HookSite
    from saelab.circuits.siit import siit_task
    from saelab.evals.known_variables import chance_score, ioi_prompts, known_variable_scores
    from saelab.models import load_model

    entry = siit_task("ioi-copies")
    model = load_model(entry.model)
    site = HookSite.parse("0.attn_z")
    width = model.cfg.n_heads * model.cfg.d_head
    identity = SimpleNamespace(encode=lambda x: x, cfg=SimpleNamespace(d_sae=width), W_enc=torch.zeros(1))
    cfg = KnownVariablesConfig(n_dev=60, n_test=60)
    rows = known_variable_scores(model, entry, {"identity": (site, identity)}, cfg)
    assert {(r.variable, r.attribute) for r in rows} == {("SLOT1", "name"), ("SLOT2", "name"),
                                                         ("DUP", "name"), ("DUP", "slot")}
    assert {r.position for r in rows if r.variable == "SLOT2"} == {"slot2"}
    dev = entry.variable_values(ioi_prompts(model.tokenizer, 60, cfg.dev_seed))
    test = entry.variable_values(ioi_prompts(model.tokenizer, 60, cfg.test_seed))
    for variable, attribute in (("SLOT1", "name"), ("SLOT2", "name"), ("DUP", "name"), ("DUP", "slot")):
        expected = chance_score(*as_codes(dev[variable][attribute], test[variable][attribute]))
        (chance,) = [r.score for r in rows
                     if (r.variable, r.attribute, r.units) == (variable, attribute, "chance")]
        assert chance == pytest.approx(expected), (variable, attribute)
    by_kind = {(r.variable, r.attribute, r.units): r.score.f1 for r in rows}
    assert by_kind[("SLOT1", "name", "sae")] <= by_kind[("SLOT1", "name", "neurons")] + 1e-9
    assert by_kind[("SLOT1", "name", "sae")] > by_kind[("SLOT1", "name", "chance")]
