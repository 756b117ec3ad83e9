"""``nexa teardown``: destroy a campaign's ephemeral infrastructure with terraform.

Order: resolve the campaign's terraform directory -> ``plan -destroy -out=FILE``, shown with
the addresses and their count (``init`` first when terraform says the directory needs it) ->
confirm (TTY prompt or ``yes``; no TTY and no ``yes`` is a refusal) -> ``apply FILE``: exactly
the saved plan that was shown and confirmed, never a new plan (a state changed since is a
refusal) -> a teardown manifest under ``<runs>/manifests/`` (what the plan held and what left
the state) -> the campaign's spend from the cost manifests. ``dry_run`` stops after the plan.
"""

import hashlib
import os
import socket
import sys
import tempfile
import time
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, TextIO

from . import __version__, runs, tfcampaign
from .config import NAME_RE, NexaConfig, load_config
from .cost.report import campaign_spend
from .errors import ConfigError, NexaError, Refused, ToolError
from .fs import atomic_write_json
from .structs import mutable
from .tools import terraform as tf

MANIFEST_SCHEMA = "nexa.teardown/1"
MANIFEST_DIR = "manifests"

Confirm = Callable[[str, Sequence[str]], bool]


@mutable
class TeardownResult:
    """What a teardown found and did."""

    campaign: str
    tf_dir: str
    planned: List[str] = field(default_factory=list)  # addresses `plan -destroy` would remove
    destroyed: List[str] = field(default_factory=list)
    remaining: List[str] = field(default_factory=list)  # still in the state afterwards
    dry_run: bool = False
    initialised: bool = False  # this run had to `terraform init` first
    terraform_exit_code: Optional[int] = None  # of `apply PLAN`; None when it did not run
    plan_sha256: str = ""  # of the saved plan file that was shown, confirmed and applied
    campaign_source: str = ""  # why the folder is the campaign's (its tfvars, a nexa.toml key)
    manifest: Optional[Path] = None
    spend: Any = None  # nexa_ops.costs.CampaignSpend, when the cost module is there
    spend_note: str = ""
    plan_output: str = ""


def resolve_tf_dir(cfg: NexaConfig, campaign: str, tf_dir: Optional[str]) -> Path:
    """``tf_dir`` (relative to the current folder) or ``[teardown.<campaign>] tf_dir`` (relative
    to nexa.toml's folder); must exist and hold terraform files."""
    where = cfg.where
    if tf_dir:
        folder = Path(tf_dir).expanduser()
        source = "--tf-dir"
    elif campaign in cfg.teardown_dirs:
        folder = cfg.root / Path(cfg.teardown_dirs[campaign]).expanduser()
        source = f"{where}: teardown.dirs.{campaign}"
    elif campaign in cfg.teardown:
        folder = cfg.root / Path(cfg.teardown[campaign].tf_dir).expanduser()
        source = f"{where}: teardown.{campaign}.tf_dir"
    else:
        known = ", ".join(sorted(set(cfg.teardown) | set(cfg.teardown_dirs))) or "none"
        raise ConfigError(
            f"no terraform directory for campaign {campaign!r}: pass --tf-dir DIR or add [teardown.{campaign}] tf_dir = \"...\" "
            f"(campaigns configured: {known})",
            where,
        )
    folder = folder.resolve()
    if not folder.is_dir():
        raise ConfigError(f"terraform directory {str(folder)!r} does not exist ({source})")
    if not any(p.name.endswith((".tf", ".tf.json")) for p in folder.iterdir()):
        raise ConfigError(f"terraform directory {str(folder)!r} has no *.tf files ({source})")
    return folder


