"""saelab-docstring-siit: the docstring high-level causal model (checked against a hand computation on names),
its held-out splits, and a re-check of a sample of the construction checks on the committed weights."""

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch

from saelab.circuits.graph import Graph, Node
from saelab.circuits.io import find_ground_truth
from saelab.circuits.patching import metric_means, node_effects
from saelab.circuits.problem import problem_from_task
from saelab.circuits.siit import (
    AlignedNode,
    Patch,
    interchange_accuracy,
    non_aligned_units,
    patch_unit,
    patched_logits,
    siit_task,
    strict_accuracy,
    task_accuracy,
)
from saelab.circuits.siit_docstring import (
    HELD_OUT_LAYOUT_SPLIT,
    HELD_OUT_WORD_SPLIT,
    TRAIN_SPLIT,
    DocSpec,
    corrupted_spec,
    encode_specs,
    high_level_output,
    mover_output,
    pair_specs,
    permuted_spec,
    sample_spec,
)
from saelab.models import bundled_models, load_model, read_model_card
from saelab.models.io import model_files
from saelab.models.registry import get_bundled
from saelab.models.tokenizer import load_tokenizer
from saelab.tasks import get_task
from saelab.tasks.docstring import PUBLISHED, DocstringSetting

NAME = "saelab-docstring-siit"
ENTRY = siit_task("docstring")
"""The five-stage design (head 0.0's name copies are B_NAME and C_NAME); MOVER falls back to the method."""


def _shipped_design() -> str:
    """The SIIT entry the bundled model was finalised with (its config's training task; "docstring" before
    the config recorded one)."""
    directory = get_bundled(NAME).directory
    if not (directory / "config.json").exists():
        return "docstring"
    config = json.loads((directory / "config.json").read_text()).get("saelab", {})
    return config.get("training", {}).get("config", {}).get("task", "docstring")


SHIPPED = siit_task(_shipped_design())
"""The bundled model's design (today the self-fallback one: MOVER outputs 'self' when nothing matches); the
checks on the bundled weights use it, the design tests `ENTRY`."""
THREE_STAGE = siit_task("docstring-three-stage")
"""The design of the shipped model's first training stage."""


def _available(name: str) -> bool:
    return any(m.name == name and m.available for m in bundled_models())


needs_model = pytest.mark.skipif(not _available(NAME), reason=f"{NAME} has not been trained yet")


@pytest.fixture(scope="module")
def tokenizer():
    name = "saelab-tiny"
    return load_tokenizer(model_files(get_bundled(name).directory).tokenizer, name=name)


def _ids(tokenizer, names):
    return [tokenizer.encode(" " + n, add_special_tokens=False)[0] for n in names]


def _spec(method, args, layout=PUBLISHED):
    descs = tuple(("price", "control")[: layout.desc_words] for _ in range(layout.n_matching - 1))
    return DocSpec(layout, method, ("cost", "issue", "process")[: layout.method_desc_words], tuple(args),
                   descs)


def _by_hand(method, args, layout, prev_at_answer=None, last=None, answer_name=None):
    """MOVER's output from names: the arg whose previous arg ("self" first) is `last` (named `answer_name`
    when it is the answer's), else the method."""
    answer = layout.answer_index
    last = args[answer - 1] if last is None else last
    prev = ["self", *args[:-1]]
    prev[answer] = prev[answer] if prev_at_answer is None else prev_at_answer
    names = list(args)
    names[answer] = names[answer] if answer_name is None else answer_name
    return next((n for n, p in zip(names, prev, strict=True) if p == last), method)


# --- the high-level model (no weights needed) ---------------------------------------------------------------


def test_rows_locate_the_answer_its_previous_argument_and_the_method(tokenizer):
    layout = DocstringSetting(1, 3, 2, 2, 3)
    args = ("page", "names", "size", "read", "file", "data")
    rows = encode_specs(tokenizer, [_spec("old", args, layout)])
    assert tokenizer.decode(rows.tokens[0, rows.answer_def[0]]) == " read"  # prefix 1 + matching 3 → index 3
    assert rows.def_tokens[0].tolist() == _ids(tokenizer, args)
    assert rows.prev_tokens[0, 1:].tolist() == _ids(tokenizer, args[:-1])
    assert tokenizer.decode(rows.prev_tokens[0, 0]) == "self"
    assert rows.last_doc.tolist() == _ids(tokenizer, ["size"])
    assert rows.method.tolist() == _ids(tokenizer, ["old"])
    assert rows.tokens[0, rows.last_doc_pos[0]] == rows.last_doc[0]
    assert rows.last_doc_pos[0] > rows.answer_def[0]
    targets = ENTRY.attention_targets(rows)
    assert tokenizer.decode(rows.tokens[0, targets["PREV"][0]]) == " size"
    assert targets["MOVER"][0] == rows.answer_def[0] == targets["C_NAME"][0]
    assert tokenizer.decode(rows.tokens[0, targets["B_NAME"][0]]) == " size"
    assert targets["B_NAME"][0] == rows.position("B_doc")[0] == targets["LAST"][0]
    assert rows.position("end").tolist() == [rows.tokens.shape[1] - 1]


@pytest.mark.parametrize("layout",
                         [PUBLISHED, DocstringSetting(0, 2, 0, 1, 2), DocstringSetting(3, 4, 2, 3, 4)])
def test_high_level_outputs_match_a_hand_computation_on_names(tokenizer, layout):
    rng = random.Random(5)
    for _ in range(6):
        base = sample_spec(rng, TRAIN_SPLIT, layout)
        for source in (permuted_spec(rng, TRAIN_SPLIT, base),
                       sample_spec(rng, TRAIN_SPLIT, layout, base.def_args)):
            b, s = encode_specs(tokenizer, [base]), encode_specs(tokenizer, [source])
            i = layout.answer_index
            expected = {
                None: _by_hand(base.method, base.def_args, layout),
                "PREV": _by_hand(base.method, base.def_args, layout, prev_at_answer=source.def_args[i - 1]),
                "LAST": _by_hand(base.method, base.def_args, layout, last=source.def_args[i - 1]),
                "B_NAME": _by_hand(base.method, base.def_args, layout, last=source.def_args[i - 1]),
                "C_NAME": _by_hand(base.method, base.def_args, layout, answer_name=source.def_args[i]),
                "MOVER": source.def_args[i],
            }
            for variable, name in expected.items():
                output = high_level_output(b, s, variable).ids[0].tolist()
                assert output == _ids(tokenizer, [name]) * 2, variable
    assert expected[None] == base.def_args[layout.answer_index]
    with pytest.raises(ValueError, match="unknown high-level variable"):
        high_level_output(b, s, "NAME")


