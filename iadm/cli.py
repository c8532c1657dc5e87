"""`iadm`: one subcommand per job."""
from __future__ import annotations

import argparse
import json
import os
import sys

from iadm.config import ConfigError, load_controller_config


def _api_client(args):
    from iadm.sdn.client import VerdictClient
    config = load_controller_config(installed_config(args.config, "controller.toml"))
    url = args.url or f"http://{config.api_host}:{config.api_port}"
    return VerdictClient(url, config.api_token)


ETC = "/etc/iadm"


def installed_config(given: str | None, name: str) -> str | None:
    """--config when given, else what deploy/install put in /etc/iadm (a gateway), else None."""
    if given:
        return given
    path = os.path.join(ETC, name)
    return path if os.path.isfile(path) else None


def cmd_controller(args) -> int:
    from iadm.sdn import launcher
    launcher.run(load_controller_config(installed_config(args.config, "controller.toml")), args.framework)
    return 0


def cmd_verdict(args) -> int:
    target = {}
    if args.target and ":" in args.target:
        target["src_mac"] = args.target
    elif args.target and args.target.isdigit() and args.action == "unblock":
        target["block_id"] = int(args.target)
    elif args.target:
        target["src_ip"] = args.target
    result = _api_client(args).verdict(action=args.action, duration=args.duration, in_port=args.in_port,
                                       reason=args.reason, source=args.source or "operator", **target)
    print(json.dumps(result, indent=2))
    return 0


def cmd_blocks(args) -> int:
    blocks = _api_client(args).blocks()
    if args.json:
        print(json.dumps(blocks, indent=2))
        return 0
    print(f"{'id':>5}  {'action':6}  {'left':>6}  {'target':40}  source / reason")
    for b in blocks:
        target = " ".join(f"{k}={v}" for k, v in b["match"].items() if k != "eth_type")
        print(f"{b['block_id']:>5}  {b['action']:6}  {b['remaining_seconds']:>5}s  {target:40}  "
              f"{b['source']} / {b['reason']}")
    return 0


def _flow_options(args, config=None) -> dict:
    def pick(name, default):
        given = getattr(args, name)
        return given if given is not None else (getattr(config, name) if config else default)
    from iadm.fleet.events import gateway_name
    options = {"status_interval": pick("status_interval", 5.0), "idle_timeout": pick("idle_timeout", 30.0),
               "max_flows": pick("max_flows", 1 << 18),
               "gateway": gateway_name(getattr(args, "gateway", None) or (config.gateway_id if config else ""))}
    if getattr(args, "record_kind", None):
        options["kind"] = args.record_kind
    return options


def _labeller(args, watch=False, model=None, responder_options=None, rule_files=None, variables=None,
              zscore=None):
    rule_files = args.rules or rule_files
    if not rule_files:
        return None
    from iadm.monitor import Labeller
    from iadm.rules.parser import RuleErrors
    try:
        return Labeller.from_rules(rule_files, args.vars or variables, watch=watch, model=model,
                                   responder_options=responder_options, zscore=zscore)
    except RuleErrors as errs:
        raise ValueError(f"rules not loaded:\n{errs}") from None


def cmd_features(args) -> int:
    if args.output.lower().endswith(".parquet"):
        return _features_dataset(args)
    if args.dask or not os.path.isfile(args.pcap):
        raise ValueError(f"{args.output}: many captures, or --dask, write a dataset: give an OUT.parquet")
    from iadm.monitor import convert
    stats = convert(args.pcap, args.output, labeller=_labeller(args), **_flow_options(args))
    print(f"{args.pcap}: {stats['packets']:,} packets, {stats['decoded']:,} decoded, "
          f"{stats['records_written']:,} records -> {args.output}", file=sys.stderr)
    if args.rules:
        print(f"  labelled by rules: {stats['rule_attacks']:,} attack records", file=sys.stderr)
    skipped = {k: stats[k] for k in ("truncated", "bad_header", "fragments", "other_ethertype", "unsupported")
               if stats[k]}
    if skipped:
        print(f"  not decoded: {skipped}", file=sys.stderr)
    return 0


