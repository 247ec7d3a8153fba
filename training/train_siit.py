"""Train a model with strict interchange intervention training (SIIT; Gupta et al. 2024, InterpBench) on a task's
high-level causal model (`saelab.circuits.siit.siit_task`: IOI → saelab-ioi-siit, docstring-self-fallback →
saelab-docstring-siit; every other entry has its own default output name).

Losses per step, each a cross-entropy at the answer position against the task's high-level model:
  task   : no intervention;
  IIT    : one aligned head patched at its named position from a same-layout source prompt; the target is the
           high-level output under the same intervention;
  strict : non-aligned units (other heads, MLPs, aligned heads at other positions) patched from a source, one at
           a time or a random half at once; the target is the unchanged high-level output. Ours beside it
           (off by default): KL to the unpatched output (--strict-kl-weight) and, on the one-unit rows, the
           scale-free change of the candidate tokens' logits (--strict-logit-weight; IOI: IO and S;
           docstring: the signature arguments). Ours too, off by default: on the interchange rows, the aligned
           heads' attention to the key the high-level model says they read under that intervention
           (--iit-attention-weight). And (docstring, off by default) a penalty on training names whose centred
           input embeddings are closer than a margin (--name-spread-weight): the interchange misses were false
           matches between such names.
  path-strict (ours, off by default; --path-strict-weight): for each stated head -> head edge U -> V.v (.q, .k),
           U patched at its aligned position from a source and V's value vectors (queries, keys) frozen at the
           base's clean ones at every position; the target is the unchanged output (cross-entropy, plus the KL
           and logit terms above with their weights, the logit term on every such row). With V.v frozen, U's
           change can only reach the output through paths the circuit does not state (U -> logits, U -> another
           head or an MLP), which node interventions cannot tell from the stated chain.
The entry's held-out splits are never used in training or stopping (unless --train-on names them). Resumes from
runs/NAME/checkpoint.pt; stops when every dev check is ≥ --stop-at twice in a row, or at the time limit. Then
writes data/models/NAME (float16 weights, config saelab section, MODEL_CARD.md) and data/circuits/NAME/TASK.json
with the construction checks measured on the saved model.

  PYTHONPATH=. .venv/bin/python training/train_siit.py --task ioi          # train (or resume), then finalise
  PYTHONPATH=. .venv/bin/python training/train_siit.py --task docstring-self-fallback --d-head 32 --finalize-only
"""

import argparse
import dataclasses
import functools
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

from saelab.circuits.baselines import ov_norms
from saelab.circuits.graph import Graph, Node
from saelab.circuits.ground_truth import edge_effects
from saelab.circuits.patching import metric_means, node_effects
from saelab.circuits.problem import problem_from_task
from saelab.circuits.siit import (
    SIIT_TASKS,
    STATED_EDGE_MIN,
    STRICT_GROUPS,
    UNSTATED_PATH_MAX,
    Patch,
    SIITTask,
    Target,
    edge_check,
    frozen_values,
    interchange_accuracy,
    interchange_accuracy_two,
    interchange_pairs,
    non_aligned_units,
    patch_unit,
    patched_end_logits,
    patched_logits,
    path_edges,
    siit_task,
    source_cache,
    strict_accuracy,
    strict_accuracy_per_unit,
    strict_logit_loss,
    strict_shift_loss,
    subset_rows,
    target_loss,
    task_accuracy,
)
from saelab.models import load_model, save_model
from saelab.models.tokenizer import load_tokenizer
from saelab.paths import data_dir
from saelab.tasks.registry import get_task

log = logging.getLogger("train_siit")
ROOT = Path(__file__).resolve().parent.parent

