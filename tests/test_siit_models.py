"""saelab-ioi-siit: the high-level causal model, the committed circuit file, and a re-check of a sample of the
construction checks on the committed weights (fresh seeds, held-out templates)."""

import json
import math
import random

import pytest
import torch

from saelab.circuits.graph import Graph, Node
from saelab.circuits.io import find_ground_truth
from saelab.circuits.patching import metric_means, node_effects
from saelab.circuits.problem import problem_from_task
from saelab.circuits.siit import (
    HELD_OUT_TEMPLATE_SPLIT,
    HELD_OUT_WORD_SPLIT,
    IOI_ALIGNMENT,
    IOI_CIRCUIT_EDGES,
    TRAIN_SPLIT,
    AlignedNode,
    PairSet,
    Patch,
    PerUnitStrict,
    Spec,
    Target,
    edge_check,
    edge_check_from_effects,
    encode_specs,
    frozen_values,
    high_level_output,
    interchange_accuracy,
    interchange_accuracy_two,
    interchange_pairs,
    name_output,
    non_aligned_units,
    patch_unit,
    patched_logits,
    path_edges,
    sample_pairs,
    siit_task,
    source_cache,
    strict_accuracy,
    strict_accuracy_per_unit,
    strict_logit_loss,
    strict_shift_loss,
    task_accuracy,
)
from saelab.models import bundled_models, load_model, read_model_card
from saelab.models.io import model_files
from saelab.models.registry import get_bundled
from saelab.models.tokenizer import load_tokenizer
from saelab.tasks import get_task

NAME = "saelab-ioi-siit"
DESIGNS = ("ioi", "ioi-copies", "ioi-even-norms")
"""The IOI SIIT entries whose bundled models are committed; the committed-model tests run on each."""


def _available(name: str) -> bool:
    return any(m.name == name and m.available for m in bundled_models())


needs_siit = pytest.mark.usefixtures("entry")


@pytest.fixture(scope="module")
def tokenizer():
    name = "saelab-tiny"
    return load_tokenizer(model_files(get_bundled(name).directory).tokenizer, name=name)


@pytest.fixture(scope="module", params=DESIGNS)
def entry(request):
    entry = siit_task(request.param)
    if not _available(entry.model):
        pytest.skip(f"{entry.model} has not been trained yet")  # fails under CI=true (tests/conftest.py)
    return entry


@pytest.fixture(scope="module")
def siit(entry):
    torch.set_num_threads(1)
    return load_model(entry.model)


@pytest.fixture(scope="module")
def alignment(siit, entry):
    truth = find_ground_truth(entry.model, "ioi", Graph.from_config(siit.cfg))
    return [AlignedNode.from_json(a) for a in truth.meta["alignment"]]


# --- the high-level model (no weights needed) ---------------------------------------------------------------


def test_dup_names_the_slot_that_s2_repeats(tokenizer):
    specs = [
        Spec(t, order, ("Mary", "John", "Mary"), "store", "ring")
        for t in (0, 5, 14)
        for order in ("ABB", "BAB")
    ]
    rows = encode_specs(tokenizer, specs)
    idx = torch.arange(len(specs))
    # The name at slot DUP is the token at S2 (the subject); the other slot holds the indirect object.
    assert torch.equal(rows.slot_names[idx, rows.dup], rows.tokens[idx, rows.s2])
    io = tokenizer.encode(" John", add_special_tokens=False)[0]
    assert torch.equal(rows.slot_names[idx, 1 - rows.dup], torch.full((len(specs),), io))
    assert rows.dup.tolist() == [1, 0] * 3


def test_high_level_outputs_under_interventions(tokenizer):
    specs = [Spec(0, "ABB", ("Mary", "John", "Mary"), "store", "ring"),
             Spec(0, "BAB", ("Kevin", "Laura", "Kevin"), "store", "ring")]
    base, source = encode_specs(tokenizer, specs[:1]), encode_specs(tokenizer, specs[1:])
    tid = {n: tokenizer.encode(" " + n, add_special_tokens=False)[0] for n in ("John", "Laura")}
    assert high_level_output(base, source, None).ids[0].tolist() == [tid["John"]] * 2
    # Every variable relays DUP's value, so patching any of them from the source gives the source's indirect
    # object, a name the base prompt does not contain.
    for variable in ("DUP", "S-INH", "NAME"):
        assert high_level_output(base, source, variable).ids[0].tolist() == [tid["Laura"]] * 2
    with pytest.raises(ValueError, match="unknown high-level variable"):
        high_level_output(base, source, "S")
    abc = encode_specs(tokenizer, [Spec(0, "BAB", ("Kevin", "Laura", "Sarah"), "store", "ring")])
    assert abc.dup.tolist() == [-1]
    relayed = high_level_output(base, abc, "S-INH")
    assert (
        sorted(relayed.ids[0].tolist()) == sorted(abc.slot_names[0].tolist())
        and relayed.ids[0, 0] != relayed.ids[0, 1]
    )
    both = name_output(base, torch.tensor([-1]))
    assert sorted(both.ids[0].tolist()) == sorted(base.slot_names[0].tolist())
    assert both.weights.sum().item() == pytest.approx(1.0)


def test_inhibition_design_outputs_the_earlier_name_that_is_not_the_patched_subject(tokenizer):
    """The inhibition design (ours): DUP / S-INH carry the subject, NAME the answer. Each case below fails
    on a plausible bug: the relay's output (source's indirect object) for S-INH, the inhibited name output
    instead of the other one, the base's subject read for the source's, NAME read from the base."""
    entry = siit_task("ioi-inhibition")
    out = entry.high_level_output
    tid = {n: tokenizer.encode(" " + n, add_special_tokens=False)[0]
           for n in ("Mary", "John", "Kevin", "Laura", "Sarah")}
    base = encode_specs(tokenizer, [Spec(0, "ABB", ("Mary", "John", "Mary"), "store", "ring")] * 4)
    source = encode_specs(tokenizer, [
        Spec(0, "BAB", ("John", "Laura", "John"), "store", "ring"),  # subject = the base's indirect object
        Spec(0, "ABB", ("Mary", "Kevin", "Mary"), "store", "ring"),      # subject = the base's subject
        Spec(0, "BAB", ("Kevin", "Laura", "Kevin"), "store", "ring"),    # subject = neither
        Spec(0, "BAB", ("Kevin", "Laura", "Sarah"), "store", "ring"),    # ABC: no subject
    ])
    assert out(base, source, None).ids[:, 0].tolist() == [tid["John"]] * 4
    # NAME's attention target is the indirect object's position; none (-1) on an ABC prompt.
    keys = entry.attention_targets(source)
    assert keys["NAME"][3] == -1
    assert torch.equal(keys["DUP"], source.s2) and torch.equal(keys["S-INH"], source.s2)
    rows = torch.arange(3)
    assert source.tokens[rows, keys["NAME"][:3]].tolist() == [tid["Laura"], tid["Kevin"], tid["Laura"]]
    for variable in ("DUP", "S-INH"):
        target = out(base, source, variable)
        assert target.ids[:2].tolist() == [[tid["Mary"]] * 2, [tid["John"]] * 2]
        for row in (2, 3):
            assert sorted(target.ids[row].tolist()) == sorted([tid["Mary"], tid["John"]])
            assert target.weights[row].tolist() == [0.5, 0.5]
    assert out(base, source, "NAME").ids[:3, 0].tolist() == [tid["Laura"], tid["Kevin"], tid["Laura"]]
    with pytest.raises(ValueError, match="unknown high-level variable"):
        out(base, source, "S")
    # The stated S-INH -> NAME edge is the name mover's query (Wang et al.), not its value.
    assert "1.1->2.3.q" in entry.circuit_edges and "1.1->2.3.v" not in entry.circuit_edges
    assert entry.model != NAME