def _features_dataset(args) -> int:
    """Captures to a records dataset partitioned by capture and hour, here or on a Dask cluster."""
    import contextlib

    from iadm.scale.features import extract_many
    if args.workers and not args.dask:
        raise ValueError("--workers sizes the local Dask cluster: give it with --dask local")
    with (_dask_client(args) if args.dask else contextlib.nullcontext()) as client:
        stats = extract_many(args.pcap, args.output, _flow_options(args), client=client, rules=args.rules,
                             variables=args.vars)
    print(f"{args.pcap}: {stats['captures']} captures, {stats['packets']:,} packets, {stats['decoded']:,} decoded, "
          f"{stats['records_written']:,} records -> {args.output} in {stats['seconds']:.1f} s", file=sys.stderr)
    if args.rules:
        print(f"  labelled by rules: {stats['rule_attacks']:,} attack records", file=sys.stderr)
    if stats["skipped"]:
        print(f"  not decoded: {stats['skipped']}", file=sys.stderr)
    if stats["failed"]:
        from iadm.capture.batch import CaptureError
        raise CaptureError(f"{len(stats['failed'])} of {stats['captures']} captures failed (the others are "
                           "written):\n  " + "\n  ".join(stats["failed"]))
    return 0


def _dask_client(args):
    from iadm.scale.cluster import connect
    return connect(args.dask, workers=args.workers)


def cmd_monitor(args) -> int:
    """Without a config (--config, or /etc/iadm/monitor.toml on a gateway): records (and rule
    labels) only. With one: the full detection path."""
    from iadm.monitor import watch
    args.config = installed_config(args.config, "monitor.toml")
    if not args.config:
        watch({"iface": args.iface, "pcap": args.pcap}, records_path=args.records, duration=args.duration,
              status_every=args.status_every, labeller=_labeller(args, watch=True), **_flow_options(args))
        return 0
    from iadm.config import load_monitor_config
    from iadm.detection.compose import build_monitor
    from iadm.rules.parser import RuleErrors
    config = load_monitor_config(args.config)
    try:
        monitor = build_monitor(config, replay=bool(args.pcap), rule_files=args.rules, variables=args.vars)
    except RuleErrors as errs:
        raise ValueError(f"rules not loaded:\n{errs}") from None
    api = monitor.api
    print(f"iadm monitor: rules {', '.join(args.rules or config.rule_files)}, model {config.model or 'none'}, "
          f"z-score {'on' if config.zscore else 'off'}, verdicts to {config.verdict_url or 'nobody (alerts only)'}, "
          f"alert log {config.alert_log}"
          + (f", operator API http://{api.server_address[0]}:{api.server_address[1]}/" if api else ""),
          file=sys.stderr, flush=True)
    given = {k: v for k, v in _flow_options(args).items() if getattr(args, k, None) is not None}
    try:
        monitor.run({"iface": args.iface, "pcap": args.pcap}, records_path=args.records, duration=args.duration,
                    status_every=args.status_every, **given)
    finally:
        monitor.close()
    return 0


def cmd_baseline_learn(args) -> int:
    from iadm.config import load_monitor_config
    from iadm.detection.baseline import learn_from_captures
    os.environ.setdefault("IADM_OPERATOR_TOKEN", "unused")   # the operator API is not started
    learn_from_captures(load_monitor_config(args.config), args.pcaps, args.output,
                        say=lambda text: print(text, file=sys.stderr))
    return 0


def cmd_console_rebuild(args) -> int:
    """The console's store from the alert log (the record of truth): after a lost or moved store."""
    from iadm.config import load_monitor_config
    from iadm.console.store import open_store
    os.environ.setdefault("IADM_OPERATOR_TOKEN", "unused")   # the operator API is not started
    config = load_monitor_config(args.config)
    store = open_store(config.console_store)
    try:
        done = store.rebuild(config.alert_log)
    finally:
        store.close()
    print(f"{config.console_store}: {done['events']:,} events from {config.alert_log}", file=sys.stderr)
    for error in done["errors"][:20]:
        print(f"  skipped {error}", file=sys.stderr)
    return 0


