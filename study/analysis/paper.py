"""The values the study publishes, in one place (the paper's Tables 1 and 5-7), and its names."""

EPOCHS = (5, 40)  # the study's short and long runs
DEPTH = {"alexnet": "5+3", "vgg16": "13+3", "vgg16_bn": "13+3", "vgg8": "8+2"}
PARAMS_M = {"alexnet": 23.2, "vgg16": 33.6, "vgg16_bn": 33.6, "vgg8": 13.1}
# test accuracy (%) after (5, 40) epochs, Table 5
ACCURACY = {"alexnet": (56.84, 87.81), "vgg16": (10.00, 10.00), "vgg16_bn": (83.86, 91.94), "vgg8": (27.75, 88.32)}
# mean seconds per epoch in the (5, 40)-epoch runs, Table 6
SECONDS = {"alexnet": (25.48, 36.09), "vgg16": (30.89, 47.08), "vgg16_bn": (31.55, 50.20), "vgg8": (25.13, 37.97)}
# parameters per percentage point of 40-epoch accuracy, thousands, Table 7
PER_POINT_K = {"alexnet": 264, "vgg16": 3360, "vgg16_bn": 366, "vgg8": 148}
# the networks' names as the study writes them
NAMES = {"alexnet": "AlexNet", "vgg16": "VGG-16", "vgg16_bn": "VGG-16 with BN", "vgg8": "VGG-8"}
