"""MLflow: the one module that logs runs, registers models, moves aliases and resolves references.

Store: the tracking URI the caller set (`mlflow.set_tracking_uri` or `MLFLOW_TRACKING_URI`), used as
it is; only when none is set, SQLite at `$LINERISK_HOME/mlflow.db`, set for the duration of one call
and unset after it, so MLflow's global state is left as it was found. Local stores keep artifacts
in `$LINERISK_HOME/mlartifacts`. Aliases (`@challenger`, `@champion`), never stages.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

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


def default_uri() -> str:
    """The fallback store: SQLite at `$LINERISK_HOME/mlflow.db`."""
    return f"sqlite:///{_home() / 'mlflow.db'}"


def caller_uri() -> str | None:
    """The tracking URI the caller set (`mlflow.set_tracking_uri` or `MLFLOW_TRACKING_URI`), else None.

    `mlflow.get_tracking_uri()` alone cannot tell: it returns MLflow's own default when nothing is set."""
    from mlflow.tracking._tracking_service import utils

    return mlflow.get_tracking_uri() if utils.is_tracking_uri_set() else None


def tracking_uri() -> str:
    """The store linerisk uses: the caller's tracking URI if set, else SQLite in `$LINERISK_HOME`."""
    return caller_uri() or default_uri()


@contextlib.contextmanager
def store() -> Iterator[str]:
    """Run a block against the store (see tracking_uri); a fallback store is set only for the block."""
    quiet = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ  # one bar per artifact is noise
    if quiet:
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    uri = caller_uri()
    fallback = uri is None
    if fallback:
        uri = default_uri()
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(uri)
    try:
        yield uri
    finally:
        if fallback:
            mlflow.set_tracking_uri(None)
        if quiet:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)


F = TypeVar("F", bound=Callable[..., Any])


