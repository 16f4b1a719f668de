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

    ref = reference_distributions(split.train[NAMES], model.predict_proba(split.train)[:, 1], model.spec_)
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
