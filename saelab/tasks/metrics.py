"""Task metrics as pure functions of logits and token ids (torch only)."""

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def logits_at(
    logits: Float[Tensor, "batch pos d_vocab"], positions: Int[Tensor, " batch"]
) -> Float[Tensor, "batch d_vocab"]:
    """Each row's logits at its own position (e.g. "end" in a right-padded batch)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, positions.to(logits.device)]


def logit_diff(
    logits_BV: Float[Tensor, "batch d_vocab"],
    answer_ids: Int[Tensor, " batch"],
    wrong_ids: Int[Tensor, "batch n_wrong"],
) -> Float[Tensor, " batch"]:
    """logit(answer) − max logit over the wrong answers (IOI: logit(IO) − logit(S))."""
    answer = logits_BV.gather(1, answer_ids[:, None].to(logits_BV.device))[:, 0]
    wrong = logits_BV.gather(1, wrong_ids.to(logits_BV.device)).max(dim=1).values
    return answer - wrong


def top1_among(
    logits_BV: Float[Tensor, "batch d_vocab"],
    answer_ids: Int[Tensor, " batch"],
    candidate_ids: Int[Tensor, "batch n_candidates"],
) -> Bool[Tensor, " batch"]:
    """Whether the answer's logit beats every other candidate's strictly (ties count as wrong)."""
    candidate_ids = candidate_ids.to(logits_BV.device)
    answer = logits_BV.gather(1, answer_ids[:, None].to(logits_BV.device))
    others = logits_BV.gather(1, candidate_ids).masked_fill(
        candidate_ids == answer_ids[:, None].to(logits_BV.device), float("-inf")
    )
    return answer[:, 0] > others.max(dim=1).values


def year_prob_diff(
    logits_BV: Float[Tensor, "batch d_vocab"],
    year_ids: Int[Tensor, "batch 100"],
    start_yy: Int[Tensor, " batch"],
) -> Float[Tensor, " batch"]:
    """Greater-than: Σ_{YY' > YY} p(YY') − Σ_{YY' ≤ YY} p(YY'), p a softmax over the full vocabulary.

    `year_ids[:, k]` is the token of the two-digit year k ("00".."99").
    """
    probs = logits_BV.float().softmax(dim=-1).gather(1, year_ids.to(logits_BV.device))
    later = torch.arange(year_ids.shape[1], device=logits_BV.device)[None, :] > start_yy[:, None].to(
        logits_BV.device
    )
    return (probs * later).sum(dim=1) - (probs * ~later).sum(dim=1)


def year_argmax_later(
    logits_BV: Float[Tensor, "batch d_vocab"],
    year_ids: Int[Tensor, "batch 100"],
    start_yy: Int[Tensor, " batch"],
) -> Bool[Tensor, " batch"]:
    """Greater-than accuracy: the most likely two-digit year is later than YY."""
    best = logits_BV.gather(1, year_ids.to(logits_BV.device)).argmax(dim=1)
    return best > start_yy.to(logits_BV.device)