def _in_store(fn: F) -> F:
    """Decorator: the function runs inside `store()`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with store():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _experiment_id(name: str = EXPERIMENT) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    local = not re.match(r"^(https?|databricks)", mlflow.get_tracking_uri())
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


@_in_store
def resolve(ref: str) -> tuple[str, str, str]:
    """A model reference -> (name, version, `models:/name/version`); raises naming what is missing."""
    name, version, alias = parse_ref(ref)
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as exc:
        raise LookupError(f"no model {ref!r} in the registry at {mlflow.get_tracking_uri()} ({exc.message.splitlines()[0]})") from None
    return mv.name, str(mv.version), f"models:/{mv.name}/{mv.version}"


@_in_store
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


@_in_store
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
    """What users send, from the training frame's own dtypes: integers stay int64 (an int64 column must not
    be refused), floats are float64 (so float32 converts safely), booleans bool, anything else text."""
    out = X.copy()
    for c in out.columns:
        col = out[c]
        if pd.api.types.is_bool_dtype(col) and not col.isna().any():
            out[c] = col.astype("bool")
        elif pd.api.types.is_integer_dtype(col) and not col.isna().any():
            out[c] = col.astype("int64")
        elif pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            out[c] = col.astype("float64")
        else:
            out[c] = col.astype("object")
    return out


def pseudonymise(ids: pd.Series, key: str) -> pd.Series:
    """User ids replaced by keyed SipHash pseudonyms (16 hex digits): rows of one user still share a value,
    but without the key (never stored) nobody can recover or link the raw id."""
    hashed = pd.util.hash_pandas_object(ids.astype("string"), index=False, hash_key=key).to_numpy()
    return pd.Series(np.char.mod("%016x", hashed), index=ids.index, dtype="string")


def _pip_requirements() -> list[str]:
    import lightgbm
    import numba
    return [f"mlflow=={mlflow.__version__}", f"lightgbm=={lightgbm.__version__}",
            f"pandas=={pd.__version__}", f"numpy=={np.__version__}", f"numba=={numba.__version__}"]


@_in_store
def register_model(model, *, params: dict[str, Any], metrics: dict[str, float], reference: dict[str, Any],
                   test_frame: pd.DataFrame, report_html: str | None = None, name: str = DEFAULT_NAME,
                   tags: dict[str, str] | None = None, extra_artifacts: dict[str, str] | None = None,
                   keep_user_ids: bool = False, signature_frame: pd.DataFrame | None = None,
                   ) -> RegisteredVersion:
    """One MLflow run: params, metrics, report, spec + hash, test frame, and the pyfunc model
    registered as `name` with alias @challenger. `test_frame` holds the features and `label`; its
    user ids are stored as pseudonyms unless `keep_user_ids`. The signature and input example come
    from `signature_frame` (the training frame, default the test frame) with its own dtypes."""
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
        stored = test_frame[[*feature_names, LABEL_COLUMN, *[c for c in ("user_id", "as_of") if c in test_frame]]] \
            .reset_index(drop=True)
        if "user_id" in stored and not keep_user_ids:
            stored["user_id"] = pseudonymise(stored["user_id"], secrets.token_hex(8))
        mlflow.set_tag("linerisk.user_ids", "raw" if keep_user_ids or "user_id" not in stored else "pseudonymised")
        stored.to_parquet(test_path, index=False)
        mlflow.log_artifact(str(test_path), Path(TEST_ARTIFACT).parent.as_posix())
        if report_html is not None:
            mlflow.log_text(report_html, "report/report.html")
        for artifact_path, local in (extra_artifacts or {}).items():
            mlflow.log_artifact(local, artifact_path)

        pkg = root / "package"
        pkg.mkdir()
        artifacts = _package_files(model, reference, pkg)
        example = _signature_frame((test_frame if signature_frame is None else signature_frame)[feature_names].head(5))
        output = model.score(example)
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


@_in_store
def log_text(run_id: str, text: str, artifact_file: str) -> None:
    """Add a text artifact (e.g. the model card, which names the version) to a finished run."""
    MlflowClient().log_text(run_id, text, artifact_file)


# ---------------------------------------------------------------------------- promotion

class RegistryError(RuntimeError):
    """The registry could not answer (down, permission, missing artifact): a promotion stops, changing nothing."""


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
    data: str = ""

    def summary(self) -> str:
        def f(v):
            return "n/a" if v is None else f"{v:.4f}"
        verdict = "PROMOTED" if self.promoted else "REFUSED"
        return (f"{verdict}{' (forced)' if self.forced else ''}: {self.name} v{self.version} "
                f"(AUC {f(self.challenger_auc)}) vs champion "
                f"{'v' + self.champion_version if self.champion_version else 'none'} "
                f"(AUC {f(self.champion_auc)}) on {self.data or 'no data'}: {self.reason}")


def _registry_call(what: str, fn, *args, **kwargs):
    """Run one registry call; any MLflow error becomes a RegistryError naming `what`."""
    try:
        return fn(*args, **kwargs)
    except MlflowException as exc:
        raise RegistryError(f"registry at {mlflow.get_tracking_uri()}: cannot {what} ({exc.message.splitlines()[0][:200]})") from None


def _champion(client: MlflowClient, name: str):
    """The @champion version, or None when the model has no such alias; any other failure raises RegistryError."""
    aliases = _registry_call(f"read the aliases of {name!r}", client.get_registered_model, name).aliases or {}
    if CHAMPION not in aliases:
        return None
    return _registry_call(f"read {name}@{CHAMPION}", client.get_model_version, name, str(aliases[CHAMPION]))


def _test_frame(run_id: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        path = _registry_call(f"download the test part of run {run_id}", mlflow.artifacts.download_artifacts,
                              run_id=run_id, artifact_path=TEST_ARTIFACT, dst_path=tmp)
        return pd.read_parquet(path)


def _describe_part(version: str, frame: pd.DataFrame) -> str:
    span = ""
    if "as_of" in frame and len(frame):
        times = pd.to_datetime(frame["as_of"], utc=True)
        span = f", as_of {times.min():%Y-%m-%d}..{times.max():%Y-%m-%d}"
    return f"v{version}'s test part ({len(frame):,} rows{span})"


def _newest(frame: pd.DataFrame) -> pd.Timestamp | None:
    return pd.to_datetime(frame["as_of"], utc=True).max() if "as_of" in frame and len(frame) else None


def comparison_data(challenger, champion) -> tuple[pd.DataFrame, str]:
    """The data neither model trained on: the newer of the two test parts (by latest as_of; without times,
    the later-registered version's), with a line saying which."""
    parts = {str(mv.version): _test_frame(mv.run_id) for mv in (challenger, champion) if mv is not None}
    if len(parts) == 1:
        (version, frame), = parts.items()
        return frame, _describe_part(version, frame)
    newest = {v: _newest(f) for v, f in parts.items()}
    if all(t is not None for t in newest.values()):
        version = max(parts, key=lambda v: (newest[v], int(v)))
    else:
        version = max(parts, key=int)
    return parts[version], _describe_part(version, parts[version])


def _load(uri: str) -> mlflow.pyfunc.PyFuncModel:
    return _registry_call(f"load {uri}", mlflow.pyfunc.load_model, uri)


def _auc_on(model: mlflow.pyfunc.PyFuncModel, test: pd.DataFrame) -> float:
    """AUC of a loaded model on `test`; raises KeyError/ValueError/MlflowException when it cannot score it."""
    schema = model.metadata.get_input_schema()
    columns = schema.input_names() if schema is not None else [c for c in test.columns if c != LABEL_COLUMN]
    missing = [c for c in columns if c not in test.columns]
    if missing:
        raise KeyError(f"the data lacks the model's column(s) {', '.join(missing[:5])}")
    scores = model.predict(test[columns])
    column = "restore_probability" if "restore_probability" in scores.columns else "probability"
    return float(roc_auc_score(test[LABEL_COLUMN].to_numpy(), scores[column].to_numpy()))


@_in_store
def promote(name: str, version: str | int, force: bool = False, data: pd.DataFrame | None = None,
            data_name: str = "") -> PromotionDecision:
    """Move @champion to `version` if its AUC is not worse than the champion's, both scored on data neither
    trained on (`data`, else the newer of the two test parts); `force` overrides and is tagged `forced`.

    Fails closed: any registry error (down, permission, missing artifact) raises RegistryError before any
    alias or tag changes; only a model without a @champion alias counts as "no champion"."""
    client = MlflowClient()
    version = str(version)
    try:
        mv = client.get_model_version(name, version)
    except MlflowException:
        raise LookupError(f"no version {version} of model {name!r} in {mlflow.get_tracking_uri()}") from None
    champ = _champion(client, name)
    champ_version = str(champ.version) if champ is not None else None
    rival = champ if champ_version not in (None, version) else None
    if data is not None:
        if LABEL_COLUMN not in data:
            raise ValueError(f"--data {data_name}: no {LABEL_COLUMN!r} column")
        test, where = data, f"{data_name or 'the given data'} ({len(data):,} rows)"
    else:
        test, where = comparison_data(mv, rival)
    challenger = _load(f"models:/{name}/{version}")
    champion = _load(f"models:/{name}/{champ_version}") if rival is not None else None
    challenger_auc = champion_auc = None
    try:
        challenger_auc = _auc_on(challenger, test)
    except (MlflowException, ValueError, KeyError) as exc:
        passed, reason = False, f"challenger cannot score this data ({str(exc).splitlines()[0][:120]})"
    else:
        if champ is None:
            passed, reason = True, "no current champion"
        elif rival is None:
            passed, reason, champion_auc = True, "already the champion", challenger_auc
        else:
            try:
                champion_auc = _auc_on(champion, test)
            except (MlflowException, ValueError, KeyError) as exc:
                passed, reason = False, f"champion cannot score this data ({str(exc).splitlines()[0][:120]})"
            else:
                passed = challenger_auc >= champion_auc
                reason = "challenger AUC is not worse" if passed else "challenger AUC is worse"
    forced = bool(force and not passed)
    promoted = passed or forced
    if forced:
        reason += "; forced"
    decision = PromotionDecision(name, version, champ_version, challenger_auc, champion_auc, promoted, forced,
                                 reason, where)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    auc = lambda v: "n/a" if v is None else f"{v:.6f}"  # noqa: E731
    tags = {"promotion.decision": "forced" if forced else ("promoted" if promoted else "refused"),
            "promotion.challenger_auc": auc(challenger_auc), "promotion.champion_auc": auc(champion_auc),
            "promotion.champion_version": champ_version or "none", "promotion.reason": reason,
            "promotion.data": where, "promotion.time": stamp}
    for key, value in tags.items():
        _registry_call(f"tag {name} v{version}", client.set_model_version_tag, name, version, key, value)
    if rival is not None:
        _registry_call(f"tag {name} v{champ_version}", client.set_model_version_tag, name, champ_version,
                       f"challenged_by.v{version}",
                       f"{tags['promotion.decision']}: {tags['promotion.champion_auc']} (this) vs "
                       f"{tags['promotion.challenger_auc']} (v{version}) on {where} at {stamp}")
    if promoted:  # last: if a tag cannot be written, the champion has not moved
        _registry_call(f"move {name}@{CHAMPION}", client.set_registered_model_alias, name, CHAMPION, version)
    return decision


# ---------------------------------------------------------------------------- listing

@_in_store
def list_versions(name: str = DEFAULT_NAME) -> pd.DataFrame:
    """Registered versions of `name`: version, aliases, run, test AUC, promotion decision, created."""
    client = MlflowClient()
    try:
        aliases = client.get_registered_model(name).aliases or {}
    except MlflowException:
        raise LookupError(f"no registered model {name!r} in {mlflow.get_tracking_uri()}") from None
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


@_in_store
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

