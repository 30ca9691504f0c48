"""Each setting is declared once, as a dataclass field whose metadata says everything else needs to know about it:
its command-line flag, help text, allowed values, check, and whether it changes what a window's folder holds.

The command line (``add_flags``), the values read back from it (``from_flags``), the checks (``first_problem``),
provenance (``as_record``) and the run state's fingerprint (``output_settings``) are all derived from these
fields, so a setting's default, help and check never sit in two places.

No imports from the rest of the package: option dataclasses anywhere in it declare their fields with ``setting``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, Callable

Check = Callable[[Any], "str | None"]

_SETTING = "vae_pipeline.setting"
_NESTED = "vae_pipeline.nested"


@dataclass(frozen=True)
class Declaration:
    """What a field's metadata holds (see ``setting``)."""

    help: str
    affects_output: bool
    cli: bool = True
    flag: str | None = None
    choices: tuple[Any, ...] | None = None
    check: Check | None = None
    parse: Callable[[str], Any] | None = None
    negatable: bool | None = None
    group: str | None = None
    fingerprint_as: Callable[[Any], Any] | None = None
    metavar: str | None = None


def setting(
    default: Any = MISSING,
    *,
    help: str,
    affects_output: bool,
    default_factory: Callable[[], Any] | Any = MISSING,
    cli: bool = True,
    flag: str | None = None,
    choices: tuple[Any, ...] | None = None,
    check: Check | None = None,
    parse: Callable[[str], Any] | None = None,
    negatable: bool | None = None,
    group: str | None = None,
    fingerprint_as: Callable[[Any], Any] | None = None,
    metavar: str | None = None,
) -> Any:
    """A dataclass field declaring one setting.

    ``affects_output``: whether a window's folder can differ when only this setting differs (then it is part of
    the fingerprint that decides whether a rerun may keep a finished window). ``flag`` defaults to the field name
    in kebab case; ``cli=False`` keeps a setting off the command line. ``check(value)`` returns what is wrong
    (``"must be at least 1"``) or None; None values mean "automatic" and are not checked. Booleans that default
    to on get a ``--no-`` form (``negatable`` forces it either way). ``fingerprint_as`` maps the value to what the
    fingerprint records when two values give the same folders (``auto`` batch size names folders as 4).
    """
    declaration = Declaration(
        help=help, affects_output=affects_output, cli=cli, flag=flag, choices=choices, check=check, parse=parse,
        negatable=negatable, group=group, fingerprint_as=fingerprint_as, metavar=metavar,
    )
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_SETTING: declaration})


def nested(cls: type, *, group: str) -> Any:
    """A field holding another dataclass of settings (whose flags go to ``group``)."""
    return dataclasses.field(default_factory=cls, metadata={_NESTED: cls, "group": group})


def at_least(minimum: float) -> Check:
    return lambda value: None if value >= minimum else f"must be at least {minimum}"


def positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def within(low: float, high: float) -> Check:
    return lambda value: None if low <= value <= high else f"must be within [{low}, {high}]"


def declarations(cls: type) -> list[tuple[dataclasses.Field, Declaration]]:
    """Every declared setting of ``cls``, nested ones included, in declaration order."""
    found = []
    for f in dataclasses.fields(cls):
        if _NESTED in f.metadata:
            found += declarations(f.metadata[_NESTED])
        elif _SETTING in f.metadata:
            found.append((f, f.metadata[_SETTING]))
        else:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting() or nested()")
    return found


