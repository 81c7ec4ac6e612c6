"""Set keys of params.yaml in place, as `dvc exp run -S` would, for device scripts:

    python benchmarks/set_params.py data.source=.device/gpu/cifar10-jpeg.tar.gz epochs=40
"""

import sys

import yaml

params = yaml.safe_load(open("params.yaml"))
for assignment in sys.argv[1:]:
    key, value = assignment.split("=", 1)
    *sections, name = key.split(".")
    target = params
    for section in sections:
        target = target[section]
    target[name] = yaml.safe_load(value)
with open("params.yaml", "w") as f:
    yaml.safe_dump(params, f, sort_keys=False)
