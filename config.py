"""Configuration: YAML defaults, a user file and CLI overrides, validated before any work starts."""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from vidparse.errors import ConfigError
from vidparse.pipeline.cpus import usable_cpus
from vidparse.stages.options import (PARSER_OPTIONS, ComposeOptions, DetectorOptions, EncoderOptions, KeyframeOptions,
                                     LiveOptions, RoiOptions, TemporalOptions, TrackingOptions, check_model)

log = logging.getLogger(__name__)

# Documented config keys that moved, old -> new: the old one still sets the new one.
MOVED_KEYS = {"keyframes.cut_share": "temporal.cut_share"}  # one threshold for what a cut is (docs/temporal.md)


@dataclass
class ServeOptions:
    """`vidparse serve`: upload and frame sizes, how many jobs, streams, photos and viewers at once, the live
    preview, how long finished jobs are kept and how much disk they may take."""

    max_upload_mb: int = field(default=200, metadata={"range": (1, 1_000_000)})
    max_jobs: int = field(default=2, metadata={"range": (1, 1000)})  # queued or running; more get 429
    max_streams: int = field(default=4, metadata={"range": (1, 1000)})  # live streams at once; more get 429
    preview_quality: int = field(default=80, metadata={"range": (10, 100)})  # JPEG quality of previews and overlays
    max_photo_pixels: int = field(default=40_000_000, metadata={"range": (1, 1_000_000_000)})  # larger get 413
    max_video_pixels: int = field(default=3840 * 2160, metadata={"range": (1, 1_000_000_000)})  # width x height
    photo_queue: int = field(default=8, metadata={"range": (1, 1000)})  # photos waiting or parsed; more get 429
    max_viewers: int = field(default=8, metadata={"range": (1, 1000)})  # MJPEG previews of one stream; more get 429
    job_connect_attempts: int = field(default=2, metadata={"range": (0, 100)})  # a URL job's reconnects, then failed
    job_ttl_s: float = field(default=86_400.0, metadata={"range": (1.0, 31_536_000.0)})  # finished jobs then expire
    max_data_mb: int = field(default=20_480, metadata={"range": (1, 100_000_000)})  # the data dir's quota


@dataclass
class BatchOptions:
    """`vidparse batch`: segments, their warm-up, retries, CPUs a task (docs/batch.md)."""

    # a video longer than this is split at keyframes into segments of about this length that run in parallel;
    # 0 = never split
    segment_seconds: float = field(default=60.0, metadata={"range": (0.0, 86_400.0)})
    # frames parsed before a segment's first frame and not written: they bring the tracker and the temporal vote
    # up to date (decoding starts at the keyframe before them); docs/batch.md says when masks match `vidparse run`
    warmup_frames: int = field(default=10, metadata={"range": (0, 10_000)})
    # tracking's state (track ids, each person's smoothed labels) cannot be rebuilt at a cut: with tracking on, a
    # video runs whole unless this is true (then its masks differ from `vidparse run`'s after each cut)
    split_tracked: bool = False
    retries: int = field(default=2, metadata={"range": (0, 100)})  # a failed segment runs again this many times
    cpus_per_task: int = field(default=1, metadata={"range": (1, 1024)})  # CPUs (workers) of one segment task


def _default_parsers() -> dict[str, Any]:
    return {name: PARSER_OPTIONS[name]() for name in ("bodypix", "cihp-lite", "cihp-net")}


