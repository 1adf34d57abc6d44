"""Run inputs with a configuration: what `vidparse run` (and the API's `vidparse.run`) does, for one input or many
on one worker pool. A stream that fails is reported in its `StreamOutcome` and stops alone."""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from vidparse.config import Config, read_yaml
from vidparse.errors import (DEGRADED_EXIT, INTERRUPTED_EXIT, STREAMS_FAILED_EXIT, UNEXPECTED_EXIT, BadOutputError,
                             ConfigError, VidparseError, check_not_overwriting)
from vidparse.jobs import StreamSpec, add_stream, build_engine, output_names, stream_name
from vidparse.names import frame_numbers, frame_png_name, free_name, plural
from vidparse.pipeline.cpus import usable_cpus
from vidparse.pipeline.ends import StreamEnd
from vidparse.pipeline.stats import RunStats
from vidparse.pipeline.writer import Subscriber, Written
from vidparse.signals import stop_on_signals
from vidparse.stages.images import ImageSet, check_image_output, image_files, is_image_input
from vidparse.stages.sink import check_output_path, writes_photos
from vidparse.stages.source import InputKind, StreamInfo, input_kind, probe

log = logging.getLogger(__name__)

POLICIES = ("auto", "block", "drop")
T = TypeVar("T")
# How the warnings of a run name its settings: as the CLI's flags (`as_written`), or in the API's words
# (`vidparse.api_words.reworded`); errors are reworded where they leave the API.
Words = Callable[[str], str]


def as_written(text: str) -> str:
    return text


@dataclass
class Source:
    """One input and where its results go. ``name`` (default: the input's file stem, or the URL's host and path)
    names the stream in progress lines, summaries and every stats line; ``policy`` overrides the config's."""

    input: str
    output: Path | None  # None: no video or images written (the API's `vidparse.stream`)
    name: str | None = None
    masks: Path | None = None
    stats: Path | None = None
    instances: Path | None = None
    max_frames: int | None = None
    policy: str | None = None
    makes_its_folder: bool = False  # a sources file's own output: its folder is made when the source is checked

    @property
    def label(self) -> str:
        return self.name or stream_name(self.input)

    @property
    def writes_images(self) -> bool:
        """Photos written as annotated photos (with their label PNGs), not made into a video."""
        return is_image_input(self.input) and writes_photos(self.output)


def sources_for(inputs: Sequence[str], output: Path, masks: Path | None = None, stats: Path | None = None,
                instances: Path | None = None, max_frames: int | None = None) -> list[Source]:
    """One input writes to ``output`` as given (a video into an existing folder as ``<name>.mp4``, stats into one as
    ``<name>.jsonl``). Several:
    ``output`` is a folder with ``<name>.mp4`` per input (``<name>/`` for photos), and ``masks``, ``stats`` and
    ``instances`` are folders holding ``<name>/``, ``<name>.jsonl`` and ``<name>/``; names that repeat get ``_2``,
    ``_3``..."""
    max_frames = checked_max_frames(max_frames)
    if len(inputs) == 1:
        if output.is_dir() and not is_image_input(inputs[0]):
            output = output / f"{stream_name(inputs[0])}.mp4"
        if stats is not None and stats.is_dir():
            stats = stats / f"{stream_name(inputs[0])}.jsonl"
        return [Source(inputs[0], output, masks=masks, stats=stats, instances=instances, max_frames=max_frames)]
    if output.suffix:
        raise ConfigError(f"{len(inputs)} inputs need a folder for -o, not {output}",
                          hint="give a folder such as -o parsed/ (one output per input, named after it)")
    if stats is not None and stats.suffix == ".jsonl":
        raise ConfigError(f"{len(inputs)} inputs need a folder for --stats, not {stats}",
                          hint="give a folder such as --stats stats/ (one <name>.jsonl per input)")
    sources = []
    for input, name in zip(inputs, output_names(inputs)):
        target = output / (name if is_image_input(input) else f"{name}.mp4")
        files = stream_files(name, masks, stats, instances)
        sources.append(Source(input, target, name, files["masks"], files["stats"], files["instances"], max_frames))
    for folder in (output, stats):
        if folder is not None:
            make_folder(folder)
    return sources


