"""Hook sites as typed values: `HookSite(layer, kind)` with the TransformerLens hook name derived from it.

The compact text form `"2.resid_post"` is parsed once, at the boundary, into a `HookSite`; nothing downstream
parses hook names back into layers.
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from math import prod
from typing import NamedTuple

import einops
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.registry import Registry

Transform = Callable[[Tensor, HookedTransformer, int], Tensor]
"""(hook tensor, model, layer) -> activation of shape [batch, pos, *feature_shape]."""


def _identity(hook_tensor: Tensor, model: HookedTransformer, layer: int) -> Tensor:
    return hook_tensor


def _concat_heads(
    z: Float[Tensor, "batch pos n_heads d_head"], model: HookedTransformer, layer: int
) -> Float[Tensor, "batch pos n_heads_d_head"]:
    return einops.rearrange(z, "batch pos n_heads d_head -> batch pos (n_heads d_head)")


def _head_result(
    z: Float[Tensor, "batch pos n_heads d_head"], model: HookedTransformer, layer: int
) -> Float[Tensor, "batch pos n_heads d_model"]:
    """Each head's output z·W_O (no bias), as TransformerLens' hook_result, without use_attn_result."""
    W_O = model.blocks[layer].attn.W_O.to(dtype=z.dtype, device=z.device)
    return einops.einsum(z, W_O, "batch pos n_heads d_head, n_heads d_head d_model -> batch pos n_heads d_model")


def _always(cfg: HookedTransformerConfig) -> str | None:
    return None


def _needs_mlp(cfg: HookedTransformerConfig) -> str | None:
    return "the model is attention-only" if cfg.attn_only else None


def _needs_sequential_mlp(cfg: HookedTransformerConfig) -> str | None:
    if cfg.attn_only:
        return "the model is attention-only"
    return "the model runs attention and MLP in parallel" if cfg.parallel_attn_mlp else None


@dataclass(frozen=True, eq=False)
class SiteKind:
    """One kind of hook site: where it hooks, how wide it is, how its activation is read."""

    name: str
    """Short name used in the text form, e.g. "resid_post"."""
    hook_template: str
    """TransformerLens hook name with a `{layer}` field, e.g. "blocks.{layer}.hook_resid_post"."""
    feature_shape: Callable[[HookedTransformerConfig], tuple[int, ...]]
    """Shape of one token's activation for a model config, e.g. (d_model,) or (n_heads, d_model)."""
    transform: Transform = _identity
    """Turns the hooked tensor into the activation (e.g. concatenating heads)."""
    unavailable: Callable[[HookedTransformerConfig], str | None] = _always
    """Why a model lacks this site (None when it has it)."""
    description: str = ""
    """One line for help texts."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.name):
            raise ValueError(f"site kind name {self.name!r} must be lower-case letters, digits and underscores")
        if "{layer}" not in self.hook_template:
            raise ValueError(f"hook template {self.hook_template!r} lacks a {{layer}} field")

    def width(self, cfg: HookedTransformerConfig) -> int:
        """Number of values per token once the activation is flattened (the SAE's d_in)."""
        return prod(self.feature_shape(cfg))

    # Kinds are registry singletons: compare, hash and pickle them by name.
    def __eq__(self, other: object) -> bool:
        return isinstance(other, SiteKind) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("SiteKind", self.name))

    def __reduce__(self):
        return (get_site_kind, (self.name,))

    def __repr__(self) -> str:
        return f"SiteKind({self.name!r})"


SITE_KINDS: Registry[SiteKind] = Registry("site kind")


def register_site_kind(kind: SiteKind) -> SiteKind:
    """Add a kind to the registry; a name registered twice is an error."""
    return SITE_KINDS.register(kind.name, kind)


def get_site_kind(name: str) -> SiteKind:
    """The registered site kind called `name`."""
    return SITE_KINDS.lookup(name)


def _d_model(cfg: HookedTransformerConfig) -> tuple[int, ...]:
    return (cfg.d_model,)


for _kind in (
    SiteKind("resid_pre", "blocks.{layer}.hook_resid_pre", _d_model, description="residual stream before the block"),
    SiteKind("resid_mid", "blocks.{layer}.hook_resid_mid", _d_model, unavailable=_needs_sequential_mlp,
             description="residual stream between attention and MLP"),
    SiteKind("resid_post", "blocks.{layer}.hook_resid_post", _d_model, description="residual stream after the block"),
    SiteKind("mlp_out", "blocks.{layer}.hook_mlp_out", _d_model, unavailable=_needs_mlp,
             description="MLP output"),
    SiteKind("mlp_post", "blocks.{layer}.mlp.hook_post", lambda cfg: (cfg.d_mlp,), unavailable=_needs_mlp,
             description="MLP neurons after the nonlinearity"),
    SiteKind("attn_z", "blocks.{layer}.attn.hook_z", lambda cfg: (cfg.n_heads * cfg.d_head,), _concat_heads,
             description="attention z (hook_z), heads concatenated"),
    SiteKind("attn_out", "blocks.{layer}.hook_attn_out", _d_model, description="attention output"),
    SiteKind("head_result", "blocks.{layer}.attn.hook_z", lambda cfg: (cfg.n_heads, cfg.d_model), _head_result,
             description="each head's output z·W_O, [n_heads, d_model] per token"),
):
    register_site_kind(_kind)