def test_interventions_from_permuted_sources_move_the_answer_and_others_fall_back(tokenizer):
    base = _spec("old", ("page", "names", "size", "read", "file", "data"))  # answer "file", after "read"
    moved = _spec("new", ("page", "names", "data", "size", "file", "read"))  # its last doc arg "size"
    b, s = encode_specs(tokenizer, [base]), encode_specs(tokenizer, [moved])
    assert high_level_output(b, s, "LAST").ids[0, 0] == _ids(tokenizer, ["read"])[0]  # the arg after "size"
    # PREV("file")=size ≠ read
    assert high_level_output(b, s, "PREV").ids[0, 0] == _ids(tokenizer, ["old"])[0]
    other = encode_specs(tokenizer, [_spec("key", ("user", "path", "item", "node", "url", "text"))])
    assert high_level_output(b, other, "LAST").ids[0, 0] == _ids(tokenizer, ["old"])[0]
    assert high_level_output(b, other, "B_NAME").ids[0, 0] == _ids(tokenizer, ["old"])[0]
    assert high_level_output(b, other, "C_NAME").ids[0, 0] == _ids(tokenizer, ["url"])[0]  # source's answer


def test_movers_keys_under_an_intervention_are_the_matched_argument_or_anything_but_the_arguments(tokenizer):
    """MOVER's attention targets under an intervention: the position of the argument it outputs (LAST from a
    permuted source: "read"; C_NAME keeps the answer's position, its name changes); where nothing matches,
    every position up to the end except the signature's arguments (it moves none of them); none for MOVER
    itself."""
    from saelab.circuits.siit_docstring import intervened_attention_targets

    b = encode_specs(tokenizer, [_spec("old", ("page", "names", "size", "read", "file", "data"))])
    moved = encode_specs(tokenizer, [_spec("new", ("page", "names", "data", "size", "file", "read"))])
    other = encode_specs(tokenizer, [_spec("key", ("user", "path", "item", "node", "url", "text"))])

    def keys(source, variable):
        mask = intervened_attention_targets(b, source, variable)["MOVER"][0]
        return [tokenizer.decode(b.tokens[0, p]) for p in mask.nonzero()[:, 0].tolist()]

    assert keys(moved, "LAST") == keys(moved, "B_NAME") == [" read"]
    def_positions = [p for p in b.def_pos[0].tolist() if p >= 0]
    for variable in ("PREV", "LAST", "B_NAME"):  # no match: anything but a signature argument, up to the end
        mask = intervened_attention_targets(b, other, variable)["MOVER"][0]
        assert not mask[def_positions].any() and not mask[int(b.end[0]) + 1:].any()
        assert int(mask.sum()) == int(b.end[0]) + 1 - len(def_positions) == len(keys(other, variable))
        assert {" old", ",", "("} <= set(keys(other, variable))  # the method, the commas, "("
    mask = intervened_attention_targets(b, other, "C_NAME")["MOVER"]
    assert mask.sum().item() == 1 and mask[0, b.answer_def[0]]
    assert intervened_attention_targets(b, other, "MOVER") == {}
    assert ENTRY.intervened_attention_targets is intervened_attention_targets
    assert THREE_STAGE.intervened_attention_targets is None and THREE_STAGE.candidates is None


def test_the_self_fallback_design_outputs_and_reads_self_when_nothing_matches(tokenizer):
    """siit_task("docstring-self-fallback") (ours): where nothing matches, MOVER outputs the signature's
    "self" and its one key is "self"'s position; where something matches, the shipped design's output and
    key; its default model name is not the bundled model's; the alignment differs only in MOVER's stated
    meaning."""
    entry = siit_task("docstring-self-fallback")
    b = encode_specs(tokenizer, [_spec("old", ("page", "names", "size", "read", "file", "data"))])
    moved = encode_specs(tokenizer, [_spec("new", ("page", "names", "data", "size", "file", "read"))])
    other = encode_specs(tokenizer, [_spec("key", ("user", "path", "item", "node", "url", "text"))])
    self_id = int(b.tokens[0, b.self_pos[0]])
    assert tokenizer.decode([self_id]) == "self" and tokenizer.decode([b.tokens[0, b.self_pos[0] - 1]]) == "("
    for variable in ("PREV", "LAST", "B_NAME"):
        assert entry.high_level_output(b, other, variable).ids[0].tolist() == [self_id, self_id]
        assert ENTRY.high_level_output(b, other, variable).ids[0].tolist() == [b.method[0].item()] * 2
        mask = entry.intervened_attention_targets(b, other, variable)["MOVER"][0]
        assert mask.nonzero()[:, 0].tolist() == [b.self_pos[0].item()]
    for variable in ("LAST", "C_NAME", None):
        ids = entry.high_level_output(b, moved, variable).ids
        assert torch.equal(ids, ENTRY.high_level_output(b, moved, variable).ids)
    assert torch.equal(entry.intervened_attention_targets(b, moved, "LAST")["MOVER"],
                       ENTRY.intervened_attention_targets(b, moved, "LAST")["MOVER"])
    assert entry.model == "saelab-docstring-siit" != ENTRY.model  # the bundled model's design owns its name
    assert ENTRY.model == "saelab-docstring-siit-method-fallback"  # a run of the old design keeps it
    nodes = [(a.variable, a.layer, a.head, a.position) for a in entry.alignment]
    assert nodes == [(a.variable, a.layer, a.head, a.position) for a in ENTRY.alignment]
    assert entry.alignment[:-1] == ENTRY.alignment[:-1]  # only MOVER's meaning names its fallback
    assert "'self' when none does" in entry.alignment[-1].meaning
    assert "method's name when none does" in ENTRY.alignment[-1].meaning
    with pytest.raises(ValueError, match="unknown MOVER fallback 'bos'"):
        mover_output(b, b.prev_at_answer, torch.tensor([0]), b.answer, fallback="bos")


