"""Small real models whose FP16 or INT8 conversion really goes wrong, shared by tests and benchmarks.

``audio_transformer``: one transformer block (token embedding, LayerNorm, multi-head attention with
Softmax, GELU MLP) over raw 16-bit audio frames (sample values up to +-32767) projected into the
residual stream; the projected activations reach a few 1e5 before the first LayerNorm, so a naive
FP16 conversion turns them into Inf and the LayerNorms into NaN.
The ONNX-helper builders make the hand-decomposed patterns (LayerNorm as ReduceMean/Pow chains,
L2 normalisation, control flow, external data) that exporters emit for older opsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SEQ = 16
FRAME = 32
VOCAB = 50
DIM = 64


def audio_transformer(blocks: int = 1, seed: int = 0) -> Any:
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(DIM)
            self.qkv = nn.Linear(DIM, 3 * DIM)
            self.proj = nn.Linear(DIM, DIM)
            self.ln2 = nn.LayerNorm(DIM)
            self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))
            self.heads = 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
            shape = (b, t, self.heads, d // self.heads)
            q, k, v = (z.reshape(shape).transpose(1, 2) for z in (q, k, v))
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, t, d)
            x = x + self.proj(y)
            return x + self.mlp(self.ln2(x))

    class AudioTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.embed = nn.Embedding(VOCAB, DIM)
            self.frames = nn.Linear(FRAME, DIM)
            self.pos = nn.Parameter(torch.randn(SEQ, DIM) * 0.02)
            self.blocks = nn.Sequential(*[Block() for _ in range(blocks)])
            self.norm = nn.LayerNorm(DIM)
            self.head = nn.Linear(DIM, 10)
            with torch.no_grad():  # a trained front end with gain: pre-norm activations reach ~1e5
                self.frames.weight.mul_(6.0)

        def forward(self, tokens: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
            x = self.embed(tokens) + self.frames(audio) + self.pos
            x = self.norm(self.blocks(x))
            return self.head(x.mean(dim=1))  # type: ignore[no-any-return]

    return AudioTransformer().eval()


def audio_batch(batch: int, seed: int) -> dict[str, np.ndarray]:
    """Token ids and raw int16 audio frames (as float32), loud enough to use most of the range."""
    rng = np.random.default_rng(seed)
    tone = np.sin(np.linspace(0, 40 * np.pi, SEQ * FRAME)).reshape(SEQ, FRAME)
    gain = rng.uniform(0.5, 1.0, (batch, 1, 1))
    audio = np.clip(
        32767 * gain * (0.7 * tone + 0.3 * rng.standard_normal((batch, SEQ, FRAME))), -32768, 32767
    )
    tokens = rng.integers(0, VOCAB, (batch, SEQ))
    return {"tokens": tokens.astype(np.int64), "audio": np.round(audio).astype(np.float32)}


def export_audio_transformer(dest: Path, blocks: int = 1) -> Path:
    import torch

    from edgedeploy.stages.export import ExportOptions, export_module

    example = {k: torch.from_numpy(v) for k, v in audio_batch(2, 0).items()}
    export_module(audio_transformer(blocks), example, dest, ExportOptions(output_names=["logits"]))
    return dest


def save_audio_data(dest: Path, batches: int = 4, batch: int = 8, seed: int = 1) -> Path:
    parts = [audio_batch(batch, seed + i) for i in range(batches)]
    np.savez(dest, **{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    return dest


def _model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def decomposed_layernorm_model(scale: float = 4000.0, seed: int = 0) -> onnx.ModelProto:
    """x (N, 8) -> MatMul (x scale) -> LayerNorm as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div -> MatMul.

    With inputs of magnitude ~1, the first MatMul's output is ~scale, the Pow squares it past 65504.
    """
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 16)) * scale / 3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((16, 4)) * 0.3).astype(np.float32), "w2")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    eps = numpy_helper.from_array(np.array(1e-5, np.float32), "eps")
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="proj"),
        helper.make_node("ReduceMean", ["h", "axes"], ["mean"], name="ln_mean", keepdims=1),
        helper.make_node("Sub", ["h", "mean"], ["centered"], name="ln_sub"),
        helper.make_node("Pow", ["centered", "two"], ["sq"], name="ln_pow"),
        helper.make_node("ReduceMean", ["sq", "axes"], ["var"], name="ln_var", keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["var_eps"], name="ln_add_eps"),
        helper.make_node("Sqrt", ["var_eps"], ["std"], name="ln_sqrt"),
        helper.make_node("Div", ["centered", "std"], ["normed"], name="ln_div"),
        helper.make_node("MatMul", ["normed", "w2"], ["y"], name="head"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w1, w2, two, eps, axes],
        opset=18,
    )


def l2norm_model(seed: int = 0) -> onnx.ModelProto:
    """x (N, 8) -> MatMul -> L2 normalise (ReduceL2, Div) -> MatMul: ReduceL2's sum of squares overflows."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 32)) * 200).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((32, 4))).astype(np.float32), "w2")
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="embed"),
        helper.make_node("ReduceL2", ["h", "axes"], ["norm"], name="l2", keepdims=1),
        helper.make_node("Div", ["h", "norm"], ["unit"], name="l2_div"),
        helper.make_node("MatMul", ["unit", "w2"], ["y"], name="head"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w1, w2, axes],
        opset=18,
    )


