"""The simulator: determinism, contract, rates, causes, and each mechanism's direction."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from linerisk.data.schema import validate_events, validate_users
from linerisk.data.simulate import WorldParams
from linerisk.pipeline.cli import main
from linerisk.pipeline.io import sha256_file
from linerisk.pipeline.simulate_job import write_world
from tests.data.facts import load, stacked_population

DATA_FILES = ("events.parquet", "users.parquet", "truth_restrictions.parquet", "truth_snapshots.parquet",
              "truth_restorations.parquet", "truth_recovery_snapshots.parquet")


@pytest.fixture(scope="module")
def pop(population_world) -> pd.DataFrame:
    return stacked_population(population_world)


def rate(frame: pd.DataFrame) -> float:
    return float(frame["label"].mean())


def test_same_seed_gives_byte_identical_files_and_another_seed_differs(tmp_path):
    p = WorldParams(users=400, months=8, seed=3, oracle_users=50)
    a = write_world(p, tmp_path / "a", jobs=1, progress=False)
    b = write_world(p, tmp_path / "b", jobs=1, progress=False)
    c = write_world(WorldParams(users=400, months=8, seed=4, oracle_users=50), tmp_path / "c", jobs=1, progress=False)
    for name in DATA_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert a["sha256"] == b["sha256"]
    assert a["sha256"]["events.parquet"] != c["sha256"]["events.parquet"]


def test_chunks_on_two_processes_give_the_same_files_as_one(tmp_path, monkeypatch):
    import linerisk.data.simulate as sim
    monkeypatch.setattr(sim, "CHUNK_USERS", 150)
    p = WorldParams(users=400, months=6, seed=9, oracle_users=40)
    one = write_world(p, tmp_path / "one", jobs=1, progress=False)
    two = write_world(p, tmp_path / "two", jobs=2, progress=False)
    assert one["sha256"] == two["sha256"]


def test_manifest_records_sha256_and_row_counts(small_world):
    manifest = json.loads((small_world / "manifest.json").read_text())
    for name in DATA_FILES:
        assert manifest["sha256"][name] == sha256_file(small_world / name)
    assert manifest["rows"]["events"] == len(pd.read_parquet(small_world / "events.parquet"))


def test_simulated_events_obey_the_contract_with_zero_quarantined(small_world):
    tables = load(small_world)
    users = validate_users(tables["users"])
    checked = validate_events(tables["events"], users)
    assert len(checked.quarantined) == 0, checked.quarantined["rule"].value_counts()
    assert set(users["segment"]) == {"consumer", "merchant"}
    # Only merchants have a business loan.
    bl_users = tables["events"].loc[tables["events"]["event_type"].str.startswith("bl_"), "user_id"].unique()
    assert set(bl_users) <= set(users.loc[users["segment"] == "merchant", "user_id"])


def test_truth_files_are_never_in_the_observable_tables(small_world):
    events = pd.read_parquet(small_world / "events.parquet")
    assert not {"cause", "oracle_prob", "latent", "health"} & set(events.columns)


def test_five_to_twelve_percent_of_active_users_restricted_per_90_days(pop):
    rates = pop.groupby("as_of")["label"].mean()
    assert rates.between(0.05, 0.12).all(), rates


def test_cause_shares_fall_in_the_worlds_ranges(population_world):
    causes = pd.read_parquet(population_world / "truth_restrictions.parquet")["cause"].value_counts(normalize=True)
    assert causes.max() < 0.5
    assert causes.get("bl_closure", 0) < 0.05
    assert 0.10 <= causes["latent"] <= 0.25
    assert set(causes.index) >= {"overdue", "early_repayment", "fund_misuse", "credit_score",
                                 "multi_borrowing", "utilisation", "latent"}


def test_restriction_components_add_up_to_a_positive_hazard_with_the_drawn_cause_present(population_world):
    truth = pd.read_parquet(population_world / "truth_restrictions.parquet")
    comps = truth[[c for c in truth.columns if c.startswith("hazard_")]]
    assert (comps.sum(axis=1) > 0).all()
    drawn = comps.to_numpy()[np.arange(len(truth)), comps.columns.get_indexer("hazard_" + truth["cause"])]
    assert (drawn > 0).all()
    assert truth["event_time"].notna().all()


def test_bl_overdue_raises_the_restriction_rate(pop):
    assert rate(pop[pop["bl_late_90"] > 0]) > 1.5 * rate(pop[pop["merchant"] & (pop["bl_late_90"] == 0)])


def test_longer_overdue_raises_the_rate_further(pop):
    late = pop[pop["late_days_90"] > 0]
    assert rate(late[late["late_days_90"] > 30]) > rate(late[late["late_days_90"] <= 10])


def test_frequent_early_repayment_raises_the_restriction_rate(pop):
    assert rate(pop[pop["early_90"] >= 4]) > 1.5 * rate(pop[pop["early_90"] == 0])


def test_fund_misuse_raises_the_restriction_rate(pop):
    assert rate(pop[pop["misuse_180"] > 0]) > 2 * rate(pop[pop["merchant"] & (pop["misuse_180"] == 0)])


def test_low_credit_score_raises_the_restriction_rate(pop):
    assert rate(pop[pop["score"] < 580]) > 2 * rate(pop[pop["score"] >= 650])


def test_many_inquiries_raise_the_restriction_rate(pop):
    assert rate(pop[pop["inquiries_30"] >= 3]) > 2 * rate(pop[pop["inquiries_30"] == 0])


def test_high_utilisation_raises_the_restriction_rate(pop):
    assert rate(pop[pop["utilisation"] > 0.85]) > 1.5 * rate(pop[pop["utilisation"] < 0.5])


def test_bl_closure_has_at_most_a_small_effect(pop, population_world):
    merchants = pop[pop["merchant"]]
    closed, kept = merchants[merchants["bl_closed_60"] > 0], merchants[merchants["bl_closed_60"] == 0]
    assert len(closed) >= 50
    assert rate(closed) < 2.0 * rate(kept) + 0.02
    causes = pd.read_parquet(population_world / "truth_restrictions.parquet")["cause"]
    assert (causes == "bl_closure").mean() < 0.05


def test_oracle_probability_is_calibrated_against_what_happened(population_world, pop):
    snaps = pd.read_parquet(population_world / "truth_snapshots.parquet")
    labels = pop.reset_index(names="user_id")[["user_id", "as_of", "label"]]
    joined = snaps.merge(labels, on=["user_id", "as_of"], how="inner")
    assert len(joined) == len(snaps)  # every oracle row is an active user
    joined["bin"] = pd.qcut(joined["oracle_prob"], 10, labels=False, duplicates="drop")
    by_bin = joined.groupby("bin").agg(p=("oracle_prob", "mean"), y=("label", "mean"), n=("label", "size"))
    se = np.sqrt(by_bin["p"] * (1 - by_bin["p"]) / by_bin["n"])
    assert ((by_bin["y"] - by_bin["p"]).abs() <= 3.5 * se + 0.01).all(), by_bin
    assert by_bin["y"].iloc[-1] > 3 * by_bin["y"].iloc[0]


def test_simulate_command_writes_the_dataset_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["simulate", "--users", "300", "--months", "7", "--seed", "1", "--out", str(out),
                 "--oracle-users", "30"]) == 0
    assert {p.name for p in out.iterdir()} == set(DATA_FILES) | {"manifest.json"}
    assert "simulated 300 users" in capsys.readouterr().out
    assert not list(tmp_path.glob(".world.tmp-*"))


def test_simulate_command_runs_from_outside_the_repository(tmp_path):
    """The installed `linerisk` finds its embedded defaults by its own import name, from any directory."""
    import subprocess
    import sys
    from pathlib import Path
    done = subprocess.run([str(Path(sys.executable).parent / "linerisk"), "simulate", "--users", "50", "--months", "2",
                           "--out", str(tmp_path / "w"), "--oracle-users", "5"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert (tmp_path / "w" / "manifest.json").exists()


def test_a_restoration_setting_without_one_value_per_cause_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "world.toml"
    config.write_text("[simulate.restoration]\ncooling_days = [30, 60]\n")
    assert main(["simulate", "--users", "50", "--months", "2", "--out", str(tmp_path / "w"),
                 "--config", str(config)]) == 2
    assert "restoration.cooling_days needs 8 values" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
    config.write_text("[simulate.restoration]\ncooling_days = [30, 30, 120, 45, 45, 45, 30, 60]\n")
    assert main(["simulate", "--users", "50", "--months", "2", "--out", str(tmp_path / "w"),
                 "--config", str(config)]) == 0


def test_simulate_help_lists_every_option():
    from click.testing import CliRunner
    from linerisk.pipeline.cli import cli
    result = CliRunner().invoke(cli, ["simulate", "--help"])
    assert result.exit_code == 0
    for opt in ("--users", "--months", "--seed", "--out", "--corrupt-rate"):
        assert opt in result.output


def test_the_review_lags_behaviour_so_causes_are_mostly_visible_at_the_snapshot(population_world):
    """Restrictions fire from a smoothed hazard (Hazards.review_lag_days), so for most restrictions
    within 90 days after a snapshot the drawn cause is already among the 3 largest components then;
    with an instant review (lag 1 day) this is under 60%, as behaviour after as_of drives most."""
    from linerisk.data.world import CAUSES
    snaps = pd.read_parquet(population_world / "truth_snapshots.parquet")
    truth = pd.read_parquet(population_world / "truth_restrictions.parquet")
    m = snaps.merge(truth[["user_id", "event_time", "cause"]], on="user_id")
    m = m[(m["event_time"] >= m["as_of"]) & (m["event_time"] < m["as_of"] + pd.Timedelta(days=90))]
    m = m.sort_values("event_time", kind="stable").drop_duplicates(["user_id", "as_of"])
    m = m[m["cause"] != "latent"]
    observed = [c for c in CAUSES if c != "latent"]
    h = m[[f"hazard_{c}" for c in observed]].to_numpy()
    order = np.argsort(-h, axis=1, kind="stable")[:, :3]
    top3 = np.where(np.take_along_axis(h, order, axis=1) > 0, np.asarray(observed, dtype=object)[order], None)
    seen = (top3 == m["cause"].to_numpy(dtype=object)[:, None]).any(axis=1)
    assert len(m) >= 500
    assert seen.mean() >= 0.7, seen.mean()
    overdue = seen[(m["cause"] == "overdue").to_numpy()]
    assert overdue.mean() >= 0.5, overdue.mean()