DESIGN_HISTORY = {
    "ioi-inhibition": (
        "Ours, after saelab-ioi-siit: there every variable carries the answer (a relay), so node interventions "
        "cannot tell the stated chain from parallel paths, and path patching found 1.1 and 2.3 each writing the "
        "answer (benchmarks/results/siit_ioi_path_strict.md). Here DUP and S-INH carry the subject and NAME "
        "reads the prompt's names, skipping S-INH, through its query (Wang et al.'s S-inhibition). A first run "
        "from random weights without DUP's attention target learned the relay's shortcut (head 0.2 at S2 gave "
        "0.86 of its attention to the indirect object) and DUP / S-INH interchange stayed at a coin flip "
        "(0.48 / 0.48 at step 2,500, dev pairs); with head 0.2 at S2 pointed at S2 itself it passed 0.99 by "
        "step 1,500. Fine-tuned with the strict, KL, logit and path-strict terms (stages B-C, 2026-12-01, every "
        "split trained on) it passed interchange (>= 0.997) and its stated edges (>= 0.92 of the gap) but failed "
        "the all-together check (0.53 of the gap: three layer-0 heads each copy the names, redundantly, and NAME "
        "reads the copies), the single-node check (0.031) and the unstated-edge bound (0.106); not shipped. See "
        "benchmarks/results/siit_ioi_inhibition.md."
    ),
    "ioi-copies": (
        "Ours, after the inhibition design (ioi-inhibition; benchmarks/results/siit_ioi_inhibition.md): "
        "there NAME read the names from three layer-0 heads' redundant copies at the name slots, which the single-"
        "unit strict loss cannot see (all non-circuit nodes together 0.53 of the gap). As the docstring design did "
        "with its head 0.0, the copy is a stage of its own here: SLOT1 / SLOT2 = head 0.0 at the first / second "
        "name slot, the name there; NAME reads its keys and values from them (stated edges 0.0 -> 2.3.k and "
        ".v), so interchange on the copies makes one head's copy decisive. Strict rows patching a layer's "
        "non-aligned units together (--strict-layer, ours) did not remove the inhibition design's copies, from "
        "its stage A (interchange fell, NAME 0.94 -> 0.74 in 1,000 steps) or from random weights (strict "
        "all-at-once 0.008 at step 750). Stage A (random weights, attention targets) reached dev interchange "
        ">= 0.97 and strict all-at-once 0.90 in 2,020 steps, with the layer-0 redundancy gone (0.1 and 0.3 together "
        "0.006 of the gap) but the MLPs at 0.16-0.22 each and 1.1 -> logits at 0.52; stage B (every split, the "
        "strict KL and logit terms, path-strict 0.5) brought every node check and the stated edges into bounds "
        "on dev prompts by step 889 (these weights), leaving 1.1 -> logits at 0.064. Stage C (path-strict 2, lr "
        "5e-4, 750 steps) did not lower it (0.071) and raised mlp1 to 0.027, so B's weights were kept. See "
        "benchmarks/results/siit_ioi_copies.md."
    ),
    "ioi": (
        "A first high-level model carried Wang et al.'s positional S-inhibition signal (DUP and S-INH = the slot "
        "of the subject, NAME = the name at the other slot). In three runs (lr 2e-3 and 3e-3, IIT weight 1 and 3, "
        "600-1600 steps) the task reached 0.94-0.99 and NAME interchange 0.39-0.87, but DUP and S-INH interchange "
        "stayed at chance (0.42-0.54): head 0.2 at S2 attended to the indirect object (0.99 of its attention), "
        "and the name mover read it from S2. The high-level model was changed to that relay. "
        "Stage 4 (these weights, a later session): the stage-3 weights failed one check: resample-ablating head "
        "2.0 from the ABC corruption moved the metric by 0.0515 of the gap, and five more non-circuit nodes by "
        "0.021-0.047 (0.1, 2.2, 0.0, mlp2, 2.1). The strict units covered every node at every position; what the "
        "strict losses missed was the size of the shift. The prediction is saturated (clean logit(IO) - logit(S) "
        "9.8), so cross-entropy and KL barely register it (200 prompts: head 2.0 patched from the ABC corruption "
        "moved logit(IO) by +0.45 at a KL of 5e-3), and only a quarter of the strict sources were ABC prompts, "
        "none of them the base's own corruption (same template, order, place and object). Stage 4 adds our strict "
        "logit term (strict_logit_loss on the strict-one rows: the squared change of IO's and S's logits relative "
        "to their mean, over their clean squared size, i.e. mean(dd^2)/mean(d^2), with gradients through the "
        "unpatched run too) and takes half the strict sources from the base's ABC corruption; from the stage-3 "
        "weights, lr 3e-4, strict 3, KL 3, logit term 50, 5197 steps in 22 min (run as --name saelab-ioi-siit-logit, "
        "then copied here and finalised under this name; stages 1-3 ran before the strict sources changed, so their "
        "commands rerun now draw half their strict sources from the ABC corruption). Checks stage 3 -> 4: task "
        "accuracy 0.9975 -> 1.0; largest single non-circuit node 0.0515 (2.0) -> 0.0168 (2.0); all together "
        "0.0622 -> 0.0078; smallest circuit node 0.7216 -> 0.6238; interchange per node on every split >= 0.99 "
        "-> >= 0.982 (S-INH, held-out templates); InterpBench per-unit strict mean >= 0.9967 -> >= 0.9997. Off the training "
        "generator (benchmarks/bench_heldout.py, layouts and words no generator draws) IOI accuracy fell from "
        "0.640 to 0.546 (held-out layouts 0.649 -> 0.578, held-out words 0.975 -> 0.987); no stage since stage 2 "
        "holds out anything, and none reaches 0.95 there. The stated edges are not what either stage implements (path patching, 200 "
        "prompts, seed 777, effect over the gap, stage 3 -> 4): 1.1->2.3.v 0.184 -> 0.023; outside the edge list "
        "1.1->logits 0.740 -> 0.577 and 0.2->2.3.v 0.199 -> 0.445; 2.3->logits 0.647 -> 0.632, 0.2->1.1.v "
        "0.557 -> 0.552. Heads 1.1 and 2.3 each write the answer to the logits, and 2.3 reads it from 0.2 more "
        "than from 1.1: parallel paths, not the serial relay. SIIT's node interventions with top-1 targets do not "
        "tell the two apart (patching either head alone flips the top-1); edge metrics against this circuit "
        "file's edges score against the intended, not the implemented, data flow. Three "
        "earlier tries of the continuation were stopped (measured on 200 prompts, seed 4242): an absolute logit "
        "term (unnormalised, every strict row, weight 3) at lr 1e-3 oscillated (step 1233: IOI accuracy 0.87, "
        "head 0.1 at 0.10 of the gap) and at lr 3e-4 shrank every logit (step 410: clean metric 9.3 -> 2.9, "
        "accuracy 0.885); the scale-free term on every strict row (weight 20, sources as before) moved between "
        "0.036 and 0.096 of the gap (mlp2 or head 2.0) over 2224 steps. Record: "
        "benchmarks/results/siit_ioi_strict_logit.md."
        " Edge check (ours, a later session; in the card above): stage 4 fails it (1.1->2.3.v 0.022, 1.1->log"
        "its 0.582, 0.2->2.3.v 0.446 of the gap). Continuations with our path-strict term (--path-strict-weig"
        "ht: a stated edge's sender patched with its receiver's value vectors frozen at the base's, output un"
        "changed) and an attention target (2.3 at END -> END) made 2.3 read 1.1 (1.1->2.3.v 0.629, 0.2->2.3.v"
        " 0.030) but stopped 2.3 writing the answer (2.3->logits 0.048, its node effect 0.152, NAME interchan"
        "ge ~0.25; mlp2 0.032), so they were not shipped; a further run with IIT weight 3 reached 2.3 node 0.296, "
        "2.3->logits 0.189, 1.1->2.3.v 0.735, 1.1->logits 0.221, NAME interchange 0.56-0.58, mlp1 0.0217, also not "
        "shipped. Record: benchmarks/results/siit_ioi_path_strict.md."
    ),
    "docstring": (
        "Designed from the IOI lesson (a stage must be something one head can compute from what it can attend "
        "to): PREV is a previous-argument head (attend two tokens back from a signature argument), LAST a head "
        "at the final :param that attends to the token after the previous 'param', MOVER an induction-style "
        "match of LAST (query) against PREV (key) that copies the matched argument's own token. Every "
        "variable is a token, so interventions that break the match need a defined output: the method's name "
        "(a fixed key the mover can fall back to). Run 1 used learned absolute positions (lr 2e-3, batch 24 per "
        "group): after 700 steps (17 min on the shared machine) task top-1 was 0.35-0.41, interchange "
        "PREV/LAST/MOVER 0.20/0.21/0.11 and strict 0.0; at step 696 head 0.1 at C_def gave 0.04 of its attention "
        "to the previous argument, 1.2 at END 0.01 to the last documented argument and 2.0 at END 0.01 to C_def: "
        "no stage had formed. Run 2 (the shipped model's first stage) uses rotary positions, where 'two tokens back' or 'the most "
        "recent' is one query/key bias rather than a map the learned position embeddings must first form. In "
        "its first 478 steps (no attention loss) no stage formed either (step 429: 0.09 / 0.00 / 0.01 of the "
        "three heads' attention on their targets; task top-1 0.22, interchange at most 0.2), so from step 478 the "
        "run was resumed with our attention loss (--attention-weight 1): by step 823 heads 0.1 and 1.2 gave 0.99 "
        "of their attention to their targets and 2.0 gave 0.41 to C_def; task top-1 then rose from 0.35 (step "
        "1000) to 0.93-0.96 (steps 1800-2300), interchange PREV/LAST/MOVER to about 0.64/0.65/0.94 on dev "
        "prompts, while strict accuracy (every non-aligned unit patched at once) stayed 0.0 to the end. The run "
        "stopped at its 56-min time limit (step 2357); it was resumed three times from its checkpoint: at step "
        "478 to add the attention loss, at 881 and 1291 to change the time limit (47, then 56 min). The "
        "construction does not hold: layer-0 heads 0.0 and 0.2 carry much of the effect (resample-ablating them "
        "moves the metric by 0.63 and 0.53 of the gap), and the edge input->1.2.v carries almost none, so LAST "
        "reads the last documented name through them; PREV and LAST interchange stay below 0.95. "
        "Diagnosis (a later session): the strict loss is applied and is InterpBench's in kind. Every head, every "
        "MLP and the aligned heads at their other positions are non-aligned units; each strict-one row patches "
        "one randomly chosen unit (InterpBench's 'individual' sampling), with half the strict weight; the other "
        "half goes to our strict-many rows (a random half of all units at once). The 0.0 above is our "
        "strict_all_units (every unit at once); InterpBench's strict accuracy averages single-unit patches: "
        "0.82 / 0.76 / 0.82 on the three splits, worst unit head 0.0 (0.17 / 0.16 / 0.20). No bug was found; "
        "the cause is the mechanism the runs found: heads 0.0 and 0.2 write the name's identity at the name "
        "positions, and 1.2 and 2.0 move that copy rather than the embedding. Patching head 0.0 alone at B_doc "
        "(from a prompt with other names) leaves task top-1 at 0.41 (0.2: 0.58), at C_def at 0.46 (0.53), while "
        "1.2's attention to B_doc stays 0.996-0.998; zeroing both heads' W_O drops task top-1 from 0.92 to 0.03 "
        "(200 fresh prompts). Two continuations from these weights with a stronger strict term (lr 1e-3, "
        "attention loss 1; run a: strict weight 3 plus our KL term 3; run b: strict 6, KL 6, IIT 3; 445 and 469 "
        "steps in 26 min on a shared machine at load 9-14) did not remove it and lost interchange: run a "
        "task accuracy 0.9475, largest non-circuit node 0.0 at 0.65 of the gap, all together 0.99, "
        "PREV/LAST/MOVER interchange 0.46/0.52/0.89 on fresh prompts, InterpBench strict mean 0.87 (worst 0.22); "
        "run b 0.92, 0.63, 0.97, 0.38/0.47/0.82, 0.83 (0.23). Run 2's weights were kept then. What the diagnosis "
        "suggests for a next design: the value paths of LAST and MOVER read the name from layer-0 heads, so "
        "either align that layer-0 name copy as a stage of its own or give the stages a wider OV path (d_head 16 "
        "here) and train from random initialisation with single-unit strict sampling from the start. "
        "Run 3 (a later session; then the shipped saelab-docstring-siit) made head 0.0's name copies stages of "
        "their own (today's `--task docstring`; the design of runs 1-2 is `--task docstring-three-stage`): "
        "B_NAME = head 0.0 at B_doc, LAST's value; C_NAME = head 0.0 at C_def, MOVER's value when it matches "
        "the answer; circuit 0.0, 0.1, 1.2, 2.0 with edges 0.0->1.2.v and 0.0->2.0.v. It fine-tuned run 2's "
        "weights (lr 1e-3, attention loss 1, strict 2, IIT 2, our strict KL term 2 from step 1098, when mlp2 "
        "had become the largest non-circuit node) for 2901 steps (2415 s; not from random initialisation, for "
        "lack of time). Against run 2, on the units outside both designs' circuits (effect / gap): head 0.2 "
        "0.53 -> 0.017, head 0.3 0.18 -> 0.006, mlp0 0.078 -> 0.014, mlp2 0.143 -> 0.073, but mlp1 0.043 -> "
        "0.056 (worse). Head 0.0, run 2's largest non-circuit node (0.63), is inside this design's circuit "
        "and its effect grew to 0.98 of the gap: scored against run 2's three-head circuit, this model would "
        "fail the single-node check at about 0.98, worse than run 2. Against its own circuit: largest "
        "non-circuit node mlp2 at 0.073 (target < 0.02), all non-circuit together 0.17 (run 2 against its "
        "own: 0.99; different sets of units), smallest circuit node 0.95 (0.80); task accuracy 0.9625 -> "
        "0.9925; PREV/LAST interchange 0.67/0.68 -> 0.87/0.86 on fresh training-distribution prompts "
        "(0.81-0.93 on held-out layouts); held-out-layout top-1 0.896 -> 0.926; strict all-at-once 0.0 -> "
        "0.90-0.96 and InterpBench strict mean 0.82 -> 0.93-0.98 (both over each design's own outside units). "
        "It passes the same 2 of 6 construction checks; it was shipped in place of run 2 because its stated "
        "circuit describes the model far better (0.17 of the gap outside it, against 0.99 outside run 2's "
        "stated circuit), which is what a circuit table scored against it needs. PREV/LAST/B_NAME interchange "
        "plateaued at about 0.8-0.85 from step 700 on, most misses on the rows whose high-level output is the "
        "method's name (no match), the fallback the mover must learn; a next run would redesign that fallback "
        "or train this design from random initialisation. "
        "Run 4 (a later session; then the shipped saelab-docstring-siit) keeps run 3's design and fine-tunes its weights "
        "with the IOI stage-4 lesson: half the strict rows' sources are now the base's own random_random "
        "corruption (corrupted_spec; before, every strict source had other names, method and prefix included, "
        "so the no-match state the corruption puts mlp1 and mlp2 in was never a strict source), and our scale-free "
        "strict logit term on the strict-one rows over the signature arguments (the metric's candidates; padded "
        "ids ignored). Diagnosis before it (shipped run-3 weights, 300 dev pairs): interchange misses on PREV, "
        "LAST and B_NAME were mostly on rows whose high-level output is the method's name (fallback rows: "
        "accuracy 0.82-0.84 against 0.91-0.93 on rows with a match), and the miss was another argument of the "
        "base, not its answer; head 2.0 wrote the method's name on those rows (direct logit attribution +4.7, "
        "mlp2 +0.5) while giving 0.016 of its attention to the method's name; mlp1 and mlp2's effect was at END "
        "(mlp2 0.081 of the gap, mlp1 0.047 of 0.057; 300 prompts, seed 1234). Training: trained as --name "
        "saelab-docstring-siit-logit from run 3's weights (lr 3e-4, attention 1, strict 3, IIT 2, KL 3, logit "
        "term 50, one thread, 2663 steps in 62 min); from step 364 to 1080 with our --iit-attention-weight 1 "
        "(MOVER's attention to its key under an intervention: the matched argument, or the method's name when "
        "none matches), dropped because in 716 steps MOVER's attention to the method's name on fallback rows "
        "rose only from 0.015 to 0.06 and interchange did not move; then its run directory and weights were "
        "copied here and finalised under this name (the command above). Dev checks during the run (200 prompts, "
        "seed 4242, effect / gap; run 3: mlp2 0.078, all non-circuit 0.174): step 661 0.045 / 0.128 (a first process without the IIT attention term, left "
        "running by mistake beside the resumed one; the shipped weights do not descend from it), 923 0.032 / 0.097, 1596 0.029 / 0.106, 2015 0.024 / 0.109. Run 3 -> run 4 on the seed-777 checks: task accuracy "
        "0.9925 -> 1.0; largest non-circuit node mlp2 0.0731 -> 0.0295 (mlp1 0.0555 -> 0.0166, head 0.2 0.0173 "
        "-> 0.0165, mlp0 0.0140 -> 0.0141); all non-circuit together 0.1716 -> 0.1092; smallest circuit node "
        "0.9461 -> 0.9543; interchange min over nodes and splits 0.81 -> 0.848 (PREV/LAST/B_NAME 0.85-0.89, "
        "still the fallback rows); task top-1 on every split min 0.926 -> 0.96 (held-out layouts), which now "
        "passes. 3 of 6 construction checks pass (run 3: 2), and the three that fail are each closer to their "
        "bound. Record: benchmarks/results/siit_docstring_run4.md. Run 6 (a later session; then the shipped "
        "saelab-docstring-siit) keeps the design and fine-tunes run 4's weights with three terms of ours aimed at "
        "the failing checks: --strict-focus mlp2,mlp1,0.2,mlp0 (half the strict-one rows patch one of the four "
        "units the single-node check found largest; before, about 1.6 rows a step patched mlp2), --strict-all (a "
        "strict group whose rows patch every non-aligned unit at once, as the all-together check does, with the "
        "strict logit term), and the IIT attention term with a new target on no-match rows (any position but the "
        "signature's arguments; run 4's MOVER read the method's name from the signature's commas, '(' and "
        "'self', hardly from the method's position (0.025 of its attention), which the old target asked for); "
        "IIT weight 3 (was 2). "
        "Trained as --name saelab-docstring-siit-run6 (lr 3e-4, one thread on a shared 2-core machine; 1756 steps "
        "in 1688 s, stopped by hand for a continuation), then its checkpoint was saved here and finalised (the "
        "command above). Dev checks (200 prompts, seed 4242, effect / gap): run 4 mlp2 0.0248, all together "
        "0.1105; step ~800 mlp1 0.0152 / 0.028; step ~1600 mlp1 0.0153 / 0.0286; step 1756 mlp1 0.0168 / 0.0285; "
        "dev interchange (256 pairs) B_NAME/PREV/LAST 0.81-0.86 against run 4's 0.82-0.89. Diagnosis of the "
        "interchange misses (300 dev pairs of LAST, seed 4321): on run 4 the misses are no-match rows (0.85 "
        "correct; 0.90 on rows with a match; run 6: 0.82 / 0.96) where MOVER attends to an argument (0.78 of its "
        "attention) whose previous argument's input embedding has cosine 0.557 with the source's name (0.082 on "
        "average over the base's arguments; run 6: 0.569 / 0.086): false matches between names the 64-wide "
        "embedding keeps close. A continuation from run 6 with near-miss sources (ours, --near-miss-share 0.5; "
        "its first version renamed the source's B to the name nearest any of the base's arguments, mostly not the "
        "names a false match needs, since corrected) ran 1000 steps (16 min): dev interchange 0.79-0.82 at step "
        "1000 (0.78-0.79 at step 800) and the losses spiked, so it was stopped and not shipped; with the corrected "
        "near-miss sources (run 8, ~1800 steps from run 6) dev interchange drifted to 0.78-0.79 and the misses' "
        "cosine did not fall (0.596), so neither was shipped. Record: benchmarks/results/siit_docstring_run6.md."
    ),
}


