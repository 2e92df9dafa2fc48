# Minimal pycuda stubs: only what edgedeploy uses, checked against pycuda 2022.1+ (wrap_cudadrv.cpp).
VERSION: tuple[int, ...]
VERSION_TEXT: str
