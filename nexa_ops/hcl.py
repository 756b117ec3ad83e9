"""Just enough of HashiCorp's configuration language to read two facts exactly: which
variables a ``*.tf`` file declares at its top level, and which plain string a ``*.tfvars``
file gives a top-level attribute. Pure (text in, data out).

Strict by design: a teardown guard relies on it, so anything this reader does not fully
understand (an unterminated string or comment, unbalanced brackets, a character outside
the language, a non-ASCII name, a value that is not one plain string) is an ``HclError``
naming the line, never a guess. Comments, heredocs and ``${...}`` templates are skipped
correctly, so a line inside them is never taken for a declaration.
"""

import re
from typing import Dict, List, Optional, Tuple

from .structs import frozen

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
HEREDOC_RE = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_-]*)\r?\n")
OPERATORS = ("...", "==", "!=", "<=", ">=", "&&", "||", "=>")
SINGLE = "={}[](),.:?!<>+-*/%~"
OPEN = {"{": "}", "[": "]", "(": ")"}
ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


class HclError(ValueError):
    """The text is not something this reader understands exactly."""

    def __init__(self, line: int, message: str):
        super().__init__(f"line {line}: {message}")
        self.line = line


@frozen
class Token:
    kind: str  # ident | string | number | heredoc | punct | newline
    value: Optional[str]  # a string's text when it is a plain literal; None for a template
    line: int