DESIGN_HISTORY["ioi-even-norms"] = (
    "Ours (2026-12-01): saelab-ioi-siit's design, alignment and circuit, its weights trained on so that the "
    "heads' OV norms (what `weight_norm` reads) do not rank the circuit heads first. On saelab-ioi-siit the circuit heads' OV maps are the largest "
    "(visible norms 16.0 / 22.2 / 27.8 for 0.2 / 1.1 / 2.3, every other head 3.6-11.9; the variance over heads of "
    "log norm 0.395, saelab-tiny's 0.060), so `weight_norm` scores node AUC 1.000 there. Four continuations "
    "from its stage-4 weights, each chosen on dev checks (200 prompts, seed 4242; 500 pairs, seed 10,000): "
    "(1) `--head-norm-weight 10` (a penalty on that variance), 1,291 steps: variance 0.085; (2) weight 30 at lr "
    "1e-3, to step 866: variance 0.0056, but the circuit heads were still the largest of their layers (AUC "
    "1.000) and dev single non-circuit 0.044 (2.0), NAME interchange 0.884; (3) `--even-head-norms` (a "
    "constraint: after every step each head's W_O rescaled so every visible OV norm is the geometric mean) with "
    "IIT weight 3, to step 641: interchange >= 0.974, single non-circuit 0.040 (2.0), all together 0.050; (4) "
    "the same with `--strict-shift-weight 20 --strict-focus 2.0,2.1,2.2`, to step 421 (these weights): dev "
    "single non-circuit 0.0248 (0.3), all together 0.0168, smallest circuit node 0.613, interchange >= 0.988. "
    "Continuing (4) to step 993, or from it at lr 1e-4 with either focus, kept the largest single non-circuit "
    "node at 0.025-0.047 on dev: with every head's OV map as large as the circuit heads', the strict losses did "
    "not bring any one non-circuit head below 0.02 of the gap in this budget. Tried and not kept: a jump start "
    "(every non-circuit head's W_O scaled up to the circuit heads' mean norm, then repaired: NAME interchange "
    "0.054 after 353 steps). Saved with `--balance-vo` (function-preserving: each head's W_V, b_V and W_O "
    "rescaled so that every W_O has the same norm; saelab-ioi-siit's circuit heads had the largest W_O too). "
    "Node AUC of weight statistics over the 12 heads, saelab-ioi-siit -> these weights: raw OV norm (weight_norm's "
    "score) 1.000 -> 0.741 (each layer's circuit head is still its largest by the raw norm, through the "
    "LayerNorm weights); visible OV norm and W_O norm 1.000 -> equal for every head (a ranking of their "
    "float16-rounded ties: 0.333 and 0.889); but W_V's norm alone 0.926 -> 0.963 and b_V's 0.407 -> 0.741 (the "
    "OV spread moved into W_V and b_V): weight_norm is weakened, not defeated, and other weight statistics still "
    "rank the circuit heads. The last stage ran as `--name saelab-ioi-siit-eqnorm-G` (flags as in the Training "
    "line, without --balance-vo) and was stopped by hand after step 993; its step-421 checkpoint became this "
    "model's run state and weights. "
    "Record: benchmarks/results/siit_ioi_even_norms.md. The history of saelab-ioi-siit, whose stage 4 these "
    "weights start from: " + DESIGN_HISTORY["ioi"]
)
DESIGN_HISTORY["docstring-self-fallback"] = DESIGN_HISTORY["docstring"] + (
    " The self-fallback design (2026-12-01; today's shipped saelab-docstring-siit, `--task "
    "docstring-self-fallback`): the same alignment, circuit and edges, but when an intervention leaves no "
    "argument matching, MOVER outputs the signature's 'self' (one token at one position on every prompt) instead "
    "of the method's name; clean prompts always match, so the task and its metric are unchanged. Its weights "
    "came in three steps from run 6, each chosen on dev pairs and prompts (trainer pairs seed 10,000; "
    "construction checks on 200 prompts, seed 4242); step (2)'s seed-777 card had been measured (mlp2 failing "
    "there) before step (3) was tried, so seed 777 is not fresh for the single-node check: (1) run 6's flags "
    "with this design and heads widened to d_head 32 (16 non-rotary dimensions; `--d-head 32 --widen-std 0.1`), "
    "2,621 steps at lr 5e-4 (weights: benchmarks/results/siit_docstring_selfwide_weights); (2) head 2.0's W_Q, "
    "W_K, b_Q, b_K alone refit on frozen upstream for 750 steps (benchmarks/results/siit_docstring_probes/"
    "layer2_qk.py --train-old; dev interchange 0.92-0.93 -> 0.97; weights: benchmarks/results/"
    "siit_docstring_l2refit_weights), which left mlp2 at 0.0186 of the gap on dev (0.0212 on seed 777); "
    "(3) mlp2's output shrunk toward its mean at END, mlp2(x) -> 0.6 mlp2(x) + 0.4 mean (a weight edit, ours; "
    "benchmarks/results/siit_docstring_probes/shrink_mlp2.py): mlp2 is the last unit, so its resample-ablation "
    "effect scales by about alpha by construction (dev 0.0186 -> 0.0111; seed 777 0.0212 -> 0.0126); all "
    "non-circuit 0.0129 -> 0.0054, dev interchange B_NAME / PREV / LAST within 0.004, MOVER 0.966 -> 0.961, "
    "clean metric 7.19 -> 7.14. Interchange is scored against this design's high-level model ('self' on "
    "no-match rows), not run 6's, and MOVER lost against run 6 (card: 1.0 / 0.988 / 0.994 -> 0.96 / 0.906 / "
    "0.946 on train / held-out layouts / descriptions). Three SIIT polishes "
    "of step (2)'s weights tried first did not do it: with head 2.0's query/key held (--keep-qk 2.0) dev "
    "interchange fell to 0.90-0.93 within 230-400 steps; mlp2 alone trained (--train-only blocks.2.mlp) with our "
    "--strict-shift-weight lost task accuracy (top-1 0.97-0.99 at step 100). Record: "
    "benchmarks/results/siit_docstring_self_fallback.md."
)


