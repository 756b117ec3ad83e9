"""A stand-in training program for the quick start: a few 'epochs' of a fake loss curve.

It takes the sweep's arguments like a real trainer (argparse), so what it prints shows that
every task got its own values, and it reports its metrics the way `nexa results` reads them:
one JSON line per epoch appended to $NEXA_METRICS_FILE (here with nexa's stdlib-only helper;
`echo '{"loss": 0.3}' >> "$NEXA_METRICS_FILE"` from any language does the same).
"""

import argparse
import math
import os

from nexa_ops.metrics import log

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--batch_size", type=int, required=True)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--dropout", type=float, default=0.0)
parser.add_argument("--optimizer", default="adam")
args = parser.parse_args()

loss = 2.5
for epoch in range(1, args.epochs + 1):
    loss *= 1 - min(0.9, args.lr * 5) * (0.9 if args.optimizer == "adam" else 0.7) / (1 + args.batch_size / 64)
    loss += args.dropout * 0.05
    log(step=epoch, loss=round(loss, 6), ppl=round(math.exp(loss), 4))
task = os.environ.get("NEXA_TASK_INDEX", "?")
print(f"task {task}: lr={args.lr} batch_size={args.batch_size} optimizer={args.optimizer} "
      f"dropout={args.dropout:.3f} final_loss={loss:.4f} ppl={math.exp(loss):.2f}")