def checked_max_frames(limit: object, where: str = "") -> int | None:
    """``limit`` as a frame count: None (every frame) or a whole number >= 1 (a numpy integer too); ``where``
    prefixes the error's message. Raises `ConfigError`: 0 or less would parse nothing and still end "ok"."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise ConfigError(f"{where}max_frames must be a whole number >= 1, got {limit!r}",
                          hint="leave it out to parse every frame")
    return int(limit)


def written_twice(sources: Sequence[Source]) -> Path | None:
    """A path that two of one run's sources would both write (as output, masks, stats or instances), or None."""
    written = [target.resolve() for source in sources
               for target in (source.output, source.masks, source.stats, source.instances) if target is not None]
    return min((path for path in written if written.count(path) > 1), key=str, default=None)


def files_read(sources: Sequence[Source]) -> list[Path]:
    """The local inputs of a run's sources, videos and photos (a folder or a pattern as given, and each of its
    photos): no source's output may replace one of them."""
    return [path for source in sources if input_kind(source.input) is InputKind.FILE
            for path in (Path(source.input), *(image_files(source.input) if is_image_input(source.input) else ()))]


def stream_files(name: str, masks: Path | None, stats: Path | None, instances: Path | None) -> dict[str, Path | None]:
    """Where one of several streams writes inside the ``--masks``, ``--stats`` and ``--instances`` folders."""
    return {"masks": masks / name if masks else None, "stats": stats / f"{name}.jsonl" if stats else None,
            "instances": instances / name if instances else None}


def path_or_folder(value: str | Path | None) -> Path | None:
    """An output path as typed (``-o``, ``--stats``, `vidparse.run`'s ``output`` and ``stats``): a trailing slash
    ("parsed/") asks for a folder, made here, even for one input (pathlib would drop the slash); "" is none."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.endswith(("/", os.sep)):
        make_folder(Path(value))
    return Path(value)


@contextmanager
def no_empty_folder_left_on_error(*paths: str | Path | None) -> Iterator[None]:
    """Folders among ``paths`` (and their parents) that do not exist yet are made by the run (a trailing slash,
    several inputs): where it ends in an error, those still empty are removed, so a refused run leaves nothing."""
    new = [folder for path in paths if path for folder in (Path(path), *Path(path).parents) if not folder.exists()]
    try:
        yield
    except BaseException:
        for folder in sorted(set(new), key=lambda folder: len(folder.parts), reverse=True):
            with suppress(OSError):  # not empty, or never made
                folder.rmdir()
        raise


def make_folder(folder: Path) -> None:
    """Several inputs write into folders of their own: made here, as photo folders are."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadOutputError(f"cannot create folder {folder}: {exc.strerror}", hint="choose a writable folder") from exc


SOURCE_KEYS = ("input", "name", "output", "masks", "stats", "instances", "max_frames", "policy")  # of a source


