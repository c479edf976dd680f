"""The model builds deterministically once; variants build, validate, and gate INT8 accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from harness.runtime import load_predictor
from harness.scenario import VariantsSpec
from harness.variants import VARIANT_NAMES, build_variant, validate


def test_model_is_trained_and_cached(bundle) -> None:
    from harness.models import build_model
    from harness.models.digits_cnn import DigitsCnnConfig

    assert bundle.test_accuracy > 0.95
    assert bundle.x_test.shape[1:] == (1, 8, 8)
    again = build_model(DigitsCnnConfig(name="digits-cnn"))
    assert again.key == bundle.key and again.path == bundle.path  # cache hit, same recipe
    assert again.meta["weights_sha256"] == bundle.meta["weights_sha256"]


@pytest.mark.parametrize("name", VARIANT_NAMES)
def test_variant_builds_validates_and_runs(bundle, name: str) -> None:
    variant = build_variant(name, bundle, VariantsSpec())
    v = variant.validation
    assert variant.ok, v.reason
    assert v.reference_accuracy == pytest.approx(bundle.test_accuracy)
    assert v.agreement >= 0.98
    if variant.precision == "fp32":
        assert v.max_abs_diff < 1e-3
    # the runtime every server uses reproduces the recorded outputs
    outputs = load_predictor(variant.path, threads=1)(bundle.x_test[:32])
    np.testing.assert_allclose(outputs, variant.outputs_test()[:32], atol=1e-4)


def test_int8_gate_fails_a_build_that_loses_accuracy(bundle) -> None:
    # Calibrating on blank images collapses the activation ranges: a real, broken INT8 build.
    class BadCalibration(VariantsSpec):
        calibration_override: list = [np.zeros((1, 8, 8), np.float32).tolist()] * 4

    variant = build_variant("onnx-int8", bundle, BadCalibration())
    assert not variant.ok
    assert "points below the fp32 reference" in variant.validation.reason
    assert variant.validation.accuracy < variant.validation.reference_accuracy - 0.01


def test_gate_tolerance_is_the_scenarios(bundle) -> None:
    ref = bundle.reference_test
    worse = ref.copy()
    wrong = np.flatnonzero(ref.argmax(1) == bundle.y_test)[:4]  # break 4 correct answers
    worse[wrong] = -worse[wrong]
    drop_pts = 4 / len(ref) * 100
    assert validate(worse, bundle, "int8", tolerance_pts=drop_pts + 0.1).status == "ok"
    failed = validate(worse, bundle, "int8", tolerance_pts=drop_pts - 0.1)
    assert failed.status == "failed" and "tolerance" in failed.reason
    assert validate(worse, bundle, "fp32", tolerance_pts=100).status == "failed"