def cmd_alerts(args) -> int:
    from iadm.alerts.log import follow, read_events
    from iadm.alerts.review import AlertFilter, parse_time, summary, table
    keep = AlertFilter(since=parse_time(args.since) if args.since else None,
                       until=parse_time(args.until) if args.until else None,
                       src=args.src, category=args.category, sid=args.sid, source=args.source)
    errors: list = []
    if args.follow:
        if not args.json:
            print(table([]), flush=True)
        for event in follow(args.log, errors=errors):
            if keep(event):
                if args.json:
                    event.pop("_ts", None)
                    print(json.dumps(event), flush=True)
                else:
                    print(table([event]).splitlines()[-1], flush=True)
        return 0
    events = [e for e in read_events(args.log, errors) if keep(e)]
    if args.summary:
        print(summary(events))
    elif args.json:
        for e in events:
            e.pop("_ts")
            print(json.dumps(e))
    else:
        print(table(events))
    for err in errors:
        print(f"iadm alerts: skipped {err}", file=sys.stderr)
    return 0


def cmd_dataset_capture(args) -> int:
    from iadm.scenario.dataset import capture
    _, table = capture(args.scenario, args.output, detect=args.detect,
                       say=lambda text: print(text, file=sys.stderr, flush=True))
    print(table)
    return 0


def _anomaly_data(args):
    from iadm.ml.datasets import load
    frame, report = load(args.data, ["saddr", "daddr", "sport", "dport", "proto", "bytes", "pkts", "stime", "ltime"],
                         names_file=getattr(args, "names", None))
    print(f"{args.data}: {report.rows_kept:,} of {report.rows_read:,} rows kept", file=sys.stderr)
    return frame


def cmd_anomaly_compare(args) -> int:
    from iadm.stats.compare import compare, plot, ranking
    table, curves = compare(_anomaly_data(args), detectors=args.detectors, top_services=args.services)
    if not len(table):
        print("no service has enough records with more than one value to compare detectors on")
        return 1
    with pd_options():
        print(table.round(4).to_string(index=False))
        print("\nmean rank per detector (1 = best; EM higher is better, MV lower is better):")
        print(ranking(table).round(3).to_string())
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        table.to_csv(os.path.join(args.output, "anomaly-compare.csv"), index=False)
        plot(curves, table, os.path.join(args.output, "em-mv.png"))
        print(f"\n-> {args.output}/anomaly-compare.csv, {args.output}/em-mv.png")
    return 0


def cmd_anomaly_scan(args) -> int:
    from iadm.stats.zscore import MEASUREMENTS, ZScoreDetector
    detector = ZScoreDetector(args.db, args.tolerance, args.frequency, args.min_count)
    try:
        flagged = detector.scan(_anomaly_data(args))
    finally:
        detector.close()
    print(f"{len(flagged):,} records scanned in periods of {args.frequency:g} h, tolerance {args.tolerance:g}: "
          f"{int(flagged['zscore_attack'].sum()):,} anomalous")
    for m in MEASUREMENTS:
        print(f"  {m:16} {len(detector.anomalies(m)):>8,} open anomalies")
    return 0


def pd_options():
    import pandas as pd
    return pd.option_context("display.width", 200, "display.max_columns", 20)


def cmd_rules_check(args) -> int:
    from collections import Counter

    from iadm.rules.parser import RuleErrors, load_rules
    try:
        rules = load_rules(args.files, args.vars)
    except RuleErrors as errs:
        for err in errs.errors:
            print(f"{err}", file=sys.stderr)
        print(f"{len(errs.errors)} error(s); nothing loaded", file=sys.stderr)
        return 1
    print(f"{len(rules)} rules loaded from {', '.join(args.files)}")
    for name, counts in (("action", Counter(r.action for r in rules)), ("protocol", Counter(r.proto for r in rules)),
                         ("classtype", Counter(r.classtype or "-" for r in rules))):
        print(f"  by {name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"  with feature predicates: {sum(1 for r in rules if r.predicates)}, with thresholds: "
          f"{sum(1 for r in rules if r.threshold)}, packet-level: {sum(1 for r in rules if r.packet_level)}")
    for rule in rules:
        if not rule.sid:
            print(f"  warning: {rule.path}:{rule.line}: no sid; alerts will carry signature_id 0", file=sys.stderr)
    return 0


