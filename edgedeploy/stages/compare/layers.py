"""Per-layer comparison (``compare --per-layer``): every intermediate tensor that the fp32 reference
and the candidate (fp16 or INT8 Q/DQ ONNX) share, in graph order, to find where accuracy is lost.

Both models get every shared float tensor marked as an output and run on the CPU batch by
batch; per tensor we fold running sums (squared error, dot product, norms, max error) so memory
stays one batch of activations however many samples are compared. An fp16 candidate is run as
its CPU emulation (:mod:`edgedeploy.stages.precision.emulate`): ONNX Runtime would otherwise compute
most of its fp16 nodes in fp32 and hide exactly the errors this view is for. An int8 candidate runs
as ``compare`` runs it (:func:`integer_mode`), so that its output tensors here read what the
output table reads. Hand-written rather
than Polygraphy's ``mark all`` + Comparator, which keeps every batch's activations in memory.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx

from calibration.feeds import fixed_batches
from calibration.graphs import FLOAT_ELEMS
from calibration.modelinfo import graph_io
from calibration.observers import activation_types, emulate_integer_kernels, with_outputs
from calibration.qdq import int8_activations, saturates_without_vnni
from calibration.sources import Feed
from edgedeploy.device.verify_outputs import finite_pairs  # compare's split of NaN/Inf, one copy
from edgedeploy.errors import InputError
from edgedeploy.onnxio import is_onnx_path, load_onnx
from edgedeploy.stages.compare.gates import Gates, relative_error, snr_db
from edgedeploy.stages.precision.emulate import (
    emulate_fp16,
    fp32_nodes_of_converted,
    has_fp16_io,
    is_fp16_model,
)
from edgedeploy.stages.precision.fp16 import (
    conversion_checked_words,
    ensure_node_names,
    loadable_conversion,
    may_convert,
    opset_conversion,
)
from edgedeploy.targets import has_vnni
from edgedeploy.ui import cosine_figure

INTEGER_EMULATED = "onnx, integer arithmetic emulated in float (this CPU has no VNNI)"
# int8 activations: TensorRT's placement, run as TensorRT computes it (exact integer sums, rescaled
# in float), not on ONNX Runtime's s8s8 CPU kernels, which round otherwise: ddddocr's recognizer
# for jetson-orin-nx read cosine 0.998981 on them and 0.999003 emulated, the figure its accuracy
# budget (which measures emulated, as auto does) had met on the same data
TENSORRT_EMULATED = "onnx, integer arithmetic emulated in float (as TensorRT computes int8 Q/DQ)"
EMULATED = (INTEGER_EMULATED, TENSORRT_EMULATED)


def integer_mode(candidate: onnx.ModelProto) -> str | None:
    """How an int8 Q/DQ candidate is run: one of :data:`EMULATED` (ONNX Runtime with its Q/DQ
    fusions off, so every quantized op computes in float on the dequantized values), or None for
    ONNX Runtime's own integer kernels (a CPU placement this CPU computes as its target does)."""
    if int8_activations(candidate):
        return TENSORRT_EMULATED
    if not has_vnni() and saturates_without_vnni(candidate):
        return INTEGER_EMULATED
    return None


