"""MLflow in a helper process beside the train and evaluate stages.

Importing MLflow takes seconds of one core (torch.export, for the model log, as long again);
a stage's own process spends as long importing torch and loading its model and data.
Started before torch is imported, a helper does the first while the stage does the
second, on the machine's second core, and the training process never imports MLflow.

The training sends its epochs as they end, without waiting, and says at the end how its
run ends (``runs.end_status``). Ctrl-C and SIGTERM reach the stage's process, which
decides; a helper ignores them. If the training process dies (SIGKILL), its helper exits
too and leaves the run RUNNING, for the next start's sweep, as a killed training always did.
If the helper dies, the training goes on and ends as with a store gone away
(``runs.TrackingOffline``): its state kept, for the rerun to log without training again.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from study.console import exit_now, protect_output
from study.errors import StageError


class RemoteRun:
    """The training's side of its run: the interface of ``runs.TrainingRun``."""

    def __init__(self, helper: TrackingProcess, run_id: str):
        self.helper, self.run_id = helper, run_id
        self.lost = False

    def log_epoch(self, record: dict) -> None:
        """Sent without waiting: the helper logs it while the next epoch trains. A helper gone
        does not stop the training: the epochs are in its saved state, for the next start."""
        if self.lost:
            return
        try:
            self.helper.send("epoch", record)
        except StageError as err:
            self.lost = True
            print(f"warning: {err}; training goes on, and its epochs go to MLflow at the next start",
                  file=sys.stderr)

    def finish(self, record: dict, artifacts: list[Path]) -> None:
        from study.tracking.runs import TrackingOffline

        try:
            self.helper.request("finish", (record, [str(Path(path).resolve()) for path in artifacts]))
        except TrackingOffline:
            raise
        except StageError as err:  # the helper is gone: as with a store gone, the rerun logs it
            raise TrackingOffline(
                f"{err}, so MLflow run {self.run_id} is not complete; the training is saved locally "
                f"(outputs/{record['recipe']['model']} and its training state): rerun `dvc repro` to log it "
                "without training again") from err