@dataclass(frozen=True)
class SIITConfig:
    """Model shape and training settings."""

    task: str = "ioi"
    """The SIIT entry (`saelab.circuits.siit.siit_task`): one of `SIIT_TASKS` ("ioi", "docstring", ...)."""
    name: str = ""
    """Output: data/models/NAME, data/circuits/NAME/TASK.json; checkpoints in runs/NAME ("": the entry's model)."""
    n_layers: int = 3
    d_model: int = 64
    n_heads: int = 4
    d_mlp: int = 128
    d_head: int = 0
    """0: d_model // n_heads. Wider (ours, docstring run 10): the heads get content dimensions that rotary
    positions leave alone (rotary_dim stays d_model // n_heads), and `--init-from` weights with narrower heads
    are widened without changing the model's function (`widen_heads`)."""
    widen_std: float = 0.02
    """Standard deviation of the new key and value weights when `widen_heads` widens --init-from weights."""
    qk_norm: bool = False
    """Ours (docstring, 2026-12-01): RMS-normalise every head's query and key (TransformerLens `use_qk_norm`: one
    learned per-dimension scale vector per layer, shared by its heads), so that an attention score depends on the directions of query and key, not on
    how strongly the query's input carries a name. `--init-from` weights without it get the scales that keep
    the scores' average size (`add_qk_norm`)."""
    n_ctx: int = 0
    """0: the entry's."""
    seed: int = 0
    lr: float = 2e-3
    """AdamW peak learning rate (linear warm-up over `warmup_steps`, then constant)."""
    warmup_steps: int = 100
    batch: int = 24
    """Rows per loss group (task, each aligned node, strict ×2)."""
    source_share: float = -1.0
    """Share of the task's second kind of source prompt (IOI: ABC prompts, also as task prompts; docstring: the
    base's names permuted, for PREV and LAST); -1: the entry's default."""
    strict_weight: float = 1.0
    iit_weight: float = 1.0
    attention_weight: float = 0.0
    """Ours, not InterpBench's: on the task rows also −log(attention of each aligned head, from its position, to
    the key position the high-level model says it reads) (`SIITTask.attention_targets`; 0: off)."""
    iit_attention_weight: float = 0.0
    """Ours, not InterpBench's: on the interchange rows also −log(attention of each downstream aligned head to
    the key position the high-level model says it reads under that intervention)
    (`SIITTask.intervened_attention_targets`; docstring: MOVER's matched argument, or, when nothing matches,
    anything but the signature's arguments; 0: off)."""
    strict_kl_weight: float = 0.0
    """Ours, not InterpBench's: on the strict rows also KL(unpatched output ‖ patched output), so that patching a
    non-aligned unit moves the logits, not only the top-1 label (0: off)."""
    strict_logit_weight: float = 0.0
    """Ours, not InterpBench's: on the strict-one rows also `strict_logit_loss` on the entry's candidate tokens
    (IOI: IO and S; docstring: the signature arguments), which sees a logit shift that a saturated
    cross-entropy or KL does not (0: off)."""
    strict_shift_weight: float = 0.0
    """Ours (docstring, 2026-12-01): on the strict-one rows, and apart on the strict-all rows, also
    `strict_shift_loss` (the squared mean signed change of the metric's margin), which the single-node and
    all-together checks measure; with --strict-focus naming one unit at share 1 the strict-one mean is that
    unit's. Needs the entry's candidate tokens (0: off)."""
    path_strict_weight: float = 0.0
    """Ours, not InterpBench's: weight of the path-strict rows (one group per stated head -> head edge, value,
    query or key, `saelab.circuits.siit.path_edges`; 0: off, so earlier stages' commands reproduce)."""
    strict_focus: tuple[str, ...] = ()
    """Ours, not InterpBench's: non-aligned heads and MLPs (node names, e.g. "mlp2", "0.2") that the strict-one
    rows patch more often: a `strict_focus_share` of those rows patch one of them, the rest any unit as before
    (empty: off, so earlier stages' commands reproduce). For the units the single-node check finds largest."""
    strict_focus_share: float = 0.5
    near_miss_share: float = 0.0
    """Ours, not InterpBench's: share of the interchange rows the entry's `near_miss` applies to (docstring:
    B_NAME/LAST/PREV rows whose source uses other names) whose source gets a name near one of the base's in the
    model's current input embedding (0: off)."""
    name_spread_weight: float = 0.0
    """Ours, not InterpBench's: weight of `name_spread_loss` over the training split's argument names (docstring:
    `split.variables`), which pushes apart names whose input embeddings are close (0: off). For the false
    matches the docstring interchange misses are made of (benchmarks/results/siit_docstring_run6.md)."""
    name_spread_margin: float = 0.2
    """Cosine above which a pair of names is penalised by `name_spread_loss`."""
    even_head_norms: bool = False
    """Ours: after every optimizer step, `even_head_norms` (each head's W_O rescaled so that every head's
    visible OV norm is the geometric mean over heads): a constraint, where --head-norm-weight is a penalty."""
    balance_vo: bool = False
    """Ours: `balance_value_output` on the weights before they are saved (function-preserving)."""
    head_norm_weight: float = 0.0
    """Ours, not InterpBench's: weight of `head_norm_spread` (the variance over heads of log visible OV norm),
    which evens out the heads' OV norms so that `weight_norm`'s ranking tells the circuit heads from the rest
    less well (0: off)."""
    strict_all: bool = False
    """Ours, not InterpBench's: a third strict group ("strict-all") whose rows patch every non-aligned unit at
    once, as the all-together construction check and strict_all_units do (sources as the other strict rows';
    with --strict-logit-weight the logit term covers them too). Off: earlier stages' commands reproduce."""
    strict_layer: bool = False
    """Ours, not InterpBench's: a strict group ("strict-layer") whose rows patch every non-aligned unit of one
    randomly chosen layer at once, with the strict logit term: redundant copies within a layer (each alone
    below the single-unit strict loss's notice) move these rows. Off: earlier stages' commands reproduce."""
    eval_every: int = 200
    eval_prompts: int = 256
    stop_at: float = 0.99
    """Stop when task, every interchange and the strict accuracy on dev prompts are all ≥ this, twice running."""
    time_limit_min: float = 60.0
    checkpoint_every_s: float = 120.0
    threads: int = 1
    trained_on: tuple[str, ...] = ()
    """Held-out splits of the entry this run trains on anyway (then they are reported as trained on)."""
    init_from: str | None = None
    """A checkpoint whose weights a fresh run starts from (None: random initialisation, seed `seed`)."""
    train_only: tuple[str, ...] = ()
    """Ours (docstring, 2026-12-01): parameter-name prefixes (e.g. "blocks.2.mlp") of the only parameters that
    train; every other parameter keeps its --init-from value (no gradient, so AdamW neither steps nor decays
    it). Empty: every parameter trains."""
    keep_qk: tuple[str, ...] = ()
    """Ours (docstring, 2026-12-01): heads ("layer.head") whose query and key weights and biases stay as they
    start (`KeptQK`; neither gradient nor weight decay moves them), so a polish aimed at other units cannot
    undo a refit of those heads' matching. Empty: every parameter trains."""

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.d_head and self.d_head < self.d_model // self.n_heads:
            raise ValueError(f"d_head {self.d_head} is below d_model / n_heads ({self.d_model // self.n_heads}); "
                             "use 0 or a wider head")
        if not (0 <= self.source_share < 1 or self.source_share == -1):
            raise ValueError(f"source_share must be in [0, 1) (or -1), got {self.source_share}")
        if not 0 < self.stop_at <= 1:
            raise ValueError(f"stop_at must be in (0, 1], got {self.stop_at}")
        if self.iit_attention_weight and self.entry.intervened_attention_targets is None:
            raise ValueError(f"--iit-attention-weight {self.iit_attention_weight}: the {self.task} entry names no "
                             "attention targets under interventions (SIITTask.intervened_attention_targets); use 0")
        if self.strict_logit_weight < 0:
            raise ValueError(f"strict_logit_weight must be >= 0, got {self.strict_logit_weight}")
        if self.strict_shift_weight < 0:
            raise ValueError(f"strict_shift_weight must be >= 0, got {self.strict_shift_weight}")
        if self.strict_shift_weight and self.entry.candidates is None:
            raise ValueError(f"--strict-shift-weight {self.strict_shift_weight}: the {self.task} entry names no "
                             "candidate tokens (SIITTask.candidates); use 0")
        if self.path_strict_weight < 0:
            raise ValueError(f"path_strict_weight must be >= 0, got {self.path_strict_weight}")
        if self.path_strict_weight and not path_edges(self.entry.alignment, self.entry.circuit_edges):
            raise ValueError(f"--path-strict-weight {self.path_strict_weight}: the {self.task} circuit states no "
                             "head -> head edge between aligned heads; use 0")
        if self.attention_weight and self.entry.attention_targets is None:
            raise ValueError(f"--attention-weight {self.attention_weight}: the {self.task} entry names no attention "
                             "targets (SIITTask.attention_targets); use 0")
        if self.strict_logit_weight and self.entry.candidates is None:
            raise ValueError(f"--strict-logit-weight {self.strict_logit_weight}: the {self.task} entry names no "
                             "candidate tokens (SIITTask.candidates); use 0")
        if not 0 <= self.near_miss_share <= 1:
            raise ValueError(f"near_miss_share must be in [0, 1], got {self.near_miss_share}")
        if self.near_miss_share and self.entry.near_miss is None:
            raise ValueError(f"--near-miss-share {self.near_miss_share}: the {self.task} entry has no near-miss "
                             "sources (SIITTask.near_miss); use 0")
        if self.head_norm_weight < 0:
            raise ValueError(f"head_norm_weight must be >= 0, got {self.head_norm_weight}")
        if self.name_spread_weight < 0:
            raise ValueError(f"name_spread_weight must be >= 0, got {self.name_spread_weight}")
        if not -1 <= self.name_spread_margin < 1:
            raise ValueError(f"name_spread_margin must be in [-1, 1), got {self.name_spread_margin}")
        if self.name_spread_weight and not hasattr(self.train_split, "variables"):
            raise ValueError(f"--name-spread-weight {self.name_spread_weight}: the {self.task} split names no "
                             "argument names (split.variables); use 0")
        if not 0 < self.strict_focus_share <= 1:
            raise ValueError(f"strict_focus_share must be in (0, 1], got {self.strict_focus_share}")
        allowed = focus_names(self.n_layers, self.n_heads, self.entry.alignment)
        wrong = [name for name in self.strict_focus if name not in allowed]
        if wrong:
            raise ValueError(f"--strict-focus {','.join(wrong)}: not a non-aligned head or MLP of this model; "
                             f"use node names among {sorted(allowed)}")
        if self.train_only and self.init_from is None:
            raise ValueError(f"--train-only {','.join(self.train_only)}: the other parameters would stay at their "
                             "random initialisation; give --init-from")
        heads = {f"{layer}.{head}" for layer in range(self.n_layers) for head in range(self.n_heads)}
        wrong = [name for name in self.keep_qk if name not in heads]
        if wrong:
            raise ValueError(f"--keep-qk {','.join(wrong)}: not a head of this model; use layer.head names "
                             f"among {sorted(heads)}")
        unknown = set(self.trained_on) - set(self.entry.held_out_splits)
        if unknown:
            raise ValueError(f"--train-on {sorted(unknown)}: not held-out splits of {self.task} "
                             f"({sorted(self.entry.held_out_splits)})")

    @property
    def entry(self) -> SIITTask:
        return siit_task(self.task)

    @property
    def model_name(self) -> str:
        return self.name or self.entry.model

    @property
    def share(self) -> float:
        return self.entry.source_share if self.source_share == -1 else self.source_share

    @property
    def train_split(self):
        return self.entry.train_split(frozenset(self.trained_on))

    @property
    def run_dir(self) -> Path:
        return ROOT / "runs" / self.model_name

    @property
    def model_dir(self) -> Path:
        return data_dir() / "models" / self.model_name


def tokenizer():
    return load_tokenizer(data_dir() / "models" / "saelab-tiny" / "tokenizer.json", name="saelab-tiny")


def build_model(cfg: SIITConfig) -> HookedTransformer:
    tok = tokenizer()
    hcfg = HookedTransformerConfig(
        n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_head or cfg.d_model // cfg.n_heads,
        d_mlp=cfg.d_mlp, n_ctx=cfg.n_ctx or cfg.entry.n_ctx, d_vocab=len(tok), act_fn="gelu",
        normalization_type="LN", default_prepend_bos=True, seed=cfg.seed, model_name=cfg.model_name,
        positional_embedding_type=cfg.entry.positional_embedding_type,
        rotary_dim=cfg.d_model // cfg.n_heads if cfg.entry.positional_embedding_type == "rotary" else None,
        use_qk_norm=cfg.qk_norm,
    )
    return HookedTransformer(hcfg, tokenizer=tok, move_to_device=False)


# --- one training step --------------------------------------------------------------------------------------


PATH_GROUP = "strict-path "
"""Prefix of a path-strict group's name ("strict-path 0.2->1.1.v"): its sources are drawn as the strict rows'."""


def unit_name(unit: tuple[str, int, int | None]) -> str:
    """A non-aligned unit's node name (`Graph` node names: "L.H", "mlpL"; "L.H@rest" for an aligned head at its
    other positions)."""
    kind, layer, head = unit
    name = Node(layer, "mlp").name if kind == "mlp" else Node(layer, "head", head).name
    return name + ("@rest" if kind == "rest" else "")


def focus_names(n_layers: int, n_heads: int, alignment) -> set[str]:
    """The names `--strict-focus` accepts, before a model exists: `unit_name` of every non-aligned unit but the
    aligned heads' other positions (a test holds the two to `non_aligned_units`)."""
    aligned = {(a.layer, a.head) for a in alignment}
    heads = [("head", layer, head) for layer in range(n_layers) for head in range(n_heads)
             if (layer, head) not in aligned]
    return {unit_name(u) for u in heads + [("mlp", layer, None) for layer in range(n_layers)]}


def groups(cfg: SIITConfig) -> tuple[str, ...]:
    """The loss groups of a step: task, one per aligned variable, strict-one, strict-many, (with --strict-all)
    strict-all, (with --strict-layer) strict-layer, and (with --path-strict-weight) one per stated head -> head edge."""
    entry = cfg.entry
    edges = path_edges(entry.alignment, entry.circuit_edges) if cfg.path_strict_weight else ()
    return ("task", *entry.variables, *strict_groups(cfg), *(PATH_GROUP + e.name for e in edges))


def strict_groups(cfg: SIITConfig) -> tuple[str, ...]:
    """The strict groups of a step (`STRICT_GROUPS`; "strict-all" only with --strict-all, "strict-layer" only with
    --strict-layer); the path-strict groups are not among them."""
    chosen = {"strict-all": cfg.strict_all, "strict-layer": cfg.strict_layer}
    return tuple(g for g in STRICT_GROUPS if chosen.get(g, True))


def nearest_names(model: HookedTransformer, tok, names) -> dict[str, list[str]]:
    """Each name → the other names by decreasing cosine of the model's input embeddings (one token each)."""
    ids = name_ids(tok, names)
    with torch.no_grad():
        embedding = torch.nn.functional.normalize(model.W_E[ids], dim=-1)
        similarity = (embedding @ embedding.T).fill_diagonal_(-2.0)
    order = similarity.argsort(dim=1, descending=True)[:, :-1]
    return {name: [names[j] for j in row.tolist()] for name, row in zip(names, order, strict=True)}


def name_ids(tok, names) -> torch.Tensor:
    """The token id of each name (one token each, with its leading space); cached, as a training step with
    --name-spread-weight or --near-miss-share asks for the same names every step."""
    return _name_ids(tok, tuple(names))


@functools.lru_cache(maxsize=8)
def _name_ids(tok, names: tuple[str, ...]) -> torch.Tensor:
    return torch.tensor([tok.encode(" " + n, add_special_tokens=False)[0] for n in names])


def name_cosines(model: HookedTransformer, ids: torch.Tensor) -> torch.Tensor:
    """Cosine between the input embeddings of every two tokens `ids`, each centred over d_model first (as the
    first LayerNorm centres the residual stream); the diagonal is kept (1)."""
    embedding = model.W_E[ids]
    embedding = torch.nn.functional.normalize(embedding - embedding.mean(-1, keepdim=True), dim=-1)
    return embedding @ embedding.T


