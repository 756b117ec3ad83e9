"""The shell completion scripts ``nexa --print-completion-script SHELL`` prints.

Each script asks nexa itself for the candidates (``nexa --complete -- WORDS...``, Invoke's
completion: command names, then the options of the command being typed), so it never goes
stale. ``call`` is how the script runs nexa (``nexa``, or a nexa.pyz by its absolute path
through an interpreter); ``names`` are the command words it completes (``nexa``,
``nexa.pyz``). Pure: text in, text out.
"""

import shlex
from typing import Sequence

from .errors import ConfigError

BASH = """\
# nexa tab completion for bash. Load it from ~/.bashrc:
#   eval "$({show} --print-completion-script bash)"
_nexa_complete() {{
    local candidates
    candidates=$({call} --complete -- "${{COMP_WORDS[@]:0:COMP_CWORD+1}}" 2>/dev/null)
    COMPREPLY=($(compgen -W "$candidates" -- "${{COMP_WORDS[COMP_CWORD]}}"))
}}
complete -F _nexa_complete -o default {names}
"""

ZSH = """\
# nexa tab completion for zsh. Load it from ~/.zshrc:
#   eval "$({show} --print-completion-script zsh)"
_nexa_complete() {{
    reply=($({call} --complete -- ${{words}} 2>/dev/null))
}}
compctl -K _nexa_complete + -f {names}
"""

FISH = """\
# nexa tab completion for fish. Save it as ~/.config/fish/completions/nexa.fish:
#   {show} --print-completion-script fish > ~/.config/fish/completions/nexa.fish
function __nexa_complete
    {call} --complete -- (commandline --tokenize --cut-at-cursor) (commandline --current-token) 2>/dev/null
end
{completes}
"""

SHELLS = ("bash", "zsh", "fish")


def script(shell: str, call: Sequence[str], names: Sequence[str]) -> str:
    """The completion script for ``shell`` (bash, zsh or fish); ConfigError for another."""
    quoted = " ".join(shlex.quote(word) for word in call)
    words = " ".join(shlex.quote(name) for name in names)
    if shell == "bash":
        return BASH.format(call=quoted, show=quoted, names=words)
    if shell == "zsh":
        return ZSH.format(call=quoted, show=quoted, names=words)
    if shell == "fish":
        completes = "\n".join(f"complete --command {shlex.quote(n)} --no-files --arguments '(__nexa_complete)'" for n in names)
        return FISH.format(call=quoted, show=quoted, completes=completes)
    raise ConfigError(f"--print-completion-script: expected one of {', '.join(SHELLS)}, got {shell!r}")