def test_copies_design_reads_the_names_from_the_patched_slot_copies(tokenizer):
    """The copies design (ours): SLOT1 / SLOT2 (head 0.0 at each name slot) carry the name NAME reads
    there; S-INH is untouched. Fails on: the wrong slot replaced, the source's subject read instead of the
    base's, the output taken as the replaced name whatever the slot, positions off by one (the slots decode
    as the names)."""
    entry = siit_task("ioi-copies")
    out = entry.high_level_output
    tid = {n: tokenizer.encode(" " + n, add_special_tokens=False)[0]
           for n in ("Mary", "John", "Kevin", "Laura")}
    # ABB: slots (Mary = indirect object, John = subject); BAB: slots (John = subject, Mary).
    base = encode_specs(tokenizer, [Spec(0, "ABB", ("John", "Mary", "John"), "store", "ring"),
                                    Spec(0, "BAB", ("John", "Mary", "John"), "store", "ring")])
    source = encode_specs(tokenizer, [Spec(0, "ABB", ("Laura", "Kevin", "Laura"), "store", "ring")] * 2)
    assert base.tokens[torch.arange(2)[:, None], base.slots].tolist() == [[tid["Mary"], tid["John"]],
                                                                          [tid["John"], tid["Mary"]]]
    assert torch.equal(base.position("slot1"), base.slots[:, 0]) and torch.equal(base.position("slot2"),
                                                                                  base.slots[:, 1])
    assert out(base, source, None).ids[:, 0].tolist() == [tid["Mary"]] * 2
    # The indirect object's slot replaced by Kevin: the answer is Kevin (slot 1 on ABB, slot 2 on BAB).
    assert out(base, source, "SLOT1").ids[0].tolist() == [tid["Kevin"]] * 2
    assert out(base, source, "SLOT2").ids[1].tolist() == [tid["Laura"]] * 2
    # The subject's slot replaced: neither earlier name is the subject, both at 1/2.
    for variable, row, new in (("SLOT2", 0, "Laura"), ("SLOT1", 1, "Kevin")):
        target = out(base, source, variable)
        assert sorted(target.ids[row].tolist()) == sorted([tid["Mary"], tid[new]])
        assert target.weights[row].tolist() == [0.5, 0.5]
    # The other variables are the inhibition design's.
    inhibition = siit_task("ioi-inhibition").high_level_output
    for variable in ("DUP", "S-INH", "NAME"):
        assert torch.equal(out(base, source, variable).ids, inhibition(base, source, variable).ids)
    keys = entry.attention_targets(base)
    assert torch.equal(keys["SLOT1"], base.slots[:, 0]) and torch.equal(keys["SLOT2"], base.slots[:, 1])
    assert {"0.0->2.3.k", "0.0->2.3.v", "1.1->2.3.q"} <= set(entry.circuit_edges)
    rng = random.Random(0)
    for _ in range(50):
        spec_base, spec_source = entry.pair_specs(rng, TRAIN_SPLIT, "SLOT1", 0.25)
        assert not set(spec_source.names) & set(spec_base.names)
        assert (spec_source.template, spec_source.order) == (spec_base.template, spec_base.order)


def test_copies_slot_checks_use_fresh_name_sources_where_every_counted_pair_expects_a_change(tokenizer):
    """The copies design's SLOT interchange checks draw the base's ABC corruption as the source: every counted
    pair's target is the fresh name at the indirect object's slot (never the base's answer, which the
    inhibition pairs' SLOT rows ask for about half the time); the other variables keep the shared pairs."""
    entry = siit_task("ioi-copies")
    pairs = interchange_pairs(entry, tokenizer, TRAIN_SPLIT, 200, 5)
    shared = entry.sample_pairs(tokenizer, TRAIN_SPLIT, 200, 5, "iit")
    for variable in ("DUP", "S-INH", "NAME"):
        assert torch.equal(pairs[variable].source.tokens, shared.source.tokens)
    for variable, slot in (("SLOT1", 0), ("SLOT2", 1)):
        base, source = pairs[variable]
        answer = entry.high_level_output(base, base, None).ids[:, 0]
        assert torch.equal(base.end, source.end) and torch.equal(base.slots, source.slots)
        assert not (base.slot_names[:, :, None] == source.slot_names[:, None, :]).any()
        target = entry.high_level_output(base, source, variable).ids
        counted = target[:, 0] == target[:, 1]
        assert 0.35 < float(counted.float().mean()) < 0.65
        assert torch.equal(target[counted, 0], source.slot_names[counted, slot])
        assert not (target[counted, 0] == answer[counted]).any()


def test_split_scores_checks_each_variable_on_its_own_pairs(tokenizer, monkeypatch):
    """The trainer's scores (the card's per-split table and the dev stop rule) measure SLOT1 / SLOT2 on the
    copies design's fresh-name pairs and the other variables, and task accuracy, on the shared "iit" pairs."""
    import training.train_siit as trainer

    entry = siit_task("ioi-copies")
    seen = {}
    monkeypatch.setattr(trainer, "interchange_accuracy",
                        lambda model, pairs, node, high: seen.setdefault(node.variable, pairs) and 1.0)
    monkeypatch.setattr(trainer, "interchange_accuracy_two",
                        lambda model, pairs, node, high: math.nan if node.variable == "NAME"
                        else 0.5 if pairs is seen[node.variable] else 0.0)
    monkeypatch.setattr(trainer, "task_accuracy",
                        lambda model, pairs, high: seen.setdefault("task", pairs) and 1.0)
    monkeypatch.setattr(trainer, "strict_accuracy", lambda *args: 1.0)
    monkeypatch.setattr(trainer, "strict_accuracy_per_unit", lambda *args: PerUnitStrict(1.0, 1.0, "-"))
    scores = trainer.split_scores(entry, None, tokenizer, TRAIN_SPLIT, 7, 32)
    # the two-token check runs on each variable's own pairs; one without tie targets (NaN) gets no column
    assert {k: v for k, v in scores.items() if k.startswith(trainer.TWO_TOKEN)} == {
        f"{trainer.TWO_TOKEN}{v}": 0.5 for v in entry.variables if v != "NAME"}
    # and the dev stop rule ignores those columns (earlier recipes stop where they were recorded to)
    assert trainer.stop_score(scores) == 1.0 and min(scores.values()) == 0.5
    shared = entry.sample_pairs(tokenizer, TRAIN_SPLIT, 32, 7, "iit")
    own = interchange_pairs(entry, tokenizer, TRAIN_SPLIT, 32, 7)
    for key in ("task", "DUP", "S-INH", "NAME"):
        assert torch.equal(seen[key].source.tokens, shared.source.tokens), key
    for key in ("SLOT1", "SLOT2"):
        assert torch.equal(seen[key].source.tokens, own[key].source.tokens), key
        assert not torch.equal(seen[key].source.tokens, shared.source.tokens), key


def test_two_token_interchange_counts_a_tie_only_when_both_names_are_the_top_two(tokenizer, random_model,
                                                                                  monkeypatch):
    """`interchange_accuracy_two` scores only the pairs whose high-level output is two tokens at ½ (never the
    one-token ones), and counts one only when those two are the patched model's two top tokens, in either
    order: one name first with a third token second, or a third token first, is a miss."""
    import saelab.circuits.siit as siit_module

    pairs = sample_pairs(tokenizer, TRAIN_SPLIT, 6, 3)
    a, b, c = 1, 2, 3
    ids = torch.tensor([[a, b], [a, a], [b, a], [a, b], [b, b], [b, a]])  # tie names in either order

    def high(base, source, variable):  # all six rows, or the four tie rows the check keeps
        return Target(ids if len(base.end) == 6 else ids[[0, 2, 3, 5]], torch.full((len(base.end), 2), 0.5))

    logits = torch.zeros(4, random_model.cfg.d_vocab_out)
    for row, order in enumerate([(a, b, c), (b, a, c), (a, c, b), (c, a, b)]):  # hit, hit, miss, miss
        logits[row, list(order)] = torch.tensor([3.0, 2.0, 1.0])
    monkeypatch.setattr(siit_module, "source_cache", lambda model, tokens: {})
    monkeypatch.setattr(siit_module, "patched_logits", lambda model, base, *_: logits[: len(base.end)])
    node = AlignedNode("NAME", 0, 0, "end", "a head of the small random model")
    assert interchange_accuracy_two(random_model, pairs, node, high) == 0.5

    def no_ties(base, source, variable):
        return Target(torch.full((len(base.end), 2), a), torch.ones(len(base.end), 2))

    assert math.isnan(interchange_accuracy_two(random_model, pairs, node, no_ties))  # no tie pairs to score


def test_copies_card_regenerates_from_its_config_and_keeps_other_scripts_sections_only_when_asked(tmp_path):
    """The committed copies card's generated part is `model_card` of its config (so a re-finalise on the same
    weights rewrites it byte for byte); a split without a two-token column shows "—" instead of failing;
    `write_card` keeps bench_heldout's appendix only with `keep` (after training it would describe old
    weights)."""
    import copy

    import training.train_siit as trainer

    directory = get_bundled("saelab-ioi-siit-copies").directory
    extra = read_model_card(directory)
    committed = (directory / "MODEL_CARD.md").read_text()
    generated, marker, appendix = committed.partition(trainer.CARD_APPENDIX)
    assert marker and trainer.model_card(extra, trainer.HELD_OUT_TEXT["ioi"]) + "\n" == generated
    assert "interchange_two_X (ours)" in generated
    patchy = copy.deepcopy(extra)
    del patchy["split_scores"]["train_distribution_fresh"]["interchange_two_SLOT1"]
    row = next(line for line in trainer.model_card(patchy, "").splitlines()
               if line.startswith("| held_out_templates"))
    assert "0.6639" in row
    assert "| — |" in next(line for line in trainer.model_card(patchy, "").splitlines()
                           if line.startswith("| train_distribution_fresh"))
    card = tmp_path / "MODEL_CARD.md"
    card.write_text(committed)
    trainer.write_card(card, "new text\n", keep=True)
    assert card.read_text() == "new text\n\n" + marker + appendix
    trainer.write_card(card, "newer text\n", keep=False)
    assert card.read_text() == "newer text\n"


