"""Wall time of the main job against its targets: `tfedge demo` under 180 s, `--quick` under 60 s.

Run: python benchmarks/bench_demo.py [--runs N] — prints JSON (median and max wall seconds per mode,
plus the deployed model's bytes and accuracy and the seconds of each pipeline stage from each run's report.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"quick": 60.0, "full": 180.0}


def run_once(quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "tfedge", "demo", "--out", out] + (["--quick"] if quick else [])
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        stages = json.loads((Path(out) / "report.json").read_text())["stages"]
    deployed = stages[-1]
    return {
        "seconds": round(seconds, 1),
        "bytes": deployed["bytes"],
        "accuracy": deployed["accuracy"],
        "stage_seconds": {stage["stage"]: stage["seconds"] for stage in stages},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    result = {}
    for mode in ("quick", "full"):
        runs = [run_once(mode == "quick") for _ in range(args.runs)]
        times = [r["seconds"] for r in runs]
        result[mode] = {
            "median_seconds": statistics.median(times),
            "max_seconds": max(times),
            "target_seconds": TARGETS[mode],
            "meets_target": max(times) <= TARGETS[mode],
            "runs": runs,
        }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