_TEXT_FORM = re.compile(r"(\d+)\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class HookSite:
    """A place in the model to read activations from: a layer and a kind."""

    layer: int
    """Block index, 0-based."""
    kind: SiteKind
    """What to read in that block (a registry entry; a kind name is accepted and looked up)."""

    def __post_init__(self) -> None:
        if isinstance(self.kind, str):
            object.__setattr__(self, "kind", get_site_kind(self.kind))
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"site layer {self.layer!r} must be a non-negative integer")

    @classmethod
    def parse(cls, text: str) -> "HookSite":
        """`"2.resid_post"` -> HookSite(2, resid_post). A bad form raises ValueError naming the text."""
        match = _TEXT_FORM.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None or match.group(2) not in SITE_KINDS:
            raise ValueError(
                f"bad hook site {text!r}: write LAYER.KIND, e.g. '1.resid_post'; valid kinds: {', '.join(SITE_KINDS)}"
            )
        return cls(int(match.group(1)), SITE_KINDS[match.group(2)])

    def __str__(self) -> str:
        return f"{self.layer}.{self.kind.name}"

    @property
    def hook_name(self) -> str:
        return self.kind.hook_template.format(layer=self.layer)

    def feature_shape(self, cfg: HookedTransformerConfig) -> tuple[int, ...]:
        return self.kind.feature_shape(cfg)

    def width(self, cfg: HookedTransformerConfig) -> int:
        return self.kind.width(cfg)

    def validate(self, cfg: HookedTransformerConfig) -> "HookSite":
        """Raise ValueError naming the site if the model lacks it; return the site otherwise."""
        if self.layer >= cfg.n_layers:
            raise ValueError(
                f"hook site {str(self)!r}: the model has layers 0..{cfg.n_layers - 1}, not {self.layer}"
            )
        reason = self.kind.unavailable(cfg)
        if reason is not None:
            valid = [k.name for k in SITE_KINDS.values() if k.unavailable(cfg) is None]
            raise ValueError(f"hook site {str(self)!r}: {reason}; valid kinds here: {', '.join(valid)}")
        return self

    def read(self, hook_tensor: Tensor, model: HookedTransformer) -> Tensor:
        """The activation [batch, pos, *feature_shape] from the tensor at `hook_name`."""
        return self.kind.transform(hook_tensor, model, self.layer)


def as_site(site: "HookSite | str") -> HookSite:
    return site if isinstance(site, HookSite) else HookSite.parse(site)


def parse_sites(sites: "str | Iterable[HookSite | str]") -> list[HookSite]:
    """Sites from "1.resid_post,1.attn_z" or a list of texts/sites; duplicates and empty lists are errors."""
    items = [s for s in sites.split(",") if s.strip()] if isinstance(sites, str) else list(sites)
    parsed = [as_site(s) for s in items]
    if not parsed:
        raise ValueError(f"no hook sites given ({sites!r}); write e.g. '1.resid_post,1.attn_z'")
    seen: set[HookSite] = set()
    for site in parsed:
        if site in seen:
            raise ValueError(f"hook site {str(site)!r} is listed twice")
        seen.add(site)
    return parsed


class SitePair(NamedTuple):
    """Where a dictionary reads (`input`) and what it reconstructs (`output`: another site for a transcoder,
    None for an SAE, which reconstructs its input)."""

    input: HookSite
    output: HookSite | None


def parse_site_pair(text: str) -> SitePair:
    """`"1.resid_post"` -> an SAE's site; `"1.resid_mid:1.mlp_out"` -> a transcoder's IN:OUT pair. A bad form,
    an unknown site or a pair of one site twice raises ValueError naming the text."""
    parts = text.strip().split(":")
    if len(parts) > 2 or not all(part.strip() for part in parts):
        raise ValueError(f"bad site pair {text!r}: write IN:OUT, e.g. '1.resid_mid:1.mlp_out', or one site")
    sites = [HookSite.parse(part) for part in parts]
    if len(sites) == 2 and sites[0] == sites[1]:
        raise ValueError(f"site pair {text!r} reads and reconstructs the same site; an SAE there is written "
                         f"{str(sites[0])!r}")
    return SitePair(sites[0], sites[1] if len(sites) == 2 else None)


def parse_site_pairs(text: str) -> list[SitePair]:
    """Comma-separated sites and IN:OUT pairs, e.g. "1.resid_mid:1.mlp_out,2.resid_post"; a pair listed twice
    or none at all is an error."""
    pairs = [parse_site_pair(part) for part in text.split(",") if part.strip()]
    if not pairs:
        raise ValueError(f"no hook sites given ({text!r}); write e.g. '1.resid_post' or '1.resid_mid:1.mlp_out'")
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"a site or pair is listed twice in {text!r}")
    return pairs


def sites_of_pairs(pairs: Iterable[SitePair]) -> list[HookSite]:
    """Every site the pairs read, inputs and outputs, each once, in order of first mention."""
    sites = [site for pair in pairs for site in (pair.input, pair.output) if site is not None]
    return list(dict.fromkeys(sites))


def stop_layer(sites: Iterable[HookSite]) -> int:
    """The `stop_at_layer` that runs every block the sites need and no more."""
    return max(site.layer for site in sites) + 1
