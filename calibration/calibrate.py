"""One entry point: calibrate an ONNX model on a data source and write the Q/DQ model, the
TensorRT calibration cache and the report, reusing an earlier calibration when its key matches.

The calibration key is a hash of the model's sha256, the algorithm and its options, the data
manifest (files and hashes, or generator and seed, and the image preprocessing) and the
tensors calibrated. The report JSON beside the outputs doubles as the result cache: a rerun
with the same key skips the data pass (and, when the Q/DQ and cache options match too, all
work); a different key recalibrates and says which parts changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from warnings import catch_warnings, simplefilter

import numpy as np
import onnx

from calibration.algorithms import AlgorithmOptions, clipped_share, compute_threshold
from calibration.artifacts import verify_artifact
from calibration.atomic import atomic_path, atomic_write_text, sha256_file, written_together
from calibration.defaults import DEFAULT_PERCENTILE
from calibration.errors import CalibrationError, DataError, NothingToQuantize
from calibration.feeds import RUN_ROWS, dynamic_batch, feed_rows, split_runs
from calibration.graphs import all_nodes, data_independent, opset_of, subgraphs, unique_node_names, upgrade_ir
from calibration.observers import (
    DEFAULT_BINS,
    PREFETCH_BYTES,
    STACK_ROWS,
    AbsHistogram,
    ChannelMeanObserver,
    HistogramObserver,
    Observer,
    RangeObserver,
    collect,
    float_tensor_names,
    same_values_sources,
)
from calibration.qdq import (
    ORT_QLINEAR_OPS,
    WEIGHTED_OPS,
    ModelFacts,
    QuantizeOptions,
    QuantPlan,
    TensorQuant,
    WeightCache,
    activation_qparams,
    bias_correction_inputs,
    bias_corrections,
    check_qdq,
    constant_values,
    convert_opset,
    exclusion_matches,
    fold_computed_weights,
    model_facts,
    narrow_convs,
    nonfinite_weights,
    plan_quantization,
    stored_activations,
    unknown_op_types,
    upgrade_opset,
    weight_scale,
    write_qdq,
)
from calibration.report import CalibrationReport, TensorReport, WeightReport, compact_histogram, load_report
from calibration.rounding import InputMoments, rounded_weights
from calibration.select import (
    POOLED_PEAKS,
    RULES,
    HeldOut,
    SampleObserver,
    Selection,
    bias_corrected,
    candidates,
    plan_vote,
    pooled_peaks,
    rounding_checked,
    scored_tensors,
    select,
)
from calibration.sources import DataSource
from calibration.threads import map_ordered, one_blas_thread, workers
from calibration.trt_cache import encode_version, make_cache

CALIBRATION_VERSION = "8"  # bump when statistics or algorithms change results (7: split_runs; 8: batch axes)
HOLDOUT_SAMPLES = 16  # auto: samples kept aside to judge thresholds on
# the tensors only the TensorRT cache lists (not in the Q/DQ model): every 4th value histogrammed
CACHE_ONLY_EVERY = 4


@dataclass(frozen=True)
class CalibrationOptions:
    algorithm: str = "entropy"
    percentile: float = DEFAULT_PERCENTILE
    max_clipped: float = 0.01  # entropy: clip at most this share of values (1 = TensorRT's pure KL)
    placement: str = "tensorrt"  # tensorrt (GPU targets) | onnxruntime (CPU targets)
    weight_bits: int = 8  # 7 for CPU targets without VNNI
    exclude_nodes: tuple[str, ...] = ()
    exclude_ops: tuple[str, ...] = ()
    trt_version: str | None = None  # write a TensorRT cache for this version (None: no cache)
    bins: int = DEFAULT_BINS
    threads: int | None = None
    force: bool = False  # recalibrate even when the key matches
    # auto: run the candidate Q/DQ models with their integer kernels emulated in float, for a
    # target whose kernels this CPU lacks (8-bit weights without VNNI; observers.emulate_integer_kernels)
    emulate_integer: bool = False

    def algorithm_options(self) -> AlgorithmOptions:
        return AlgorithmOptions(self.algorithm, percentile=self.percentile, max_clipped=self.max_clipped)

    def quantize_options(self) -> QuantizeOptions:
        return QuantizeOptions(
            placement=self.placement,
            weight_bits=self.weight_bits,
            exclude_nodes=tuple(self.exclude_nodes),
            exclude_ops=tuple(self.exclude_ops),
        )


@dataclass
class CalibrationResult:
    model: Path  # the Q/DQ ONNX
    report: Path
    cache: Path | None
    reused: bool  # the calibration key matched: no data pass was made
    skipped: bool  # the artifact key matched too: nothing was written
    reason: str  # one line: why it reused or recalibrated
    synthetic: bool
    samples: int
    seconds: float
    key: str
    tensors: list[TensorReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rounding: Path | None = None  # auto's GPTQ-rounded weights, when it kept them
    report_data: CalibrationReport | None = None

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.model, self.cache, self.report, self.rounding) if p is not None]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _why_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    labels = {
        "model_sha256": "the model changed",
        "algorithm": "the algorithm or its options changed",
        "data": "the calibration data or preprocessing changed",
        "tensors": "the tensors to calibrate changed",
        "bins": "the histogram size changed",
        "kernels": "the integer kernels are measured differently (emulated, or this CPU's)",
        "version": "the calibration code changed",
    }
    keys = dict.fromkeys([*new, *old])  # a part present on one side only changed too
    changed = [labels.get(k, f"{k} changed") for k in keys if old.get(k) != new.get(k)]
    if old.get("algorithm") != new.get("algorithm"):
        before, after = json.dumps(old.get("algorithm")), json.dumps(new.get("algorithm"))
        changed[changed.index(labels["algorithm"])] = f"the algorithm changed ({before} -> {after})"
        if labels["kernels"] in changed:  # only auto measures with them: part of the algorithm's change
            changed.remove(labels["kernels"])
    was, now = old.get("data"), new.get("data")
    if isinstance(was, dict) and isinstance(now, dict) and was != now:  # which of the data's settings
        differ = [k for k in dict.fromkeys([*now, *was]) if was.get(k) != now.get(k)]
        if differ and all(not isinstance(now.get(k), (dict, list)) for k in differ):  # not its files
            said = ", ".join(f"{k} {json.dumps(was.get(k))} -> {json.dumps(now.get(k))}" for k in differ)
            changed[changed.index(labels["data"])] = f"the calibration data's settings changed ({said})"
    return "; ".join(changed) or "the key changed"


class _FirstFeed:
    """Wraps a source and keeps its first feed (to test-run the written model).

    Its feeds are the source's, cut into runs of at most ``RUN_ROWS`` samples (:func:`split_runs`).
    With ``holdout`` (the auto algorithm), every 4th run up to ``HOLDOUT_SAMPLES`` samples is
    held out of the statistics: the thresholds are judged on data they were not computed from.
    Held-out batches still go through the one statistics pass, flagged by ``holding`` while
    their tensors are shown (``collect`` calls :meth:`show`; it may have taken the next feed
    already), so that auto's recorders take their values there instead of in a second session
    (see :class:`_Split`). A source of fewer than 4 runs holds nothing out (see ``held_out``).
    """

    def __init__(self, source: DataSource, holdout: bool = False) -> None:
        self.source = source
        self.first: dict[str, np.ndarray] | None = None
        self.holdout = holdout
        self.held: list[dict[str, np.ndarray]] = []
        self.flags: list[bool] = []  # per feed yielded: whether it is held out
        self.holding = False  # the feed whose tensors the observers are shown is a held-out one
        self.shown_held = 0  # held-out feeds up to and with the one shown
        self.held_samples = 0

    def statistics_feed(self) -> bool:
        """Whether the feed last yielded goes to the statistics (is not held out): only those
        need the tensors that only the TensorRT cache lists."""
        return not (self.flags and self.flags[-1])

    def show(self, index: int) -> None:
        """``collect``'s ``showing``: the observers are now shown the tensors of feed ``index``."""
        self.holding = self.flags[index]
        self.shown_held = sum(self.flags[: index + 1])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        # runs of at most RUN_ROWS samples, whatever the source's batch size (see split_runs)
        for index, feed in enumerate(split_runs(self.source, self.source.inputs)):
            if self.first is None:
                self.first = {k: v.copy() for k, v in feed.items()}
            held = self.holdout and index % 4 == 3 and self.held_samples < HOLDOUT_SAMPLES
            self.flags.append(held)
            if held:
                self.held.append({k: v.copy() for k, v in feed.items()})
                self.held_samples += feed_rows(feed, self.source.inputs)
            yield feed

    def held_out(self) -> list[dict[str, np.ndarray]]:
        """The held-out feeds, or the first feed when the source was too short to hold any out."""
        return self.held or ([self.first] if self.first is not None else [])