def cmd_rules_generate(args) -> int:
    from iadm.ml.datasets import read_records
    from iadm.rules.generate import generate
    try:
        frame = read_records(args.data)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{args.data}: cannot read labelled records: {exc}") from None
    result = generate(frame, first_sid=args.first_sid, min_leaf=args.min_leaf, seed=args.seed, source=args.data)
    with open(args.output, "w", encoding="utf-8") as fh:
        fh.write(result.text)
    m = result.metrics
    print(f"{result.rules} rules -> {args.output} (features: {', '.join(result.features)})")
    print(f"held-out third ({result.test_rows} rows): precision {m['precision']:.4f} recall {m['recall']:.4f} "
          f"F1 {m['f1']:.4f}  (tp {m['tp']}, fp {m['fp']}, fn {m['fn']}, tn {m['tn']})")
    return 0


def cmd_train(args) -> int:
    if args.dask:
        from iadm.ml.dask_train import train_on_cluster
        with _dask_client(args) as client:
            model = train_on_cluster(args.data, args.model, args.output, client, features_name=args.features,
                                     target=args.target, seed=args.seed, record_kind=args.record_kind)
    else:
        if args.workers:
            raise ValueError("--workers sizes the local Dask cluster: give it with --dask local")
        from iadm.ml.train import train
        model = train(args.data, args.model, args.output, features_name=args.features, target=args.target,
                      seed=args.seed, names_file=args.names, record_kind=args.record_kind)
    print(f"model -> {model.path} (card {model.path[:-7]}.json), hold-out F1-macro "
          f"{model.card['metrics']['f1_macro']:.4f}")
    return 0


