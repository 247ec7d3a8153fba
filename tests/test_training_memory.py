"""Training from a store many times larger than the shuffle buffer keeps the process's memory bounded by the
buffer, not the store (benchmarks/bench_memory.py measures the same at 1 GiB)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from saelab.activations.store import write_random_store

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_memory.py"
MIB = 2**20


@pytest.mark.slow
def test_training_memory_is_bounded_by_the_buffer_not_the_store(tmp_path) -> None:
    d, n_tokens, buffer_tokens, batch_size = 512, 131_072, 4096, 2048
    store = write_random_store(tmp_path, "0.resid_post", n_tokens, d, shard_tokens=16_384, dtype="float32")
    assert (store.n_tokens, store.d, len(store.shard_sizes)) == (n_tokens, d, 8)
    store_mib = n_tokens * d * 4 / MIB  # 256 MiB, 32x the buffer
    env = {**os.environ, "PYTHONPATH": str(BENCH.parents[1])}
    done = subprocess.run([sys.executable, str(BENCH), "--child",
                           json.dumps([str(tmp_path), buffer_tokens, batch_size,
                                                                             512, 16])],
                          capture_output=True, text=True, env=env, timeout=540)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["tokens"] == n_tokens  # one whole epoch was read
    look_ahead_mib = 8 * batch_size * d * 4 / MIB  # the trainer's normalisation look-ahead (8 batches)
    bound = row["buffer_mib"] + look_ahead_mib + row["saes_mib"] + 128  # + torch's step temporaries
    assert bound < store_mib / 1.3  # a bound that holding the store would break
    assert row["training_growth_mib"] <= bound, row
    # the bound (no model)
    assert row["peak_rss_mib"] <= row["buffer_mib"] + row["saes_mib"] + 1024, row