class Helper:
    """A process beside the stage's own, on a pipe: ``send`` without waiting, ``request`` and
    wait for the answer; ``close`` last (it exits once its end of the pipe closes)."""

    def __init__(self, target, *args):
        # a fresh interpreter: a fork of a process that holds torch's threads can deadlock
        context = multiprocessing.get_context("spawn")
        self.conn, theirs = context.Pipe()
        self.process = context.Process(target=target, args=(theirs, *args), name="mlflow-helper")
        self.process.start()
        theirs.close()
        self.used = False  # whether it was ever asked to touch the store

    def send(self, kind: str, payload=None) -> None:
        self.used = True
        try:
            self.conn.send((kind, payload))
        except OSError as err:
            raise self._gone() from err

    def request(self, kind: str, payload=None, timeout: float | None = None):
        """Send, then wait for the answer to this request (an error it raised is raised here)."""
        self.send(kind, payload)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while not self.conn.poll(1.0):
                if not self.process.is_alive():
                    raise self._gone()
                if deadline is not None and time.monotonic() > deadline:
                    raise StageError(f"the helper process that does this stage's MLflow logging did not answer "
                                     f"{kind!r} within {timeout:g} s")
            try:
                answered, result = self.conn.recv()
            except (EOFError, OSError) as err:
                raise self._gone() from err
            if answered == "error":
                raise result
            if answered == kind:
                return result
            # else the answer to a request that Ctrl-C cut short: not this one's

    def _gone(self) -> BaseException:
        with contextlib.suppress(EOFError, OSError):  # the error it sent before it went
            while self.conn.poll(0):
                answered, result = self.conn.recv()
                if answered == "error":
                    return result
        self.process.join(5)
        return StageError(f"the helper process that does this stage's MLflow logging exited (code "
                          f"{self.process.exitcode})")

    def close(self) -> None:
        """The helper exits once its end of the pipe closes; a hung one is stopped, and one that
        never touched the store (the stage failed first) is not waited for."""
        self.conn.close()
        self.process.join(30 if self.used else 0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class TrackingProcess(Helper):
    """The training's run: start it first thing; ``connect`` once the inputs pass;
    ``training_run`` then opens the run through it."""

    def __init__(self, experiment: str, system_metrics: bool = False):
        super().__init__(serve, experiment, system_metrics, os.getpid())
        self.experiment = experiment

    def connect(self) -> None:
        """Let the helper open the store (creating it if new): called once the training's own
        inputs (data, device) have passed, so a bad one leaves no store behind."""
        self.send("connect")

    @contextlib.contextmanager
    def training_run(self, record: dict, history: list[dict], log=print) -> Iterator[RemoteRun]:
        """The run opened (or reopened), then ended as the training ended (``runs.end_status``)."""
        from study.tracking.runs import end_status

        opened, run_id = False, None
        try:
            run_id, lines = self.request("open", (record, history))
            opened = True
            for line in lines:
                log(line)
            yield RemoteRun(self, run_id)
        except BaseException as err:
            if opened or isinstance(err, KeyboardInterrupt):  # Ctrl-C while it opened: it ends KILLED
                self._end(run_id if opened else None, *end_status(err))
            raise
        self._end(run_id, *end_status(None))

    def _end(self, run_id: str | None, status: str | None, why: str | None) -> None:
        if self.process.is_alive():
            try:  # bounded: a Ctrl-C inside a pipe read may have left the pipe out of step
                self.request("end", (status, why), timeout=60)
                return
            except StageError:
                self.process.kill()
                self.process.join()
        if status is None or run_id is None:
            return
        # the helper is gone: end the run from here (MLflow's import, on this rare path only), or the
        # next start's sweep would mark a finished or failed training's run KILLED
        from study.tracking.runs import end_training_run
        from study.tracking.store import connect

        try:
            client, _ = connect(self.experiment, create=False)
        except StageError as err:
            print(f"warning: could not mark MLflow run {run_id} {status} ({err})", file=sys.stderr)
            return
        end_training_run(client, run_id, status, why)


def serve(conn, experiment: str, system_metrics: bool, owner_pid: int) -> None:
    """The helper: import MLflow while the training loads, connect and open the run when it
    says, log the epochs it sends, end the run as it says; exit, leaving the run as it is,
    when the training goes away."""
    ignore_interrupts()
    protect_output()  # a spawned process: its own streams
    from study.tracking import runs, store
    from study.tracking.content import system_metrics as sampling

    try:
        store.preload()
        receive(conn)  # "connect"
        client, experiment_id = store.connect(experiment)
        kind, payload = receive(conn)
        if kind != "open":  # Ctrl-C before the training asked for its run: nothing to open or end
            exit_now(0)
        record, history = payload
        lines: list[str] = []
        run = runs.open_training_run(client, experiment_id, record, history, log=lines.append,
                                         owner_pid=owner_pid)
    except BaseException as err:
        reply(conn, "error", portable(err))
        exit_now(0)
    reply(conn, "open", (run.run_id, lines))
    with sampling(run.run_id, system_metrics):
        while (message := receive(conn))[0] != "end":
            kind, payload = message
            if kind == "epoch":
                run.log_epoch(payload)  # never raises: a store gone away keeps them for later
            elif kind == "finish":
                try:
                    run.finish(payload[0], [Path(path) for path in payload[1]])
                except BaseException as err:
                    reply(conn, "error", portable(err))
                else:
                    reply(conn, "finish", None)
    runs.end_training_run(client, run.run_id, *message[1])
    reply(conn, "end", None)
    exit_now(0)  # nothing left to do: the training process need not wait for a teardown


def ignore_interrupts() -> None:
    """Ctrl-C and SIGTERM reach the whole process group: the stage's own process decides what
    they mean (a training's run ends KILLED), so a helper must not die of them first."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def receive(conn):
    try:
        return conn.recv()
    except (EOFError, OSError):
        os._exit(0)  # the stage's process is gone (a training's run: the next start sweeps or resumes it)


def reply(conn, kind: str, result) -> None:
    try:
        conn.send((kind, result))
    except OSError:
        os._exit(0)


def portable(err: BaseException) -> BaseException:
    """``err`` as it can cross to the training process: a StageError says what to do."""
    if isinstance(err, StageError):
        with contextlib.suppress(Exception):
            pickle.loads(pickle.dumps(err))
            return err
    return StageError(f"MLflow: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}")
