"""Ordinal consistency of generated images (issue 34): the extractor classifier's grades
against the grades images were generated for, beside its grades of the real images."""

import numpy as np
import pytest
import torch
from test_generation_floors import as_records, extractor, retina  # noqa: F401 (module fixtures)

from bench.tasks.generation.fidelity import Extractor, classifier_input, load_classifier
from bench.tasks.generation.ordinal import (
    agreement,
    class_intensity_ratios,
    classifier_grades,
    ordinal_consistency,
)
from bench.tasks.generation.report import ordinal_table

pytestmark = pytest.mark.usefixtures("one_thread")


def test_agreement_is_one_in_order_negative_reversed_and_nan_when_constant():
    grades = np.array([0, 1, 2, 3, 4] * 4)
    assert agreement(grades, grades) == {"qwk": 1.0, "spearman": pytest.approx(1.0)}
    reversed_ = agreement(grades, 4 - grades)
    assert reversed_["qwk"] < 0 and reversed_["spearman"] == pytest.approx(-1.0)
    assert np.isnan(agreement(grades, np.zeros_like(grades))["qwk"])


def test_class_intensity_ratios_compare_each_class_with_the_same_real_class():
    real = np.stack([np.full((2, 2, 1), v, np.uint8) for v in (100, 100, 50, 50)])
    gen = np.stack([np.full((2, 2, 1), v, np.uint8) for v in (110, 90, 100, 100)])
    ratios = class_intensity_ratios(gen, [0, 0, 1, 1], real, [0, 0, 1, 1], 3)
    assert ratios[0] == pytest.approx(1.0) and ratios[1] == pytest.approx(2.0) and ratios[2] is None


def test_grades_are_the_extractor_classifiers_argmax(retina, extractor):  # noqa: F811
    images = retina.splits["test"].images[:40]
    graded = classifier_grades(images, extractor)
    model, in_chans, size = load_classifier(extractor.kwargs["feature_extractor_weights_path"])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).expand(-1, 3, -1, -1)
    with torch.no_grad():
        want = model(classifier_input(x, in_chans, size)).argmax(1).numpy()
    assert np.array_equal(graded, want)
    assert classifier_grades(images, Extractor("inception-v3-compat")) is None


def test_real_images_generated_for_their_own_grades_agree_as_the_real_ones(retina, extractor):  # noqa: F811
    test = retina.splits["test"]
    block = ordinal_consistency(test.images, test.labels, test.images, test.labels, extractor, 5)
    assert block["generated"] == block["real"]  # the same images, the same grades
    assert block["class_intensity_ratio"] == pytest.approx([1.0] * 5)
    shuffled = np.random.default_rng(0).permutation(test.labels)
    worse = ordinal_consistency(test.images, shuffled, test.images, test.labels, extractor, 5)
    assert abs(worse["generated"]["qwk"]) < block["real"]["qwk"]


def test_the_table_puts_the_real_images_value_first_as_the_target():
    def record(method, seed, qwk):
        return {
            "method": method,
            "seed": seed,
            "ordinal_consistency": {
                "generated": {"qwk": qwk, "spearman": qwk},
                "real": {"qwk": 0.54, "spearman": 0.5},
                "class_intensity_ratio": [1.2, 1.0, 0.9],
            },
            "class_names": ["0", "1", "2"],
        }

    records = [record("odm", 0, 0.8), record("odm", 1, 0.82), record("dm", 0, 0.79)]
    lines = ordinal_table(as_records(records), ["dm", "odm"])
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[1].startswith("| _real test images (target)_ | | _0.54_ | _0.50_ |")
    assert rows[2].startswith("| dm | 1 | 0.79 |") and rows[3].startswith(
        "| odm | 2 | 0.81 ± 0.01 |"
    )
    assert "| 1.20 ± 0.00 |" in rows[3]
    assert ordinal_table(as_records([{"method": "cgan", "seed": 0}]), ["cgan"]) == []
    # an undefined agreement (a grader predicting one class: NaN, stored as null) reads n/a
    undefined = record("dm", 0, None)
    undefined["ordinal_consistency"]["real"] = {"qwk": None, "spearman": None}
    rows = [x for x in ordinal_table(as_records([undefined]), ["dm"]) if x.startswith("| ")]
    assert rows[1].startswith("| _real test images (target)_ | | _n/a_ | _n/a_ |")
    assert rows[2].startswith("| dm | 1 | n/a | n/a |")