def load_sources(path: Path, output: Path | None, masks: Path | None = None, stats: Path | None = None,
                 instances: Path | None = None, max_frames: int | None = None) -> list[Source]:
    """Read a sources file: ``sources:``, a list of mappings with ``input`` and optionally ``name``, ``output``,
    ``masks``, ``stats``, ``instances``, ``max_frames``, ``policy``. Paths are as on the command line (relative to
    the current folder); a source without ``output`` writes ``OUTPUT/<name>.mp4``. The command line's options apply
    to every source that does not set its own: ``masks``, ``stats`` and ``instances`` are folders (``<name>/``,
    ``<name>.jsonl``, ``<name>/``) as with several inputs, ``max_frames`` a limit."""
    data = read_yaml(path, "sources file")
    entries = data.get("sources")
    if set(data) != {"sources"} or not isinstance(entries, list) or not entries:
        raise ConfigError(f"sources file {path} must hold one key, 'sources', a non-empty list",
                          hint="sources:\n  - input: cam1.mp4\n    name: cam1")
    sources = []
    # a source without a name is named after its input, as on the command line (a repeat gets _2, _3...)
    taken = {str(entry["name"]) for entry in entries if isinstance(entry, dict) and entry.get("name") is not None}
    for number, entry in enumerate(entries, 1):
        where = f"sources file {path}, source {number}"
        if not isinstance(entry, dict) or "input" not in entry:
            raise ConfigError(f"{where} needs an 'input'", hint="each source is a mapping such as {input: cam1.mp4}")
        if unknown := sorted(set(entry) - set(SOURCE_KEYS)):
            raise ConfigError(f"{where} has unknown key '{unknown[0]}'", hint=f"known keys: {', '.join(SOURCE_KEYS)}")
        for key in ("input", "name", "output", "masks", "stats", "instances"):
            if key in entry and (isinstance(entry[key], bool) or not isinstance(entry[key], (str, int))):
                raise ConfigError(f"{where}: {key} must be a path or a name, got {entry[key]!r}",
                                  hint=f"{key}: cam1.mp4" if key != "name" else "name: cam1")
        if entry.get("policy") not in (None, *POLICIES):
            raise ConfigError(f"{where}: policy must be one of {', '.join(POLICIES)}, got {entry['policy']!r}",
                              hint="policy: drop (live) or block (files)")
        limit = checked_max_frames(entry.get("max_frames"), f"{where}: ")
        name = entry.get("name")
        if name is not None and (str(name) in ("", ".", "..") or Path(str(name)).name != str(name)):
            raise ConfigError(f"{where}: name {name!r} must be a plain name, not a path (it names the outputs)",
                              hint="name: cam1; give a source its own file with output: path/to/file.mp4")
        if name is None:
            name = free_name(stream_name(str(entry["input"])), taken.__contains__)
            taken.add(name)
        defaults = stream_files(str(name), masks, stats, instances)
        paths = {key: Path(str(entry[key])) if entry.get(key) else defaults[key] for key in defaults}
        source = Source(input=str(entry["input"]), output=Path(str(entry["output"])) if entry.get("output") else Path(),
                        name=str(name), masks=paths["masks"], stats=paths["stats"], instances=paths["instances"],
                        max_frames=max_frames if limit is None else limit, policy=entry.get("policy"),
                        makes_its_folder=bool(entry.get("output")))  # a folder not made fails this source alone
        if not entry.get("output"):
            if output is None:
                raise ConfigError(f"{where} has no 'output' and no -o folder was given",
                                  hint="give -o OUTDIR/ or an output per source")
            source.output = output / (source.label if is_image_input(source.input) else f"{source.label}.mp4")
        sources.append(source)
    if (repeated := written_twice(sources)) is not None:
        raise ConfigError(f"sources file {path}: two sources write {repeated}",
                          hint="give each source its own output, masks, stats and instances (or leave them out: "
                               "OUTDIR/<name>.mp4, and <name> inside the folders the flags give)")
    # folders only once the whole file is checked: a mistake in it leaves nothing behind
    for folder in (output if any(not source.makes_its_folder for source in sources) else None, stats):
        if folder is not None:
            make_folder(folder)
    return sources


@dataclass
class StreamOutcome:
    """How one stream ended (``end``, as the engine decided it; a source refused before the run is failed), its
    statistics and its outputs written (``paths``: the video files, or the annotated photos; label PNGs, masks,
    stats and instances are where the source names them)."""

    name: str
    source: Source
    end: StreamEnd = field(default_factory=lambda: StreamEnd(-1, "interrupted"))  # until the engine says
    paths: list[Path] = field(default_factory=list)
    timestamps_repaired: int = 0

    @property
    def error(self) -> Exception | None:
        return self.end.error

    @property
    def stats(self) -> RunStats:
        return self.end.stats

    @property
    def status(self) -> str:
        """The end's state; an ``ok`` end is ``degraded`` when workers were replaced or frames written unparsed."""
        if self.end.ok and self.stats.degraded:
            return "degraded"
        return self.end.state

    @property
    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code if isinstance(self.error, VidparseError) else UNEXPECTED_EXIT
        return {"ok": 0, "degraded": DEGRADED_EXIT}.get(self.status, INTERRUPTED_EXIT)


@dataclass
class RunOutcome:
    streams: list[StreamOutcome]
    interrupted: bool = False  # a stop signal (Ctrl-C, SIGTERM, SIGHUP) ended the run, whatever else happened
    # what stopped every stream at once (a model no worker can load, workers that cannot start; `run_to_end`):
    # the streams it cut short failed with it
    error: VidparseError | None = None

    @property
    def failed(self) -> list[StreamOutcome]:
        return [s for s in self.streams if s.error is not None]

    @property
    def exit_code(self) -> int:
        """What stopped every stream: its error's code. Else one input: its own code (0, 8 degraded, 130
        interrupted, or its error's). Several: 9 when any stream failed, else 130 when interrupted, else 8 when any
        was degraded, else 0."""
        if self.error is not None:
            return self.error.exit_code
        if len(self.streams) == 1:
            return self.streams[0].exit_code
        statuses = {s.status for s in self.streams}
        for status, code in (("failed", STREAMS_FAILED_EXIT), ("interrupted", INTERRUPTED_EXIT),
                             ("degraded", DEGRADED_EXIT)):
            if status in statuses:
                return code
        return 0