class _Split:
    """The one statistics pass's observer: calibration batches go to the histograms, held-out
    ones to auto's recorders (the held-out values of the calibrated tensors, and the FP32
    values of the scored outputs, the reference every candidate model is compared with)."""

    def __init__(
        self,
        holder: _FirstFeed,
        stats: Sequence[Observer],
        samples: SampleObserver,
        scored: list[str],
    ) -> None:
        self.holder, self.stats, self.samples, self.scored = holder, stats, samples, set(scored)
        self.reference: list[dict[str, np.ndarray]] = []
        self.lock = threading.Lock()  # collect shows one run's tensors on several threads

    def observe(self, name: str, array: np.ndarray) -> None:
        if not self.holder.holding:
            for stat in self.stats:
                stat.observe(name, array)
            return
        self.samples.observe(name, array)
        if name in self.scored:
            with self.lock:
                while len(self.reference) < self.holder.shown_held:
                    self.reference.append({})
                self.reference[-1][name] = np.array(array, copy=True)


@one_blas_thread  # numpy's BLAS on one thread meanwhile (see calibration/threads.py)
def calibrate(
    model_path: str | os.PathLike[str],
    source: DataSource,
    options: CalibrationOptions,
    out_dir: str | os.PathLike[str],
    *,
    stem: str | None = None,
    qdq_name: str | None = None,
) -> CalibrationResult:
    """Calibrate ``model_path`` on ``source``; write ``<stem>.int8.onnx`` (or ``qdq_name``),
    ``<stem>.calib.cache`` (when ``options.trt_version``) and ``<stem>.calib.json`` into ``out_dir``."""
    start = time.perf_counter()
    model_path = Path(model_path)
    if not model_path.is_file():
        raise CalibrationError(f"model file not found: {model_path}")
    out_dir = Path(out_dir)
    stem = stem or model_path.stem
    qdq_path, cache_path, report_path = (
        out_dir / (qdq_name or f"{stem}.int8.onnx"),
        out_dir / f"{stem}.calib.cache",
        out_dir / f"{stem}.calib.json",
    )
    rounding_path = out_dir / f"{stem}.calib.rounding.npz"  # auto's GPTQ-rounded weights, when kept
    algo = options.algorithm_options()
    qopts = options.quantize_options()
    if options.trt_version is not None:
        encode_version(options.trt_version)  # refuse an unusable version before any work
    try:
        model = onnx.load(os.fspath(model_path))
    except Exception as exc:
        raise CalibrationError(f"cannot read ONNX model {model_path}: {type(exc).__name__}: {exc}") from None
    unknown = unknown_op_types(qopts.exclude_ops, model)
    if unknown:
        raise CalibrationError(f"--exclude-ops: no ONNX op type named {', '.join(unknown)}")
    renamed: dict[str, str] = {}  # two nodes of one name: ONNX Runtime would refuse every session of it
    unique_node_names(model, renamed)
    upgrade_ir(model)  # IR 3 would need every new initializer (quantized weights, scales) as an input
    before = opset_of(model)
    # before planning: the conversion adds nodes and moves indices; one that changes the outputs is refused
    model, unchecked = convert_opset(model, name=model_path.name)
    after = opset_of(model)
    upgraded = (
        f"the Q/DQ model is at opset {after}, not the input model's {before}: per-channel Q/DQ needs it "
        "(converted with onnx.version_converter"
        + (f"; {model_path.name}'s conversion was not checked against it: {unchecked})" if unchecked else ")")
        if before and after != before
        else None
    )
    # a name the model gives several nodes selects them all, those renamed NAME#2... included
    excluded_by = exclusion_matches(qopts.exclude_nodes, model, renamed)
    if unmatched := [p for p, found in excluded_by.items() if not found]:
        raise CalibrationError(f"--exclude-nodes: no node matches {', '.join(unmatched)}")
    if also := [re.escape(label) for found in excluded_by.values() for label in found if label in renamed]:
        qopts = replace(qopts, exclude_nodes=tuple(dict.fromkeys([*qopts.exclude_nodes, *also])))
    # a weight the graph computes from constants (MatMul(x, Transpose(W))) stored, to be quantized
    fold_computed_weights(model)
    facts = model_facts(model)  # shape inference and constants once for every plan below
    weights: WeightCache = {}  # each weight quantized once for auto's candidates and the artifact
    plan = plan_quantization(model, qopts, facts)
    # the key covers the tensors of the placement without exclusions, so that excluding nodes
    # reuses a calibration; exclusions that need other tensors (rare) are added and checked below
    unexcluded = QuantizeOptions(qopts.placement, qopts.weight_bits)
    base_levels = plan_quantization(model, unexcluded, facts).levels()
    levels = {**base_levels, **plan.levels()}
    cache_tensors = float_tensor_names(model) if options.trt_version else []
    lean = _lean_plan(model, qopts, facts, plan) if algo.algorithm == "auto" else None
    wanted = list(dict.fromkeys([*levels, *cache_tensors, *(lean.levels() if lean else ())]))
    if not plan.levels() and plan.left_in_float:
        label, why = next(iter(plan.left_in_float.items()))
        others = f" (and {len(plan.left_in_float) - 1} more node(s))" if len(plan.left_in_float) > 1 else ""
        raise NothingToQuantize(
            f"{model_path.name}: nothing to quantize: {_op_of(model, label)} '{label}' is left in float, "
            f"{why}{others}"
        )
    if not plan.levels():
        raise NothingToQuantize(
            f"{model_path.name}: nothing to quantize (no Conv, ConvTranspose, Gemm or MatMul "
            "with constant float32 weights outside the exclusions)"
        )
    if broken := nonfinite_weights(plan, facts.constants, facts.model.graph.node):
        name, count, readers = broken[0]
        others = f" (and {len(broken) - 1} more weight(s))" if len(broken) > 1 else ""
        raise CalibrationError(
            f"{model_path.name}: weight '{name}' of {', '.join(readers)} holds {count} NaN/Inf "
            f"value(s){others}: an int8 weight cannot represent them, and the fp32 model computes "
            "NaN/Inf with it too; fix the model's weights"
        )
    key_parts = {
        "version": CALIBRATION_VERSION,
        "model_sha256": sha256_file(model_path),
        "algorithm": algo.describe(),
        "data": _data_key(source),
        "tensors": _hash([*sorted(base_levels.items()), ["cache", sorted(cache_tensors)]]),
        "bins": options.bins,
    }
    if options.emulate_integer and algo.algorithm == "auto":  # auto's measurements depend on it
        key_parts["kernels"] = "emulated"
    key = _hash(key_parts)
    artifact_parts = {
        "key": key,
        "quantize": {
            "placement": qopts.placement,
            "weight_bits": qopts.weight_bits,
            "exclude_nodes": list(qopts.exclude_nodes),
            "exclude_ops": list(qopts.exclude_ops),
        },
        "trt_version": options.trt_version,
        "outputs": [qdq_path.name, cache_path.name],
    }
    artifact_key = _hash(artifact_parts)
    previous = None if options.force else load_report(report_path)
    selection: Selection | None = None
    bias_shift: dict[int, np.ndarray] | None = None  # a reused calibration's bias correction
    outputs_present = (
        previous is not None
        and _intact(previous, [qdq_path, *([cache_path] if options.trt_version is not None else [])])
        and _rounding_reusable(previous, rounding_path, qopts.weight_bits)  # by content, not existence
    )
    covered = previous is not None and {(t.name, t.levels) for t in previous.tensors} >= set(
        plan.levels().items()
    )
    up_to_date = previous is not None and previous.artifact_key == artifact_key and outputs_present
    if (
        previous is not None
        and previous.key == key
        and covered
        and (up_to_date or _rounding_reusable(previous, rounding_path, qopts.weight_bits))
    ):
        if up_to_date:
            return CalibrationResult(
                qdq_path,
                report_path,
                cache_path if options.trt_version else None,
                reused=True,
                skipped=True,
                reason=f"calibration {key[:12]} is up to date (same model, algorithm, data, "
                "preprocessing and options): nothing to do",
                synthetic=previous.synthetic,
                samples=previous.samples,
                seconds=time.perf_counter() - start,
                key=key,
                tensors=previous.tensors,
                warnings=previous.warnings,
                report_data=previous,
                rounding=rounding_path if previous.gptq_rounded() else None,
            )
        reason = f"reusing calibration {key[:12]} (same model, algorithm, data, preprocessing): rewriting"
        report = previous
        chosen = tuple((report.selection or {}).get("exclude_ops", ()))
        nodes = tuple((report.selection or {}).get("exclude_nodes", ()))
        if chosen or nodes:  # auto chose to leave these ops or nodes in float on this placement
            more = replace(
                qopts, exclude_ops=qopts.exclude_ops + chosen, exclude_nodes=qopts.exclude_nodes + nodes
            )
            plan = plan_quantization(model, more, facts)
        thresholds = report.thresholds()
        extents = report.extents()
        weights.update(_reused_rounding(report, rounding_path, plan, facts))
        bias_shift = _reused_bias_shift(report, model, plan, facts, weights)
        cache_thresholds = report.cache_thresholds
        feed_holder: _FirstFeed | None = None
        reused = True
    else:
        if options.force:
            reason = "recalibrating: forced"
        elif previous is None and report_path.exists():
            reason = (
                f"calibrating: the earlier {report_path.name} is unreadable, of an older format or "
                "changed since written"
            )
        elif previous is None:
            reason = "calibrating: no earlier calibration in " + str(out_dir)
        elif previous.key == key and covered:
            reason = (
                f"recalibrating: the GPTQ-rounded weights of the earlier calibration ({rounding_path.name}) "
                "are missing, changed or for other weight bits"
            )
        elif previous.key == key:
            reason = "recalibrating: the exclusions need tensors the earlier calibration did not cover"
        else:
            reason = "recalibrating: " + _why_changed(previous.key_parts, key_parts)
        auto = algo.algorithm == "auto"
        feed_holder = _FirstFeed(source, holdout=auto)
        count = workers(options.threads)
        copies = same_values_sources(model, wanted)
        observed = list(dict.fromkeys(copies.get(n, n) for n in wanted))
        planned = {copies.get(n, n) for n in [*levels, *(lean.levels() if lean else ())]}
        cache_only = [n for n in observed if n not in planned]
        every = dict.fromkeys(cache_only, CACHE_ONLY_EVERY)
        observer = HistogramObserver(options.bins, observed, every=every)
        ranges = _range_observer(qopts, levels, lean, copies)
        stats: list[Observer] = [observer, *([ranges] if ranges else [])]
        recorder = None
        means = None
        moments: InputMoments | None = None
        sampled: list[str] = []
        scored: list[str] = []
        if auto:
            # the inputs' per-channel means for bias correction, from the same pass (see _select)
            means = ChannelMeanObserver(bias_correction_inputs(model, plan, facts.constants).values())
            # the second moments of the weighted layers' inputs for GPTQ rounding (see _select)
            moments = InputMoments(model, plan, facts.constants)
            stats.extend([means, moments])
            sampled, scored = _sampled(plan, lean), scored_tensors(model)
            recorder = _Split(feed_holder, stats, SampleObserver(sampled), scored)
        # auto: the held-out feeds go through the same pass, to auto's recorders (see _Split),
        # which need their tensors on every feed
        needed = {*sampled, *scored, *(means.names if means is not None else ())}
        fetched = (
            list(dict.fromkeys([*observed, *sampled, *scored, *(moments.names if moments else ())]))
            if recorder is not None
            else observed
        )
        samples = collect(
            model,
            feed_holder,
            fetched,
            [recorder] if recorder is not None else stats,
            threads=options.threads,
            # the weights as the arrays read for planning, not serialized with the model and parsed
            # again by ONNX Runtime (captcha-rec's 54 MB: 0.26-0.30 s of CPU to 0.07 s); same values
            arrays=facts.constants,
            occasional=[n for n in cache_only if n not in needed],
            wants_occasional=feed_holder.statistics_feed,
            showing=feed_holder.show,
            prefetch_bytes=PREFETCH_BYTES,
            # a batch-1 model's samples 4 at a time on a copy with a free batch (docs/design.md,
            # "Stacked runs of a batch-1 model"); each feed's tensors shown as before
            stack=STACK_ROWS,
            workers=count,
            specs=source.inputs,
        )
        samples -= feed_holder.held_samples
        observer.share(copies)
        extents = _extents(ranges, copies)
        if recorder is not None:
            # NaN/Inf that the fp32 model computes (each tensor's count is said below) reach auto's
            # errors and cosines, where numpy warned with its source lines; a NaN/Inf candidate
            # scores -1 there. The filter is the process's (numpy.errstate is a thread's own, and
            # the measurements run on worker threads).
            with catch_warnings():
                simplefilter("ignore", RuntimeWarning)
                selection = _select(
                    model,
                    plan,
                    lean,
                    observer,
                    feed_holder,
                    recorder,
                    algo,
                    options.threads,
                    extents,
                    facts,
                    weights,
                    means,
                    options.emulate_integer,
                    moments,
                )
            if selection.plan is not None and selection.plan is not plan:  # measured: fewer nodes quantized
                plan = selection.plan
                levels = {**levels, **plan.levels()}
        missing = [t for t in wanted if t not in observer.histograms]
        if any(t in levels for t in missing):
            bad = [t for t in missing if t in levels]
            raise CalibrationError(
                f"tensor(s) {', '.join(bad[:5])} produced no float values during calibration"
            )
        warnings = [upgraded] if upgraded else []
        if source.synthetic:
            warnings.append(
                "calibrated on synthetic data: the thresholds do not reflect real inputs; "
                "use real samples for a deployable INT8 model"
            )
        for name, count in observer.nonfinite.items():
            warnings.append(f"tensor '{name}' produced {count} NaN/Inf values (ignored by the statistics)")
        if auto and not feed_holder.held:  # _select judged on the first feed, which the statistics saw
            warnings.append(
                f"auto held no samples out (the data makes fewer than 4 runs of {RUN_ROWS}): its choices "
                f"were judged on calibration samples; give at least {4 * RUN_ROWS} for held-out ones"
            )
        for label, why in plan.left_in_float.items():
            warnings.append(f"{_op_of(model, label)} '{label}' is left in float: {why}")
        inside = [n for node in model.graph.node for g in subgraphs(node) for n in all_nodes(g)]
        if layers := sum(n.op_type in WEIGHTED_OPS for n in inside):
            warnings.append(
                f"{layers} Conv/ConvTranspose/Gemm/MatMul node(s) inside If/Loop/Scan bodies stay float: "
                "calibration quantizes the layers of the main graph only"
            )
        tensors: list[TensorReport] = []
        thresholds = {}
        ruled = _rule_thresholds(observer, levels, cache_tensors, selection, algo, count)
        for name, lv in levels.items():
            hist = observer.histograms[name]
            if selection is not None and name in selection.thresholds:
                thr, rule = selection.thresholds[name], selection.rules[name]
            else:
                thr, rule = ruled[id(hist), lv], algo.algorithm
            thresholds[name] = thr
            tq = plan.activations.get(name) or TensorQuant(name, unsigned=lv == 256)
            scale = activation_qparams(tq, thr, qopts, extents.get(name))[0]
            low, high = extents.get(name, (None, None))
            tensors.append(
                TensorReport(
                    name,
                    hist.absmax,
                    thr,
                    scale,
                    clipped_share(hist, thr),
                    nonfinite=observer.nonfinite.get(name, 0),
                    histogram=compact_histogram(hist.full_counts(), hist.top) if hist.top else None,
                    rule=rule,
                    minimum=low,
                    maximum=high,
                    levels=lv,
                )
            )  # its dtype and zero point: those of the Q/DQ model as written (below)
        cache_thresholds = {}
        for name in cache_tensors:
            if name not in observer.histograms:
                continue
            hist = observer.histograms[name]
            if levels.get(name) == 128:
                cache_thresholds[name] = thresholds[name]
            else:
                cache_thresholds[name] = ruled[id(hist), 128]
        # a tensor all zeros in the data gets the floor scale: any later non-zero value quantizes to
        # about 0 (an LSTM state is zero on its first step only); the cache's too (TensorRT 8.x)
        # (not one that held NaN/Inf only: its count is said above). Not one zero whatever the data
        # (torch.onnx's zero initial LSTM state, ConstantOfShape): no data makes it vary
        fixed = data_independent(model.graph)
        zeros = [n for n in dict.fromkeys([*thresholds, *cache_thresholds])
                 if observer.histograms[n].absmax == 0 and observer.histograms[n].total
                 and n not in fixed]  # fmt: skip
        if zeros:
            warnings.append(
                f"{len(zeros)} tensor(s) were all zeros in the calibration data, so their scale is the floor "
                f"(any other value they take quantizes to about 0): {', '.join(zeros[:5])}"
                + (f" and {len(zeros) - 5} more" if len(zeros) > 5 else "")
                + "; calibrate on data where they vary (a recurrent state after its first step)"
            )
        report = CalibrationReport(
            model=model_path.name,
            model_sha256=str(key_parts["model_sha256"]),
            key=key,
            key_parts=key_parts,
            artifact_key=artifact_key,
            algorithm=algo.describe(),
            data=source.describe(),
            synthetic=source.synthetic,
            samples=samples,
            placement=qopts.placement,
            weight_bits=qopts.weight_bits,
            seconds=0.0,
            tensors=tensors,
            cache_thresholds=cache_thresholds,
            warnings=warnings,
            selection=None
            if selection is None
            else {
                "winner": selection.winner,
                "held_out_cosine": selection.scores,
                "screened_cosine": selection.screened,  # candidates left out on half the held-out samples
                "held_out_samples": selection.held_out_samples,
                "judged_on": "held-out samples" if feed_holder.held else "calibration samples",
                "lead_with_one_sample_out": selection.margins,
                "samples_better_worse": selection.wins,
                "rules": dict(Counter(selection.rules.values())),
                "exclude_ops": list(selection.exclude_ops),
                "exclude_nodes": list(selection.exclude_nodes),
                "narrow_convolutions": selection.narrow_check,
                "placement_alternatives": selection.alternatives,
                "weight_rounding": _rounding_report(selection, moments),
                "bias_correction": _bias_report(plan, selection, means, facts),
                "integer_kernels": "emulated in float" if options.emulate_integer else "this CPU's",
            },
        )
        reused = False

    if selection is not None:
        bias_shift = selection.bias_shift
    qdq = _scored_qdq(selection, plan, thresholds)
    if qdq is None:
        qdq = write_qdq(model, plan, thresholds, extents, weights, bias_shift)
    data = qdq.SerializeToString()
    check_qdq(qdq, qopts.placement, source=model, serialized=data)
    first_feed = feed_holder.first if feed_holder is not None else None
    _record_stored_types(report.tensors, qdq)
    report.artifact_key = artifact_key
    report.placement, report.weight_bits = qopts.placement, qopts.weight_bits
    report.weights = [
        WeightReport(w.name, w.axis, _weight_channels(facts.constants, w.name, w.axis), qopts.weight_bits)
        for w in plan.weights.values()
    ]
    report.quantized_nodes, report.excluded_nodes = plan.quantized_nodes, plan.excluded
    report.exclude_nodes_matched = excluded_by
    report.outputs = {"model": qdq_path.name, "report": report_path.name}
    cache_written: Path | None = None
    rounding_written: Path | None = rounding_path if report.gptq_rounded() else None
    if rounding_written is not None:
        report.outputs["rounding"] = rounding_path.name
    # the model, its TensorRT cache, rounding and report: all of them, or none when one fails
    with written_together(qdq_path, cache_path, rounding_path, report_path):
        with atomic_path(qdq_path) as tmp:
            tmp.write_bytes(data)
            # loaded the way the artifact runs (all graph optimizations) and run once, before it takes
            # its name; onnx's checker passed these bytes in check_qdq
            what = f"the Q/DQ model of {model_path.name}"
            verify_artifact(tmp, first_feed, source=model_path, what=what, checked=True)
        if options.trt_version is not None:
            cache = make_cache(report.cache_thresholds or thresholds, options.trt_version, options.algorithm)
            atomic_write_text(cache_path, cache.dumps())
            cache_written = cache_path
            report.outputs["trt_cache"] = cache_path.name
            report.trt_cache = {
                "version": cache.version,
                "header": cache.header,
                "tensors": len(cache.scales),
            }
        if selection is not None and selection.rounded:  # after the artifact, before the report naming it
            rounding = _write_rounding(rounding_path, selection.rounded, plan, weights)
            report.selection = {**(report.selection or {})}
            report.selection["weight_rounding"] = {**report.selection["weight_rounding"], **rounding}
        elif selection is not None or not report.gptq_rounded():  # an earlier calibration's file goes
            rounding_path.unlink(missing_ok=True)  # (auto's, beside a max or entropy model now)
        if cache_written is None:  # a GPU target's cache beside a CPU target's model: build and bundle
            cache_path.unlink(missing_ok=True)  # would take it for this model's (TensorRT 8.x calibrator)
        elapsed = time.perf_counter() - start
        if not reused:
            report.seconds = round(elapsed, 3)
        report.outputs_sha256 = {qdq_path.name: hashlib.sha256(data).hexdigest()}
        if cache_written is not None:
            report.outputs_sha256[cache_path.name] = sha256_file(cache_path)
        report.write(report_path)
    return CalibrationResult(
        qdq_path,
        report_path,
        cache_written,
        reused=reused,
        skipped=False,
        reason=reason,
        synthetic=report.synthetic,
        samples=report.samples,
        seconds=elapsed,
        key=key,
        tensors=report.tensors,
        warnings=report.warnings,
        report_data=report,
        rounding=rounding_written,
    )


