import pytest
import torch
from torch import nn

from models.architectures import MODEL_NAMES, conv_count, fc_count, parameter_count
from models.network import build_model, count_parameters, skeleton

# ResNet-18 for CIFAR: 11,173,962 as the common implementations count it (3x3 stem, no max-pool)
EXPECTED_PARAMETERS = {"alexnet": 23_238_474, "vgg16": 33_638_218, "vgg16_bn": 33_646_666, "vgg8": 13_119_050,
                       "resnet18": 11_173_962}
EXPECTED_CONVS = {"alexnet": 5, "vgg16": 13, "vgg16_bn": 13, "vgg8": 8, "resnet18": 17}  # 3x3 convs, main path


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count_depth_and_output_shape(name):
    model = build_model(name)
    assert count_parameters(model) == EXPECTED_PARAMETERS[name] == parameter_count(name)  # built == from the tables
    convs = [m for m in model.features.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == EXPECTED_CONVS[name] == conv_count(name)
    assert model.features[0] is convs[0]  # the first layer, where the filter and feature-map figures look
    assert list(model.children()) == [model.features, model.classifier]
    assert sum(isinstance(m, nn.Linear) for m in model.classifier) == fc_count(name)
    shape = skeleton(name)  # the same layers on the meta device, no weights to initialise
    assert count_parameters(shape) == EXPECTED_PARAMETERS[name] and all(p.is_meta for p in shape.parameters())
    assert [type(m) for m in shape.modules()] == [type(m) for m in model.modules()]
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_batch_norm_sits_between_conv_and_relu():
    layers = list(build_model("vgg16_bn").features)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            assert isinstance(layers[i + 1], nn.BatchNorm2d) and isinstance(layers[i + 2], nn.ReLU)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in build_model("vgg16").modules())


def test_default_init_is_pytorch_own_and_kaiming_differs():
    torch.manual_seed(0)
    default = build_model("vgg8")
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 64, 3, padding=1)  # PyTorch's own init, same RNG stream
    assert torch.equal(default.features[0].weight, reference.weight)
    torch.manual_seed(0)
    kaiming = build_model("vgg8", init="kaiming")
    assert not torch.equal(default.features[0].weight, kaiming.features[0].weight)
    assert torch.count_nonzero(kaiming.features[0].bias) == 0


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="alexnet, vgg16, vgg16_bn, vgg8, resnet18"):
        build_model("resnet50")
    with pytest.raises(ValueError, match="default, kaiming"):
        build_model("vgg8", init="xavier")


def test_every_list_of_networks_follows_the_registry():
    """The registry (models/architectures.py) is the one list: params.yaml's default `models` is the
    paper's four, dvc.yaml's plots follow `models` (declared in its per-network stages, never one by
    one), and the paper's tables key only networks the registry has."""
    import yaml
    from conftest import ROOT

    from study.analysis import paper
    from study.config import parse_settings

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert tuple(params["models"]) == paper.PAPER_MODELS and set(paper.PAPER_MODELS) <= set(MODEL_NAMES)
    for table in (paper.DEPTH, paper.PARAMS_M, paper.ACCURACY, paper.SECONDS, paper.PER_POINT_K):
        assert tuple(table) == paper.PAPER_MODELS
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert "plots" not in pipeline  # a top-level plot would name the networks one by one
    for stage in ("train", "evaluate"):
        assert pipeline["stages"][stage]["foreach"] == "${models}"
        [[path]] = [list(plot) for plot in pipeline["stages"][stage]["do"]["plots"]]
        assert path.startswith("outputs/${item}/"), path
    assert parse_settings({**params, "models": ["alexnet", "resnet18"]}).models == ("alexnet", "resnet18")


def test_the_report_and_the_settings_import_no_torch():
    """torch costs a stage 1-2 s of imports: the report (run on every `dvc repro`) reads tables only."""
    import subprocess
    import sys

    code = "import sys, stages.report, stages.summary, models; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "importing them imported torch"


def test_params_yaml_runs_the_papers_recipe_and_nothing_else_holds_its_values():
    """The recipe's values live in params.yaml; the paper's section 5.1 (study/analysis/paper.py)
    is the reference a run is named against, the engine's defaults and the experiment's
    description: params.yaml runs exactly it, and no other module spells a value out."""
    import yaml
    from conftest import ROOT

    from study.recipe import RECIPE
    from study.tracking.store import study_text
    from study.training.engine import Recipe

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params["train"] == RECIPE
    recipe = Recipe()
    assert {key: getattr(recipe, key) for key in RECIPE} == RECIPE
    assert f"weight decay {RECIPE['weight_decay']:g}" in study_text()
    for path in ("study/tracking/naming.py", "study/tracking/store.py", "study/training/engine.py"):
        text = (ROOT / path).read_text()
        assert "0.01" not in text and "5e-4" not in text and "0.0005" not in text, path
