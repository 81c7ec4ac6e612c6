"""The metrics of a training, named once. The engine computes them; every writer (history.csv,
metrics.json, the MLflow run and its restore) and every reader (the report, the benchmarks)
takes the names from here, so a new metric is one name here and its computation in the engine.
An evaluation's metrics need no list: every number the evaluate stage writes reaches MLflow
under ``eval/`` (study/tracking/content.py).
"""

from __future__ import annotations

# per epoch: the engine's record of each epoch, history.csv's columns after "epoch", one MLflow step each
EPOCH_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time_s")
HISTORY_COLUMNS = ("epoch", *EPOCH_METRICS)
# per training: the engine's summary, logged to MLflow at step 0
SUMMARY_METRICS = ("final_test_acc", "best_test_acc", "final_train_loss", "mean_epoch_time_s",
                   "mean_epoch_time_s_after_first", "num_parameters")
# what metrics.json (DVC's metrics) holds of the summary: the columns `dvc exp show` fits in a terminal
METRICS_JSON = ("final_test_acc", "best_test_acc", "final_train_loss", "mean_epoch_time_s", "num_parameters")
