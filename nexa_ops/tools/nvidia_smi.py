"""``nvidia-smi``: which GPUs this machine has (for local runs' ``CUDA_VISIBLE_DEVICES``)."""

import re
from typing import List

from .. import proc

HINT = "the NVIDIA driver's tool; without it, set CUDA_VISIBLE_DEVICES to the GPUs to use"
NO_DEVICES = 6  # nvidia-smi's exit code for "No devices were found"


def parse_list(text: str) -> List[str]:
    """The GPU indices in ``nvidia-smi -L`` output: ``GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-...)``
    per GPU (MIG devices, indented below their GPU, are not GPUs of their own here)."""
    return [m.group(1) for m in re.finditer(r"^GPU (\d+): ", text, re.MULTILINE)]


def list_gpus() -> List[str]:
    """This machine's GPU indices (``nvidia-smi -L``); [] when it finds no devices.

    Raises:
        ToolMissing: no nvidia-smi on PATH. ToolError: it failed (no driver loaded...).
    """
    result = proc.run(["nvidia-smi", "-L"], hint=HINT, success_codes=(0, NO_DEVICES), timeout=60)
    return parse_list(result.stdout or "") if result.returncode == 0 else []