def test_near_miss_sources_rename_b_to_the_nearest_untaken_name_and_still_match_nothing(tokenizer):
    """near_miss_spec (ours): on a B_NAME/LAST/PREV row whose source uses other names, the source's last
    documented argument B becomes the first name of `nearest[a]` (a: one of the base's arguments) that neither
    prompt uses; the rest of the source is unchanged, and the high-level output is still the method's name (no
    match). Permuted sources and other groups are left alone."""
    from saelab.circuits.siit_docstring import near_miss_spec

    base = _spec("old", ("page", "names", "size", "read", "file", "data"))
    source = _spec("key", ("user", "path", "item", "node", "url", "text"))
    nearest = {a: ["user", "size", "mode", "line"] for a in base.def_args}  # user, size taken: "mode"
    out = near_miss_spec(random.Random(0), TRAIN_SPLIT, "LAST", base, source, nearest)
    b_index = PUBLISHED.n_prefix + PUBLISHED.n_matching - 2
    assert out.def_args[b_index] == "mode" and source.def_args[b_index] == "node"
    assert out._replace(def_args=source.def_args) == source
    b, o = encode_specs(tokenizer, [base]), encode_specs(tokenizer, [out])
    assert tokenizer.decode(o.tokens[0, o.last_doc_pos[0]]) == " mode"  # the documented B is renamed too
    for variable in ("B_NAME", "LAST", "PREV"):
        assert high_level_output(b, o, variable).ids[0, 0] == b.method[0]
    permuted = _spec("new", ("page", "names", "data", "size", "file", "read"))
    assert near_miss_spec(random.Random(0), TRAIN_SPLIT, "LAST", base, permuted, nearest) == permuted
    for group in ("C_NAME", "MOVER", "task", "strict-one"):
        assert near_miss_spec(random.Random(0), TRAIN_SPLIT, group, base, source, nearest) == source


def test_trainer_near_miss_rows_use_the_models_nearest_names():
    """--near-miss-share 1: every B_NAME/LAST/PREV row whose source shares no name with the base gets, as the
    source's B, the nearest untaken name (by the model's own embeddings) to the base's B on PREV rows, to the
    PREV of one of the base's arguments on LAST and B_NAME rows; off by default; refused for an entry without
    near-miss sources."""
    from training.train_siit import SIITConfig, build_model, nearest_names, step_batch
    from training.train_siit import tokenizer as train_tokenizer

    tok = train_tokenizer()
    cfg = SIITConfig(task="docstring", batch=6, near_miss_share=1.0, threads=1)
    model = build_model(cfg)
    names = list(cfg.train_split.variables)
    nearest = nearest_names(model, tok, names)
    ids = dict(zip(names, _ids(tok, names), strict=True))
    name_of = {i: n for n, i in ids.items()}
    embedding = torch.nn.functional.normalize(model.W_E[torch.tensor(list(ids.values()))], dim=-1)
    cosines = embedding[1:] @ embedding[0]
    assert nearest[names[0]][0] == names[1 + int(cosines.argmax())]  # by decreasing cosine, itself excluded
    base, source, _, _, row_groups = step_batch(cfg, model, tok, 0)
    checked = set()
    for row, group in enumerate(row_groups):
        base_args = [name_of[int(t)] for t in base.def_tokens[row] if t >= 0]
        source_args = [name_of[int(t)] for t in source.def_tokens[row] if t >= 0]
        if group not in ("B_NAME", "LAST", "PREV") or set(base_args) & set(source_args):
            continue
        b_name = name_of[int(source.last_doc[row])]
        taken = {*base_args, name_of[int(base.method[row])], *source_args, name_of[int(source.method[row])]}
        taken.discard(b_name)  # B itself was untaken when it was chosen
        targets = [name_of[int(base.last_doc[row])]] if group == "PREV" else base_args[:-1]
        picks = {next(n for n in nearest[a] if n not in taken) for a in targets}
        assert b_name in picks, (group, b_name, picks)
        checked.add(group)
    assert checked == {"B_NAME", "LAST", "PREV"}
    with pytest.raises(ValueError, match="near-miss"):
        SIITConfig(task="ioi", near_miss_share=0.5)


def test_the_no_match_mask_stops_at_each_rows_end_in_a_padded_batch(tokenizer):
    """Rows of different lengths in one batch: a shorter row's no-match mask allows nothing past its END."""
    from saelab.circuits.siit_docstring import intervened_attention_targets

    four = DocstringSetting(n_prefix=2, n_matching=4, n_suffix=1)
    names = ("page", "names", "size", "read", "file", "data")
    others = ("user", "path", "item", "node", "url", "text")
    b = encode_specs(tokenizer, [_spec("old", names), _spec("run", (*names, "mode"), four)])
    other = encode_specs(tokenizer, [_spec("key", others), _spec("key", (*others, "line"), four)])
    assert b.end[0] < b.end[1] < b.tokens.shape[1]
    mask = intervened_attention_targets(b, other, "LAST")["MOVER"]
    for row in range(2):
        assert mask[row, : int(b.end[row]) + 1].any() and not mask[row, int(b.end[row]) + 1 :].any()


