"""Training: the loop (``engine``), the device and precision it runs with (``device``), the data
on the device and its augmentation (``batches``), the optimizer (``sgd``) and resume (``resume``).
Nothing here imports MLflow or DVC: the benchmarks run the same loop on a bare machine."""
