"""Training batches: shuffled through a mixing buffer, reproducible, resumable, multi-site, streamed."""

import numpy as np
import pytest
import torch

from saelab.activations import cache_activations, open_site_store
from saelab.activations.batches import BatchConfig, StoreWindows, store_batches, stream_batches
from saelab.activations.store import ActivationStoreError
from saelab.data import TextsSource

CONTEXT = 16
SITES = "0.resid_post,1.resid_pre,1.mlp_post"  # 0.resid_post and 1.resid_pre are the same tensor


def _texts(n=60):
    rng = np.random.default_rng(5)
    words = ["alpha", "beta", "gamma", "delta", "(", ")", ":", "return", "Mary", "John"]
    return tuple(" ".join(rng.choice(words, size=int(rng.integers(3, 30)))) for _ in range(n))


SOURCE = TextsSource(_texts(), name="batch-texts")


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, random_model):
    out = tmp_path_factory.mktemp("store")
    cache_activations("saelab-random", SITES, 640, "float32", out, SOURCE, context_len=CONTEXT, batch_size=4,
                      shard_tokens=6 * CONTEXT, model=random_model, progress=False)
    return out


def _take(batches, n):
    return [next(batches) for _ in range(n)]


def _rows(store_dir, site):
    return open_site_store(store_dir, site).all_rows()


def test_an_epoch_is_a_permutation_of_the_store(store_dir):
    config = BatchConfig(batch_size=32, buffer_tokens=128, chunks_per_buffer=8, seed=0, epochs=1)
    batches = list(store_batches(store_dir, "0.resid_post", config))
    assert len(batches) == 20 and all(b["0.resid_post"].shape == (32, 64) for b in batches)
    got = torch.cat([b["0.resid_post"] for b in batches])
    expected = _rows(store_dir, "0.resid_post")
    assert not torch.equal(got, expected)  # shuffled ...
    order = lambda x: x[torch.argsort(x[:, 0])]  # noqa: E731
    assert torch.equal(order(got), order(expected))  # ... and every row exactly once


def test_buffer_mixes_distant_chunks_and_bounds_window_size(store_dir):
    stores = [open_site_store(store_dir, "0.resid_post")]
    config = BatchConfig(batch_size=8, buffer_tokens=64, chunks_per_buffer=4, seed=1)
    windows = StoreWindows(stores, config)
    sizes = [
        windows.load(w, torch.randperm)["0.resid_post"].shape[0] for w in range(windows.windows_per_epoch)
    ]
    assert max(sizes) <= 64 and sum(sizes) == 640
    first_chunks = windows._chunk_order(0)[:4]
    assert first_chunks.max() - first_chunks.min() > 4  # not just neighbouring rows


def test_same_seed_same_batches_other_seed_other_batches(store_dir):
    config = BatchConfig(batch_size=24, buffer_tokens=96, chunks_per_buffer=4, seed=3)
    first = _take(store_batches(store_dir, SITES, config), 40)  # crosses epochs (640 rows = 26.7 batches)
    second = _take(store_batches(store_dir, SITES, config), 40)
    other = _take(store_batches(store_dir, SITES, BatchConfig(24, 96, 4, seed=4)), 40)
    assert all(torch.equal(a[s], b[s]) for a, b in zip(first, second, strict=True) for s in a)
    assert not torch.equal(first[0]["0.resid_post"], other[0]["0.resid_post"])


def test_multi_site_batches_share_token_rows(store_dir):
    for batch in _take(store_batches(store_dir, SITES, BatchConfig(batch_size=50, buffer_tokens=200)), 8):
        assert set(batch) == {"0.resid_post", "1.resid_pre", "1.mlp_post"}
        assert torch.equal(batch["0.resid_post"], batch["1.resid_pre"])
        assert batch["1.mlp_post"].shape == (50, 256) and batch["1.mlp_post"].dtype == torch.float32


def test_state_dict_resumes_exactly(store_dir):
    config = BatchConfig(batch_size=24, buffer_tokens=96, chunks_per_buffer=4, seed=9)
    reference = _take(store_batches(store_dir, SITES, config), 35)
    for stop in (0, 3, 4, 27):  # at a window boundary, inside one, across an epoch
        batches = store_batches(store_dir, SITES, config)
        _take(batches, stop)
        state = batches.state_dict()
        resumed = store_batches(store_dir, SITES, config)
        resumed.load_state_dict(state)
        for got, expected in zip(_take(resumed, 35 - stop), reference[stop:], strict=True):
            assert all(torch.equal(got[s], expected[s]) for s in got)
    with pytest.raises(ValueError, match="seed"):
        store_batches(store_dir, SITES, BatchConfig(24, 96, 4, seed=10)).load_state_dict(state)


def test_width_and_row_mismatches_are_errors(store_dir, tmp_path, random_model):
    with pytest.raises(ActivationStoreError, match="expects d=128"):
        store_batches(store_dir, "1.mlp_post", BatchConfig(8), expect_d={"1.mlp_post": 128})
    cache_activations("saelab-random", "0.attn_out", 640, "float32", store_dir, SOURCE, seed=1,
                      context_len=CONTEXT, batch_size=4, shard_tokens=6 * CONTEXT, model=random_model,
                      progress=False)
    with pytest.raises(ActivationStoreError, match="different token rows"):
        store_batches(store_dir, "0.resid_post,0.attn_out", BatchConfig(8))


def test_bad_batch_configs():
    with pytest.raises(ValueError, match="buffer_tokens 8 must be at least batch_size 16"):
        BatchConfig(batch_size=16, buffer_tokens=8)
    with pytest.raises(ValueError, match="batch_size 0"):
        BatchConfig(batch_size=0)


def test_streamed_batches_match_the_store_without_disk(store_dir, random_model):
    config = BatchConfig(batch_size=32, buffer_tokens=128, seed=2)
    streamed = list(stream_batches(random_model, SITES, SOURCE, config, context_len=CONTEXT, n_tokens=640))
    assert len(streamed) == 20
    got = torch.cat([b["1.mlp_post"] for b in streamed])
    expected = _rows(store_dir, "1.mlp_post")
    order = lambda x: x[torch.argsort(x[:, 0])]  # noqa: E731
    torch.testing.assert_close(order(got), order(expected))
    assert all(torch.equal(b["0.resid_post"], b["1.resid_pre"]) for b in streamed)
    again = stream_batches(random_model, SITES, SOURCE, config, context_len=CONTEXT, n_tokens=640)
    _take(again, 6)
    resumed = stream_batches(random_model, SITES, SOURCE, config, context_len=CONTEXT, n_tokens=640)
    resumed.load_state_dict(again.state_dict())
    for got, expected in zip(resumed, streamed[6:], strict=True):
        assert torch.equal(got["1.mlp_post"], expected["1.mlp_post"])