def lp_normalization_model(p: int = 2) -> onnx.ModelProto:
    """x (N, 8) -> LpNormalization (axis -1) beside ReduceL2 of the same x: the norm's output is in
    [-1, 1] and shows nothing of the sum of |x|**p it divides by."""
    nodes = [
        helper.make_node("ReduceL2", ["x"], ["l2"], name="l2", keepdims=0, axes=[1]),
        helper.make_node("LpNormalization", ["x"], ["unit"], name="lpn", axis=-1, p=p),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [
            helper.make_tensor_value_info("l2", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("unit", TensorProto.FLOAT, ["n", 8]),
        ],
        [],
        opset=13,
    )


def lp_pool_model(op: str = "GlobalLpPool", p: int = 2) -> onnx.ModelProto:
    """x (N, 2, 2, 4) -> GlobalLpPool, or LpPool over the whole 2x4 window: each output is the root
    of a sum of 8 values of |x|**p, which fp16 accumulates."""
    attrs: dict[str, Any] = {"p": p, **({"kernel_shape": [2, 4]} if op == "LpPool" else {})}
    nodes = [helper.make_node(op, ["x"], ["y"], name="pool", **attrs)]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 1, 1])],
        [],
        opset=18,
    )


def softmax_model(op: str = "Softmax") -> onnx.ModelProto:
    """x (N, 4) -> Softmax or LogSoftmax (axis -1), as ONNX's test_softmax_large_number."""
    nodes = [helper.make_node(op, ["x"], ["y"], name="softmax", axis=-1)]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [],
        opset=13,
    )