def test_inhibition_sources_name_the_bases_names_in_the_stated_shares(tokenizer):
    entry = siit_task("ioi-inhibition")
    rng = random.Random(0)
    kinds = {"io": 0, "s": 0, "other": 0}
    for _ in range(2000):
        base, source = entry.pair_specs(rng, TRAIN_SPLIT, "S-INH", 0.25)
        assert source.template == base.template and source.names[0] == source.names[2] != source.names[1]
        subject = source.names[0]
        kinds["io" if subject == base.names[1] else "s" if subject == base.names[0] else "other"] += 1
    assert abs(kinds["io"] / 2000 - 0.5) < 0.04 and abs(kinds["s"] / 2000 - 0.25) < 0.04
    pairs = entry.sample_pairs(tokenizer, TRAIN_SPLIT, 200, 1, "iit")
    single = entry.high_level_output(*pairs, "DUP").ids
    # About three quarters of the interchange pairs have a one-token target (the rest: both names at 1/2).
    assert 0.65 < float((single[:, 0] == single[:, 1]).float().mean()) < 0.85


def test_held_out_split_is_disjoint_from_training():
    assert not set(HELD_OUT_TEMPLATE_SPLIT.templates) & set(TRAIN_SPLIT.templates)


# --- the committed model
# --------------------------------------------------------------------------------------


@needs_siit
def test_registered_and_circuit_file_has_the_shape_the_issue_asks(siit, alignment, entry):
    assert entry.model in {m.name for m in bundled_models()}
    truth = find_ground_truth(entry.model, "ioi", Graph.from_config(siit.cfg))
    # The committed circuit's edges are the entry's stated ones (an edge added to the entry later shows here).
    assert {e.name for e in truth.edges} == set(entry.circuit_edges)
    assert truth.meta["kind"] == "by construction"
    assert {a.node for a in alignment} == {n.name for n in truth.nodes}
    assert len({a.layer for a in alignment}) >= 3
    head_edges = [e for e in truth.edges if e.sender.kind == "head" and e.receiver.node.kind == "head"]
    assert len(head_edges) >= 2
    n_heads = siit.cfg.n_layers * siit.cfg.n_heads
    assert len(truth.nodes) <= n_heads / 2 and not any(n.kind == "mlp" for n in truth.nodes)
    card = read_model_card(get_bundled(entry.model).directory)
    assert card["construction_checks"] == json.loads(json.dumps(truth.meta["construction_checks"]))


@pytest.fixture(scope="module")
def card(entry):
    return read_model_card(get_bundled(entry.model).directory)


@needs_siit
def test_held_out_word_scores_reproduce_and_claimed_passes_hold(siit, alignment, tokenizer, card, entry):
    """A fresh sample (other seeds) of the places/objects split (held out, or trained on where the card says
    so) reproduces the card's numbers; every check the card claims passed (≥ 0.95) holds on the sample (≥ 0.9,
    96 pairs)."""
    scores = card["split_scores"]
    stored = scores.get("held_out_places_objects") or scores["held_out_places_objects_trained_on"]
    pairs = entry.sample_pairs(tokenizer, HELD_OUT_WORD_SPLIT, 96, 123_457, "iit")
    checked = interchange_pairs(entry, tokenizer, HELD_OUT_WORD_SPLIT, 96, 123_457)
    abc = entry.sample_pairs(tokenizer, HELD_OUT_WORD_SPLIT, 96, 123_458, "strict")
    high = entry.high_level_output
    measured = {
        "task_top1": task_accuracy(siit, pairs, high),
        "strict_all_units": strict_accuracy(siit, abc, alignment, high),
    }
    measured |= {f"interchange_{a.variable}": interchange_accuracy(siit, checked[a.variable], a, high)
                 for a in alignment}
    # ~½ of the SLOT pairs are ties, ~¼ of DUP's and S-INH's
    ties = interchange_pairs(entry, tokenizer, HELD_OUT_WORD_SPLIT, 256, 123_457)
    measured |= {f"interchange_two_{a.variable}": interchange_accuracy_two(siit, ties[a.variable], a, high)
                 for a in alignment if f"interchange_two_{a.variable}" in stored}  # ours: tie targets
    for key, value in measured.items():
        assert value == pytest.approx(stored[key], abs=0.15), key
        if stored[key] >= 0.95:
            assert value >= 0.9, key


@needs_siit
def test_interchange_fails_for_a_wrongly_aligned_head(siit, alignment, tokenizer, entry):
    """The interchange check can fail: the same check on a head outside the alignment is near chance."""
    pairs = entry.sample_pairs(tokenizer, TRAIN_SPLIT, 64, 99, "iit")
    name = next(a for a in alignment if a.variable == "NAME")
    wrong = AlignedNode("NAME", name.layer, (name.head + 1) % siit.cfg.n_heads, "end", "a head outside")
    assert interchange_accuracy(siit, pairs, wrong, entry.high_level_output) < 0.2


@needs_siit
def test_resample_ablation_sample_matches_the_circuit_file(siit, alignment, tokenizer, card, entry):
    """Resample-ablation effects on fresh prompts match the stored ones (relative to the gap); where the card
    claims the circuit check passed, every circuit head moves the metric by > 20% of the gap."""
    task = get_task("ioi")
    data = task.generate(tokenizer, 64, seed=4242, vocabulary="tiny")
    problem = problem_from_task(task, data)
    clean, corrupted = metric_means(siit, problem)
    gap = clean - corrupted
    truth = find_ground_truth(entry.model, "ioi", Graph.from_config(siit.cfg))
    circuit = list(dict.fromkeys(Node(a.layer, "head", a.head) for a in alignment))
    layer_1 = next(Node(1, "head", h) for h in range(siit.cfg.n_heads) if Node(1, "head", h) not in circuit)
    outside = [Node(0, "mlp"), Node(2, "mlp"), layer_1]
    effects = node_effects(siit, problem, "resample", circuit + outside)
    for node, value in effects.items():
        assert value / gap == pytest.approx(truth.node_effects[node] / truth.gap, abs=0.2), node.name
    if card["construction_checks"]["passed"]["each_circuit_node>0.20"]:
        assert all(abs(effects[n]) > 0.2 * gap for n in circuit)


def test_strict_units_leave_the_aligned_positions_alone(random_model, tokenizer):
    alignment = [AlignedNode("DUP", 0, 2, "S2", "x"), AlignedNode("NAME", 1, 3, "end", "y")]
    rows = encode_specs(tokenizer, [Spec(0, "ABB", ("Mary", "John", "Mary"), "store", "ring")])
    patch = Patch.empty(random_model, *rows.tokens.shape)
    units = non_aligned_units(random_model, alignment)
    for unit in units:
        patch_unit(patch, 0, unit, rows, alignment)
    assert len(units) == random_model.cfg.n_layers * (random_model.cfg.n_heads + 1)
    assert not patch.z[0][0, rows.s2[0], 2] and patch.z[0][0, rows.end[0], 2]
    assert not patch.z[1][0, rows.end[0], 3] and patch.z[1][0, rows.s2[0], 3]
    assert patch.z[0][0, :, 0].all() and patch.mlp[1][0].all()


def test_per_unit_strict_accuracy_patches_one_unit_at_a_time(random_model, tokenizer):
    """InterpBench's strict accuracy (each non-aligned unit patched alone, mean over units) against an
    independent computation with plain TransformerLens hooks on saelab-random (IOI prompt ids folded into its
    vocabulary), whose clean top-1 is the target."""
    alignment = [AlignedNode("DUP", 0, 2, "S2", "x"), AlignedNode("NAME", 1, 3, "end", "y")]
    pairs = sample_pairs(tokenizer, TRAIN_SPLIT, 24, 5)
    vocab = random_model.cfg.d_vocab
    base, source = (rows._replace(tokens=rows.tokens % vocab) for rows in pairs)
    pairs = PairSet(base, source)
    rows = torch.arange(len(base.end))
    clean_top = random_model(base.tokens)[rows, base.end].argmax(-1)

    def own_top1(b, s, variable):
        return Target(clean_top[:, None].expand(-1, 2), torch.full((len(clean_top), 2), 0.5))

    _, cache = random_model.run_with_cache(source.tokens)
    by_hand = {}
    for layer in range(random_model.cfg.n_layers):
        for head in range(random_model.cfg.n_heads):
            keep = next((a.position for a in alignment if (a.layer, a.head) == (layer, head)), None)

            def hook(z, hook, head=head, keep=keep):
                z = z.clone()
                src = cache[hook.name]
                mask = torch.ones(z.shape[:2], dtype=torch.bool)
                if keep is not None:
                    mask[rows, base.position(keep)] = False
                z[..., head, :] = torch.where(mask[..., None], src[..., head, :], z[..., head, :])
                return z

            name = f"blocks.{layer}.attn.hook_z"
            logits = random_model.run_with_hooks(base.tokens, fwd_hooks=[(name, hook)])[rows, base.end]
            by_hand[f"{layer}.{head}"] = float((logits.argmax(-1) == clean_top).float().mean())
        name = f"blocks.{layer}.hook_mlp_out"
        swap = [(name, lambda x, hook: cache[hook.name])]
        logits = random_model.run_with_hooks(base.tokens, fwd_hooks=swap)
        by_hand[f"mlp{layer}"] = float((logits[rows, base.end].argmax(-1) == clean_top).float().mean())
    measured = strict_accuracy_per_unit(random_model, pairs, alignment, own_top1)
    assert min(by_hand.values()) < 1.0 < len(set(by_hand.values()))  # the units differ: a sharp comparison
    assert measured.mean == pytest.approx(sum(by_hand.values()) / len(by_hand))
    assert measured.worst == pytest.approx(min(by_hand.values()))
    all_at_once = strict_accuracy(random_model, pairs, alignment, own_top1)
    assert measured.mean != pytest.approx(all_at_once)