def manifest_path(runs_dir: Path, campaign: str, when: float) -> Path:
    """``<runs>/manifests/teardown_<campaign>_<UTC yyyymmddTHHMMSSZ>.json``, never overwriting."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    folder = runs_dir / MANIFEST_DIR
    path = folder / f"teardown_{campaign}_{stamp}.json"
    n = 2
    while path.exists():
        path = folder / f"teardown_{campaign}_{stamp}-{n}.json"
        n += 1
    return path


def tty_confirm(campaign: str, addresses: Sequence[str]) -> bool:
    """Ask on the terminal; without one, refuse (a script must say --yes)."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise Refused(
            f"refusing to destroy {len(addresses)} resource(s) of campaign {campaign!r} without confirmation: "
            "no terminal to ask on; pass --yes"
        )
    sys.stderr.write(f"Destroy {len(addresses)} resource(s) of campaign {campaign!r}? Type 'yes' to confirm: ")
    sys.stderr.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def teardown(
    campaign: str,
    *,
    tf_dir: Optional[str] = None,
    yes: bool = False,
    dry_run: bool = False,
    config: Optional[NexaConfig] = None,
    confirm: Optional[Confirm] = None,
    out: Optional[TextIO] = None,
) -> TeardownResult:
    """Tear down ``campaign``'s terraform-managed resources (see the module docstring).

    The plan is shown before asking, and exactly that saved plan is applied: a resource added
    after the confirmation is never destroyed (terraform's state changed: refused). Then a
    teardown manifest is written under ``<runs>/manifests/`` and the campaign's spend is read
    from the cost manifests.

    Args:
        campaign: the campaign name (letters, digits, ``.``, ``_``, ``-``); it picks the folder from
            ``[teardown] dirs`` or ``[teardown.<campaign>] tf_dir`` and names the manifest. The folder
            must be the campaign's (see ``nexa_ops.tfcampaign``).
        tf_dir: the terraform directory, relative to the current folder (default None: the
            campaign's folder in nexa.toml, relative to nexa.toml's folder).
        yes: destroy without asking (default False: ask through ``confirm``).
        dry_run: stop after the plan and print the command that would apply it; nothing is
            destroyed, no manifest is written (default False).
        config: the project's ``NexaConfig`` (default None: ``load_config()``).
        confirm: ``confirm(campaign, addresses) -> bool`` asked when ``yes`` is False (default None:
            a prompt on the terminal, refusing when there is no terminal).
        out: where the plan output and progress lines go (default None: stdout); ``apply`` itself
            streams to the terminal, as it can take minutes.

    Returns:
        TeardownResult: ``campaign``, ``tf_dir``, ``planned`` / ``destroyed`` / ``remaining`` resource
        addresses, ``dry_run``, ``initialised`` (``terraform init`` had to run), ``terraform_exit_code``,
        ``plan_sha256`` and ``manifest`` (of the apply and its manifest path; None when it did not run), ``spend``
        (a ``CampaignSpend``; None on a dry run, or when it could not be read and ``spend_note`` says
        why) and ``plan_output``.

    Raises:
        ConfigError: a bad campaign name, no terraform directory for the campaign, or one that does not
            exist or holds no ``*.tf`` files.
        Refused: the folder is not the campaign's: it declares another campaign (``campaign`` in its
            terraform.tfvars or ``*.auto.tfvars``), or declares none (or cannot be read exactly) and
            nexa.toml does not map the campaign to it; or terraform's plan resolves another campaign.
            Also: not confirmed (no ``yes``, and the prompt said no or there was no terminal), or the
            state changed between the plan and the apply.
        ToolMissing: terraform is not on PATH.
        ToolError: terraform failed; a failed apply still writes its manifest first.
    """
    out = out or sys.stdout
    cfg = config or load_config()
    if not campaign or not NAME_RE.match(campaign):
        raise ConfigError(f"--campaign: expected letters, digits, '.', '_' or '-', got {campaign!r}")
    folder = resolve_tf_dir(cfg, campaign, tf_dir)
    owner, mapped = tfcampaign.read_folder(folder), tfcampaign.mapped_key(cfg, campaign, folder)
    tfcampaign.check_folder(campaign, folder, owner, mapped)  # before init or plan: the wrong campaign is never touched
    result = TeardownResult(campaign=campaign, tf_dir=str(folder), dry_run=dry_run, campaign_source=tfcampaign.evidence(owner, mapped))

    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="nexa-teardown-") as tmp:
        plan_file = os.path.join(tmp, "destroy.tfplan")
        try:
            planned = tf.plan_destroy(str(folder), plan_file)
        except ToolError as exc:
            # init only when terraform asks for it: built-in-only configs never need it
            if not tf.needs_init(exc):
                raise
            why = "never initialised" if not (folder / ".terraform").is_dir() else "terraform asks for it"
            say(f"Running terraform init in {folder} ({why}).")
            _show(say, tf.init(str(folder)))
            result.initialised = True
            planned = tf.plan_destroy(str(folder), plan_file)
        planned_state = tf.state_version(str(folder))  # what the plan was made from
        result.plan_output = planned.stdout or ""
        _show(say, planned)
        plan_json = tf.show_plan(str(folder), plan_file)
        tfcampaign.check_plan(campaign, folder, plan_json, owner)  # terraform's own reading agrees
        result.planned = tf.destroyed_addresses(plan_json)
        return _confirm_and_apply(cfg, result, plan_file, planned_state, yes=yes, dry_run=dry_run, confirm=confirm, say=say)


