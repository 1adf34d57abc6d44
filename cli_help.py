"""How the `vidparse` commands show their options in --help: a flag takes no value, so no value type follows it; an
argument that takes several values shows the type of each, as an option does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup
from typer.models import CommandFunctionType


class _SeveralValues(TyperArgument):
    """An argument of several values, shown as ``INPUT  <str>...`` (typer's rich help ignores an argument's metavar
    in the type column and showed ``<list[str]>``)."""

    def display_type_rich(self, ctx: Any) -> str:
        (each,) = get_args(self.type_descriptor.annotation)
        return f"<{getattr(each, '__name__', each)}>..."


def _plainly_typed(params: list[Any]) -> list[Any]:
    """``params`` with no value shown for the flags among them (typer's rich help (0.2x) put a ``<bool>`` after
    every flag, --help and --version too, as if it took one), and each value's type for an argument of several."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif type(param) is TyperArgument and param.nargs != 1:
            param.__class__ = _SeveralValues
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plainly_typed(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _plainly_typed(super().get_params(ctx))


class Typer(typer.Typer):
    """A `typer.Typer` whose commands and groups show their flags without a value type."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(cls=Group, **settings)

    def command(self, name: str | None = None, **settings: Any) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(name, cls=Command, **settings)