def _scored_qdq(
    selection: Selection | None, plan: QuantPlan, thresholds: Mapping[str, float]
) -> onnx.ModelProto | None:
    """auto's winning Q/DQ model, already written (and scored) for ``plan`` and these thresholds,
    when it is one: the artifact is that model, not a second write of it (0.1-0.2 s of ddddocr's
    recognizer). None when auto kept none or chose it for other thresholds or another plan."""
    if selection is None or selection.qdq is None or selection.plan is not plan:
        return None
    if any(selection.thresholds.get(n) != thresholds[n] for n in plan.calibrated_tensors()):
        return None
    return selection.qdq


def _write_rounding(
    path: Path, names: Sequence[str], plan: QuantPlan, weights: WeightCache
) -> dict[str, Any]:
    """The kept GPTQ-rounded int8 weights into ``path`` (atomically), and what the report records
    of them: a rewrite from the report needs them, and cannot compute them without the data."""
    qmax = plan.options.weight_qmax
    axes = {name: axis for name, axis in plan.weights}
    arrays = {name: weights[(name, axes[name], qmax)][0] for name in names if name in axes}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
    return {"file": path.name, "sha256": sha256_file(path), "weight_bits": plan.options.weight_bits}


def _intact(report: CalibrationReport, paths: Sequence[Path]) -> bool:
    """Whether each of ``paths`` is there with the contents ``report`` recorded when writing it:
    a file replaced, truncated or edited since is written again, not reused."""
    return all(p.is_file() and report.outputs_sha256.get(p.name) == sha256_file(p) for p in paths)


