"""TopK SAE with the AuxK loss (Gao et al., OpenAI 2024, "Scaling and evaluating sparse autoencoders")."""

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from saelab.sae.config import SAEConfig
from saelab.sae.functional import (
    TopKWorkspace,
    auxk_loss,
    dictionary_init,
    mse_loss,
    sparse_decode,
    sparse_topk_encode,
    topk_workspace,
    unit_norm_decoder_,
)
from saelab.sae.model import SAE
from saelab.sae.registry import register_architecture
from saelab.sae.types import Architecture, InitialState, LossCoefficients, LossOutput, SAEOutput


def topk_init(cfg: SAEConfig, generator: torch.Generator) -> InitialState:
    return InitialState(dictionary_init(cfg, generator), {})


def topk_encode(sae: SAE, x: Float[Tensor, "batch d_in"]) -> Float[Tensor, "batch d_sae"]:
    pre = sae.encoder_input(x) @ sae.W_enc + sae.b_enc
    values, indices = pre.topk(sae.cfg.k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(1, indices, values.relu())


def topk_new_workspace(sae: SAE, batch: int) -> TopKWorkspace:
    return topk_workspace(batch, sae.W_enc.detach(), sae.W_dec.detach(), sae.cfg.k)


def topk_forward(
    sae: SAE, x: Float[Tensor, "batch d_in"], dead_mask: Bool[Tensor, " d_sae"] | None,
    work: TopKWorkspace | None = None,
) -> SAEOutput:
    cfg = sae.cfg
    b_dec = sae.b_dec if sae.subtracts_b_dec else None
    sel = sparse_topk_encode(x, b_dec, sae.W_enc, sae.b_enc, cfg.k, dead_mask, cfg.n_auxk, work)
    return SAEOutput(
        x_hat=sparse_decode(sel.acts, sel.indices, sae.W_dec, work.grad_W_dec if work is not None else None)
        + sae.b_dec + sae.skip(x),
        acts=sel.acts,
        indices=sel.indices,
        pre_acts=sel.pre_acts,
        aux_acts=sel.aux_acts,
        aux_indices=sel.aux_indices,
    )


def topk_loss(
    sae: SAE, x: Float[Tensor, "batch d_in"], target: Float[Tensor, "batch d_target"], out: SAEOutput,
    coef: LossCoefficients,
) -> LossOutput:
    mse = mse_loss(out.x_hat, target)
    auxk = auxk_loss(target, out, sae.W_dec)
    return LossOutput(mse + sae.cfg.auxk_coefficient * auxk, {"mse": mse, "auxk": auxk})


TOPK = register_architecture(
    Architecture(
        name="topk",
        init=topk_init,
        encode=topk_encode,
        forward=topk_forward,
        loss=topk_loss,
        post_step_=unit_norm_decoder_,
        workspace=topk_new_workspace,
        apply_b_dec_to_input=True,
        unit_norm_decoder=True,
        uses_k=True,
        default_lr=3e-3,
        saelens_name="topk",
    )
)