def test_trainer_iit_attention_term_reads_movers_pattern_at_the_intervened_key():
    """`iit_attention_loss`: MOVER's attention from END all on its intervened key on the interchange rows
    costs ~0; all on the clean key (the answer's position) costs much more (-log 1e-6 on the rows where they
    differ); 0.5 on the intervened key costs log 2; rows of other groups are not read."""
    import math

    from training.train_siit import SIITConfig, build_model, iit_attention_loss, step_batch
    from training.train_siit import tokenizer as train_tokenizer

    cfg = SIITConfig(task="docstring", batch=4, iit_attention_weight=1.0, threads=1)
    base, source, _, _, row_groups = step_batch(cfg, build_model(cfg), train_tokenizer(), 0)
    n, pos = base.tokens.shape
    end = base.end
    masks = torch.zeros(n, pos, dtype=torch.bool)
    for variable in ("B_NAME", "C_NAME", "PREV", "LAST"):
        rows = [i for i, g in enumerate(row_groups) if g == variable]
        picked = [type(r)(*(f[rows] if isinstance(f, torch.Tensor) else f for f in r))
                  for r in (base, source)]
        masks[rows] = ENTRY.intervened_attention_targets(*picked, variable)["MOVER"]
    iit_rows = torch.tensor([g in ("B_NAME", "C_NAME", "PREV", "LAST") for g in row_groups])
    fallback = iit_rows & (masks.sum(1) > 1)
    assert fallback.any() and (iit_rows & (masks.sum(1) == 1)).any()
    # one allowed key per row (the first); on fallback rows the answer's position is not allowed
    first = masks.int().argmax(1)

    def loss(where: torch.Tensor, share: float = 1.0) -> float:
        pattern = torch.zeros(n, 4, pos, pos)
        pattern[torch.arange(n), 0, end, where] = share
        return float(iit_attention_loss(ENTRY, base, source, {2: pattern}, row_groups))

    assert loss(first) == pytest.approx(0.0, abs=1e-5)
    assert loss(first, 0.5) == pytest.approx(math.log(2), rel=1e-4)
    spread = torch.zeros(n, 4, pos, pos)  # spread over every allowed key: the mass is summed, costs ~0
    spread[torch.arange(n), 0, end] = masks.float() / masks.sum(1, keepdim=True).clamp(min=1)
    spread_loss = float(iit_attention_loss(ENTRY, base, source, {2: spread}, row_groups))
    assert spread_loss == pytest.approx(0.0, abs=1e-5)
    assert not masks[fallback, base.answer_def[fallback]].any()  # no argument is allowed when nothing matches
    assert loss(base.answer_def) > 1.0
    other = first.clone()
    other[~iit_rows] = 0  # rows of other groups: not read
    assert loss(other) == pytest.approx(0.0, abs=1e-5)
    pattern = torch.full((n, 4, pos, pos), 0.5, requires_grad=True)  # the term trains the pattern it reads
    iit_attention_loss(ENTRY, base, source, {2: pattern}, row_groups).backward()
    rows = torch.nonzero(iit_rows).flatten()
    assert pattern.grad[rows, 0, end[rows], first[rows]].lt(0).all()  # more attention on a key: lower loss
    with pytest.raises(ValueError, match="attention targets"):
        SIITConfig(task="docstring-three-stage", iit_attention_weight=1.0)


def test_c_name_names_the_answer_only_where_the_match_is_the_answer(tokenizer):
    """C_NAME is the name at C_def: when LAST points the match at another argument, that argument's own name
    is the output, whatever C_NAME says."""
    b = encode_specs(tokenizer, [_spec("old", ("page", "names", "size", "read", "file", "data"))])
    page, names, file, url = _ids(tokenizer, ["page", "names", "file", "url"])
    url_t = torch.tensor([url])
    assert mover_output(b, b.prev_at_answer, b.last_doc, url_t).tolist() == [url]
    assert mover_output(b, b.prev_at_answer, torch.tensor([page]), url_t).tolist() == [names]
    assert mover_output(b, b.prev_at_answer, b.last_doc, b.answer).tolist() == [file]


def test_held_out_splits_are_disjoint_from_training_and_the_published_layout_is_trained():
    assert not set(HELD_OUT_LAYOUT_SPLIT.layouts) & set(TRAIN_SPLIT.layouts)
    assert not set(HELD_OUT_WORD_SPLIT.descriptions) & set(TRAIN_SPLIT.descriptions)
    assert PUBLISHED in TRAIN_SPLIT.layouts and len(HELD_OUT_WORD_SPLIT.descriptions) >= 10
    assert ENTRY.train_split(frozenset({"held_out_layouts"})).layouts[-1] == HELD_OUT_LAYOUT_SPLIT.layouts[-1]


def test_sources_share_the_base_layout_token_for_token(tokenizer):
    pairs = ENTRY.sample_pairs(tokenizer, HELD_OUT_LAYOUT_SPLIT, 64, 3, "iit")
    assert torch.equal(pairs.base.end, pairs.source.end)
    assert torch.equal(pairs.base.answer_def, pairs.source.answer_def)


@pytest.mark.parametrize("layout",
                         [PUBLISHED, DocstringSetting(0, 2, 0, 1, 2), DocstringSetting(3, 4, 2, 3, 4)])
def test_corrupted_spec_is_the_tasks_random_random_corruption(layout):
    """The strict rows' corruption source is saelab's own random_random corruption of the base (the text the
    construction check's resample ablation patches from), built from the same names by the task's code."""
    from saelab.tasks.docstring import CORRUPTIONS, _Draw, _prompt

    rng = random.Random(1)
    base = sample_spec(rng, TRAIN_SPLIT, layout)
    source = corrupted_spec(rng, TRAIN_SPLIT, base)
    p, m = layout.n_prefix, layout.n_matching
    args, mid = list(base.def_args), list(source.def_args[p : p + m])
    draw = _Draw(base.method, list(base.method_desc), [list(d) for d in base.arg_descs], args[:p],
                 args[p : p + m], args[p + m :], [], "", mid, list(source.doc_args))
    assert _prompt(draw, "clean", "clean", layout).text == base.prompt().text
    assert _prompt(draw, *CORRUPTIONS["random_random"], layout).text == source.prompt().text
    fresh = set(source.def_args[p : p + m]) | set(source.doc_args)
    assert len(fresh) == 2 * m - 1 and not fresh & {base.method, *base.def_args}


def test_half_the_training_strict_sources_are_the_corruption_and_evaluation_pairs_none(tokenizer):
    """The trainer's strict groups draw about half their sources as the base's corruption (same method and
    prefix, other matching names); interchange groups and the "strict" evaluation pairs draw none."""
    def corrupted(group: str, n: int = 400) -> float:
        rng = random.Random(2)
        pairs = [pair_specs(rng, TRAIN_SPLIT, group, 0.5) for _ in range(n)]
        return sum(s.method == b.method and s.doc_args is not None for b, s in pairs) / n

    assert 0.4 < corrupted("strict-one") < 0.6 and 0.4 < corrupted("strict-many") < 0.6
    assert 0.4 < corrupted("strict-all") < 0.6
    assert corrupted("strict") == corrupted("PREV") == corrupted("MOVER") == corrupted("task") == 0.0


