"""The README's first command: attacks on the reference topology, detected and blocked live.

Runs scenarios/demo.toml: benign IoT traffic from Host1 and d1 to Host2, then a
forged-source SYN flood (a1), a UDP flood (a2), a port scan (a3), a data exfiltration
(d2 to a4), SSH and telnet password guessing (a5, a6 against d1), ARP spoofing of
Host2's address (a7), a DNS tunnel (d4 to a4), slow HTTP (a8), a ping flood (a9), and
two floods through the uplink router r1 with outside sources (an SNMP reflection and a
forged-source SYN flood at Host2's web server) while Host2 keeps serving Host1, d1 and
the outside client o1. The monitor on the monitor host labels the mirrored flows with
the rules, the behaviour watchers, the packet inspectors and the model, the controller
blocks each attacker at its switch port, and the demo ends with one row per attack (the
technique its alerts named, the drop rule's MAC and port) and a PNG timeline, then the
mitigation table: which kind (shape drop or rate limit for the uplink floods, MAC block
for the LAN attackers), how long after the first flood packet it was on the switch, what
the switch dropped after it (its entry and meter counters, read back with ovs-ofctl),
Host2's benign traffic during the uplink floods against its same-run baseline, and
whether the uplink (r1's MAC or port) was ever blocked.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iadm.scenario.report import benign_during, delay_table, outcomes, table, timeline, uplink_blocks, uplink_table
from iadm.scenario.runner import run_scenario
from iadm.scenario.spec import host_mac, load_scenario


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
    from iadm.scenario.runner import OPERATOR_PORT
    from iadm.testbed import MGMT_MONITOR
    print(f"   console, while the demo runs: http://{MGMT_MONITOR}:{OPERATOR_PORT}/console/ (from this machine, "
          f"over the management link; log in with the [api] token of {args.workdir}/monitor.toml)", flush=True)
    result = run_scenario(scenario, Path(args.workdir), detect=True, alert_only=args.alert_only,
                          say=lambda text: print(f"   {text}", flush=True))
    rows = outcomes(result)
    step("per attack (times since the background traffic started)")
    print(table(result, rows))
    png = result.outdir / "timeline.png"
    timeline(result, rows, png)
    print(f"timeline: {png}")
    step("mitigation: shaped for the uplink floods, by MAC for the LAN attackers (switch counters read back)")
    print(uplink_table(result, rows))
    step("the victims' delay at the mirror (benign handshakes and answers; --alert-only lets the floods run)")
    print(delay_table(result, rows))

    blocked = {b["match"].get("eth_src") for b in result.blocks if b["action"] == "block"}
    attackers = {h for a in scenario.attacks for h in a.hosts}
    benign = ["h1", "h2", "monitor"] + [f"d{i}" for i in range(1, scenario.devices + 1)] + \
        [f"a{i}" for i in range(1, scenario.attackers + 1)] + (["r1"] if scenario.uplink else [])
    wrongly = [h for h in benign if h not in attackers and host_mac(h) in blocked]
    missed = [r.name for r in rows if not r.passed]   # not blocked (a kind unblockable by design: not named)
    undetected = [r.name for r in rows if r.detected is None]
    unnamed = [r.name for r in rows if r.detected is not None and not r.named]
    h1 = result.devices.get("h1", {}).get("counts", {})
    sent = sum(c["sent"] for c in h1.values())
    answered = sum(c["answered"] for c in h1.values())
    uplink_cut = uplink_blocks(result) if scenario.uplink else []
    ok = (not wrongly and not uplink_cut and not (undetected if args.alert_only else missed) and not unnamed
          and sent and answered >= 0.9 * sent)
    step("verdict")
    if args.alert_only:
        print(f"   attacks detected and marked (alert-only, nothing dropped): {len(rows) - len(undetected)}/"
              f"{len(rows)}" + (f" (not: {', '.join(undetected)})" if undetected else ""))
    else:
        unblockable = [r.name for r in rows if not r.blockable]
        print(f"   attacks blocked: {len(rows) - len(missed) - len(unblockable)}/{len(rows) - len(unblockable)}"
              + (f" (not: {', '.join(missed)})" if missed else ""))
        if unblockable:
            print(f"   not blockable by design, so required detected and named instead: {', '.join(unblockable)}")
    print(f"   attacks named with their technique (alert.metadata.technique): {len(rows) - len(unnamed) - len(undetected)}"
          f"/{len(rows)}" + (f" (not: {', '.join(unnamed + undetected)})" if unnamed or undetected else ""))
    print(f"   benign hosts blocked: {', '.join(wrongly) or 'none'}")
    print(f"   Host1's requests answered: {answered}/{sent}")
    if scenario.uplink:
        print(f"   uplink (r1's MAC or port) blocked: {'YES' if uplink_cut else 'never'}")
        shares = {h: b["share"] for h, b in benign_during(result, rows).items()}
        print("   benign traffic to Host2 during the uplink floods, % of its baseline: "
              + ", ".join(f"{h} {100 * v:.0f}%" for h, v in shares.items()))
    print(f"\n   {'DEMO PASSED' if ok else 'DEMO FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
