"""The study's library: what the commands in ``stages/`` call.

- ``study.config``, ``study.data``, ``study.common``, ``study.figures``: params.yaml, the
  prepared CIFAR-10 arrays, shared plumbing (errors, paths, atomic writes), plot helpers;
- ``study.training``: the training loop and what it needs (device, batches, SGD, resume);
- ``study.tracking``: MLflow (the store, a run's name and life, its content, restore);
- ``study.analysis``: the report's analyses (run selection, claims, speed, JPEG cost,
  receptive fields, the signal at initialisation, the paper's values).
"""
