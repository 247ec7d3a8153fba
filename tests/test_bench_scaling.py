"""benchmarks/bench_scaling.py: its power-law fit, its memory accounting, and a tiny grid end to end."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_scaling  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)


def test_power_law_recovers_the_exponents_of_a_known_law() -> None:
    a = np.array([1.0, 2.0, 4.0, 8.0, 2.0, 4.0])
    b = np.array([1.0, 1.0, 9.0, 4.0, 16.0, 25.0])
    seconds = 3.0 * a**2 * b**0.5
    assert bench_scaling.power_law({"a": list(a), "b": list(b)}, list(seconds)) == {"a": 2.0, "b": 0.5}
    assert bench_scaling.power_law({"a": [1.0, 2.0]}, [1.0, 4.0]) == {"a": 2.0}
    assert bench_scaling.power_law({"a": [1.0]}, [1.0]) == {}  # too few points to fit


def test_process_groups_share_a_process_only_when_they_fit() -> None:
    names = ["saelab", "sparsify", "floor"]
    gib_per_weight = 2**30 / 4 / 2048  # d_sae giving 1 GiB of W_enc at d_in 2048
    d_sae = int(gib_per_weight)
    assert bench_scaling.process_groups(names, 2048, d_sae, 22 * 1024) == [names]  # 11 + 9 + 1 GiB
    split = [["saelab", "floor"], ["sparsify", "floor"]]
    assert bench_scaling.process_groups(names, 2048, d_sae, 15 * 1024) == split
    assert bench_scaling.process_groups(names, 2048, d_sae, 11 * 1024) == [["sparsify", "floor"]]
    assert bench_scaling.process_groups(names, 2048, d_sae, 5 * 1024) == []


def test_peak_rss_after_a_reset_counts_a_fresh_allocation() -> None:
    before = bench_scaling.proc_status_kib("VmRSS")
    bench_scaling.reset_peak_rss()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    risen_mib = (bench_scaling.proc_status_kib("VmHWM") - before) / 1024
    del block
    assert 60 <= risen_mib < 200


@pytest.mark.slow
def test_quick_grid_writes_its_tables(tmp_path) -> None:
    out = tmp_path / "scaling.json"
    assert bench_scaling.main(["--quick", "--parts", "step", "crossover", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    cells = report["step"]["cells"]
    assert [(c["d_in"], c["width"], c["k"]) for c in cells] == [(32, 4, 4), (32, 4, 8)]
    for cell in cells:
        assert not cell.get("errors"), cell["errors"]
        assert {"saelab", "floor"} <= cell["seconds"].keys()
        assert 0 < cell["share"]["saelab"] < 1  # floor / step seconds: no step beats its GEMM
    # 128 x 32 weights: a few MiB at most, unless the whole process's RSS were counted (hundreds of MiB)
    assert 0 <= cells[0]["peak_mib"]["saelab"] < 64
    assert [c["k"] for c in report["crossover"]["cells"]] == [4, 64]
    assert all("dense torch" in c["seconds"] for c in report["crossover"]["cells"])
    table = out.with_suffix(".md").read_text()
    assert "### TopK step grid" in table and "| 32 | 4x (128) | 8 |" in table
    assert "### Dense/sparse crossover in k" in table
