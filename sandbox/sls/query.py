"""The subset of SLS's query language the flow and the metrics adapter use: ``<search> | <SQL>``.

SLS "Search syntax" / "Query and analysis overview": a query is a search statement, optionally followed by ``|`` and
an analytic (SQL) statement over the logs the search matched. Supported here, and nothing else (anything outside is
refused with SLS's ``400 ParameterInvalid``, the code SLS answers a query it cannot run with):

- search: ``*``; terms ``field: value`` / ``field: "value"`` (exact match of the field's value, as on a field
  indexed as ``text`` without tokenising or as ``long``/``double``: ACK's nginx-ingress index); ``field > n``,
  ``>=``, ``<``, ``<=`` on numeric fields; joined by ``and``, ``or``, ``not`` (``a not b`` is ``a and not b``),
  parentheses. Operator keywords are case-insensitive, as in SLS.
- SQL (parsed with sqlglot's Presto dialect: SLS's analytic syntax is Presto's): ``SELECT <expr> [AS alias], ...
  [FROM log] [WHERE <cond>] [GROUP BY <alias|column>, ...]`` with columns, string and number literals,
  comparisons, ``and``/``or``/``not``, ``+ - * /`` (integer division between integers, as Presto), and the
  aggregates ``count(1)``/``count(*)``/``count(col)``, ``count_if(cond)``, ``sum``, ``avg``, ``min``, ``max``,
  ``approx_percentile(col, q)`` (computed exactly here, nearest rank: SLS's is an approximation of the same).

Results are what GetLogs returns for SQL: one row per group, every value a string (``null`` for SQL NULL,
``true``/``false`` for booleans).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError


class QueryError(ValueError):
    """A query SLS would refuse (``400 ParameterInvalid``)."""


# ---- search statement ----------------------------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|(>=|<=|>|<|:)|([^\s()":<>]+))')


@dataclass(frozen=True)
class Term:
    field: str
    op: str  # ':' '>' '>=' '<' '<='
    value: str

    def match(self, log: dict[str, Any]) -> bool:
        have = log.get(self.field)
        if have is None:
            return False
        if self.op == ":":
            if isinstance(have, int | float) and not isinstance(have, bool):
                try:
                    return float(self.value) == float(have)
                except ValueError:
                    return False
            return str(have) == self.value
        try:
            a, b = float(have), float(self.value)
        except (TypeError, ValueError):
            return False
        return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[self.op]


@dataclass(frozen=True)
class All:
    def match(self, log: dict[str, Any]) -> bool:
        return True


@dataclass(frozen=True)
class BoolOp:
    op: str  # and | or | not
    args: tuple

    def match(self, log: dict[str, Any]) -> bool:
        if self.op == "not":
            return not self.args[0].match(log)
        if self.op == "and":
            return all(a.match(log) for a in self.args)
        return any(a.match(log) for a in self.args)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise QueryError(f"search statement: unexpected character at {pos}: {text[pos:pos + 10]!r}")
        pos = m.end()
        lp, rp, quoted, op, word = m.groups()
        if lp:
            out.append(("(", lp))
        elif rp:
            out.append((")", rp))
        elif quoted is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", quoted[1:-1])))
        elif op:
            out.append(("op", op))
        elif word.lower() in ("and", "or", "not"):
            out.append((word.lower(), word))
        else:
            out.append(("word", word))
    return out


class _SearchParser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            got = self.toks[self.i][1] if self.i < len(self.toks) else "end of search statement"
            raise QueryError(f"search statement: expected {kind!r}, got {got!r}")
        self.i += 1
        return self.toks[self.i - 1][1]

    def parse(self):
        if not self.toks:
            return All()
        node = self.or_()
        if self.i != len(self.toks):
            raise QueryError(f"search statement: unexpected {self.toks[self.i][1]!r}")
        return node

    def or_(self):
        args = [self.and_()]
        while self.peek() == "or":
            self.i += 1
            args.append(self.and_())
        return args[0] if len(args) == 1 else BoolOp("or", tuple(args))

    def and_(self):
        args = [self.unary()]
        while self.peek() in ("and", "not", "(", "word", "str"):
            if self.peek() == "and":
                self.i += 1
            args.append(self.unary())  # "a not b" and "a b" are "a and not b", "a and b"
        return args[0] if len(args) == 1 else BoolOp("and", tuple(args))

    def unary(self):
        if self.peek() == "not":
            self.i += 1
            return BoolOp("not", (self.unary(),))
        if self.peek() == "(":
            self.i += 1
            node = self.or_()
            self.take(")")
            return node
        word = self.take("word") if self.peek() == "word" else self.take("str")
        if word == "*" and self.peek() != "op":
            return All()
        if self.peek() != "op":
            raise QueryError(f"search statement: full-text search ({word!r}) is not supported; use field: value")
        op = self.take("op")
        value = self.take("str") if self.peek() == "str" else self.take("word")
        if op != ":" and not _is_number(value):
            raise QueryError(f"search statement: {word} {op} needs a number, got {value!r}")
        return Term(word, op, value)


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


# ---- analytic statement (SQL) --------------------------------------------------------------------------------------
_AGGREGATES = (exp.Count, exp.CountIf, exp.Sum, exp.Avg, exp.Min, exp.Max, exp.ApproxQuantile)
_ALLOWED = (exp.Select, exp.Alias, exp.Column, exp.Identifier, exp.Literal, exp.Star, exp.Boolean, exp.Null,
            exp.EQ, exp.NEQ, exp.GT, exp.GTE, exp.LT, exp.LTE, exp.And, exp.Or, exp.Not, exp.Paren,
            exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Neg, exp.From, exp.Table, exp.Where, exp.Group, *_AGGREGATES)


@dataclass(frozen=True)
class Query:
    search: Any
    sql: exp.Select | None
    where_query: str
    agg_query: str

    @property
    def has_sql(self) -> bool:
        return self.sql is not None


def parse(text: str) -> Query:
    """``<search> [| <SQL>]``; raises :class:`QueryError` with what is not supported."""
    if not isinstance(text, str):
        raise QueryError("query must be a string")
    search_text, bar, sql_text = text.partition("|")
    search = _SearchParser(search_text).parse()
    if not bar:
        return Query(search, None, search_text.strip(), "")
    try:
        tree = sqlglot.parse_one(sql_text, read="presto")
    except (ParseError, TokenError) as e:
        raise QueryError(f"analytic statement: {str(e).splitlines()[0]}") from None
    if not isinstance(tree, exp.Select):
        raise QueryError(f"analytic statement: only SELECT is supported, got {tree.key.upper()}")
    for node in tree.walk():
        if not isinstance(node, _ALLOWED):
            raise QueryError(f"analytic statement: {node.key.upper()} ({node.sql(dialect='presto')[:60]}) is not "
                             "supported")
    table = tree.args.get("from_") or tree.args.get("from")
    if table is not None and table.this.name != "log":
        raise QueryError(f"analytic statement: FROM {table.this.name}: only FROM log is supported")
    for arg in ("joins", "having", "order", "limit", "offset", "distinct", "with", "windows"):
        if tree.args.get(arg):
            raise QueryError(f"analytic statement: {arg.upper()} is not supported")
    return Query(search, tree, search_text.strip(), sql_text.strip())


def _aggregate(node: exp.Expression, rows: list[dict[str, Any]]) -> Any:
    if isinstance(node, exp.Count):
        arg = node.this
        if arg is None or isinstance(arg, exp.Star) or (isinstance(arg, exp.Literal) and not arg.is_string):
            return len(rows)
        return sum(1 for r in rows if _eval(arg, r) is not None)
    if isinstance(node, exp.CountIf):
        return sum(1 for r in rows if _eval(node.this, r) is True)
    values = [v for v in (_eval(node.this, r) for r in rows) if v is not None]
    if isinstance(node, exp.ApproxQuantile):
        q = _eval(node.args["quantile"], {})
        if not isinstance(q, int | float) or not 0 <= q <= 1:
            raise QueryError("approx_percentile: the percentage must be a number between 0 and 1")
        nums = sorted(_num(v) for v in values)
        return nums[max(0, math.ceil(q * len(nums)) - 1)] if nums else None
    if not values:
        return None
    if isinstance(node, exp.Sum):
        return sum(_num(v) for v in values)
    if isinstance(node, exp.Avg):
        return sum(_num(v) for v in values) / len(values)
    if isinstance(node, exp.Min):
        return min(values)
    return max(values)


def _num(v: Any) -> float | int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        try:
            return float(v)
        except (TypeError, ValueError):
            raise QueryError(f"cannot use {v!r} as a number") from None
    return v


_CMP = {exp.EQ: lambda a, b: a == b, exp.NEQ: lambda a, b: a != b, exp.GT: lambda a, b: a > b,
        exp.GTE: lambda a, b: a >= b, exp.LT: lambda a, b: a < b, exp.LTE: lambda a, b: a <= b}


def _eval(node: exp.Expression, row: dict[str, Any], groups: list[dict[str, Any]] | None = None) -> Any:
    """``node`` over one log (``row``), or over a group's logs (``groups``) for aggregates."""
    if isinstance(node, _AGGREGATES):
        if groups is None:
            raise QueryError(f"{node.key} is an aggregate and cannot be used here")
        return _aggregate(node, groups)
    if isinstance(node, exp.Alias | exp.Paren):
        return _eval(node.this, row, groups)
    if isinstance(node, exp.Column):
        return row.get(node.name)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        n = float(node.this)
        return int(n) if n.is_integer() and "." not in node.this and "e" not in node.this.lower() else n
    if isinstance(node, exp.Boolean):
        return node.this
    if isinstance(node, exp.Null):
        return None
    if isinstance(node, exp.Not):
        v = _eval(node.this, row, groups)
        return None if v is None else not v
    if isinstance(node, exp.And | exp.Or):
        a, b = _eval(node.this, row, groups), _eval(node.expression, row, groups)
        return (a and b) if isinstance(node, exp.And) else (a or b)
    if isinstance(node, exp.Neg):
        v = _eval(node.this, row, groups)
        return None if v is None else -_num(v)
    a, b = _eval(node.this, row, groups), _eval(node.expression, row, groups)
    if a is None or b is None:
        return None
    cmp = _CMP.get(type(node))
    if cmp is not None:
        if isinstance(a, str) != isinstance(b, str):
            a, b = _num(a), _num(b)
        return cmp(a, b)
    a, b = _num(a), _num(b)
    if isinstance(node, exp.Add):
        return a + b
    if isinstance(node, exp.Sub):
        return a - b
    if isinstance(node, exp.Mul):
        return a * b
    if b == 0:
        raise QueryError("Division by zero")
    if isinstance(a, int) and isinstance(b, int):
        return int(a / b)  # Presto: integer division truncates toward zero
    return a / b


