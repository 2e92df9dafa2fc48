"""INT8 post-training calibration on the CPU, and the data sources every stage shares.

This package is the lower layer: it never imports ``edgedeploy``. It owns the data sources
(feed-dict generators), the streaming statistics, the calibration algorithms, the Q/DQ ONNX
writer and the TensorRT calibration cache format.
"""
