"""`iadm train DATASET --dask local|ADDRESS`: a model from a records dataset on a Dask cluster.

The dataset's files are shared out among the workers by row count; each worker reads only the
feature and label columns of its own files, straight into one float32 block (iadm.scale.dataset.
load_matrix), which is the layout LightGBM reads without a copy, so a worker holds its share of
the training matrix once. LightGBM trains through `lightgbm.dask` (one LightGBM machine per
worker, data-parallel); Random Forest and KNN fit on the client through joblib's Dask backend (the
trees, or the neighbour queries, run as tasks on the workers; their matrix lives on the client);
the tree and AdaBoost have no parallel fit. The held-out captures (iadm.ml.split, the same ones
the pandas path holds out) are scored on the workers by the saved model, and the card records the
rows, captures, cluster and times.

Every worker must hold every class: the scikit-learn wrapper inside `lightgbm.dask` encodes
labels from the rows it is given, so a worker without a class would number the classes
differently from the others. Training refuses, naming the class and worker, rather than train a
silently wrong model.
"""
from __future__ import annotations

import hashlib
import operator
import os
import shlex
import sys
import time
import warnings

import numpy as np
import pandas as pd

from iadm.ml import evaluate, registry
from iadm.ml.models import TARGETS, build, feature_set, fit
from iadm.ml.split import holdout_captures
from iadm.scale.cluster import describe
from iadm.scale.dataset import Part, load_matrix, parts


def share(files: list[Part], n: int) -> list[list[Part]]:
    """Files dealt to n workers, largest first to the one with fewest rows so far."""
    groups: list[list[Part]] = [[] for _ in range(n)]
    rows = [0] * n
    for part in sorted(files, key=lambda p: (-p.rows, p.path)):
        i = rows.index(min(rows))
        groups[i].append(part)
        rows[i] += part.rows
    return [sorted(g, key=lambda p: p.path) for g in groups]


def _summary(loaded: dict, target: str) -> dict:
    return {"rows_read": loaded["rows_read"], "rows": len(loaded["x"]), "missing": loaded["missing"],
            "classes": {k: int(v) for k, v in loaded[target].value_counts().items()}}


def _score_files(model: registry.Model, files: list[str], target: str) -> dict:
    """The saved model's verdicts on held-out files (a task on a worker)."""
    also = ("attack",) if target != "attack" else ()
    loaded = load_matrix(files, model.features, target, also)
    pred = model.predict(loaded["x"])
    truth = loaded[target].to_numpy()
    return {"truth": truth if target != "attack" else truth.astype(np.int64),
            "truth_attack": loaded["attack"].astype(np.int64).to_numpy(), "label": pred["label"].to_numpy(),
            "attack": pred["attack"].to_numpy(), "score": pred["score"].to_numpy()}


def _fingerprint(root: str, files: list[Part]) -> str:
    """The dataset as files (relative path, rows, bytes): cheap, and changes with any rewrite."""
    digest = hashlib.sha256()
    for p in sorted(files, key=lambda p: p.path):
        digest.update(f"{os.path.relpath(p.path, root)}\0{p.rows}\0{os.path.getsize(p.path)}\n".encode())
    return f"files-sha256:{digest.hexdigest()}"


def _balanced(counts: dict) -> dict:
    """scikit-learn's "balanced" class weights, from the whole training set's counts."""
    total, k = sum(counts.values()), len(counts)
    return {c: total / (k * n) for c, n in counts.items()}


def _check_classes(summaries: list[dict], workers: list[str]) -> dict:
    counts: dict = {}
    for s in summaries:
        for c, n in s["classes"].items():
            counts[c] = counts.get(c, 0) + n
    for s, w in zip(summaries, workers):
        lacking = sorted(set(counts) - set(s["classes"]), key=str)
        if lacking:
            raise ValueError(f"worker {w} got no training rows of class(es) {', '.join(map(str, lacking))} "
                             f"({', '.join(f'{c}: {n:,}' for c, n in counts.items())} in all); lightgbm.dask "
                             "needs every class on every worker: use fewer workers (--workers), target attack, "
                             "or train without --dask")
    return counts