def render(v: Any) -> str:
    """How GetLogs renders a value: every value a string."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return f"{v:.1f}"
    return str(v)


def _names(select: exp.Select) -> list[str]:
    names = []
    for i, e in enumerate(select.expressions):
        names.append(e.alias_or_name if (isinstance(e, exp.Alias | exp.Column)) else f"_col{i}")
    return names


def run(q: Query, logs: Iterable[dict[str, Any]]) -> tuple[list[dict[str, str]], list[str], int]:
    """(rows, keys, processed rows). Without SQL the rows are the matching logs themselves."""
    matched = [log for log in logs if q.search.match(log)]
    if q.sql is None:
        return [{k: render(v) for k, v in log.items()} for log in matched], [], len(matched)
    sel = q.sql
    where = sel.args.get("where")
    if where is not None:
        matched = [r for r in matched if _eval(where.this, r) is True]
    names = _names(sel)
    by_alias = {n: e for n, e in zip(names, sel.expressions, strict=True)}
    group = sel.args.get("group")
    keys_exprs = []
    for g in group.expressions if group else []:
        target = by_alias.get(g.name) if isinstance(g, exp.Column) else None
        keys_exprs.append(target.this if isinstance(target, exp.Alias) else g)
    has_agg = any(isinstance(n, _AGGREGATES) for e in sel.expressions for n in e.walk())
    if not keys_exprs and not has_agg:
        rows = [{n: render(_eval(e, r)) for n, e in zip(names, sel.expressions, strict=True)} for r in matched]
        return rows, names, len(matched)
    buckets: dict[tuple, list[dict[str, Any]]] = {}
    for r in matched:
        buckets.setdefault(tuple(_eval(k, r) for k in keys_exprs), []).append(r)
    if not keys_exprs:
        buckets = {(): matched}
    rows = []
    for members in buckets.values():
        rows.append({n: render(_eval(e, members[0] if members else {}, members))
                     for n, e in zip(names, sel.expressions, strict=True)})
    return rows, names, len(matched)