def _rounding_reusable(report: CalibrationReport, path: Path, weight_bits: int) -> bool:
    """Whether a rewrite from ``report`` has its GPTQ-rounded weights: none were kept, or its
    file is there, unchanged (sha256), for the same weight bits."""
    if not report.gptq_rounded():
        return True
    recorded = (report.selection or {})["weight_rounding"]
    return (
        recorded.get("weight_bits") == weight_bits
        and path.is_file()
        and recorded.get("sha256") == sha256_file(path)
    )


def _reused_rounding(
    report: CalibrationReport, path: Path, plan: QuantPlan, facts: ModelFacts
) -> WeightCache:
    """The GPTQ-rounded weights a reused calibration kept (checked by :func:`_rounding_reusable`),
    with their round-to-nearest scales, for the weights ``plan`` quantizes."""
    if not report.gptq_rounded():
        return {}
    qmax = plan.options.weight_qmax
    found: WeightCache = {}
    with np.load(path) as stored:
        for name, axis in plan.weights:
            w = facts.constants.get(name)
            if name in stored.files and w is not None:
                q = stored[name]
                if q.dtype == np.int8 and q.shape == w.shape:  # GPTQ keeps round-to-nearest's scales
                    found[(name, axis, qmax)] = (q, weight_scale(w, axis, qmax))
    return found


