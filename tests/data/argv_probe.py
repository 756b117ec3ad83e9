"""Test program: writes the argv it received (and a few env vars, more named in $PROBE_ENV) to
$PROBE_DIR/<task>.json."""

import json
import os
import sys

out = os.environ["PROBE_DIR"]
index = os.environ.get("NEXA_TASK_INDEX", "x")
NAMES = ["CUDA_VISIBLE_DEVICES", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_JOB_ID", "NEXA_RUN_DIR"]
record = {
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "env": {k: os.environ.get(k) for k in NAMES + [n for n in os.environ.get("PROBE_ENV", "").split(",") if n]},
}
tmp = os.path.join(out, f".{index}.tmp")
with open(tmp, "w", encoding="utf-8") as fh:
    json.dump(record, fh)
os.replace(tmp, os.path.join(out, f"{index}.json"))
code = int(os.environ.get("PROBE_EXIT", "0"))
fail_on = os.environ.get("PROBE_FAIL_TASKS", "")
if index in fail_on.split(","):
    code = 3
sys.exit(code)
