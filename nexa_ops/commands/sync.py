"""``nexa sync``: rsync the project to the cluster over ssh."""

from .common import PROJECT_HELP, echo, nexa_task

SHOW_LINES = 40


@nexa_task(
    help={
        "host": "Remote host name, IPv4 or [IPv6] address, or USER@HOST (default: host in [sync] of nexa.toml).",
        "user": "Remote user (default: [sync] user, else ssh's default).",
        "port": "ssh port (default: [sync] port, else 22).",
        "identity": "ssh private key file (default: [sync] identity, else ssh's keys).",
        "dest": "Remote folder; relative paths are under the remote home (default: [sync] dest, else the project folder's name).",
        "delete": "Delete remote files that are not in the project (excluded files are kept). Guarded: see --force.",
        "no_delete": "Do not delete remote files, even when [sync] delete = true.",
        "force": "With --delete, accept a non-empty folder without a .nexa-sync marker (never /, the remote home or above it).",
        "dry_run": "Run rsync --dry-run: print what would be sent and deleted; change nothing.",
        "project": PROJECT_HELP + " Its folder is what gets synced.",
    },
)
def sync(
    c, host=None, user=None, port=None, identity=None, dest=None, delete=False, no_delete=False, force=False, dry_run=False, project=None
):
    """Copy the project to the cluster with rsync over ssh.

    Leaves out runs/, caches, .git and ignored files.
    """
    from ..config import load_config
    from ..errors import ConfigError
    from ..sync import sync_repository

    if delete and no_delete:
        raise ConfigError("choose one of --delete and --no-delete")
    if port is not None:
        try:
            port = int(port)
        except ValueError:
            raise ConfigError(f"--port: expected an integer, got {port!r}") from None
    cfg = load_config(project)
    result = sync_repository(
        cfg,
        host=host,
        user=user,
        port=port,
        identity=identity,
        dest=dest,
        delete=True if delete else False if no_delete else None,
        dry_run=dry_run,
        force=force,
    )
    _print(result)


def _print(result) -> None:
    lines = result.itemized
    if result.dry_run:
        echo(f"Dry run: rsync would make these changes in {result.destination} (nothing was changed):")
        for line in lines:
            echo(line)
    elif lines:
        for line in lines[:SHOW_LINES]:
            echo(line)
        if len(lines) > SHOW_LINES:
            echo(f"... and {len(lines) - SHOW_LINES} more change(s)")
    verb = "would send" if result.dry_run else "sent"
    gone = "would delete" if result.dry_run else "deleted"
    summary = f"{result.source} -> {result.destination}: {verb} {result.files_transferred} file(s), {gone} {len(result.deleted)}"
    if not result.dry_run:
        summary += f", {result.bytes_sent:,} bytes over the wire in {result.seconds:.2f} s"
    if not result.delete:
        summary += " (deletion off)"
    echo(summary)


TASKS = [sync]
