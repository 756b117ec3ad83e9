"""shiv: the zipapp builder nexa.pyz is made with (``python -m shiv``)."""

import sys
from pathlib import Path
from typing import List, Mapping, Optional

from .. import proc

HINT = "pip install 'shiv==1.0.8' into the build venv (the build extra)"


def argv(site_packages: Path, output: Path, entry_point: str, shebang: str, *, reproducible: bool, root: str = "") -> List[str]:
    """One zipapp of ``site_packages`` at ``output``, started by ``entry_point``."""
    out = [sys.executable, "-m", "shiv", "--site-packages", str(site_packages), "--output-file", str(output)]
    out += ["--entry-point", entry_point, "--python", shebang]
    if reproducible:
        out.append("--reproducible")
    if root:
        out += ["--root", root]
    return out


def run(command: List[str], env: Optional[Mapping[str, Optional[str]]] = None) -> proc.Result:
    return proc.run(command, env=env, hint=HINT)
