"""The stages a model goes through, one module or package each, in the order a run takes them.

export -> precision (fp16 / int8 artifacts, decided on the CPU) -> build (backend compile)
-> compare (gates, output metrics, per-layer) -> profile -> bundle. Stages use the backends
and the basics below them and never the pipeline or the CLI above (docs/design.md, "Layers").
"""