def _fit_lightgbm(client, groups: list[list[Part]], workers: list[str], features: list[str], target: str,
                  seed: int) -> tuple[object, dict]:
    import dask.dataframe as dd
    from lightgbm.dask import DaskLGBMClassifier
    pinned = {"allow_other_workers": False}
    loaded = [client.submit(load_matrix, [p.path for p in g], features, target, workers=[w], pure=False, **pinned)
              for w, g in zip(workers, groups)]
    summaries = client.gather([client.submit(_summary, f, target, workers=[w], **pinned)
                               for f, w in zip(loaded, workers)])
    counts = _check_classes(summaries, workers)
    load_seconds = time.monotonic()
    xs = [client.submit(operator.getitem, f, "x", workers=[w], **pinned) for f, w in zip(loaded, workers)]
    ys = [client.submit(operator.getitem, f, target, workers=[w], **pinned) for f, w in zip(loaded, workers)]
    meta_x = pd.DataFrame({c: pd.Series(dtype=np.float32) for c in features})
    meta_y = pd.Series(dtype=np.int64 if target == "attack" else object, name=target)
    x = dd.from_delayed(xs, meta=meta_x, verify_meta=False)
    y = dd.from_delayed(ys, meta=meta_y, verify_meta=False)
    params = build("lightgbm", seed).get_params()
    threads = params.pop("n_jobs")          # each worker's LightGBM uses that worker's threads
    params["class_weight"] = _balanced(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "Parameter n_jobs will be ignored" and the like
        model = DaskLGBMClassifier(client=client, **params).fit(x, y)
    local = model.to_local()
    local.set_params(n_jobs=threads, num_threads=threads, tree_learner="serial")   # predict here as the pandas path's
    del loaded, xs, ys, x, y
    return local, {"summaries": summaries, "counts": counts, "loaded_at": load_seconds}


def _fit_sklearn(client, kind: str, files: list[Part], features: list[str], target: str, seed: int):
    import joblib
    loaded = load_matrix([p.path for p in files], features, target)
    summaries = [_summary(loaded, target)]
    counts = summaries[0]["classes"]
    loaded_at = time.monotonic()
    with joblib.parallel_backend("dask", client=client):
        model = fit(kind, loaded["x"], loaded[target], seed, jobs=-1)
    return model, {"summaries": summaries, "counts": counts, "loaded_at": loaded_at}


def train_on_cluster(path: str, kind: str, out: str, client, features_name: str = "default",
                     target: str = "attack", seed: int = 0, record_kind: str = "flow",
                     stream=sys.stderr) -> registry.Model:
    began = time.monotonic()
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}")
    if not os.path.isdir(path):
        raise ValueError(f"{path}: --dask trains on a records dataset directory (`iadm features ... -o "
                         "OUT.parquet`); train a single file without --dask")
    files = [p for p in parts(path) if p.rows]
    import pyarrow.parquet as pq
    columns = pq.read_schema(files[0].path).empty_table().to_pandas() if files else pd.DataFrame()
    features = feature_set(features_name, columns)
    lacking = [c for c in [*features, target, "attack"] if c not in columns]
    if lacking:
        raise ValueError(f"{path}: the records lack column(s) {', '.join(dict.fromkeys(lacking))} "
                         f"(features {features_name!r} and target {target!r} need them)")
    captures = sorted({p.capture for p in files})
    held = holdout_captures(captures, seed=seed)
    train_files = [p for p in files if p.capture not in held]
    test_files = [p for p in files if p.capture in held]
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    groups = [g for g in share(train_files, len(workers))]
    used = [w for w, g in zip(workers, groups) if g]
    groups = [g for g in groups if g]
    print(f"{path}: {len(captures)} captures, {sum(p.rows for p in files):,} records; training {kind} on "
          f"{len(captures) - len(held)} captures over {len(used)} worker(s), holding out {len(held)}",
          file=stream, flush=True)
    if kind == "lightgbm":
        estimator, info = _fit_lightgbm(client, groups, used, features, target, seed)
    else:
        estimator, info = _fit_sklearn(client, kind, train_files, features, target, seed)
    fitted = time.monotonic()
    rows_read = sum(s["rows_read"] for s in info["summaries"])
    train_rows = sum(s["rows"] for s in info["summaries"])
    missing = {c: sum(s["missing"][c] for s in info["summaries"]) for c in info["summaries"][0]["missing"]}
    cleaning = (f"{path} (training captures): {rows_read:,} rows read, rows with missing values dropped "
                f"({', '.join(f'{c}: {n}' for c, n in missing.items() if n) or 'none'}), {train_rows:,} kept "
                "(no duplicate check: every record of a capture has its own seq)")
    card = {"kind": kind, "features": features, "feature_set": features_name, "target": target,
            "classes": [c.item() if hasattr(c, "item") else c for c in estimator.classes_],
            "data": {"source": path, "record_kind": record_kind, "rows": train_rows, "train_rows": train_rows,
                     "captures": len(captures), "fingerprint": _fingerprint(path, files),
                     "class_balance": {str(k): int(v) for k, v in info["counts"].items()}, "cleaning": cleaning},
            "split": {"by": "capture", "holdout_captures": held},
            "cluster": describe(client) | {"workers_trained": len(used) if kind == "lightgbm" else 0,
                                           "via": "lightgbm.dask" if kind == "lightgbm" else "joblib dask backend"},
            "command": f"iadm train {shlex.quote(path)} --model {kind} --features {features_name} --target {target} "
                       f"-o {shlex.quote(out)} --dask ADDRESS" + (f" --seed {seed}" if seed else "")
                       + f" --record-kind {record_kind}"}
    registry.save(out, estimator, card)
    saved = registry.load(out)
    scored = [client.submit(_score_files, saved, [p.path for p in g], target, pure=False)
              for g in share(test_files, len(workers)) if g]
    results = client.gather(scored)
    joined = {k: np.concatenate([r[k] for r in results]) for k in results[0]}
    result = evaluate.report(joined["truth"], joined["label"], joined["truth_attack"], joined["attack"],
                             joined["score"])
    done = time.monotonic()
    saved.card["data"]["rows"] = train_rows + len(joined["truth"])
    saved.card["metrics"] = {"holdout_rows": len(joined["truth"]), "f1_macro": result["f1_macro"],
                             **result["binary"]}
    fit_seconds = fitted - info["loaded_at"]
    saved.card["time"] = {"load_seconds": round(info["loaded_at"] - began, 3), "fit_seconds": round(fit_seconds, 3),
                          "evaluate_seconds": round(done - fitted, 3), "total_seconds": round(done - began, 3),
                          "train_rows_per_second": round(train_rows / max(fitted - began, 1e-9))}
    registry.save(out, estimator, saved.card)
    print(f"trained on {train_rows:,} rows in {fitted - began:.1f} s (load {info['loaded_at'] - began:.1f} s, "
          f"fit {fit_seconds:.1f} s); held-out captures scored in {done - fitted:.1f} s", file=stream)
    print(evaluate.render(result), file=stream)
    return registry.load(out)
