"""One forward pass, many hook sites: run the model once, stopping after the deepest layer any site needs."""

from collections.abc import Iterable, Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.positions import Positions
from saelab.activations.sites import HookSite, parse_sites, stop_layer


def forward_sites(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    sites: Sequence[HookSite],
    attention_mask: Int[Tensor, "batch pos"] | None = None,
) -> dict[HookSite, Tensor]:
    """Each site's activation [batch, pos, *feature_shape] from one pass truncated after the deepest site.

    Runs in whatever grad mode the caller chose; sites must be validated against `model.cfg` beforehand.
    """
    hooked: dict[str, Tensor] = {}

    def keep(tensor: Tensor, hook) -> None:
        hooked[hook.name] = tensor

    hook_names = sorted({site.hook_name for site in sites})
    model.run_with_hooks(
        tokens,
        fwd_hooks=[(name, keep) for name in hook_names],
        stop_at_layer=stop_layer(sites),
        attention_mask=attention_mask,
    )
    return {site: site.read(hooked[site.hook_name], model) for site in sites}


def collect(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    sites: "Iterable[HookSite | str] | str",
    positions: Positions | None = None,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
) -> dict[HookSite, Tensor]:
    """Activations of `sites` for an in-memory token batch, reduced by `positions` (default: all tokens).

    Runs under `torch.no_grad()` rather than inference mode so the results can be patched into a later
    forward pass that builds a graph (as attribution methods do).
    """
    parsed = [site.validate(model.cfg) for site in parse_sites(sites)]
    positions = positions or Positions.all()
    tokens = tokens.to(model.cfg.device)
    with torch.no_grad():
        acts = forward_sites(model, tokens, parsed, attention_mask)
    return {site: positions.select(act) for site, act in acts.items()}
