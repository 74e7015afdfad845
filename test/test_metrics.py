import math

import numpy as np

from vit_seg_node.core.metrics import ConfusionMatrix


def test_miou_matches_hand_computed_matrix():
    # 3 classes, ignore index 255; ground truth / prediction over 8 pixels
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pr = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(pr, gt)
    # counted pixels: gt 0 -> (0, 1); gt 1 -> (1, 1); gt 2 -> (2, 0)
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 2, gt 2, pred 3 -> 2/3;
    # class 2: tp 1, gt 2, pred 1 -> 1/2
    iou = cm.iou()
    assert np.allclose(iou, [1 / 3, 2 / 3, 1 / 2])
    assert math.isclose(cm.miou(), (1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert math.isclose(cm.pixel_accuracy(), 4 / 6)


def test_absent_class_is_nan_and_excluded():
    cm = ConfusionMatrix(4, ignore_index=3)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 3]))
    iou = cm.iou()
    assert iou[0] == 1.0 and iou[1] == 1.0
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert cm.miou() == 1.0
    s = cm.summary(['a', 'b', 'c', 'd'])
    assert s['per_class_iou']['c'] is None


def test_predicted_but_absent_class_counts_as_zero():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(np.array([2, 1]), np.array([0, 1]))
    assert np.allclose(cm.iou(), [0.0, 1.0, 0.0])
    assert math.isclose(cm.miou(), 1 / 3)


def test_out_of_range_prediction_is_wrong_not_crash():
    cm = ConfusionMatrix(2, ignore_index=255)
    cm.update(np.array([7, 1]), np.array([0, 1]))
    assert np.allclose(cm.iou(), [0.0, 1.0])
    assert math.isclose(cm.pixel_accuracy(), 0.5)


def test_merge_adds_counts():
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(np.array([0]), np.array([0]))
    b.update(np.array([1]), np.array([0]))
    a.merge(b)
    assert a.matrix[0, 0] == 1 and a.matrix[0, 1] == 1


def test_cpu_meter_reports_cores_used_between_readings():
    from vit_seg_node.core.stats import CpuMeter

    wall, cpu = iter([0.0, 2.0, 3.0, 3.0]), iter([10.0, 11.0, 13.0, 13.0])
    meter = CpuMeter(clock=lambda: next(wall), cpu=lambda: next(cpu))
    assert meter.cores() == 0.5          # 1 s of CPU over 2 s: half a core
    assert meter.cores() == 2.0          # 2 s of CPU over 1 s: two cores busy
    assert meter.cores() == 0.0          # no time passed: no reading, no division by zero
