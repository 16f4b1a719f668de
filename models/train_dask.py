"""Training on a Dask cluster: lightgbm.dask grows the trees over the workers' partitions of the
training part; the booster comes back (`to_local`) and is calibrated into the same RestrictionModel.

lightgbm.dask has no early stopping, so the number of rounds is chosen first: a local fit with
early stopping on a sample of the training part against the validation part gives its best
iteration, and the cluster grows exactly that many rounds on the whole training part.
"""
from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from linerisk.models.scoring import prepare_features
from linerisk.models.train import RestrictionModel, TrainParams, monotone_constraints, train_model


def choose_rounds(train_sample: pd.DataFrame, valid: pd.DataFrame, params: TrainParams, spec: dict[str, Any]) -> int:
    """Boosting rounds for the cluster: the early-stopped best iteration of a fit on `train_sample`."""
    names = [f["name"] for f in spec["features"]]
    model = train_model(train_sample[names], train_sample["label"], valid[names], valid["label"], params, spec)
    return model.best_iteration_


def fit_on_cluster(client, train, valid: pd.DataFrame, rounds: int, params: TrainParams,
                   spec: dict[str, Any]) -> RestrictionModel:
    """Grow `rounds` trees with lightgbm.dask on `train` (a dask DataFrame with the spec's columns and
    `label`), then calibrate on `valid` (pandas) into a RestrictionModel."""
    from lightgbm.dask import DaskLGBMClassifier

    names = [f["name"] for f in spec["features"]]
    X = train.map_partitions(prepare_features, spec, meta=prepare_features(train._meta, spec))
    y = train["label"]
    lgb_params = params.lightgbm_params() | {"monotone_constraints": monotone_constraints(spec)}
    lgb_params.pop("seed")
    lgb_params.pop("num_threads")  # lightgbm.dask uses each worker's threads
    model = DaskLGBMClassifier(client=client, n_estimators=rounds, random_state=params.seed, **lgb_params)
    with warnings.catch_warnings():  # it reports ignoring the thread count it sets itself
        warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored", UserWarning)
        model.fit(X, y)
    booster_text = model.to_local().booster_.model_to_string()
    # the reasons' reference profile from the validation part: the training part stays on the workers
    return RestrictionModel(params, spec).calibrate(booster_text, rounds, valid[names], valid["label"])
