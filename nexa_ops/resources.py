"""Files that ship with nexa (sbatch templates, bin/ scripts, images, data), found at run time.

Installed (wheel or nexa.pyz) they live inside the package (``nexa_ops/sbatch/...``, mapped in
``pyproject.toml``); in a source checkout they are the top-level folders. ``pkgutil`` reads
both from the filesystem and from inside the zipapp.
"""

import json
import os
import pkgutil
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import ConfigError

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


def pyz_environment(pyz: Path) -> Dict[str, Any]:
    """shiv's ``environment.json`` of a built zipapp (build id, time, root)."""
    import zipfile  # here, not at the top: only a nexa.pyz (whose bootstrap loaded it) asks

    try:
        with zipfile.ZipFile(str(pyz)) as archive:
            return json.loads(archive.read("environment.json").decode("utf-8"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"not a shiv zipapp ({exc})", str(pyz)) from None


def running_pyz() -> Optional[Path]:
    """The nexa.pyz this process was started from, if any: then ``__main__`` is the zipapp's
    own (``pyz.MAIN_TEMPLATE``, which defines ``BUILD_ID``), read from inside ``sys.argv[0]``.
    (Opening the archive to ask would read its whole directory: 4 ms of every sweep plan.)"""
    argv0 = sys.argv[0] if sys.argv else ""
    main = sys.modules.get("__main__")
    if not argv0 or not isinstance(getattr(main, "BUILD_ID", None), str):
        return None
    if os.path.dirname(getattr(main, "__file__", None) or "") != argv0 or not os.path.isfile(argv0):
        return None
    return Path(argv0).resolve()
