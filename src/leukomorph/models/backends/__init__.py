"""Inference backends: onnxruntime (default) and a fake one for tests."""
