"""TOML config: a value of the wrong type or an unknown key is one line naming it, before anything runs."""
from __future__ import annotations

import pytest

from linerisk.data.schema import InputError
from linerisk.pipeline.cli import main
from linerisk.pipeline.config import build, load_toml


@pytest.mark.parametrize("toml, named", [
    ('[simulate]\nusers = "5000"\n', "simulate.users"),
    ("[simulate]\nuserz = 5000\n", "userz"),
    ('[simulate.hazards]\noverdue = "high"\n', "simulate.hazards.overdue"),
    ("[simulate]\nhazards = 3\n", "simulate.hazards"),
    ("[simulat]\nusers = 5000\n", "[simulat]"),
])
def test_a_bad_simulate_config_exits_2_with_one_line_naming_the_key(tmp_path, capsys, toml, named):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    out = tmp_path / "world"
    assert main(["simulate", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: config") and named in err[0], err
    assert not out.exists()


def test_train_values_are_type_checked_and_integers_pass_as_floats(tmp_path):
    from linerisk.models.train import TrainParams

    cfg = tmp_path / "train.toml"
    cfg.write_text("[train]\nmax_depth = 6.5\n")
    with pytest.raises(InputError, match=r"train\.max_depth must be an integer, not 6\.5"):
        build(TrainParams, load_toml(cfg)["train"], "train")
    cfg.write_text("[train]\nlearning_rate = 1\ncalibration = 'sigmoid'\n")
    params = build(TrainParams, load_toml(cfg)["train"], "train")
    assert params.learning_rate == 1.0 and isinstance(params.learning_rate, float)