def name_spread_loss(model: HookedTransformer, ids: torch.Tensor, margin: float) -> torch.Tensor:
    """Ours: mean over pairs of distinct names of relu(cos − margin)², `name_cosines` — zero once no two names'
    embeddings are closer than `margin`."""
    cosines = name_cosines(model, ids)
    pairs = torch.triu(torch.ones_like(cosines, dtype=torch.bool), diagonal=1)
    return torch.relu(cosines[pairs] - margin).square().mean()


def head_norm_spread(model: HookedTransformer) -> torch.Tensor:
    """Ours: the variance over every head of log ‖OV‖ (`ov_norms(model, visible=True)`: LayerNorm folded, mean
    directions projected out, so a norm cannot hide in what a LayerNorm removes); 0 when all heads' OV maps
    have the same norm, whatever it is."""
    return ov_norms(model, visible=True).log().flatten().var()


def to_geometric_mean(norms: torch.Tensor) -> torch.Tensor:
    """Per entry, the factor that takes it to the geometric mean of all of `norms`."""
    return norms.log().mean().exp() / norms


@torch.no_grad()
def even_head_norms(model: HookedTransformer) -> None:
    """Ours: each head's W_O scaled so that its visible OV norm (`ov_norms(model, visible=True)`) becomes the
    geometric mean over every head's; W_O's scale passes straight through the folding and centring, so afterwards
    the heads' visible OV norms are equal and a weight-norm ranking of them is a tie."""
    for block, factor in zip(model.blocks, to_geometric_mean(ov_norms(model, visible=True)), strict=True):
        block.attn.W_O.mul_(factor.to(block.attn.W_O.dtype)[:, None, None])


@torch.no_grad()
def balance_value_output(model: HookedTransformer) -> None:
    """Ours, function-preserving: per head, W_V and b_V times c and W_O over c, c chosen so that every head's
    ‖W_O‖_F becomes the geometric mean over heads. A head's output z·W_O is unchanged (z is linear in W_V and
    b_V for a given attention pattern), so are its OV product and everything the model computes; only the split
    of the OV norm between the two matrices moves, so that neither matrix's norm alone ranks the heads."""
    norms = torch.stack([block.attn.W_O.float().flatten(1).norm(dim=1) for block in model.blocks])
    for block, factor in zip(model.blocks, to_geometric_mean(norms), strict=True):
        c = (1 / factor).to(block.attn.W_O.dtype)
        block.attn.W_V.mul_(c[:, None, None])
        block.attn.b_V.mul_(c[:, None])
        block.attn.W_O.div_(c[:, None, None])


def step_batch(cfg: SIITConfig, model: HookedTransformer, tok, step: int):
    """Base and source rows for every loss group, the patch, the targets and each row's group."""
    entry, split = cfg.entry, cfg.train_split
    rng = random.Random(cfg.seed * 1_000_003 + step)
    pairs = [(g, *entry.pair_specs(rng, split, g, cfg.share)) for g in groups(cfg) for _ in range(cfg.batch)]
    if cfg.near_miss_share:
        nearest = nearest_names(model, tok, list(split.variables))
        pairs = [(g, b, entry.near_miss(rng, split, g, b, s, nearest) if rng.random() < cfg.near_miss_share else s)
                 for g, b, s in pairs]
    row_groups = [g for g, _, _ in pairs]
    base, source = entry.encode(tok, [b for _, b, _ in pairs]), entry.encode(tok, [s for _, _, s in pairs])
    patch = Patch.empty(model, *base.tokens.shape)
    units = non_aligned_units(model, entry.alignment)
    focus = [u for u in units if unit_name(u) in cfg.strict_focus]
    edges = {PATH_GROUP + e.name: e for e in path_edges(entry.alignment, entry.circuit_edges)} \
        if cfg.path_strict_weight else {}
    for row, group in enumerate(row_groups):
        node = next((a for a in entry.alignment if a.variable == group), None)
        if node is not None:
            patch.aligned(torch.tensor([row]), node, base)
        elif group in edges:
            patch.path_strict(torch.tensor([row]), edges[group], base)
        elif group == "strict-one":
            pool = focus if focus and rng.random() < cfg.strict_focus_share else units
            patch_unit(patch, row, rng.choice(pool), base, entry.alignment)
        elif group == "strict-many":
            for unit in units:
                if rng.random() < 0.5:
                    patch_unit(patch, row, unit, base, entry.alignment)
        elif group == "strict-all":
            for unit in units:
                patch_unit(patch, row, unit, base, entry.alignment)
        elif group == "strict-layer":
            layer = rng.randrange(model.cfg.n_layers)
            for unit in (u for u in units if u[1] == layer):
                patch_unit(patch, row, unit, base, entry.alignment)
    targets = [entry.high_level_output(base, source, v) for v in (None, *entry.variables)]
    index = torch.tensor([entry.variables.index(g) + 1 if g in entry.variables else 0 for g in row_groups])
    rows = torch.arange(len(row_groups))
    target = Target(torch.stack([t.ids for t in targets])[index, rows],
                    torch.stack([t.weights for t in targets])[index, rows])
    return base, source, patch, target, row_groups


def attention_loss(entry: SIITTask, base, patterns: dict[int, torch.Tensor], row_groups: list[str]) -> torch.Tensor:
    """Mean −log attention of each aligned head to its target key on the task rows (no patch); a target of -1
    (no key on that row) leaves the row out of that head's mean."""
    task_rows = torch.tensor([i for i, g in enumerate(row_groups) if g == "task"])
    keys = entry.attention_targets(base)
    terms = []
    for node in (a for a in entry.alignment if a.variable in keys):
        rows = task_rows[keys[node.variable][task_rows] >= 0]
        if len(rows) == 0:
            continue
        query = base.position(node.position)[rows]
        attention = patterns[node.layer][rows, node.head, query, keys[node.variable][rows]]
        terms.append(-(attention + 1e-6).log().mean())
    return sum(terms) / len(terms) if terms else torch.zeros(())


def iit_attention_loss(entry: SIITTask, base, source, patterns: dict[int, torch.Tensor],
                       row_groups: list[str]) -> torch.Tensor:
    """Mean −log attention of each downstream aligned head to the keys it may read under the row's intervention
    (summed over them), over the interchange rows (one term per (row group, head) pair, averaged)."""
    terms = []
    for variable in entry.variables:
        keep = torch.tensor([g == variable for g in row_groups])
        if not keep.any():
            continue
        keys = entry.intervened_attention_targets(subset_rows(base, keep), subset_rows(source, keep), variable)
        rows = keep.nonzero()[:, 0]
        for node in entry.alignment:
            if node.variable in keys:
                query = base.position(node.position)[rows]
                attention = (patterns[node.layer][rows, node.head, query] * keys[node.variable]).sum(-1)
                terms.append(-(attention + 1e-6).log().mean())
    return sum(terms) / len(terms) if terms else torch.zeros(())


def unpatched_logits(cfg: SIITConfig, model, base) -> torch.Tensor:
    """End logits of `base` with nothing patched, the reference of our strict terms. The logit term
    differentiates this run too, so that scaling every logit leaves it unchanged; against a fixed unpatched
    run, the cheapest way to pull the patched run's logits toward it was to shrink them all."""
    with torch.set_grad_enabled(bool(cfg.strict_logit_weight or cfg.strict_shift_weight)
                                and torch.is_grad_enabled()):
        return patched_logits(model, base, {}, Patch.empty(model, *base.tokens.shape))


def unchanged_output_loss(cfg: SIITConfig, model, base, logits: torch.Tensor, row_groups: list[str],
                          path: bool = False, unpatched: torch.Tensor | None = None) -> torch.Tensor:
    """Our terms on the strict rows beside InterpBench's cross-entropy: KL(unpatched ‖ patched output) and, on
    the strict-one (strict-all, strict-layer) rows, the strict logit term on the entry's candidate tokens, weighted by the config (0 when
    both are off). `path`: the same terms on the path-strict rows instead, the logit term on every one of them.
    `unpatched`: `unpatched_logits` already computed this step (else computed here)."""
    if not (cfg.strict_kl_weight or cfg.strict_logit_weight or cfg.strict_shift_weight):
        return torch.zeros(())
    chosen = [g.startswith(PATH_GROUP) == path and g.startswith("strict") for g in row_groups]
    rows = torch.tensor([i for i, keep in enumerate(chosen) if keep])
    clean = (unpatched_logits(cfg, model, base) if unpatched is None else unpatched)[rows]
    candidates = cfg.entry.candidates(base)[rows] if cfg.strict_logit_weight or cfg.strict_shift_weight else None
    term = cfg.strict_kl_weight * torch.nn.functional.kl_div(
        logits[rows].log_softmax(-1), clean.detach().log_softmax(-1), log_target=True, reduction="batchmean")
    if cfg.strict_logit_weight:  # one unit or all at once, as the single-node and all-together checks patch
        one = torch.tensor([path or g in ("strict-one", "strict-all", "strict-layer")
                            for g, keep in zip(row_groups, chosen, strict=True) if keep])
        term = term + cfg.strict_logit_weight * strict_logit_loss(logits[rows][one], clean[one], candidates[one])
    if cfg.strict_shift_weight and not path:
        kept = [g for g, keep in zip(row_groups, chosen, strict=True) if keep]
        for group in ("strict-one", "strict-all"):
            mine = torch.tensor([g == group for g in kept])
            if mine.any():
                term = term + cfg.strict_shift_weight * strict_shift_loss(logits[rows][mine], clean[mine],
                                                                          candidates[mine])
    return term


def step_cache(cfg: SIITConfig, model, base, source) -> dict[str, torch.Tensor]:
    """The source's heads' z and MLP outputs and, with --path-strict-weight, the base's clean value vectors,
    queries and keys (what the path-strict rows' receiver heads are frozen at)."""
    cache = source_cache(model, source.tokens)
    if cfg.path_strict_weight:
        cache |= frozen_values(model, base.tokens)
    return cache


def train_step(cfg, model, optimizer, tok, step) -> dict[str, float]:
    base, source, patch, target, row_groups = step_batch(cfg, model, tok, step)
    cache = step_cache(cfg, model, base, source)
    patterns: dict[int, torch.Tensor] = {}
    hooks = [(f"blocks.{layer}.attn.hook_pattern", lambda x, hook, layer=layer: patterns.__setitem__(layer, x))
             for layer in {a.layer for a in cfg.entry.alignment}] \
        if cfg.attention_weight or cfg.iit_attention_weight else []
    with model.hooks(fwd_hooks=hooks):
        logits = patched_logits(model, base, cache, patch)
    losses = target_loss(logits, target)
    by_group = {g: losses[[i for i, x in enumerate(row_groups) if x == g]].mean() for g in groups(cfg)}
    iit = sum(by_group[v] for v in cfg.entry.variables) / len(cfg.entry.variables)
    paths = [g for g in groups(cfg) if g.startswith(PATH_GROUP)]
    unpatched = unpatched_logits(cfg, model, base) \
        if cfg.strict_kl_weight or cfg.strict_logit_weight or cfg.strict_shift_weight else None
    strict = sum(by_group[g] for g in strict_groups(cfg)) / len(strict_groups(cfg)) + unchanged_output_loss(
        cfg, model, base, logits, row_groups, unpatched=unpatched)
    loss = by_group["task"] + cfg.iit_weight * iit + cfg.strict_weight * strict
    if paths:
        path = sum(by_group[g] for g in paths) / len(paths) + unchanged_output_loss(
            cfg, model, base, logits, row_groups, path=True, unpatched=unpatched)
        loss = loss + cfg.path_strict_weight * path
    if cfg.attention_weight:
        loss = loss + cfg.attention_weight * attention_loss(cfg.entry, base, patterns, row_groups)
    if cfg.iit_attention_weight:
        loss = loss + cfg.iit_attention_weight * iit_attention_loss(cfg.entry, base, source, patterns, row_groups)
    if cfg.name_spread_weight:
        spread = name_spread_loss(model, name_ids(tok, cfg.train_split.variables), cfg.name_spread_margin)
        loss = loss + cfg.name_spread_weight * spread
    if cfg.head_norm_weight:
        norm_spread = head_norm_spread(model)
        loss = loss + cfg.head_norm_weight * norm_spread
    lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    if cfg.even_head_norms:
        even_head_norms(model)
    terms = {"loss": loss, "task": by_group["task"], "iit": iit, "strict": strict} | ({"path": path} if paths else {}) \
        | ({"spread": spread} if cfg.name_spread_weight else {}) \
        | ({"head_norm_spread": norm_spread} if cfg.head_norm_weight else {})
    return {k: float(v.detach()) for k, v in terms.items()}


