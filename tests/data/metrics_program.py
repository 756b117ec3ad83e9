"""A training stand-in whose metrics follow from its parameters, so tests know the winner.

    python metrics_program.py --lr=1e-3 --layers=4 --marks=DIR

loss(step) = (log10(lr) + 3)^2 + 0.1 * (4 - layers) + 1/step, steps 1..3; acc = 1 / (1 + loss).
The best configuration is lr=1e-3, layers=4 (last loss 1/3). Special cases, by parameters:

- lr=0.1, layers=2: exits 0 without reporting anything;
- lr=0.1, layers=4: fails (exit 3) before reporting anything;
- lr=0.01, layers=2: garbage among its lines (not JSON, NaN, not an object, a half-written
  last line: 4 bad lines) and a dip: loss 0.5, 0.05, 3.0 (best over steps 0.05, last 3.0);
- any task's second attempt (a requeue; attempts are counted in DIR/<task>.attempts)
  resumes from its step-2 checkpoint: steps 2..5 with 1/step halved (lr=1e-4, layers=4:
  last loss 1.1 instead of 1.333...).
"""

import json
import math
import os
import sys

opts = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
lr, layers = float(opts["lr"]), int(opts["layers"])
task = os.environ["NEXA_TASK_INDEX"]
path = os.environ["NEXA_METRICS_FILE"]
with open(os.path.join(opts["marks"], task + ".attempts"), "a") as fh:
    fh.write("x")
with open(os.path.join(opts["marks"], task + ".attempts")) as fh:
    attempt = len(fh.read())


def write(text):
    with open(path, "a") as fh:
        fh.write(text)


if lr == 0.1 and layers == 2:
    print("no metrics from this one")
    sys.exit(0)
if lr == 0.1 and layers == 4:
    print("diverged before the first report", file=sys.stderr)
    sys.exit(3)
if lr == 0.01 and layers == 2:
    write(json.dumps({"step": 1, "loss": 0.5, "acc": 0.6}) + "\nnot json at all\n")
    write('{"step": 2, "loss": NaN}\n[1, 2]\n')
    write(json.dumps({"step": 2, "loss": 0.05, "acc": 0.9}) + "\n" + json.dumps({"step": 3, "loss": 3.0, "acc": 0.25}) + "\n")
    write('{"step": 4, "lo')
    sys.exit(0)
base = (math.log10(lr) + 3) ** 2 + 0.1 * (4 - layers)
steps, scale = (range(1, 4), 1.0) if attempt == 1 else (range(2, 6), 0.5)
for step in steps:
    loss = base + scale / step
    write(json.dumps({"step": step, "loss": loss, "acc": 1 / (1 + loss), "phase": f"attempt {attempt}"}) + "\n")
print(f"task {task} attempt {attempt}: loss {loss:.4f}")