@dataclass
class RunHooks:
    """Callbacks while `run_sources` runs: ``on_open(index, info)`` in the engine's hub thread when a stream's
    input opens, ``on_frame(written, stats)`` in the stream's writer thread (``written.stream`` is the source's
    index), ``on_connecting(index, stats)`` in the hub thread when a live input failed to connect
    (``stats.connecting``: failed attempts in a row, the last reason)."""

    on_open: Callable[[int, StreamInfo], None] | None = None
    on_frame: Callable[[Written, RunStats], None] | None = None
    on_connecting: Callable[[int, RunStats], None] | None = None


def warn_if_oversubscribed(workers: int) -> None:
    if workers > (cpus := usable_cpus()):
        log.warning("%d workers on %s: they take turns on them and each holds its own models; as many "
                    "workers as CPUs is usually as fast (`vidparse tune` measures it)", workers, plural(cpus, "usable CPU"))


def check_outputs_apart(source: Source) -> None:
    """No two of a source's outputs name one path (the instances would replace the masks, the stats the video).
    Photos written as photos into a folder may put their label PNGs there too (a name both would take is refused: `ImageSet.output_paths`)."""
    named = [(flag, path.resolve()) for flag, path in (("-o", source.output), ("--masks", source.masks),
                                                       ("--stats", source.stats), ("--instances", source.instances))
             if path is not None]
    for index, (flag, path) in enumerate(named):
        for earlier, other in named[:index]:
            beside = source.writes_images and not path.suffix and {earlier, flag} == {"-o", "--masks"}
            if path == other and not beside:
                raise ConfigError(f"{earlier} and {flag} name the same path {path}",
                                  hint="give each output its own file or folder")


def warn_of_earlier_frames(source: Source, writes: int | None, words: Words = as_written) -> None:
    """Warn where a --masks or --instances folder holds frame PNGs this run may not replace: past the ``writes``
    frames it writes (None or 0: not known, so any)."""
    for flag, folder in (("--masks", source.masks), ("--instances", source.instances)):
        if folder is None or source.writes_images:
            continue
        if stale := [number for number in frame_numbers(folder) if number >= (writes or 0)]:
            log.warning("%s %s already holds %d frame PNGs from frame %d on: those this run does not write stay from "
                        "before", words(flag), folder, len(stale), min(stale))


def side_outputs(source: Source, writes: int | None) -> list[Path]:
    """The files a run replaces besides -o: the --stats file, and the frame PNGs (``frame_png_name``) the --masks and
    --instances folders hold already below frame ``writes`` (None: not known, so any); photos written as photos name
    their label PNGs as `ImageSet.output_paths` says."""
    folders = [] if source.writes_images else [folder for folder in (source.masks, source.instances) if folder]
    frame_pngs = [folder / frame_png_name(number) for folder in folders for number in frame_numbers(folder)
                  if writes is None or number < writes]
    return [*([source.stats] if source.stats else []), *frame_pngs]


def check_instances_written(source: Source, stills: bool, tracking: bool) -> None:
    """``--instances`` writes one PNG per tracked frame of a video: refused where it would write none."""
    if not source.instances:
        return
    if stills:
        raise ConfigError("--instances needs tracking, which runs on videos and image sequences (patterns) only: "
                          "photos are each their own picture", hint="give a video or a pattern (frames/%06d.png)")
    if not tracking:
        raise ConfigError("--instances needs tracking, which runs on videos and image sequences (patterns) only",
                          hint="drop --no-tracking (or tracking.enabled: false), or give a video or a pattern")
    if source.writes_images:
        raise ConfigError("--instances writes one PNG per frame of a video: a pattern written as photos is tracked, "
                          "but writes no instance PNGs", hint="give -o a video (frames.mp4), or leave --instances out "
                                                              "(--stats gives each person's track_id)")


