"""The hottest queries, built with the ORM and compiled to SQL once instead of on every call.

Django builds and compiles a queryset again each time it runs: for the conversation's locking
read (row lock, situation, tokens spent) that is about a millisecond of CPU, several times what
PostgreSQL takes to answer it, on every message and every feedback request, in the web process
and on the learner's wait. A `PreparedQuery` is written as an ordinary queryset, with the values
that change from call to call as arguments; it is compiled on first use with stand-in values, and
each call runs that SQL with the real ones through Django's own row-to-object code (related rows,
annotations, field converters), so it returns what the queryset would.

Only for SELECTs whose arguments reach the SQL unchanged (`pk=`, `learner_id=`, `text=`,
`expire_date__gt=`): an argument the ORM transforms (`__icontains`, a list for `__in`) is refused
when first compiled. `PreparedUpdate` does the same for an UPDATE: the rows it changes are a
queryset written as usual, and the new values are arguments too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Model, QuerySet
from django.db.models.sql.compiler import SQLCompiler
from django.db.models.sql.subqueries import UpdateQuery
from django.db.transaction import TransactionManagementError
from django.utils import timezone

M = TypeVar("M", bound=Model)


def _stand_in(kind: type, version: int, index: int) -> Any:
    """A value for argument number `index` of a compile. Two compiles with different stand-ins
    tell the arguments' places from constants that happen to equal one of them. Integers stay
    in every integer column's range (a small positive one too: the ORM refuses an out-of-range
    value before any SQL is made)."""
    if kind is bool:  # the first compile True, the second False (or the other way round)
        return (version == 1) == (index % 2 == 0)
    if kind is int:
        return 20_000 + 1_000 * version + index
    if kind is str:
        return f"\x00stand-in {version}.{index}\x00"
    if kind is float:
        return 20_000.25 + 1_000 * version + index
    if kind is datetime:
        return datetime(2000 + version, 1, 1, 0, 0, index % 60, tzinfo=UTC)
    raise TypeError(f"no stand-in for {kind.__name__}")


def _placed(
    kinds: Mapping[str, type], compile_with: Callable[[dict[str, Any]], tuple[str, tuple[Any, ...]]]
) -> tuple[str, tuple[Any, ...], dict[str, tuple[int, ...]]]:
    """Compile twice with different stand-ins; the SQL, its first params and each argument's
    positions in them. Refused (ValueError) unless every argument reaches the params unchanged,
    in places of its own, and everything else is the same in both compiles."""
    compiles = []
    for version in (1, 2):
        stand_ins = {
            name: _stand_in(kind, version, i) for i, (name, kind) in enumerate(kinds.items())
        }
        sql, params = compile_with(stand_ins)
        compiles.append((stand_ins, sql, tuple(params)))
    (first, sql, params), (second, sql_2, params_2) = compiles

    def same(param: Any, stand_in: Any) -> bool:
        # 1 == True in Python: not here. Django's PostgreSQL backend passes the values of some
        # integer columns as psycopg's Int2/Int8 (int subclasses): those count as ints.
        if type(stand_in) is int:
            return isinstance(param, int) and not isinstance(param, bool) and param == stand_in
        return type(param) is type(stand_in) and param == stand_in

    slots = {
        name: tuple(
            i
            for i, (p, p_2) in enumerate(zip(params, params_2, strict=True))
            if same(p, first[name]) and same(p_2, second[name])
        )
        for name in kinds
    }
    claimed = [i for positions in slots.values() for i in positions]
    constant = [i for i in range(len(params)) if i not in claimed]
    if (
        sql != sql_2
        or any(not positions for positions in slots.values())
        or len(claimed) != len(set(claimed))
        or any(params[i] != params_2[i] for i in constant)
    ):
        raise ValueError(
            f"the arguments {sorted(kinds)} do not all reach the SQL unchanged; "
            "keep this one a queryset"
        )
    return sql, params, slots


# What a filter's arguments may be: values the ORM passes to the SQL as they are.
_ARGUMENT_KINDS = (int, str, datetime)


def _check_kinds(arguments: Mapping[str, type]) -> None:
    for kind in arguments.values():
        if kind not in _ARGUMENT_KINDS:
            raise TypeError(
                f"a prepared query's arguments are int, str or datetime, not {kind.__name__}"
            )


def _checked(name: str, kind: type, value: Any) -> Any:
    """`value`, if it is what the compiled SQL takes for `name`; TypeError otherwise. None is
    never one: the ORM writes `IS NULL` for it in a filter, the SQL here would say `= NULL`."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name} must be {kind.__name__}, not {value!r}")
    if isinstance(value, datetime) and timezone.is_naive(value):
        raise TypeError(f"{name} must be an aware datetime, not {value!r}")  # the ORM guesses
    return value


# The integer columns' ranges, by the type psycopg binds their parameters as (Django passes
# psycopg's Int2/Int4/Int8 for small, plain and big integer columns; a plain int is an int8 here).
_INT_BITS = {"Int2": 16, "Int4": 32, "Int8": 64}


def _fits(stand_in: Any, value: Any) -> bool:
    """Whether `value` fits the column whose parameter `stand_in` held (only integers can not)."""
    if type(value) is not int or not isinstance(stand_in, int) or isinstance(stand_in, bool):
        return True
    bits = _INT_BITS.get(type(stand_in).__name__, 64)
    return -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)


