"""Fakes of tensorrt and pycuda that record calls, so GPU code is tested on machines without a GPU.

They expose only names that exist in the real APIs: tests/trt/test_fakes_match_stubs.py checks every
public attribute against tensorrt-stubs and tools/trt_stubs/stubs (pycuda).
"""
