"""Command lines generated from the frozen config dataclasses, so the two cannot drift.

Each field becomes ``--field-name`` (required when it has no default; a positional argument
with ``metadata["positional"]``); its ``metadata["help"]`` is the help text. Booleans get
``--x/--no-x``; ``tuple[int, ...]`` takes several values; ``tuple[str, ...]`` is repeatable
under the singular flag in ``metadata["flag"]`` (``--corruption A --corruption B``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path


def _flag(field) -> str:
    return "--" + field.metadata.get("flag", field.name).replace("_", "-")


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except ``None``: that means unset, and a repeatable option
    states its real default in its own help."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser(cls, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one option per field of the dataclass ``cls``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=_DefaultsHelpFormatter)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind, help_ = hints[field.name], field.metadata.get("help", "")
        if field.metadata.get("positional"):  # metadata={"positional": True}: a required argument
            parser.add_argument(field.name, metavar=field.name.upper(), type=kind, help=help_)
            continue
        kwargs = {"dest": field.name, "help": help_, "default": field.default}
        if field.default is dataclasses.MISSING:  # no default: a required option
            kwargs.update(default=None, required=True)
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind == tuple[int, ...]:
            kwargs.update(type=int, nargs="+")
        elif kind == tuple[str, ...]:
            kwargs.update(action="append", default=None)
            kwargs["help"] = f"{help_} (repeatable; default: {' '.join(field.default) or 'none'})"
        elif typing.get_origin(kind) in (typing.Union, types.UnionType):
            kwargs["type"] = next(a for a in typing.get_args(kind) if a is not type(None))
        else:
            kwargs["type"] = kind
        parser.add_argument(_flag(field), **kwargs)
    return parser


def parse_config(cls, description: str, argv=None):
    """Parses ``argv`` into an instance of ``cls``; errors exit with argparse's message."""
    parser = build_parser(cls, description)
    args = vars(parser.parse_args(argv))
    values = {k: v for k, v in args.items() if v is not None}
    try:
        return config_from_dict(cls, values)
    except ValueError as err:
        parser.error(str(err))


def parse_split_config(cls, run_cls, description: str, argv=None):
    """``OWN_OPTIONS -- RUN_OPTIONS``: an experiment's own options as ``cls``, then the options
    every one of its runs shares as ``run_cls``; errors exit with argparse's message."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    own = parse_config(cls, f"{description} Options after -- go to every run.", argv[:split])
    return own, parse_config(run_cls, "options of every run", argv[split + 1:])


def config_from_dict(cls, values: dict):
    """Builds ``cls`` from a mapping; unknown keys are an error that names them."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)}; "
                         f"expected some of {sorted(names)}")
    hints = typing.get_type_hints(cls)
    fixed = {k: tuple(v) if typing.get_origin(hints[k]) is tuple else v for k, v in values.items()}
    return cls(**fixed)


def save_config(config, path: Path) -> None:
    """Writes a config dataclass as JSON, whole or not at all (a run killed while writing it
    must not leave a half file that every later command stumbles on)."""
    from data.images import atomic_write_json

    atomic_write_json(path, dataclasses.asdict(config))


def load_config(cls, path: Path):
    """Reads a config dataclass written by :func:`save_config`."""
    return config_from_dict(cls, json.loads(Path(path).read_text()))


def config_differences(saved: dict, config, ignore=()) -> list[str]:
    """The fields in which a saved config (as JSON) differs from ``config``, less ``ignore``.

    A field added to the dataclass after the config was saved counts as its default there, so
    runs saved before a new option keep resuming. ``out`` never counts: it names the folder
    the config sits in, and the same folder spelled another way (``runs/x/``, an absolute path,
    a checkout moved elsewhere) holds the same run.
    """
    new = json.loads(json.dumps(dataclasses.asdict(config)))
    defaults = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(config)
                                      if f.default is not dataclasses.MISSING}))
    return sorted(k for k in set(saved) | set(new)
                  if k not in ignore and k != "out" and saved.get(k, defaults.get(k)) != new.get(k))


def finished_run_config(run_dir, config, ignore=()) -> dict | None:
    """The saved ``config.json`` of the finished run (``metrics.json`` written, no ``backup/``
    left: a run stopped at its ``--time-limit`` keeps it, to go on) of ``config`` in ``run_dir``,
    equal up to the fields in ``ignore``; None when there is none."""
    run = Path(run_dir)
    if (not (run / "metrics.json").is_file() or not (run / "config.json").is_file()
            or (run / "backup").is_dir()):
        return None
    saved = json.loads((run / "config.json").read_text())
    return None if config_differences(saved, config, ignore) else saved


def check_out_folder(out, folders=(), what: str = "the runs") -> None:
    """Refuses ``--out`` (or one of the run ``folders`` under it) where it, or a folder above
    it, is a file: called before any data are read, any run trains or any report is written.

    Raises:
        ValueError: naming ``--out`` and the file in the way.
    """
    for folder in (Path(out), *map(Path, folders)):
        for path in (folder, *folder.parents):
            if path.is_dir():  # an existing folder: those above it are folders too
                break
            if path.exists():
                raise ValueError(f"--out {out}: {path} is a file, not a folder; give a folder for {what}")
