"""The built wheel, installed into a fresh virtualenv, runs the README's Python walk-through as written in a
project folder that holds its own `models/` and `data/` packages, which stay the user's."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the wheel is built from (a copy, so the build never writes into the work tree).
SOURCES = ("pyproject.toml", "README.md", "linerisk", "data", "features", "models", "pipeline")
MARK = "## Python API (notebooks)"


def readme_walkthrough(readme: Path = ROOT / "README.md") -> str:
    """The first ```python block of the README's Python API section."""
    section = readme.read_text("utf-8").split(MARK, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """linerisk built as a wheel, once per session, from a copy of the sources."""
    src = tmp_path_factory.mktemp("wheel_src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(dist), str(src)], check=True, capture_output=True, text=True)
    return next(dist.glob("linerisk-*.whl"))


def fresh_venv(root: Path, wheel: Path) -> Path:
    """A virtualenv holding only the wheel's linerisk; the third-party libraries come from this test
    environment's site-packages through a plain path entry (a .pth line), which Python does not scan
    for .pth files, so the editable install's import hook there stays inactive."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--quiet", str(wheel)], check=True, capture_output=True, text=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def user_project(root: Path) -> Path:
    """A cookiecutter-style project folder with its own `models` and `data` packages."""
    for pkg, module in (("models", "train"), ("data", "make_dataset")):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("OWNER = 'user'\n")
        (root / pkg / f"{module}.py").write_text("OWNER = 'user'\n")
    return root


CHECKS_BEFORE = """\
import importlib.util, os, sys
import linerisk
assert os.path.realpath(linerisk.__file__).startswith(os.path.realpath(sys.prefix)), linerisk.__file__
assert not any('editable' in type(f).__name__.lower() or 'editable' in repr(f).lower() for f in sys.meta_path)
import models, models.train, data, data.make_dataset
assert models.OWNER == models.train.OWNER == data.OWNER == data.make_dataset.OWNER == 'user'
assert importlib.util.find_spec('models.scoring') is None and importlib.util.find_spec('linerisk.models.scoring')
"""
CHECKS_AFTER = """
import models
assert models.OWNER == 'user' and not hasattr(models, 'scoring'), dir(models)
assert sys.modules['linerisk.models.scoring'].__file__.startswith(os.path.dirname(linerisk.__file__))
print('walk-through done:', len(scores), 'scored,', version.name, 'v' + version.version)
"""


@pytest.mark.wheel
def test_the_wheel_runs_the_readme_walkthrough_beside_a_users_own_models_and_data_packages(
        wheel, mlflow_template_db, tmp_path):
    python = fresh_venv(tmp_path / "venv", wheel)
    project = user_project(tmp_path / "project")
    home = project / ".linerisk"
    home.mkdir()
    shutil.copy(mlflow_template_db, home / "mlflow.db")  # an empty, migrated store: no migrations in the run
    (project / "walkthrough.py").write_text(CHECKS_BEFORE + readme_walkthrough() + CHECKS_AFTER, "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHON", "LINERISK_"))}
    env.update(LINERISK_HOME=str(home), MPLBACKEND="Agg", PYTHONNOUSERSITE="1")

    run = subprocess.run([str(python), "walkthrough.py"], cwd=project, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "walk-through done:" in run.stdout and "PROMOTED" in run.stdout
    for name in ("report.html", "roc.png", "path_back.png"):
        assert (project / name).stat().st_size > 1000, name
    assert (home / "mlflow.db").stat().st_size > 0 and not (project / "mlflow.db").exists()

    cli = subprocess.run([str(python.parent / "linerisk"), "--help"], cwd=project, env=env, capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 0 and "score" in cli.stdout and "explain" in cli.stdout
