"""The hottest queries, built with the ORM and compiled to SQL once instead of on every call.

Django builds and compiles a queryset again each time it runs: for the conversation's locking
read (row lock, situation, tokens spent) that is about a millisecond of CPU, several times what
PostgreSQL takes to answer it, on every message and every feedback request, in the web process
and on the learner's wait. A `PreparedQuery` is written as an ordinary queryset, with the values
that change from call to call as arguments; it is compiled on first use with stand-in values, and
each call runs that SQL with the real ones through Django's own row-to-object code (related rows,
annotations, field converters), so it returns what the queryset would.

Only for SELECTs whose arguments reach the SQL unchanged (`pk=`, `learner_id=`, `text=`): an
argument the ORM transforms (`__icontains`, a list for `__in`) is refused when first compiled.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet
from django.db.models.sql.compiler import SQLCompiler
from django.db.transaction import TransactionManagementError

M = TypeVar("M", bound=Model)


def _stand_in(kind: type, version: int, index: int) -> Any:
    """A value for argument number `index` of a compile. Two compiles with different stand-ins
    tell the arguments' places from constants that happen to equal one of them. Integers stay
    in every integer column's range (a small positive one too: the ORM refuses an out-of-range
    value before any SQL is made)."""
    if kind is int:
        return 20_000 + 1_000 * version + index
    if kind is str:
        return f"\x00stand-in {version}.{index}\x00"
    raise TypeError(f"a prepared query's arguments are int or str, not {kind.__name__}")


@dataclass(frozen=True)
class _Compiled:
    queryset: QuerySet[Any]
    compiler: SQLCompiler
    sql: str
    params: tuple[Any, ...]
    slots: dict[str, tuple[int, ...]]  # argument -> its positions in params


class PreparedQuery(Generic[M]):
    """`build(**arguments)` returns the queryset; `arguments` name each argument's type (int or
    str). Call `all`, `first` or `get` with the values; nothing else of the queryset escapes, so
    nothing can chain onto the compiled SQL and be silently ignored. One database (the default)."""

    def __init__(self, build: Callable[..., QuerySet[M]], **arguments: type) -> None:
        self.build = build
        self.arguments = arguments
        self._compiled: _Compiled | None = None

    def all(self, **values: Any) -> list[M]:
        return list(self._queryset(values))

    def first(self, **values: Any) -> M | None:
        found = self.all(**values)
        return found[0] if found else None

    def get(self, **values: Any) -> M:
        found = self.all(**values)
        if len(found) == 1:
            return found[0]
        model = self._ready().queryset.model
        if not found:
            raise model.DoesNotExist(f"{model.__name__} matching the query does not exist.")
        raise model.MultipleObjectsReturned(f"get() returned {len(found)} {model.__name__} rows.")

    def _ready(self) -> _Compiled:
        if self._compiled is None:
            self._compiled = self._compile()  # two threads at once compile the same: harmless
        return self._compiled

    def _compile(self) -> _Compiled:
        compiles = []
        for version in (1, 2):
            stand_ins = {
                name: _stand_in(kind, version, i)
                for i, (name, kind) in enumerate(self.arguments.items())
            }
            queryset = self.build(**stand_ins)
            compiler = queryset.query.get_compiler(using=DEFAULT_DB_ALIAS)
            sql, params = compiler.as_sql()
            compiles.append((stand_ins, queryset, compiler, sql, tuple(params)))
        (first, queryset, compiler, sql, params), (second, _, _, sql_2, params_2) = compiles
        slots = {
            name: tuple(
                i
                for i, (p, p_2) in enumerate(zip(params, params_2, strict=True))
                if p == first[name] and p_2 == second[name]
            )
            for name in self.arguments
        }
        placed = {i for positions in slots.values() for i in positions}
        constant = [i for i in range(len(params)) if i not in placed]
        if (
            sql != sql_2
            or any(not positions for positions in slots.values())
            or any(params[i] != params_2[i] for i in constant)
        ):
            raise ValueError(
                f"the arguments {sorted(self.arguments)} do not all reach the SQL unchanged; "
                "keep this one a queryset"
            )
        return _Compiled(queryset, compiler, sql, params, slots)

    def _queryset(self, values: dict[str, Any]) -> QuerySet[M]:
        if values.keys() != self.arguments.keys():
            raise TypeError(f"arguments {sorted(self.arguments)} expected, got {sorted(values)}")
        connection = connections[DEFAULT_DB_ALIAS]  # this thread's
        compiled = self._ready()
        if compiled.queryset.query.select_for_update and connection.get_autocommit():
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        params = list(compiled.params)
        for name, positions in compiled.slots.items():
            value = values[name]
            if not isinstance(value, self.arguments[name]):
                # None above all: the ORM would have written `IS NULL`, the SQL here `= NULL`.
                raise TypeError(f"{name} must be {self.arguments[name].__name__}, not {value!r}")
            for i in positions:
                params[i] = value
        bound = (compiled.sql, tuple(params))
        # A copy of the compiled compiler (its select list, related-row map and annotation
        # columns are what Django reads rows with), on this thread's connection, answering with
        # the SQL compiled once. The queryset is a fresh clone: nothing is shared between calls.
        compiler = copy.copy(compiled.compiler)
        compiler.connection = connection
        compiler.as_sql = lambda *args, **kwargs: bound  # type: ignore[method-assign]
        queryset = compiled.queryset._chain()
        queryset.query.get_compiler = lambda *args, **kwargs: compiler  # type: ignore[method-assign]
        return queryset