# --- the strict logit term (ours): sees the logit shifts the resample-ablation check measures ------------


def test_strict_shift_loss_is_the_squared_mean_signed_change_of_the_metric_margin():
    """Hand values (ours, --strict-shift-weight): margin = logit(clean top candidate) − max over the other
    candidates. Row 1: clean (5, 1, 2) -> 3, patched (4.5, 1, 2.2) -> 2.3 (−0.7); row 2: clean (1, 3) and a
    padded third candidate -> 2 (the padding token's logit 9 is ignored), patched (1, 3.4) -> 2.4 (+0.4).
    Row 3: clean (2, 1.5) -> 0.5, patched (1, 1.5) -> −0.5 (−1.0; measured from the clean top, which the patch
    displaced). Loss = mean(−0.7, 0.4, −1.0)² / mean(3², 2², 0.5²). A mean of squares, the patched top,
    the mean of the other candidates, or counting the padding all give other values; a shift of every logit is
    no change."""
    clean, patched = torch.zeros(3, 10), torch.zeros(3, 10)
    ids = torch.tensor([[1, 2, 3], [6, 5, -1], [7, 8, -1]])  # row 2: tokens 6 and 5, then padding
    clean[0, [1, 2, 3]] = torch.tensor([5.0, 1.0, 2.0])
    patched[0, [1, 2, 3]] = torch.tensor([4.5, 1.0, 2.2])
    clean[1, [6, 5]] = torch.tensor([1.0, 3.0])
    patched[1, [6, 5]] = torch.tensor([1.0, 3.4])
    clean[1, 0] = patched[1, 0] = 9.0  # the token a clamped padding id would read
    clean[2, [7, 8]] = torch.tensor([2.0, 1.5])  # row 3: the patch flips the top; margin 0.5 -> -0.5
    patched[2, [7, 8]] = torch.tensor([1.0, 1.5])
    expected = ((-0.7 + 0.4 - 1.0) / 3) ** 2 / ((9 + 4 + 0.25) / 3)
    assert float(strict_shift_loss(patched, clean, ids)) == pytest.approx(expected, rel=1e-5)
    one = torch.zeros(1, 10)  # a row with one candidate has no margin: left out, not a NaN
    with_one = torch.cat([ids, torch.tensor([[4, -1, -1]])])
    loss = strict_shift_loss(torch.cat([patched, one + 1.0]), torch.cat([clean, one]), with_one)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(strict_shift_loss(clean + 2.0, clean, ids)) == pytest.approx(0.0, abs=1e-9)
    assert float(strict_shift_loss(clean, clean, ids)) == 0.0


def test_strict_logit_loss_sees_a_saturated_shift_that_kl_does_not():
    """Hand values: with two candidates the term is mean(Δd²) / mean(d²), d their logit difference; a shift
    of every logit, or of a token that is not a candidate, is no change; scaling every logit changes nothing.
    At a saturated prediction (IO 12 logits above the rest) a 0.4-logit drop of IO changes KL by < 1e-4 but
    the term by 0.4² / 12²."""
    clean = torch.zeros(3, 6)
    clean[:, 1] = 12.0
    ids = torch.tensor([[1, 2]] * 3)
    io_down = clean.clone()
    io_down[:, 1] -= 0.4
    kl = torch.nn.functional.kl_div(io_down.log_softmax(-1), clean.log_softmax(-1), log_target=True,
                                    reduction="batchmean")
    assert float(kl) < 1e-4
    assert float(strict_logit_loss(io_down, clean, ids)) == pytest.approx(0.4**2 / 12**2, rel=1e-5)
    assert float(strict_logit_loss(2 * io_down, 2 * clean, ids)) == pytest.approx(0.4**2 / 12**2, rel=1e-5)
    assert float(strict_logit_loss(clean + 3.0, clean, ids)) == pytest.approx(0.0, abs=1e-9)
    other = clean.clone()
    other[:, 4] += 5.0
    assert float(strict_logit_loss(other, clean, ids)) == pytest.approx(0.0, abs=1e-9)
    three = torch.tensor([[1, 2, 3]] * 3)
    moved = clean.clone()
    moved[:, 2] += 0.3
    delta, size = torch.tensor([0.0, 0.3, 0.0]), torch.tensor([8.0, -4.0, -4.0])  # clean 12, 0, 0 centred
    by_hand = float((delta - delta.mean()).pow(2).mean() / size.pow(2).mean())
    assert float(strict_logit_loss(moved, clean, three)) == pytest.approx(by_hand, rel=1e-5)
    # rows of different clean size: one ratio of means over rows and candidates, not a mean of per-row ratios
    two_rows, shifted = torch.zeros(2, 6), torch.zeros(2, 6)
    two_rows[0, 1], two_rows[1, 1] = 12.0, 2.0
    shifted[0, 1], shifted[1, 1] = 11.0, 1.0  # d falls by 1 on both rows
    pair = torch.tensor([[1, 2]] * 2)
    assert float(strict_logit_loss(shifted, two_rows, pair)) == pytest.approx(2 / (144 + 4), rel=1e-5)


def test_strict_logit_loss_ignores_padded_candidates():
    """A negative id is padding: a row of two candidates padded to three gives the two-candidate value, and in
    a batch with a three-candidate row the padded slot counts in neither the row's mean nor the averages (by
    hand: row 0 logits 12, 0 → centred ±6, d falls by 1 → changes ±0.5; row 1 logits 3, 0, 0 → centred 2, -1,
    -1, candidate 2 up by 0.3 → changes -0.1, -0.1, 0.2)."""
    clean, patched = torch.zeros(2, 6), torch.zeros(2, 6)
    clean[0, 1], patched[0, 1] = 12.0, 11.0
    clean[1, 1], patched[1, 1] = 3.0, 3.0
    patched[1, 3] = 0.3
    padded = torch.tensor([[1, 2, -1], [1, 2, 3]])
    two = torch.tensor([[1, 2]])
    assert float(strict_logit_loss(patched[:1], clean[:1], padded[:1])) == pytest.approx(
        float(strict_logit_loss(patched[:1], clean[:1], two)), rel=1e-6)
    change = 2 * 0.5**2 + 0.1**2 + 0.1**2 + 0.2**2  # five real candidates
    size = 2 * 6.0**2 + 2.0**2 + 1.0 + 1.0
    assert float(strict_logit_loss(patched, clean, padded)) == pytest.approx(change / size, rel=1e-5)
    shifted = torch.tensor([[0, 1, 2, -1]])  # token 0 is a real candidate: only a negative id is padding
    clean[0, 0], patched[0, 0] = 3.0, 3.0
    centred = torch.tensor([3.0, 12.0, 0.0]) - 5.0
    moved = torch.tensor([3.0, 11.0, 0.0]) - 14.0 / 3
    expected = float((moved - centred).pow(2).sum() / centred.pow(2).sum())
    assert float(strict_logit_loss(patched[:1], clean[:1], shifted)) == pytest.approx(expected, rel=1e-5)


def test_ioi_candidates_are_the_metric_tokens(tokenizer):
    """The IOI entry's candidates are IO and S (logit(IO) − logit(S) is the construction check's metric)."""
    specs = [Spec(0, "ABB", ("Mary", "John", "Mary"), "store", "ring"),
             Spec(1, "BAB", ("Jessica", "Matthew", "Jessica"), "store", "ring")]
    rows = encode_specs(tokenizer, specs)
    ids = siit_task("ioi").candidates(rows)
    expected = [{tokenizer.encode(" " + n)[-1] for n in spec.names[:2]} for spec in specs]
    assert [set(r.tolist()) for r in ids] == expected


