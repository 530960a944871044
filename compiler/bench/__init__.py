"""Benchmarks: `python -m compiler.bench` (TVM beside ONNX Runtime and PyTorch), backbones, variants, per-kernel profiles."""
