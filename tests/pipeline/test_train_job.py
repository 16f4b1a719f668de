"""`linerisk train` and `linerisk registry` end to end on an external feature table."""
from __future__ import annotations

import numpy as np
import pytest

from linerisk.data.schema import InputError
from linerisk.pipeline import registry_job, train_job
from tests.models.synth import make_panel

FAST_FLAGS = ["--num-threads", "1", "--log-every", "0", "--min-child-samples", "20", "--n-estimators", "200",
              "--early-stopping-rounds", "20", "--learning-rate", "0.1"]


@pytest.fixture
def external_csv(tmp_path):
    panel = make_panel(n_users=600, n_snapshots=5, seed=4)
    panel["region"] = np.random.default_rng(0).choice(["north", "south"], len(panel))
    path = tmp_path / "features.csv"
    panel.rename(columns={"label": "restricted", "as_of": "snapshot"}).to_csv(path, index=False)
    return path


def test_train_on_an_external_table_registers_a_challenger_and_writes_the_report(mlflow_store, external_csv,
                                                                                 capsys, tmp_path):
    from linerisk.models import registry

    status = train_job.main(["--features", str(external_csv), "--label", "restricted", "--time-col", "snapshot",
                             *FAST_FLAGS])
    out = capsys.readouterr().out
    assert status == 0
    assert "| model |" in out and "| baseline_logreg |" in out and "MLflow run id:" in out
    run_id = out.split("MLflow run id:")[1].split()[0]
    report = tmp_path / "linerisk_home" / "reports" / run_id / "report.html"
    assert report.exists() and report.read_text().count("data:image/png;base64,") == 5
    info = registry.show("linerisk@challenger")
    assert info["run_id"] == run_id and info["metrics"]["test_auc"] > 0.7
    assert len(info["params"]["spec_hash"]) == 64

    assert registry_job.main(["promote", "1"]) == 0
    assert "PROMOTED" in capsys.readouterr().out
    assert registry_job.main(["resolve", "linerisk@champion"]) == 0
    assert capsys.readouterr().out.strip() == "linerisk 1 models:/linerisk/1"
    assert registry_job.main(["list"]) == 0
    assert "champion" in capsys.readouterr().out


def test_train_without_registering_writes_the_report_where_asked(external_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("LINERISK_HOME", str(tmp_path / "home"))
    out = tmp_path / "r" / "report.html"
    status = train_job.main(["--features", str(external_csv), "--label", "restricted", "--drop", "snapshot",
                             "--no-register", "--out", str(out), *FAST_FLAGS])
    assert status == 0 and out.exists()
    assert not (tmp_path / "home" / "mlflow.db").exists()


def test_a_missing_label_column_exits_2_naming_it(external_csv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINERISK_HOME", str(tmp_path / "home"))
    assert train_job.main(["--features", str(external_csv), "--label", "nope", "--no-register"]) == 2
    assert "'nope'" in capsys.readouterr().err


def test_registry_promote_of_an_unknown_version_exits_2(mlflow_store, capsys):
    assert registry_job.main(["promote", "7"]) == 2
    assert "linerisk" in capsys.readouterr().err


def test_toml_config_overrides_defaults_and_flags_override_both(tmp_path):
    cfg = tmp_path / "train.toml"
    cfg.write_text("[train]\nmax_depth = 7\nseed = 3\ncalibration = 'sigmoid'\n")
    params = train_job.load_params(cfg, {"seed": 5, "learning_rate": None})
    assert (params.max_depth, params.seed, params.calibration, params.learning_rate) == (7, 5, "sigmoid", 0.05)
    cfg.write_text("[train]\nmax_dept = 7\n")
    with pytest.raises(InputError, match="max_dept"):
        train_job.load_params(cfg, {})
