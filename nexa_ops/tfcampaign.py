"""Which campaign a Terraform folder belongs to: the guard that keeps ``nexa teardown
--campaign A`` from destroying campaign B's folder (and recording it as A's).

A folder belongs to campaign C when

- its configuration declares ``variable "campaign"`` and its variable files
  (``terraform.tfvars``, ``terraform.tfvars.json``, ``*.auto.tfvars``, ``*.auto.tfvars.json``)
  set ``campaign = "C"`` (all of those that set it agree), or
- nexa.toml maps C to it (``[teardown] dirs = { C = "DIR" }`` or ``[teardown.C] tf_dir``),
  and its files do not say it is another campaign's.

Anything else is a refusal: a folder that declares another campaign, declares none, sets
conflicting values, or has a file this reader cannot read exactly (``nexa_ops.hcl``). After
``terraform plan``, the value terraform itself resolved (the plan's ``variables``) must
agree too. Reading the files is the only I/O; the decisions are pure.
"""

import json
import os
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple

from . import hcl
from .config import NexaConfig
from .errors import Refused
from .structs import frozen

VARIABLE = "campaign"


@frozen
class FolderCampaign:
    """What a Terraform folder's own files say about its campaign."""

    campaign: Optional[str]  # the campaign its files set; None when they set none or are unreadable
    declared: bool = False  # a *.tf file declares variable "campaign"
    settings: List[Tuple[str, str]] = field(default_factory=list)  # (file[:line], value) for each file that sets it
    problem: str = ""  # why campaign is None


def _terraform_file(name: str) -> bool:
    """Files terraform reads; it skips hidden files and editor backups."""
    return not (name.startswith(".") or name.endswith("~") or (name.startswith("#") and name.endswith("#")))


def variable_files(names: List[str]) -> List[str]:
    """The variable files terraform loads by itself, in its order of precedence."""
    auto = sorted(n for n in names if _terraform_file(n) and n.endswith((".auto.tfvars", ".auto.tfvars.json")))
    return [n for n in ("terraform.tfvars", "terraform.tfvars.json") if n in names] + auto


def read_folder(folder: Path) -> FolderCampaign:
    """Read ``folder``'s configuration and variable files (only the top level, like terraform)."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    declared = False
    settings: List[Tuple[str, str]] = []
    try:
        for name in names:
            if not _terraform_file(name):
                continue
            if name.endswith(".tf"):
                declared = VARIABLE in _hcl(hcl.declared_variables, folder / name) or declared
            elif name.endswith(".tf.json"):
                declared = _json_declares(_json(folder / name), name) or declared
        for name in variable_files(names):
            if name.endswith(".json"):
                doc = _json(folder / name)
                if not isinstance(doc, dict):
                    raise _Unreadable(name, "expected a JSON object")
                value = doc.get(VARIABLE)
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise _Unreadable(name, f"{VARIABLE} must be a string")
                settings.append((name, value))
            else:
                found = _hcl(hcl.string_attribute, folder / name, VARIABLE)
                if found is not None:
                    settings.append((f"{name}:{found[1]}", found[0]))
    except _Unreadable as exc:
        return FolderCampaign(None, declared, problem=str(exc))
    return decide(declared, settings)


def decide(declared: bool, settings: List[Tuple[str, str]]) -> FolderCampaign:
    """The folder's campaign from what its files declare (pure)."""
    values = sorted({value for _, value in settings})
    if not declared and not settings:
        return FolderCampaign(None, False, settings, f'it declares no variable "{VARIABLE}"')
    if not declared:
        where = ", ".join(f for f, _ in settings)
        return FolderCampaign(None, False, settings, f'{where} sets {VARIABLE} but no *.tf file declares variable "{VARIABLE}"')
    if not settings:
        return FolderCampaign(
            None, True, settings, f'it declares variable "{VARIABLE}" but no terraform.tfvars or *.auto.tfvars sets it'
        )
    if len(values) > 1:
        said = ", ".join(f"{v!r} ({f})" for f, v in settings)
        return FolderCampaign(None, True, settings, f"its variable files set different campaigns: {said}")
    return FolderCampaign(values[0], True, settings)