def test_trainer_applies_the_logit_term_to_the_strict_one_rows_only():
    """`unchanged_output_loss` on a fresh model: shifting S's logit by 0.5 on the strict-one rows (one unit
    patched, as the single-node check) costs weight · 0.5² / mean(d²) (d: their clean logit difference); the
    same shift on every other row (task, interchange, strict-many) costs nothing, and the term has a gradient
    through the unpatched run; off by default."""
    from training.train_siit import SIITConfig, build_model, step_batch, tokenizer, unchanged_output_loss

    cfg = SIITConfig(batch=1, strict_logit_weight=2.0, threads=1)
    model = build_model(cfg)
    base, _, _, _, row_groups = step_batch(cfg, model, tokenizer(), 0)
    with torch.no_grad():
        clean = patched_logits(model, base, {}, Patch.empty(model, *base.tokens.shape))
    s_ids = base.slot_names[torch.arange(len(row_groups)), base.dup.clamp(min=0)]  # S (either name in ABC)
    strict = torch.tensor([g == "strict-one" for g in row_groups])
    many = torch.tensor([g == "strict-many" for g in row_groups])
    assert strict.sum() == 1 and many.sum() == 1
    d = (clean.gather(1, base.slot_names) @ torch.tensor([1.0, -1.0]))[strict]  # logit differences
    for shifted_rows, expected in ((strict, 2.0 * 0.5**2 / d.pow(2).mean()), (~strict, 0.0), (many, 0.0)):
        logits = clean.clone()
        logits[shifted_rows, s_ids[shifted_rows]] += 0.5
        term = unchanged_output_loss(cfg, model, base, logits, row_groups)
        assert float(term) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    assert term.requires_grad  # through the unpatched run too (logits here carry no graph)
    off = SIITConfig(batch=1, threads=1)
    assert float(unchanged_output_loss(off, model, base, clean + 1.0, row_groups)) == 0.0
    with pytest.raises(ValueError, match="candidate"):
        SIITConfig(task="docstring-three-stage", strict_logit_weight=1.0)


def test_strict_sources_cover_the_checks_corruption():
    """Half the strict rows' sources are the base's ABC corruption (saelab's IOI corruption, which the
    construction check's resample ablation patches from: same template, order, place and object, three fresh
    names); interchange and task rows draw none."""
    from saelab.circuits.siit import ioi_pair_specs

    rng = random.Random(0)

    def is_corruption(base: Spec, source: Spec) -> bool:
        layout = (base.template, base.order, base.place, base.obj)
        same = layout == (source.template, source.order, source.place, source.obj)
        return same and len(set(source.names)) == 3 and not set(source.names) & set(base.names)

    draws = 400
    share = {group: sum(is_corruption(*ioi_pair_specs(rng, TRAIN_SPLIT, group, 0.25)) for _ in range(draws))
             / draws
             for group in ("strict-one", "strict-many", "DUP", "task")}
    assert 0.4 < share["strict-one"] < 0.6 and 0.4 < share["strict-many"] < 0.6
    assert share["DUP"] < 0.05 and share["task"] < 0.05



def test_strict_focus_rows_patch_only_the_focus_units_and_bad_names_are_refused():
    """--strict-focus (ours): with share 1 every strict-one row patches one of the named units and nothing
    else (checked against the patch masks, over several steps); with share 0.5 about half the rows (plus the
    focus units' own share of the rest); the strict-many rows are untouched; an aligned head or a unit the
    model lacks is refused with its name; the accepted names are `non_aligned_units` but the aligned heads'
    rest."""
    from training.train_siit import SIITConfig, build_model, focus_names, step_batch, tokenizer, unit_name

    def picked(cfg, steps: int) -> list[str]:
        names = []
        for step in range(steps):
            _, _, patch, _, row_groups = step_batch(cfg, model, tokenizer(), step)
            for row, group in enumerate(row_groups):
                if group != "strict-one":
                    continue
                mlps = [layer for layer in range(model.cfg.n_layers) if patch.mlp[layer][row].any()]
                heads = [(layer, head) for layer in range(model.cfg.n_layers)
                         for head in range(model.cfg.n_heads) if patch.z[layer][row, :, head].any()]
                assert len(mlps) + len(heads) == 1, (mlps, heads)
                names.append(f"mlp{mlps[0]}" if mlps else "{}.{}".format(*heads[0]))
            many = [row for row, group in enumerate(row_groups) if group == "strict-many"]
            assert sum(int(patch.z[layer][many].any()) for layer in range(model.cfg.n_layers)) > 0
        return names

    focus = ("mlp2", "0.2")
    cfg = SIITConfig(task="docstring", batch=6, strict_focus=focus, strict_focus_share=1.0, threads=1)
    model = build_model(cfg)
    assert set(picked(cfg, 3)) == set(focus)
    half = picked(SIITConfig(task="docstring", batch=24, strict_focus=focus, strict_focus_share=0.5), 4)
    share = sum(n in focus for n in half) / len(half)  # expected 0.5 + 0.5 * 2/15 ≈ 0.57
    assert 0.4 < share < 0.75 and len(set(half) - set(focus)) >= 5
    units = non_aligned_units(model, cfg.entry.alignment)
    assert focus_names(3, 4, cfg.entry.alignment) == {unit_name(u) for u in units if u[0] != "rest"}
    for wrong in ("0.0", "mlp9", "5.1"):  # 0.0 is aligned (B_NAME, C_NAME); the model has 3 layers of 4 heads
        with pytest.raises(ValueError, match=wrong.replace(".", r"\.")):
            SIITConfig(task="docstring", strict_focus=(wrong,))


def test_strict_groups_are_the_strict_rows_the_loss_averages_and_never_the_path_rows():
    """`strict_groups`: strict-one and strict-many, plus strict-all with --strict-all; the path-strict groups
    (whose names also start with "strict") are not among them, so `train_step` does not average them into the
    strict term."""
    from training.train_siit import PATH_GROUP, SIITConfig, groups, strict_groups

    assert strict_groups(SIITConfig()) == ("strict-one", "strict-many")
    both = SIITConfig(strict_all=True, path_strict_weight=1.0)
    assert strict_groups(both) == ("strict-one", "strict-many", "strict-all")
    assert strict_groups(SIITConfig(strict_layer=True)) == ("strict-one", "strict-many", "strict-layer")
    assert any(g.startswith(PATH_GROUP) for g in groups(both))
    assert not any(g.startswith(PATH_GROUP) for g in strict_groups(both))


def _assert_layer_patched(patch: Patch, base, row: int, layer: int, n_heads: int, aligned: dict) -> None:
    """Every non-aligned unit of `layer` is marked on `row`: its MLP, its heads everywhere, its aligned heads
    everywhere but their aligned position."""
    assert patch.mlp[layer][row].all()
    for head in range(n_heads):
        marked = patch.z[layer][row, :, head]
        if (layer, head) in aligned:
            at = int(base.position(aligned[layer, head].position)[row])
            assert not marked[at] and int(marked.sum()) == len(marked) - 1
        else:
            assert marked.all()


def _shifted_loss(cfg, model, base, row_groups: list[str], group: str) -> float:
    """Our strict terms when the rows of `group` shift the subject's logit by 0.5 and nothing else moves."""
    from training.train_siit import unchanged_output_loss

    with torch.no_grad():
        clean = patched_logits(model, base, {}, Patch.empty(model, *base.tokens.shape))
    s_ids = base.slot_names[torch.arange(len(row_groups)), base.dup.clamp(min=0)]
    chosen = torch.tensor([g == group for g in row_groups])
    logits = clean.clone()
    logits[chosen, s_ids[chosen]] += 0.5
    return float(unchanged_output_loss(cfg, model, base, logits, row_groups))


def test_strict_all_rows_patch_every_non_aligned_unit_and_get_the_logit_term():
    """--strict-all (ours): a "strict-all" group (absent by default) whose rows patch every non-aligned unit
    (aligned heads everywhere but their aligned position), as the all-together check does; the logit term
    prices a shift on those rows as on the strict-one rows, and nothing on the strict-many rows."""
    from training.train_siit import SIITConfig, build_model, groups, step_batch, tokenizer

    assert "strict-all" not in groups(SIITConfig())
    cfg = SIITConfig(batch=2, strict_all=True, strict_logit_weight=2.0, threads=1)
    assert groups(cfg).count("strict-all") == 1
    model = build_model(cfg)
    base, _, patch, _, row_groups = step_batch(cfg, model, tokenizer(), 0)
    rows = [i for i, g in enumerate(row_groups) if g == "strict-all"]
    assert len(rows) == 2
    aligned = {(a.layer, a.head): a for a in cfg.entry.alignment}
    for row in rows:
        for layer in range(model.cfg.n_layers):
            _assert_layer_patched(patch, base, row, layer, model.cfg.n_heads, aligned)
    assert _shifted_loss(cfg, model, base, row_groups, "strict-all") > 1e-4
    assert _shifted_loss(cfg, model, base, row_groups, "strict-one") > 1e-4
    assert _shifted_loss(cfg, model, base, row_groups, "strict-many") == pytest.approx(0.0, abs=1e-7)


