"""Circuit identification behind one interface: (model, problem, config) → scores over nodes and edges.

    from saelab.circuits import problem_from_task, run_method
    problem = problem_from_task(get_task("ioi"), data)           # clean/corrupted batches + metric
    scores = run_method("eap", model, problem)                   # CircuitScores(node_scores, edge_scores,
    ...)

Nodes are heads "L.H" and MLPs "mlpL"; edges run from senders (input, heads, MLPs) to receivers (head q/k/v
inputs, MLP inputs, logits) as in ACDC and EAP. Methods: sae_codes (O'Neill & Bui's protocol),
sae_codes_saelab (+ _topk, _vq: our variants), patching (+ _mean), eap, eap_ig, acdc; baselines: random,
layer_order, output_change, weight_norm.
"""

from saelab.circuits.acdc import ACDCConfig
from saelab.circuits.eap import EAPConfig, EAPIGConfig
from saelab.circuits.graph import Edge, Graph, Node, Receiver, head_node, input_node, logits_node, mlp_node
from saelab.circuits.methods import register_builtin_methods
from saelab.circuits.patching import PatchingConfig, metric_means, node_effects
from saelab.circuits.problem import CircuitProblem, PromptBatch, make_problem, problem_from_task
from saelab.circuits.registry import (
    METHODS,
    CircuitMethod,
    get_method,
    list_methods,
    register_method,
    run_method,
)
from saelab.circuits.sae_codes import SAECodesConfig
from saelab.circuits.types import CircuitScores, MethodOutput, SweepPoint

register_builtin_methods()

__all__ = [
    "ACDCConfig",
    "CircuitMethod",
    "CircuitProblem",
    "CircuitScores",
    "EAPConfig",
    "EAPIGConfig",
    "Edge",
    "Graph",
    "METHODS",
    "MethodOutput",
    "Node",
    "PatchingConfig",
    "PromptBatch",
    "Receiver",
    "SAECodesConfig",
    "SweepPoint",
    "get_method",
    "head_node",
    "input_node",
    "list_methods",
    "logits_node",
    "make_problem",
    "metric_means",
    "mlp_node",
    "node_effects",
    "problem_from_task",
    "register_method",
    "run_method",
]
