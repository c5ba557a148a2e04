"""Serving form of the meta-model: ONNX bytes scored by onnxruntime.

The signal path scores one row per candle; onnxruntime answers a single row ~20x faster than
xgboost (see DEPENDENCIES.md), so training exports once and serving never imports xgboost.
xgboost's converter emits a plain (rows x 2) probability tensor (no ZipMap), and its trees
route NaN down each split's learned default branch exactly as xgboost does, so NaN stays the
missing-value marker end to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

if TYPE_CHECKING:
    import xgboost

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
TARGET_OPSET = 15
GRAPH_NAME = "meridian_xgb_classifier"


def to_onnx(model: xgboost.XGBClassifier, n_features: int) -> bytes:
    """Serialized ONNX for a fitted binary classifier taking `n_features` float32 columns.

    The converter (and with it xgboost and scikit-learn, ~4 s of imports) is loaded here only,
    so a serving process that just scores ONNX never pays for it."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    trained = getattr(model, "n_features_in_", None)
    if trained is not None and trained != n_features:
        raise ValueError(f"model was trained on {trained} features, asked to export "
                         f"{n_features}")
    if getattr(model, "n_classes_", 2) != 2:
        raise ValueError(f"only binary classifiers are exported, model has {model.n_classes_} "
                         "classes")
    proto = onnxmltools.convert_xgboost(
        model, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        target_opset=TARGET_OPSET)
    # The converter names the graph with a random uuid; a fixed name makes the bytes (and so the
    # registry's content hash) a function of the trees alone.
    proto.graph.name = GRAPH_NAME
    return bytes(proto.SerializeToString())


class OnnxModel:
    """One inference session (CPU, one thread: the services already run one process per core
    and a thread pool only adds latency for single rows). `proba_one` reuses one input buffer,
    so an instance must not be shared between threads."""

    def __init__(self, onnx_bytes: bytes) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._session = ort.InferenceSession(onnx_bytes, sess_options=options,
                                             providers=["CPUExecutionProvider"])
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 2 or not isinstance(inputs[0].shape[1],
                                                                             int):
            shapes = [(i.name, i.shape) for i in inputs]
            raise ValueError(f"expected one input of shape [rows, n_features], got {shapes}")
        self._input = inputs[0].name
        self.n_features: int = inputs[0].shape[1]
        self._outputs = [_probability_output(self._session)]
        self._row = np.empty((1, self.n_features), dtype=np.float32)
        self._feed = {self._input: self._row}

    def proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:  # noqa: N803
        """P(class 1) for each row of `X` (rows x n_features; NaN = missing)."""
        rows = np.ascontiguousarray(X, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape "
                             f"{rows.shape}")
        if rows.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        out = self._session.run(self._outputs, {self._input: rows})[0]
        return np.asarray(out[:, 1], dtype=np.float64)

    def proba_one(self, row: Sequence[float] | npt.NDArray[np.floating]) -> float:
        """P(class 1) for one row: the hot path, no per-call allocation of the input."""
        if len(row) != self.n_features:
            raise ValueError(f"expected {self.n_features} features, got {len(row)}")
        self._row[0, :] = row
        return float(self._session.run(self._outputs, self._feed)[0][0, 1])


def _probability_output(session: ort.InferenceSession) -> str:
    """The (rows x 2) float probability tensor; a ZipMap (list of dicts) output is refused
    because it is ~10x slower to read and loses the column order."""
    outputs = session.get_outputs()
    for out in outputs:
        if out.name == PROBABILITIES and out.type == "tensor(float)":
            return str(out.name)
    for out in outputs:
        if out.type == "tensor(float)" and len(out.shape) == 2 and out.shape[1] == 2:
            return str(out.name)
    found = [(o.name, o.type, o.shape) for o in outputs]
    raise ValueError(f"no (rows x 2) float probability output in the ONNX model; outputs: "
                     f"{found} (export with zipmap disabled)")
