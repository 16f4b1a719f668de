"""The served model: an MLflow pyfunc logged as code, so nothing is pickled.

Shipped inside the registered model together with scoring.py, restore_scoring.py, treeshap.py and valuefmt.py as a
minimal `linerisk` package (code_paths; numba optional; no bare module names a user's could shadow), importing only mlflow, numpy, pandas and lightgbm through them,
so a process without this repository can load `models:/linerisk@champion`. `load_context` verifies every artifact's sha256
against the manifest and refuses a tampered package.
"""
from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import set_model

# Inside a loaded model this is the minimal `linerisk` package shipped in code/ (see
# registry.CODE_FILES); where linerisk is installed, the same modules.
from linerisk.models.scoring import scorer_from_files


class LineRiskModel(mlflow.pyfunc.PythonModel):
    """Feature columns in; the package's answer out: for `linerisk`, probability, band and the top-3 reasons
    (family, code, texts, SHAP log-odds); for `linerisk-restore` (a restoration package, chosen by its spec),
    restore_probability, the curve's median and the red line, and the reasons holding restoration back.

    MLflow hands `predict` a frame, or a mapping of column -> array under a tensor signature (as
    `linerisk serve` gives it); the Scorer was built once in `load_context`."""

    def load_context(self, context) -> None:
        self.scorer = scorer_from_files(dict(context.artifacts))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        return self.scorer.score(as_frame(model_input))


def as_frame(model_input) -> pd.DataFrame:
    """A frame of the model input; a mapping of equal-length columns becomes one in a single block."""
    if isinstance(model_input, pd.DataFrame):
        return model_input
    names = list(model_input)
    return pd.DataFrame(np.column_stack([np.asarray(model_input[n]).reshape(-1) for n in names]), columns=names)


set_model(LineRiskModel())
