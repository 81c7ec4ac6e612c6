"""The values the study publishes, in one place (the paper's Tables 1 and 5-7), keyed by the
paper's own networks: a network the paper lacks has no entry, and every paper column shows
``NOT_IN_PAPER`` for it."""

from models.architectures import NAMES  # noqa: F401 - the report's names, from the registry
from study.recipe import EPOCHS, RECIPE  # noqa: F401 - section 5.1, a module of its own (the training's)

NOT_IN_PAPER = "–"
DEPTH = {"alexnet": "5+3", "vgg16": "13+3", "vgg16_bn": "13+3", "vgg8": "8+2"}
PARAMS_M = {"alexnet": 23.2, "vgg16": 33.6, "vgg16_bn": 33.6, "vgg8": 13.1}
# test accuracy (%) after (5, 40) epochs, Table 5
ACCURACY = {"alexnet": (56.84, 87.81), "vgg16": (10.00, 10.00), "vgg16_bn": (83.86, 91.94), "vgg8": (27.75, 88.32)}
# mean seconds per epoch in the (5, 40)-epoch runs, Table 6
SECONDS = {"alexnet": (25.48, 36.09), "vgg16": (30.89, 47.08), "vgg16_bn": (31.55, 50.20), "vgg8": (25.13, 37.97)}
# parameters per percentage point of 40-epoch accuracy, thousands, Table 7
PER_POINT_K = {"alexnet": 264, "vgg16": 3360, "vgg16_bn": 366, "vgg8": 148}
PAPER_MODELS = tuple(DEPTH)  # the study's four networks: params.yaml's default `models`

# the ablation its §6.1.2 leaves open: plain VGG-16 under torchvision's VGG init (conv Kaiming fan-out,
# linear N(0, 0.01)); benchmarks/device/gpu_pipeline.sh queues it
WANTED_ABLATION = ("train.init", "torchvision", "vgg16")

# The values the study prints (Tables 2-4, "Receptive Field" column; Table 3-4 rows are VGG-16).
RECEPTIVE_FIELDS = {
    "alexnet": {"Conv1": 3, "Pool1": 6, "Conv2": 10, "Pool2": 14, "Conv3": 22, "Conv4": 30, "Conv5": 38,
                "Pool5": 46},
    "vgg16": {"Conv1_1": 3, "Conv1_2": 5, "Pool1": 6, "Conv2_1": 10, "Conv2_2": 14, "Pool2": 16, "Conv3_1": 24,
              "Conv3_2": 32, "Conv3_3": 40, "Pool3": 44, "Conv4_1": 60, "Conv4_2": 76, "Conv4_3": 92, "Pool4": 108,
              "Conv5_1": 140, "Conv5_2": 172, "Conv5_3": 204, "Pool5": 236},
}
# Section 4.2's running text gives a second, different list for AlexNet, and section 4.3's a
# third for VGG-16, per block (a block's field is its last conv's).
RECEPTIVE_FIELDS_TEXT = {"alexnet": {"Conv1": 3, "Pool1": 6, "Conv2": 10, "Pool2": 14, "Conv3": 18, "Conv4": 22,
                                     "Conv5": 26, "Pool5": 30}}
RECEPTIVE_FIELDS_BLOCKS = {"vgg16": {"Conv1_2": 5, "Pool1": 6, "Conv2_2": 10, "Pool2": 12, "Conv3_3": 20, "Pool3": 24,
                                     "Conv4_3": 36, "Pool4": 44, "Conv5_3": 60, "Pool5": 76}}
