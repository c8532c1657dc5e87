"""End-to-end benchmark on the Mininet topology: floods and scans, detected and blocked live.

One run of a scenario built here: 20 s of benign traffic alone (the baseline),
then floods one after another, each from its own attacker host (SYN floods
with forged sources, UDP floods), then scans. Prints per flood and in
aggregate: detection latency and time-to-block (from the first attack packet
at the victim), flood packets the switch dropped after the block, and the
benign Host1 traffic during attacks as a ratio of the same traffic in the
baseline, all measured in the same run; and every block of a benign host.

    .venv/bin/python scripts/bench_e2e.py [--floods 10] [--rate 20000] [--workdir run/bench-e2e]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from iadm.scenario.report import outcomes
from iadm.scenario.runner import run_scenario
from iadm.scenario.spec import host_mac, load_scenario

BASELINE = 20.0
SPACING = 6.0


def build(path: Path, floods: int, rate: int) -> None:
    attacks = []
    t = BASELINE
    for i in range(floods):
        kind = "syn-flood" if i % 2 == 0 else "udp-flood"
        spoof = "spoof = true\n" if i % 4 == 0 else ""
        attacks.append(f'[[attack]]\nkind = "{kind}"\nhosts = ["a{i + 1}"]\ntarget = "h2"\nstart = {t}\n'
                       f'duration = 3\nrate = {rate}\n{spoof}')
        t += SPACING
    for j, kind in enumerate(("service-scan", "service-scan")):
        attacks.append(f'[[attack]]\nkind = "{kind}"\nhosts = ["a{floods + j + 1}"]\ntarget = "h2"\nstart = {t}\n'
                       f'duration = 5\nrate = 1000\n')
        t += SPACING + 2
    path.write_text(f'name = "bench-e2e"\nduration = {t + 4}\ndevices = 1\nattackers = {floods + 2}\n'
                    f'[background]\ndevices = ["h1", "d1"]\nscale = 4.0\n' + "\n".join(attacks))


def pct(values, q):
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floods", type=int, default=10)
    parser.add_argument("--rate", type=int, default=20000, help="packets/s per flood")
    parser.add_argument("--workdir", default="run/bench-e2e")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    build(workdir / "scenario.toml", args.floods, args.rate)
    scenario = load_scenario(str(workdir / "scenario.toml"))
    result = run_scenario(scenario, workdir, say=lambda text: print(f"  {text}", file=sys.stderr, flush=True))
    rows = outcomes(result)

    generated = {}
    for name, text in result.generators.items():
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if lines:
            generated[name.split("-", 2)[2]] = lines[-1]   # attacking host -> its generator's counters
    print(f"\n{'attack':32} {'detect ms':>9} {'block ms':>9} {'sent after block':>16} {'reached':>8} {'dropped':>8}")
    detect, block, dropped_shares, scan_blocks = [], [], [], []
    for w, r in zip(result.windows, rows):
        gen = generated.get(w.hosts[0], {})
        sent_after = None
        if r.blocked and "rate" in gen:
            sent_after = max(0, gen["sent"] - int((r.blocked - gen["started_at"]) * gen["rate"]))
        share = 1 - r.after / sent_after if sent_after else None
        if w.kind.endswith("flood"):
            if r.detection_latency is not None:
                detect.append(r.detection_latency)
            if r.time_to_block is not None:
                block.append(r.time_to_block)
            if share is not None:
                dropped_shares.append(share)
        elif r.time_to_block is not None:
            scan_blocks.append(r.time_to_block)
        print(f"{w.name[:32]:32} {(r.detection_latency or float('nan')) * 1000:9.0f} "
              f"{(r.time_to_block or float('nan')) * 1000:9.0f} {sent_after if sent_after is not None else '-':>16} "
              f"{r.after:>8} {f'{share:.2%}' if share is not None else '-':>8}")

    h1 = result.devices["h1"]
    per_second = np.array(h1["per_second"], dtype=float)
    seconds = np.arange(len(per_second)) + h1["started_at"]
    attacked = np.zeros(len(per_second), dtype=bool)
    for w in result.windows:
        attacked |= (seconds + 1 > w.start) & (seconds < w.end)
    baseline = (seconds < result.t0 + BASELINE) & (seconds >= result.t0 + 1)
    ratio_requests = per_second[attacked, 0].mean() / per_second[baseline, 0].mean()
    benign_macs = {host_mac(h) for h in ("h1", "h2", "d1")}
    wrong_blocks = [b for b in result.blocks if b["match"].get("eth_src") in benign_macs]

    floods = sum(w.kind.endswith("flood") for w in result.windows)
    print(f"\nfloods: {floods}, blocked {len(block)}; scans blocked {len(scan_blocks)}/{len(result.windows) - floods}")
    print(f"detection latency   median {statistics.median(detect) * 1000:6.0f} ms   p95 {pct(detect, 95) * 1000:6.0f} ms")
    print(f"time to block       median {statistics.median(block) * 1000:6.0f} ms   p95 {pct(block, 95) * 1000:6.0f} ms"
          f"   (target: median <= 200, p95 <= 500)")
    print(f"scans: time to block max {max(scan_blocks, default=float('nan')):.2f} s (target <= 2 s)")
    print(f"flood packets sent after the block and dropped at the switch: min {min(dropped_shares):.2%}, "
          f"median {statistics.median(dropped_shares):.2%} (target >= 99%)")
    print(f"benign Host1 requests answered per second during attacks / baseline: {ratio_requests:.3f} "
          f"(target >= 0.90)")
    print(f"blocks of benign hosts: {len(wrong_blocks)} (target 0)"
          + (f": {[b['match'] for b in wrong_blocks]}" if wrong_blocks else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
