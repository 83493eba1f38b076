"""RSE expressions, in Rucio's syntax so that rules written for a Rucio lake keep working.

Like Rucio, ``&``, ``|`` and ``\\`` bind equally and apply left to right; parentheses group.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from vre.errors import ECHO, shown

RSE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
ATTR_KEY = re.compile(r"[A-Za-z0-9_\-.]+")
NUMBER = re.compile(r"-?(\d+(\.\d*)?|\.\d+)")
# One token class for every word-like thing; the parser decides from context whether it is a
# name, a key or a value, so whitespace around '=' needs no special handling.
_TOKEN = re.compile(r"(?P<word>[A-Za-z0-9_\-.:]+)|(?P<sym>[&|\\()*=<>])|(?P<space>\s+)")
_SET_OPS = {"&": operator.and_, "|": operator.or_, "\\": operator.sub}
_NUM_OPS = {"<": operator.lt, ">": operator.gt}
_MAX_DEPTH = 100  # bounds recursion so a hostile expression cannot exhaust the stack
# The rules table's column width; a million-term expression once took 40 s to evaluate.
MAX_LENGTH = 512
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


class ExpressionError(ValueError):
    """A user-facing error that points at the character where the expression went wrong."""

    def __init__(self, message: str, position: int, expression: str | None = None) -> None:
        self.message, self.position, self.expression = message, position, expression
        super().__init__(self._render())

    def _render(self) -> str:
        if self.expression is None:
            return f"{self.message} (at position {self.position})"
        # An expression of any allowed length is shown whole under its caret; a longer
        # one (megabytes, once) only ECHO characters around the position. Tabs are kept
        # so the caret lines up.
        width = len(self.expression) if len(self.expression) <= MAX_LENGTH else ECHO
        start = max(0, min(self.position - width // 2, len(self.expression) - width))
        window = self.expression[start : start + width]
        pad = "".join("\t" if c == "\t" else " " for c in window[: self.position - start])
        before, after = "..." * (start > 0), "..." * (start + width < len(self.expression))
        return (
            f"invalid RSE expression {shown(self.expression)} at position {self.position}: "
            f"{self.message}\n  {before}{window}{after}\n  {' ' * len(before)}{pad}^"
        )


class UnknownRSEError(ExpressionError):
    """Separate from syntax errors so callers can answer "not found" rather than "invalid"."""

    def __init__(self, name: str, position: int, expression: str | None = None) -> None:
        self.name = name
        super().__init__(f"unknown RSE {shown(name)}", position, expression)


# ``pos`` is excluded from equality so trees can be compared structurally in tests and caches.
@dataclass(frozen=True)
class Name:
    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class AttrCmp:
    key: str
    op: str  # one of "=", "<", ">"
    value: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class All:
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True)
class BinOp:
    op: str  # one of "&", "|", "\\"
    left: Node
    right: Node
    pos: int = field(default=0, compare=False)


Node = Name | AttrCmp | All | BinOp


@dataclass(frozen=True)
class _Token:
    kind: str  # "word", "sym" or "end"
    text: str
    pos: int

    def describe(self) -> str:
        return "end of expression" if self.kind == "end" else shown(self.text)


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            raise ExpressionError(f"unexpected character {expression[pos]!r}", pos, expression)
        if match.lastgroup != "space":
            tokens.append(_Token(match.lastgroup or "", match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(expression)))
    return tokens


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.index = 0

    def error(self, message: str, position: int) -> ExpressionError:
        return ExpressionError(message, position, self.expression)

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += min(1, len(self.tokens) - 1 - self.index)  # "end" is sticky
        return token

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.error("empty expression", 0)
        node = self.expr(0)
        token = self.peek()
        if token.text == ")":
            raise self.error("unbalanced parenthesis: ')' has no matching '('", token.pos)
        if token.kind != "end":
            raise self.error(f"expected an operator, got {token.describe()}", token.pos)
        return node

    def expr(self, depth: int) -> Node:
        node = self.primary(depth)
        while self.peek().text in _SET_OPS:
            op = self.take()
            if self.peek().kind == "end":
                raise self.error(f"trailing operator {op.text!r} has no right operand", op.pos)
            node = BinOp(op.text, node, self.primary(depth), op.pos)
        return node

    def primary(self, depth: int) -> Node:
        token = self.take()
        if token.text == "(":
            if depth >= _MAX_DEPTH:
                raise self.error("parentheses nested too deeply", token.pos)
            inner = self.expr(depth + 1)
            close = self.take()
            if close.kind == "end":
                raise self.error("unbalanced parenthesis: '(' is never closed", token.pos)
            if close.text != ")":
                raise self.error(f"expected an operator or ')', got {close.describe()}", close.pos)
            return inner
        if token.text == "*":
            return All(token.pos)
        if token.kind != "word":
            raise self.error(
                f"expected an RSE name or attribute, got {token.describe()}", token.pos
            )
        if self.peek().text not in ("=", *_NUM_OPS):
            if not RSE_NAME.fullmatch(token.text):
                raise self.error(f"invalid RSE name {shown(token.text)}", token.pos)
            return Name(token.text, token.pos)
        key, op = token, self.take()
        if not ATTR_KEY.fullmatch(key.text):
            raise self.error(f"invalid attribute key {shown(key.text)}", key.pos)
        value = self.take()
        if value.kind != "word":
            raise self.error(
                f"expected a value after {op.text!r}, got {value.describe()}", value.pos
            )
        if op.text != "=" and not NUMBER.fullmatch(value.text):
            raise self.error(f"{op.text!r} needs a number, got {shown(value.text)}", value.pos)
        return AttrCmp(key.text, op.text, value.text, key.pos)


def parse(expression: str) -> Node:
    """Parse once so callers can validate an expression before any RSE exists."""
    if len(expression) > MAX_LENGTH:
        raise ExpressionError(
            f"an RSE expression has at most {MAX_LENGTH} characters, this one has"
            f" {len(expression)}",
            MAX_LENGTH,
            expression,
        )
    return _Parser(expression).parse()


def _walk(node: Node) -> Iterator[Node]:
    stack = [node]  # explicit stack: long chains like A|B|C|... build deep left spines
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, BinOp):
            stack.extend((current.right, current.left))


def names_in(expression: str | Node) -> set[str]:
    """Names written literally, e.g. to check references before an RSE is deleted."""
    node = parse(expression) if isinstance(expression, str) else expression
    return {n.name for n in _walk(node) if isinstance(n, Name)}


def _matches(cmp: AttrCmp, attributes: Mapping[str, str]) -> bool:
    if cmp.key not in attributes:
        return False
    actual = str(attributes[cmp.key])
    if cmp.op == "=":
        wanted = cmp.value.lower()
        if wanted in ("true", "false"):
            return actual.lower() in (_TRUE if wanted == "true" else _FALSE)
        return actual == cmp.value
    # A non-numeric attribute cannot satisfy a numeric bound, so it is skipped, not an error.
    return bool(NUMBER.fullmatch(actual)) and _NUM_OPS[cmp.op](float(actual), float(cmp.value))


def _eval(node: Node, rses: Mapping[str, Mapping[str, str]]) -> set[str]:
    spine: list[BinOp] = []
    while isinstance(node, BinOp):  # iterate the left spine; only parentheses nest on the right
        spine.append(node)
        node = node.left
    if isinstance(node, Name):
        result = {node.name}
    elif isinstance(node, All):
        result = set(rses)
    else:
        result = {name for name, attrs in rses.items() if _matches(node, attrs)}
    for binop in reversed(spine):
        result = _SET_OPS[binop.op](result, _eval(binop.right, rses))
    return result


def evaluate(expression: str | Node, rses: Mapping[str, Mapping[str, str]]) -> set[str]:
    """Resolve against a snapshot of RSEs; a misspelt name fails loudly instead of matching none."""
    source = expression if isinstance(expression, str) else None
    node = parse(expression) if isinstance(expression, str) else expression
    for item in _walk(node):
        if isinstance(item, Name) and item.name not in rses:
            raise UnknownRSEError(item.name, item.pos, source)
    return _eval(node, rses)
