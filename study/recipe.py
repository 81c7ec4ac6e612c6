"""The study's recipe as the paper states it (section 5.1; PyTorch's default init, SGD with
momentum), in a module of its own so that the training depends on it and not on the paper's
tables. params.yaml runs exactly it (a test holds the two equal); what sets a run apart from it
(its name), the engine's defaults and the experiment's description are read from here.
"""

RECIPE = {"batch_size": 128, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "init": "default", "optimizer": "sgd"}
EPOCHS = (5, 40)  # the study's short and long runs
