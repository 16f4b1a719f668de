"""MLflow: the one module that logs runs, registers models, moves aliases and resolves references.

Store: `MLFLOW_TRACKING_URI` when set, else SQLite at `$LINERISK_HOME/mlflow.db`; local stores
keep artifacts in `$LINERISK_HOME/mlartifacts`. Aliases (`@challenger`, `@champion`), never stages.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

from linerisk.models.scoring import Scorer, load_files, sha256_bytes

DEFAULT_NAME = "linerisk"
EXPERIMENT = "linerisk"
CHALLENGER, CHAMPION = "challenger", "champion"
TEST_ARTIFACT = "evaluation/test.parquet"
LABEL_COLUMN = "label"
_HERE = Path(__file__).resolve().parent
# Shipped inside the model (MLflow code_paths) as a minimal `linerisk` package, so the served
# model imports them by their full names: the scorer, its SHAP kernel and the value formatter.
CODE_FILES = {"models/scoring.py": _HERE / "scoring.py", "models/treeshap.py": _HERE / "treeshap.py",
              "models/restore_scoring.py": _HERE / "restore_scoring.py",
              "features/valuefmt.py": _HERE.parent / "features" / "valuefmt.py"}


def _stage_code(root: Path) -> Path:
    """Write the minimal `linerisk` package of CODE_FILES under `root`; return its folder."""
    pkg = root / "linerisk"
    for rel, src in CODE_FILES.items():
        dest = pkg / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        (dest.parent / "__init__.py").touch()
        dest.write_bytes(src.read_bytes())
    (pkg / "__init__.py").write_text('"""The part of linerisk a served model needs (scoring, SHAP, value texts)."""\n')
    return pkg


# ---------------------------------------------------------------------------- store

def _home() -> Path:
    return Path(os.environ.get("LINERISK_HOME", ".linerisk")).resolve()  # same default as pipeline.io


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else SQLite in `$LINERISK_HOME`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{_home() / 'mlflow.db'}"


def configure() -> str:
    """Point mlflow (tracking and registry) at the store; create `$LINERISK_HOME` for a local store."""
    uri = tracking_uri()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per artifact is noise
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _experiment_id(name: str = EXPERIMENT) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    local = not re.match(r"^(https?|databricks)", tracking_uri())
    location = (_home() / "mlartifacts").as_uri() if local else None
    return mlflow.create_experiment(name, artifact_location=location)


# ---------------------------------------------------------------------------- references

@dataclass(frozen=True)
class RegisteredVersion:
    run_id: str
    name: str
    version: str
    model_uri: str


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """`[models:/]name@alias`, `[models:/]name/version` or `name` (= @champion) -> (name, version, alias)."""
    body = ref.removeprefix("models:/").strip("/")
    if "@" in body:
        name, alias = body.split("@", 1)
        return name, None, alias
    if "/" in body:
        name, version = body.rsplit("/", 1)
        if not version.isdigit():
            raise ValueError(f"model reference {ref!r}: version must be a number")
        return name, version, None
    if not body:
        raise ValueError("empty model reference")
    return body, None, CHAMPION


def resolve(ref: str) -> tuple[str, str, str]:
    """A model reference -> (name, version, `models:/name/version`); raises naming what is missing."""
    configure()
    name, version, alias = parse_ref(ref)
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise LookupError(f"no model {ref!r} in the registry at {tracking_uri()} ({exc.message.splitlines()[0]})") from None
    return mv.name, str(mv.version), f"models:/{mv.name}/{mv.version}"


def load_model(ref: str) -> mlflow.pyfunc.PyFuncModel:
    """Load a registered model as pyfunc (its artifacts are sha256-verified on load)."""
    _, _, uri = resolve(ref)
    return mlflow.pyfunc.load_model(uri)


@dataclass(frozen=True)
class ModelPackage:
    """A registered version's package, verified: its scorer, training reference and spec hash."""

    name: str
    version: str
    scorer: Scorer
    reference: dict[str, Any]

    @property
    def spec_hash(self) -> str:
        return str(self.scorer.spec.get("spec_hash", ""))

    @property
    def target(self) -> str:
        """What the model predicts: "restrict" (packages from before the restoration model carry no target)."""
        return str(self.scorer.spec.get("target", "restrict"))


def load_package(ref: str) -> ModelPackage:
    """Download a registered version's package files, check every sha256 against its manifest, load them."""
    from mlflow.models import Model

    name, version, uri = resolve(ref)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        entries = Model.load(str(local / "MLmodel")).flavors["python_function"].get("artifacts", {})
        paths = {key: str(local / entry["path"]) for key, entry in entries.items()}
        if "manifest" not in paths:
            raise ValueError(f"model {name} v{version} has no package manifest; it was not logged by linerisk")
        scorer, contents = load_files(paths)  # raises on any sha256 mismatch
        reference = json.loads(contents["reference"]) if "reference" in contents else {}
    return ModelPackage(name, version, scorer, reference)