def scaled_softmax_model(scale: float = 0.0625, seed: int = 0) -> onnx.ModelProto:
    """x (N, 16) -> MatMul (qk) -> Mul by ``scale`` -> Add a mask (two columns at -10000) -> Softmax:
    the logits of an attention score reach the Softmax through a chain. With x near 1900 and the
    columns of w 0.5 give or take 0.0006, qk is near 15200 with columns a few units apart."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((0.5 + 0.0006 * rng.standard_normal((16, 8))).astype(np.float32), "w")
    s = numpy_helper.from_array(np.array(scale, np.float32), "s")
    mask = numpy_helper.from_array(np.array([0] * 6 + [-10000] * 2, np.float32), "mask")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["qk"], name="qk"),
        helper.make_node("Mul", ["qk", "s"], ["scaled"], name="scale"),
        helper.make_node("Add", ["scaled", "mask"], ["masked"], name="mask"),
        helper.make_node("Softmax", ["masked"], ["y"], name="softmax", axis=-1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [w, s, mask],
        opset=13,
    )


def squared_l2norm_model(width: int = 512, seed: int = 0) -> onnx.ModelProto:
    """x (N, width) -> Mul by 20 -> L2 normalise written out (Mul(h, h), ReduceSum, Sqrt, Div) -> MatMul:
    the Mul reads h twice; at width 512 the sum of its squares overflows while each square fits fp16."""
    rng = np.random.default_rng(seed)
    k = numpy_helper.from_array(np.array(20.0, np.float32), "k")
    w = numpy_helper.from_array((rng.standard_normal((width, 4))).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["h"], name="scale"),
        helper.make_node("Mul", ["h", "h"], ["sq"], name="square"),
        helper.make_node("ReduceSum", ["sq", "axes"], ["sumsq"], name="sum_sq", keepdims=1),
        helper.make_node("Sqrt", ["sumsq"], ["norm"], name="sqrt"),
        helper.make_node("Div", ["h", "norm"], ["unit"], name="l2_div"),
        helper.make_node("MatMul", ["unit", "w"], ["y"], name="head"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [k, w, axes],
    )


def big_weight_model() -> onnx.ModelProto:
    """A Mul by a weight holding 1e5 (Inf in FP16), a Constant node with tiny values, then a MatMul."""
    rng = np.random.default_rng(0)
    big = numpy_helper.from_array(np.array([1e5, 1.0, 2.0, 3.0], np.float32), "big")
    w = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")
    tiny = numpy_helper.from_array(np.full((4,), 1e-9, np.float32), "tiny_value")
    nodes = [
        helper.make_node("Constant", [], ["tiny"], name="tiny_const", value=tiny),
        helper.make_node("Mul", ["x", "big"], ["scaled"], name="scale_big"),
        helper.make_node("Div", ["scaled", "big"], ["back"], name="unscale"),
        helper.make_node("Add", ["back", "tiny"], ["nudged"], name="nudge"),
        helper.make_node("MatMul", ["nudged", "w"], ["y"], name="mm"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [big, w],
    )


def late_overflow_model() -> onnx.ModelProto:
    """x (N, 16) -> Mul by 100 -> Relu -> Mul by 0.01: inputs of magnitude ~1 stay in fp16's range,
    inputs a few thousand times larger overflow it at the first Mul and the Relu."""
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["a"], name="up"),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("Mul", ["b", "kinv"], ["y"], name="down"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])],
        [
            numpy_helper.from_array(np.array(100, np.float32), "k"),
            numpy_helper.from_array(np.array(0.01, np.float32), "kinv"),
        ],
    )


def if_model() -> onnx.ModelProto:
    """MatMul, then an If whose branches scale by 3e4 and divide back (overflow inside a subgraph)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")
    k = numpy_helper.from_array(np.array(3e4, np.float32), "k")
    then_g = helper.make_graph(
        [
            helper.make_node("Mul", ["h", "k"], ["t1"], name="then_mul"),
            helper.make_node("Mul", ["t1", "h"], ["t2"], name="then_sq"),
            helper.make_node("Div", ["t2", "k"], ["then_out"], name="then_div"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h"], ["else_out"], name="else_neg")],
        "else",
        [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["z"], name="branch", then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["z"], ["y"], name="relu"),
    ]
    zero = numpy_helper.from_array(np.array(-1e9, np.float32), "zero")
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w, k, zero],
    )


def _layernorm(x: str, out: str, two: str, eps: str, tag: str) -> list[onnx.NodeProto]:
    """LayerNorm over the last axis as torch.onnx writes it for opset 13: ReduceMean, Sub, Pow(2),
    ReduceMean, Add(eps), Sqrt, Div."""
    return [
        helper.make_node("ReduceMean", [x], [f"{tag}_m"], name=f"{tag}_mean", axes=[-1]),
        helper.make_node("Sub", [x, f"{tag}_m"], [f"{tag}_d"], name=f"{tag}_sub"),
        helper.make_node("Pow", [f"{tag}_d", two], [f"{tag}_d2"], name=f"{tag}_pow"),
        helper.make_node("ReduceMean", [f"{tag}_d2"], [f"{tag}_v"], name=f"{tag}_var", axes=[-1]),
        helper.make_node("Add", [f"{tag}_v", eps], [f"{tag}_ve"], name=f"{tag}_eps"),
        helper.make_node("Sqrt", [f"{tag}_ve"], [f"{tag}_sd"], name=f"{tag}_sqrt"),
        helper.make_node("Div", [f"{tag}_d", f"{tag}_sd"], [out], name=f"{tag}_div"),
    ]