def test_strict_layer_rows_patch_every_non_aligned_unit_of_one_layer_and_get_the_logit_term():
    """--strict-layer (ours): each "strict-layer" row patches every non-aligned unit of one layer (its MLP,
    its non-aligned heads everywhere, its aligned heads everywhere but their aligned position) and nothing in
    any other layer; over a batch every layer is drawn; the logit term prices a shift on these rows."""
    from training.train_siit import SIITConfig, build_model, groups, step_batch, tokenizer

    assert "strict-layer" not in groups(SIITConfig())
    cfg = SIITConfig(batch=12, strict_layer=True, strict_logit_weight=2.0, threads=1)
    model = build_model(cfg)
    base, _, patch, _, row_groups = step_batch(cfg, model, tokenizer(), 0)
    rows = [i for i, g in enumerate(row_groups) if g == "strict-layer"]
    assert len(rows) == 12
    aligned = {(a.layer, a.head): a for a in cfg.entry.alignment}
    drawn = set()
    for row in rows:
        marked_layers = [layer for layer in range(model.cfg.n_layers)
                         if patch.mlp[layer][row].any() or patch.z[layer][row].any()]
        assert len(marked_layers) == 1
        drawn.add(marked_layers[0])
        _assert_layer_patched(patch, base, row, marked_layers[0], model.cfg.n_heads, aligned)
    assert drawn == set(range(model.cfg.n_layers))
    assert _shifted_loss(cfg, model, base, row_groups, "strict-layer") > 1e-4

# --- the path-strict term and the edge check (ours) -------------------------------------------------------


def _path_pairs(model, tokenizer, n: int = 12, seed: int = 3) -> PairSet:
    """IOI pairs folded into `model`'s vocabulary, the sources half ABC corruptions."""
    pairs = sample_pairs(tokenizer, TRAIN_SPLIT, n, seed, abc_share=0.5)
    return PairSet(*(rows._replace(tokens=rows.tokens % model.cfg.d_vocab) for rows in pairs))


def test_path_edges_are_the_stated_head_to_head_edges():
    """IOI: 0.2 -> 1.1.v sent from S2 and 1.1 -> 2.3.v from END (not the input or logits edges); the
    inhibition design's second edge is the name mover's query; a head aligned at two positions (the copies
    design's and the docstring entry's head 0.0) sends from both, and a head stated to write into two inputs
    (the copies design's 0.0 into 2.3's keys and values) is one edge that cuts both."""
    edges = path_edges(IOI_ALIGNMENT, IOI_CIRCUIT_EDGES)
    assert [(e.name, [n.position for n in e.senders]) for e in edges] == [("0.2->1.1.v", ["S2"]),
                                                                          ("1.1->2.3.v", ["end"])]
    assert [e.receivers for e in edges] == [((1, 1, "v"),), ((2, 3, "v"),)]
    inhibition = siit_task("ioi-inhibition")
    edges = path_edges(inhibition.alignment, inhibition.circuit_edges)
    assert [(e.name, e.receivers) for e in edges] == [("0.2->1.1.v", ((1, 1, "v"),)),
                                                       ("1.1->2.3.q", ((2, 3, "q"),))]
    copies = siit_task("ioi-copies")
    edges = path_edges(copies.alignment, copies.circuit_edges)
    assert [(e.name, [n.position for n in e.senders]) for e in edges] == [
        ("0.2->1.1.v", ["S2"]), ("1.1->2.3.q", ["end"]), ("0.0->2.3.k+2.3.v", ["slot1", "slot2"])]
    assert edges[-1].receivers == ((2, 3, "k"), (2, 3, "v"))
    docstring = siit_task("docstring")
    assert [[n.variable for n in e.senders] for e in path_edges(docstring.alignment, docstring.circuit_edges)
            if e.name.startswith("0.0")] == [["B_NAME", "C_NAME"]]


@pytest.mark.parametrize("edge_name, position", [("0.2->1.1.v", "S2"), ("0.2->1.1.q", "end")])
def test_path_strict_patch_matches_plain_transformer_lens_hooks(random_model, tokenizer, edge_name, position):
    """The sender's z at its aligned position from the source, the receiver head's value vectors (queries)
    at every position from the base's clean run, computed with plain TransformerLens hooks on saelab-random
    (layer 0 to layer 1; the query edge's sender at END, so that the query the logits read moves): equal to
    `Patch.path_strict` + `patched_logits`. Fails if another head or another input is frozen, if the frozen
    activations come from the source, or if the sender is patched at another position."""
    base, source = _path_pairs(random_model, tokenizer)
    rows = torch.arange(len(base.end))
    alignment = (AlignedNode("A", 0, 2, position, "sender"), AlignedNode("B", 1, 1, "end", "receiver"))
    (edge,) = path_edges(alignment, (edge_name,))
    at = base.position(position)
    _, src = random_model.run_with_cache(source.tokens)
    _, own = random_model.run_with_cache(base.tokens)

    def z_hook(z, hook):
        z = z.clone()
        z[rows, at, 2] = src[hook.name][rows, at, 2]
        return z

    def freeze_hook(x, hook):
        x = x.clone()
        x[:, :, 1] = own[hook.name][:, :, 1]
        return x

    ((_, _, part_in),) = edge.receivers
    hooks = [("blocks.0.attn.hook_z", z_hook), (f"blocks.1.attn.hook_{part_in}", freeze_hook)]
    by_hand = random_model.run_with_hooks(base.tokens, fwd_hooks=hooks)[rows, base.end]
    patch = Patch.empty(random_model, *base.tokens.shape)
    patch.path_strict(rows, edge, base)
    for part in ("v", "q", "k"):
        assert getattr(patch, part)[1][:, :, 1].all() == (part == part_in), part
    cache = source_cache(random_model, source.tokens) | frozen_values(random_model, base.tokens)
    measured = patched_logits(random_model, base, cache, patch)
    assert torch.allclose(measured, by_hand, atol=1e-5)
    node_only = Patch.empty(random_model, *base.tokens.shape)
    node_only.aligned(rows, edge.senders[0], base)
    # the freeze matters on this model (else the comparison above could not tell a missing freeze)
    assert (patched_logits(random_model, base, cache, node_only) - measured).abs().max() > 1e-3


def test_freezing_values_at_the_base_alone_changes_nothing(random_model, tokenizer):
    """Freezing a head's value vectors at the base's own clean values is no intervention: the logits are the
    clean ones exactly; frozen at the source's values they move (so the check can fail)."""
    base, source = _path_pairs(random_model, tokenizer)
    patch = Patch.empty(random_model, *base.tokens.shape)
    patch.v[1][:, :, 1] = True
    clean = patched_logits(random_model, base, {}, Patch.empty(random_model, *base.tokens.shape))
    frozen = patched_logits(random_model, base, frozen_values(random_model, base.tokens), patch)
    assert torch.allclose(frozen, clean, atol=1e-6)
    assert (patched_logits(random_model, base, frozen_values(random_model, source.tokens), patch) - clean
            ).abs().max() > 1e-3


@pytest.mark.parametrize("task", ["ioi", "ioi-inhibition", "ioi-copies"])
def test_trainer_path_rows_patch_the_sender_and_freeze_the_receiver_at_the_base(task):
    """With --path-strict-weight each stated head -> head edge gets its own rows: the sender marked at its
    aligned positions only (the copies design's head 0.0: both name slots), the receiver head's stated input
    (values; the inhibition design's second edge: its queries) at every position, nothing else; the step's
    cache holds the base's clean values, queries and keys (not the source's); the rows' target is the base's
    own output; off by default (no such rows, nothing frozen cached)."""
    from training.train_siit import SIITConfig, build_model, groups, step_batch, step_cache, tokenizer

    cfg = SIITConfig(task=task, batch=2, path_strict_weight=1.0, threads=1)
    entry = cfg.entry
    model = build_model(cfg)
    base, source, patch, target, row_groups = step_batch(cfg, model, tokenizer(), 0)
    edges = path_edges(entry.alignment, entry.circuit_edges)
    assert [[p for _, _, p in e.receivers] for e in edges] == {
        "ioi": [["v"], ["v"]], "ioi-inhibition": [["v"], ["q"]],
        "ioi-copies": [["v"], ["q"], ["k", "v"]]}[task]
    for edge in edges:
        for row in [i for i, g in enumerate(row_groups) if g == "strict-path " + edge.name]:
            marked_z = [(layer, p, h) for layer, z in enumerate(patch.z)
                        for p, h in z[row].nonzero().tolist()]
            senders = sorted((n.layer, int(base.position(n.position)[row]), n.head) for n in edge.senders)
            assert marked_z == senders
            for part in ("v", "q", "k"):
                marks = getattr(patch, part)
                marked = {(layer, h) for layer, m in enumerate(marks) for _, h in m[row].nonzero().tolist()}
                assert marked == {(layer, head) for layer, head, p in edge.receivers if p == part}, part
            for layer, head, part in edge.receivers:
                assert getattr(patch, part)[layer][row, :, head].all()
            assert not any(m[row].any() for m in patch.mlp)
            own = entry.high_level_output(base, source, None)
            assert torch.equal(target.ids[row], own.ids[row])
    assert sum(g.startswith("strict-path") for g in row_groups) == 2 * len(edges)
    cache = step_cache(cfg, model, base, source)
    frozen = frozen_values(model, base.tokens)
    assert {k.rsplit("_", 1)[1] for k in frozen} == {"v", "q", "k"}
    assert all(torch.equal(cache[k], frozen[k]) for k in frozen)
    off = SIITConfig(task=task, batch=2, threads=1)
    assert not any(g.startswith("strict-path") for g in groups(off))
    assert not any(k.endswith(("hook_v", "hook_q", "hook_k")) for k in step_cache(off, model, base, source))


