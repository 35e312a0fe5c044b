"""A small protobuf text-format reader for the messages the model server reads (``--model_config_file``).

Only what a ``ModelServerConfig`` needs (tensorflow/serving ``tensorflow_serving/config/model_server_config.proto``,
``file_system_storage_path_source.proto``): nested messages (``name { ... }``, ``name: { ... }``, ``< ... >``),
scalar fields (``name: value``), strings (single or double quotes, C escapes, adjacent literals concatenated),
integers (decimal, hex, octal), identifiers (enum values, ``true``/``false``), ``#`` comments, optional ``,``/``;``
separators, and repeated scalars in list form (``versions: [1, 2]``). Anything else is a parse error.

Errors read like protobuf's ``TextFormat`` parser (``google/protobuf/text_format.cc``): ``<line>:<column>: <what>``
with 1-based positions, e.g. ``3:5: Message type "tensorflow.serving.ModelConfig" has no field named "bse_path".``
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


class TextFormatError(ValueError):
    def __init__(self, line: int, col: int, message: str) -> None:
        super().__init__(f"{line}:{col}: {message}")
        self.line, self.col, self.message = line, col, message


@dataclass
class Token:
    kind: str  # ident | string | number | symbol | end
    text: str
    line: int
    col: int
    value: Any = None


_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+|\#[^\n]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<number>[-+]?(?:0[xX][0-9A-Fa-f]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<symbol>[{}<>:\[\],;])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f",
            "v": "\v", "?": "?"}


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        n = body[i + 1]
        if n in _ESCAPES:
            out.append(_ESCAPES[n])
            i += 2
        elif n in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1:])
            assert m
            out.append(chr(int(m.group(0), 8)))
            i += 1 + len(m.group(0))
        elif n == "x":
            m = re.match(r"[0-9A-Fa-f]{1,2}", body[i + 2:])
            if not m:
                raise ValueError("\\x with no hex digits")
            out.append(chr(int(m.group(0), 16)))
            i += 2 + len(m.group(0))
        else:
            raise ValueError(f"invalid escape sequence \\{n}")
    return "".join(out)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        col = pos - line_start + 1
        if not m:
            ch = text[pos]
            if ch in "\"'":
                raise TextFormatError(line, col, "Unexpected end of string.")
            raise TextFormatError(line, col, f'Invalid character "{ch}"')
        kind = m.lastgroup or ""
        chunk = m.group(0)
        if kind != "ws":
            tok = Token(kind, chunk, line, col)
            if kind == "string":
                try:
                    tok.value = _unescape(chunk[1:-1])
                except ValueError as e:
                    raise TextFormatError(line, col, f"Invalid escape sequence in string literal: {e}") from None
            tokens.append(tok)
        newlines = chunk.count("\n")
        if newlines:
            line += newlines
            line_start = pos + chunk.rfind("\n") + 1
        pos = m.end()
    tokens.append(Token("end", "", line, pos - line_start + 1))
    return tokens


@dataclass
class Field:
    name: str
    value: Any  # str | int | float | "Ident" marker | Message
    kind: str  # string | number | ident | message
    line: int
    col: int


@dataclass
class Message:
    fields: list[Field] = field(default_factory=list)
    line: int = 1
    col: int = 1


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def next(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, msg: str, tok: Token | None = None) -> TextFormatError:
        t = tok or self.tok
        return TextFormatError(t.line, t.col, msg)

    def found(self) -> str:
        t = self.tok
        return "end of input" if t.kind == "end" else f'"{t.text}"'

    def message(self, close: str | None, start: Token | None = None) -> Message:
        msg = Message(line=start.line if start else 1, col=start.col if start else 1)
        while True:
            t = self.tok
            if close is None and t.kind == "end":
                return msg
            if close is not None and t.kind == "symbol" and t.text == close:
                self.next()
                return msg
            if t.kind == "end":
                raise self.fail(f'Expected "{close}".')
            if t.kind != "ident":
                raise self.fail(f"Expected identifier, got: {t.text}")
            name_tok = self.next()
            colon = False
            if self.tok.kind == "symbol" and self.tok.text == ":":
                self.next()
                colon = True
            v = self.tok
            if v.kind == "symbol" and v.text in "{<":
                self.next()
                sub = self.message("}" if v.text == "{" else ">", name_tok)
                msg.fields.append(Field(name_tok.text, sub, "message", name_tok.line, name_tok.col))
            elif not colon:
                raise self.fail(f'Expected ":", found {self.found()}.')
            elif v.kind == "symbol" and v.text == "[":
                self.next()
                while not (self.tok.kind == "symbol" and self.tok.text == "]"):
                    msg.fields.append(self.scalar(name_tok))
                    if self.tok.kind == "symbol" and self.tok.text == ",":
                        self.next()
                    elif not (self.tok.kind == "symbol" and self.tok.text == "]"):
                        raise self.fail(f'Expected "]", found {self.found()}.')
                self.next()
            else:
                msg.fields.append(self.scalar(name_tok))
            if self.tok.kind == "symbol" and self.tok.text in ",;":
                self.next()

    def scalar(self, name_tok: Token) -> Field:
        v = self.tok
        if v.kind == "string":
            parts = []
            while self.tok.kind == "string":
                parts.append(self.next().value)
            return Field(name_tok.text, "".join(parts), "string", name_tok.line, name_tok.col)
        if v.kind == "number":
            self.next()
            text = v.text.rstrip("fF") if not v.text.lower().startswith(("0x", "-0x", "+0x")) else v.text
            try:
                num: Any = int(text, 0) if re.fullmatch(r"[-+]?(0[xX][0-9A-Fa-f]+|0[0-7]*|[1-9]\d*)", text) \
                    else float(text)
            except ValueError:
                raise self.fail(f"Invalid number: {v.text}", v) from None
            return Field(name_tok.text, num, "number", name_tok.line, name_tok.col)
        if v.kind == "ident":
            self.next()
            return Field(name_tok.text, v.text, "ident", name_tok.line, name_tok.col)
        raise self.fail(f"Expected value, found {self.found()}.")


def parse(text: str) -> Message:
    """The generic message tree of a text-format document (raises :class:`TextFormatError`)."""
    return _Parser(text).message(None)