def check_source(source: Source, config: Config, run_inputs: Sequence[Path] = (), words: Words = as_written
                 ) -> StreamSpec:
    """Everything about one source that can be checked before any process starts; its spec. ``run_inputs``: the
    files the run's other streams read, which its output must not replace either."""
    check_outputs_apart(source)
    if source.makes_its_folder and source.output is not None:
        make_folder(source.output.parent)
    if source.output is not None and source.writes_images:
        check_image_output(source.input, source.output)
    images = ImageSet.find(source.input) if is_image_input(source.input) else None
    spec = StreamSpec(config, source.input, source.output, masks_dir=source.masks, stats_path=source.stats,
                      instances_dir=source.instances, max_frames=source.max_frames, images=images, name=source.label)
    check_instances_written(source, spec.stills, config.tracking.enabled)
    frames = len(images.paths) if images else 0  # the frames the input holds, where known
    if images is not None and source.output is not None and not source.writes_images and len(set(images.sizes)) > 1:
        canvas = images.info()
        log.warning("%s: photos of %d sizes made into one %dx%d video: each is placed at its top left, on black",
                    source.label, len(set(images.sizes)), canvas.width, canvas.height)
    local = input_kind(source.input) is InputKind.FILE
    reads = [*(images.paths if images else [Path(source.input)] if local else []), *run_inputs]
    if images is not None and source.output is not None and source.writes_images:
        check_not_overwriting(reads, [path for pair in images.output_paths(source.output, source.masks) for path in pair])
    else:
        if local and not images:
            frames = probe(source.input).frames
        if source.output is not None:
            check_output_path(source.output)
            check_not_overwriting(reads, [source.output])
    writes = min(filter(None, (frames, source.max_frames)), default=None)
    check_not_overwriting(reads, side_outputs(source, writes))
    warn_of_earlier_frames(source, writes, words)
    if config.policy == "drop" and (images is not None or input_kind(source.input) is InputKind.FILE):
        log.warning("%s: policy drop on a file or photos drops every frame that comes while the workers are busy (a "
                    "file is read as fast as it decodes); the default, block, parses them all", source.label)
    return spec


def run_sources(config: Config, sources: Sequence[Source], hooks: RunHooks | None = None,
                words: Words = as_written) -> RunOutcome:
    """Run these inputs with this config on one worker pool, as `vidparse run` does. A stream that fails (its
    input missing, damaged, unreachable or lost for good, its output not writable) is reported in its outcome
    and stops alone; the others go on. Ctrl-C or SIGTERM (from the main thread) finishes the frames in flight;
    a second one aborts. Raises `VidparseError` only for what stops every stream (models, workers)."""
    outcome = run_to_end(config, sources, hooks, words)
    if outcome.error is not None:
        raise outcome.error
    return outcome


def run_to_end(config: Config, sources: Sequence[Source], hooks: RunHooks | None = None,
               words: Words = as_written) -> RunOutcome:
    """`run_sources`, but what stops every stream is returned as the outcome's ``error`` (each stream it cut short
    failed with it), not raised: `vidparse run` still shows every stream's row."""
    hooks = hooks or RunHooks()
    names = [source.label for source in sources]
    if len(set(names)) < len(names):
        raise ConfigError(f"stream names repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}",
                          hint="give each source its own name")
    outcomes = [StreamOutcome(name, source) for name, source in zip(names, sources)]
    read = files_read(sources)
    specs: dict[int, StreamSpec] = {}
    for index, (outcome, source) in enumerate(zip(outcomes, sources)):
        try:
            specs[index] = check_source(source, replace(config, policy=source.policy or config.policy), read, words)
        except VidparseError as exc:
            outcome.end = StreamEnd(index, "failed", exc)
    if not specs:
        return RunOutcome(outcomes)
    warn_if_oversubscribed(config.worker_count)
    engine = build_engine(config, list(specs.values()))
    for index, spec in specs.items():
        add_stream(engine, spec, _subscribers(hooks, index), on_open=_bind(hooks.on_open, index),
                   on_end=_ender(outcomes[index], len(outcomes) == 1, words),
                   on_connecting=_bind(hooks.on_connecting, index))
    error: VidparseError | None = None
    with stop_on_signals(engine.stop) as signals:
        try:
            engine.run()
        except VidparseError as exc:  # the engine's streams have ended (failed with it) before it is raised
            error = exc
    return RunOutcome(outcomes, interrupted=signals.received, error=error)


def _subscribers(hooks: RunHooks, index: int) -> list[Subscriber]:
    """``on_frame`` sees the source's index as the stream (the engine numbers only the streams it started)."""
    on_frame = hooks.on_frame
    return [] if on_frame is None else [lambda written, stats: on_frame(replace(written, stream=index), stats)]


def _bind(callback: Callable[[int, T], None] | None, index: int) -> Callable[[T], None] | None:
    """``callback`` with the source's index first (the engine numbers only the streams it started)."""
    return None if callback is None else (lambda value: callback(index, value))


def _ender(outcome: StreamOutcome, alone: bool, words: Words) -> Callable[[StreamEnd], None]:
    def ended(end: StreamEnd) -> None:
        outcome.end = end
        if end.message is not None and end.failed_alone and not alone:  # said when it happens: the others go on
            log.warning("stream %s failed: %s", outcome.name, words(end.message))
        if end.output is not None:
            outcome.paths = list(end.output.paths)
            timestamps = getattr(end.output, "timestamps", None)
            outcome.timestamps_repaired = timestamps.repaired if timestamps else 0

    return ended