def _confirm_and_apply(
    cfg: NexaConfig,
    result: TeardownResult,
    plan_file: str,
    planned_state: Any,
    *,
    yes: bool,
    dry_run: bool,
    confirm: Optional[Confirm],
    say: Callable[[str], None],
) -> TeardownResult:
    """Show the plan's addresses, ask, then apply exactly that saved plan and record it."""
    campaign, folder = result.campaign, result.tf_dir
    if not result.planned:
        say(f"Nothing to tear down for campaign {campaign!r}: the state of {folder} holds no resources.")
        _spend(cfg, result)
        return result
    say(f"Campaign {campaign!r}: terraform destroy would remove {len(result.planned)} resource(s):")
    for address in result.planned:
        say(f"  - {address}")
    if dry_run:
        say("Dry run: nothing destroyed. A real run plans, shows and asks the same way, then applies exactly the saved plan it showed:")
        tf.apply_plan(folder, plan_file, dry_run=True)  # prints the exact command
        return result
    if not yes and not (confirm or tty_confirm)(campaign, result.planned):
        raise Refused(f"teardown of campaign {campaign!r} not confirmed; nothing was destroyed")
    if tf.state_version(folder) != planned_state:
        raise Refused(
            f"refusing to destroy campaign {campaign!r}: the terraform state of {folder} changed after the plan was shown "
            "(another terraform run?); nothing was destroyed: run the teardown again to see the new plan"
        )
    with open(plan_file, "rb") as fh:
        result.plan_sha256 = hashlib.sha256(fh.read()).hexdigest()

    started = time.time()
    error: Optional[ToolError] = None
    try:
        tf.apply_plan(folder, plan_file)
        result.terraform_exit_code = 0
    except ToolError as exc:
        error = exc
        result.terraform_exit_code = exc.returncode
    finished = time.time()
    try:
        result.remaining = tf.state_list(folder)
    except ToolError:
        result.remaining = list(result.planned) if error else []
    # What the confirmed plan held and the state no longer holds: the apply cannot touch more.
    result.destroyed = [a for a in result.planned if a not in result.remaining]
    result.manifest = _write_manifest(cfg, result, started, finished)
    if error is not None:
        raise error
    _spend(cfg, result)
    return result


def _show(say: Callable[[str], None], res: Any) -> None:
    text = (res.stdout or "").rstrip()
    if text:
        say(text)


def _write_manifest(cfg: NexaConfig, result: TeardownResult, started: float, finished: float) -> Path:
    path = manifest_path(cfg.runs_dir, result.campaign, started)
    atomic_write_json(
        path,
        {
            "schema": MANIFEST_SCHEMA,
            "campaign": result.campaign,
            "tf_dir": result.tf_dir,
            "campaign_source": result.campaign_source,
            "started_at": runs.now_iso(started),
            "finished_at": runs.now_iso(finished),
            "seconds": round(finished - started, 3),
            "user": runs.user(),
            "host": socket.gethostname(),
            "resources_planned": result.planned,
            "resources_destroyed": result.destroyed,
            "destroyed_count": len(result.destroyed),
            "resources_remaining": result.remaining,
            "plan_sha256": result.plan_sha256,
            "terraform_exit_code": result.terraform_exit_code,
            "nexa_version": __version__,
        },
    )
    return path


def _spend(cfg: NexaConfig, result: TeardownResult) -> None:
    """The campaign's spend from the cost manifests."""
    try:
        result.spend = campaign_spend(cfg.runs_dir, result.campaign)
    except (OSError, ValueError, NexaError) as exc:  # the teardown itself is done: report, do not fail
        result.spend_note = f"spend unknown: {exc}"