TWO_TOKEN = "interchange_two_"
"""Prefix of `split_scores`' two-token interchange columns (ours, `interchange_accuracy_two`)."""


def stop_score(scores: dict[str, float]) -> float:
    """What the dev stop rule compares with `stop_at`: the lowest of the task, interchange and strict scores,
    without our two-token columns (added after the shipped models' recipes; their stop points stay as
    recorded)."""
    return min(v for k, v in scores.items() if not k.startswith(TWO_TOKEN))


def split_scores(entry: SIITTask, model, tok, split, seed: int, n: int) -> dict[str, float]:
    """Task top-1, per-node interchange (each variable on its `interchange_pairs`; the top-1 check on one-token
    high-level outputs, and ours on two-token ones where a variable has them) and strict accuracy on `n` fresh
    pairs of `split`."""
    shared = entry.sample_pairs(tok, split, n, seed, "iit")
    pairs = interchange_pairs(entry, tok, split, n, seed, shared)
    strict_pairs = entry.sample_pairs(tok, split, n, seed + 1, "strict")
    high = entry.high_level_output
    scores = {"task_top1": task_accuracy(model, shared, high)}
    scores |= {f"interchange_{a.variable}": interchange_accuracy(model, pairs[a.variable], a, high)
               for a in entry.alignment}
    two = {f"{TWO_TOKEN}{a.variable}": interchange_accuracy_two(model, pairs[a.variable], a, high)
           for a in entry.alignment}
    scores |= {k: v for k, v in two.items() if v == v}  # only variables with tie (½-½) targets on these pairs
    scores["strict_all_units"] = strict_accuracy(model, strict_pairs, entry.alignment, high)
    per_unit = strict_accuracy_per_unit(model, strict_pairs, entry.alignment, high)
    scores |= {"strict_per_unit_mean": per_unit.mean, "strict_per_unit_worst": per_unit.worst}
    return {k: round(v, 4) for k, v in scores.items()}


def dev_scores(cfg: SIITConfig, model: HookedTransformer, tok, seed: int = 10_000) -> dict[str, float]:
    """`split_scores` on fresh training-distribution prompts (the stop rule)."""
    model.eval()
    scores = split_scores(cfg.entry, model, tok, cfg.train_split, seed, cfg.eval_prompts)
    model.train()
    return scores


# --- checkpoints --------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, model, optimizer, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, tmp)
    os.replace(tmp, path)


def initial_weights(source: str) -> dict[str, torch.Tensor]:
    """The weights a fresh run starts from: a run's checkpoint file, or a saved model directory (e.g. the
    committed data/models/NAME), upcast to float32."""
    if Path(source).is_dir():
        return {k: v.float() for k, v in load_model(source).state_dict().items()}
    return torch.load(source, weights_only=False)["model"]


def widen_heads(weights: dict[str, torch.Tensor], model: HookedTransformer, seed: int = 0,
                std: float = 0.02) -> dict[str, torch.Tensor]:
    """Ours: `weights` of narrower heads (d_head d) placed in `model`'s wider heads without changing what the
    model computes: the new dimensions' queries and outputs are zero (W_Q, b_Q, W_O rows), their keys and values
    small random (so that gradients reach the zero sides), and the old queries are scaled by
    sqrt(new d_head) / sqrt(d), which undoes the wider heads' larger attention scale. Weights that already fit
    are returned as they are."""
    new, old = model.cfg.d_head, weights["blocks.0.attn.W_Q"].shape[-1]
    if new == old:
        return weights
    if new < old or not model.cfg.use_attn_scale:
        raise ValueError(f"cannot widen heads of d_head {old} to {new}; give a model with wider heads")
    generator = torch.Generator().manual_seed(seed)
    scale = (new / old) ** 0.5
    out = dict(weights)
    for layer in range(model.cfg.n_layers):
        prefix = f"blocks.{layer}.attn."
        for name in ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V"):
            value = weights[prefix + name]
            extra = torch.zeros(*value.shape[:-1], new - old)
            if name in ("W_K", "W_V"):
                extra = std * torch.randn(extra.shape, generator=generator)
            out[prefix + name] = torch.cat([value * (scale if name in ("W_Q", "b_Q") else 1.0), extra], dim=-1)
        w_o = weights[prefix + "W_O"]
        out[prefix + "W_O"] = torch.cat([w_o, torch.zeros(w_o.shape[0], new - old, w_o.shape[2])], dim=1)
    return out


@torch.no_grad()
def add_qk_norm(weights: dict[str, torch.Tensor], model: HookedTransformer, tok, cfg: SIITConfig,
                n: int = 128) -> dict[str, torch.Tensor]:
    """Ours: `weights` of a model without query/key norms placed in `model`, which has them; each layer's query
    and key scales are set to the mean RMS (over heads, positions, padding included, and `n` task prompts) of
    that layer's raw queries and keys in the model the weights come from, so an average score keeps its size (a
    head whose queries are larger or smaller than its layer's average does not; training recovers it). Weights
    that already have the norms are returned as they are."""
    if not model.cfg.use_qk_norm or "blocks.0.attn.q_norm.w" in weights:
        return weights
    missing, unexpected = model.load_state_dict(weights, strict=False)
    norms = {f"blocks.{layer}.attn.{kind}_norm.w" for layer in range(model.cfg.n_layers) for kind in "qk"}
    if unexpected or set(missing) != norms:
        raise ValueError(f"add_qk_norm: weights do not fit the model beyond the query/key norms (missing "
                         f"{sorted(set(missing) - norms)}, unexpected {unexpected})")
    tokens = cfg.entry.sample_pairs(tok, cfg.train_split, n, cfg.seed, "iit").base.tokens
    model.cfg.use_qk_norm = False  # measured on the model the weights come from (read at each forward)
    try:
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name.endswith(("hook_q", "hook_k")))
    finally:
        model.cfg.use_qk_norm = True
    out = dict(weights)
    for layer in range(model.cfg.n_layers):
        for kind in ("q", "k"):
            rms = cache[f"blocks.{layer}.attn.hook_{kind}"].pow(2).mean(-1).sqrt().mean()
            out[f"blocks.{layer}.attn.{kind}_norm.w"] = torch.full((model.cfg.d_head,), rms.item())
    return out


class KeptQK:
    """Ours: the query/key weights and biases of some heads, held at their values when made: their gradient
    slices are zeroed as they are computed (so gradient clipping does not count them), and `restore()` after
    each optimizer step puts them back (AdamW's weight decay moves a parameter even where its gradient is 0)."""

    KINDS = ("W_Q", "W_K", "b_Q", "b_K")

    def __init__(self, model: HookedTransformer, heads: tuple[str, ...]):
        self.slices = []
        for name in heads:
            layer, head = (int(x) for x in name.split("."))
            attn = model.blocks[layer].attn
            for kind in self.KINDS:
                param = getattr(attn, kind)
                self.slices.append((param, head, param.detach()[head].clone()))
                if param.requires_grad:  # (with --train-only it may not train at all)
                    param.register_hook(functools.partial(self._without, head=head))

    @staticmethod
    def _without(grad: torch.Tensor, head: int) -> torch.Tensor:
        grad = grad.clone()
        grad[head] = 0
        return grad

    @torch.no_grad()
    def restore(self) -> None:
        for param, head, value in self.slices:
            param[head] = value


def train(cfg: SIITConfig) -> HookedTransformer:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tok = tokenizer()
    model = build_model(cfg)
    if cfg.train_only:
        names = [name for name, _ in model.named_parameters()]
        unknown = [p for p in cfg.train_only if not any(name.startswith(p) for name in names)]
        if unknown:
            raise ValueError(f"--train-only {','.join(unknown)}: no parameter name starts with it; use prefixes "
                             "of the model's parameter names, e.g. blocks.2.mlp")
        for name, param in model.named_parameters():
            param.requires_grad_(name.startswith(cfg.train_only))
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
        weights = widen_heads(initial_weights(cfg.init_from), model, seed=cfg.seed, std=cfg.widen_std)
        model.load_state_dict(add_qk_norm(weights, model, tok, cfg))
        log.info("initialised from %s", cfg.init_from)
    model.train()
    kept = KeptQK(model, cfg.keep_qk)  # on a resumed run, the checkpoint's (already kept) values
    started, last_save = time.time() - state["elapsed_s"], time.time()
    while state["stopped"] is None:
        losses = train_step(cfg, model, optimizer, tok, state["step"])
        kept.restore()
        state["step"] += 1
        state["elapsed_s"] = time.time() - started
        if state["step"] % cfg.eval_every == 0:
            scores = dev_scores(cfg, model, tok)
            state["history"].append({"step": state["step"], "elapsed_s": round(state["elapsed_s"]), **losses,
                                     **scores})
            log.info("step %d %.0fs %s %s", state["step"], state["elapsed_s"],
                     {k: round(v, 3) for k, v in losses.items()}, {k: round(v, 3) for k, v in scores.items()})
            state["passes"] = state["passes"] + 1 if stop_score(scores) >= cfg.stop_at else 0
            if state["passes"] >= 2:
                state["stopped"] = f"dev checks >= {cfg.stop_at} twice at step {state['step']}"
        if state["stopped"] is None and state["elapsed_s"] > cfg.time_limit_min * 60:
            state["stopped"] = f"time limit {cfg.time_limit_min} min at step {state['step']}"
        if time.time() - last_save > cfg.checkpoint_every_s or state["stopped"]:
            save_checkpoint(checkpoint, model, optimizer, state)
            last_save = time.time()
    log.info("stopped: %s", state["stopped"])
    model.eval()
    if cfg.balance_vo:
        balance_value_output(model)
    save_model(model, cfg.model_dir, weights_dtype=torch.float16, extra={"name": cfg.model_name})
    return state


# --- construction checks on the saved model ----------------------------------------------------------------


@torch.no_grad()
def all_non_circuit_effect(model, task, data, circuit: set[str]) -> float:
    """Mean metric change when every non-circuit head and MLP is resample-ablated at once (from the task's
    corrupted prompts)."""
    tokens, end = data.clean_tokens, data.positions["end"]
    patch = Patch.empty(model, *tokens.shape)
    for node in Graph.from_config(model.cfg).nodes:
        if node.name in circuit:
            continue
        if node.kind == "head":
            patch.z[node.layer][:, :, node.head] = True
        else:
            patch.mlp[node.layer][:] = True
    cache = source_cache(model, data.corrupted_tokens)
    clean = task.metric_fn(patched_end_logits(model, tokens, end, {}, Patch.empty(model, *tokens.shape))[:, None],
                           _at_zero(data))
    ablated = task.metric_fn(patched_end_logits(model, tokens, end, cache, patch)[:, None], _at_zero(data))
    return float((ablated - clean).mean())


def _at_zero(data):
    return dataclasses.replace(data, positions={**data.positions, "end": torch.zeros(len(data), dtype=torch.long)})


