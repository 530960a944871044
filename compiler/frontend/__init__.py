"""Reading models: ONNX files validated with one-line errors, shape binding, and the export of registered models."""
