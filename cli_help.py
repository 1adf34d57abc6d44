"""How the `vidparse` commands show their options in --help: a flag takes no value, so no value type follows it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup
from typer.models import CommandFunctionType


def _untyped_flags(params: list[Any]) -> list[Any]:
    """``params`` with no value shown for the flags among them: typer's rich help (0.2x) put a ``<bool>`` after
    every flag, --help and --version too, as if it took one."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _untyped_flags(super().get_params(ctx))


class Typer(typer.Typer):
    """A `typer.Typer` whose commands and groups show their flags without a value type."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(cls=Group, **settings)

    def command(self, name: str | None = None, **settings: Any) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(name, cls=Command, **settings)