def test_the_logit_term_reads_every_signature_argument_and_ignores_padding(tokenizer):
    """The docstring candidates are the signature arguments (-1 past a shorter signature); on the trainer's
    strict-one rows the term equals a hand computation over each row's own arguments (rows of different
    signature lengths in one batch)."""
    from training.train_siit import SIITConfig, build_model, step_batch, unchanged_output_loss
    from training.train_siit import tokenizer as train_tokenizer

    cfg = SIITConfig(task="docstring", batch=3, strict_logit_weight=1.0, threads=1)
    model = build_model(cfg)
    base, _, _, _, row_groups = step_batch(cfg, model, train_tokenizer(), 0)
    ids = ENTRY.candidates(base)
    assert torch.equal(ids, base.def_tokens)
    one = [i for i, g in enumerate(row_groups) if g == "strict-one"]
    assert len({int((ids[i] >= 0).sum()) for i in range(len(row_groups))}) > 1  # the batch is padded
    with torch.no_grad():
        clean = patched_logits(model, base, {}, Patch.empty(model, *base.tokens.shape))
    logits = clean.clone()
    answer = base.answer
    logits[one, answer[one]] += 0.5  # the answer up by 0.5 on the strict-one rows
    change = size = 0.0
    for i in one:
        k = int((ids[i] >= 0).sum())
        c = clean[i, ids[i, :k]]
        c = c - c.mean()
        change += 0.5**2 * (1 - 1 / k) ** 2 + (k - 1) * (0.5 / k) ** 2
        size += float(c.pow(2).sum())
    term = unchanged_output_loss(cfg, model, base, logits, row_groups)
    assert float(term) == pytest.approx(change / size, rel=1e-4)


# --- the committed model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model(NAME)


@pytest.fixture(scope="module")
def card():
    return read_model_card(get_bundled(NAME).directory)


@needs_model
def test_circuit_file_has_the_shape_the_issue_asks(model, card):
    truth = find_ground_truth(NAME, "docstring", Graph.from_config(model.cfg))
    assert truth.meta["kind"] == "by construction"
    alignment = [AlignedNode.from_json(a) for a in truth.meta["alignment"]]
    assert alignment == list(SHIPPED.alignment) and SHIPPED.model == NAME  # its design's entry names it
    assert {a.node for a in alignment} == {n.name for n in truth.nodes}
    assert len({a.layer for a in alignment}) >= 3
    head_edges = [e for e in truth.edges if e.sender.kind == "head" and e.receiver.node.kind == "head"]
    assert len(head_edges) >= 2
    assert len(truth.nodes) <= model.cfg.n_layers * model.cfg.n_heads / 2
    assert card["construction_checks"] == truth.meta["construction_checks"]


@needs_model
def test_held_out_scores_reproduce_and_claimed_passes_hold(model, tokenizer, card):
    """A fresh sample (other seeds) of the held-out layouts reproduces the card's numbers; every check the
    card claims passed (≥ 0.95) holds on the sample (≥ 0.9, 96 pairs)."""
    stored = card["split_scores"]["held_out_layouts"]
    pairs = SHIPPED.sample_pairs(tokenizer, HELD_OUT_LAYOUT_SPLIT, 96, 123_457, "iit")
    strict = SHIPPED.sample_pairs(tokenizer, HELD_OUT_LAYOUT_SPLIT, 96, 123_458, "strict")
    high = SHIPPED.high_level_output
    measured = {"task_top1": task_accuracy(model, pairs, high),
                "strict_all_units": strict_accuracy(model, strict, SHIPPED.alignment, high)}
    measured |= {f"interchange_{a.variable}": interchange_accuracy(model, pairs, a, high)
                 for a in SHIPPED.alignment}
    for key, value in measured.items():
        assert value == pytest.approx(stored[key], abs=0.15), key
        if stored[key] >= 0.95:
            assert value >= 0.9, key


@needs_model
def test_interchange_fails_for_a_wrongly_aligned_head(model, tokenizer, card):
    pairs = SHIPPED.sample_pairs(tokenizer, TRAIN_SPLIT, 64, 99, "iit")
    mover = SHIPPED.alignment[-1]
    wrong = AlignedNode("MOVER", mover.layer, (mover.head + 1) % model.cfg.n_heads, "end", "a head outside")
    assert interchange_accuracy(model, pairs, wrong, SHIPPED.high_level_output) < 0.2
    if card["split_scores"]["train_distribution_fresh"]["interchange_MOVER"] >= 0.95:
        assert interchange_accuracy(model, pairs, mover, SHIPPED.high_level_output) >= 0.9


@needs_model
def test_resample_ablation_sample_matches_the_circuit_file(model, tokenizer, card):
    """On fresh task-generator prompts: accuracy near the card's, resample-ablation effects (relative to the
    gap) match the stored ones, and where the card claims the circuit check passed every circuit head moves
    the metric by > 20% of the gap."""
    task = get_task("docstring")
    data = task.generate(tokenizer, 64, seed=4242, vocabulary="tiny")
    accuracy = float(task.accuracy(model(data.clean_tokens), data).float().mean())
    assert accuracy == pytest.approx(card["construction_checks"]["task_accuracy"], abs=0.1)
    problem = problem_from_task(task, data)
    clean, corrupted = metric_means(model, problem)
    gap = clean - corrupted
    truth = find_ground_truth(NAME, "docstring", Graph.from_config(model.cfg))
    circuit = sorted({Node(a.layer, "head", a.head) for a in SHIPPED.alignment})
    last = next(a for a in SHIPPED.alignment if a.variable == "LAST")
    outside = [Node(0, "mlp"), Node(2, "mlp"), Node(1, "head", (last.head + 1) % model.cfg.n_heads)]
    effects = node_effects(model, problem, "resample", circuit + outside)
    for node, value in effects.items():
        assert value / gap == pytest.approx(truth.node_effects[node] / truth.gap, abs=0.2), node.name
    if card["construction_checks"]["passed"]["each_circuit_node>0.20"]:
        assert all(abs(effects[n]) > 0.2 * gap for n in circuit)