# ---------------------------------------------------------------------------- logging and registering

def _package_files(model, reference: dict[str, Any], root: Path) -> dict[str, str]:
    """Write the model package (booster text, calibrator/spec/reference JSON, sha256 manifest) to `root`."""
    files = {
        "booster": ("booster.txt", model.booster_text_.encode("utf-8")),
        "calibrator": ("calibrator.json", json.dumps(model.calibrator_, indent=1).encode()),
        "spec": ("spec.json", json.dumps(model.spec_, indent=1, ensure_ascii=False).encode("utf-8")),
        "reference": ("reference.json", json.dumps(reference).encode()),
    }
    paths = {}
    for key, (fname, data) in files.items():
        (root / fname).write_bytes(data)
        paths[key] = str(root / fname)
    manifest = {"sha256": {key: sha256_bytes(data) for key, (_, data) in files.items()},
                "files": {key: fname for key, (fname, _) in files.items()}}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    paths["manifest"] = str(root / "manifest.json")
    return paths


def _signature_frame(X: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as float64 in the signature, so float32 or int input converts safely."""
    out = X.copy()
    for c in out.columns:
        if pd.api.types.is_numeric_dtype(out[c]) or pd.api.types.is_bool_dtype(out[c]):
            out[c] = out[c].astype("float64")
        else:
            out[c] = out[c].astype("object")
    return out


def _pip_requirements() -> list[str]:
    import lightgbm
    import numba
    return [f"mlflow=={mlflow.__version__}", f"lightgbm=={lightgbm.__version__}",
            f"pandas=={pd.__version__}", f"numpy=={np.__version__}", f"numba=={numba.__version__}"]


def register_model(model, *, params: dict[str, Any], metrics: dict[str, float], reference: dict[str, Any],
                   test_frame: pd.DataFrame, report_html: str | None = None, name: str = DEFAULT_NAME,
                   tags: dict[str, str] | None = None, extra_artifacts: dict[str, str] | None = None,
                   ) -> RegisteredVersion:
    """One MLflow run: params, metrics, report, spec + hash, test frame, and the pyfunc model
    registered as `name` with alias @challenger. `test_frame` holds the features and `label`."""
    configure()
    feature_names = [f["name"] for f in model.spec_["features"]]
    missing = [c for c in (*feature_names, LABEL_COLUMN) if c not in test_frame.columns]
    if missing:
        raise ValueError(f"test_frame lacks column(s) {', '.join(missing)}")
    client = MlflowClient()
    with mlflow.start_run(experiment_id=_experiment_id()) as run, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        mlflow.log_param("spec_hash", model.spec_["spec_hash"])
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})
        mlflow.set_tags({"linerisk.spec_hash": model.spec_["spec_hash"], **(tags or {})})
        (root / "feature_spec.json").write_text(json.dumps(model.spec_, indent=1, ensure_ascii=False))
        mlflow.log_artifact(str(root / "feature_spec.json"), "spec")
        test_path = root / "test.parquet"
        test_frame[[*feature_names, LABEL_COLUMN, *[c for c in ("user_id", "as_of") if c in test_frame]]] \
            .reset_index(drop=True).to_parquet(test_path, index=False)
        mlflow.log_artifact(str(test_path), Path(TEST_ARTIFACT).parent.as_posix())
        if report_html is not None:
            mlflow.log_text(report_html, "report/report.html")
        for artifact_path, local in (extra_artifacts or {}).items():
            mlflow.log_artifact(local, artifact_path)

        pkg = root / "package"
        pkg.mkdir()
        artifacts = _package_files(model, reference, pkg)
        example = _signature_frame(test_frame[feature_names].head(5))
        output = model.score(test_frame[feature_names].head(5))
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(_HERE / "pyfunc_model.py"), code_paths=[str(_stage_code(root / "code"))],
            artifacts=artifacts, signature=infer_signature(example, output), input_example=example,
            pip_requirements=_pip_requirements(), registered_model_name=name)
        version = str(info.registered_model_version)
        client.set_registered_model_alias(name, CHALLENGER, version)
        for key, value in {"run_id": run.info.run_id, "spec_hash": model.spec_["spec_hash"],
                           "test_auc": None if metrics.get("test_auc") is None else f"{metrics['test_auc']:.6f}"}.items():
            if value is not None:
                client.set_model_version_tag(name, version, key, str(value))
        return RegisteredVersion(run.info.run_id, name, version, f"models:/{name}/{version}")


# ---------------------------------------------------------------------------- promotion

@dataclass(frozen=True)
class PromotionDecision:
    name: str
    version: str
    champion_version: str | None
    challenger_auc: float | None
    champion_auc: float | None
    promoted: bool
    forced: bool
    reason: str

    def summary(self) -> str:
        def f(v):
            return "n/a" if v is None else f"{v:.4f}"
        verdict = "PROMOTED" if self.promoted else "REFUSED"
        return (f"{verdict}: {self.name} v{self.version} (test AUC {f(self.challenger_auc)}) vs champion "
                f"{'v' + self.champion_version if self.champion_version else 'none'} "
                f"(AUC {f(self.champion_auc)}) on v{self.version}'s test data: {self.reason}")


def _test_frame(run_id: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TEST_ARTIFACT, dst_path=tmp)
        return pd.read_parquet(path)


def _auc_on(uri: str, test: pd.DataFrame) -> float:
    model = mlflow.pyfunc.load_model(uri)
    schema = model.metadata.get_input_schema()
    columns = schema.input_names() if schema is not None else [c for c in test.columns if c != LABEL_COLUMN]
    missing = [c for c in columns if c not in test.columns]
    if missing:
        raise KeyError(f"test data lacks the model's column(s) {', '.join(missing[:5])}")
    scores = model.predict(test[columns])
    column = "restore_probability" if "restore_probability" in scores.columns else "probability"
    return float(roc_auc_score(test[LABEL_COLUMN].to_numpy(), scores[column].to_numpy()))


def promote(name: str, version: str | int, force: bool = False) -> PromotionDecision:
    """Move @champion to `version` if its test AUC is not worse than the champion's, both re-scored
    on the test part stored with `version`'s run; `force` overrides. Tags both versions."""
    configure()
    client = MlflowClient()
    version = str(version)
    try:
        mv = client.get_model_version(name, version)
    except MlflowException:
        raise LookupError(f"no version {version} of model {name!r} in {tracking_uri()}") from None
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champ = None
    test = _test_frame(mv.run_id)
    challenger_auc = _auc_on(f"models:/{name}/{version}", test)
    champion_auc, champ_version = None, (str(champ.version) if champ else None)
    if champ is None:
        promoted, reason = True, "no current champion"
    elif champ_version == version:
        promoted, reason = True, "already the champion"
        champion_auc = challenger_auc
    else:
        try:
            champion_auc = _auc_on(f"models:/{name}/{champ_version}", test)
        except (MlflowException, ValueError, KeyError) as exc:
            promoted, reason = force, f"champion cannot score this test data ({str(exc).splitlines()[0][:120]})"
        else:
            promoted = challenger_auc >= champion_auc
            reason = "challenger AUC is not worse" if promoted else "challenger AUC is worse"
    forced = bool(force and not promoted)
    if forced:
        promoted, reason = True, reason + "; forced"
    decision = PromotionDecision(name, version, champ_version, challenger_auc, champion_auc, promoted, forced, reason)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    tags = {"promotion.decision": "forced" if forced else ("promoted" if promoted else "refused"),
            "promotion.challenger_auc": f"{challenger_auc:.6f}",
            "promotion.champion_auc": "n/a" if champion_auc is None else f"{champion_auc:.6f}",
            "promotion.champion_version": champ_version or "none", "promotion.reason": reason,
            "promotion.time": stamp}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if champ_version and champ_version != version:
        client.set_model_version_tag(name, champ_version, f"challenged_by.v{version}",
                                     f"{tags['promotion.decision']}: {tags['promotion.champion_auc']} (this) vs "
                                     f"{tags['promotion.challenger_auc']} (v{version}) at {stamp}")
    return decision


# ---------------------------------------------------------------------------- listing

def list_versions(name: str = DEFAULT_NAME) -> pd.DataFrame:
    """Registered versions of `name`: version, aliases, run, test AUC, promotion decision, created."""
    configure()
    client = MlflowClient()
    try:
        aliases = client.get_registered_model(name).aliases or {}
    except MlflowException:
        raise LookupError(f"no registered model {name!r} in {tracking_uri()}") from None
    by_version: dict[str, list[str]] = {}
    for alias, v in aliases.items():
        by_version.setdefault(str(v), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        rows.append({"version": int(mv.version), "aliases": ",".join(sorted(by_version.get(str(mv.version), []))),
                     "test_auc": mv.tags.get("test_auc", ""), "promotion": mv.tags.get("promotion.decision", ""),
                     "run_id": mv.run_id,
                     "created": dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.timezone.utc)
                     .strftime("%Y-%m-%d %H:%M:%S")})
    return pd.DataFrame(rows).sort_values("version").reset_index(drop=True) if rows else pd.DataFrame(rows)


def show(ref: str) -> dict[str, Any]:
    """Everything about one version: name, version, aliases, tags, source, run params and metrics."""
    name, version, uri = resolve(ref)
    client = MlflowClient()
    mv = client.get_model_version(name, version)
    aliases = [a for a, v in (client.get_registered_model(name).aliases or {}).items() if str(v) == version]
    run = client.get_run(mv.run_id)
    return {"name": name, "version": version, "model_uri": uri, "aliases": sorted(aliases), "run_id": mv.run_id,
            "source": mv.source, "tags": dict(mv.tags), "params": dict(run.data.params),
            "metrics": dict(run.data.metrics)}