def cmd_evaluate(args) -> int:
    from iadm.ml import evaluate, registry
    from iadm.ml.train import compare, evaluate_file
    if args.compare:
        table = compare(args.data, features_name=args.features, target=args.target, names_file=args.names)
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
        return 0
    if not args.model:
        raise ValueError("evaluate needs --model models/NAME (or --compare)")
    result = evaluate_file(args.data, args.model, cv=args.cv, names_file=args.names)
    print(evaluate.render(result))
    if args.report:
        from iadm.ml.plots import write_report
        for path in write_report(result, registry.load(args.model), args.report, args.data):
            print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iadm", description="Intrusion detection and prevention for IoT gateways")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("controller", help="run the OpenFlow 1.3 gateway controller and its verdict API")
    p.add_argument("--config", help="TOML config file (see config/controller.toml)")
    p.add_argument("--framework", choices=("osken", "ryu"), default="osken",
                   help="Ryu API implementation: os-ken 4.x (default) or Ryu 4.34")
    p.set_defaults(func=cmd_controller)

    def api_args(p):
        p.add_argument("--config", help="controller config: API address and token (or IADM_API_TOKEN)")
        p.add_argument("--url", help="verdict API base URL (default: from the config)")

    def flow_args(p):
        p.add_argument("--status-interval", type=float, help="seconds between flow records (5; monitor config)")
        p.add_argument("--idle-timeout", type=float, help="seconds before a quiet flow closes (30)")
        p.add_argument("--max-flows", type=int, help="flow table size; oldest evicted (262144)")
        p.add_argument("--gateway", help="the gateway the packets came from, a column of every record "
                                         "(default: this host's name)")
        p.add_argument("--rules", action="append", help="label records with these rule files (repeatable)")
        p.add_argument("--vars", help="variables file for the rules (rules/variables.conf)")

    def dask_args(p, what):
        p.add_argument("--dask", metavar="local|ADDRESS", help=f"{what} on a Dask cluster: `local` (a LocalCluster "
                                                              "here) or a scheduler's address (tcp://HOST:8786)")
        p.add_argument("--workers", type=int, help="worker processes of a local cluster (one per core)")

    p = sub.add_parser("features", help="turn captures into Bot-IoT flow records (.csv, or a .parquet dataset "
                                        "partitioned by capture and hour)")
    p.add_argument("pcap", help="a pcap/pcapng file, a directory of them, or a glob (quoted)")
    p.add_argument("-o", "--output", required=True, help="records: a .csv file (one capture), or OUT.parquet: a "
                                                         "dataset directory, capture=NAME/hour=YYYY-MM-DDTHH/")
    dask_args(p, "one task per capture")
    p.add_argument("--record-kind", choices=("flow", "status", "running"), default="flow",
                   help="flow: one per flow, as racluster and Bot-IoT's rows (default); status: Argus's status "
                        "records; running: the flow record so far at each status record (what the live "
                        "detector sees)")
    flow_args(p)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("monitor", help="watch an interface (or replay a capture) and report flows")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--iface", help="capture live here (the mirror port)")
    src.add_argument("--pcap", help="replay this capture file")
    p.add_argument("--records", help="also write the records to this .csv or .parquet")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--status-every", type=float, default=1.0, help="seconds between status lines (1)")
    p.add_argument("--config", help="detect and respond: rules, model, verdict API, alert log "
                                    "(see config/monitor.toml)")
    flow_args(p)
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("alerts", help="review the alert log: filter, table, summary, follow")
    p.add_argument("log", nargs="?", default="/var/log/iadm/alerts.json", help="alert log (rotated files included)")
    p.add_argument("--since", help="ISO time, epoch seconds or an age (10m, 2h)")
    p.add_argument("--until", help="ISO time, epoch seconds or an age")
    p.add_argument("--src", help="source IP or MAC")
    p.add_argument("--category", help="DoS, DDoS, Reconnaissance, Theft, ...")
    p.add_argument("--sid", type=int, help="rule sid")
    p.add_argument("--source", choices=("rule", "model", "zscore"), help="who said attack")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="the matching events as JSON lines")
    shape.add_argument("--summary", action="store_true", help="counts per category, source and rule")
    p.add_argument("--follow", action="store_true", help="print new alerts as they arrive (Ctrl-C stops)")
    p.set_defaults(func=cmd_alerts)

    anomaly = sub.add_parser("anomaly", help="unsupervised detectors: compare them, or run the Z-score in batch "
                                             "mode").add_subparsers(dest="anomaly_command", required=True)
    p = anomaly.add_parser("compare", help="Isolation Forest, LOF, One-Class SVM, half-space trees and Z-score "
                                           "per measurement and service, ranked by Excess-Mass and Mass-Volume")
    p.add_argument("data", help="records (.csv/.parquet) or Bot-IoT CSV; labels, when present, add PR-AUC")
    p.add_argument("--detectors", nargs="+", default=["iforest", "lof", "ocsvm", "hst", "zscore"],
                   choices=["iforest", "lof", "ocsvm", "hst", "zscore"])
    p.add_argument("--services", type=int, default=4, help="the most frequent services compared (4)")
    p.add_argument("-o", "--output", help="directory for the table (CSV) and the EM/MV curves (PNG)")
    p.set_defaults(func=cmd_anomaly_compare)
    p = anomaly.add_parser("scan", help="the Z-score detector in batch mode, period by period")
    p.add_argument("data")
    p.add_argument("--db", help="SQLite file: statistics carried over between scans")
    p.add_argument("--tolerance", type=float, default=3.0, help="|z| above this is anomalous (2-6; 3)")
    p.add_argument("--frequency", type=float, default=24.0, help="hours per period (1-168; 24)")
    p.add_argument("--min-count", type=int, default=10, help="values of a key before it may flag (10)")
    p.set_defaults(func=cmd_anomaly_scan)

    dataset = sub.add_parser("dataset", help="labelled data from scenario runs").add_subparsers(
        dest="dataset_command", required=True)
    p = dataset.add_parser("capture", help="run a scenario on the Mininet topology; write the pcap, records "
                                           "and labels by injection window")
    p.add_argument("scenario", help="scenario file (scenarios/*.toml)")
    p.add_argument("-o", "--output", required=True, help="directory for the pcap, records.parquet, run.json, logs")
    p.add_argument("--detect", action="store_true", help="also run the live monitor (attackers get blocked, so "
                                                         "attack windows end early)")
    p.set_defaults(func=cmd_dataset_capture)

    rules = sub.add_parser("rules", help="rule files: check them").add_subparsers(dest="rules_command",
                                                                                 required=True)
    p = rules.add_parser("check", help="parse rule files; report every error with file, line and column")
    p.add_argument("files", nargs="+")
    p.add_argument("--vars", default=None, help="variables file (ipvar/portvar), e.g. rules/variables.conf")
    p.set_defaults(func=cmd_rules_check)
    p = rules.add_parser("generate", help="rules from labelled records: CFS, entropy tree, one rule per attack path")
    p.add_argument("data", help="labelled records: Bot-IoT CSV or our records (.csv/.parquet) with attack, "
                                "category, subcategory")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--first-sid", type=int, default=2_000_000)
    p.add_argument("--min-leaf", type=float, default=0.01, help="smallest leaf: a fraction of the training rows "
                                                                "(below 1) or a count (0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_rules_generate)

    baseline = sub.add_parser("baseline", help="site adaptation: learn what this site's devices do every day") \
        .add_subparsers(dest="baseline_command", required=True)
    p = baseline.add_parser("learn", help="replay captures of the site through the monitor config; every alert "
                                          "becomes a baseline entry (JSON), no longer alerted once configured")
    p.add_argument("pcaps", nargs="+", help="captures of the site's normal traffic")
    p.add_argument("--config", required=True, help="the monitor config (config/monitor.toml)")
    p.add_argument("-o", "--output", required=True, help="the baseline file (merged into when it exists)")
    p.set_defaults(func=cmd_baseline_learn)

    console = sub.add_parser("console", help="the operator console's alert store") \
        .add_subparsers(dest="console_command", required=True)
    p = console.add_parser("rebuild", help="rebuild the console's store ([console] store) from the alert log")
    p.add_argument("--config", required=True, help="the monitor config (its [alerts] log and [console] store)")
    p.set_defaults(func=cmd_console_rebuild)

    p = sub.add_parser("train", help="train a model on labelled records and register it (joblib + card)")
    p.add_argument("data", help="Bot-IoT CSV (any published shape) or our records (.csv/.parquet, or a records "
                                "dataset directory: then the hold-out is whole captures)")
    p.add_argument("--model", choices=("rf", "adaboost", "lightgbm", "knn", "tree"), default="rf")
    p.add_argument("--features", choices=("default", "report", "numeric"), default="default",
                   help="default: leakage-free; report: the reference report's ten; numeric: every numeric column")
    p.add_argument("--target", choices=("attack", "category"), default="attack")
    p.add_argument("--names", help="feature-names file for a headerless Bot-IoT CSV")
    p.add_argument("--record-kind", choices=("flow", "status", "running"), default="flow",
                   help="which records the data holds, for the model card: flow (Bot-IoT's rows, `iadm "
                        "features`), status, or running (`iadm dataset capture`, what the live detector sees)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True, help="models/NAME: writes NAME.joblib and NAME.json")
    dask_args(p, "train (a records dataset directory; LightGBM through lightgbm.dask, the scikit-learn models "
                 "through joblib's Dask backend)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="the report's tables (and more) for a registered model on labelled records")
    p.add_argument("data")
    p.add_argument("--model", help="models/NAME")
    p.add_argument("--cv", type=int, default=0, help="also N-fold stratified cross-validated F1-macro")
    p.add_argument("--report", help="also write PNG plots and a Markdown summary into this directory")
    p.add_argument("--compare", action="store_true",
                   help="train RF, AdaBoost, LightGBM and KNN on one split and print them side by side (Table 10)")
    p.add_argument("--features", choices=("default", "report", "numeric"), default="default", help="with --compare")
    p.add_argument("--target", choices=("attack", "category"), default="attack", help="with --compare")
    p.add_argument("--names", help="feature-names file for a headerless Bot-IoT CSV")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("verdict", help="send a verdict to the controller: block, alert or unblock")
    p.add_argument("action", choices=("block", "alert", "unblock"))
    p.add_argument("target", nargs="?", help="IPv4 source, source MAC, or (unblock) a block id")
    p.add_argument("--duration", type=int, help="seconds (default: the controller's)")
    p.add_argument("--in-port", type=int, help="with a MAC target: only where it enters")
    p.add_argument("--reason", default="")
    p.add_argument("--source", default="")
    api_args(p)
    p.set_defaults(func=cmd_verdict)

    p = sub.add_parser("blocks", help="list the controller's active blocks")
    p.add_argument("--json", action="store_true")
    api_args(p)
    p.set_defaults(func=cmd_blocks)

    from iadm.fleet.command import register as register_fleet   # `iadm fleet collect` (docs/fleet.md)
    register_fleet(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"iadm: config: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from iadm.capture.batch import CaptureError
        from iadm.ml.registry import ModelError
        from iadm.sdn.client import ApiError
        # RuntimeError: the testbed's own failures (a switch that never connected, a tool that exited)
        if isinstance(exc, (ApiError, OSError, CaptureError, ValueError, ModelError, RuntimeError)):
            print(f"iadm {args.command}: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
