"""The ``vision`` view kind: frozen image encoders (the packaged MobileNetV2, or any torch
module by dotted path; eager torch or ONNX Runtime) with a small trainable head."""
