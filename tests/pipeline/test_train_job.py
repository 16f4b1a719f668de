"""`linerisk train` and `linerisk registry` end to end on an external feature table."""
from __future__ import annotations

import numpy as np
import pandas as pd
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

    import mlflow
    card = mlflow.artifacts.load_text(f"runs:/{run_id}/report/model_card.md")
    for heading in ("## Intended use", "## Data", "## Split", "## Metrics on the test part", "## Feature families",
                    "## Limitations"):
        assert heading in card, heading
    assert "linerisk v1" in card and "| baseline_logreg |" in card and "as_of 2024-" in card
    assert card == (report.parent / "model_card.md").read_text()
    assert '<a href="model_card.md">Model card</a>' in report.read_text()

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


def german_like(n: int = 1000, seed: int = 1) -> pd.DataFrame:
    """Shaped like the German credit table: 8 int64 columns, 2 text categoricals, a 0/1 label, a customer id."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "customer": np.arange(10_000, 10_000 + n),
        "duration_in_month": rng.integers(4, 72, n), "credit_amount": rng.integers(250, 18_000, n),
        "installment_rate": rng.integers(1, 5, n), "present_residence_since": rng.integers(1, 5, n),
        "age": rng.integers(19, 75, n), "existing_credits": rng.integers(1, 4, n),
        "people_liable": rng.integers(1, 3, n), "telephone": rng.integers(0, 2, n),
        "purpose": rng.choice(["car", "furniture", "radio/tv", "education"], n),
        "housing": rng.choice(["own", "rent", "free"], n)})
    logit = (-1.0 + 0.05 * (frame["duration_in_month"] - 20) + 0.9 * (frame["purpose"] == "education")
             - 0.03 * (frame["age"] - 35))
    frame["default"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


@pytest.fixture
def german_csv(tmp_path):
    path = tmp_path / "german.csv"
    german_like().to_csv(path, index=False)
    return path


def test_a_table_with_integer_columns_is_promoted_and_served_with_integers(mlflow_store, german_csv, capsys):
    import mlflow
    from linerisk.models import registry

    assert train_job.main(["--features", str(german_csv), "--label", "default", "--id-col", "customer",
                           *FAST_FLAGS]) == 0
    assert registry_job.main(["promote", "1"]) == 0, capsys.readouterr().err
    assert "PROMOTED" in capsys.readouterr().out
    served = mlflow.pyfunc.load_model("models:/linerisk@champion")
    sent = pd.read_csv(german_csv).drop(columns=["default", "customer"]).head(40)
    assert (sent.dtypes == "int64").sum() == 8
    answer = served.predict(sent)
    expected = registry.load_package("linerisk@champion").scorer.score(sent)
    np.testing.assert_allclose(answer["probability"], expected["probability"], rtol=1e-12)
    schema = {c.name: c.type.name for c in served.metadata.get_input_schema().inputs}
    assert schema["duration_in_month"] == "long" and schema["purpose"] == "string"


def test_an_id_column_is_never_a_feature_and_a_random_split_keeps_each_id_on_one_side(german_csv):
    frame, spec = train_job.load_external(german_csv, "default", None, id_col="customer")
    names = [f["name"] for f in spec["features"]]
    assert "customer" not in names and "user_id" not in names and len(names) == 10
    repeated = pd.concat([frame, frame.assign(age=frame["age"] + 1)], ignore_index=True)  # two rows per id
    from linerisk.models.train import split_random
    parts = split_random(repeated, "label", seed=3, group="user_id")
    sides = [set(p["user_id"]) for p in parts]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert sum(len(p) for p in parts) == len(repeated)


@pytest.mark.parametrize("column, why", [("customer", "unique per row"), ("paid_late_flag", "AUC 1.000")])
def test_a_column_that_identifies_rows_or_leaks_the_label_stops_training_unless_allowed(
        german_csv, tmp_path, monkeypatch, capsys, column, why):
    monkeypatch.setenv("LINERISK_HOME", str(tmp_path / "home"))
    frame = pd.read_csv(german_csv)
    frame["paid_late_flag"] = frame["default"].map({0: "no", 1: "yes"})  # the outcome, recorded as a "feature"
    path = tmp_path / "leaky.csv"
    frame.drop(columns=[c for c in ("customer", "paid_late_flag") if c != column]).to_csv(path, index=False)
    assert train_job.main(["--features", str(path), "--label", "default", "--no-register", *FAST_FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and column in err[0] and why in err[0], err
    assert train_job.main(["--features", str(path), "--label", "default", "--no-register", "--allow", column,
                           *FAST_FLAGS]) == 0


def test_string_categoricals_of_a_german_like_table_train(german_csv):
    frame, spec = train_job.load_external(german_csv, "default", None, id_col="customer")
    assert set(spec["categories"]) == {"purpose", "housing"}
    assert spec["categories"]["housing"] == ["free", "own", "rent"]


def test_a_table_with_rows_without_an_id_stops_training_naming_the_count(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINERISK_HOME", str(tmp_path / "home"))
    table = german_like()
    table["customer"] = table["customer"].astype("float64")
    table.loc[:2, "customer"] = np.nan  # an id split would put these rows on no side at all
    path = tmp_path / "no_ids.csv"
    table.to_csv(path, index=False)
    assert train_job.main(["--features", str(path), "--label", "default", "--id-col", "customer",
                           "--no-register"]) == 2
    err = capsys.readouterr().err
    assert "'customer'" in err and "3 null" in err


def test_a_world_manifest_that_cannot_be_read_is_an_error_not_a_missing_world(tmp_path):
    from linerisk.pipeline.io import world_parameters

    assert world_parameters(tmp_path / "nowhere") is None
    (tmp_path / "manifest.json").write_text("{not json", "utf-8")
    with pytest.raises(InputError, match="manifest.json"):
        world_parameters(tmp_path)