@dataclass
class Config:
    """The Python defaults equal configs/default.yaml's (tests/test_config.py checks it), so a Config can be made
    without the YAML."""

    model: str = field(default="cihp-net", metadata={"choices": tuple(PARSER_OPTIONS)})
    model_path: str | None = None
    device: str = field(default="cpu", metadata={"choices": ("cpu", "cuda")})
    workers: int | None = field(default=None, metadata={"range": (1, 1024)})  # None: one per usable CPU
    threads: int = field(default=0, metadata={"range": (0, 1024)})
    queue_size: int = field(default=8, metadata={"range": (1, 10_000)})
    # block: the source waits for the workers (nothing lost); drop: the oldest waiting frame is dropped
    # (latency stays bounded); auto: drop for live inputs, block for files
    policy: str = field(default="auto", metadata={"choices": ("auto", "block", "drop")})
    max_memory_mb: int = field(default=0, metadata={"range": (0, 10_000_000)})  # whole process tree; 0 = no budget
    # a worker stuck longer on a frame is replaced
    frame_timeout_s: float = field(default=120.0, metadata={"range": (1.0, 86_400.0)})
    # parser workers run this much nicer than the main process (the per-stream threads go first on full CPUs)
    worker_niceness: int = field(default=10, metadata={"range": (0, 19)})
    live: LiveOptions = field(default_factory=LiveOptions)
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    roi: RoiOptions = field(default_factory=RoiOptions)
    parsers: dict[str, Any] = field(default_factory=_default_parsers)  # backend name -> its Options dataclass
    keyframes: KeyframeOptions = field(default_factory=KeyframeOptions)
    temporal: TemporalOptions = field(default_factory=TemporalOptions)
    tracking: TrackingOptions = field(default_factory=TrackingOptions)
    compose: ComposeOptions = field(default_factory=ComposeOptions)
    output: EncoderOptions = field(default_factory=EncoderOptions)
    serve: ServeOptions = field(default_factory=ServeOptions)
    batch: BatchOptions = field(default_factory=BatchOptions)

    @property
    def worker_count(self) -> int:
        """Measured on 2 cores (docs/benchmarks.md): one single-threaded worker per CPU beats fewer, wider ones."""
        return self.workers or usable_cpus()

    @property
    def parser_options(self) -> Any:
        return self.parsers.get(self.model) or PARSER_OPTIONS[check_model(self.model)]()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_config_path() -> Path:
    return Path(str(resources.files("vidparse.configs") / "default.yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # a merge (<<) may be overridden; only plain keys can repeat by mistake
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key '{key_node.value}' is given twice "
                                                        f"(again on line {key_node.start_mark.line + 1})",
                                                        key_node.start_mark)
            seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path, what: str = "config file", hint: str | None = None) -> dict[str, Any]:
    """The mapping a YAML file holds; any failure is a `ConfigError` naming it as ``what`` (``hint``: what to do
    when it does not exist)."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist", hint=hint or "check the path") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start})", hint="give a YAML file saved as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}", hint="check the path") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {_yaml_problem(exc)}", hint="fix the YAML syntax") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of keys", hint="key: value lines, as in configs/default.yaml")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where ("line 2, column 1: found character '\\t' that cannot start any token")."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem or exc.context}"
    return str(exc).splitlines()[0]


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        elif value is None and isinstance(merged.get(key), dict):
            continue  # a section left empty in YAML (`roi:` with its keys commented out) changes nothing
        elif isinstance(value, dict) and merged.get(key) is not None:
            continue  # not a mapping where one belongs: kept for `build` to report (a flag does not hide it)
        else:
            merged[key] = value
    return merged


def dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"roi.margin": 0.2}`` -> ``{"roi": {"margin": 0.2}}``; ``None`` values (flag not given) are dropped."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _presets() -> Path:
    return Path(str(resources.files("vidparse.configs") / "presets"))


def preset_names() -> list[str]:
    """The presets `--config` takes by name (configs/presets/*.yaml)."""
    return sorted(path.stem for path in _presets().glob("*.yaml"))


def preset_path(name: str) -> Path | None:
    """``--config fast`` names ``configs/presets/fast.yaml`` when no file of that name exists."""
    candidate = _presets() / f"{name}.yaml"
    return candidate if candidate.is_file() else None


def user_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the user changed from the defaults: the --config file (or preset) with the CLI overrides on top."""
    data = read_yaml(path if path.exists() else preset_path(str(path)) or path,
                     hint=f"check the path given to --config, or name a preset: {', '.join(preset_names())}"
                     ) if path is not None else {}
    return merge(data, dotted(overrides or {}))


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    return config_from(user_settings(path, overrides))


def config_from(settings: dict[str, Any]) -> Config:
    """The defaults with ``settings`` (as from `user_settings`) on top, validated."""
    return build(Config, merge(read_yaml(default_config_path()), _moved_keys(settings)), "")


def _moved_keys(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with each old key of MOVED_KEYS given as its new one (which must not say otherwise)."""
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        given = settings.get(section)
        if not isinstance(given, dict) or key not in given:
            continue
        value = given[key]
        new_section, new_key = new.split(".")
        current = settings.get(new_section)
        if isinstance(current, dict) and current.get(new_key, value) != value:
            raise ConfigError(f"config keys '{old}' ({value}) and '{new}' ({current[new_key]}) disagree: '{old}' "
                              f"is now '{new}'", hint=f"give only {new}", key=new)
        log.warning("config key '%s' is now '%s': set that one", old, new)
        settings = merge({**settings, section: {k: v for k, v in given.items() if k != key}}, dotted({new: value}))
    return settings


def build(cls: type, data: Any, where: str) -> Any:
    """Make a dataclass from a mapping, checking unknown keys, types, ranges and choices."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{where.rstrip('.')}' must be a mapping, got {type(data).__name__}",
                          hint=f"allowed keys: {', '.join(f.name for f in dataclasses.fields(cls))}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(data) - set(fields)))  # YAML keys may be numbers or booleans too
    if unknown:
        raise ConfigError(f"unknown config key '{where}{unknown[0]}'",
                          hint=_nested_key_hint(cls, unknown[0], where) or
                          f"allowed keys{' in ' + where.rstrip('.') if where else ''}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = f"{where}{name}"
        if name not in data:
            continue  # every option has a Python default
        values[name] = _value(hints[name], data[name], key, f.metadata)
    return cls(**values)


def _nested_key_hint(cls: type, key: str, where: str) -> str | None:
    """Where ``key``, unknown in ``cls``, is a key of one of its sections (``parse_every`` is
    ``keyframes.parse_every``, as ``--parse-every`` sets it): the hint that names it there."""
    hints = typing.get_type_hints(cls)
    sections = [name for name, kind in hints.items() if isinstance(kind, type) and dataclasses.is_dataclass(kind)
                and key in {f.name for f in dataclasses.fields(kind)}]
    if len(sections) != 1:
        return None
    dotted_key = f"{where}{sections[0]}.{key}"
    return f"'{key}' is a key of {where}{sections[0]}: set '{dotted_key}' (in YAML, {key} under {sections[0]}:)"


def _value(kind: Any, value: Any, key: str, metadata: typing.Mapping[str, Any]) -> Any:
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return build(kind, value, key + ".")
    if key == "parsers":
        if not isinstance(value, dict):
            raise ConfigError("config key 'parsers' must be a mapping of model names", hint=", ".join(PARSER_OPTIONS))
        unknown = [str(name) for name in value if name not in PARSER_OPTIONS]
        if unknown:
            raise ConfigError(f"unknown config key 'parsers.{unknown[0]}'",
                              hint=f"parsers takes the models' names: {', '.join(PARSER_OPTIONS)}")
        return {name: build(PARSER_OPTIONS[name], opts or {}, f"parsers.{name}.") for name, opts in value.items()}
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
    if optional:
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    value = _typed(kind, value, key)
    if "range" in metadata:
        low, high = metadata["range"]
        if not low <= value <= high:
            raise ConfigError(f"config key '{key}' must be between {low} and {high}, got {value}",
                              hint=f"set {key} to a value in [{low}, {high}]", key=key)
    if "choices" in metadata and value not in metadata["choices"]:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, metadata['choices']))}; got '{value}'",
                          hint=f"allowed values: {', '.join(map(str, metadata['choices']))}", key=key)
    return value


def _typed(kind: type, value: Any, key: str) -> Any:
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(kind)
    if ok is None:
        raise TypeError(f"config key {key} has an unsupported type {kind}")
    if not ok:
        raise ConfigError(f"config key '{key}' must be {_type_name(kind)}, got {value!r}",
                          hint=f"write {key} as {_type_name(kind)}", key=key)
    return float(value) if kind is float else value


def _type_name(kind: type) -> str:
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[kind]
