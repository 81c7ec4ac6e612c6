# Installs the carried wheels (benchmarks/device/device_carry.sh) into the device machine's python3:
# .device/wheels/mlflow (mlflow-skinny, the server's flask and flask-cors, sqlalchemy, alembic) and
# .device/wheels/dvc (dvc), whichever of the two is here. Sourced by device_setup.sh; run alone, as
# calls of their own, when the wheels and the mirror do not fit one call's carry (the next call
# must find the machine warm):
#   device tool: carry [".device/wheels/mlflow"], command: bash benchmarks/device/device_install.sh
#   device tool: carry [".device/wheels/dvc"], command: bash benchmarks/device/device_install.sh
PY=${PY:-python3}
W=.device/wheels
[ -d $W/mlflow ] && $PY -m pip install -q --no-index --find-links $W/mlflow mlflow-skinny==3.17.2 sqlalchemy \
  alembic flask flask-cors 2>&1 | tail -3
[ -d $W/dvc ] && $PY -m pip install -q --no-index --find-links $W/dvc $([ -d $W/mlflow ] && echo --find-links $W/mlflow) \
  dvc==3.67.1 2>&1 | tail -3
$PY -c 'import mlflow; print("installed: mlflow", mlflow.__version__)' 2>/dev/null || echo "mlflow: not installed yet"
$PY -c 'import dvc; print("installed: dvc", dvc.__version__)' 2>/dev/null || echo "dvc: not installed yet"