def check_folder(campaign: str, folder: Path, found: FolderCampaign, mapped: Optional[str]) -> None:
    """Refuse unless ``folder`` is ``campaign``'s. ``mapped`` names the nexa.toml key that maps
    ``campaign`` to this folder (None when nexa.toml does not)."""
    head = f"refusing to tear down {folder} as campaign {campaign!r}"
    if found.campaign is not None and found.campaign != campaign:
        where = ", ".join(f for f, _ in found.settings)
        also = f", although {mapped} maps it to {campaign!r}" if mapped else ""
        raise Refused(f"{head}: it declares campaign {found.campaign!r} ({where}: {VARIABLE} = {found.campaign!r}){also}")
    if found.campaign == campaign or mapped:
        return
    raise Refused(
        f"{head}: {found.problem}; set {VARIABLE} = \"{campaign}\" in its terraform.tfvars (with variable \"{VARIABLE}\" "
        f"declared), or map it in nexa.toml: [teardown] dirs = {{ {campaign} = \"DIR\" }}"
    )


def check_plan(campaign: str, folder: Path, plan_json: Mapping[str, Any], found: FolderCampaign) -> None:
    """Terraform's own reading of the folder (``show -json`` of the plan) must agree: the
    ``campaign`` it resolved is ``campaign``, and it resolved one when the files set it."""
    head = f"refusing to tear down {folder} as campaign {campaign!r}"
    variables = plan_json.get("variables")
    entry = variables.get(VARIABLE) if isinstance(variables, dict) else None
    if entry is None:
        if found.campaign is not None:
            raise Refused(f'{head}: its files set {VARIABLE} = {found.campaign!r} but terraform\'s plan has no variable "{VARIABLE}"')
        return
    value = entry.get("value") if isinstance(entry, dict) else None
    if value != campaign:
        raise Refused(f"{head}: terraform's plan resolves {VARIABLE} = {value!r}")


class _Unreadable(Exception):
    """A file this reader cannot read exactly: the folder's campaign is unknown."""

    def __init__(self, name: str, detail: str):
        super().__init__(f"cannot read {name} exactly ({detail})")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _Unreadable(path.name, str(getattr(exc, "strerror", None) or exc)) from None


def _hcl(reader: Callable[..., Any], path: Path, *args: Any) -> Any:
    try:
        return reader(_read(path), *args)
    except hcl.HclError as exc:
        raise _Unreadable(path.name, str(exc)) from None


def _json(path: Path) -> Any:
    try:
        return json.loads(_read(path))
    except ValueError as exc:
        raise _Unreadable(path.name, f"invalid JSON: {exc}") from None


def _json_declares(doc: Any, name: str) -> bool:
    """``{"variable": {"campaign": {...}}}`` (or a list of such objects) in a ``.tf.json`` file."""
    if not isinstance(doc, dict):
        raise _Unreadable(name, "expected a JSON object")
    blocks = doc.get("variable")
    if blocks is None:
        return False
    for block in blocks if isinstance(blocks, list) else [blocks]:
        if not isinstance(block, dict):
            raise _Unreadable(name, "variable must be an object")
        if VARIABLE in block:
            return True
    return False


def same_folder(a: Path, b: Path) -> bool:
    """Two paths name the same folder (symlinks and ``..`` resolved)."""
    try:
        return os.path.samefile(str(a), str(b))
    except OSError:
        return False


def mapped_key(cfg: NexaConfig, campaign: str, folder: Path) -> Optional[str]:
    """The nexa.toml key that maps ``campaign`` to ``folder`` (``FILE: teardown.dirs.C`` or
    ``FILE: teardown.C.tf_dir``), or None when nexa.toml maps it elsewhere or not at all."""
    where = str(cfg.path) if cfg.path else "nexa.toml"
    if campaign in cfg.teardown_dirs:
        candidate, key = cfg.teardown_dirs[campaign], f"{where}: teardown.dirs.{campaign}"
    elif campaign in cfg.teardown:
        candidate, key = cfg.teardown[campaign].tf_dir, f"{where}: teardown.{campaign}.tf_dir"
    else:
        return None
    return key if same_folder(cfg.root / os.path.expanduser(candidate), folder) else None


def evidence(found: FolderCampaign, mapped: Optional[str]) -> str:
    """Why the folder was taken for the campaign, for the teardown manifest."""
    said = [f"{where}: {VARIABLE} = {value!r}" for where, value in found.settings] if found.campaign else []
    return "; ".join(said + ([mapped] if mapped else []))
