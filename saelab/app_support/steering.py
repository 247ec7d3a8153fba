"""Ablating or steering one latent of a dictionary (SAE or transcoder) on a prompt, and the top next-token
logits before and after — the Feature graphs page's intervention.

The edit follows Marks et al. (2024): the activation at the dictionary's target site is written as
x = Σ_i f_i W_dec[i] + b_dec + ε, and only latent i's term changes, f_i → scale · f_i, so the target becomes
x + (scale − 1) · f_i · W_dec[i]; the error ε and every other latent stay as they were. scale 0 ablates,
scale 2 doubles, a negative scale flips. For a transcoder f_i is read at its input site (e.g. 1.resid_mid) and
the edit lands at its output site (1.mlp_out). Loads torch: import it from here, not from
`saelab.app_support`.
"""

from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite
from saelab.app_support.prompts import prompt_tokens
from saelab.errors import SaelabError
from saelab.evals.splice import flat_acts, sae_site, splice_unsupported
from saelab.sae import SAE


@dataclass(frozen=True)
class LatentEdit:
    """Which latent to change, by how much, and where."""

    latent: int
    """Index of the latent in its dictionary."""
    scale: float = 0.0
    """Its activation is multiplied by this (0 ablates it)."""
    position: int | None = None
    """Token position to edit (BOS is 0); None edits every position."""

    def __post_init__(self) -> None:
        if self.latent < 0:
            raise ValueError(f"latent must be a non-negative index, got {self.latent}")
        if not -100.0 <= self.scale <= 100.0:
            raise ValueError(f"scale must be between -100 and 100, got {self.scale}")
        if self.position is not None and self.position < 0:
            raise ValueError(f"position must be a non-negative token index or None, got {self.position}")


class TopLogit(NamedTuple):
    token: str
    token_id: int
    logit: float
    prob: float


class EditResult(NamedTuple):
    """The prompt's next-token prediction (at its last token) before and after the edit."""

    str_tokens: list[str]
    latent_acts: Float[Tensor, " pos"]
    """The latent's activation at each position of the unedited run."""
    before: list[TopLogit]
    """Top logits of the unedited model, largest first."""
    after: list[TopLogit]
    """Top logits with the edit, largest first."""
    logit_diff: Float[Tensor, " d_vocab"]
    """after − before at the last position, for every token."""


def _sites(model: HookedTransformer, sae: SAE) -> tuple[HookSite, HookSite]:
    """(where the latents are read, where the edit lands), checked against the model."""
    try:
        source = sae_site(sae, model)
        target = HookSite.parse(sae.cfg.target_site).validate(model.cfg)
    except ValueError as exc:
        raise SaelabError(str(exc)) from None
    reason = splice_unsupported(target)
    if reason is not None:
        raise SaelabError(reason)
    if target.width(model.cfg) != sae.W_dec.shape[1]:
        raise SaelabError(f"site {target} is {target.width(model.cfg)} wide but the dictionary writes "
                          f"{sae.W_dec.shape[1]} values; use it on the model it was trained on")
    return source, target


def _top(model: HookedTransformer, logits: Float[Tensor, " d_vocab"], k: int) -> list[TopLogit]:
    probs = logits.float().softmax(-1)
    values, ids = logits.float().topk(min(k, logits.shape[-1]))
    return [TopLogit(model.to_string(torch.tensor([i])), i, float(v), float(probs[i]))
            for v, i in zip(values.tolist(), ids.tolist(), strict=True)]


@torch.no_grad()
def edit_latent(model: HookedTransformer, sae: SAE, text: str, edit: LatentEdit, k: int = 10) -> EditResult:
    """Run `text` with `edit` applied to `sae`'s latent (see the module docstring) and without; the top `k`
    next-token logits at the last token of both runs."""
    source, target = _sites(model, sae)
    if edit.latent >= sae.cfg.d_sae:
        raise SaelabError(f"latent {edit.latent} is out of range: the dictionary has latents "
                          f"0..{sae.cfg.d_sae - 1}")
    tokens = prompt_tokens(model, text)
    if edit.position is not None and edit.position >= tokens.shape[0]:
        raise SaelabError(f"position {edit.position} is out of range: the prompt has positions "
                          f"0..{tokens.shape[0] - 1}")
    acts: dict[str, Tensor] = {}

    def read(tensor: Tensor, hook) -> None:
        acts["f"] = sae.encode(flat_acts(source, tensor, model)[0])[:, edit.latent].to(tensor.dtype)

    def write(tensor: Tensor, hook) -> Tensor:
        factor = (edit.scale - 1.0) * acts["f"]
        if edit.position is not None:
            factor = torch.zeros_like(factor).index_copy(0, torch.tensor([edit.position]),
                                                          factor[edit.position:edit.position + 1])
        delta = factor[:, None] * sae.W_dec[edit.latent].to(tensor.dtype)
        edited = flat_acts(target, tensor, model) + delta[None]
        return target.kind.write_back(edited, model).reshape(tensor.shape)

    before = model(tokens[None])[0, -1]
    after = model.run_with_hooks(tokens[None],
                                 fwd_hooks=[(source.hook_name, read), (target.hook_name, write)])[0, -1]
    return EditResult(list(model.to_str_tokens(tokens)), acts["f"].float(), _top(model, before, k),
                      _top(model, after, k), (after - before).float())