def test_name_copy_design_aligns_head_0_0_at_two_positions_and_leaves_it_patched_elsewhere(tokenizer,
                                                                                          random_model):
    """The five-stage entry: head 0.0 carries B_NAME at B_doc and C_NAME at C_def; as a strict unit it
    is patched at every other position and at neither of those two (in the three-stage design, everywhere)."""
    entry = ENTRY
    assert entry.variables == ("B_NAME", "C_NAME", "PREV", "LAST", "MOVER")
    assert {(a.node, a.position) for a in entry.alignment[:2]} == {("0.0", "B_doc"), ("0.0", "C_def")}
    assert {"0.0->1.2.v", "0.0->2.0.v", "0.1->2.0.k", "1.2->2.0.q"} <= set(entry.circuit_edges)
    assert "input->1.2.v" not in entry.circuit_edges and "input->1.2.v" in THREE_STAGE.circuit_edges
    model = random_model
    rows = encode_specs(tokenizer, [_spec("old", ("page", "names", "size", "read", "file", "data"))])
    units = non_aligned_units(model, entry.alignment)
    assert ("rest", 0, 0) in units and ("head", 0, 0) in non_aligned_units(model, THREE_STAGE.alignment)
    assert THREE_STAGE.model not in (entry.model, SHIPPED.model)  # a three-stage run keeps them
    patch = Patch.empty(model, *rows.tokens.shape)
    patch_unit(patch, 0, ("rest", 0, 0), rows, entry.alignment)
    assert not patch.z[0][0, rows.last_doc_pos[0], 0] and not patch.z[0][0, rows.answer_def[0], 0]
    assert int(patch.z[0][0, :, 0].sum()) == rows.tokens.shape[1] - 2


@pytest.mark.parametrize(("task", "option"),
                         [("ioi", "path_strict_weight"), ("docstring", "iit_attention_weight")])
def test_train_step_adds_each_optional_term_with_its_weight(task, option):
    """One training step with one optional term on: it runs (the attention patterns are hooked for the IIT
    attention term alone), and the loss is the weighted sum of the logged terms plus the unlogged term's
    weighted value (path-strict: logged, so the sum is exact)."""
    from training.train_siit import SIITConfig, build_model, train_step
    from training.train_siit import tokenizer as train_tokenizer

    torch.manual_seed(0)
    cfg = SIITConfig(task=task, batch=2, threads=1, **{option: 0.5})
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    terms = train_step(cfg, model, optimizer, train_tokenizer(), 0)
    weighted = terms["task"] + cfg.iit_weight * terms["iit"] + cfg.strict_weight * terms["strict"]
    if option == "path_strict_weight":
        assert terms["loss"] == pytest.approx(weighted + 0.5 * terms["path"], rel=1e-5)
    else:
        assert terms["loss"] > weighted + 1e-3  # -log attention of a random model's head is far above 0


def test_strict_shift_term_enters_the_strict_loss_with_its_weight():
    """Ours (--strict-shift-weight): the strict rows' extra term is weight × (`strict_shift_loss` over the
    strict-one rows + over the strict-all rows, each group alone; not pooled, not on other rows); the same
    step (same rows, learning rate 0) logs a strict loss larger by that, linear in the weight; a negative
    weight is refused."""
    from saelab.circuits.siit import strict_shift_loss
    from training.train_siit import SIITConfig, build_model, step_batch, train_step, unchanged_output_loss
    from training.train_siit import tokenizer as train_tokenizer

    torch.manual_seed(0)  # the term itself: strict-one and strict-all rows each alone, nothing else
    cfg = SIITConfig(task="docstring", batch=4, threads=1, strict_all=True, strict_shift_weight=3.0)
    model = build_model(cfg)
    base, _, _, _, row_groups = step_batch(cfg, model, train_tokenizer(), 0)
    logits, unpatched = torch.randn(len(row_groups), model.cfg.d_vocab), torch.randn(len(row_groups),
                                                                                     model.cfg.d_vocab)
    ids = cfg.entry.candidates(base)
    expected = sum(3.0 * float(strict_shift_loss(logits[rows], unpatched[rows], ids[rows]))
                   for rows in ([i for i, g in enumerate(row_groups) if g == group]
                                for group in ("strict-one", "strict-all")))
    term = unchanged_output_loss(cfg, model, base, logits, row_groups, unpatched=unpatched)
    assert float(term) == pytest.approx(expected, rel=1e-5) and expected > 0
    strict = {}
    for weight in (0.0, 100.0, 200.0):
        torch.manual_seed(0)
        cfg = SIITConfig(task="docstring", batch=4, threads=1, strict_all=True, strict_shift_weight=weight)
        model = build_model(cfg)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        strict[weight] = train_step(cfg, model, optimizer, train_tokenizer(), 0)["strict"]
    assert strict[100.0] > strict[0.0] + 1e-6
    assert strict[200.0] - strict[0.0] == pytest.approx(2 * (strict[100.0] - strict[0.0]), rel=1e-3)
    with pytest.raises(ValueError, match="strict_shift_weight must be >= 0"):
        SIITConfig(task="docstring", strict_shift_weight=-1.0)


