import pytest

from models.architectures import MODEL_NAMES
from study.analysis.receptive_field import (
    PAPER,
    analyse,
    measured_receptive_fields,
    paper_differences,
    receptive_field_table,
)
from study.figures import plot_growth

# Worked by hand: r += (k - 1) * j, then j *= s; 3x3 convs stride 1, 2x2 pools stride 2.
HAND_WORKED = {
    "alexnet": [("Conv1", 3, 1), ("Pool1", 4, 2), ("Conv2", 8, 2), ("Pool2", 10, 4), ("Conv3", 18, 4),
                ("Conv4", 26, 4), ("Conv5", 34, 4), ("Pool5", 38, 8)],
    "vgg8": [("Conv1_1", 3, 1), ("Conv1_2", 5, 1), ("Pool1", 6, 2), ("Conv2_1", 10, 2), ("Conv2_2", 14, 2),
             ("Pool2", 16, 4), ("Conv3_1", 24, 4), ("Conv3_2", 32, 4), ("Pool3", 36, 8), ("Conv4_1", 52, 8),
             ("Conv4_2", 68, 8), ("Pool4", 76, 16)],
}
VGG16 = [3, 5, 6, 10, 14, 16, 24, 32, 40, 44, 60, 76, 92, 100, 132, 164, 196, 212]


@pytest.mark.parametrize("model", ["alexnet", "vgg8"])
def test_walk_matches_hand_worked_values(model):
    table = receptive_field_table(model)
    assert table.iloc[0]["layer"] == "Input" and table.iloc[0]["receptive_field"] == 1
    got = [(r.layer, r.receptive_field, r.cum_stride) for r in table.iloc[1:].itertuples()]
    assert got == HAND_WORKED[model]


def test_a_residual_network_gives_each_stages_field_along_its_main_path():
    """ResNet-18: 3x3 stem, then two blocks of two 3x3 convs per stage, the first conv of stages
    2-4 with stride 2. By hand: 3; 3 + 4*2*1 = 11; 11 + 2*1 + 3*2*2 = 25; 25 + 2*2 + 3*2*4 = 53;
    53 + 2*4 + 3*2*8 = 109. The gradient through the real blocks (shortcuts too) agrees."""
    table = receptive_field_table("resnet18")
    assert list(table["layer"]) == ["Input", "Stem", "Stage1", "Stage2", "Stage3", "Stage4"]
    assert list(table["receptive_field"]) == [1, 3, 11, 25, 53, 109]
    assert list(table["cum_stride"]) == [1, 1, 1, 2, 4, 8]
    assert measured_receptive_fields("resnet18") == [3, 11, 25, 53, 109]


def test_vgg16_with_and_without_bn_have_the_same_receptive_fields():
    assert list(receptive_field_table("vgg16")["receptive_field"][1:]) == VGG16
    assert list(receptive_field_table("vgg16_bn")["receptive_field"][1:]) == VGG16
    assert receptive_field_table("vgg16")["layer"].iloc[-1] == "Pool5"


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_walk_agrees_with_gradient_measurement(model):
    assert measured_receptive_fields(model) == [int(v) for v in receptive_field_table(model)["receptive_field"][1:]]


def test_measurement_notices_a_clipped_input():
    with pytest.raises(Exception, match="too small"):
        measured_receptive_fields("vgg16", input_size=64)


def test_paper_differences_list_each_slip_with_both_numbers():
    tables = {m: receptive_field_table(m) for m in PAPER}
    diff = paper_differences(tables)
    table = diff[diff["where"] == "Tables 2-4"].set_index(["model", "layer"])
    assert table.loc[("alexnet", "Pool1")].tolist() == ["Tables 2-4", 6, 4]
    assert table.loc[("alexnet", "Pool5")].tolist() == ["Tables 2-4", 46, 38]
    assert table.loc[("vgg16", "Pool4")].tolist() == ["Tables 2-4", 108, 100]
    assert table.loc[("vgg16", "Pool5")].tolist() == ["Tables 2-4", 236, 212]
    # VGG-16's blocks 1-4 up to Conv4_3 are printed right
    assert not any(layer.startswith(("Conv1", "Conv2", "Conv3", "Conv4", "Pool1", "Pool2", "Pool3"))
                   for model, layer in table.index if model == "vgg16")
    assert len(table) == 12


def test_stage_writes_tables_and_plot(tmp_path):
    analyse(["alexnet", "vgg8"], out_dir=tmp_path / "rf")
    assert sorted(p.name for p in (tmp_path / "rf").iterdir()) == [
        "alexnet.csv", "growth.png", "paper_differences.csv", "vgg8.csv"]
    assert (tmp_path / "rf" / "growth.png").read_bytes()[:4] == b"\x89PNG"


def test_growth_figure_draws_identical_fields_once_naming_both(tmp_path):
    tables = {m: receptive_field_table(m) for m in ("alexnet", "vgg16", "vgg16_bn", "vgg8")}
    labels = plot_growth(tables, tmp_path / "growth.png")
    assert labels == ["AlexNet", "VGG-16 = VGG-16 with BN (identical)", "VGG-8"]  # no line hidden under another
    assert (tmp_path / "growth.png").read_bytes()[:4] == b"\x89PNG"
