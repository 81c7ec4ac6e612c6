"""The networks as data plus one builder: the study's four (section 2 of the study) and
ResNet-18 for CIFAR, which extends it.

Every model is ``features`` (convolutions and pooling) then ``classifier`` (fully
connected layers), the torchvision layout, so analyses such as filter plots and the signal
at initialisation walk any of them without per-architecture code. The registry lives in
``models.architectures`` (torch-free: a stage that only names or counts networks never imports
torch), the builder in ``models.network``.
"""