def shadowing_if_model(*, constants: bool = False) -> onnx.ModelProto:
    """openwakeword's hey_jarvis as onnxslim leaves it, small: x[n, 8] -> MatMul, a decomposed
    LayerNorm, MatMul, Sigmoid -> p; an If on sum(x) > 0 whose then-branch runs a second such
    network on x and whose else-branch returns p. The then-branch's weights ``two`` and ``eps``
    (the Pow exponent and the LayerNorm epsilon) bear the names of the main graph's, with the same
    values: onnxslim folds both graphs' Constants into initializers of one name. ``constants``:
    the file before onnxslim, those four as Constant nodes of names of their own (``two``, ``eps``;
    ``two_then``, ``eps_then``), as torch.onnx writes them."""
    rng = np.random.default_rng(3)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    def fixed(name: str, value: float, as_constant: bool) -> onnx.TensorProto | onnx.NodeProto:
        tensor = numpy_helper.from_array(np.array(value, np.float32), name)
        if not as_constant:
            return tensor
        return helper.make_node("Constant", [], [name], name=f"const_{name}", value=tensor)

    then_two, then_eps = ("two_then", "eps_then") if constants else ("two", "eps")
    then_fixed = [fixed(then_two, 2.0, constants), fixed(then_eps, 1e-5, constants)]
    then_g = helper.make_graph(
        [
            *(n for n in then_fixed if isinstance(n, onnx.NodeProto)),
            helper.make_node("MatMul", ["x", "v1"], ["g"], name="then_mm1"),
            *_layernorm("g", "gl", then_two, then_eps, "then_ln"),
            helper.make_node("MatMul", ["gl", "v2"], ["q"], name="then_mm2"),
            helper.make_node("Sigmoid", ["q"], ["then_out"], name="then_sigmoid"),
        ],
        "then",
        [],
        [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)],
        initializer=[weight("v1", 8, 8), weight("v2", 8, 1)]
        + [t for t in then_fixed if isinstance(t, onnx.TensorProto)],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["p"], ["else_out"], name="else_id")],
        "else",
        [],
        [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, None)],
    )
    main_fixed = [fixed("two", 2.0, constants), fixed("eps", 1e-5, constants)]
    nodes = [
        *(n for n in main_fixed if isinstance(n, onnx.NodeProto)),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        *_layernorm("h", "hl", "two", "eps", "ln"),
        helper.make_node("MatMul", ["hl", "w2"], ["s"], name="mm2"),
        helper.make_node("Sigmoid", ["s"], ["p"], name="sigmoid"),
        helper.make_node("ReduceSum", ["x"], ["total"], name="sum", keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"], name="gt"),
        helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_g, else_branch=else_g),
    ]
    inits = [weight("w1", 8, 8), weight("w2", 8, 1), numpy_helper.from_array(np.array(0, np.float32), "zero")]
    inits += [t for t in main_fixed if isinstance(t, onnx.TensorProto)]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
        inits,
        opset=13,
    )