@dataclass
class _Running:
    count: int = 0
    sum_sq_ref: float = 0.0
    sum_sq_cand: float = 0.0
    dot: float = 0.0
    sum_sq_err: float = 0.0
    sum_abs_err: float = 0.0
    max_abs_err: float = 0.0
    ref_absmax: float = 0.0
    cand_nonfinite: int = 0  # NaN/Inf in the candidate
    mismatches: int = 0  # NaN/Inf unlike the reference's, either side (outputs.py's, one rule)
    discrete: bool = False  # a bool/integer tensor, gated on its share of equal elements
    equal: int = 0  # elements equal (bool/integer tensors)
    batches: int = 0
    # the first batch whose tensors differ in shape (a data-dependent size: NonZero, NMS), worded as
    # the output table's (outputs.py): the tensor fails, not read from the batches that matched
    shape_mismatch: str | None = None
    # (atol, rtol) of --check-allclose, else None: ``beyond`` counts the finite pairs over
    # atol + rtol * |ref|, element by element, as the output table's allclose (outputs.py) holds them
    tolerance: tuple[float, float] | None = None
    beyond: int = 0

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        k, self.batches = self.batches, self.batches + 1
        if np.shape(ref) != np.shape(cand):
            if self.shape_mismatch is None:
                shapes = f"shape {list(np.shape(cand))}, reference {list(np.shape(ref))}"
                self.shape_mismatch = f"batch {k}: {shapes}"
            return
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # Inf/NaN are counted
            pairs = finite_pairs(np.asarray(ref).ravel(), np.asarray(cand).ravel())
        self.cand_nonfinite += pairs.nan + pairs.inf
        self.discrete = pairs.discrete
        if pairs.discrete and pairs.ref.size:
            self.equal += int(np.count_nonzero(pairs.abs_err == 0))
        self.mismatches += pairs.mismatches
        r, c = pairs.ref, pairs.cand  # the sums below are over the finite pairs
        err = r - c
        self.count += int(r.size)
        self.sum_sq_ref += float(r @ r)
        self.sum_sq_cand += float(c @ c)
        self.dot += float(r @ c)
        self.sum_sq_err += float(err @ err)
        if self.tolerance is not None and r.size:
            atol, rtol = self.tolerance
            self.beyond += int(np.count_nonzero(~(pairs.abs_err <= atol + rtol * np.abs(r))))
        if err.size:
            self.sum_abs_err += float(np.abs(err).sum())
            self.max_abs_err = max(self.max_abs_err, float(np.abs(err).max()))
            self.ref_absmax = max(self.ref_absmax, float(np.abs(r).max()))


@dataclass
class LayerError:
    # NaN/Inf figures go to JSON as "NaN", "Infinity", "-Infinity", as compare's per-output ones
    # (edgedeploy.results): null is the SNR of identical tensors
    JSON_NONFINITE_AS_TEXT: ClassVar[bool] = True

    tensor: str
    producer: str
    op: str
    order: int
    cosine: float  # over the pairs both finite, as snr_db, mean_abs (a NaN/Inf mismatch: see below)
    snr_db: float | None  # None when the tensors are identical (see ``identical``)
    max_abs: float  # infinite where a NaN/Inf is unlike the reference's, as in compare's outputs
    mean_abs: float
    rel_max: float  # max abs error / reference absmax, by compare's rule (gates.relative_error)
    nan_inf: int  # NaN/Inf values in the candidate
    exceeds: bool
    why: list[str] = field(default_factory=list)
    # elements where either side is NaN/Inf and the other not the same (compare's rule, see
    # verify_outputs.finite_pairs): a reference Inf beside a finite candidate value counts
    nonfinite_mismatches: int = 0
    identical: bool = False  # every element equal, a NaN/Inf the candidate reproduces included
    # bool and integer tensors: the share of elements equal, which the cosine gate reads instead of
    # the cosine, as for compare's outputs (OutputMetrics.equal_share); None for float tensors
    equal_share: float | None = None
    # the first batch whose two tensors differ in shape, as the output table's (OutputMetrics.
    # shape_mismatch): the tensor fails with no figures (cosine NaN, errors inf), as such an output
    shape_mismatch: str | None = None