def _rounding_report(selection: Selection, moments: InputMoments | None) -> dict[str, Any]:
    """Whether auto kept GPTQ weight rounding, its vote, and on how many layers it could run."""
    if moments is None:
        return {"kept": False}
    rows = sorted(moments.rows.values())
    return {
        "kept": bool(selection.rounded),
        "layers": len(moments.layers),
        "rows_per_layer": [rows[0], rows[-1]] if rows else [],
        **selection.rounding_check,
    }


def _bias_report(
    plan: QuantPlan, selection: Selection, means: ChannelMeanObserver | None, facts: ModelFacts
) -> dict[str, Any]:
    """Whether auto kept bias correction, on how many nodes, and (when kept) the input means it
    was computed from, so that a rewrite from this report applies the same correction."""
    if selection.bias_shift is None or means is None:
        return {"kept": False, **selection.bias_check}
    inputs = bias_correction_inputs(facts.model, plan, facts.constants)
    used = {inputs[i] for i in selection.bias_shift if i in inputs}
    found, spatial = means.means(), means.spatial()
    return {
        "kept": True,
        **selection.bias_check,
        "means": {name: found[name].tolist() for name in sorted(used) if name in found},
        "sizes": {name: list(spatial[name]) for name in sorted(used) if name in spatial},
    }


