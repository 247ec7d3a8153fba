"""Reading an SAE's input from a hook site and writing a replacement back into the model (splicing).

A site kind that can be spliced registers how its SAE-shaped activation [batch, pos, d_in] goes back into the
hooked tensor (`register_write_back`). Kinds without an entry (e.g. "head_result", a per-head z·W_O that no
single hook carries) can still be read and reconstructed, but not spliced; `splice_unsupported` says why.
"""

from collections.abc import Callable

import einops
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from saelab.activations.sites import HookSite
from saelab.registry import Registry
from saelab.sae import SAE

WriteBack = Callable[[Float[Tensor, "batch pos d_in"], HookedTransformer], Tensor]
"""(SAE-shaped activation, model) -> the tensor to return from the site's hook."""

WRITE_BACKS: Registry[WriteBack] = Registry("write-back for site kind")


def register_write_back(kind: str, write_back: WriteBack) -> WriteBack:
    """Say how a site kind's SAE-shaped activation goes back into its hook; a kind registered twice is an error."""
    return WRITE_BACKS.register(kind, write_back)


def _same_shape(acts: Tensor, model: HookedTransformer) -> Tensor:
    return acts


def _split_heads(
    acts: Float[Tensor, "batch pos n_heads_d_head"], model: HookedTransformer
) -> Float[Tensor, "batch pos n_heads d_head"]:
    return einops.rearrange(acts, "batch pos (n_heads d_head) -> batch pos n_heads d_head",
                            n_heads=model.cfg.n_heads)


for _kind in ("resid_pre", "resid_mid", "resid_post", "mlp_out", "mlp_post", "attn_out"):
    register_write_back(_kind, _same_shape)
register_write_back("attn_z", _split_heads)


def splice_unsupported(site: HookSite) -> str | None:
    """Why an SAE at `site` cannot be spliced into the model (None when it can)."""
    if site.kind.name in WRITE_BACKS:
        return None
    return (f"site kind {site.kind.name!r} has no single hook that carries its activation, so a reconstruction "
            f"cannot be spliced back; spliceable kinds: {', '.join(WRITE_BACKS)}")


def sae_site(sae: SAE, model: HookedTransformer, site: "HookSite | str | None" = None) -> HookSite:
    """The hook site an SAE reads (from its config unless given), checked against the model and d_in."""
    if site is None:
        if not sae.cfg.hook_site:
            raise ValueError("the SAE's config names no hook site; pass the site explicitly, e.g. '1.resid_post'")
        site = sae.cfg.hook_site
    site = (site if isinstance(site, HookSite) else HookSite.parse(site)).validate(model.cfg)
    if site.width(model.cfg) != sae.cfg.d_in:
        raise ValueError(f"hook site {str(site)!r} is {site.width(model.cfg)} wide in this model, but the SAE's "
                         f"d_in is {sae.cfg.d_in}; evaluate the SAE on the model it was trained on")
    return site


def sae_target_site(sae: SAE, model: HookedTransformer, site: HookSite) -> HookSite:
    """The site an SAE's reconstruction belongs at: `site` (the one it reads) for an SAE, its config's output site
    for a transcoder (checked against the model and d_target)."""
    if not sae.cfg.is_transcoder:
        return site
    target = HookSite.parse(sae.cfg.output_site).validate(model.cfg)
    if target.width(model.cfg) != sae.cfg.d_target:
        raise ValueError(f"output site {str(target)!r} is {target.width(model.cfg)} wide in this model, but the "
                         f"transcoder's d_out is {sae.cfg.d_target}; evaluate it on the model it was trained on")
    return target


def flat_acts(site: HookSite, hook_tensor: Tensor, model: HookedTransformer) -> Float[Tensor, "batch pos d_in"]:
    """The SAE-shaped activation [batch, pos, d_in] at `site` from its hooked tensor."""
    acts = site.read(hook_tensor, model)
    return acts.reshape(*acts.shape[:2], -1)


def replacing_hook(site: HookSite, model: HookedTransformer, replacement: Float[Tensor, "batch pos d_in"]):
    """A (hook name, hook fn) pair that puts `replacement` at `site` in place of the model's activation."""
    reason = splice_unsupported(site)
    if reason is not None:
        raise ValueError(reason)
    write_back = WRITE_BACKS[site.kind.name]

    def hook(tensor: Tensor, hook) -> Tensor:
        return write_back(replacement.to(tensor.dtype), model).reshape(tensor.shape)

    return site.hook_name, hook


def capturing_hook(site: HookSite, model: HookedTransformer, into: dict[HookSite, Tensor]):
    """A (hook name, hook fn) pair that stores the site's SAE-shaped activation in `into[site]`."""

    def hook(tensor: Tensor, hook) -> None:
        into[site] = flat_acts(site, tensor, model)

    return site.hook_name, hook


@torch.no_grad()
def run_with_replacement(
    model: HookedTransformer, tokens: Tensor, site: HookSite, replacement: Float[Tensor, "batch pos d_in"]
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of `tokens` with the activation at `site` replaced by `replacement`."""
    return model.run_with_hooks(tokens, fwd_hooks=[replacing_hook(site, model, replacement)])