def flag_name(f: dataclasses.Field, declaration: Declaration) -> str:
    return declaration.flag or "--" + f.name.replace("_", "-")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def add_flags(parser: argparse.ArgumentParser, cls: type, titles: dict[str, str], group: str | None = None) -> None:
    """One argument per declared setting of ``cls`` (recursively), in argument groups titled by ``titles``."""
    groups: dict[str, argparse._ArgumentGroup] = {}

    def group_for(name: str) -> argparse._ArgumentGroup:
        if name not in groups:
            groups[name] = parser.add_argument_group(titles.get(name, name))
        return groups[name]

    def add(owner: type, inherited: str | None) -> None:
        for f in dataclasses.fields(owner):
            if _NESTED in f.metadata:
                add(f.metadata[_NESTED], f.metadata["group"])
                continue
            declaration: Declaration = f.metadata[_SETTING]
            if not declaration.cli:
                continue
            default = _default(f)
            kwargs: dict[str, Any] = {"dest": f.name, "help": declaration.help}
            if default is MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = default
            if isinstance(default, bool):
                negatable = declaration.negatable if declaration.negatable is not None else default
                kwargs["action"] = argparse.BooleanOptionalAction if negatable else "store_true"
            else:
                if declaration.parse is not None:
                    kwargs["type"] = declaration.parse
                elif default is not MISSING and default is not None:
                    kwargs["type"] = type(default)
                if declaration.choices is not None:
                    kwargs["choices"] = declaration.choices
                if declaration.metavar is not None:
                    kwargs["metavar"] = declaration.metavar
            group_for(declaration.group or inherited or "options").add_argument(flag_name(f, declaration), **kwargs)

    add(cls, group)


def from_flags(cls: type, values: dict[str, Any]) -> Any:
    """An instance of ``cls`` from parsed flags (``vars(args)``); settings off the command line keep defaults."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        if _NESTED in f.metadata:
            kwargs[f.name] = from_flags(f.metadata[_NESTED], values)
        elif f.metadata[_SETTING].cli and f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def _settings_of(obj: Any) -> list[tuple[dataclasses.Field, Declaration, Any]]:
    """(field, declaration, value) of every declared setting of the instance ``obj``, nested ones included."""
    found = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if _NESTED in f.metadata:
            found += _settings_of(value)
        else:
            found.append((f, f.metadata[_SETTING], value))
    return found


def first_problem(obj: Any) -> str | None:
    """The first declared setting of ``obj`` whose value its declaration refuses, as a message naming the flag."""
    for f, declaration, value in _settings_of(obj):
        if value is None:
            continue
        name = flag_name(f, declaration) if declaration.cli else f.name
        if declaration.choices is not None and value not in declaration.choices:
            return f"{name} must be one of {', '.join(map(str, declaration.choices))}, got {value!r}"
        problem = declaration.check(value) if declaration.check is not None else None
        if problem:
            return f"{name} {problem}, got {value}"
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) or not isinstance(value, (str, int, float, bool, type(None), list, dict)):
        return str(value)
    return value


def as_record(obj: Any) -> dict[str, Any]:
    """Every setting of ``obj`` as plain JSON values (nested dataclasses as objects), for provenance."""
    record = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        record[f.name] = as_record(value) if _NESTED in f.metadata else _plain(value)
    return record


def output_settings(obj: Any) -> dict[str, Any]:
    """The settings that decide a window's output, flat, as the fingerprint records them."""
    settings = {}
    for f, declaration, value in _settings_of(obj):
        if declaration.affects_output:
            mapped = declaration.fingerprint_as(value) if declaration.fingerprint_as is not None else value
            settings[f.name] = _plain(mapped)
    return settings


def describe(cls: type, name: str, value: Any) -> str:
    """A setting's value as the user would have written it: ``--window-size 4``, ``--no-use-ba``."""
    for f, declaration in declarations(cls):
        if f.name != name:
            continue
        if not declaration.cli:
            return f"{name} {value}"
        flag = flag_name(f, declaration)
        if isinstance(value, bool):
            negatable = declaration.negatable if declaration.negatable is not None else _default(f) is True
            if value:
                return flag
            return "--no-" + flag[2:] if negatable else f"no {flag}"
        return f"{flag} {'auto' if value is None else value}"
    return f"{name} {value}"
