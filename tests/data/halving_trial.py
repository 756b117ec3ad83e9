"""A trial of the halving tests: its metric is a known function of its parameter and budget.

Arguments ``--x=X --epochs=E`` (E: the rung's budget). It resumes from ``counter.json`` in
``$NEXA_TRIAL_DIR`` (the epochs done so far), trains the remaining epochs, logs
``val_loss = (x - 3)^2 + 1 / (epoch + 1)`` per epoch to ``$NEXA_METRICS_FILE`` and saves the
counter with the epoch it started from in each rung, so a test can prove the resume.
``x = 3`` (the best configuration) fails with exit code 3: it must never be promoted.
In rung 0 it sleeps ``$HALVING_SLEEP x x`` seconds first, so that its trials end one after
another (cancel, interrupt and failure tests).
"""

import json
import os
import sys
import time

args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
x, epochs = float(args["x"]), int(args["epochs"])
folder = os.environ["NEXA_TRIAL_DIR"]
path = os.path.join(folder, "counter.json")
state = {"epochs_done": 0, "starts": [], "rungs": [], "trial": os.environ["NEXA_TRIAL_ID"]}
if os.path.exists(path):
    with open(path) as fh:
        state = json.load(fh)
if x == 3:
    print("x = 3: this trial fails", file=sys.stderr)
    sys.exit(3)
if os.environ["NEXA_RUNG"] == "0":
    time.sleep(float(os.environ.get("HALVING_SLEEP", "0")) * x)
state["starts"].append(state["epochs_done"])
state["rungs"].append(int(os.environ["NEXA_RUNG"]))
with open(os.environ["NEXA_METRICS_FILE"], "a") as out:
    for epoch in range(state["epochs_done"], epochs):
        out.write(json.dumps({"step": epoch, "val_loss": (x - 3) ** 2 + 1.0 / (epoch + 1)}) + "\n")
state["epochs_done"] = epochs
with open(path + ".tmp", "w") as fh:
    json.dump(state, fh)
os.replace(path + ".tmp", path)
print(f"trial {state['trial']} x={x}: epochs {state['starts'][-1]}..{epochs}")
