"""A stage's process, end to end: its one-line errors and exit statuses, its output with
every URL's password left out, its words for counts.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import sys

from study.errors import Interrupted, StageError, Terminated


def plural(n: int, noun: str) -> str:
    """``1 epoch``, ``2 epochs``: a count in words, for messages and titles."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# a URL's user information: http://alice:password@host -> http://host. Up to the last "@" of the URL,
# whatever the password holds ("/", "@", ":"): a path with an "@" loses its host too, never a secret.
# A network URL made a path keeps one slash (Path("https://u:p@host/x") is "https:/u:p@host/x"), and its
# secret: those schemes with one slash too (not models:/name@alias, which holds none)
USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://|(?:https?|s?ftp|ssh|s3|gs|postgres(?:ql)?|mysql):/)[^\s'\"<>]*@")


def redact(text: str) -> str:
    """``text`` with every URL's user information left out: a tracking URI may carry a password
    (http://user:password@host), and nothing the project prints may."""
    return USERINFO.sub(r"\1", text)


class RedactedStream:
    """A text stream that writes through ``redact``: the stage's own lines, MLflow's and tqdm's."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(redact(text))
        return len(text)

    def __getattr__(self, name):
        return getattr(self.stream, name)


def protect_output() -> None:
    """No secret in any output of this process: stdout and stderr redacted, and MLflow's own
    "View run" lines (the URI as given) left out; the stages print their own line instead."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactedStream):
            setattr(sys, name, RedactedStream(stream))


def run_main(func) -> None:
    """Run a stage's work and end the process: a StageError becomes one line on stderr and exit
    status 1, an interrupt 130 (143 for SIGTERM). Nothing it prints carries a URL's password."""
    def on_sigterm(signum, frame):
        raise Terminated()

    protect_output()

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        func()
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        exit_now(1)
    except Interrupted as err:
        print(err, file=sys.stderr)
        exit_now(err.exit_code)
    except KeyboardInterrupt as err:
        print("interrupted: this stage's outputs were not written; rerun the same command to start it again",
              file=sys.stderr)
        exit_now(143 if isinstance(err, Terminated) else 130)
    exit_now(0)


def exit_now(code: int) -> None:
    """End the process once its work is done, without tearing the interpreter down: the exit
    handlers run and the streams are flushed, but the teardown of the modules (a second or more
    with torch, MLflow and matplotlib loaded) is skipped. Every output is
    written and closed by now; MLflow's calls are synchronous. Threads still running are not
    waited for: a stage waits for its own first (the training for its state save, on every path
    out). Waiting for every thread that is not a daemon could hang on a thread pool's idle worker."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
