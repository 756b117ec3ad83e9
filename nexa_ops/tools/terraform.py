"""terraform: init, plan -destroy, show -json, apply of the saved plan, state pull and list
(each through proc.run).

Every call runs with ``-chdir=DIR``, ``-input=false`` where accepted, ``-no-color``, and an
environment that keeps terraform quiet and offline-friendly: ``CHECKPOINT_DISABLE=1`` (no
version check over the network) and ``TF_CLI_CONFIG_FILE=/dev/null`` unless the user has a
CLI config of their own (a missing one makes terraform warn on every call; a present one may
hold the provider mirror or credentials a teardown needs).
"""

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

from .. import proc
from ..errors import ToolError

HINT = "install terraform >= 1.4 (https://developer.hashicorp.com/terraform/install)"

#: terraform's error summaries -> what they mean for a teardown (first match wins).
CAUSES = (
    ("Failed to query available provider packages", "a provider could not be downloaded (no access to the registry?); "
     "pre-install it or configure a provider mirror"),
    ("Failed to install provider", "a provider could not be installed: pre-install it or configure a provider mirror"),
    ("Backend initialization required", "the backend is not initialised: run `terraform init` in the directory"),
    ("Inconsistent dependency lock file", "providers are not installed: run `terraform init` in the directory"),
    ("Required plugins are not installed", "providers are not installed: run `terraform init` in the directory"),
    ("Module not installed", "modules are not installed: run `terraform init` in the directory"),
    ("Error acquiring the state lock", "another terraform run holds the state lock"),
    ("No configuration files", "the directory has no terraform configuration (*.tf)"),
    ("Saved plan is stale", "the state changed after the plan was made and confirmed; nothing of it was applied: "
     "run the teardown again to see the new plan"),
)

#: Errors after which a fresh ``terraform init`` is worth one retry.
NEEDS_INIT = ("Backend initialization required", "Inconsistent dependency lock file", "Required plugins are not installed",
              "Module not installed", "please run \"terraform init\"")


def env() -> Dict[str, Optional[str]]:
    """Environment additions for every terraform call."""
    extra: Dict[str, Optional[str]] = {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
    if not _user_cli_config():
        extra["TF_CLI_CONFIG_FILE"] = os.devnull
    return extra


def _user_cli_config() -> bool:
    """The user has a CLI config file that exists (a set but missing one only makes terraform warn)."""
    chosen = os.environ.get("TF_CLI_CONFIG_FILE") or os.environ.get("TERRAFORM_CONFIG")
    if chosen:
        return os.path.isfile(chosen)
    return os.path.isfile(os.path.expanduser("~/.terraformrc"))


def explain(code: int, stderr: str) -> str:
    """terraform's first ``Error:`` summary, followed by what it means when nexa knows."""
    summary = ""
    for line in stderr.splitlines():
        line = line.strip(" │╷╵")
        if line.startswith("Error: "):
            summary = line[len("Error: "):].strip()
            break
    for needle, meaning in CAUSES:
        if needle in stderr:
            return f"{summary}: {meaning}" if summary else meaning
    return summary


def needs_init(error: ToolError) -> bool:
    return any(needle in error.stderr for needle in NEEDS_INIT)


def _run(tf_dir: str, args: List[str], *, capture: bool = True, extra_env: Optional[Mapping[str, Optional[str]]] = None,
         dry_run: bool = False) -> proc.Result:
    merged = env()
    merged.update(extra_env or {})
    return proc.run(["terraform", f"-chdir={tf_dir}", *args], env=merged, capture=capture, hint=HINT, explain=explain,
                    dry_run=dry_run)


def init(tf_dir: str) -> proc.Result:
    return _run(tf_dir, ["init", "-input=false", "-no-color"])


def plan_destroy(tf_dir: str, plan_file: str) -> proc.Result:
    """``plan -destroy -out=PLAN``; exit code 0 whether or not there is anything to destroy."""
    return _run(tf_dir, ["plan", "-destroy", "-input=false", "-no-color", f"-out={plan_file}"])


def show_plan(tf_dir: str, plan_file: str) -> Dict[str, Any]:
    out = _run(tf_dir, ["show", "-json", "-no-color", plan_file]).stdout or "{}"
    return json.loads(out)


def apply_argv(tf_dir: str, plan_file: str) -> List[str]:
    """``apply PLAN``: exactly the saved plan, no new planning and no prompt (a saved plan is
    its own approval; terraform refuses it when the state changed since it was made)."""
    return ["terraform", f"-chdir={tf_dir}", "apply", "-input=false", "-no-color", plan_file]


def apply_plan(tf_dir: str, plan_file: str, *, dry_run: bool = False) -> proc.Result:
    """Apply a saved plan; output streams to the terminal (a destroy can take minutes)."""
    return _run(tf_dir, apply_argv(tf_dir, plan_file)[2:], capture=False, dry_run=dry_run)


def state_version(tf_dir: str) -> Optional[Tuple[str, int]]:
    """``(lineage, serial)`` of the current state (``state pull``); None when there is none.
    Any write to the state changes it, so two equal answers mean an unchanged state."""
    out = (_run(tf_dir, ["state", "pull"]).stdout or "").strip()
    if not out:
        return None
    try:
        doc = json.loads(out)
        return str(doc["lineage"]), int(doc["serial"])
    except (ValueError, KeyError, TypeError):
        raise ToolError("terraform", ["terraform", f"-chdir={tf_dir}", "state", "pull"], 1, out[:200],
                        "state pull did not print a state with a lineage and a serial") from None


def state_list(tf_dir: str) -> List[str]:
    """Addresses still in the state ([] for an empty or absent state)."""
    try:
        result = _run(tf_dir, ["state", "list"])
    except ToolError as exc:
        if "No state file was found" in exc.stderr:
            return []
        raise
    return [line.strip() for line in (result.stdout or "").splitlines() if line.strip()]


def destroyed_addresses(plan_json: Mapping[str, Any]) -> List[str]:
    """Managed resources the plan would delete, in the plan's order (pure)."""
    out = []
    for change in plan_json.get("resource_changes") or []:
        if change.get("mode", "managed") != "managed":
            continue
        if "delete" in (change.get("change") or {}).get("actions", []):
            out.append(change["address"])
    return out