def _fill(params: list[Any], positions: tuple[int, ...], value: Any) -> None:
    """Put `value` where a stand-in was; an int as the ORM passed it there (psycopg's Int8 for a
    big integer column stays an Int8). Anything else as it is."""
    for i in positions:
        kind = type(params[i])
        if type(value) is int and kind is not int and issubclass(kind, int) and kind is not bool:
            params[i] = kind(value)
        else:
            params[i] = value


@dataclass(frozen=True)
class _Compiled:
    queryset: QuerySet[Any]
    compiler: SQLCompiler
    sql: str
    params: tuple[Any, ...]
    slots: dict[str, tuple[int, ...]]  # argument -> its positions in params


class PreparedQuery(Generic[M]):
    """`build(**arguments)` returns the queryset; `arguments` name each argument's type (int,
    str or an aware datetime). Call `all`, `first` or `get` with the values; nothing else of the
    queryset escapes, so nothing can chain onto the compiled SQL and be silently ignored. One
    database (the default)."""

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
        _check_kinds(self.arguments)
        built: list[tuple[QuerySet[M], SQLCompiler]] = []

        def compile_with(stand_ins: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
            queryset = self.build(**stand_ins)
            compiler = queryset.query.get_compiler(using=DEFAULT_DB_ALIAS)
            built.append((queryset, compiler))
            sql, params = compiler.as_sql()
            return sql, tuple(params)

        sql, params, slots = _placed(self.arguments, compile_with)
        queryset, compiler = built[0]
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
            value = _checked(name, self.arguments[name], values[name])
            if not all(_fits(params[i], value) for i in positions):
                # No row's column can hold it (an id typed into an address): no rows, as the
                # ORM answers such a lookup, not a database error.
                return compiled.queryset._chain().none()
            _fill(params, positions, value)
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


@dataclass(frozen=True)
class _CompiledUpdate:
    sql: str
    params: tuple[Any, ...]
    slots: dict[str, tuple[int, ...]]
    nullable: frozenset[str]  # the changed fields that take None


class PreparedUpdate(Generic[M]):
    """An UPDATE compiled once. `build(**arguments)` returns the queryset of the rows to change
    (arguments as for `PreparedQuery`); `changes` names the fields set by every call and the
    type of their values (int, str, float, bool or an aware datetime; None too where the field
    is nullable); `fixed` are fields set to the same value every time. `update(changes,
    **arguments)` returns the number of rows changed, as `QuerySet.update` does. A field whose
    value Django would convert on the way to the database is refused when first compiled; only
    the model's own table may change (no related updates).
    """

    def __init__(
        self,
        build: Callable[..., QuerySet[M]],
        *,
        changes: Mapping[str, type],
        fixed: Mapping[str, Any] | None = None,
        **arguments: type,
    ) -> None:
        _check_kinds(arguments)
        self.build = build
        self.arguments = arguments
        self.changes = dict(changes)
        self.fixed = dict(fixed or {})
        self._compiled: _CompiledUpdate | None = None

    def update(self, changes: Mapping[str, Any], **arguments: Any) -> int:
        if arguments.keys() != self.arguments.keys():
            raise TypeError(f"arguments {sorted(self.arguments)} expected, got {sorted(arguments)}")
        if changes.keys() != self.changes.keys():
            raise TypeError(f"changes {sorted(self.changes)} expected, got {sorted(changes)}")
        compiled = self._ready()
        params = list(compiled.params)
        for name, kind in self.arguments.items():
            _fill(params, compiled.slots[f"where {name}"], _checked(name, kind, arguments[name]))
        for name, kind in self.changes.items():
            value = changes[name]
            if value is not None or name not in compiled.nullable:  # SET x = NULL is fine
                _checked(name, kind, value)
            _fill(params, compiled.slots[f"set {name}"], value)
        connection = connections[DEFAULT_DB_ALIAS]  # this thread's
        with (
            transaction.mark_for_rollback_on_error(DEFAULT_DB_ALIAS),
            connection.cursor() as cursor,
        ):
            cursor.execute(compiled.sql, params)
            return cursor.rowcount

    def _ready(self) -> _CompiledUpdate:
        if self._compiled is None:
            self._compiled = self._compile()  # two threads at once compile the same: harmless
        return self._compiled

    def _compile(self) -> _CompiledUpdate:
        kinds = {
            **{f"where {name}": kind for name, kind in self.arguments.items()},
            **{f"set {name}": kind for name, kind in self.changes.items()},
        }
        model = None

        def compile_with(stand_ins: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
            nonlocal model
            queryset = self.build(**{name: stand_ins[f"where {name}"] for name in self.arguments})
            model = queryset.model
            if queryset.query.is_sliced:
                raise TypeError("Cannot update a query once a slice has been taken.")
            query = queryset.query.chain(UpdateQuery)
            query.add_update_values(
                {
                    **self.fixed,
                    **{name: stand_ins[f"set {name}"] for name in self.changes},
                }
            )
            if query.related_updates:
                raise ValueError("a prepared update changes its model's own table only")
            sql, params = query.get_compiler(using=DEFAULT_DB_ALIAS).as_sql()
            return sql, tuple(params)

        sql, params, slots = _placed(kinds, compile_with)
        assert model is not None
        nullable = frozenset(name for name in self.changes if model._meta.get_field(name).null)
        return _CompiledUpdate(sql, params, slots, nullable)
