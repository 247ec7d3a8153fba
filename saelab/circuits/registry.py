"""The registry of circuit methods: name → (function, config type). `run_method` times and measures them."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from transformer_lens import HookedTransformer

from saelab.circuits.measure import measured
from saelab.circuits.problem import CircuitProblem
from saelab.circuits.types import CircuitScores, MethodOutput

PROMPT_COUNTS = ("n_prompts", "sae_prompts", "paper_sae_prompts", "acdc_prompts")
MethodFn = Callable[[HookedTransformer, CircuitProblem, Any], MethodOutput]


@dataclass(frozen=True)
class CircuitMethod:
    """One circuit-discovery method."""

    name: str
    """Registry key, e.g. "eap"."""
    run: MethodFn
    """(model, problem, config) → scores."""
    config_type: type
    """Its frozen config dataclass."""
    description: str
    """One line for help texts."""
    edge_scope: Literal["none", "heads", "all"]
    """Which edges it scores: none (node methods), head → head pairs only (discrete-SAE codes), all."""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    """Config fields that differ from the config type's own defaults (variants share one config type)."""
    prompt_count: Literal["n_prompts", "sae_prompts", "paper_sae_prompts", "acdc_prompts"] = "n_prompts"
    """The field of the runner's `CircuitRunConfig` that says how many prompt pairs this method is given."""
    defaults_from: str = "no settings to choose"
    """Where its default settings come from (a paper, or which prompt split they were chosen on)."""
    kind: Literal["method", "baseline"] = "method"
    """Baselines need no cleverness; tables read every method against them."""
    self_scored: bool = False
    """Resample-ablation based (patching, EAP, EAP-IG, ACDC): a patching ground truth on the same model
    scores it partly against itself."""

    def __post_init__(self) -> None:
        if self.edge_scope not in ("none", "heads", "all"):
            raise ValueError(f"edge_scope {self.edge_scope!r} is not one of 'none', 'heads', 'all'")
        if self.prompt_count not in PROMPT_COUNTS:
            raise ValueError(f"prompt_count {self.prompt_count!r} is not one of {PROMPT_COUNTS}")
        if self.kind not in ("method", "baseline"):
            raise ValueError(f"kind {self.kind!r} is not 'method' or 'baseline'")

    def default_config(self) -> Any:
        return self.config_type(**self.defaults)


class MethodRegistry(dict[str, CircuitMethod]):
    """A name → CircuitMethod mapping that refuses to register a name twice."""

    def __setitem__(self, name: str, method: CircuitMethod) -> None:
        if name in self:
            raise ValueError(f"circuit method {name!r} is already registered")
        super().__setitem__(name, method)


METHODS = MethodRegistry()


def register_method(method: CircuitMethod) -> CircuitMethod:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> CircuitMethod:
    if name not in METHODS:
        raise ValueError(f"unknown circuit method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def list_methods() -> list[str]:
    return sorted(METHODS)


def run_method(
    name: str, model: HookedTransformer, problem: CircuitProblem, config: Any = None
) -> CircuitScores:
    """Run the method called `name` (default config unless one is given), timing it and measuring memory."""
    method = get_method(name)
    config = method.default_config() if config is None else config
    if not isinstance(config, method.config_type):
        raise ValueError(
            f"method {name!r} takes a {method.config_type.__name__}, got {type(config).__name__}"
        )
    with measured(model.cfg.device) as m:
        out = method.run(model, problem, config)
    return CircuitScores(
        name, out.node_scores, out.edge_scores, m.seconds, m.peak_memory_mb, out.sweep, out.extra_node_scores
    )
