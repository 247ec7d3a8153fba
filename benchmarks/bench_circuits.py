"""Circuit methods on the bundled models: node/edge AUC against the causal ground truths, and wall-clock time
per run (the discrete-SAE method's end-to-end time against ACDC's).

    .venv/bin/python benchmarks/bench_circuits.py            # every method, 3 seeds, all four task columns
    .venv/bin/python benchmarks/bench_circuits.py --quick    # IOI only, 1 seed, without ACDC

A thin front end to evals/circuit_table.py that runs in its own throw-away workspace, so the table holds only
this run's results; the table is printed and written to benchmarks/results/circuit_table.md (+ .json).
"""

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "evals"))

import circuit_table  # noqa: E402  (evals/ is a folder of scripts, not a package)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="IOI on saelab-tiny, one seed, no ACDC")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3; 1 with --quick)")
    args = parser.parse_args()
    argv = ["--seeds", str(args.seeds or (1 if args.quick else 3))]
    if args.quick:
        argv += ["--columns", "ioi@saelab-tiny", "--methods", "sae_codes,sae_codes_topk,patching,eap,eap_ig",
                 "--out", str(REPO / "benchmarks" / "results" / "circuit_table_quick.md")]
    with tempfile.TemporaryDirectory(prefix="saelab-bench-circuits-") as workspace:
        return circuit_table.main(["--workspace", workspace, *argv])


if __name__ == "__main__":
    sys.exit(main())
