"""The prompt explorer's computations: per-token top latents of an SAE on a typed prompt, and direct feature
attribution (DFA) of an attention-output (attn_z) SAE latent over source positions and heads.

Both are compositions of library pieces (`saelab.activations.collect`, `SAE.encode`,
`saelab.evals.attention.latent_dfa`).
"""

from typing import NamedTuple

import torch
from jaxtyping import Float, Int64
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.collect import collect
from saelab.activations.sites import HookSite
from saelab.errors import SaelabError
from saelab.evals.attention import encoder_matrix, latent_dfa
from saelab.sae import SAE


class PromptTooLongError(SaelabError):
    """A prompt longer than the model's context."""


class PromptLatents(NamedTuple):
    """The strongest latents at each token of a prompt."""

    tokens: Int64[Tensor, " pos"]
    """Token ids, BOS first."""
    str_tokens: list[str]
    """The tokens as text."""
    latent_ids: Int64[Tensor, "pos k"]
    """Ids of the k most active latents at each position, strongest first."""
    latent_acts: Float[Tensor, "pos k"]
    """Their activations (≤ 0 means fewer than k latents fired there)."""


def prompt_tokens(model: HookedTransformer, text: str) -> Int64[Tensor, " pos"]:
    """`text` tokenised as the model reads it (BOS first); refuses empty text and text over the context."""
    if not text.strip():
        raise SaelabError("the prompt is empty: type some text")
    tokens = model.to_tokens(text, prepend_bos=True, truncate=False)[0]
    if tokens.shape[0] > model.cfg.n_ctx:
        raise PromptTooLongError(
            f"the prompt is {tokens.shape[0]} tokens but the model reads at most {model.cfg.n_ctx}; shorten "
            "it"
        )
    return tokens


def _site_input(model: HookedTransformer, sae: SAE, site: HookSite,
                tokens: Int64[Tensor, " pos"]) -> Float[Tensor, "pos d_in"]:
    acts = collect(model, tokens[None], [site])[site][0]
    flat = acts.reshape(acts.shape[0], -1)
    if flat.shape[1] != sae.cfg.d_in:
        raise SaelabError(
            f"site {site} gives {flat.shape[1]} values per token but the SAE reads d_in={sae.cfg.d_in}; "
            "the explorer supports SAEs trained on one whole-token site"
        )
    return flat


@torch.no_grad()
def prompt_top_latents(
    model: HookedTransformer, sae: SAE, site: HookSite, text: str, k: int = 5
) -> PromptLatents:
    """The k most active latents of `sae` at each token of `text` (one forward pass to the site's layer)."""
    tokens = prompt_tokens(model, text)
    latents = sae.encode(_site_input(model, sae, site, tokens))
    acts, ids = latents.topk(min(k, sae.cfg.d_sae), dim=-1, sorted=True)
    return PromptLatents(tokens, list(model.to_str_tokens(tokens)), ids, acts.float())


class DirectFeatureAttribution(NamedTuple):
    """How one latent's pre-activation at `position` splits over source positions and heads."""

    contributions: Float[Tensor, "src n_heads"]
    """A^h[position, s] · v^h[s] · W_enc[block h, latent]; zero for sources after `position`."""
    str_tokens: list[str]
    """The prompt's tokens (sources)."""
    position: int
    """The destination position."""


@torch.no_grad()
def attn_z_dfa(model: HookedTransformer, sae: SAE, site: HookSite, text: str, latent: int,
               position: int) -> DirectFeatureAttribution:
    """DFA (Kissane et al., 2024) of `latent` of an attn_z SAE at `position` of `text`, as computed by
    `saelab.evals.attention.latent_dfa` (its terms sum to the pre-activation minus the bias term)."""
    if site.kind.name != "attn_z":
        raise SaelabError(f"DFA needs an SAE on an attn_z site, not {site}")
    try:
        encoder_matrix(sae)
    except ValueError as exc:
        raise SaelabError(str(exc)) from None
    if not 0 <= latent < sae.cfg.d_sae:
        raise SaelabError(f"latent {latent} is out of range: the SAE has latents 0..{sae.cfg.d_sae - 1}")
    tokens = prompt_tokens(model, text)
    if not 0 <= position < tokens.shape[0]:
        raise SaelabError(
            f"position {position} is out of range: the prompt has positions 0..{tokens.shape[0] - 1}"
        )
    destination = torch.tensor([position], device=tokens.device)
    result = latent_dfa(model, sae, site.layer, tokens[None], latent, destination)
    return DirectFeatureAttribution(
        result.contributions[0].t().float(), list(model.to_str_tokens(tokens)), position
    )