@dataclass
class LayerwiseResult:
    reference: str
    candidate: str
    mode: str  # "fp16 (CPU emulation)", "onnx"
    iterations: int
    gates: Gates
    layers: list[LayerError]  # in graph order
    only_in_reference: int
    only_in_candidate: int
    # shared tensors no figure fits, as "'name' (type)": strings, sequences, maps, 4-bit and fp8
    not_compared: list[str] = field(default_factory=list)
    # how the reference was converted to run (:func:`reference_to_run`): {from, to, reason}, or None
    reference_conversion: dict[str, Any] | None = None

    def first_exceeding(self, limit: int = 5) -> list[LayerError]:
        return [layer for layer in self.layers if layer.exceeds][:limit]

    def largest(self, limit: int = 5) -> list[LayerError]:
        """The tensors with the largest error (those of another shape than the reference's or with a
        NaN/Inf unlike it first, then by 1 - cosine), shown in graph order."""
        worst = sorted(self.layers, key=lambda e: (_mismatched(e), _badness(e)), reverse=True)[:limit]
        return sorted(worst, key=lambda e: e.order)


def _mismatched(e: LayerError) -> bool:
    """Whether ``e`` failed on what no figure measures: another shape, a NaN/Inf unlike the reference's."""
    return e.shape_mismatch is not None or e.nonfinite_mismatches > 0


def _badness(e: LayerError) -> float:
    if e.shape_mismatch is not None:  # no figures (a NaN cosine): the worst
        return math.inf
    return 1.0 - (e.cosine if e.equal_share is None else e.equal_share)


def _metrics(name: str, run: _Running, gates: Gates) -> tuple[float, float | None, list[str]]:
    if run.shape_mismatch is not None:  # failed, no figures: as the output table's (outputs._mismatched)
        return math.nan, -math.inf, [f"another shape than the reference's ({run.shape_mismatch})"]
    denom = math.sqrt(run.sum_sq_ref * run.sum_sq_cand)
    # exactly 1 where every pair is equal, else within [-1, 1] (dot / norms rounds past them)
    cosine = 1.0 if run.sum_sq_err == 0 else min(1.0, max(-1.0, run.dot / denom)) if denom > 0 else 0.0
    # over the pairs both finite, as the output table's (a NaN/Inf unlike the reference's is counted
    # and fails apart, and :meth:`LayerwiseResult.largest` lists it first)
    identical = run.sum_sq_err == 0 and not run.mismatches
    snr = None if identical else snr_db(run.sum_sq_ref, run.sum_sq_err)
    why = []
    if run.mismatches:
        why.append(f"{run.mismatches} NaN/Inf value(s) unlike the reference's")
    share = _equal_share(run)
    if gates.min_cosine is not None and share is not None and share < gates.min_cosine:
        why.append(f"equal elements {share:.4f} < {gates.min_cosine} (a bool/integer tensor)")
    elif gates.min_cosine is not None and share is None and cosine < gates.min_cosine:
        why.append(f"cosine {cosine_figure(cosine, gates.min_cosine)} < {gates.min_cosine}")
    if gates.check_allclose and (run.beyond or run.mismatches):  # the output table's words and rule
        max_abs = math.inf if run.mismatches else run.max_abs_err
        why.append(f"max abs error {max_abs:.3g} exceeds atol={gates.atol} + rtol={gates.rtol}*|ref|")
    return cosine, snr, why


def _mean_abs(run: _Running) -> float:
    """The mean abs error over the finite pairs; inf for a tensor of another shape (no figures)."""
    if run.shape_mismatch is not None:
        return math.inf
    return run.sum_abs_err / run.count if run.count else 0.0


def _equal_share(run: _Running) -> float | None:
    """A bool/integer tensor's share of equal elements (1 where it has none), else None."""
    if not run.discrete:
        return None
    return run.equal / run.count if run.count else 1.0


