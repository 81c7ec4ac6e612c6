"""MLflow: the store (``store``), a training run's name and tags (``naming``), its life from open
to end (``runs``), what else it holds (``content``, ``model_log``), the helper process that keeps
MLflow out of the training's process (``process``), and a run logged again from a training's
record when the store lacks it (``restore``)."""
