"""The request check of `linerisk serve` read from a signature: the rule per column type, in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from mlflow.types import ColSpec, Schema

from linerisk.pipeline.serving import RequestCheck, tensor_schema

SCHEMA = Schema([ColSpec("double", "amount"), ColSpec("long", "count"), ColSpec("boolean", "flag"),
                 ColSpec("string", "city")])


def _check(inputs: dict) -> tuple[int, str] | dict:
    out = RequestCheck(SCHEMA)(json.dumps({"inputs": inputs}).encode(), "application/json")
    return out if isinstance(out, tuple) else json.loads(out)


def test_each_column_type_takes_its_values_and_null():
    body = _check({"amount": [1.5, None], "count": [3, 4.0], "flag": [True, None], "city": ["a", None]})
    assert body == {"inputs": {"amount": [1.5, None], "count": [3, 4.0], "flag": [True, None], "city": ["a", None]}}


@pytest.mark.parametrize("column, value, rule", [("amount", "1.5", "a JSON number or null"),
                                                 ("count", True, "a JSON number or null"),
                                                 ("flag", "yes", "true, false, a number or null"),
                                                 ("city", 3, "a string or null")])
def test_a_value_of_the_wrong_type_names_its_column_and_the_rule(column, value, rule):
    inputs = {"amount": [1.0], "count": [1], "flag": [False], "city": ["a"], column: [value]}
    assert _check(inputs) == (400, f"column '{column}': {json.dumps(value)} is not {rule}")


def test_the_served_signature_is_one_float64_tensor_per_column_and_object_for_text():
    served = tensor_schema(SCHEMA)
    assert served.input_names() == SCHEMA.input_names()
    assert [t for t in served.input_types()] == [np.dtype(np.float64)] * 3 + [np.dtype(object)]


def test_an_error_mlflow_returns_is_cut_to_its_cause_without_the_request_or_stack_trace():
    from mlflow.exceptions import MlflowException

    from linerisk.pipeline.serving import one_line

    dump = "   a    b\n0  1.0  2.0\n\n[1 rows x 2 columns]"
    err = MlflowException(f"Failed to predict data '{dump}'. \nError: Incompatible input types for column a.\nmore",
                          stack_trace="Traceback (most recent call last):\n  File ...")
    code, message = one_line(err.serialize_as_json().encode())
    assert message == "Incompatible input types for column a." and code == "INTERNAL_ERROR"