def _relative(run: _Running) -> float:
    """max abs error / max|reference| by the output table's rule (:func:`relative_error`, Polygraphy's):
    an all-zero reference is raised by its epsilon, so an error there reads huge, not 0."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a bool/integer 0 / 0 is NaN, as the table's
        return float(relative_error(np.array([run.max_abs_err]), np.array([run.ref_absmax]), run.discrete)[0])


def _session(model: onnx.ModelProto, threads: int | None, emulate_integer: bool = False) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    # Basic level: constant folding only, so the marked tensors are the ones the graph computes.
    # (ONNX Runtime fuses Q/DQ into its integer kernels even there: ``emulate_integer`` turns it off.)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if emulate_integer:
        emulate_integer_kernels(options)
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(
            f"ONNX Runtime cannot load the model for per-layer comparison: {first[:300]}"
        ) from None


def _take_weights(emulated: onnx.ModelProto, candidate: onnx.ModelProto) -> None:
    """Run the emulation on the candidate's own stored weights, not the reference's rounded ones.

    The emulated graph is built from the reference; were its weights kept, a candidate whose
    weights were damaged or edited (NaN, a wrong file) would compare as a perfect copy.
    """
    from onnx import numpy_helper

    mine = {init.name: init for init in emulated.graph.initializer}
    for init in candidate.graph.initializer:
        if init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        # the emulation keeps a weight under its name, and its fp16-rounded copy under NAME__fp16
        targets = [mine[n] for n in (init.name, f"{init.name}__fp16") if n in mine]
        if not targets and init.name.endswith("__value"):  # a weight that is a graph output, which
            # the fp16 build renames NAME__value behind an Identity (fp16._detach_unproduced_outputs)
            base = init.name.removesuffix("__value")
            targets = [mine[n] for n in (base, f"{base}__fp16") if n in mine]
        if not targets:
            raise ValueError(f"candidate weight {init.name} is not in the reference")
        values = numpy_helper.to_array(init)
        for target in targets:
            if list(values.shape) != list(target.dims):
                raise ValueError(
                    f"candidate weight {init.name}: shape {list(values.shape)}, not {list(target.dims)}"
                )
            dtype = onnx.helper.tensor_dtype_to_np_dtype(target.data_type)
            target.CopyFrom(numpy_helper.from_array(values.astype(dtype), target.name))


def reference_to_run(reference: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, dict[str, Any] | None]:
    """The reference compare runs: ``reference`` itself, or where ONNX Runtime cannot load it (an
    opset-6 Gemm: no Gemm(6) kernel) the checked conversion to opset 13 its fp16 build makes
    (:func:`loadable_conversion`), with what is recorded of it ({from, to, reason}; else None).
    A conversion that changes the outputs is refused: InputError naming ``name``."""
    conversion = loadable_conversion(reference, name, needed_for="compare", refused="not compared")
    return (reference, None) if conversion is None else conversion


@dataclass
class ReferenceRun:
    """The reference file ``path`` as a comparison runs it: the file as it is, or where ONNX Runtime
    cannot load it the checked conversion its fp16 build makes (:func:`reference_to_run`, refusals
    included), made on first use and kept. One is given to the output table (``compare``) and
    ``--per-layer`` (:func:`compare_layers`) alike, so the conversion is made and checked once."""

    path: Path

    @functools.cached_property
    def conversion(self) -> tuple[onnx.ModelProto, dict[str, Any]] | None:
        """The converted model and what is recorded of it ({from, to, reason}), or None to run the file
        as it is: most models are told apart cheaply, read without their weights (:func:`may_convert`)."""
        if not may_convert(load_onnx(self.path, load_external_data=False)):
            return None
        converted, conversion = reference_to_run(load_onnx(self.path), self.path.name)
        return None if conversion is None else (converted, conversion)

    def check_made_from(self, reference: Path | onnx.ModelProto) -> None:
        """ValueError unless this is the file ``reference``."""
        if isinstance(reference, onnx.ModelProto) or Path(reference) != self.path:
            raise ValueError(f"prepared from the reference {self.path}, not {_label(reference)}")


def conversion_notice(reference: Path, conversion: dict[str, Any]) -> str:
    """The one line saying the reference ran from its conversion (:func:`reference_to_run`)."""
    return (
        f"notice: ran the reference {reference.name} converted from opset {conversion['from']} to "
        f"{conversion['to']}, as its fp16 build converts it (onnx.version_converter, "
        f"{conversion_checked_words(conversion)}): {conversion['reason']}"
    )


def candidate_graph(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """What to run for the candidate: its fp16 emulation (fp16 models) or the model itself (Q/DQ).

    The reference's unnamed nodes are named first, as the converter named them (``reference`` is
    changed in place): the nodes kept in fp32 are found by name, and an unnamed one would
    otherwise be emulated in fp16 (PP-OCRv4's detector: a weight of 9.8e7 became Inf). A reference
    its fp16 build converts first (below opset 6, where its Casts cannot be written, or an opset-6
    file ONNX Runtime cannot load) is emulated from that conversion to opset 13
    (:func:`opset_conversion`: the same conversion, the same node names)."""
    ensure_node_names(reference)
    if is_fp16_model(candidate):
        conversion = opset_conversion(reference, "the reference")
        if conversion is not None:
            reference = conversion[0]
            ensure_node_names(reference)
        emulated = emulate_fp16(
            reference,
            fp32_nodes_of_converted(reference, candidate),
            blocked_ops=(),
            round_io=has_fp16_io(candidate),
        )
        _take_weights(emulated, candidate)
        return emulated, "fp16 (CPU emulation of fp16 storage)"
    return candidate, integer_mode(candidate) or "onnx"


def compare_layers(
    reference: Path | onnx.ModelProto,
    candidate: Path | onnx.ModelProto,
    feeds: Iterable[Feed],
    gates: Gates | None = None,
    *,
    threads: int | None = None,
    emulate: bool = True,
    prepared: ReferenceRun | None = None,
) -> LayerwiseResult:
    """Compare every float tensor both graphs compute, on ``feeds``, in the reference's graph order.

    A reference ONNX Runtime cannot load at its opset runs from its fp16 build's conversion
    (:func:`reference_to_run`), recorded in the result; from ``prepared``'s where given (the one
    ``compare`` ran too: :class:`ReferenceRun`).

    Args:
        reference: the fp32 reference (file or loaded model).
        candidate: an fp16 or int8 Q/DQ ONNX made from it.
        feeds: the input batches, the same for both models.
        gates: the tolerance a tensor is measured against (default :class:`Gates`).
        threads: ONNX Runtime intra-op threads.
        emulate: run an fp16 candidate as its CPU emulation, so fp16 errors show, and an int8 one
            with its integer arithmetic emulated where the main comparison does (:func:`integer_mode`).
        prepared: the reference file as run (:class:`ReferenceRun`), for a ``reference`` given as a path.
    """
    gates = gates or Gates()
    if prepared is not None:
        prepared.check_made_from(reference)
        made = prepared.conversion
        ref_model, conversion = (_load(reference), None) if made is None else (_load(made[0]), made[1])
    else:
        ref_model, conversion = reference_to_run(_load(reference), _name(reference))
    cand_model = _load(candidate)
    feeds = fixed_batches(feeds, graph_io(ref_model)[0], graph_io(cand_model)[0])  # as compare's
    ensure_node_names(ref_model)
    mode = "onnx"
    if emulate:
        cand_model, mode = candidate_graph(ref_model, cand_model)
    ref_types, cand_types = activation_types(ref_model), activation_types(cand_model)
    ref_names, cand_all = list(ref_types), set(cand_types)  # counted alike (only_in_*)
    shared = [n for n in ref_names if n in cand_all]
    not_compared = [f"'{n}' ({_type_text(ref_types[n])})" for n in shared if not _comparable(ref_types[n])]
    shared = [n for n in shared if _comparable(ref_types[n])]
    if not shared:
        raise InputError(
            "the reference and the candidate share no tensor names: per-layer comparison needs "
            "a candidate converted from this reference"
        )
    inputs = {i.name for i in ref_model.graph.input}
    wanted = [n for n in shared if n not in inputs]
    ref_sess = _session(with_outputs(ref_model, wanted), threads)
    cand_sess = _session(with_outputs(cand_model, wanted), threads, emulate_integer=mode in EMULATED)
    cand_inputs = {i.name for i in cand_sess.get_inputs()}
    tolerance = (gates.atol, gates.rtol) if gates.check_allclose else None
    running = {n: _Running(tolerance=tolerance) for n in wanted}
    iterations = 0
    for feed in feeds:
        ref_out = ref_sess.run(wanted, feed)
        cand_out = cand_sess.run(wanted, {k: v for k, v in feed.items() if k in cand_inputs})
        for name, r, c in zip(wanted, ref_out, cand_out, strict=True):
            running[name].add(r, c)
        iterations += 1
    if iterations == 0:
        raise InputError("no data to compare on")
    producers = {
        out: (node.name, node.op_type, i)
        for i, node in enumerate(ref_model.graph.node)
        for out in node.output
    }
    layers = []
    for name in wanted:
        run = running[name]
        producer, op, order = producers.get(name, ("", "input", -1))
        cosine, snr, why = _metrics(name, run, gates)
        unmeasured = bool(run.mismatches) or run.shape_mismatch is not None  # errors read inf
        layers.append(
            LayerError(
                tensor=name,
                producer=producer,
                op=op,
                order=order,
                cosine=cosine,
                snr_db=snr,
                max_abs=math.inf if unmeasured else run.max_abs_err,
                mean_abs=_mean_abs(run),
                rel_max=math.inf if unmeasured else _relative(run),
                nan_inf=run.cand_nonfinite,
                exceeds=bool(why),
                why=why,
                nonfinite_mismatches=run.mismatches,
                identical=not run.mismatches and run.sum_sq_err == 0 and run.shape_mismatch is None,
                equal_share=None if run.shape_mismatch is not None else _equal_share(run),
                shape_mismatch=run.shape_mismatch,
            )
        )
    layers.sort(key=lambda e: e.order)
    return LayerwiseResult(
        reference=_label(reference),
        candidate=_label(candidate),
        mode=mode,
        iterations=iterations,
        gates=gates,
        layers=layers,
        only_in_reference=len(set(ref_names) - cand_all),
        only_in_candidate=len(cand_all - set(ref_names)),
        not_compared=not_compared,
        reference_conversion=conversion,
    )


# bool and integer tensors, compared by their share of equal elements (as compare's outputs)
DISCRETE_ELEMS = frozenset(
    {
        onnx.TensorProto.BOOL,
        *(onnx.TensorProto.INT8, onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64),
        *(onnx.TensorProto.UINT8, onnx.TensorProto.UINT16, onnx.TensorProto.UINT32, onnx.TensorProto.UINT64),
    }
)


def _comparable(elem: int | None) -> bool:
    """Whether a tensor of element type ``elem`` is compared: float, bool and integer ones, and those
    of a type shape inference does not tell (ONNX Runtime gives them as they are)."""
    return elem is None or elem in FLOAT_ELEMS or elem in DISCRETE_ELEMS


def _type_text(elem: int | None) -> str:
    if not elem:
        return "not a tensor"
    return f"tensor({onnx.helper.tensor_dtype_to_string(elem).removeprefix('TensorProto.').lower()})"


def _load(model: Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy

    if not is_onnx_path(model):
        raise InputError(
            f"--per-layer compares ONNX models on the CPU; {model} is not one "
            "(compare the engine's ONNX source instead)"
        )
    return load_onnx(model)


def _name(model: Path | onnx.ModelProto) -> str:
    """How errors name ``model``: its file's name, or its graph's."""
    return Path(model).name if not isinstance(model, onnx.ModelProto) else _label(model)


def _label(model: Path | onnx.ModelProto) -> str:
    return str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "model")
