import pytest

from bench.api.errors import BenchError
from bench.api.registry import DATASETS, METHODS, METRICS, SUITES, UnknownNameError
from bench.cli import main


def test_discovery_finds_every_kind():
    assert {"resnet18", "resnet50", "vit_tiny_patch16_224"} <= set(METHODS.names())
    assert {"breastmnist", "retinamnist_224", "chestmnist_64", "synthetic_severity"} <= set(
        DATASETS.names()
    )
    assert {"accuracy", "auroc", "kappa_quadratic", "ece"} <= set(METRICS.names())
    assert "classification" in SUITES.names()
    # every 2D MedMNIST flag at every size, no 3D
    assert sum(n.startswith("pathmnist") for n in DATASETS.names()) == 4
    assert not any("3d" in n for n in DATASETS.names())


@pytest.mark.parametrize(
    "registry,typo,expected",
    [
        (METHODS, "resnet19", "resnet18"),
        (DATASETS, "breastmnst", "breastmnist"),
        (METRICS, "acuracy", "accuracy"),
    ],
)
def test_unknown_name_suggests(registry, typo, expected):
    with pytest.raises(UnknownNameError, match=f"did you mean '{expected}'"):
        registry.get(typo)


def test_timm_prefix_resolves_and_rejects():
    spec = METHODS.get("timm:resnet10t")
    assert spec.make_config().model == "resnet10t"
    with pytest.raises(UnknownNameError, match="timm:resnet18"):
        METHODS.get("timm:resnet18x")


def test_unknown_method_option_is_named():
    with pytest.raises(BenchError, match="unknown option 'input_sise'.*'input_size'"):
        METHODS.get("resnet18").make_config({"input_sise": 32})


def test_cli_list_and_unknown(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "timm:<name>" in out and "syn:<name>" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert (
        "U-ViT" in lines["dcube"] and "DiffMIC-v2" in lines["diffmic_v2"]
    )  # each method's own description
    assert main(["list", "suites"]) == 0
    assert "classification" in capsys.readouterr().out
    assert main(["run", "--suite", "clasification"]) == 2
    assert "did you mean 'classification'" in capsys.readouterr().err


def test_a_registration_is_checked_against_the_method_interface():
    """register_method (decorator or call) and prefix factories accept only Method
    subclasses of a known task whose Config is a dataclass taking the given defaults."""
    import dataclasses

    from bench.api.errors import BenchError
    from bench.api.method import (
        ClassificationMethod,
        MethodSpec,
        check_method_spec,
        register_method,
    )

    @dataclasses.dataclass
    class Cfg:
        lr: float = 1e-3

    class Good(ClassificationMethod):
        Config = Cfg

    check_method_spec("good", MethodSpec(Good, {"lr": 0.1}))
    with pytest.raises(BenchError, match="not a subclass of bench.api.method.Method"):
        register_method("not_a_method")(type("Plain", (), {"Config": Cfg}))
    with pytest.raises(
        BenchError, match=r"default options \['lrr'\] are not fields of Good.Config"
    ):
        register_method("typo_variant", lrr=0.1)(Good)
    with pytest.raises(BenchError, match="Config must be a dataclass"):
        register_method("no_config")(type("NoConfig", (ClassificationMethod,), {"Config": dict}))
    with pytest.raises(BenchError, match="not a MethodSpec"):
        check_method_spec("raw", Good)
    assert "not_a_method" not in METHODS.names() and "typo_variant" not in METHODS.names()
    # every registered method and the prefix variants pass the same check
    for name in [*METHODS.names(), "timm:resnet18", "syn:resnet18"]:
        check_method_spec(name, METHODS.get(name))


@pytest.mark.parametrize("suite_name", ["classification", "generation", "restoration"])
def test_every_bundled_preset_gives_each_of_its_methods_a_valid_config(suite_name):
    """A preset option a method does not have (a typo, a renamed field) fails here rather
    than when a unit of that preset starts, hours into a queue."""
    from bench.engine.config import load_suite

    suite = load_suite(suite_name)
    names = {m.name for m in suite.methods}
    for preset_name, preset in suite.presets.items():
        assert set(preset.method_options) <= names, (
            preset_name,
            set(preset.method_options) - names,
        )
        for entry in suite.methods:
            spec = METHODS.get(entry.name)
            spec.make_config(suite.options_for(entry, preset, spec.preset_options_of))