def test_name_spread_loss_is_the_mean_squared_excess_cosine_of_centred_embeddings_over_distinct_pairs():
    """Ours (--name-spread-weight): three names whose centred embeddings have cosines 0.8, -1 and -0.8,
    under a large shared offset that the centring removes: with margin 0.2 the loss is mean(0.6², 0, 0) = 0.12
    (not centred, the offset makes every cosine ~1; the diagonal counted, or the margin added, it is larger).
    The option is refused below 0 and for an entry without argument names, and adds its weighted term to a
    step."""
    from training.train_siit import SIITConfig, build_model, name_ids, name_spread_loss, train_step
    from training.train_siit import tokenizer as train_tokenizer

    cfg = SIITConfig(task="docstring", batch=2, threads=1)
    model = build_model(cfg)
    d = model.cfg.d_model
    a, b = torch.zeros(d), torch.zeros(d)
    a[0], a[1] = 1.0, -1.0
    b[2], b[3] = 1.0, -1.0
    ids = torch.tensor([5, 6, 7])
    with torch.no_grad():
        model.W_E[ids] = 3.0 + torch.stack([a, 0.8 * a + 0.6 * b, -a])
    assert float(name_spread_loss(model, ids, 0.2)) == pytest.approx(0.36 / 3, rel=1e-5)
    assert float(name_spread_loss(model, ids, 0.9)) == 0.0
    with pytest.raises(ValueError, match="name_spread_weight"):
        SIITConfig(task="docstring", name_spread_weight=-1.0)
    with pytest.raises(ValueError, match="argument names"):
        SIITConfig(task="ioi", name_spread_weight=1.0)
    tok = train_tokenizer()
    assert [tok.decode([int(i)]) for i in name_ids(tok, ["data", "name"])] == [" data", " name"]
    torch.manual_seed(0)
    on = SIITConfig(task="docstring", batch=2, threads=1, name_spread_weight=4.0)
    model = build_model(on)
    terms = train_step(on, model, torch.optim.SGD(model.parameters(), lr=0.0), tok, 0)
    weighted = terms["task"] + on.iit_weight * terms["iit"] + on.strict_weight * terms["strict"]
    assert terms["spread"] > 0 and terms["loss"] == pytest.approx(weighted + 4.0 * terms["spread"], rel=1e-5)
    ids = name_ids(tok, on.train_split.variables)
    model.zero_grad()
    name_spread_loss(model, ids, 0.2).backward()  # the penalty reaches the names' embeddings
    assert model.W_E.grad[ids].abs().sum() > 0 and not model.W_E.grad[:ids.min()].any()


def test_add_qk_norm_scales_each_layers_queries_and_keys_to_their_mean_rms(tokenizer):
    """Ours (--qk-norm with --init-from weights without query/key norms): each layer's query and key scales
    are that layer's mean per-vector RMS of the raw queries / keys (measured here on the same prompts,
    independently), so the normalised vectors keep their average size; weights that have the norms, or a model
    without them, are left alone."""
    from training.train_siit import SIITConfig, add_qk_norm, build_model, parse_args
    from training.train_siit import tokenizer as siit_tokenizer

    torch.manual_seed(0)
    cfg = SIITConfig(task="docstring", threads=1, qk_norm=True)
    plain, normed = build_model(SIITConfig(task="docstring", threads=1)), build_model(cfg)
    weights = {k: v.clone() for k, v in plain.state_dict().items()}
    for layer in range(plain.cfg.n_layers):  # keys and queries of different sizes in each layer
        weights[f"blocks.{layer}.attn.W_Q"] *= 3 + layer
        weights[f"blocks.{layer}.attn.W_K"] *= 0.5
    plain.load_state_dict(weights)
    converted = add_qk_norm(weights, normed, siit_tokenizer(), cfg, n=32)
    tokens = cfg.entry.sample_pairs(siit_tokenizer(), cfg.train_split, 32, cfg.seed, "iit").base.tokens
    _, cache = plain.run_with_cache(tokens)
    d_head = plain.cfg.d_head
    for layer in range(plain.cfg.n_layers):
        for kind in ("q", "k"):
            raw = cache[f"blocks.{layer}.attn.hook_{kind}"]
            rms = (torch.linalg.vector_norm(raw, dim=-1) / d_head ** 0.5).mean()
            scale = converted[f"blocks.{layer}.attn.{kind}_norm.w"]
            assert scale.shape == (d_head,), (layer, kind)
            assert torch.allclose(scale, rms.expand(d_head), rtol=1e-4), (layer, kind)
        q_scale, k_scale = (converted[f"blocks.{layer}.attn.{kind}_norm.w"][0] for kind in ("q", "k"))
        assert q_scale > 4 * k_scale
    normed.load_state_dict(converted)
    assert normed.cfg.use_qk_norm and parse_args(["--task", "docstring", "--qk-norm"])[0].qk_norm
    assert add_qk_norm(converted, normed, siit_tokenizer(), cfg) is converted
    assert add_qk_norm(weights, plain, siit_tokenizer(), cfg) is weights