def construction_checks(entry: SIITTask, model, tok, n: int = 400, seed: int = 777) -> dict:
    """The issue's checks on saelab's own task generator (vocabulary "tiny", its default corruption, resample
    ablation)."""
    task = get_task(entry.task)
    data = task.generate(tok, n, seed=seed, vocabulary="tiny")
    logits = model(data.clean_tokens)
    problem = problem_from_task(task, data)
    clean, corrupted = metric_means(model, problem)
    gap = clean - corrupted
    effects = node_effects(model, problem, "resample")
    circuit = {a.node for a in entry.alignment}
    relative = {node.name: effect / gap for node, effect in effects.items()}
    outside = {k: v for k, v in relative.items() if k not in circuit}
    together = all_non_circuit_effect(model, task, data, circuit) / gap
    checks = {
        "task_accuracy": round(float(task.accuracy(logits, data).float().mean()), 4),
        "corruption": task.default_corruption,
        "metric_clean": round(clean, 4),
        "metric_corrupted": round(corrupted, 4),
        "max_single_non_circuit_effect_over_gap": round(max(abs(v) for v in outside.values()), 4),
        "largest_non_circuit_node": max(outside, key=lambda k: abs(outside[k])),
        "all_non_circuit_together_effect_over_gap": round(abs(together), 4),
        "min_circuit_effect_over_gap": round(min(abs(relative[c]) for c in circuit), 4),
    }
    checks["passed"] = {
        "task_accuracy>=0.95": checks["task_accuracy"] >= 0.95,
        "single_non_circuit<0.02": checks["max_single_non_circuit_effect_over_gap"] < 0.02,
        "all_non_circuit<0.10": checks["all_non_circuit_together_effect_over_gap"] < 0.10,
        "each_circuit_node>0.20": checks["min_circuit_effect_over_gap"] > 0.20,
    }
    checks["edge_check"] = edge_check(model, problem, entry, gap).to_json()  # ours; not one of the six
    return {"n_prompts": n, "seed": seed, **checks}, effects, problem, (clean, corrupted)


def write_ground_truth(cfg: SIITConfig, model, effects, problem, means, checks) -> Path:
    entry = cfg.entry
    graph = Graph.from_config(model.cfg)
    measured = edge_effects(model, problem, [graph.edge(e) for e in entry.circuit_edges])
    payload = {
        "format_version": 1,
        "task": entry.task,
        "model": cfg.model_name,
        "kind": "by construction",
        "rule": {"node_fraction": 0.1, "edge_fraction": 0.05,
                 "text": "by construction (SIIT): the nodes are the heads the high-level model is aligned to; the "
                         "edges are its data flow. node_effects and edge_effects are measured (resample ablation "
                         f"from the task's {get_task(entry.task).default_corruption} corruption, path patching) "
                         "only to show the construction holds; they do not define the circuit"},
        "metric": {"clean": round(means[0], 6), "corrupted": round(means[1], 6),
                   "gap": round(means[0] - means[1], 6)},
        "nodes": sorted({a.node for a in entry.alignment}),  # a head may carry two variables
        "edges": sorted(entry.circuit_edges),
        "node_effects": {n.name: round(effects[n], 6) for n in sorted(effects)},
        "edge_effects": {e.name: round(v, 6) for e, v in sorted(measured.items())},
        "alignment": [a.to_json() for a in entry.alignment],
        "high_level_model": f"saelab.circuits.siit.siit_task({cfg.task!r}) ({entry.summary})",
        "construction_checks": checks,
    }
    path = data_dir() / "circuits" / cfg.model_name / f"{entry.task}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def finalize(cfg: SIITConfig, state: dict, command: str, stages: tuple[str, ...] = (),
             weights_unchanged: bool = False) -> None:
    """Measure the construction checks on the saved model and write its card, config section and circuit file;
    `stages` are earlier training stages (command and held-out scores) the run was initialised from. The card's
    sections written by other scripts (bench_heldout's) are kept only when `weights_unchanged` (--finalize-only):
    after training they would describe the old weights."""
    torch.set_num_threads(cfg.threads)
    entry, tok = cfg.entry, tokenizer()
    model = load_model(str(cfg.model_dir))
    model.cfg.model_name = cfg.model_name
    checks, effects, problem, means = construction_checks(entry, model, tok)
    splits = {"train_distribution_fresh": split_scores(entry, model, tok, cfg.train_split, 20_000, 500)}
    for i, (name, split) in enumerate(entry.held_out_splits.items()):
        label = f"{name}_trained_on" if name in cfg.trained_on else name
        splits[label] = split_scores(entry, model, tok, split, 30_000 + 10_000 * i, 500)
    one = [v for s in splits.values() for k, v in s.items() if k.startswith("interchange_")
           and not k.startswith(TWO_TOKEN)]
    two = [v for s in splits.values() for k, v in s.items() if k.startswith(TWO_TOKEN)]
    checks["passed"]["interchange>=0.95_every_node_every_split"] = all(v >= 0.95 for v in one)
    if two:
        checks["passed"]["interchange_two>=0.95_every_node_every_split"] = all(v >= 0.95 for v in two)
    checks["passed"]["task_top1>=0.95_every_split"] = all(s["task_top1"] >= 0.95 for s in splits.values())
    write_ground_truth(cfg, model, effects, problem, means, checks)
    extra = {
        "name": cfg.model_name,
        "description": (f"SIIT {entry.task} model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
                        f"d_mlp {cfg.d_mlp}, saelab-tiny tokenizer; circuit known by construction"),
        "task": entry.task,
        "trained_on": f"{entry.task} prompts from saelab's generator with SIIT losses "
                      + (f"(held-out splits {', '.join(cfg.trained_on)} trained on too)" if cfg.trained_on
                         else "(held-out splits excluded)")
                      + ("; its last step was not SIIT training (see training.stopped)"
                         if (state["stopped"] or "").startswith("not a trainer run") else ""),
        "high_level_model": entry.summary,
        "alignment": [a.to_json() for a in entry.alignment],
        "design_history": DESIGN_HISTORY.get(cfg.task, DESIGN_HISTORY[entry.task]),
        "stages": list(stages),
        "held_out": {name: (name in cfg.trained_on and "trained on") or "held out of training and stopping"
                     for name in entry.held_out_splits},
        "construction_checks": checks,
        "split_scores": splits,
        "training": {"steps": state["step"], "wall_time_s": round(state["elapsed_s"]), "stopped": state["stopped"],
                     "history_tail": state["history"][-3:], "config": asdict(cfg), "command": command,
                     "torch": torch.__version__},
    }
    # Re-save from the loaded (float16-rounded) model so the weights are exactly the ones checked.
    save_model(model, cfg.model_dir, weights_dtype=torch.float16, extra=extra)
    write_card(cfg.model_dir / "MODEL_CARD.md", model_card(extra, HELD_OUT_TEXT[entry.task]), keep=weights_unchanged)


def add_edge_check(cfg: SIITConfig) -> dict:
    """Measure our edge check on a model finalised before it existed, on its construction checks' prompts, and
    store it in its config, card and circuit file; every other stored number is kept as measured (the card's
    sections after the generated part, such as bench_heldout's, are kept too)."""
    torch.set_num_threads(cfg.threads)
    entry = cfg.entry
    model = load_model(str(cfg.model_dir))
    config_path = cfg.model_dir / "config.json"
    payload = json.loads(config_path.read_text())
    extra = payload["saelab"]
    checks = extra["construction_checks"]
    task = get_task(entry.task)
    problem = problem_from_task(task, task.generate(tokenizer(), checks["n_prompts"], seed=checks["seed"],
                                                    vocabulary="tiny"))
    clean, corrupted = metric_means(model, problem)
    checks["edge_check"] = edge_check(model, problem, entry, clean - corrupted).to_json()
    config_path.write_text(json.dumps(payload, indent=2))
    write_card(cfg.model_dir / "MODEL_CARD.md", model_card(extra, HELD_OUT_TEXT[entry.task]), keep=True)
    circuit_path = data_dir() / "circuits" / cfg.model_name / f"{entry.task}.json"
    circuit = json.loads(circuit_path.read_text())
    circuit["construction_checks"]["edge_check"] = checks["edge_check"]
    circuit_path.write_text(json.dumps(circuit, indent=1) + "\n")
    return checks["edge_check"]


CARD_APPENDIX = "<!-- heldout-split:begin -->"
"""Where the parts of a card written by other scripts begin (benchmarks/bench_heldout.py's section)."""


def write_card(path: Path, text: str, keep: bool) -> None:
    """Write a model card's generated part; with `keep`, the parts other scripts wrote after `CARD_APPENDIX`
    stay (only right when the weights they measured are unchanged)."""
    kept = path.read_text().partition(CARD_APPENDIX) if keep and path.exists() else ("", "", "")
    path.write_text(text + ("\n" + kept[1] + kept[2] if kept[1] else ""))


HELD_OUT_TEXT = {
    "ioi": "Held out: templates 3, 8, 14 (held_out_templates); places hospital/station and objects necklace/snack "
           "(held_out_places_objects). Names are not held out (an IOI-only model never trains an unseen name's "
           "embedding).",
    "docstring": "Held out: the (prefix, matching, suffix) argument counts (1,3,2), (3,2,0), (0,4,1), (2,4,2), "
                 "(3,3,1) and 4-word argument descriptions (held_out_layouts; training uses 0-3 prefix, 2-4 "
                 "matching, 0-2 suffix arguments, 1-3-word argument and 2-4-word method descriptions); every fifth "
                 "description noun that is not also an argument name (held_out_descriptions). Argument names are "
                 "not held out (they are the outputs; an unseen name's unembedding is never trained).",
}