def _reused_bias_shift(
    report: CalibrationReport,
    model: onnx.ModelProto,
    plan: QuantPlan,
    facts: ModelFacts,
    weights: WeightCache,
) -> dict[int, np.ndarray] | None:
    """The bias correction of a reused calibration that kept it, from its recorded means."""
    recorded = (report.selection or {}).get("bias_correction") or {}
    if not recorded.get("kept"):
        return None
    means = {name: np.asarray(values, np.float64) for name, values in recorded.get("means", {}).items()}
    sizes = {name: tuple(size) for name, size in recorded.get("sizes", {}).items()}
    return bias_corrections(model, plan, means, weights, facts.constants, sizes) or None


def _range_observer(
    qopts: QuantizeOptions, levels: Mapping[str, int], lean: QuantPlan | None, copies: Mapping[str, str]
) -> RangeObserver | None:
    """min / max of the signed tensors that ONNX Runtime's placement quantizes asymmetrically
    (of the tensor computed, for a copy: see :func:`_extents`)."""
    if qopts.placement != "onnxruntime" or not qopts.asymmetric:
        return None
    signed = [n for n, lv in {**levels, **(lean.levels() if lean else {})}.items() if lv == 128]
    return RangeObserver(dict.fromkeys(copies.get(n, n) for n in signed)) if signed else None


