"""Which campaign a terraform folder belongs to: the pure decisions (the real terraform runs
are in test_teardown.py)."""

import json

import pytest

from nexa_ops.errors import Refused
from nexa_ops.tfcampaign import FolderCampaign, check_folder, check_plan, decide, read_folder, variable_files


def test_variable_files_in_terraforms_order():
    names = ["z.auto.tfvars", "main.tf", "terraform.tfvars.json", ".hidden.auto.tfvars", "a.auto.tfvars.json",
             "terraform.tfvars", "other.tfvars", "b.auto.tfvars~"]
    assert variable_files(names) == ["terraform.tfvars", "terraform.tfvars.json", "a.auto.tfvars.json", "z.auto.tfvars"]


def test_decide():
    assert decide(True, [("terraform.tfvars:1", "a"), ("x.auto.tfvars:3", "a")]).campaign == "a"
    assert decide(False, []).problem == 'it declares no variable "campaign"'
    assert "no *.tf file declares" in decide(False, [("terraform.tfvars:1", "a")]).problem
    assert "but no terraform.tfvars or *.auto.tfvars sets it" in decide(True, []).problem
    mixed = decide(True, [("terraform.tfvars:1", "a"), ("x.auto.tfvars:1", "b")])
    assert mixed.campaign is None and "different campaigns: 'a' (terraform.tfvars:1), 'b' (x.auto.tfvars:1)" in mixed.problem


def test_check_folder(tmp_path):
    mine = FolderCampaign("a", True, [("terraform.tfvars:1", "a")])
    other = FolderCampaign("b", True, [("terraform.tfvars:2", "b")])
    none = FolderCampaign(None, False, [], 'it declares no variable "campaign"')
    check_folder("a", tmp_path, mine, None)
    check_folder("a", tmp_path, mine, "nexa.toml: teardown.dirs.a")
    check_folder("a", tmp_path, none, "nexa.toml: teardown.dirs.a")
    with pytest.raises(Refused, match=r"it declares campaign 'b' \(terraform.tfvars:2: campaign = 'b'\)$"):
        check_folder("a", tmp_path, other, None)
    with pytest.raises(Refused, match="although nexa.toml: teardown.dirs.a maps it to 'a'"):
        check_folder("a", tmp_path, other, "nexa.toml: teardown.dirs.a")
    with pytest.raises(Refused, match='declares no variable "campaign"; set campaign = "a"'):
        check_folder("a", tmp_path, none, None)
    with pytest.raises(Refused):
        check_folder("A", tmp_path, mine, None)  # names are exact: 'A' is not 'a'


def test_check_plan(tmp_path):
    mine = FolderCampaign("a", True, [("terraform.tfvars:1", "a")])
    none = FolderCampaign(None, False, [], "")
    check_plan("a", tmp_path, {"variables": {"campaign": {"value": "a"}}}, mine)
    check_plan("a", tmp_path, {}, none)  # mapped folder without the variable
    for plan in ({"variables": {"campaign": {"value": "b"}}}, {"variables": {"campaign": {}}}, {"variables": {"campaign": "a"}}):
        with pytest.raises(Refused, match="terraform's plan resolves campaign"):
            check_plan("a", tmp_path, plan, none)
    with pytest.raises(Refused, match="but terraform's plan has no variable"):
        check_plan("a", tmp_path, {"variables": {}}, mine)


def test_read_folder_json_and_unreadable_files(tmp_path):
    (tmp_path / "main.tf.json").write_text(json.dumps({"variable": {"campaign": {"type": "string"}}}))
    (tmp_path / "terraform.tfvars.json").write_text(json.dumps({"campaign": "a"}))
    (tmp_path / "#main.tf#").write_text("not { terraform")  # an editor's scratch file: terraform skips it
    assert read_folder(tmp_path).campaign == "a"
    (tmp_path / "x.auto.tfvars").write_bytes(b'campaign = "\xff"\n')
    found = read_folder(tmp_path)
    assert found.campaign is None and found.problem.startswith("cannot read x.auto.tfvars exactly (")
    (tmp_path / "x.auto.tfvars").write_text('campaign = "a"\n')
    (tmp_path / "broken.tf").write_text('variable "campaign" {\n')
    assert read_folder(tmp_path).problem == "cannot read broken.tf exactly (line 1: unclosed bracket)"
