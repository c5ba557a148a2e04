"""Meta-model training (walk-forward, Optuna, XGBoost), ONNX export and the model registry.

Kept apart from libs/common so services that only serve a model (signals: onnxruntime) and the
rest of the pipeline do not import the training stack."""
