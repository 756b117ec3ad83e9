"""nexa teardown with the real terraform binary: built-in terraform_data resources, local state."""

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nexa_ops.campaign_teardown import manifest_path, teardown
from nexa_ops.config import load_config
from nexa_ops.errors import ConfigError, Refused, ToolError, ToolMissing
from nexa_ops.tools import terraform as tf
from tests.conftest import ROOT, require_tool

CAMPAIGN_TF = """
terraform {
  backend "local" { path = "state/campaign.tfstate" }
}
resource "terraform_data" "node" {
  count = 3
  input = "node-${count.index}"
}
resource "terraform_data" "bucket" {
  input = "bucket"
}
"""


@pytest.fixture(autouse=True)
def _terraform():
    require_tool("terraform")


def _tf(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update({k: v for k, v in tf.env().items() if v is not None})
    return subprocess.run(["terraform", f"-chdir={folder}", *args], env=env, capture_output=True, text=True)


def _state(folder: Path):
    out = _tf(folder, "state", "list")
    return out.stdout.split() if out.returncode == 0 else []


def _campaign(tmp_path: Path, name: str = "exp1", text: str = CAMPAIGN_TF, apply: bool = True) -> Path:
    """A project with nexa.toml mapping ``name`` to an applied terraform folder (with a space)."""
    folder = tmp_path / "infra" / f"{name} tf"
    folder.mkdir(parents=True)
    (folder / "main.tf").write_text(text)
    (tmp_path / "nexa.toml").write_text(f'[teardown.{name}]\ntf_dir = "infra/{name} tf"\n')
    if apply:
        for args in (("init", "-input=false", "-no-color"), ("apply", "-auto-approve", "-input=false", "-no-color")):
            done = _tf(folder, *args)
            assert done.returncode == 0, done.stderr
    return folder


def _cost_manifest(runs: Path, run_id: str, campaign: str, estimated: float, actual) -> None:
    folder = runs / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "schema": "nexa.cost/1",
        "run_id": run_id,
        "campaign": campaign,
        "user": "root",
        "status": "finished",
        "submitted_at": "2026-11-01T10:00:00Z",
        "estimated_usd": estimated,
        "actual_usd": actual,
    }
    (folder / f"cost_{run_id}.json").write_text(json.dumps(doc))


ADDRESSES = ["terraform_data.bucket", "terraform_data.node[0]", "terraform_data.node[1]", "terraform_data.node[2]"]

# --- pure ---------------------------------------------------------------------------------------


def test_destroyed_addresses_takes_managed_deletes_only():
    plan = {
        "resource_changes": [
            {"address": "terraform_data.a", "mode": "managed", "change": {"actions": ["delete"]}},
            {"address": "data.x.y", "mode": "data", "change": {"actions": ["delete"]}},
            {"address": "terraform_data.b", "mode": "managed", "change": {"actions": ["no-op"]}},
        ]
    }
    assert tf.destroyed_addresses(plan) == ["terraform_data.a"]
    assert tf.destroyed_addresses({}) == []


