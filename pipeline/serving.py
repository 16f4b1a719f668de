"""The app `linerisk serve` runs in each worker: MLflow's scoring server for one registered model,
with every request checked against the model's signature first and every error in one line.

MLflow's own error answers quote the whole request frame and a stack trace; here a bad request gets
`400 {"error_code": "BAD_REQUEST", "message": "<one line naming the column and the rule>"}` before
the model sees it, and any other error MLflow returns is cut to its one-line cause (the stack trace
goes to the server log, never to the client). Generic over any model with a named signature.

Speed: MLflow parses `dataframe_split` and enforces a column signature with a pandas conversion per
column (74 features: over 10 ms per request, far more than scoring). A request checked here is handed
to MLflow in column form (`{"inputs": {column: [values]}}`, whatever format it came in) under the
same columns as one 1-d float64 tensor each (object for text), which MLflow checks with one numpy
cast per column and passes on as a mapping of column -> array, so the model builds its input matrix
directly. The registered signature is not changed: in-process users keep MLflow's column checks.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Awaitable, Callable

# set by `linerisk serve` for its workers: the local copy of the model to serve
MODEL_ENV = "LINERISK_SERVE_MODEL"
FORMATS = ("dataframe_split", "dataframe_records", "inputs", "instances")
MAX_MESSAGE = 300

logger = logging.getLogger("linerisk.serve")


class BadRequest(ValueError):
    """A request the model cannot score; the message is the one line the client gets."""


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _is_text(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _is_flag(v: Any) -> bool:
    return v is None or isinstance(v, bool) or _is_number(v)


class RequestCheck:
    """The model's input contract, read once from its signature: every named column must be there,
    numeric columns take JSON numbers or null (boolean ones also true/false), text columns strings
    or null, all columns as many rows."""

    def __init__(self, schema: Any):
        if schema is None or not schema.has_input_names():
            raise ValueError("the model has no named input signature to check requests against")
        self.names = schema.input_names()
        types = schema.input_types()
        self.text = {name for name, t in zip(self.names, types) if _is_text_type(t)}
        self.flags = {name for name, t in zip(self.names, types) if _type_name(t) in ("boolean", "bool")}

    def columns(self, payload: Any) -> dict[str, list]:
        """Column -> values of a decoded JSON body in any of MLflow's four formats."""
        keys = [k for k in FORMATS if isinstance(payload, dict) and k in payload]
        if len(keys) != 1 or any(k not in (*FORMATS, "params") for k in payload):
            raise BadRequest("the body must be a JSON object with exactly one of "
                             + ", ".join(FORMATS) + ' (e.g. {"inputs": {"<column>": [<value>, ...], ...}})')
        data = payload[keys[0]]
        if keys[0] == "dataframe_split":
            if not isinstance(data, dict) or not isinstance(data.get("columns"), list) \
                    or not isinstance(data.get("data"), list):
                raise BadRequest('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
            cols = data["columns"]
            for i, row in enumerate(data["data"]):
                if not isinstance(row, list) or len(row) != len(cols):
                    raise BadRequest(f"dataframe_split row {i} has {len(row) if isinstance(row, list) else 'no'} "
                                     f"values for {len(cols)} columns (each row needs one value per column)")
            rows = data["data"]
            return {c: [r[j] for r in rows] for j, c in enumerate(cols)}
        if isinstance(data, dict):  # inputs in column form
            return {c: v if isinstance(v, list) else [v] for c, v in data.items()}
        if isinstance(data, list) and all(isinstance(r, dict) for r in data):  # records
            names = {c for r in data for c in r}
            for i, r in enumerate(data):
                absent = [n for n in self.names if n not in r]
                if absent and any(n in names for n in absent):
                    raise BadRequest(f"record {i} has no column {absent[0]!r}: every record needs every "
                                     f"one of the model's {len(self.names)} columns (null where unknown)")
            return {c: [r.get(c) for r in data] for c in names}
        raise BadRequest(f"{keys[0]} must be an object of columns or a list of records")

    def check(self, columns: dict[str, list]) -> None:
        """Raise BadRequest naming the first missing or ill-typed column."""
        missing = [n for n in self.names if n not in columns]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise BadRequest(f"missing column {missing[0]!r}{more}: the model needs all {len(self.names)} of its "
                             "feature columns (send null for a value that is not known)")
        n = None
        for name in self.names:
            values = columns[name]
            ok = _is_text if name in self.text else _is_flag if name in self.flags else _is_number
            bad = next((v for v in values if not ok(v)), _OK)
            if bad is not _OK:
                rule = ("a string or null" if name in self.text else "true, false, a number or null"
                        if name in self.flags else "a JSON number or null")
                raise BadRequest(f"column {name!r}: {json.dumps(bad)[:40]} is not {rule}")
            if n is None:
                n = len(values)
            elif len(values) != n:
                raise BadRequest(f"column {name!r} has {len(values)} values but {self.names[0]!r} has {n} "
                                 "(every column needs one value per row)")
        if not n:
            raise BadRequest("the request has no rows to score")

    def __call__(self, body: bytes, content_type: str) -> tuple[int, str] | bytes:
        """(status, one-line problem) when the model cannot score the request, else the body to hand
        MLflow: the model's columns in column form, `{"inputs": {column: [values]}}`."""
        mime = content_type.split(";")[0].strip().lower()
        params = None
        try:
            if mime == "application/json":
                try:
                    payload = json.loads(body)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise BadRequest(f"the body is not valid JSON ({str(exc)[:80]})") from None
                columns = self.columns(payload)
                params = payload.get("params")
            elif mime in TABLES:
                columns = _table_columns(body, mime)
            else:
                return 415, f"content type {mime or 'none'!r}: send application/json, text/csv or {PARQUET}"
            self.check(columns)
        except BadRequest as exc:
            return 400, str(exc)
        canonical: dict[str, Any] = {"inputs": {n: columns[n] for n in self.names}}
        if params is not None:
            canonical["params"] = params
        return json.dumps(canonical).encode()


PARQUET = "application/vnd.apache.parquet"
TABLES = ("text/csv", PARQUET)


def _table_columns(body: bytes, mime: str) -> dict[str, list]:
    """Column -> values of a CSV or Parquet body (missing values as None)."""
    import io

    import pandas as pd

    try:
        frame = pd.read_csv(io.BytesIO(body)) if mime == "text/csv" else pd.read_parquet(io.BytesIO(body))
    except Exception as exc:  # any parser error is the client's: say which in one line
        raise BadRequest(f"the body is not a readable {'CSV' if mime == 'text/csv' else 'Parquet'} table "
                         f"({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})") from None
    return {str(c): [None if v is None or (isinstance(v, float) and v != v) else v
                     for v in frame[c].astype(object).tolist()] for c in frame.columns}


_OK = object()


def _is_text_type(t: Any) -> bool:
    """A signature input type that holds text: a string ColSpec or an object/str TensorSpec dtype."""
    kind = getattr(t, "kind", None)
    if kind is not None:  # numpy dtype of a TensorSpec
        return kind in "OUS"
    return _type_name(t) == "string"


def _type_name(t: Any) -> str:
    """`double`, `long`, `boolean`, `string`, ... of a ColSpec type (numpy dtypes by their name)."""
    return str(getattr(t, "name", t))


def one_line(body: bytes) -> tuple[str, str]:
    """(error code, message) of an MLflow error answer, cut to its cause's first line."""
    try:
        err = json.loads(body)
    except ValueError:
        err = {"message": body.decode("utf-8", "replace")}
    if not isinstance(err, dict):
        err = {"message": str(err)}
    if err.get("stack_trace"):
        logger.error("scoring failed:\n%s", err["stack_trace"])
    message = str(err.get("message", ""))
    if "Error: " in message:  # MLflow prefixes the cause with a dump of the request
        message = message.rsplit("Error: ", 1)[1]
    message = (message.strip().splitlines() or ["the model could not score the request"])[0]
    return str(err.get("error_code", "BAD_REQUEST")), message[:MAX_MESSAGE]


Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class OneLineErrors:
    """ASGI wrapper of MLflow's app: check each /invocations request first, cut every error answer to one line."""

    def __init__(self, app: Any, check: Callable[[bytes, str], tuple[int, str] | bytes]):
        self.app, self.check = app, check

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        checked = self.check(body, content_type)
        if isinstance(checked, tuple):
            status, problem = checked
            return await _answer(send, status, "BAD_REQUEST", problem)
        body = checked
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json"),
                                      (b"content-length", str(len(body)).encode())]}

        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        failed: dict[str, Any] = {}

        async def send_one_line(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                failed.update(status=message["status"], body=b"")
                return
            if failed and message["type"] == "http.response.body":
                failed["body"] += message.get("body", b"")
                if not message.get("more_body"):
                    await _answer(send, failed["status"], *one_line(failed["body"]))
                return
            await send(message)

        await self.app(scope, replay, send_one_line)


def tensor_schema(schema: Any) -> Any:
    """The same named inputs as one 1-d tensor each: float64 for numbers, object for text."""
    import numpy as np
    from mlflow.types import Schema, TensorSpec

    return Schema([TensorSpec(np.dtype(object) if _is_text_type(t) else np.dtype(np.float64), (-1,), name)
                   for name, t in zip(schema.input_names(), schema.input_types())])


APP = "linerisk.pipeline.serving:create_app"


def run(host: str, port: int, workers: int) -> None:
    """uvicorn serving `create_app` on host:port with `workers` processes (what uvicorn's CLI does,
    with one fix: its shared socket is rebuilt so Python sees it is TCP; uvicorn creates it with
    protocol 0, asyncio then leaves Nagle's algorithm on for every connection and a response
    waits ~40 ms for the client's delayed ACK whenever there is more than one worker)."""
    import socket

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(APP, factory=True, host=host, port=port, workers=workers, access_log=False)
    sock = config.bind_socket()
    sock = socket.socket(fileno=sock.detach())  # family, type and protocol read back from the kernel
    sock.set_inheritable(True)
    try:
        if workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> None:
    """`python -m linerisk.pipeline.serving --host H --port P --workers N` (started by `linerisk serve`)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m linerisk.pipeline.serving")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    run(args.host, args.port, args.workers)


def create_app() -> OneLineErrors:
    """The worker's app (uvicorn `--factory`): load the model at $LINERISK_SERVE_MODEL, wrap MLflow's server."""
    from mlflow.models import ModelSignature
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_ENV])
    signature = model.metadata.signature
    check = RequestCheck(signature.inputs if signature is not None else None)
    model.metadata.signature = ModelSignature(inputs=tensor_schema(signature.inputs), outputs=signature.outputs,
                                              params=signature.params)
    return OneLineErrors(scoring_server.init(model), check)


if __name__ == "__main__":
    main()