class _Lexer:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.line = 1

    def error(self, message: str) -> HclError:
        return HclError(self.line, message)

    def tokens(self, until_brace: bool = False, start: int = 0) -> List[Token]:
        """Tokens up to the end of the text, or (inside ``${ }`` opened on line ``start``) up to
        the matching ``}``."""
        out: List[Token] = []
        depth = 0
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch in " \t\r":
                self.pos += 1
            elif ch == "\n":
                out.append(Token("newline", None, self.line))
                self.pos += 1
                self.line += 1
            elif ch == "#" or text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated /* comment")
                self.line += text.count("\n", self.pos, end)
                self.pos = end + 2
            elif ch == '"':
                out.append(self.string())
            elif text.startswith("<<", self.pos) and HEREDOC_RE.match(text, self.pos):
                out.append(self.heredoc())
            elif IDENT_RE.match(text, self.pos):
                word = IDENT_RE.match(text, self.pos).group(0)  # type: ignore[union-attr]
                out.append(Token("ident", word, self.line))
                self.pos += len(word)
            elif NUMBER_RE.match(text, self.pos):
                number = NUMBER_RE.match(text, self.pos).group(0)  # type: ignore[union-attr]
                out.append(Token("number", number, self.line))
                self.pos += len(number)
            else:
                op = next((o for o in OPERATORS if text.startswith(o, self.pos)), ch if ch in SINGLE else "")
                if not op:
                    raise self.error(f"unexpected character {ch!r}")
                if until_brace and op == "}" and depth == 0:
                    self.pos += 1
                    return out
                if op == "{":
                    depth += 1
                elif op == "}":
                    depth -= 1
                out.append(Token("punct", op, self.line))
                self.pos += len(op)
        if until_brace:
            raise HclError(start, "unterminated ${ ... } in a string")
        return out

    def string(self) -> Token:
        """A quoted string; its value is None when it holds a ``${ }`` or ``%{ }`` template."""
        line = self.line
        text = self.text
        self.pos += 1
        parts: List[str] = []
        template = False
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise HclError(line, "unterminated string")
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return Token("string", None if template else "".join(parts), line)
            if ch == "\\":
                parts.append(self.escape())
            elif text.startswith("$${", self.pos) or text.startswith("%%{", self.pos):
                parts.append(ch + "{")
                self.pos += 3
            elif text.startswith("${", self.pos) or text.startswith("%{", self.pos):
                self.pos += 2
                self.tokens(until_brace=True, start=line)
                template = True
            else:
                parts.append(ch)
                self.pos += 1

    def escape(self) -> str:
        text = self.text
        code = text[self.pos + 1 : self.pos + 2]
        if code in ESCAPES:
            self.pos += 2
            return ESCAPES[code]
        width = {"u": 4, "U": 8}.get(code, 0)
        digits = text[self.pos + 2 : self.pos + 2 + width]
        if not width or len(digits) != width or not re.match(r"^[0-9A-Fa-f]+\Z", digits):
            raise self.error(f"unknown escape \\{code} in a string")
        self.pos += 2 + width
        try:
            return chr(int(digits, 16))
        except (ValueError, OverflowError):
            raise self.error(f"bad escape \\{code}{digits}") from None

    def heredoc(self) -> Token:
        match = HEREDOC_RE.match(self.text, self.pos)
        assert match is not None
        line = self.line
        marker = match.group(2)
        self.pos = match.end()
        self.line += 1
        while self.pos < len(self.text):
            end = self.text.find("\n", self.pos)
            body = self.text[self.pos : len(self.text) if end < 0 else end]
            self.pos = len(self.text) if end < 0 else end
            if body.strip() == marker:
                return Token("heredoc", None, line)
            if end >= 0:
                self.pos += 1
                self.line += 1
        raise HclError(line, f"unterminated heredoc <<{marker}")


def tokenize(text: str) -> List[Token]:
    """All tokens of ``text``; brackets must balance."""
    if "\0" in text:
        raise HclError(1, "NUL character in the file")
    tokens = _Lexer(text).tokens()
    stack: List[Tuple[str, int]] = []
    for token in tokens:
        if token.kind != "punct":
            continue
        if token.value in OPEN:
            stack.append((OPEN[token.value], token.line))
        elif token.value in OPEN.values():
            if not stack or stack[-1][0] != token.value:
                raise HclError(token.line, f"unbalanced {token.value!r}")
            stack.pop()
    if stack:
        raise HclError(stack[-1][1], "unclosed bracket")
    return tokens


def statements(tokens: List[Token]) -> List[List[Token]]:
    """Top-level statements: tokens split at line breaks outside brackets (HCL ends an
    attribute or a block header there)."""
    out: List[List[Token]] = []
    current: List[Token] = []
    depth = 0
    for token in tokens:
        if token.kind == "newline" and depth == 0:
            if current:
                out.append(current)
            current = []
            continue
        if token.kind == "punct" and token.value in OPEN:
            depth += 1
        elif token.kind == "punct" and token.value in OPEN.values():
            depth -= 1
        current.append(token)
    if current:
        out.append(current)
    return out


def declared_variables(text: str) -> Dict[str, int]:
    """``variable "NAME" {`` blocks at the top level of a ``.tf`` file: name -> line."""
    found: Dict[str, int] = {}
    for statement in statements(tokenize(text)):
        head = statement[0]
        if head.kind != "ident" or head.value != "variable":
            continue
        if len(statement) < 3:
            raise HclError(head.line, "a variable block without a name and a body")
        label = statement[1]
        if label.kind == "string" and label.value is not None:
            name = label.value
        elif label.kind == "ident":
            name = label.value or ""
        else:
            raise HclError(label.line, "a variable name that is not a plain string")
        if statement[2].kind != "punct" or statement[2].value != "{" or statement[-1].value != "}":
            raise HclError(head.line, f"variable {name!r} is not a block")
        found[name] = head.line
    return found


def string_attribute(text: str, name: str) -> Optional[Tuple[str, int]]:
    """The plain string a ``.tfvars`` file gives top-level attribute ``name`` (and its line);
    None when the file does not set it. Every top-level statement must be ``NAME = VALUE``;
    ``name``'s value must be one plain string (no template, no expression)."""
    result: Optional[Tuple[str, int]] = None
    for statement in statements(tokenize(text)):
        head = statement[0]
        if head.kind != "ident" or len(statement) < 3 or statement[1].value != "=" or statement[1].kind != "punct":
            raise HclError(head.line, "expected NAME = VALUE")
        if head.value != name:
            continue
        if result is not None:
            raise HclError(head.line, f"{name} is set twice")
        value = statement[2:]
        if len(value) != 1 or value[0].kind != "string" or value[0].value is None:
            raise HclError(head.line, f"{name} must be one plain string, like {name} = \"NAME\"")
        result = (value[0].value, head.line)
    return result