def test_env_keeps_terraform_quiet_and_offline(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CLI_CONFIG_FILE", raising=False)
    monkeypatch.delenv("TERRAFORM_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    env = tf.env()
    assert env["CHECKPOINT_DISABLE"] == "1" and env["TF_CLI_CONFIG_FILE"] == "/dev/null"
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(tmp_path / "missing.tfrc"))
    assert tf.env()["TF_CLI_CONFIG_FILE"] == "/dev/null"  # a missing file would only warn
    (tmp_path / ".terraformrc").write_text("")
    monkeypatch.delenv("TF_CLI_CONFIG_FILE")
    assert "TF_CLI_CONFIG_FILE" not in tf.env()  # the user's own CLI config is respected


def test_manifest_names_never_collide(tmp_path):
    when = time.mktime((2026, 11, 28, 12, 0, 0, 0, 0, 0)) - time.timezone
    first = manifest_path(tmp_path, "exp1", when)
    assert first.name == "teardown_exp1_20261128T120000Z.json" and first.parent == tmp_path / "manifests"
    first.parent.mkdir()
    first.write_text("{}")
    assert manifest_path(tmp_path, "exp1", when).name == "teardown_exp1_20261128T120000Z-2.json"


# --- real terraform -----------------------------------------------------------------------------


def test_teardown_destroys_records_and_prints_spend(tmp_path, capfd):
    folder = _campaign(tmp_path)
    assert sorted(_state(folder)) == ADDRESSES
    runs = tmp_path / "runs"
    _cost_manifest(runs, "r1", "exp1", 10.0, 8.5)
    _cost_manifest(runs, "r2", "exp1", 5.0, 4.0)
    _cost_manifest(runs, "other", "exp2", 99.0, 99.0)
    cfg = load_config(tmp_path / "nexa.toml")
    result = teardown("exp1", yes=True, config=cfg)
    assert sorted(result.planned) == ADDRESSES and sorted(result.destroyed) == ADDRESSES
    assert result.remaining == [] and _state(folder) == []
    assert result.terraform_exit_code == 0
    out = capfd.readouterr()  # the apply streams straight to the terminal (file descriptor 1)
    assert "Warning" not in out.err
    assert "Plan: 0 to add, 0 to change, 4 to destroy." in out.out  # terraform's own output
    assert "Apply complete! Resources: 0 added, 0 changed, 4 destroyed." in out.out  # the saved plan, applied
    assert "Destroy complete!" not in out.out  # never `destroy -auto-approve`, which plans again
    assert "teardown_" not in out.err  # the cost scan does not complain about our manifest
    doc = json.loads(result.manifest.read_text())
    assert result.manifest.parent == runs / "manifests"
    assert result.manifest.name.startswith("teardown_exp1_") and result.manifest.name.endswith("Z.json")
    assert doc["campaign"] == "exp1" and doc["terraform_exit_code"] == 0
    assert sorted(doc["resources_destroyed"]) == ADDRESSES and doc["destroyed_count"] == 4
    assert len(doc["plan_sha256"]) == 64 and doc["plan_sha256"] == result.plan_sha256
    assert doc["tf_dir"] == str(folder) and doc["started_at"].endswith("Z")
    assert not [p for p in (runs / "manifests").iterdir() if p.name.endswith(".tmp")]
    spend = result.spend
    assert spend is not None, result.spend_note
    assert spend.campaign == "exp1" and spend.runs == 2
    assert spend.estimated_usd == pytest.approx(15.0) and spend.actual_usd == pytest.approx(12.5)


def test_dry_run_shows_plan_and_destroys_nothing(tmp_path, capsys):
    folder = _campaign(tmp_path)
    result = teardown("exp1", dry_run=True, config=load_config(tmp_path / "nexa.toml"))
    assert sorted(result.planned) == ADDRESSES and result.destroyed == [] and result.manifest is None
    assert sorted(_state(folder)) == ADDRESSES
    out = capsys.readouterr().out
    assert "terraform destroy would remove 4 resource(s)" in out and "  - terraform_data.node[2]" in out
    assert "then applies exactly the saved plan it showed:" in out
    command = out.splitlines()[-1]  # the exact command it would run
    assert command.startswith(f"terraform '-chdir={folder}' apply -input=false -no-color /") and command.endswith("/destroy.tfplan")
    assert "auto-approve" not in out
    assert not (tmp_path / "runs" / "manifests").exists()


def test_empty_state_is_nothing_to_do(tmp_path, capsys):
    folder = _campaign(tmp_path, apply=False)
    result = teardown("exp1", yes=True, config=load_config(tmp_path / "nexa.toml"))
    assert result.planned == [] and result.manifest is None and result.terraform_exit_code is None
    assert result.initialised  # the backend block needed an init first
    assert (folder / ".terraform").is_dir()
    assert "Nothing to tear down for campaign 'exp1'" in capsys.readouterr().out


def test_never_initialised_directory_is_initialised_then_torn_down(tmp_path, capsys):
    folder = _campaign(tmp_path)
    import shutil

    shutil.rmtree(folder / ".terraform")  # e.g. a fresh checkout holding the state file
    result = teardown("exp1", yes=True, config=load_config(tmp_path / "nexa.toml"))
    assert result.initialised and sorted(result.destroyed) == ADDRESSES and _state(folder) == []
    assert "Running terraform init" in capsys.readouterr().out


def test_failed_destroy_still_writes_the_manifest(tmp_path):
    text = CAMPAIGN_TF + """
resource "terraform_data" "stubborn" {
  input = "x"
  provisioner "local-exec" {
    when    = destroy
    command = "echo cannot release this >&2; exit 1"
  }
}
"""
    folder = _campaign(tmp_path, text=text)
    with pytest.raises(ToolError) as info:
        teardown("exp1", yes=True, config=load_config(tmp_path / "nexa.toml"))
    assert info.value.returncode == 1 and info.value.tool == "terraform"
    manifests = list((tmp_path / "runs" / "manifests").glob("teardown_exp1_*.json"))
    assert len(manifests) == 1
    doc = json.loads(manifests[0].read_text())
    assert doc["terraform_exit_code"] == 1
    assert doc["resources_remaining"] == ["terraform_data.stubborn"] == _state(folder)
    assert sorted(doc["resources_destroyed"]) == ADDRESSES


LATE_TF = """
resource "terraform_data" "late" {
  input = "created after the teardown was confirmed"
}
"""


def test_resources_added_after_the_confirmation_are_never_destroyed(tmp_path, capfd):
    """Issue 20, 3: the plan shown and confirmed is the plan applied. `destroy -auto-approve`
    planned again and destroyed what appeared after the confirmation too."""
    folder = _campaign(tmp_path)
    cfg = load_config(tmp_path / "nexa.toml")
    asked = []

    def yes_then_someone_applies(campaign, addresses):
        asked.append(sorted(addresses))
        with open(folder / "main.tf", "a") as fh:
            fh.write(LATE_TF)
        done = _tf(folder, "apply", "-auto-approve", "-input=false", "-no-color")
        assert done.returncode == 0, done.stderr
        return True

    with pytest.raises(Refused) as info:
        teardown("exp1", config=cfg, confirm=yes_then_someone_applies)
    assert str(info.value) == (
        f"refusing to destroy campaign 'exp1': the terraform state of {folder} changed after the plan was shown "
        "(another terraform run?); nothing was destroyed: run the teardown again to see the new plan"
    )
    assert info.value.exit_code == 3 and asked == [ADDRESSES]
    assert sorted(_state(folder)) == sorted(ADDRESSES + ["terraform_data.late"])  # nothing destroyed
    assert not (tmp_path / "runs" / "manifests").exists()
    capfd.readouterr()

    # Run again: the new plan holds the late resource, is shown, confirmed and applied as shown.
    shown = []
    result = teardown("exp1", config=cfg, confirm=lambda c, a: shown.append(sorted(a)) or True)
    everything = sorted(ADDRESSES + ["terraform_data.late"])
    assert shown == [everything] and sorted(result.destroyed) == everything and _state(folder) == []
    doc = json.loads(result.manifest.read_text())
    assert sorted(doc["resources_planned"]) == sorted(doc["resources_destroyed"]) == everything
    assert doc["resources_remaining"] == [] and doc["destroyed_count"] == 5
    assert "Apply complete! Resources: 0 added, 0 changed, 5 destroyed." in capfd.readouterr().out


def test_a_stale_saved_plan_is_refused_by_terraform_too(tmp_path):
    """If the state changes between nexa's last look and the apply, terraform itself refuses
    the saved plan (nothing destroyed) and the manifest says so."""
    folder = _campaign(tmp_path)
    plan = tmp_path / "destroy.tfplan"
    assert tf.plan_destroy(str(folder), str(plan)).returncode == 0
    with open(folder / "main.tf", "a") as fh:
        fh.write(LATE_TF)
    assert _tf(folder, "apply", "-auto-approve", "-input=false", "-no-color").returncode == 0
    with pytest.raises(ToolError) as info:
        tf.apply_plan(str(folder), str(plan))
    assert info.value.returncode == 1
    assert sorted(_state(folder)) == sorted(ADDRESSES + ["terraform_data.late"])
    assert "the state changed after the plan was made and confirmed" in tf.explain(1, "Error: Saved plan is stale\n")


def test_config_changed_after_the_confirmation_applies_the_confirmed_plan(tmp_path, capfd):
    """A configuration edited after the confirmation (state untouched) changes nothing: the
    saved plan is applied as confirmed, and the manifest lists exactly that."""
    folder = _campaign(tmp_path)
    cfg = load_config(tmp_path / "nexa.toml")

    def yes_then_edit(campaign, addresses):
        (folder / "main.tf").write_text(CAMPAIGN_TF.replace("count = 3", "count = 5") + LATE_TF)
        return True

    result = teardown("exp1", config=cfg, confirm=yes_then_edit)
    assert sorted(result.destroyed) == ADDRESSES and _state(folder) == []
    doc = json.loads(result.manifest.read_text())
    assert sorted(doc["resources_destroyed"]) == sorted(doc["resources_planned"]) == ADDRESSES
    assert "Apply complete! Resources: 0 added, 0 changed, 4 destroyed." in capfd.readouterr().out


def test_prevent_destroy_is_a_clear_plan_error(tmp_path):
    text = 'resource "terraform_data" "keep" {\n  input = 1\n  lifecycle { prevent_destroy = true }\n}\n'
    _campaign(tmp_path, text=text)
    with pytest.raises(ToolError, match="terraform exited with 1: Instance cannot be destroyed"):
        teardown("exp1", yes=True, config=load_config(tmp_path / "nexa.toml"))


def test_provider_that_cannot_be_downloaded(tmp_path):
    text = 'terraform {\n  required_providers {\n    null = { source = "hashicorp/null" }\n  }\n}\nresource "null_resource" "x" {}\n'
    _campaign(tmp_path, text=text, apply=False)
    with pytest.raises(ToolError) as info:
        teardown("exp1", yes=True, config=load_config(tmp_path / "nexa.toml"))
    assert info.value.exit_code == 1
    assert "a provider could not be downloaded" in str(info.value)
    assert "Failed to query available provider packages" in str(info.value)  # terraform's words


def test_bad_directories_are_config_errors(tmp_path):
    _campaign(tmp_path, apply=False)
    cfg = load_config(tmp_path / "nexa.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        teardown("exp1", tf_dir=str(tmp_path / "nope"), config=cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no \\*.tf files"):
        teardown("exp1", tf_dir=str(tmp_path / "empty"), config=cfg)
    with pytest.raises(ConfigError, match="no terraform directory for campaign 'exp9'.*campaigns configured: exp1"):
        teardown("exp9", config=cfg)
    with pytest.raises(ConfigError, match="--campaign"):
        teardown("bad name", config=cfg)


def test_declined_confirmation_destroys_nothing(tmp_path):
    folder = _campaign(tmp_path)
    asked = []

    def no(campaign, addresses):
        asked.append((campaign, len(addresses)))
        return False

    with pytest.raises(Refused, match="not confirmed; nothing was destroyed"):
        teardown("exp1", config=load_config(tmp_path / "nexa.toml"), confirm=no)
    assert asked == [("exp1", 4)] and sorted(_state(folder)) == ADDRESSES


def test_missing_terraform_is_tool_missing(tmp_path, monkeypatch):
    _campaign(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(ToolMissing, match="terraform: not found"):
        teardown("exp1", yes=True, config=load_config(tmp_path / "nexa.toml"))


# --- which campaign a folder belongs to (issue 20, 4) -------------------------------------------

TAGGED_TF = """
variable "campaign" {
  type = string
}
resource "terraform_data" "node" {
  count = 2
  input = "${var.campaign}-${count.index}"
}
"""
NODES = ["terraform_data.node[0]", "terraform_data.node[1]"]


def _tagged(tmp_path: Path, name: str, tfvars: str = "", text: str = TAGGED_TF, files=None) -> Path:
    """An applied folder infra/<name> that declares variable "campaign"; ``tfvars`` is its
    terraform.tfvars (none when empty), ``files`` more variable files."""
    folder = tmp_path / "infra" / name
    folder.mkdir(parents=True)
    (folder / "main.tf").write_text(text)
    if tfvars:
        (folder / "terraform.tfvars").write_text(tfvars)
    for file_name, content in (files or {}).items():
        (folder / file_name).write_text(content)
    for args in (("init", "-input=false", "-no-color"), ("apply", "-auto-approve", "-input=false", "-no-color")):
        done = _tf(folder, *args)
        assert done.returncode == 0, done.stderr
    return folder


def _project(tmp_path: Path, toml: str = ""):
    (tmp_path / "nexa.toml").write_text(toml)
    return load_config(tmp_path / "nexa.toml")


def test_wrong_campaign_is_refused_before_terraform_runs(tmp_path, nexa_cli):
    """`--campaign A --tf-dir infra/B` destroyed B and recorded it as A's teardown."""
    _tagged(tmp_path, "A", 'campaign = "A"\n')
    b = _tagged(tmp_path, "B", '# campaign B\ncampaign = "B"\n')
    cfg = _project(tmp_path, '[teardown]\ndirs = { A = "infra/A" }\n')
    message = f"refusing to tear down {b} as campaign 'A': it declares campaign 'B' (terraform.tfvars:2: campaign = 'B')"
    for dry_run in (True, False):
        with pytest.raises(Refused) as info:
            teardown("A", tf_dir=str(b), yes=True, dry_run=dry_run, config=cfg)
        assert str(info.value) == message and info.value.exit_code == 3
    assert _state(b) == NODES and not (tmp_path / "runs").exists()
    out = nexa_cli("teardown", "--campaign", "A", "--tf-dir", "infra/B", "--yes")
    assert (out.returncode, out.stdout) == (3, "") and out.stderr == f"nexa: error: {message}\n"
    assert _state(b) == NODES


def test_a_folder_is_its_campaigns_by_its_tfvars_or_by_nexa_toml(tmp_path):
    b = _tagged(tmp_path, "B", 'campaign = "B"\n')
    mapped = _campaign(tmp_path, "exp1")  # no variable: [teardown.exp1] tf_dir maps it
    c = tmp_path / "infra" / "C"
    c.mkdir()
    (c / "main.tf").write_text(CAMPAIGN_TF.replace('backend "local" { path = "state/campaign.tfstate" }', ""))
    assert _tf(c, "apply", "-auto-approve", "-input=false", "-no-color").returncode == 0
    cfg = _project(tmp_path, '[teardown]\ndirs = { C = "infra/./C" }\n\n[teardown.exp1]\ntf_dir = "infra/exp1 tf"\n')

    by_tfvars = teardown("B", tf_dir=str(b), yes=True, config=cfg)  # no nexa.toml entry needed
    assert by_tfvars.destroyed == NODES and _state(b) == []
    assert json.loads(by_tfvars.manifest.read_text())["campaign_source"] == "terraform.tfvars:1: campaign = 'B'"
    by_dirs = teardown("C", yes=True, config=cfg)
    assert sorted(by_dirs.destroyed) == ADDRESSES and _state(c) == []
    assert json.loads(by_dirs.manifest.read_text())["campaign_source"] == f"{tmp_path / 'nexa.toml'}: teardown.dirs.C"
    by_table = teardown("exp1", tf_dir=str(tmp_path / "infra" / "exp1 tf" / "."), yes=True, config=cfg)  # same folder
    assert sorted(by_table.destroyed) == ADDRESSES and _state(mapped) == []


@pytest.mark.parametrize(
    "tfvars, files, toml, message",
    [
        ("", {}, "", 'it declares variable "campaign" but no terraform.tfvars or *.auto.tfvars sets it; set campaign = "A"'),
        ('campaign = "A"\n', {"z.auto.tfvars": 'campaign = "B"\n'}, "",
         "its variable files set different campaigns: 'A' (terraform.tfvars:1), 'B' (z.auto.tfvars:1)"),
        ('campaign = "${"A"}"\n', {}, "", "cannot read terraform.tfvars exactly (line 1: campaign must be one plain string"),
        ('campaign = "A"\n', {"x.auto.tfvars.json": '{"campaign": 7}'}, "",
         "cannot read x.auto.tfvars.json exactly (campaign must be a string)"),
        ('campaign = "B"\n', {}, '[teardown]\ndirs = { A = "infra/A" }\n',
         "it declares campaign 'B' (terraform.tfvars:1: campaign = 'B'), although {toml}: teardown.dirs.A maps it to 'A'"),
    ],
)
def test_a_folder_that_does_not_say_it_is_the_campaigns_is_refused(tmp_path, tfvars, files, toml, message):
    folder = _tagged(tmp_path, "A", tfvars, files=files) if tfvars or files else _untagged_applied(tmp_path)
    cfg = _project(tmp_path, toml)
    with pytest.raises(Refused) as info:
        teardown("A", tf_dir=str(folder), yes=True, config=cfg)
    assert str(info.value).startswith(f"refusing to tear down {folder} as campaign 'A': ")
    assert message.format(toml=tmp_path / "nexa.toml") in str(info.value)
    assert _state(folder) == NODES


def _untagged_applied(tmp_path: Path) -> Path:
    """A folder declaring variable "campaign" whose value comes from the environment only."""
    folder = tmp_path / "infra" / "A"
    folder.mkdir(parents=True)
    (folder / "main.tf").write_text(TAGGED_TF)
    env = dict(os.environ, TF_VAR_campaign="A", **{k: v for k, v in tf.env().items() if v is not None})
    for args in (("init", "-input=false", "-no-color"), ("apply", "-auto-approve", "-input=false", "-no-color")):
        done = subprocess.run(["terraform", f"-chdir={folder}", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    return folder


def test_a_folder_without_any_declaration_needs_nexa_toml(tmp_path, nexa_cli):
    folder = _campaign(tmp_path, "exp1")
    (tmp_path / "nexa.toml").write_text("")
    out = nexa_cli("teardown", "--campaign", "exp1", "--tf-dir", str(folder), "--dry-run")
    assert out.returncode == 3 and out.stdout == ""
    assert out.stderr == (
        f"nexa: error: refusing to tear down {folder} as campaign 'exp1': it declares no variable \"campaign\"; "
        'set campaign = "exp1" in its terraform.tfvars (with variable "campaign" declared), or map it in nexa.toml: '
        '[teardown] dirs = { exp1 = "DIR" }\n'
    )
    (tmp_path / "nexa.toml").write_text(f'[teardown]\ndirs = {{ exp1 = "{folder}" }}\n')
    out = nexa_cli("teardown", "--campaign", "exp1", "--dry-run")
    assert out.returncode == 0 and "would remove 4 resource(s)" in out.stdout


def test_terraforms_own_reading_must_agree(tmp_path):
    """Mapped in nexa.toml, no tfvars, but the variable's default is another campaign:
    terraform's plan says 'B', so the folder is not A's."""
    text = TAGGED_TF.replace("type = string", 'type    = string\n  default = "B"')
    folder = _tagged(tmp_path, "A", text=text)
    cfg = _project(tmp_path, '[teardown]\ndirs = { A = "infra/A" }\n')
    with pytest.raises(Refused) as info:
        teardown("A", yes=True, config=cfg)
    assert str(info.value) == f"refusing to tear down {folder} as campaign 'A': terraform's plan resolves campaign = 'B'"
    assert _state(folder) == NODES


@pytest.mark.parametrize(
    "files",
    [
        {"terraform.tfvars": '# campaign = "x"\nnotes = <<EOT\ncampaign = "in heredoc"\nEOT\ncampaign = "A" // tag\n'},
        {"terraform.tfvars": 'tags = {\n  campaign = "nested"\n}\nname = "${"ab"}c"\ncampaign = "A"\n',
         "a.auto.tfvars": 'campaign = "A"\n'},
        {"terraform.tfvars.json": '{"campaign": "A", "notes": "x"}', "b.auto.tfvars": "/* campaign = \"B\" */\n"},
        {"terraform.tfvars": 'campaign = "\\u0041"\n'},
    ],
)
def test_the_reader_agrees_with_terraform(tmp_path, files):
    text = TAGGED_TF + 'variable "notes" {\n  default = ""\n}\nvariable "tags" {\n  default = {}\n}\nvariable "name" {\n  default = ""\n}\n'
    folder = _tagged(tmp_path, "A", text=text, files=files)
    from nexa_ops import tfcampaign

    assert tfcampaign.read_folder(folder).campaign == "A"
    done = _tf(folder, "plan", "-destroy", "-input=false", "-no-color", "-out=p.tfplan")
    assert done.returncode == 0, done.stderr
    shown = json.loads(_tf(folder, "show", "-json", "p.tfplan").stdout)
    assert shown["variables"]["campaign"]["value"] == "A"


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_refuses_without_tty_and_without_yes(tmp_path, nexa_cli):
    folder = _campaign(tmp_path)
    out = nexa_cli("teardown", "--campaign", "exp1", input="yes\n")
    assert out.returncode == 3
    assert out.stderr.strip() == (
        "nexa: error: refusing to destroy 4 resource(s) of campaign 'exp1' without confirmation: no terminal to ask on; pass --yes"
    )
    assert "4 to destroy" in out.stdout and sorted(_state(folder)) == ADDRESSES


def test_cli_yes_dry_run_and_error_exit_codes(tmp_path, nexa_cli):
    folder = _campaign(tmp_path)
    _cost_manifest(tmp_path / "runs", "r1", "exp1", 3.0, 2.25)
    dry = nexa_cli("teardown", "--campaign", "exp1", "--dry-run")
    assert dry.returncode == 0 and "would remove 4 resource(s)" in dry.stdout and len(_state(folder)) == 4
    done = nexa_cli("teardown", "--campaign", "exp1", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Destroyed 4 of 4 resource(s); manifest: " in done.stdout
    assert "Campaign 'exp1' spend: 1 run(s), estimated $3.00, actual $2.25" in done.stdout
    assert _state(folder) == []
    again = nexa_cli("teardown", "--campaign", "exp1", "--yes")
    assert again.returncode == 0 and "Nothing to tear down" in again.stdout
    missing = nexa_cli("teardown", "--campaign", "exp1", "--tf-dir", "nope")
    assert missing.returncode == 2 and missing.stderr.startswith("nexa: error: terraform directory") and "Traceback" not in missing.stderr
    none = nexa_cli("teardown")
    assert none.returncode == 2 and "--campaign NAME is required" in none.stderr


def _run_on_tty(argv, cwd, answer: str, timeout: float = 60):
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr; type ``answer`` at the prompt."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not answered and b"Type 'yes' to confirm" in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
    code = proc.wait(timeout=10)
    os.close(master)
    return code, seen.decode(errors="replace")


@pytest.mark.parametrize("answer, code, left", [("no", 3, 4), ("yes", 0, 0)])
def test_cli_asks_on_a_terminal(tmp_path, answer, code, left):
    folder = _campaign(tmp_path)
    rc, text = _run_on_tty([sys.executable, "-m", "nexa_ops", "teardown", "--campaign", "exp1"], tmp_path, answer)
    assert "Destroy 4 resource(s) of campaign 'exp1'? Type 'yes' to confirm:" in text
    assert rc == code, text
    assert len(_state(folder)) == left
    assert ROOT.exists()
