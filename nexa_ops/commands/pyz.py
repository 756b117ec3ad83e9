"""``inv build`` (writes dist/nexa.pyz) and ``nexa cache-clean``."""

from .common import echo, nexa_task


@nexa_task(
    help={
        "config": "Build settings (default: ./shiv.toml, else the checkout's shiv.toml).",
        "output": "Where to write the zipapp (default: `output` in shiv.toml, dist/nexa.pyz).",
        "dry_run": "Print the pip and shiv commands that would run; build nothing.",
    }
)
def build(c, config=None, output=None, dry_run=False):
    """Build dist/nexa.pyz: nexa in one file for CPython 3.6-3.13.

    nexa and its pinned dependencies in one shiv zipapp.
    """
    from .. import pyz

    settings = pyz.load_settings(config)
    result = pyz.build(settings, output, dry_run=dry_run)
    if dry_run:
        return
    echo(f"Built {result.path}: {result.size:,} bytes ({result.size / 1024:.0f} KiB; limit {result.max_bytes:,}) in {result.seconds:.1f} s")
    echo(f"  sha256   {result.sha256}")
    echo(f"  build id {result.build_id} ({result.files} files, built_at {result.built_at})")
    echo(f"  run it:  python3 {result.path.name} --help   (extracts to ${{SHIV_ROOT:-${{TMPDIR:-/tmp}}/$USER-shiv}})")


@nexa_task(
    help={
        "root": "Extraction root to clean (default: $SHIV_ROOT, else ${TMPDIR:-/tmp}/<user>-shiv).",
        "keep": "A nexa.pyz whose extraction is kept (default: the nexa.pyz running this command).",
        "dry_run": "List what would be removed; remove nothing.",
    }
)
def cache_clean(c, root=None, keep=None, dry_run=False):
    """Remove other builds' extractions from the shiv cache.

    Keeps the current build and any extraction in use.
    """
    from .. import pyz

    report = pyz.clean_cache(root, keep, dry_run=dry_run)
    verb = "Would remove" if dry_run else "Removed"
    for path in report.removed:
        echo(f"{verb} {path}")
    for path in report.in_use:
        echo(f"Kept {path}: in use by a running nexa")
    kept = f"kept build {report.kept_build[:12]}" if report.kept_build else "no build kept (not run from a nexa.pyz; pass --keep)"
    echo(f"{verb} {len(report.removed)} item(s), {report.freed_bytes / 2**20:.1f} MiB, from {report.root}; {kept}")


TASKS = [build, cache_clean]