def test_edge_check_from_effects_shares_largest_and_thresholds():
    """Effects over the gap; the largest unstated edge per head by |effect| (a negative one can be the
    largest); stated edges must exceed 0.2 of the gap, unstated ones stay below 0.05; edges sent by nodes
    outside the circuit are ignored."""
    effects = {"0.2->1.1.v": -5.0, "0.2->2.3.v": -4.0, "0.2->logits": 1.0, "1.1->2.3.v": -2.5,
               "1.1->logits": 0.3, "1.1->mlp2": -0.4, "2.3->logits": -6.0, "2.3->mlp2": 0.1,
               "2.0->logits": -9.0, "input->0.2.q": -9.0}
    stated = ("0.2->1.1.v", "1.1->2.3.v", "2.3->logits", "input->0.2.q")
    check = edge_check_from_effects(effects, 10.0, ("0.2", "1.1", "2.3"), stated)
    assert check.stated == {"0.2->1.1.v": -0.5, "1.1->2.3.v": -0.25, "2.3->logits": -0.6}
    assert check.largest_unstated == {"0.2": ("0.2->2.3.v", -0.4), "1.1": ("1.1->mlp2", -0.04),
                                      "2.3": ("2.3->mlp2", 0.01)}
    assert check.passed == {"stated_edges>0.2": True, "unstated_paths<0.05": False}
    fixed = {**effects, "0.2->2.3.v": 0.2, "0.2->logits": -0.3, "1.1->2.3.v": -1.9}
    assert edge_check_from_effects(fixed, 10.0, ("0.2", "1.1", "2.3"), stated).passed == {
        "stated_edges>0.2": False, "unstated_paths<0.05": True}
    assert edge_check_from_effects(fixed, -10.0, ("0.2", "1.1", "2.3"), stated).stated["0.2->1.1.v"] == 0.5
    with pytest.raises(ValueError, match="gap 0"):
        edge_check_from_effects(effects, 0.0, ("0.2",), stated)
    heads = ("0.2", "1.1", "2.3")
    wrong_way = {**effects, "1.1->2.3.v": 2.5}  # patching the edge raises the metric: it does not carry it
    assert not edge_check_from_effects(wrong_way, 10.0, heads, stated).passed["stated_edges>0.2"]
    missing = {k: v for k, v in effects.items() if k != "1.1->2.3.v"}
    message = r"no path-patching effect for the stated edge\(s\) \['1.1->2.3.v'\]"
    with pytest.raises(ValueError, match=message):
        edge_check_from_effects(missing, 10.0, heads, stated)


@needs_siit
def test_edge_check_sample_matches_the_circuit_file(siit, tokenizer, card, entry):
    """The stored edge check (ours) reproduces on fresh prompts (stated edges within 0.2 of the gap, as the
    node effects above: on saelab-ioi-siit-copies they overshoot the gap, e.g. head 0.2's effect is 0.94 /
    1.11 / 1.07 of it on 64 prompts of seeds 1 / 2 / 4242, 0.94 on the card's 400; unstated ones within
    0.1), and its stored verdicts follow from its stored numbers."""
    stored = card["construction_checks"].get("edge_check")
    if stored is None:
        pytest.skip("this card predates the edge check")
    task = get_task("ioi")
    problem = problem_from_task(task, task.generate(tokenizer, 64, seed=4242, vocabulary="tiny"))
    clean, corrupted = metric_means(siit, problem)
    check = edge_check(siit, problem, entry, clean - corrupted)
    for name, value in stored["stated_edge_effect_over_gap"].items():
        assert check.stated[name] == pytest.approx(value, abs=0.2), name
    for head, (name, value) in stored["largest_unstated_path_over_gap"].items():
        assert abs(check.largest_unstated[head][1]) == pytest.approx(abs(value), abs=0.1), (head, name)
    assert stored["passed"]["stated_edges>0.2"] == all(
        abs(v) > 0.2 for v in stored["stated_edge_effect_over_gap"].values())


def test_path_strict_rows_get_the_logit_term_and_the_strict_rows_keep_theirs():
    """`unchanged_output_loss(path=True)` puts the logit term on every path-strict row and on no other row;
    without `path` the strict rows' terms ignore the path-strict rows (older runs' loss unchanged)."""
    from training.train_siit import SIITConfig, build_model, step_batch, tokenizer, unchanged_output_loss

    cfg = SIITConfig(batch=1, strict_logit_weight=2.0, path_strict_weight=1.0, threads=1)
    model = build_model(cfg)
    base, _, _, _, row_groups = step_batch(cfg, model, tokenizer(), 0)
    with torch.no_grad():
        clean = patched_logits(model, base, {}, Patch.empty(model, *base.tokens.shape))
    s_ids = base.slot_names[torch.arange(len(row_groups)), base.dup.clamp(min=0)]
    paths = torch.tensor([g.startswith("strict-path") for g in row_groups])
    one = torch.tensor([g == "strict-one" for g in row_groups])
    d = (clean.gather(1, base.slot_names) @ torch.tensor([1.0, -1.0]))
    for shifted, path, expected in ((paths, True, 2.0 * 0.5**2 / d[paths].pow(2).mean()), (paths, False, 0.0),
                                    (one, True, 0.0), (~paths, True, 0.0)):
        logits = clean.clone()
        logits[shifted, s_ids[shifted]] += 0.5
        term = unchanged_output_loss(cfg, model, base, logits, row_groups, path=path)
        assert float(term) == pytest.approx(float(expected), rel=1e-4, abs=1e-6), (path, shifted)


def _patterns(rows, *marks) -> dict[int, torch.Tensor]:
    """Attention patterns of three layers of four heads, 0.01 everywhere but at the marks (layer, head, query
    positions, key positions, value), one per row."""
    n, pos = rows.tokens.shape
    patterns = {layer: torch.full((n, 4, pos, pos), 0.01) for layer in range(3)}
    for layer, head, query, key, value in marks:
        patterns[layer][torch.arange(n), head, query, key] = value
    return patterns


def test_ioi_attention_loss_reads_the_stated_edges_keys(tokenizer):
    """Ours: the IOI attention targets are S-INH (1.1 at END) -> S2 and NAME (2.3 at END) -> END (where 1.1
    writes); DUP has none and is skipped. With hand-made patterns the loss is the mean of -log of exactly
    those two entries on the task rows."""
    from training.train_siit import attention_loss

    entry = siit_task("ioi")
    rows = encode_specs(tokenizer, [Spec(0, "ABB", ("Mary", "John", "Mary"), "store", "ring"),
                                    Spec(1, "BAB", ("Jessica", "Matthew", "Jessica"), "store", "ring")])
    patterns = _patterns(rows, (1, 1, rows.end, rows.s2, 0.5), (2, 3, rows.end, rows.end, 0.25))
    loss = attention_loss(entry, rows, patterns, ["task", "task"])
    expected = -(torch.tensor(0.5 + 1e-6).log() + torch.tensor(0.25 + 1e-6).log()) / 2
    assert float(loss) == pytest.approx(float(expected))


def test_attention_loss_leaves_out_rows_without_a_key(tokenizer):
    """The inhibition design's NAME has no key on an ABC prompt (-1): that row is left out of NAME's mean (a
    bug that read index -1 would take the last position's attention, 0.9 here)."""
    from training.train_siit import attention_loss

    entry = siit_task("ioi-inhibition")
    rows = encode_specs(tokenizer, [Spec(0, "ABB", ("Mary", "John", "Mary"), "store", "ring"),
                                    Spec(0, "ABB", ("Kevin", "Laura", "Sarah"), "store", "ring")])
    last = rows.tokens.shape[1] - 1
    patterns = _patterns(rows, (0, 2, rows.s2, rows.s2, 0.5), (1, 1, rows.end, rows.s2, 0.5),
                         (2, 3, rows.end, rows.io, 0.25), (2, 3, rows.end, last, 0.9))
    loss = attention_loss(entry, rows, patterns, ["task", "task"])
    expected = -(2 * torch.tensor(0.5 + 1e-6).log() + torch.tensor(0.25 + 1e-6).log()) / 3
    assert float(loss) == pytest.approx(float(expected))


