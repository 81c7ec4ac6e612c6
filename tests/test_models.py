import pytest
import torch
from torch import nn

from models import MODEL_NAMES, build_model, count_parameters, skeleton
from models.architectures import conv_count, fc_count, parameter_count

EXPECTED_PARAMETERS = {"alexnet": 23_238_474, "vgg16": 33_638_218, "vgg16_bn": 33_646_666, "vgg8": 13_119_050}
EXPECTED_CONVS = {"alexnet": 5, "vgg16": 13, "vgg16_bn": 13, "vgg8": 8}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count_depth_and_output_shape(name):
    model = build_model(name)
    assert count_parameters(model) == EXPECTED_PARAMETERS[name] == parameter_count(name)  # built == from the tables
    assert sum(isinstance(m, nn.Conv2d) for m in model.features) == EXPECTED_CONVS[name] == conv_count(name)
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
    with pytest.raises(ValueError, match="alexnet, vgg16, vgg16_bn, vgg8"):
        build_model("resnet18")
    with pytest.raises(ValueError, match="default, kaiming"):
        build_model("vgg8", init="xavier")


def test_config_names_the_same_models_and_inits_without_importing_torch():
    from models import INITS, MODEL_NAMES
    from study import config

    assert config.MODEL_NAMES == MODEL_NAMES and config.INITS == INITS


def test_the_report_and_the_settings_import_no_torch():
    """torch costs a stage 1-2 s of imports: the report (run on every `dvc repro`) reads tables only."""
    import subprocess
    import sys

    code = "import sys, stages.report, stages.summary, models; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0, "importing them imported torch"
