"""The real-model benchmark's detector metrics (benchmarks/real_models.py): PP-Layout's decoding
and the per-class box IoU, on hand-made outputs whose boxes are known."""

from __future__ import annotations

import numpy as np

from benchmarks.real_models import layout_iou, picodet_boxes

SIZE = (800, 608)
STRIDES = (8, 16, 32, 64)


def _outputs(found: list[tuple[int, int, int, float]], bins: int = 8, classes: int = 10) -> list[np.ndarray]:
    """PicoDet outputs (scores per level, then distance distributions per level) for one image, with
    ``found``: (level, anchor, class, distance in strides to every side), a one-hot distribution."""
    anchors = [-(-SIZE[0] // s) * -(-SIZE[1] // s) for s in STRIDES]
    scores = [np.zeros((1, n, classes), np.float32) for n in anchors]
    dists = [np.zeros((1, n, 4 * bins), np.float32) for n in anchors]
    for level, anchor, cls, far in found:
        scores[level][0, anchor, cls] = 0.9
        logits = np.full((4, bins), -30.0, np.float32)
        logits[:, int(far)] = 30.0
        dists[level][0, anchor] = logits.ravel()
    return scores + dists


def test_picodet_boxes_decode_centre_and_distances() -> None:
    w = -(-SIZE[1] // 16)
    anchor = 5 * w + 7  # row 5, column 7 on the stride-16 level: centre (120, 88)
    boxes = picodet_boxes(_outputs([(1, anchor, 4, 3)]), 0)
    assert list(boxes) == [4]
    np.testing.assert_allclose(boxes[4], [[120 - 48, 88 - 48, 120 + 48, 88 + 48]], atol=1e-6)


def test_layout_iou_is_one_on_itself_and_counts_a_class_change_as_a_miss() -> None:
    same = _outputs([(0, 100, 0, 2), (2, 40, 1, 4)])
    assert layout_iou([same], [same]) == 1.0
    relabelled = _outputs([(0, 100, 0, 2), (2, 40, 2, 4)])  # the second box changes class
    # box 1 matches; class 1's box is missed, class 2's is spurious: (1 + 0 + 0) / 3
    assert abs(layout_iou([same], [relabelled]) - 1 / 3) < 1e-9
    grown = _outputs([(0, 100, 0, 3), (2, 40, 1, 4)])  # the first box grows from 4x4 to 6x6 strides
    assert abs(layout_iou([same], [grown]) - (1 + 16 / 36) / 2) < 1e-6