def shadowed_weight_model(outer: str) -> onnx.ModelProto:
    """x -> h = x * x; If(sum(x) > 0): then h * w (the body's own weight ``w`` = [3, -2, 1.5, .25]),
    else h - w; the main graph's ``w`` = [1, 2, 3, 4] is a weight, a graph input or a node output."""
    inner = numpy_helper.from_array(np.array([3, -2, 1.5, 0.25], np.float32), "w")
    out = helper.make_tensor_value_info
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["h", "w"], ["t"])], "then", [], [out("t", 1, None)], [inner]
    )
    else_g = helper.make_graph([helper.make_node("Sub", ["h", "w"], ["e"])], "else", [], [out("e", 1, None)])
    values = numpy_helper.from_array(np.array([1, 2, 3, 4], np.float32), "w0" if outer == "node" else "w")
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    inputs = [out("x", TensorProto.FLOAT, ["n", 4])]
    nodes = []
    if outer == "weight":
        inits.append(values)
    elif outer == "node":
        inits.append(values)
        nodes.append(helper.make_node("Identity", ["w0"], ["w"]))
    else:
        inputs.append(out("w", TensorProto.FLOAT, [4]))
    nodes += [
        helper.make_node("Mul", ["x", "x"], ["h"]),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    graph = helper.make_graph(nodes, "g", inputs, [out("y", TensorProto.FLOAT, ["n", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def loop_model() -> onnx.ModelProto:
    """x -> Mul -> a Loop of 3 steps whose body adds the captured ``h`` to its carried ``y``
    (``body_add``) and emits max(step, 0) as an int64 scan output (``body_max``: an op the
    converter blocks by default, on integers only)."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
            helper.make_node("Add", ["y_in", "h"], ["y_out"], name="body_add"),
            helper.make_node("Max", ["step", "zero_i"], ["step_out"], name="body_max"),
        ],
        "loop_body",
        [
            helper.make_tensor_value_info("step", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("y_out", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("step_out", TensorProto.INT64, []),
        ],
    )
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["h"], name="scale"),
        helper.make_node("Loop", ["trips", "go", "y0"], ["y", "steps"], name="loop", body=body),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.5, np.float32), "k"),
        numpy_helper.from_array(np.array(3, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "go"),
        numpy_helper.from_array(np.zeros(4, np.float32), "y0"),
        numpy_helper.from_array(np.array(0, np.int64), "zero_i"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("steps", TensorProto.INT64, [3]),
        ],
        inits,
    )


def scan_model() -> onnx.ModelProto:
    """A Scan summing the rows of ``x`` (``body_add``: carried sum + row), as ONNX's test_scan9_sum."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["sum_in", "row"], ["sum_out"], name="body_add"),
            helper.make_node("Identity", ["sum_out"], ["scan_out"], name="body_copy"),
        ],
        "scan_body",
        [
            helper.make_tensor_value_info("sum_in", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("row", TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("sum_out", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [4]),
        ],
    )
    nodes = [helper.make_node("Scan", ["init", "x"], ["y", "z"], name="scan", body=body, num_scan_inputs=1)]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("init", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 4]),
        ],
        [],
    )


def fp16_rounding_model() -> onnx.ModelProto:
    """x * 1 -> Cast(to FLOAT16) -> Cast(to FLOAT) -> + 0: the model's own rounding through fp16
    (autocast exports hold such pairs), so 1e5 becomes Inf in fp32 too."""
    nodes = [
        helper.make_node("Mul", ["x", "one"], ["a"], name="mul"),
        helper.make_node("Cast", ["a"], ["a16"], to=TensorProto.FLOAT16, name="to16"),
        helper.make_node("Cast", ["a16"], ["a32"], to=TensorProto.FLOAT, name="to32"),
        helper.make_node("Add", ["a32", "zero"], ["y"], name="add"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        ],
    )


def residual_add_model(seed: int = 0) -> onnx.ModelProto:
    """x -> Conv -> Add(x, .) -> Conv -> GlobalAveragePool: ONNX Runtime's placement quantizes the
    Add (an integer Add between quantized layers), which alone, both Convs in float, quantizes
    nothing (as the residual Adds of ddddocr's recognizer)."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    pads = [1, 1, 1, 1]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=pads),
        helper.make_node("Add", ["x", "c1"], ["a"], name="add"),
        helper.make_node("Conv", ["a", "w2"], ["c2"], name="conv2", pads=pads),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["y"], name="flat"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32])],
        [weight("w1", 16, 16, 3, 3), weight("w2", 32, 16, 3, 3)],
    )


def save_beyond_fp32_fallback(folder: Path) -> tuple[Path, Path]:
    """``m.onnx`` and its data ``x.npz`` in ``folder``, on which an fp16 build with fp16 graph
    inputs (``keep_io_types`` off) misses ``snr>=200`` even with every node in fp32: the inputs
    are rounded, so the SNR stays finite (about 73 dB)."""
    path = save(decomposed_layernorm_model(scale=3.0), folder / "m.onnx")
    data = folder / "x.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32))
    return path, data


def save_dense_map(folder: Path) -> tuple[Path, Path]:
    """``seg.onnx`` (x [N, 3, 16, 16] -> Conv, Relu, Conv -> y [N, 4, 16, 16]: a map per pixel,
    no (batch, classes) scores to take a top-1 of) and its data ``seg.npz`` in ``folder``."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 16, 16])],
        [weight("w1", 8, 3, 3, 3), weight("w2", 4, 8, 3, 3)],
    )
    data = folder / "seg.npz"
    np.savez(data, x=rng.standard_normal((32, 3, 16, 16)).astype(np.float32))
    return save(model, folder / "seg.onnx"), data


def save(model: onnx.ModelProto, dest: Path, external: bool = False) -> Path:
    if external:
        onnx.save_model(
            model,
            dest,
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=dest.name + ".data",
            size_threshold=256,
        )
    else:
        onnx.save(model, dest)
    return dest


def outlier_channel_cnn(model: Any) -> Any:
    """The digits CNN with one channel of its first block scaled up 2000x and the second conv scaled
    down to match: the same function in fp32, but the second conv's input now has one huge channel,
    so a per-tensor INT8 scale for it crushes the other channels (a badly balanced layer)."""
    import copy

    import torch

    m = copy.deepcopy(model).eval()
    bn, conv2 = m.features[1], m.features[3]
    with torch.no_grad():
        bn.weight[0] *= 2000.0
        bn.bias[0] *= 2000.0
        conv2.weight[:, 0] /= 2000.0
    return m
