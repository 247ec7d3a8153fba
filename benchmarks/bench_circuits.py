"""Circuit methods on the bundled models: node/edge AUC against the causal ground truths, and wall-clock time
per run (the discrete-SAE method's end-to-end time against ACDC's).

    .venv/bin/python benchmarks/bench_circuits.py            # every method + baselines, 5 test seeds, 4 columns
    .venv/bin/python benchmarks/bench_circuits.py --quick    # IOI only, 1 test seed, without ACDC

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
    parser.add_argument("--seeds", type=int, default=None, help="test seeds per method (default 5; 1 with --quick)")
    args = parser.parse_args()
    argv = ["--split", "test", "--seeds", str(args.seeds or (1 if args.quick else 5))]
    if args.quick:
        argv += ["--columns", "ioi@saelab-tiny", "--methods",
                 "random,layer_order,output_change,sae_codes,sae_codes_saelab,patching,eap,eap_ig",
                 "--out", str(REPO / "benchmarks" / "results" / "circuit_table_quick.md")]
    with tempfile.TemporaryDirectory(prefix="saelab-bench-circuits-") as workspace:
        return circuit_table.main(["--workspace", workspace, *argv])


if __name__ == "__main__":
    sys.exit(main())
