"""``nexa teardown``: terraform destroy of a campaign's infrastructure, then its spend."""

from .common import PROJECT_HELP, echo, nexa_task


@nexa_task(
    help={
        "campaign": "Campaign to tear down. Required. Its folder must say so (campaign = \"C\" in terraform.tfvars) or nexa.toml map it.",
        "tf_dir": "Terraform directory (default: the campaign's in nexa.toml: [teardown] dirs, or [teardown.<campaign>] tf_dir).",
        "yes": "Apply the destroy plan without asking (needed when there is no terminal to ask on).",
        "dry_run": "Show what terraform would destroy (plan -destroy) and the apply command; destroy nothing.",
        "project": PROJECT_HELP,
    },
)
def teardown(c, campaign=None, tf_dir=None, yes=False, dry_run=False, project=None):
    """Destroy a campaign's terraform resources; print its spend.

    The plan shown is the plan applied; a manifest records it.
    """
    from ..campaign_teardown import teardown as run_teardown
    from ..config import load_config
    from ..errors import ConfigError

    if not campaign:
        raise ConfigError("--campaign NAME is required")
    cfg = load_config(project)
    result = run_teardown(campaign, tf_dir=tf_dir, yes=yes, dry_run=dry_run, config=cfg)
    if result.dry_run and result.planned:
        return
    if result.manifest is not None:
        echo(f"Destroyed {len(result.destroyed)} of {len(result.planned)} resource(s); manifest: {result.manifest}")
        if result.remaining:
            echo(f"Still in the state: {', '.join(result.remaining)}")
    _print_spend(result)


def _print_spend(result) -> None:
    spend = result.spend
    if spend is None:
        if result.spend_note:
            echo(f"Campaign {result.campaign!r}: {result.spend_note}")
        return
    if not spend.runs:
        echo(f"Campaign {result.campaign!r}: no cost manifests, spend unknown")
        return
    actual = "n/a" if spend.actual_usd is None else f"${spend.actual_usd:,.2f}"
    echo(f"Campaign {result.campaign!r} spend: {spend.runs} run(s), estimated ${spend.estimated_usd:,.2f}, actual {actual}")


TASKS = [teardown]