def _rule_thresholds(
    observer: HistogramObserver,
    levels: Mapping[str, int],
    cache_tensors: Sequence[str],
    selection: Selection | None,
    algo: AlgorithmOptions,
    count: int,
) -> dict[tuple[int, int], float]:
    """``algo``'s threshold for each tensor of ``levels`` that ``selection`` did not choose, and
    for the TensorRT cache's other tensors (at 128 levels), keyed by (id of the histogram,
    levels): one search per distinct histogram (copies share one), on ``count`` threads. Each
    search reads its histogram alone, so the thresholds are those of a loop; entropy's searches
    were the largest serial part of an ``entropy`` calibration (ddddocr's detector: 1.3 s of
    its 7-8 s)."""
    jobs: dict[tuple[int, int], tuple[AbsHistogram, int]] = {}
    for name, lv in levels.items():
        if selection is None or name not in selection.thresholds:
            hist = observer.histograms[name]
            jobs.setdefault((id(hist), lv), (hist, lv))
    for name in cache_tensors:
        if name in observer.histograms and levels.get(name) != 128:
            cached = observer.histograms[name]
            jobs.setdefault((id(cached), 128), (cached, 128))
    found = map_ordered(lambda job: compute_threshold(job[0], algo, job[1]), list(jobs.values()), count)
    return dict(zip(jobs, found, strict=True))