def test_dataset_rows_slots_hold_the_slot_names(tokenizer):
    """`siit.dataset_rows` (an IOI TaskDataset as IOIRows): the tokens at `slots` are `slot_names`, in prompt
    order, and the indirect object sits at one of them (fails on swapped or shifted slots)."""
    from saelab.circuits.siit import dataset_rows

    data = get_task("ioi").generate(tokenizer, 16, seed=3, vocabulary="tiny")
    rows = dataset_rows(data)
    index = torch.arange(16)[:, None]
    assert torch.equal(rows.tokens[index, rows.slots], rows.slot_names)
    assert bool((rows.slots[:, 0] < rows.slots[:, 1]).all())
    assert bool(((rows.slots == rows.io[:, None]).sum(1) == 1).all())


def test_head_norm_spread_is_the_variance_of_log_visible_ov_norms_and_enters_a_step_with_its_weight():
    """Ours (--head-norm-weight): the variance (n - 1) over every head of log `ov_norms(visible=True)`, by
    hand with numpy; scale-free (every head's W_O times 3 leaves it alone; a variance of the norms themselves
    would grow 9-fold) and 0 when every head has the same norm; refused below 0; a
    step's loss adds weight x it (its gradient reaches the heads' W_V and W_O)."""
    import numpy as np

    from saelab.circuits.baselines import ov_norms
    from training.train_siit import SIITConfig, build_model, head_norm_spread, train_step
    from training.train_siit import tokenizer as siit_tokenizer

    cfg = SIITConfig(task="ioi", batch=2, threads=1, head_norm_weight=2.0)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            block.attn.W_O *= torch.tensor([1.0, 2.0, 0.5, 4.0])[:, None, None] * (1 + layer)
    norms = ov_norms(model, visible=True).detach().numpy()
    expected = np.var(np.log(norms.ravel()), ddof=1)
    assert float(head_norm_spread(model)) == pytest.approx(expected, rel=1e-5) and expected > 0.1
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_O *= 3.0
    assert float(head_norm_spread(model)) == pytest.approx(expected, rel=1e-4)
    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            block.attn.W_O /= torch.from_numpy(norms[layer] * 3.0).float()[:, None, None]
    assert float(head_norm_spread(model)) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="head_norm_weight"):
        SIITConfig(task="ioi", head_norm_weight=-1.0)
    torch.manual_seed(0)
    model = build_model(cfg)
    terms = train_step(cfg, model, torch.optim.SGD(model.parameters(), lr=0.0), siit_tokenizer(), 0)
    weighted = terms["task"] + cfg.iit_weight * terms["iit"] + cfg.strict_weight * terms["strict"]
    assert terms["head_norm_spread"] > 0
    assert terms["loss"] == pytest.approx(weighted + 2.0 * terms["head_norm_spread"], rel=1e-5)
    model.zero_grad()
    head_norm_spread(model).backward()
    assert model.blocks[1].attn.W_V.grad.abs().sum() > 0 and model.blocks[2].attn.W_O.grad.abs().sum() > 0


def test_balance_value_output_evens_the_heads_w_o_norms_without_changing_what_the_model_computes(tokenizer):
    """Ours (--balance-vo): after it every head's ‖W_O‖_F is the geometric mean of the heads' norms before,
    the OV products (W_V W_O) and the logits are unchanged (b_V scaled with W_V: leaving it out changes the
    logits), and a second call changes nothing."""
    from training.train_siit import SIITConfig, balance_value_output, build_model

    torch.manual_seed(0)
    model = build_model(SIITConfig(task="ioi", threads=1))
    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            block.attn.W_O *= torch.tensor([1.0, 3.0, 0.5, 2.0])[:, None, None] * (1 + layer)
            block.attn.b_V.normal_()
    text = " When Mary and John went to the store, John gave a drink to"
    tokens = torch.tensor(tokenizer.encode(text))[None]
    with torch.no_grad():
        before = model(tokens)
        norms = torch.stack([b.attn.W_O.flatten(1).norm(dim=1) for b in model.blocks])
        ov = torch.stack([b.attn.W_V @ b.attn.W_O for b in model.blocks])
        balance_value_output(model)
        after = torch.stack([b.attn.W_O.flatten(1).norm(dim=1) for b in model.blocks])
        assert torch.allclose(after, norms.log().mean().exp().expand_as(after), rtol=1e-5)
        assert torch.allclose(torch.stack([b.attn.W_V @ b.attn.W_O for b in model.blocks]), ov, atol=1e-5)
        assert torch.allclose(model(tokens), before, atol=1e-4)
        weights = [p.clone() for p in model.parameters()]
        balance_value_output(model)
        assert all(torch.allclose(p, q, rtol=1e-5) for p, q in zip(model.parameters(), weights, strict=True))


def test_even_head_norms_sets_every_heads_visible_ov_norm_to_the_geometric_mean_after_each_step(tokenizer):
    """Ours (--even-head-norms): after `even_head_norms` every head's visible OV norm is the geometric mean of
    the norms before (not their arithmetic mean, which differs by more than 1% here), each head's OV map keeps
    its direction (only W_O is scaled), and a training step with the option ends with equal norms."""
    from saelab.circuits.baselines import ov_norms
    from training.train_siit import SIITConfig, build_model, even_head_norms, train_step
    from training.train_siit import tokenizer as siit_tokenizer

    torch.manual_seed(0)
    cfg = SIITConfig(task="ioi", batch=2, threads=1, even_head_norms=True)
    model = build_model(cfg)
    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            block.attn.W_O *= torch.tensor([1.0, 3.0, 0.5, 2.0])[:, None, None] * (1 + 2 * layer)
        before = ov_norms(model, visible=True)
        ov = torch.stack([b.attn.W_V @ b.attn.W_O for b in model.blocks])
        even_head_norms(model)
        after = ov_norms(model, visible=True)
        assert torch.allclose(after, before.log().mean().exp().expand_as(after), rtol=1e-5)
        assert not torch.allclose(after, before.mean().expand_as(after), rtol=1e-2)
        scaled = torch.stack([b.attn.W_V @ b.attn.W_O for b in model.blocks])
        cosine = torch.nn.functional.cosine_similarity(scaled.flatten(2), ov.flatten(2), dim=-1)
        assert torch.allclose(cosine, torch.ones_like(cosine), atol=1e-5)
        for block in model.blocks:
            block.attn.W_O *= torch.tensor([1.0, 3.0, 0.5, 2.0])[:, None, None]
    train_step(cfg, model, torch.optim.SGD(model.parameters(), lr=1e-2), siit_tokenizer(), 0)
    with torch.no_grad():
        norms = ov_norms(model, visible=True)
    assert torch.allclose(norms, norms.mean().expand_as(norms), rtol=1e-5)


def test_even_norms_model_evens_its_heads_ov_and_w_o_norms_and_weakens_weight_norm():
    """saelab-ioi-siit-even-norms (ours): every head's visible OV norm and W_O norm are equal up to the
    float16 rounding of the shipped weights (max/min < 1.01; saelab-ioi-siit's spreads are 7.7x and 4.5x), the
    raw OV norms that `weight_norm` reads spread far less than saelab-ioi-siit's and rank the circuit heads at
    node AUC 0.741 (saelab-ioi-siit: 1.000); it shares saelab-ioi-siit's circuit nodes and edges."""
    from sklearn.metrics import roc_auc_score

    from saelab.circuits.baselines import ov_norms

    model, shipped = load_model("saelab-ioi-siit-even-norms"), load_model(NAME)
    with torch.no_grad():
        visible, raw = ov_norms(model, visible=True), ov_norms(model)
        w_o = torch.stack([b.attn.W_O.flatten(1).norm(dim=1) for b in model.blocks])
        before = ov_norms(shipped, visible=True)
    assert float(visible.max() / visible.min()) < 1.01 and float(w_o.max() / w_o.min()) < 1.01
    assert float(before.max() / before.min()) > 5
    assert float(raw.max() / raw.min()) < 0.5 * float(ov_norms(shipped).max() / ov_norms(shipped).min())
    circuit = [int(f"{layer}.{head}" in {"0.2", "1.1", "2.3"}) for layer in range(3) for head in range(4)]
    assert roc_auc_score(circuit, raw.flatten().numpy()) == pytest.approx(20 / 27, abs=1e-9)
    assert roc_auc_score(circuit, ov_norms(shipped).detach().flatten().numpy()) == 1.0
    graph = Graph.from_config(model.cfg)
    mine = find_ground_truth("saelab-ioi-siit-even-norms", "ioi", graph)
    theirs = find_ground_truth(NAME, "ioi", graph)
    assert set(mine.nodes) == set(theirs.nodes) and set(mine.edges) == set(theirs.edges)
