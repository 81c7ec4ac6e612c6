# Sourced by the device scripts, with PY set: dvc.yaml runs `python -m stages...` and DVC's queue
# starts its workers as `dvc`, so make both this interpreter's, as wrappers (a symlink would leave
# a venv) in a fresh folder (writing into an old one could go through a link left there and
# overwrite an interpreter).
where() { "$1" -c 'import sys; print(sys.prefix)' 2>/dev/null; }
if [ "$(where python)" != "$(where $PY)" ] || ! command -v dvc > /dev/null; then
  BIN=$(mktemp -d)
  printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v $PY)" > $BIN/python
  printf '#!/bin/sh\nexec %s -m dvc "$@"\n' "$(command -v $PY)" > $BIN/dvc
  chmod +x $BIN/python $BIN/dvc && export PATH=$BIN:$PATH
fi
