"""The MLflow registry on a temporary SQLite store: register, promote, resolve, load, refuse tampering."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linerisk.models.train import reference_distributions
from tests.models.synth import SYNTH_FEATURES

NAMES = [n for n, *_ in SYNTH_FEATURES]


def _register(model, split, metrics=None):
    from linerisk.models import registry

    names = [f["name"] for f in model.spec_["features"]]
    ref = reference_distributions(split.train[names], model.predict_proba(split.train)[:, 1], model.spec_)
    return registry.register_model(model, params={"max_depth": 6}, metrics=metrics or {"test_auc": 0.8},
                                   reference=ref, test_frame=split.test, report_html="<html></html>")


def test_parse_ref_accepts_alias_version_and_models_uri_forms():
    from linerisk.models.registry import parse_ref

    assert parse_ref("linerisk@champion") == ("linerisk", None, "champion")
    assert parse_ref("models:/linerisk@challenger") == ("linerisk", None, "challenger")
    assert parse_ref("linerisk/3") == ("linerisk", "3", None)
    assert parse_ref("models:/linerisk/3") == ("linerisk", "3", None)
    assert parse_ref("linerisk") == ("linerisk", None, "champion")
    with pytest.raises(ValueError, match="version must be a number"):
        parse_ref("linerisk/latest")


def test_round_trip_register_promote_resolve_and_load_in_a_fresh_process(mlflow_store, synth_split,
                                                                          trained_model, tmp_path):
    from linerisk.models import registry

    reg = _register(trained_model, synth_split)
    assert registry.resolve("linerisk@challenger") == ("linerisk", reg.version, f"models:/linerisk/{reg.version}")
    decision = registry.promote("linerisk", reg.version)
    assert decision.promoted and decision.champion_version is None
    assert registry.resolve("models:/linerisk@champion")[1] == reg.version
    info = registry.show("linerisk@champion")
    assert {"champion", "challenger"} <= set(info["aliases"]) and info["tags"]["promotion.decision"] == "promoted"
    assert info["params"]["spec_hash"] == trained_model.spec_["spec_hash"]

    X = synth_split.test[NAMES].head(50).astype("float32")
    X.to_parquet(tmp_path / "x.parquet")
    # A fresh interpreter that cannot import this repository's packages: the model must be self-contained.
    # Its working folder holds a user's own scoring/treeshap/valuefmt modules that must never be picked up.
    for shadow in ("scoring", "treeshap", "valuefmt", "pyfunc_model"):
        (tmp_path / f"{shadow}.py").write_text("raise RuntimeError('a user module was imported')\n")
    script = textwrap.dedent(f"""
        import importlib.abc, importlib.machinery, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                if top in ("models", "features", "pipeline", "data"):
                    raise ImportError("blocked " + name)
                if top == "linerisk":  # only the copy shipped inside the model's code/ folder
                    spec = importlib.machinery.PathFinder.find_spec(name, path)
                    if spec is None or "/code/linerisk" not in (spec.origin or ""):
                        raise ImportError("blocked " + name)
                    return spec
        sys.meta_path.insert(0, Block())
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({mlflow_store!r})
        model = mlflow.pyfunc.load_model("models:/linerisk@champion")
        model.predict(pd.read_parquet({str(tmp_path / 'x.parquet')!r})).to_parquet({str(tmp_path / 'out.parquet')!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = pd.read_parquet(tmp_path / "out.parquet")
    np.testing.assert_allclose(out["probability"], trained_model.predict_proba(X)[:, 1], rtol=1e-12)
    assert {"band", "reason_1_family", "reason_1_contribution", "reason_3_family"} <= set(out.columns)


def test_promote_refuses_a_worse_model_and_tags_both_versions_unless_forced(mlflow_store, synth_split,
                                                                             trained_model, weak_model):
    from linerisk.models import registry

    good = _register(trained_model, synth_split)
    registry.promote("linerisk", good.version)
    weak = _register(weak_model, synth_split)
    decision = registry.promote("linerisk", weak.version)
    assert not decision.promoted and decision.champion_version == good.version
    assert decision.challenger_auc < decision.champion_auc
    assert registry.resolve("linerisk@champion")[1] == good.version
    shown = registry.show(f"linerisk/{weak.version}")
    assert shown["tags"]["promotion.decision"] == "refused"
    assert float(shown["tags"]["promotion.champion_auc"]) == pytest.approx(decision.champion_auc, abs=1e-6)
    assert any(k.startswith("challenged_by.v") for k in registry.show(f"linerisk/{good.version}")["tags"])

    forced = registry.promote("linerisk", weak.version, force=True)
    assert forced.promoted and forced.forced
    assert registry.resolve("linerisk@champion")[1] == weak.version
    table = registry.list_versions("linerisk")
    assert table["version"].tolist() == [1, 2] and "champion" in table.loc[1, "aliases"]


def test_a_tampered_artifact_refuses_to_load(mlflow_store, synth_split, trained_model):
    import mlflow
    from linerisk.models import registry

    reg = _register(trained_model, synth_split)
    home = Path(mlflow_store.removeprefix("sqlite:///")).parent
    boosters = list((home / "mlartifacts").rglob("booster.txt"))
    assert len(boosters) == 1
    text = boosters[0].read_text()
    boosters[0].write_text(text.replace("learning_rate: 0.1", "learning_rate: 0.2", 1) + "\n")
    with pytest.raises(Exception, match="sha256"):
        mlflow.pyfunc.load_model(reg.model_uri)


def test_resolving_an_unknown_alias_names_it(mlflow_store):
    from linerisk.models import registry

    with pytest.raises(LookupError, match="linerisk@nope"):
        registry.resolve("linerisk@nope")


def _train(split, names=NAMES, extra: pd.DataFrame | None = None):
    from linerisk.models.train import TrainParams, model_spec, train_model
    from tests.conftest import FAST

    X, Xv = split.train[names], split.valid[names]
    spec = synth_spec_for(names)
    return train_model(X, split.train["label"], Xv, split.valid["label"], TrainParams(**FAST), spec)


def synth_spec_for(names):
    from linerisk.models.train import model_spec
    from tests.models.synth import SYNTH_FEATURES

    family = {n: (fam, d) for n, fam, d, _ in SYNTH_FEATURES}
    return model_spec(features=[{"name": n, "family": family.get(n, ("extra", 0))[0],
                                 "direction": family.get(n, ("extra", 0))[1]} for n in names])


def test_a_registry_error_other_than_no_champion_alias_stops_the_promotion_and_changes_nothing(
        mlflow_store, synth_split, trained_model, weak_model, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
    from mlflow.tracking import MlflowClient
    from linerisk.models import registry
    from linerisk.pipeline import registry_job

    good = _register(trained_model, synth_split)
    registry.promote("linerisk", good.version)
    weak = _register(weak_model, synth_split)

    def denied(self, *args, **kwargs):
        raise MlflowException("User lacks READ permission on the registered model", error_code=PERMISSION_DENIED)

    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "get_registered_model", denied)
        m.setattr(MlflowClient, "get_model_version_by_alias", denied)
        capsys.readouterr()
        assert registry_job.main(["promote", weak.version]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "permission" in err[0], err
    assert registry.resolve("linerisk@champion")[1] == good.version
    assert "promotion.decision" not in registry.show(f"linerisk/{weak.version}")["tags"]


def test_a_forced_promotion_is_tagged_forced_also_when_the_champion_cannot_score_the_data(
        mlflow_store, synth_split, trained_model):
    from linerisk.models import registry

    # the champion needs a column the challenger's (newer-registered) test part does not have
    wider = synth_split._replace(**{part: frame.assign(bureau_flag=np.float32(0.0))
                                    for part, frame in synth_split._asdict().items()})
    champion = _train(wider, [*NAMES, "bureau_flag"])
    reg_champ = _register(champion, wider)
    registry.promote("linerisk", reg_champ.version)
    challenger = _register(trained_model, synth_split)
    refused = registry.promote("linerisk", challenger.version)
    assert not refused.promoted and "champion cannot score" in refused.reason
    forced = registry.promote("linerisk", challenger.version, force=True)
    assert forced.promoted and forced.forced
    assert registry.show(f"linerisk/{challenger.version}")["tags"]["promotion.decision"] == "forced"
    assert registry.resolve("linerisk@champion")[1] == challenger.version


def test_champion_and_challenger_are_compared_on_the_newer_test_part_or_the_given_data(
        mlflow_store, synth_panel, synth_split, trained_model, tmp_path, capsys):
    from sklearn.metrics import roc_auc_score
    from linerisk.models import registry
    from linerisk.models.train import split_out_of_time
    from linerisk.pipeline import registry_job

    newest = synth_panel["as_of"].max()
    older_split = split_out_of_time(synth_panel[synth_panel["as_of"] < newest], 1, 1, 90)
    older = _train(older_split)
    newer_reg = _register(trained_model, synth_split)   # v1: tested on the latest snapshot
    registry.promote("linerisk", newer_reg.version)
    older_reg = _register(older, older_split)           # v2: its test part is v1's validation part
    decision = registry.promote("linerisk", older_reg.version)
    assert decision.data.startswith(f"v{newer_reg.version}'s test part")
    test = synth_split.test
    expected = roc_auc_score(test["label"], older.predict_proba(test[NAMES])[:, 1])
    assert decision.challenger_auc == pytest.approx(expected, abs=1e-9)
    assert registry.show(f"linerisk/{older_reg.version}")["tags"]["promotion.data"] == decision.data

    given = tmp_path / "holdout.parquet"
    older_split.valid[[*NAMES, "label"]].to_parquet(given)
    capsys.readouterr()
    registry_job.main(["promote", older_reg.version, "--data", str(given)])
    out = capsys.readouterr().out
    assert f"on {given} ({len(older_split.valid):,} rows)" in out
    expected = roc_auc_score(older_split.valid["label"], older.predict_proba(older_split.valid[NAMES])[:, 1])
    assert f"(AUC {expected:.4f})" in out


def test_the_stored_test_part_has_pseudonymous_user_ids_unless_kept(mlflow_store, synth_split, trained_model):
    import mlflow
    from linerisk.models import registry

    def stored(reg):
        with_path = mlflow.artifacts.download_artifacts(run_id=reg.run_id, artifact_path=registry.TEST_ARTIFACT)
        return pd.read_parquet(with_path)

    raw = synth_split.test["user_id"]
    hidden = stored(_register(trained_model, synth_split))
    assert not set(hidden["user_id"].astype(str)) & set(raw.astype(str))
    # one user keeps one pseudonym, and distinct users stay distinct
    assert hidden.groupby("user_id").size().sort_values().tolist() == raw.value_counts().sort_values().tolist()
    ref = reference_distributions(synth_split.train[NAMES], trained_model.predict_proba(synth_split.train)[:, 1],
                                  trained_model.spec_)
    kept = registry.register_model(trained_model, params={}, metrics={}, reference=ref, test_frame=synth_split.test,
                                   keep_user_ids=True)
    assert stored(kept)["user_id"].tolist() == raw.tolist()


def test_a_promotion_whose_decision_cannot_be_recorded_leaves_the_champion_where_it_was(
        mlflow_store, synth_split, trained_model, weak_model, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient
    from linerisk.models import registry

    weak = _register(weak_model, synth_split)
    registry.promote("linerisk", weak.version)
    good = _register(trained_model, synth_split)

    def refused(self, *args, **kwargs):
        raise MlflowException("the tag store is read-only")

    with monkeypatch.context() as m:
        m.setattr(MlflowClient, "set_model_version_tag", refused)
        with pytest.raises(registry.RegistryError):
            registry.promote("linerisk", good.version)
    assert registry.resolve("linerisk@champion")[1] == weak.version