def model_card(extra: dict, held_out_text: str) -> str:
    checks, splits, task = extra["construction_checks"], extra["split_scores"], extra["task"]
    lines = [
        f"# {extra['name']}", "", extra["description"] + ".", "",
        "Trained with strict interchange intervention training (SIIT; Gupta et al. 2024, InterpBench) so that a "
        f"high-level causal model of {task} ({extra['high_level_model']}) is implemented by named heads at named "
        "positions and nothing else matters:", "",
    ]
    lines += [f"- `{a['variable']}` → head {a['node']} at {a['position']}: {a['meaning']}" for a in extra["alignment"]]
    stopped = extra["training"]["stopped"] or ""
    if stopped.startswith("not a trainer run"):
        lines += ["", f"**Its last step was not SIIT training:** {stopped[len('not a trainer run: '):]}. The stages it "
                  "started from are listed below."]
    passed = checks["passed"]
    failing = [k for k, v in passed.items() if not v]
    failing += [f"{k} (our edge check)" for k, v in checks.get("edge_check", {}).get("passed", {}).items() if not v]
    if failing:
        lines += ["", f"**Construction checks that fail: {', '.join(failing)}.** The circuit file states the "
                  "intended circuit; where a check fails, this model implements it only in part."]
    lines += [
        "", "Every other head, every MLP and the aligned heads at other positions are non-aligned (strict loss). "
        f"The circuit is `data/circuits/{extra['name']}/{task}.json`.", "",
        f"## Construction checks (saelab's {task} generator, vocabulary tiny, resample ablation from its "
        f"{checks['corruption']} corruption, {checks['n_prompts']} prompts, seed {checks['seed']})", "",
        "| check | measured | passed |", "|---|---|---|",
        f"| task accuracy ≥ 0.95 | {checks['task_accuracy']} | {passed['task_accuracy>=0.95']} |",
        f"| max single non-circuit node effect / gap < 0.02 | {checks['max_single_non_circuit_effect_over_gap']} "
        f"(node {checks['largest_non_circuit_node']}) | {passed['single_non_circuit<0.02']} |",
        f"| all non-circuit nodes together / gap < 0.10 | {checks['all_non_circuit_together_effect_over_gap']} | "
        f"{passed['all_non_circuit<0.10']} |",
        f"| min circuit node effect / gap > 0.20 | {checks['min_circuit_effect_over_gap']} | "
        f"{passed['each_circuit_node>0.20']} |",
        f"| interchange accuracy ≥ 0.95, every node, every split | see below | "
        f"{passed['interchange>=0.95_every_node_every_split']} |",
        *([f"| two-token interchange (ours) ≥ 0.95, every node with tie targets, every split | see below | "
           f"{passed['interchange_two>=0.95_every_node_every_split']} |"]
          if "interchange_two>=0.95_every_node_every_split" in passed else []),
        f"| task top-1 ≥ 0.95 on every split | see below | {passed['task_top1>=0.95_every_split']} |",
        "", f"Clean metric {checks['metric_clean']}, corrupted {checks['metric_corrupted']}.", "",
        *edge_check_lines(checks),
        "## Per split (500 pairs each; top-1 over the whole vocabulary; interchange over the pairs whose high-level "
        "output is one token; " + ("interchange_two_X (ours) = over the pairs whose high-level output is two names "
                                   "at ½ each, the share where those two are the patched model's two top tokens; "
                                   if any(k.startswith(TWO_TOKEN) for s in splits.values() for k in s) else "")
        + "strict_all_units (ours) = every non-aligned unit patched at once from a same-layout source; "
        "strict_per_unit_mean / _worst = one unit patched at a time, the mean over units (InterpBench's "
        "strict accuracy) and the lowest unit)", "",
    ]
    keys = list(dict.fromkeys(k for s in splits.values() for k in s))  # a split may lack a two-token column
    lines += ["| split | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {name} | " + " | ".join(str(s.get(k, "—")) for k in keys) + " |" for name, s in splits.items()]
    t = extra["training"]
    init = t["config"]["init_from"] or f"random (seed {t['config']['seed']})"
    trained_on = [name for name, status in extra["held_out"].items() if status == "trained on"]
    if trained_on:
        held_out_text += (f" This run trained on {', '.join(trained_on)} anyway (rows labelled _trained_on): "
                          "those scores are on fresh prompts of its training distribution.")
    lines += [
        "", held_out_text, "",
        "## Training", "", f"`{t['command']}`: {t['steps']} steps, {t['wall_time_s']} s on one CPU thread; "
        f"stopped: {t['stopped']}. Initialised from: {init}.",
        "", "## Design history", "", extra["design_history"], "",
    ]
    if extra["stages"]:
        lines += ["## Earlier stages this model was initialised from", ""]
        lines += [f"{i + 1}. {stage}" for i, stage in enumerate(extra["stages"])] + [""]
    return "\n".join(lines)


def edge_check_lines(checks: dict) -> list[str]:
    """The card's edge check section (ours), from the stored check ([] for a card written before it existed)."""
    if "edge_check" not in checks:
        return []
    edges = checks["edge_check"]
    verdict = {k: "PASS" if v else "FAIL" for k, v in edges["passed"].items()}
    stated_name, unstated_name = edges["passed"]
    lines = [
        "## Edge check (ours, not InterpBench's; same prompts and corruption)", "",
        "Path patching of single edges (`saelab.circuits.ground_truth.edge_effects`: the receiver alone reads the "
        "sender's output on the corrupted prompt, everything downstream recomputed), effect / gap. Every edge the "
        f"circuit states from a circuit head must exceed {STATED_EDGE_MIN:g} of the gap ({verdict[stated_name]}); "
        f"every edge a circuit head sends that the circuit does not state must stay below {UNSTATED_PATH_MAX:g} "
        f"({verdict[unstated_name]}). Our thresholds: SIIT's node checks cannot tell the stated chain from parallel "
        "paths (both flip the top-1 when one head is patched).", "",
        "| edge | stated | effect / gap |", "|---|---|---|",
    ]
    lines += [f"| {e} | yes | {v} |" for e, v in edges["stated_edge_effect_over_gap"].items()]
    lines += [f"| {e} (largest unstated from {h}) | no | {v} |"
              for h, (e, v) in edges["largest_unstated_path_over_gap"].items()]
    return lines + [""]


HELD_OUT_ALIASES = {"--all-templates": "held_out_templates", "--all-words": "held_out_places_objects"}


def comma_list(text: str) -> tuple[str, ...]:
    """An option's comma-separated items, empty ones dropped ("mlp2,mlp1," -> ("mlp2", "mlp1"))."""
    return tuple(item for item in text.split(",") if item)


def parse_args(argv: list[str]) -> tuple[SIITConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=SIITConfig.task, choices=SIIT_TASKS)
    parser.add_argument("--name", default=SIITConfig.name)
    parser.add_argument("--seed", type=int, default=SIITConfig.seed)
    parser.add_argument("--n-layers", type=int, default=SIITConfig.n_layers)
    parser.add_argument("--d-head", type=int, default=SIITConfig.d_head,
                        help="ours: wider heads than d_model / n_heads (the extra dimensions are not rotary)")
    parser.add_argument("--qk-norm", action="store_true",
                        help="ours: RMS-normalised queries and keys (see SIITConfig.qk_norm)")
    parser.add_argument("--train-only", type=comma_list, default=(),
                        help="ours: comma-separated parameter-name prefixes (e.g. blocks.2.mlp); only these train")
    parser.add_argument("--keep-qk", type=comma_list, default=(),
                        help="ours: comma-separated heads (layer.head) whose query/key weights and biases do not "
                             "train")
    parser.add_argument("--widen-std", type=float, default=SIITConfig.widen_std,
                        help="ours: std of the new key and value weights when --init-from weights are widened")
    parser.add_argument("--lr", type=float, default=SIITConfig.lr)
    parser.add_argument("--strict-weight", type=float, default=SIITConfig.strict_weight)
    parser.add_argument("--strict-kl-weight", type=float, default=SIITConfig.strict_kl_weight)
    parser.add_argument("--strict-logit-weight", type=float, default=SIITConfig.strict_logit_weight)
    parser.add_argument("--strict-shift-weight", type=float, default=SIITConfig.strict_shift_weight,
                        help="ours: weight of the squared mean signed metric change on the strict rows")
    parser.add_argument("--path-strict-weight", type=float, default=SIITConfig.path_strict_weight,
                        help="ours: weight of the path-strict rows (stated head -> head edges; 0: off)")
    parser.add_argument("--iit-weight", type=float, default=SIITConfig.iit_weight)
    parser.add_argument("--attention-weight", type=float, default=SIITConfig.attention_weight)
    parser.add_argument("--iit-attention-weight", type=float, default=SIITConfig.iit_attention_weight)
    parser.add_argument("--strict-focus", type=comma_list, default=(),
                        help="ours: comma-separated non-aligned units (e.g. mlp2,mlp1) the strict-one rows patch "
                             "more often")
    parser.add_argument("--strict-focus-share", type=float, default=SIITConfig.strict_focus_share)
    parser.add_argument("--near-miss-share", type=float, default=SIITConfig.near_miss_share,
                        help="ours: share of no-match interchange sources given a name near the base's")
    parser.add_argument("--name-spread-weight", type=float, default=SIITConfig.name_spread_weight,
                        help="ours: weight of the penalty on argument names whose input embeddings are close")
    parser.add_argument("--name-spread-margin", type=float, default=SIITConfig.name_spread_margin)
    parser.add_argument("--even-head-norms", action="store_true",
                        help="ours: after every step, rescale each head's W_O so that all heads' visible OV norms "
                             "are equal")
    parser.add_argument("--balance-vo", action="store_true",
                        help="ours: before saving, rescale each head's W_V, b_V and W_O (function-preserving) so "
                             "that every head's W_O has the same norm")
    parser.add_argument("--head-norm-weight", type=float, default=SIITConfig.head_norm_weight,
                        help="ours: weight of the variance over heads of log visible OV norm (evens out the "
                             "heads' weight norms)")
    parser.add_argument("--strict-all", action="store_true",
                        help="ours: a strict group whose rows patch every non-aligned unit at once")
    parser.add_argument("--strict-layer", action="store_true",
                        help="ours: a strict group whose rows patch every non-aligned unit of one random layer")
    parser.add_argument("--source-share", type=float, default=SIITConfig.source_share)
    parser.add_argument("--train-on", action="append", default=[], help="a held-out split to train on anyway")
    parser.add_argument("--all-templates", action="store_true", help="IOI: --train-on held_out_templates")
    parser.add_argument("--all-words", action="store_true", help="IOI: --train-on held_out_places_objects")
    parser.add_argument("--time-limit-min", type=float, default=SIITConfig.time_limit_min)
    parser.add_argument("--batch", type=int, default=SIITConfig.batch)
    parser.add_argument("--eval-every", type=int, default=SIITConfig.eval_every)
    parser.add_argument("--finalize-only", action="store_true")
    parser.add_argument("--edge-check-only", action="store_true",
                        help="add our edge check to an already finalised model's config, card and circuit file")
    parser.add_argument("--stage", action="append", default=[],
                        help="an earlier training stage this model was initialised from (text for the card)")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from another run's checkpoint file or a saved model directory (fresh optimizer, step 0)")
    args = parser.parse_args(argv)
    trained_on = list(args.train_on)
    trained_on += [split for flag, split in HELD_OUT_ALIASES.items() if getattr(args, flag[2:].replace("-", "_"))]
    cfg = SIITConfig(task=args.task, name=args.name, seed=args.seed, n_layers=args.n_layers, d_head=args.d_head,
                     widen_std=args.widen_std, qk_norm=args.qk_norm, keep_qk=args.keep_qk, train_only=args.train_only,
                     lr=args.lr,
                     iit_weight=args.iit_weight, strict_weight=args.strict_weight,
                     strict_kl_weight=args.strict_kl_weight, strict_logit_weight=args.strict_logit_weight,
                     strict_shift_weight=args.strict_shift_weight,
                     attention_weight=args.attention_weight, iit_attention_weight=args.iit_attention_weight,
                     path_strict_weight=args.path_strict_weight, source_share=args.source_share,
                     strict_focus=args.strict_focus, strict_focus_share=args.strict_focus_share,
                     strict_all=args.strict_all, strict_layer=args.strict_layer, near_miss_share=args.near_miss_share,
                     name_spread_weight=args.name_spread_weight, name_spread_margin=args.name_spread_margin,
                     head_norm_weight=args.head_norm_weight, balance_vo=args.balance_vo,
                     even_head_norms=args.even_head_norms,
                     trained_on=tuple(trained_on), init_from=None if args.init_from is None else str(args.init_from),
                     time_limit_min=args.time_limit_min, batch=args.batch, eval_every=args.eval_every)
    return cfg, args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg, args = parse_args(argv)
    shown = [a for i, a in enumerate(argv) if a != "--stage" and (i == 0 or argv[i - 1] != "--stage")]
    command = "PYTHONPATH=. .venv/bin/python training/train_siit.py " + " ".join(shown)
    if args.edge_check_only:
        log.info("edge check: %s", add_edge_check(cfg))
        return
    if args.finalize_only:
        state = torch.load(cfg.run_dir / "checkpoint.pt", weights_only=False)["state"]
        if cfg.balance_vo:  # function-preserving: the card's other sections stay true
            model = load_model(str(cfg.model_dir))
            balance_value_output(model)
            save_model(model, cfg.model_dir, weights_dtype=torch.float16, extra={"name": cfg.model_name})
    else:
        state = train(cfg)
    finalize(cfg, state, command.strip(), tuple(args.stage), weights_unchanged=args.finalize_only)


if __name__ == "__main__":
    main()