def test_widen_heads_keeps_the_models_outputs_and_leaves_the_new_dimensions_trainable(tokenizer):
    """Ours (--d-head with --init-from narrower weights): the widened model's logits equal the narrow one's
    (the new query and output dimensions are zero, the old queries scaled for the larger attention scale —
    without that scaling the logits move); the new keys and values are not zero, so gradients reach the new
    query and output weights; rotary positions still cover the old dimensions only; narrowing is refused."""
    from training.train_siit import SIITConfig, build_model, parse_args, widen_heads

    torch.manual_seed(0)
    narrow = build_model(SIITConfig(task="docstring", threads=1))
    wide = build_model(SIITConfig(task="docstring", threads=1, d_head=32))
    weights = {k: v.clone() for k, v in narrow.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    for layer in range(narrow.cfg.n_layers):  # a random model's queries are small: make attention matter
        weights[f"blocks.{layer}.attn.W_Q"] *= 8
        for bias in ("b_Q", "b_K", "b_V"):  # zero in a fresh model; a trained one's are not
            weights[f"blocks.{layer}.attn.{bias}"] = torch.randn(
                weights[f"blocks.{layer}.attn.{bias}"].shape, generator=generator)
    narrow.load_state_dict(weights)
    wide.load_state_dict(widen_heads(weights, wide))
    assert wide.cfg.rotary_dim == narrow.cfg.d_head == 16 and wide.cfg.d_head == 32
    tokens = get_task("docstring").generate(tokenizer, 8, seed=1, vocabulary="tiny").clean_tokens
    with torch.no_grad():
        expected = narrow(tokens)
        assert torch.allclose(wide(tokens), expected, atol=1e-4)
    unscaled = widen_heads(weights, wide)
    for layer in range(narrow.cfg.n_layers):
        unscaled[f"blocks.{layer}.attn.W_Q"] = unscaled[f"blocks.{layer}.attn.W_Q"] / 2 ** 0.5
    wide.load_state_dict(unscaled)
    with torch.no_grad():
        assert (wide(tokens) - expected).abs().max() > 1e-2
    widened = widen_heads(weights, wide)
    new_keys, new_values = widened["blocks.0.attn.W_K"][..., 16:], widened["blocks.0.attn.W_V"][..., 16:]
    assert new_keys.std() > 0 and new_values.std() > 0
    cfg, _ = parse_args(["--task", "docstring", "--d-head", "32", "--widen-std", "0.1"])
    wider = widen_heads(weights, wide, std=cfg.widen_std)["blocks.0.attn.W_K"][..., 16:].std()
    assert cfg.d_head == 32 and float(wider) == pytest.approx(0.1, rel=0.05)
    assert not widened["blocks.0.attn.W_Q"][..., 16:].any() and not widened["blocks.0.attn.W_O"][:, 16:].any()
    for name in ("W_Q", "b_Q"):  # the queries carry the scale, the keys do not
        scaled = weights[f"blocks.1.attn.{name}"] * 2 ** 0.5
        assert torch.allclose(widened[f"blocks.1.attn.{name}"][..., :16], scaled)
    assert torch.equal(widened["blocks.1.attn.W_K"][..., :16], weights["blocks.1.attn.W_K"])
    assert widen_heads(weights, narrow) is weights
    with pytest.raises(ValueError, match="cannot widen"):
        widen_heads(widened, narrow)
    with pytest.raises(ValueError, match="d_head 8"):
        SIITConfig(task="docstring", d_head=8)


def test_keep_qk_and_train_only_hold_what_they_name_through_real_training(tmp_path, monkeypatch):
    """Ours (--keep-qk): a real training run (one step at a large learning rate, so AdamW's step and weight
    decay move every trained parameter) leaves head 2.0's W_Q, W_K, b_Q, b_K exactly at their initial values,
    while head 2.1's query and head 2.0's value still train (a restore of the wrong head, of weights without
    biases, or none at all fails); an unknown head is refused in one line. --train-only: a run from those
    weights moves mlp2's parameters and nothing else; a prefix that names no parameter, or no --init-from, is
    refused."""
    import training.train_siit as train_siit
    from training.train_siit import SIITConfig, build_model, parse_args, train

    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    (models / "saelab-tiny").symlink_to(train_siit.data_dir() / "models" / "saelab-tiny")
    monkeypatch.setattr(train_siit, "ROOT", tmp_path)
    monkeypatch.setattr(train_siit, "data_dir", lambda: tmp_path / "data")
    cfg = SIITConfig(task="docstring", name="kept", batch=2, threads=1, lr=50.0, warmup_steps=1,
                     eval_every=1000, time_limit_min=1e-6, keep_qk=("2.0",))
    torch.manual_seed(cfg.seed)
    start = build_model(cfg).state_dict()
    train(cfg)
    trained = train_siit.load_model(str(models / "kept")).state_dict()
    for kind in ("W_Q", "W_K", "b_Q", "b_K"):
        name = f"blocks.2.attn.{kind}"
        assert torch.equal(trained[name][0], start[name][0].half().float()), kind
    for name, head in (("blocks.2.attn.W_Q", 1), ("blocks.2.attn.W_V", 0)):
        assert not torch.allclose(trained[name][head], start[name][head], atol=1e-2), name
    assert parse_args(["--task", "docstring", "--keep-qk", "2.0,1.3"])[0].keep_qk == ("2.0", "1.3")
    model = build_model(cfg)  # the kept slices' gradients are zero before clipping sees them
    train_siit.KeptQK(model, ("2.0",))
    model(torch.randint(0, 50, (2, 8))).logsumexp(-1).sum().backward()
    grad = model.blocks[2].attn.W_Q.grad
    assert not grad[0].any() and grad[1].any() and not model.blocks[2].attn.b_K.grad[0].any()
    # --train-only: the same run from those weights, mlp2 alone trains; every other parameter is unchanged
    only = dataclasses.replace(cfg, name="only", keep_qk=(), train_only=("blocks.2.mlp",),
                               init_from=str(models / "kept"))
    train(only)
    again = train_siit.load_model(str(models / "only")).state_dict()
    moved = {name for name in again if not torch.equal(again[name], trained[name])}
    assert moved and all(name.startswith("blocks.2.mlp.") for name in moved), moved
    argv = ["--task", "docstring", "--init-from", "x", "--train-only", "blocks.2.mlp,unembed"]
    assert parse_args(argv)[0].train_only == ("blocks.2.mlp", "unembed")
    with pytest.raises(ValueError, match="give --init-from"):
        SIITConfig(task="docstring", train_only=("blocks.2.mlp",))
    with pytest.raises(ValueError, match="--train-only blocks.9: no parameter"):
        train(dataclasses.replace(only, name="bad", train_only=("blocks.9",)))
    with pytest.raises(ValueError, match="--keep-qk 3.0: not a head"):
        SIITConfig(task="docstring", keep_qk=("3.0",))


@needs_model
def test_the_shipped_mlp2_edit_scales_its_output_about_its_mean_at_end(model, tokenizer):
    """The bundled weights' last step (benchmarks/results/siit_docstring_probes/shrink_mlp2.py):
    mlp2(x) -> 0.6 mlp2(x) + 0.4 E[mlp2 at END] against the refit weights it started from, checked
    independently of the script: W_out is 0.6 × the old one, every other weight is unchanged, and on the
    script's prompts mlp2's mean output at END is the old one (a b_out shift of 0.6 instead of 0.4, none, or
    the mean taken over every position each move it past the bound; checked by hand)."""
    old = load_model(str(Path(__file__).resolve().parent.parent / "benchmarks" / "results"
                         / "siit_docstring_l2refit_weights"))
    new_state, old_state = model.state_dict(), old.state_dict()
    assert torch.allclose(new_state["blocks.2.mlp.W_out"], 0.6 * old_state["blocks.2.mlp.W_out"],
                          atol=1e-3)
    edited = {"blocks.2.mlp.W_out", "blocks.2.mlp.b_out"}
    assert all(torch.equal(new_state[k], old_state[k])
               for k in new_state if k not in edited and k in old_state)
    rows = SHIPPED.sample_pairs(tokenizer, SHIPPED.train_split(), 2000, 55_555, "task").base
    ends = torch.arange(len(rows.end)), rows.end
    means = []
    for weights in (old, model):
        _, cache = weights.run_with_cache(rows.tokens, names_filter="blocks.2.hook_mlp_out")
        means.append(cache["blocks.2.hook_mlp_out"][ends].mean(0))
    gap = (means[0] - means[1]).abs().max()
    assert gap < 0.02 * means[0].abs().max(), gap
