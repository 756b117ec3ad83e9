"""Files that ship with nexa (sbatch templates, bin/ scripts, images, data), found at run time.

Installed (wheel or nexa.pyz) they live inside the package (``nexa_ops/sbatch/...``, mapped in
``pyproject.toml``); in a source checkout they are the top-level folders. ``pkgutil`` reads
both from the filesystem and from inside the zipapp.
"""

import pkgutil
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent


def read_text(relpath: str) -> str:
    """Text of a shipped file, e.g. ``read_text("sbatch/array.sbatch")``."""
    data = None
    try:
        data = pkgutil.get_data("nexa_ops", relpath)
    except (FileNotFoundError, OSError):
        data = None
    if data is None:
        data = (_REPO / relpath).read_bytes()
    return data.decode("utf-8")


def package_root() -> Path:
    """Folder to put on ``sys.path`` to import ``nexa_ops``: the pyz's ``site-packages``
    inside the zip, or the checkout/site-packages folder that holds the package."""
    return Path(__file__).resolve().parent.parent
