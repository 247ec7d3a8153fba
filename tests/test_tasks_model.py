"""Task datasets against TransformerLens: same tokens as `to_tokens`, metrics on a real forward pass."""

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from saelab.tasks import get_task, gpt2_tokenizer, list_tasks


@pytest.fixture(scope="module")
def tiny_gpt2_vocab_model():
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=8,
        n_ctx=128,
        d_head=4,
        n_heads=2,
        d_vocab=50257,
        act_fn="gelu",
        attn_only=True,
        seed=0,
    )
    return HookedTransformer(cfg, tokenizer=gpt2_tokenizer()).eval()


@pytest.mark.parametrize("task", list_tasks())
def test_tokens_match_transformer_lens_and_metrics_run(tiny_gpt2_vocab_model, task):
    model = tiny_gpt2_vocab_model
    data = get_task(task).generate(model.tokenizer, 6, seed=0)
    expected = model.to_tokens(data.clean_prompts, prepend_bos=True, padding_side="right")
    assert torch.equal(data.clean_tokens, expected)
    with torch.no_grad():
        logits = model(data.clean_tokens)
    metric = get_task(task).metric(logits, data)
    assert metric.shape == (6,) and torch.isfinite(metric).all()
    assert get_task(task).accuracy(logits, data).dtype == torch.bool


def test_byte_level_model_tokenizer_is_refused_by_name(random_model):
    with pytest.raises(ValueError, match=r"' Michael' is not a single token under tokenizer 'saelab-random'"):
        get_task("ioi").generate(random_model.tokenizer, 2, seed=0)