def _extents(ranges: RangeObserver | None, copies: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """Observed (min, max) per tensor; a copy (Reshape, Transpose...) has its source's values."""
    if ranges is None:
        return {}
    found = {n: (r.minimum, r.maximum) for n, r in ranges.ranges.items() if r.count}
    return {**found, **{name: found[root] for name, root in copies.items() if root in found}}


def _data_key(source: DataSource) -> dict[str, Any]:
    """What of the data shapes a calibration: the source's description, with a batch size that is a
    multiple of ``RUN_ROWS`` taken as ``RUN_ROWS`` where the batch is dynamic (:func:`dynamic_batch`).

    The statistics see the feeds cut into runs of ``RUN_ROWS`` (:func:`split_runs`), so files or
    images read 16 at a time calibrate to the same bytes as 8 at a time, and ``--batch-size 16``
    after 8 recalibrated for nothing. Random data is not: its values are drawn per batch."""
    data = source.identity()
    batch = data.get("batch_size")
    whole_runs = isinstance(batch, int) and batch % RUN_ROWS == 0
    if not source.synthetic and dynamic_batch(source.inputs) and whole_runs:
        data = {**data, "batch_size": RUN_ROWS}
    return data


def _lean_plan(
    model: onnx.ModelProto,
    qopts: QuantizeOptions,
    facts: ModelFacts | None = None,
    full: QuantPlan | None = None,
) -> QuantPlan | None:
    """ONNX Runtime's placement without Add, Concat and the pools quantized (None when the same;
    ``full``: the plan of ``qopts`` when the caller made it already)."""
    if qopts.placement != "onnxruntime":
        return None
    extra = tuple(op for op in ORT_QLINEAR_OPS if op not in qopts.exclude_ops)
    lean = plan_quantization(model, replace(qopts, exclude_ops=qopts.exclude_ops + extra), facts)
    full = full if full is not None else plan_quantization(model, qopts, facts)
    return lean if lean.levels() and set(lean.levels()) != set(full.levels()) else None


def _sampled(plan: QuantPlan, lean: QuantPlan | None) -> list[str]:
    """The tensors whose held-out values auto's per-tensor step runs the consumers on."""
    plans = [plan] if lean is None else [plan, lean]
    return list(dict.fromkeys(name for p in plans for name in p.activations))


def _select(
    model: onnx.ModelProto,
    plan: QuantPlan,
    lean: QuantPlan | None,
    observer: HistogramObserver,
    holder: _FirstFeed,
    recorder: _Split,
    algo: AlgorithmOptions,
    threads: int | None,
    extents: Mapping[str, tuple[float, float]] | None = None,
    facts: ModelFacts | None = None,
    weights: WeightCache | None = None,
    means: ChannelMeanObserver | None = None,
    emulate: bool = False,
    moments: InputMoments | None = None,
) -> Selection:
    """auto: choose from the held-out values the statistics pass recorded.

    The winner is then measured with its weights rounded by GPTQ (``moments``: the second moments
    of its layers' inputs, see :func:`~calibration.select.rounding_checked`), and then with its
    biases corrected (``means``: per-channel means of the calibration inputs, see
    :func:`~calibration.select.bias_corrected`); each is kept where it scores higher.

    In ONNX Runtime's placement, the plan that also quantizes Add, Concat and the pools (the
    integer chain ORT fuses) is measured against the one that leaves them in float: on a
    spectrogram front end (x*x + y*y before a sqrt), int8 on those ops costs more than it saves.
    The candidate thresholds of a tensor are computed once for both plans.
    ``emulate``: the candidates run with their integer kernels emulated in float
    (:attr:`CalibrationOptions.emulate_integer`).
    """
    base = upgrade_opset(model)  # the plan's node indices are those of the upgraded model
    consts = facts.constants if facts is not None and facts.model is base else None
    held_out = holder.held_out()
    names = scored_tensors(base)
    samples = recorder.samples
    if holder.held:
        reference = [[ref[n] for n in names] for ref in recorder.reference]
    else:  # too few batches to hold any out: judged on the first (calibration) batch
        sampled = _sampled(plan, lean)
        samples, keep = SampleObserver(sampled), _Reference(names)
        fetched = list(dict.fromkeys([*sampled, *names]))
        collect(base, held_out, fetched, [samples, keep], threads=threads, arrays=consts)
        reference = keep.batches
    variants: dict[tuple[str, ...], QuantPlan] = {(): plan}
    if lean is not None:
        variants[tuple(op for op in ORT_QLINEAR_OPS if op not in plan.options.exclude_ops)] = lean
    all_levels = {name: lv for p in variants.values() for name, lv in p.levels().items()}
    # equal histograms (a tensor and its copies through Reshape, Transpose...) have equal candidates
    todo: dict[tuple[object, ...], tuple[AbsHistogram, int]] = {}
    keys: dict[str, tuple[object, ...]] = {}
    for name, lv in all_levels.items():
        h = observer.histograms[name]
        keys[name] = (lv, h.bins, h.top, h.absmax, h.zeros, h.counts.tobytes())
        todo.setdefault(keys[name], (h, lv))
    count = workers(threads)
    found = map_ordered(lambda job: candidates(job[0], job[1], algo), todo.values(), count)
    by_content = dict(zip(todo, found, strict=True))
    cands = {name: dict(by_content[key]) for name, key in keys.items()}
    peaks = pooled_peaks(base, list(cands))
    for name in peaks:  # not clipped: every candidate is the max (see pooled_peaks)
        cands[name] = dict.fromkeys(cands[name], observer.histograms[name].absmax)
    memo: dict[tuple[object, ...], np.ndarray] = {}  # per-tensor errors, shared by the plans
    best: Selection | None = None

    def measure(variant: QuantPlan, rules: Sequence[str]) -> Selection:
        levels = variant.levels()
        return select(
            base,
            variant,
            observer.histograms,
            levels,
            samples.values,
            held_out,
            algo,
            rules,
            cands={name: cands[name] for name in levels},
            reference=reference,
            memo=memo,
            extents=extents,
            consts=consts,
            weights=weights,
            workers=count,
            emulate=emulate,
        )

    for excluded, variant in variants.items():
        # the second plan measures the per-tensor choice and the first plan's best rule only
        selection = measure(variant, RULES if best is None else tuple(r for r in RULES if r == best.winner))
        selection.exclude_ops = excluded
        if best is None or selection.scores[selection.winner] > best.scores[best.winner]:
            if best is not None:
                selection.alternatives = {**best.alternatives, "quantize all": best.scores[best.winner]}
            best = selection
        else:
            best.alternatives[f"leave {', '.join(excluded)} in float"] = selection.scores[selection.winner]
    assert best is not None and best.plan is not None
    narrow = narrow_convs(base, best.plan)
    if narrow:  # the best plan with its narrow convolutions in float, measured the same way
        options = best.plan.options
        variant = plan_quantization(
            base, replace(options, exclude_nodes=options.exclude_nodes + tuple(narrow)), facts
        )
        measurable = variant.levels().items() <= all_levels.items() and set(variant.activations) <= set(
            _sampled(plan, lean)
        )  # every tensor it quantizes has its candidates and held-out values already
        if variant.levels() and measurable:
            selection = measure(variant, tuple(r for r in RULES if r == best.winner))
            vote = plan_vote(best, selection)
            if vote["kept"]:
                selection.exclude_ops, selection.exclude_nodes = best.exclude_ops, tuple(narrow)
                selection.alternatives = {**best.alternatives, "quantize them": best.scores[best.winner]}
                selection.narrow_check = vote
                best = selection
            else:
                best.alternatives[f"leave {len(narrow)} narrow convolution(s) in float"] = vote[
                    "held_out_cosine"
                ]
                best.narrow_check = vote
    # the variants below: scored alike, their feeds on ``count`` threads
    scoring = HeldOut(held_out, reference, extents, weights, emulate, count)
    if moments is not None and moments.moments and best.plan is not None:
        rounded = rounded_weights(base, best.plan, moments, consts or constant_values(base), weights, count)
        best = rounding_checked(base, best, rounded, scoring)
    if means is not None and means.sums and best.plan is not None:
        shifts = bias_corrections(base, best.plan, means.means(), weights, consts, means.spatial())
        best = bias_corrected(base, best, shifts, scoring)
    for name in peaks & best.rules.keys():
        best.rules[name] = POOLED_PEAKS
    best.held_out_samples = sum(feed_rows(f, holder.source.inputs) for f in held_out)
    return best


class _Reference:
    """Keeps the values of some tensors per batch (FP32 reference outputs)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.batches: list[list[np.ndarray]] = []
        self._current: dict[str, np.ndarray] = {}

    def observe(self, name: str, array: np.ndarray) -> None:
        if name not in self.names:
            return
        self._current[name] = np.array(array, copy=True)
        if len(self._current) == len(set(self.names)):
            self.batches.append([self._current[n] for n in self.names])
            self._current = {}


def _record_stored_types(tensors: Sequence[TensorReport], qdq: onnx.ModelProto) -> None:
    """Each tensor's ``dtype`` and ``zero_point`` as the Q/DQ model ``qdq`` stores it (ONNX
    Runtime's placement: uint8 for a signed tensor too, see calibration/qdq.py
    ``activation_qparams``); "float" for a tensor it leaves unquantized (calibrated for the plan
    without exclusions, kept for a rewrite without them)."""
    stored = stored_activations(qdq)
    for t in tensors:
        t.dtype, t.zero_point = stored.get(t.name, ("float", 0))


def _op_of(model: onnx.ModelProto, label: str) -> str:
    """The op type of the node of the main graph a plan labels ``label`` (its name, or OP#index)."""
    nodes = model.graph.node
    found = next((n.op_type for n in nodes if n.name == label), None)
    return found or label.partition("#")[0]


def _weight_channels(constants: Mapping[str, np.ndarray], name: str, axis: int | None) -> int:
    """The channels of a per-channel weight (as many as its scale has in the Q/DQ model): its
    length along ``axis``, an initializer's or a Constant node's (ocr-cls's weights are those);
    1 for a weight of one scale (``axis`` None, a batched MatMul's)."""
    if axis is None:
        return 1
    value = constants.get(name)
    return int(value.shape[axis]) if value is not None and value.ndim > axis else 0


__all__ = ["CalibrationOptions", "CalibrationResult", "DataError", "calibrate"]
