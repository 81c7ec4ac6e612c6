"""The study's library: what the commands in ``stages/`` call.

- ``study.config``, ``study.data``, ``study.figures``: params.yaml, the prepared CIFAR-10
  arrays, tables and figures;
- ``study.errors``, ``study.paths``, ``study.provenance``, ``study.processes``, ``study.files``,
  ``study.console``: a stage's plumbing, by what it does (errors, where files go, where results
  come from, pids, atomic writes, the process's exit and output);
- ``study.training``: the training loop and what it needs (device, batches, SGD, resume);
- ``study.tracking``: MLflow (the store, a run's name and life, its content, restore);
- ``study.analysis``: the report's analyses (run selection, claims, speed, JPEG cost,
  receptive fields, the signal at initialisation, the paper's values).
"""
