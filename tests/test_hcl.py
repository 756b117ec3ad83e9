"""The minimal HCL reader behind the teardown campaign guard: exact or an error, never a guess."""

import pytest

from nexa_ops.hcl import HclError, declared_variables, string_attribute, tokenize

MAIN_TF = '''
# variable "commented" {}
// variable "slashed" {}
/* variable "blocked" {
} */
terraform {
  backend "local" { path = "state/x.tfstate" }
}
variable "campaign" {
  type        = string
  description = "the campaign tag: ${"not"} a ${var.x} declaration"
  validation {
    condition     = can(regex("^[a-z]+$", var.campaign))
    error_message = "Lower-case letters only: {like this}."
  }
}
variable region {}
locals {
  doc = <<-EOT
    variable "in_heredoc" {
    }
    EOT
  tpl = "%{ if true }yes%{ endif } $${escaped} \\"quoted\\" \\u00e9"
}
resource "terraform_data" "x" {
  input = { a = [1, 2.5e3, -3], b = var.campaign == "x" ? "y" : "z" }
}
'''


def test_declared_variables_only_at_the_top_level():
    assert sorted(declared_variables(MAIN_TF)) == ["campaign", "region"]
    assert declared_variables(MAIN_TF)["campaign"] == 9
    nested = 'module "m" {\n  variable "campaign" {}\n}\n'
    assert declared_variables(nested) == {}


TFVARS = '''# campaign = "commented"
notes = <<EOT
campaign = "in a heredoc"
EOT
tags = {
  campaign = "nested"
  list     = ["a", "b",
    "c"]
}
campaign = "exp1" # the real one
region   = "eu"
'''


def test_string_attribute_reads_the_top_level_plain_string():
    assert string_attribute(TFVARS, "campaign") == ("exp1", 10)
    assert string_attribute(TFVARS, "region") == ("eu", 11)
    assert string_attribute(TFVARS, "missing") is None
    assert string_attribute('campaign = "a\\u0062c"\n', "campaign") == ("abc", 1)
    assert string_attribute("", "campaign") is None


@pytest.mark.parametrize(
    "text, message",
    [
        ('campaign = "exp1"\ncampaign = "exp2"\n', "line 2: campaign is set twice"),
        ('campaign = "${var.x}"\n', "line 1: campaign must be one plain string"),
        ('campaign = "a" "b"\n', "line 1: campaign must be one plain string"),
        ("campaign = exp1\n", "line 1: campaign must be one plain string"),
        ('campaign = ["exp1"]\n', "line 1: campaign must be one plain string"),
        ('campaign = <<EOT\nexp1\nEOT\n', "line 1: campaign must be one plain string"),
        ('campaign = "exp1\n', "line 1: unterminated string"),
        ('x = "a"\ncampaign = "exp1', "line 2: unterminated string"),
        ('tags = {\ncampaign = "exp1"\n', "line 1: unclosed bracket"),
        ('x = ]\n', "line 1: unbalanced ']'"),
        ('/* campaign = "b"\n', "line 1: unterminated /* comment"),
        ('x = <<EOT\nno end\n', "line 1: unterminated heredoc <<EOT"),
        ('x = "${ "unclosed" \n', "line 1: unterminated ${ ... } in a string"),
        ('campaign = "a\\qb"\n', "line 1: unknown escape \\q"),
        ("campaign = 'exp1'\n", "line 1: unexpected character \"'\""),
        ('campaign = "exp1";\n', "line 1: unexpected character ';'"),
        ('camp\u00e4ign = "exp1"\n', "line 1: unexpected character '\u00e4'"),
        ('include "other.tfvars"\n', "line 1: expected NAME = VALUE"),
        ('campaign "exp1"\n', "line 1: expected NAME = VALUE"),
        ('x = 1\0\n', "line 1: NUL character in the file"),
    ],
)
def test_anything_not_understood_exactly_is_an_error(text, message):
    with pytest.raises(HclError) as info:
        string_attribute(text, "campaign")
    assert str(info.value).startswith(message)


def test_bad_variable_blocks_are_errors():
    for text in ('variable "${x}" {}\n', "variable\n", 'variable "campaign" = 1\n'):
        with pytest.raises(HclError):
            declared_variables(text)


def test_line_numbers_count_comments_and_heredocs():
    text = '/* a\nb */\nx = <<EOT\n1\n2\nEOT\ny = "${ {a = 1}["a"] }"\ncampaign = "c"\n'
    assert string_attribute(text, "campaign") == ("c", 8)
    kinds = [t.kind for t in tokenize('a = "${x}"\n')]
    assert kinds == ["ident", "punct", "string", "newline"]
