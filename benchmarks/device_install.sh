# Installs the carried wheels (.device/wheels, from benchmarks/device_carry.sh) into the device
# machine's python3: what it lacks for the pipeline (mlflow-skinny, the server's flask, flask-cors,
# sqlalchemy and alembic, dvc). Sourced by device_setup.sh; run alone as a call of its own when the
# wheels and the mirror do not fit one call's carry (the next call must find the machine warm):
#   device tool: carry [".device/wheels"], command: bash benchmarks/device_install.sh
${PY:-python3} -m pip install -q --no-index --find-links .device/wheels mlflow-skinny==3.17.2 sqlalchemy alembic \
  flask flask-cors dvc==3.67.1 2>&1 | tail -3
${PY:-python3} -c 'import mlflow, dvc, flask_cors; print("installed: mlflow", mlflow.__version__, "dvc", dvc.__version__)'
