"""The README's first command: attacks on the reference topology, detected and blocked live.

Runs scenarios/demo.toml: benign IoT traffic from Host1 and d1 to Host2, then a
forged-source SYN flood (a1), a UDP flood (a2), a port scan (a3) and a data
exfiltration (d2 to a4). The monitor on the monitor host labels the mirrored
flows with the rules and the model, the controller blocks each attacker at
its switch port, and the demo ends with one row per attack and a PNG timeline.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iadm.scenario.report import outcomes, table, timeline
from iadm.scenario.runner import run_scenario
from iadm.scenario.spec import host_mac, load_scenario

BENIGN = ("h1", "h2", "d1")


def step(text):
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="scenarios/demo.toml")
    parser.add_argument("--workdir", default="run/demo", help="pcaps, records, alert log, logs and the PNG go here")
    parser.add_argument("--alert-only", action="store_true", help="the controller marks instead of dropping")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    step(f"scenario {scenario.name}: {len(scenario.attacks)} attacks over {scenario.duration:.0f} s of IoT traffic")
    result = run_scenario(scenario, Path(args.workdir), detect=True, alert_only=args.alert_only,
                          say=lambda text: print(f"   {text}", flush=True))
    rows = outcomes(result)
    step("per attack (times since the background traffic started)")
    print(table(result, rows))
    png = result.outdir / "timeline.png"
    timeline(result, rows, png)
    print(f"timeline: {png}")

    blocked = {b["match"].get("eth_src") for b in result.blocks if b["action"] == "block"}
    wrongly = [h for h in BENIGN if host_mac(h) in blocked]
    missed = [r.name for r in rows if r.blocked is None]
    undetected = [r.name for r in rows if r.detected is None]
    h1 = result.devices.get("h1", {}).get("counts", {})
    sent = sum(c["sent"] for c in h1.values())
    answered = sum(c["answered"] for c in h1.values())
    ok = not wrongly and not (undetected if args.alert_only else missed) and sent and answered >= 0.9 * sent
    step("verdict")
    if args.alert_only:
        print(f"   attacks detected and marked (alert-only, nothing dropped): {len(rows) - len(undetected)}/"
              f"{len(rows)}" + (f" (not: {', '.join(undetected)})" if undetected else ""))
    else:
        print(f"   attacks blocked: {len(rows) - len(missed)}/{len(rows)}" + (f" (not: {', '.join(missed)})"
                                                                            if missed else ""))
    print(f"   benign hosts blocked: {', '.join(wrongly) or 'none'}")
    print(f"   Host1's requests answered: {answered}/{sent}")
    print(f"\n   {'DEMO PASSED' if ok else 'DEMO FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
