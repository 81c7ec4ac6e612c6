# Sourced by the device scripts, with PY set: dvc.yaml runs `python -m stages...`, so make
# `python` this interpreter, as a wrapper (a symlink would leave a venv) in a fresh folder
# (writing into an old one could go through a link left there and overwrite an interpreter).
where() { "$1" -c 'import sys; print(sys.prefix)' 2>/dev/null; }
if [ "$(where python)" != "$(where $PY)" ]; then
  BIN=$(mktemp -d)
  printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v $PY)" > $BIN/python
  chmod +x $BIN/python && export PATH=$BIN:$PATH
fi
