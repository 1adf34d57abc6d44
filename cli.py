"""The `vidparse` command line."""

from __future__ import annotations

import errno
import logging
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from vidparse.cli_help import Typer
from vidparse.errors import (INTERRUPTED_EXIT, STREAMS_FAILED_EXIT, UNEXPECTED_EXIT, BadInputError, BadOutputError,
                             ConfigError, VidparseError, check_not_overwriting, file_in_the_way, not_writable)
from vidparse.minimums import BENCH_MIN_FRAMES, EVAL_VIDEO_MIN_FRAMES

if TYPE_CHECKING:
    from rich.progress import Progress

    from vidparse.batch.local import LocalEngine
    from vidparse.batch.ray_engine import RayEngine
    from vidparse.config import Config
    from vidparse.evaluation.runs import ImageReport, VideoReport
    from vidparse.progress import RunReporter
    from vidparse.runs import RunOutcome, StreamOutcome

CONFIG_HELP = "YAML file overriding configs/default.yaml, or a preset name (crowd, fast)."
ConfigOption = Annotated[Optional[Path], typer.Option(help=CONFIG_HELP)]
ModelOption = Annotated[Optional[str], typer.Option(help="Parser: bodypix, cihp-lite, cihp-net, m2fp, m2fp-single.")]
ModelDirOption = Annotated[Optional[Path], typer.Option("--model-dir", help="Explicit model file or folder.")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]

app = Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
models_app = Typer(no_args_is_help=True, help="List, download and make models.")
app.add_typer(models_app, name="models")


def _print_version(given: bool) -> None:
    if given:
        from vidparse import __version__

        print(f"vidparse {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                                   help="Print the version and exit.")] = False) -> None:
    """Human parsing for video: every pixel of every person labelled, as an annotated video."""


MEASURE_CONNECT_ATTEMPTS = 3  # tune, bench and eval-video give up on a live input after this many reconnect attempts
REPORT_WIDTH = 1000  # columns of tables written to a file or a pipe (a terminal gives its own width)


def stderr_console() -> Console:
    """Where progress, summaries and messages go: stderr, at the terminal's width, or unwrapped in a file or a pipe (a
    log), where Rich would squeeze them into 80 columns and cut stream names and progress lines."""
    return Console(stderr=True, width=None if sys.stderr.isatty() else REPORT_WIDTH)


console = stderr_console()


def report_console() -> Console:
    """Where reports and tables go: stdout, at the terminal's width, or unwrapped in a file or a pipe (Rich would
    squeeze them into 80 columns there)."""
    return Console(width=None if sys.stdout.isatty() else REPORT_WIDTH)


def _setup_logging(verbose: bool) -> None:
    """Rich's log lines on a terminal; elsewhere (a file, a pipe, a service's journal) one unwrapped line each, as
    the child processes write theirs."""
    level = logging.DEBUG if verbose else logging.WARNING
    if console.is_terminal:
        logging.basicConfig(level=level, format="%(message)s", force=True,
                            handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=verbose)])
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S",
                            force=True)
    if not verbose:  # reconnects and segment rotations are worth a timestamped line in every run
        for name in ("vidparse.stages.source", "vidparse.stages.sink"):
            logging.getLogger(name).setLevel(logging.INFO)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn vidparse's errors into one line, a hint and the error's exit code. Anything else is a bug: one line
    too (exit 7), with the traceback only under --verbose."""
    try:
        yield
    except VidparseError as exc:
        _print_error(exc.message, exc.hint)
        raise typer.Exit(exc.exit_code) from None
    except typer.Exit:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C (or the first, where nothing stops gracefully); typer would say nothing
        console.print("[yellow]stopped[/] at once", highlight=False)
        raise typer.Exit(INTERRUPTED_EXIT) from None
    except (MemoryError, RuntimeError) as exc:
        if not isinstance(exc, MemoryError) and "can't start new thread" not in str(exc):
            raise _unexpected(exc) from None
        _print_error(f"out of memory ({str(exc) or type(exc).__name__})",
                     "raise the process's memory limit (ulimit -v, a container's), or use fewer --workers or --threads")
        raise typer.Exit(UNEXPECTED_EXIT) from None
    except OSError as exc:  # a path given with a name past the file system's limit: a mistyped value, not a bug
        if exc.errno != errno.ENAMETOOLONG:
            raise _unexpected(exc) from None
        _print_error(f"a name in {exc.filename} is too long",
                     "a file or folder name is at most 255 bytes on most file systems: shorten it")
        raise typer.Exit(ConfigError.exit_code) from None
    except Exception as exc:
        raise _unexpected(exc) from None


# The options of each command that set a config key: the parameter's name (as the command's function names it) ->
# the key. `_overrides` reads their values from the command line as parsed, and a wrong one is reported by the flag
# its option declares (`_flags_named`): nothing else names them.
_QUALITY_OVERRIDES = {"model": "model", "model_dir": "model_path", "roi_mode": "roi.mode", "margin": "roi.margin",
                      "person_height": "roi.person_height", "score_threshold": "detector.score_threshold"}
OVERRIDES: dict[str, dict[str, str]] = {
    "run": {"workers": "workers", "threads": "threads", "model": "model", "device": "device",
            "model_dir": "model_path", "alpha": "compose.alpha", "legend": "compose.legend",
            "queue_size": "queue_size", "policy": "policy", "rtsp_transport": "live.rtsp_transport",
            "reconnect_attempts": "live.reconnect_attempts", "open_timeout": "live.open_timeout_s",
            "read_timeout": "live.read_timeout_s", "segment_seconds": "output.segment_seconds",
            "fragmented": "output.fragmented", "max_memory": "max_memory_mb", "parse_every": "keyframes.parse_every",
            "tracking": "tracking.enabled", "max_missed": "tracking.max_missed", "track_ids": "tracking.draw_ids",
            "tiles": "detector.tiles"},
    "batch": {"model": "model", "segment_seconds": "batch.segment_seconds", "retries": "batch.retries",
              "cpus_per_task": "batch.cpus_per_task"},
    "bench": {"model": "model", "model_dir": "model_path", "threads": "threads"},
    "tune": {"model": "model", "model_dir": "model_path", "parse_every": "keyframes.parse_every"},
    "serve": {"workers": "workers", "max_upload_mb": "serve.max_upload_mb", "job_ttl_s": "serve.job_ttl_s",
              "max_data_mb": "serve.max_data_mb"},
    "eval": _QUALITY_OVERRIDES,
    "eval-video": {**_QUALITY_OVERRIDES, "temporal_window": "temporal.window"},
}


@dataclass(frozen=True)
class Overrides:
    values: dict[str, Any]  # config key -> the value its flag gave (None: not given)
    flags: dict[str, str]  # config key -> the flag, as typed


def _overrides(context: typer.Context) -> Overrides:
    """What the flags of the command running in ``context`` set (`OVERRIDES`), paths as text (as the configuration
    holds them)."""
    assert context.command.name is not None  # a command of the app
    options = {param.name: param for param in context.command.params}
    values, flags = {}, {}
    for name, key in OVERRIDES[context.command.name].items():
        value = context.params[name]
        values[key] = str(value) if isinstance(value, Path) else value
        option = options[name]
        typed = option.secondary_opts if value is False and option.secondary_opts else option.opts  # --no-tracking
        flags[key] = next((flag for flag in typed if flag.startswith("--")), typed[0])
    return Overrides(values, flags)


@contextmanager
def _flags_named(overrides: Overrides) -> Iterator[None]:
    """A wrong value that came from a flag is reported by the flag the user typed, not by its config key."""
    try:
        yield
    except ConfigError as exc:
        if exc.key is None or overrides.values.get(exc.key) is None:
            raise
        flag = overrides.flags[exc.key]
        hint = exc.hint and (exc.hint.replace(f"set {exc.key} to", f"give {flag}") if f"set {exc.key} to" in exc.hint
                             else exc.hint.replace(exc.key, flag))
        raise ConfigError(exc.message.replace(f"config key '{exc.key}'", flag), hint) from None


def _settings(context: typer.Context, config: Optional[Path]) -> Config:
    """The command's configuration: defaults, the --config file, then the flags given (`OVERRIDES`)."""
    from vidparse.config import load_config

    overrides = _overrides(context)
    with _flags_named(overrides):
        return load_config(config, overrides.values)


def _measuring(settings: Config) -> Config:
    """A measurement (tune, bench, eval-video) does not wait for ever on a live input that cannot be reached or is
    gone: at most MEASURE_CONNECT_ATTEMPTS reconnects, whatever the configuration says."""
    from dataclasses import replace

    if 0 <= settings.live.reconnect_attempts <= MEASURE_CONNECT_ATTEMPTS:
        return settings
    return replace(settings, live=replace(settings.live, reconnect_attempts=MEASURE_CONNECT_ATTEMPTS))


def _unexpected(exc: BaseException) -> typer.Exit:
    """Anything but vidparse's errors is a bug: one line (the traceback under --verbose), exit 7."""
    logging.getLogger(__name__).debug("unexpected failure", exc_info=exc)
    _print_error(f"unexpected {type(exc).__name__}: {exc}",
                 "this is a bug; run again with --verbose for the traceback and report it")
    return typer.Exit(UNEXPECTED_EXIT)


def check_file_output(path: Path | None, option: str, inputs: Sequence[str | Path | None] = (), *,
                      example: str) -> None:
    """Fail before any work if the file ``path`` given to ``option`` could not be written at the end: a folder, in a
    folder that does not exist, not writable (a read-only file or filesystem), or one of the command's ``inputs``
    (files, URLs, None for an option not given) itself. ``example``: a file name the hint offers in a folder given
    instead of a file."""
    if path is None:
        return
    check_not_overwriting([Path(i) for i in inputs if i is not None and "://" not in str(i)], [path])
    if path.is_dir():
        raise BadOutputError(f"{option} {path} is a folder", hint=f"give a file name, e.g. {path / example}")
    if not path.parent.is_dir():
        raise file_in_the_way(path, path.parent) or BadOutputError(
            f"{option} {path}: folder {path.parent} does not exist", hint=f"create it first: mkdir -p {path.parent}")
    if refused := not_writable(path):
        raise BadOutputError(f"{option} {path} is not writable: {refused.strerror}", hint=f"choose a writable {option} path")


def write_file_output(path: Path, option: str, text: str) -> None:
    """Write the file given to ``option`` (checked by `check_file_output` before the work), or fail with one line."""
    try:
        path.write_text(text)
    except OSError as exc:
        raise BadOutputError(f"cannot write {path}: {exc.strerror}", hint=f"choose a writable {option} path") from exc


def _print_error(message: str, hint: str | None) -> None:
    # Messages and hints are plain text: escaped, so that "vidparse[serve]" is not read as markup.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if hint:
        console.print(f"[dim]hint: {escape(hint)}[/]", highlight=False, soft_wrap=True)


@app.command()
def run(
    ctx: typer.Context,
    inputs: Annotated[Optional[list[str]], typer.Argument(
        metavar="INPUT", help="Video files, URLs FFmpeg can open, photos, folders of photos or patterns.")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="PATH",
        help="Video (.mp4, .m4v, .mov, .mkv), image or folder (a trailing / makes it); a folder for several inputs.")] = None,
    sources: Annotated[Optional[Path], typer.Option(
        help="YAML list of sources with per-source name, output, policy... (README, 'Many inputs').")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Parser worker processes.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Threads per worker; 0 = usable CPUs / workers.")] = None,
    model: ModelOption = None,
    model_dir: ModelDirOption = None,
    config: ConfigOption = None,
    masks: Annotated[Optional[Path], typer.Option(help="Write one palette PNG of class ids per frame here.")] = None,
    stats: Annotated[Optional[str], typer.Option(
        metavar="PATH", help="Write one JSON line of statistics per frame here (a folder: <name>.jsonl in it).")] = None,
    max_frames: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many frames (of a live input: frames received, those the drop policy drops included).")] = None,
    parse_every: Annotated[Optional[int], typer.Option(help="Parse every K-th frame; carry labels between by optical flow.")] = None,
    tracking: Annotated[Optional[bool], typer.Option("--tracking/--no-tracking", help="Track persons (video): stable ids, bridged misses, smoothed labels.")] = None,
    max_missed: Annotated[Optional[int], typer.Option(help="Tracking: frames a person survives without a detection.")] = None,
    tiles: Annotated[Optional[int], typer.Option(help="Detector: also look at tiles, this many across (small people); 0 = off. The zoomed look at small boxes is detector.zoom_below.")] = None,
    instances: Annotated[Optional[Path], typer.Option(help="Write one 16-bit PNG of track ids per frame here.")] = None,
    track_ids: Annotated[Optional[bool], typer.Option("--track-ids/--no-track-ids", help="Write track ids on the video.")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="Class color weight over the frame, 0..1.")] = None,
    legend: Annotated[Optional[bool], typer.Option("--legend/--no-legend", help="Draw the class legend.")] = None,
    device: Annotated[Optional[str], typer.Option(help="cpu or cuda: where the parser runs (ONNX Runtime's CUDA provider, or M2FP's PyTorch).")] = None,
    queue_size: Annotated[Optional[int], typer.Option(help="Frames waiting for a worker.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="When workers fall behind: block, drop (oldest), auto.")] = None,
    rtsp_transport: Annotated[Optional[str], typer.Option(help="RTSP over tcp or udp.")] = None,
    reconnect_attempts: Annotated[Optional[int], typer.Option(help="Live: failed reconnects in a row before giving up; -1 = never.")] = None,
    open_timeout: Annotated[Optional[float], typer.Option(help="Live: seconds to connect, to a first frame.")] = None,
    read_timeout: Annotated[Optional[float], typer.Option(help="Live: seconds without data that count as a stall.")] = None,
    max_memory: Annotated[Optional[int], typer.Option("--max-memory", help="Memory budget (MB) for the whole process tree.")] = None,
    segment_seconds: Annotated[Optional[float], typer.Option(help="Rotate the output into files of this length.")] = None,
    fragmented: Annotated[Optional[bool], typer.Option("--fragmented/--no-fragmented", help="Keep the finished MP4 fragmented (no fast-start rewrite at the end). A single MP4 is written in fragments either way, so a crash leaves a playable file; --segment-seconds files only with this.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Parse every person in each INPUT into an annotated video, or annotated photos and label PNGs.

    An INPUT is a file, rtsp://, http(s)://, /dev/videoN, or photos (a photo, a folder, a pattern). Several inputs
    share one pool of workers."""
    _setup_logging(verbose)
    from vidparse.progress import RunReporter
    from vidparse.runs import RunHooks, load_sources, no_empty_folder_left_on_error, path_or_folder, run_to_end, sources_for
    from vidparse.stages.source import without_credentials

    with user_errors(), no_empty_folder_left_on_error(output, stats, masks, instances):
        settings = _settings(ctx, config)
        if bool(inputs) == bool(sources):
            raise ConfigError("give the inputs or --sources FILE, not both" if inputs else "no input given",
                              hint="vidparse run INPUT -o OUTPUT.mp4, or vidparse run IN1 IN2 -o OUTDIR/, or "
                                   "vidparse run --sources sources.yaml -o OUTDIR/")
        if sources:  # -o and --stats are folders, made once the file is checked
            streams = load_sources(sources, Path(output) if output else None, masks, Path(stats) if stats else None,
                                   instances, max_frames)
        elif (target := path_or_folder(output)) is None:
            raise ConfigError("no output given", hint="add -o OUTPUT.mp4 (a folder for several inputs)")
        else:
            assert inputs  # no --sources, so inputs (checked above)
            streams = sources_for(inputs, target, masks, path_or_folder(stats), instances, max_frames)
        single = len(streams) == 1 and not sources
        names = [without_credentials(s.input) if "://" in s.input else Path(s.input).name for s in streams] \
            if single else [s.label for s in streams]
        with RunReporter(console, names) as reporter:
            def on_open(index: int, info: object) -> None:
                reporter.on_open(index, info)
                reporter.limit(index, streams[index].max_frames)

            outcome = run_to_end(settings, streams, RunHooks(on_open=on_open, on_frame=reporter.on_frame,
                                                             on_connecting=reporter.on_connecting))
        if single:
            _single_summary(reporter, outcome.streams[0])
        else:
            _streams_summary(reporter, outcome)
        if outcome.error is not None:  # what stopped every stream: one line, after the table, its own exit code
            raise outcome.error
        if outcome.exit_code:
            raise typer.Exit(outcome.exit_code)


def _single_summary(reporter: RunReporter, stream: StreamOutcome) -> None:
    """One input: its error as the only line, or the summary table as it always was."""
    if stream.error is not None:
        raise stream.error
    result, source, written = stream.stats, stream.source, stream.paths
    summary = reporter.summary(result)
    if stream.timestamps_repaired:
        summary.add_row("timestamps repaired (docs/faults.md)", f"{stream.timestamps_repaired}")
    console.print(summary)
    if not written:
        console.print("[yellow]interrupted[/] before a frame was written: nothing written" if result.interrupted
                      else "nothing written", soft_wrap=True)
        return
    files = ", ".join(map(str, written)) if len(written) <= 3 else f"{len(written)} files in {written[0].parent}"
    labels_beside = source.writes_images and not source.masks  # else --masks names their folder
    beside = ", each with its label PNG beside it" if len(written) > 1 else ", its label PNG beside it"
    console.print("wrote " + files + (beside if labels_beside else "")
                  + (f", masks in {source.masks}" if source.masks else "")
                  + (f", stats in {source.stats}" if source.stats else "")
                  + (f", instances in {source.instances}" if source.instances else ""), soft_wrap=True, markup=False)
    if result.degraded and not result.interrupted:
        console.print("[yellow]degraded run:[/] see the summary; --stats marks frames written without labels",
                      soft_wrap=True)


def _streams_summary(reporter: RunReporter, outcome: RunOutcome) -> None:
    """Several inputs: a row per stream, then one error line (and hint) per stream that failed on its own (what
    stopped every stream is said once, by the caller)."""
    console.print(reporter.streams_table(outcome))
    written = [str(path) for stream in outcome.streams for path in stream.paths]
    if written:
        console.print("wrote " + ", ".join(written), soft_wrap=True, markup=False)
    for stream in outcome.failed:
        if (error := stream.error) is outcome.error:
            continue
        _print_error(f"stream {stream.name}: {getattr(error, 'message', error)}", getattr(error, "hint", None))
    if any(s.status == "degraded" for s in outcome.streams):
        console.print("[yellow]degraded streams:[/] see the table; --stats marks frames written without labels",
                      soft_wrap=True)


@app.command()
def batch(
    ctx: typer.Context,
    outdir: Annotated[Path, typer.Option("--output", "-o", help="Folder for the outputs and manifest.jsonl.")],
    inputs: Annotated[Optional[list[str]], typer.Argument(metavar="INPUT", help="Video files, folders of videos or glob patterns.")] = None,
    list_file: Annotated[Optional[Path], typer.Option("--list", help="A file with one input per line.")] = None,
    engine: Annotated[str, typer.Option(help="local (this machine) or ray (a Ray cluster).")] = "local",
    ray_address: Annotated[str, typer.Option("--ray-address", help="auto or HOST:PORT of the Ray head.")] = "auto",
    gather: Annotated[bool, typer.Option("--gather/--no-gather", help="Ray: send outputs back to this machine "
                                         "(else the output folder must be a path every node shares).")] = False,
    segment_seconds: Annotated[Optional[float], typer.Option(help="Split videos longer than this at keyframes; 0 = never.")] = None,
    retries: Annotated[Optional[int], typer.Option(help="Runs again of a failed segment before its input fails.")] = None,
    cpus_per_task: Annotated[Optional[int], typer.Option(help="CPUs (parser workers) of one segment task.")] = None,
    masks: Annotated[bool, typer.Option("--masks/--no-masks", help="Also write OUTDIR/<name>_masks/ (class-id PNGs).")] = False,
    model: ModelOption = None,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Parse many videos into OUTDIR/<name>.mp4, resumable (OUTDIR/manifest.jsonl), here or on a Ray cluster."""
    _setup_logging(verbose)
    from vidparse.batch.driver import BatchDriver
    from vidparse.batch.inputs import expand
    from vidparse.batch.manifest import only_batch_in
    from vidparse.batch.progress import BatchProgress, summary_table
    from vidparse.signals import stop_on_signals
    from vidparse.stages.writers import make_directory

    with user_errors(), ExitStack() as stack:
        settings = _settings(ctx, config)
        if engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, not '{engine}'", hint="--engine local")
        if engine == "local" and (gather or ray_address != "auto"):
            raise ConfigError("--ray-address and --gather are for --engine ray", hint="add --engine ray, or leave them out")
        if outdir.exists() and not outdir.is_dir():
            raise BadOutputError(f"-o {outdir} is a file; batch writes into a folder",
                                 hint=f"give -o a folder (made if missing), e.g. -o {outdir.parent / 'parsed'}; "
                                      f"`vidparse run VIDEO -o {outdir}` parses one video into one file")
        found, problems = expand(list(inputs or []), list_file, outdir)
        if not found and not problems:
            raise ConfigError("no inputs", hint="give video files, folders or patterns, or --list FILE")
        make_directory(outdir, "output folder")
        stack.enter_context(only_batch_in(outdir))
        progress = BatchProgress(console)
        # no engine, nothing runs: no record either (a manifest's done inputs stay done)
        engine_ = _batch_engine(engine, ray_address, settings.batch.cpus_per_task)
        runner = BatchDriver(settings, outdir, engine_, progress, masks=masks, gather=gather)
        console.print(engine_.description, highlight=False)
        try:
            with progress, stop_on_signals(runner.cancel, "cancelling the running segments (a rerun parses their "
                                                          "inputs; finished inputs are kept)"):
                records = runner.run(found, problems)
        finally:
            engine_.close()
        if runner.interrupted:
            console.print(f"[yellow]interrupted:[/] {len(records)} input(s) recorded; a rerun does the others",
                          highlight=False)
            raise typer.Exit(INTERRUPTED_EXIT)
    report_console().print(summary_table(records, runner.skipped))
    failed = sum(r.state == "failed" for r in records)
    console.print(f"{len(records) - failed} done, {failed} failed, {len(runner.skipped)} skipped; "
                  f"manifest: {runner.manifest.path}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(STREAMS_FAILED_EXIT)


def _batch_engine(engine: str, ray_address: str, cpus_per_task: int) -> LocalEngine | RayEngine:
    if engine == "ray":
        from vidparse.batch.ray_engine import RayEngine

        return RayEngine(ray_address, cpus_per_task)
    from vidparse.batch.local import LocalEngine

    return LocalEngine(cpus_per_task)


@app.command()
def bench(
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(metavar="INPUT", help="Video to benchmark on (e.g. vtest.avi).")],
    frames: Annotated[int, typer.Option(min=BENCH_MIN_FRAMES, help="Frames per trial (the first and two more at "
                                                                   "least, for a steady fps).")] = 100,
    workers: Annotated[str, typer.Option(help="Comma-separated worker counts to try (each once, fewest first).")] = "1,2",
    threads: Annotated[Optional[int], typer.Option(min=0, help="Threads per worker; 0 = usable CPUs / workers "
                                                               "(default: --config's threads, else 0).")] = None,
    model: ModelOption = None,
    model_dir: ModelDirOption = None,
    config: ConfigOption = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Also write the table as Markdown here.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Measure fps and per-stage time of the real pipeline for several worker counts."""
    _setup_logging(verbose)
    from rich.progress import Progress

    from vidparse.bench import (COLUMNS, check_long_enough, frames_measured, machine_description, markdown_table,
                                run_trial, small_people_settings, trial_rows)
    from vidparse.runs import warn_if_oversubscribed
    from vidparse.stages.source import input_kind, probe, without_credentials

    with user_errors():
        if input_kind(input).always_live:
            shown = without_credentials(input)
            raise BadInputError(f"bench measures a video file; {shown} is a live input, which drops frames to keep up",
                                hint=f"record a clip of it first, or size the workers for it with: vidparse tune {shown}")
        check_file_output(markdown, "--markdown", [input, config], example="bench.md")
        settings = _measuring(_settings(ctx, config))  # checked as run checks it
        counts = _worker_counts(workers)
        warn_if_oversubscribed(max(counts))
        info = probe(input, settings.live)
        if info.frames:  # where the header tells, before any trial; else once measured
            check_long_enough(input, info.frames)
        variants = small_people_settings(settings, info.width)
        trials = []
        with Progress(console=console) as progress:
            task = progress.add_task("bench", total=len(counts) * len(variants))
            try:
                for count in counts:
                    for label, variant in variants:
                        progress.update(task, description=f"workers={count}, small people {label}")
                        trials.append(run_trial(variant, input, frames, count, settings.threads, label))
                        progress.advance(task)
            except KeyboardInterrupt:
                console.print(f"[yellow]interrupted:[/] {escape(str(markdown or 'the table'))} not written", soft_wrap=True)
                raise typer.Exit(INTERRUPTED_EXIT) from None
        frames = frames_measured(trials, frames, input)
    table = Table(title=f"vidparse bench: {settings.model}, first {frames} frames of {escape(Path(input).name)}")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for row in trial_rows(trials):
        table.add_row(*row)
    report_console().print(table)
    report_console().print(f"machine: {machine_description()}")
    if markdown:
        with user_errors():
            write_file_output(markdown, "--markdown", f"machine: {machine_description()}\n\n"
                              + markdown_table(trials, settings.model, Path(input).name, frames))


@app.command()
def tune(
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(metavar="INPUT", help="Video (or stream) to tune on, like the ones you will parse.")],
    seconds: Annotated[float, typer.Option(min=1, help="Measuring time per trial, after a warm-up.")] = 10,
    max_workers: Annotated[Optional[int], typer.Option(min=1, help="Try at most this many workers.")] = None,
    model: ModelOption = None,
    model_dir: ModelDirOption = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file or preset to tune, as for run.")] = None,
    parse_every: Annotated[Optional[int], typer.Option(help="Keyframe mode to tune with, as for run.")] = None,
    write: Annotated[Path, typer.Option("--write", "-w", help="Config file to write the pick to.")] = Path("vidparse-tuned.yaml"),
    verbose: VerboseOption = False,
) -> None:
    """Try (workers, threads per worker) layouts that fit the CPUs this process may use; write the fastest as a config."""
    _setup_logging(verbose)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vidparse.bench import machine_description, small_people_settings
    from vidparse.config import config_from, user_settings
    from vidparse.names import plural
    from vidparse.pipeline.cpus import usable_cpus
    from vidparse.stages.source import InputKind, input_kind, probe, without_credentials
    from vidparse.tune import TrialResult, best, check_long_enough, fastest, layouts, run_trial, tuned_config_text

    with user_errors():
        # the --config file may be written over: the tuned config is that file's settings, merged
        check_file_output(write, "--write", [input], example="vidparse-tuned.yaml")
        flags = _overrides(ctx)
        chosen = user_settings(config, flags.values)
        with _flags_named(flags):
            settings = config_from(chosen)
        settings = _measuring(settings)
        # a live input is not opened twice: its small-people pass is not measured apart
        cpus = usable_cpus()
        grid = layouts(cpus, max_workers)
        info = probe(input) if input_kind(input) is InputKind.FILE else None
        if info is not None and info.frames:  # where the header tells, before any trial; else as each one ends
            check_long_enough(input, info.frames, grid)
        variants = small_people_settings(settings, info.width) if info is not None else []
        no_small_people = variants[1][1] if len(variants) > 1 else None
        results: list[TrialResult] = []
        without: TrialResult | None = None
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} trials"),
                      TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("tune", total=len(grid) + (no_small_people is not None))
            try:
                for layout in grid:
                    progress.update(task, description=f"trying {layout}")
                    results.append(run_trial(settings, input, layout, seconds, cpus))
                    progress.advance(task)
                pick = best(results)
                if no_small_people is not None:
                    progress.update(task, description=f"trying {pick.layout} without the small-people pass")
                    without = run_trial(no_small_people, input, pick.layout, seconds, cpus)
                    progress.advance(task)
            except KeyboardInterrupt:
                console.print(f"[yellow]interrupted:[/] {escape(str(write))} not written", soft_wrap=True)
                raise typer.Exit(INTERRUPTED_EXIT) from None
        machine = machine_description()
        typed = " ".join(shlex.quote(without_credentials(arg) if "://" in arg else arg) for arg in sys.argv[1:])
        write_file_output(write, "--write", tuned_config_text(chosen, pick, results, f"vidparse {typed}", machine,
                                                              without))
    table = Table(title=f"vidparse tune: {settings.model} on {escape(Path(input).name)}, {plural(cpus, 'usable CPU')}, "
                        f"{seconds:g} s a trial")
    for column in ("", "workers", "threads", "fps", "serial ceiling fps", "p95 frame ms", "peak MB", "CPU busy",
                   "start-up s"):
        table.add_column(column, justify="right")
    top = fastest(results)
    for r in results + ([without] if without else []):
        ceiling = "n/a" if r.serial_ceiling_fps is None else f"{r.serial_ceiling_fps:.0f}"
        name = ("best" if r is pick else "best, no small-people pass" if r is without else
                "fastest" if r is top else "")
        table.add_row(name, str(r.layout.workers), str(r.layout.threads), f"{r.fps:.2f}",
                      ceiling, f"{r.p95_frame_ms:.0f}", f"{r.peak_mb:.0f}", f"{r.cpu_share:.0%}", f"{r.startup_s:.1f}",
                      style="bold green" if r is pick else None)
    report_console().print(table)
    report_console().print(f"machine: {machine}")
    report_console().print(f"wrote {write}: vidparse run INPUT -o OUTPUT.mp4 --config {write}", soft_wrap=True,
                           markup=False)
    if short := [r for r in results if r.seconds < 0.9 * seconds]:
        console.print(f"[yellow]warning:[/] {escape(Path(input).name)} ended before the {seconds:g} s window in {len(short)} "
                      f"of {len(results)} trials (measured over {min(r.seconds for r in short):.1f} s at the least): "
                      "a pick from such short windows is a rough one; tune on a longer video", soft_wrap=True)


def _worker_counts(text: str) -> list[int]:
    import dataclasses

    from vidparse.config import Config

    low, high = next(f for f in dataclasses.fields(Config) if f.name == "workers").metadata["range"]
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < low or max(counts) > high:
        raise ConfigError(f"--workers must be a comma-separated list of whole numbers from {low} to {high}, got "
                          f"'{text}'", hint="for example --workers 1,2,4")
    return sorted(set(counts))  # speed-up is against the fewest: they come first, each once


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    token: Annotated[Optional[str], typer.Option(envvar="VIDPARSE_TOKEN", help="Bearer token required on every route but /healthz and the page /.")] = None,
    config: ConfigOption = None,
    workers: Annotated[Optional[int], typer.Option(help="Parser worker processes (shared by jobs and streams).")] = None,
    max_upload_mb: Annotated[Optional[int], typer.Option("--max-upload-mb", help="Larger uploads get 413.")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Keep jobs' files here: a server started again on it finds them (default: a temporary folder).")] = None,
    allow_dir: Annotated[Optional[list[Path]], typer.Option("--allow-dir", metavar="DIR", help="A folder JSON job inputs may name (repeat).")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option("--allow-host", metavar="HOST", help="A host URLs may name even when it is private or loopback (repeat).")] = None,
    allow_private: Annotated[bool, typer.Option("--allow-private", help="URLs may name any host, private, loopback and link-local ones included.")] = False,
    job_ttl_s: Annotated[Optional[float], typer.Option("--job-ttl-s", help="Finished jobs and their files are removed this long after they end.")] = None,
    max_data_mb: Annotated[Optional[int], typer.Option("--max-data-mb", help="Quota of the data dir: oldest finished jobs go first, then new jobs get 507.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Serve a web page and a REST API for photos, video jobs and live cameras (docs/serve.md)."""
    _setup_logging(verbose)
    if not verbose:  # a service's log tells when jobs and streams start and end
        logging.getLogger("vidparse.service").setLevel(logging.INFO)
    with user_errors():
        settings = _settings(ctx, config)
        try:
            from vidparse.service.app import ServeSettings
            from vidparse.service.server import serve as run_server
        except ImportError as exc:
            raise ConfigError(f"vidparse serve needs {exc.name}", hint='pip install "vidparse[serve]"') from exc

        serve_settings = ServeSettings(settings, host, port, token, data_dir, list(allow_dir or []),
                                       list(allow_host or []), allow_private)
        serve_settings.check()
        console.print(f"vidparse serving on http://{host}:{port}/ (API schema at /openapi.json)", soft_wrap=True)
        try:
            run_server(serve_settings, "debug" if verbose else "warning")
        except KeyboardInterrupt:  # uvicorn raises the Ctrl-C it drained for again once it has shut down
            console.print("[yellow]stopped[/]", highlight=False)
            raise typer.Exit(INTERRUPTED_EXIT) from None


@models_app.command("list")
def models_list(verbose: VerboseOption = False) -> None:
    """Show known models and where each was found."""
    _setup_logging(verbose)
    from vidparse.model_store import MODELS, find_model, model_dir, search_dirs

    with user_errors():
        found = {spec.name: find_model(spec.name) for spec in MODELS.values()}
    out = report_console()
    table = Table(title="models")
    table.add_column("name")
    # a path is shown whole: folded in a terminal, on one line in a file (which has no width)
    table.add_column("found at", overflow="fold", no_wrap=not out.is_terminal)
    table.add_column("license")
    table.add_column("what")
    for spec in MODELS.values():
        path = found[spec.name]
        lacking = [need for need in spec.needs if found[need] is None]
        where = (escape(str(path)) if path else "[red]missing[/]") + (
            f" [red](needs {', '.join(lacking)}: missing)[/]" if path and lacking else "")
        table.add_row(spec.name, where, spec.license, spec.description)
    out.print(table)
    out.print("searched: " + ", ".join(escape(str(d)) + _folder_problem(d, d == model_dir()) for d in search_dirs()))


def _folder_problem(folder: Path, named_by_user: bool) -> str:
    """What `vidparse models list` says after a searched folder that cannot hold models: a file, or (where the user
    named it: $VIDPARSE_MODEL_DIR) a folder that is not there. The user cache is made by the first pull."""
    if folder.exists() and not folder.is_dir():
        return " [red](not a folder)[/]"
    return " [red](does not exist)[/]" if named_by_user and not folder.exists() else ""


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Model name (see `vidparse models list`).")],
    url: Annotated[Optional[str], typer.Option("--from", help="Download from this URL instead of the public source.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Download a model into the user cache, checking its sha256."""
    _setup_logging(verbose)
    from rich.progress import DownloadColumn, Progress, TaskID, TransferSpeedColumn

    from vidparse.model_store import model_spec, pull

    with user_errors():
        model_spec(name)  # an unknown name is one error line, before any progress bar
        progress = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=console)
        task: TaskID | None = None

        def on_bytes(done: int, total: int | None) -> None:  # the bar shows once bytes come, not before a failure
            nonlocal task
            if task is None:
                progress.start()
                task = progress.add_task(f"pull {name}", total=None)
            progress.update(task, completed=done, total=total or None)

        try:
            path = pull(name, url, progress=on_bytes)
        finally:
            if task is not None:  # stopped unstarted, it prints an empty line
                progress.stop()
    console.print(f"{name}: {path}", markup=False)


@models_app.command("make-random")
def models_make_random(
    name: Annotated[str, typer.Argument(metavar="NAME", help="m2fp or m2fp-single.")],
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Folder to write configuration.json and pytorch_model.pt into.")],
    tiny: Annotated[bool, typer.Option(help="A tiny configuration, for fast tests.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a checkpoint the folder holds already.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Write an M2FP checkpoint folder in ModelScope's format with random weights."""
    _setup_logging(verbose)
    with user_errors():
        if name not in ("m2fp", "m2fp-single"):
            raise ConfigError(f"make-random knows only m2fp and m2fp-single, not '{name}'", hint="vidparse models make-random m2fp DIR")
        from vidparse.stages.parsers.m2fp import make_random_checkpoint

        path = make_random_checkpoint(directory, tiny=tiny, single_human=name == "m2fp-single", force=force)
    console.print(f"wrote {path}", markup=False)


RoiModeOption = Annotated[Optional[str], typer.Option("--roi-mode", help="roi: parse person crops; whole: whole frames.")]
MarginOption = Annotated[Optional[float], typer.Option(help="Context around each person box, share of its size.")]
PersonHeightOption = Annotated[Optional[int], typer.Option("--person-height", help="Height crops are scaled to, pixels.")]
ScoreOption = Annotated[Optional[float], typer.Option("--score-threshold", help="Detector person score threshold.")]
JsonOption = Annotated[Optional[Path], typer.Option("--json", help="Also write the report as JSON here.")]


def _progress() -> Progress:
    from rich.progress import MofNCompleteColumn, Progress

    return Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=console)


def _report(table: Table, report: ImageReport | VideoReport, json_path: Optional[Path]) -> None:
    from vidparse.evaluation.runs import write_json

    report_console().print(table)
    if json_path:
        write_json(report, json_path)
        console.print(f"wrote {json_path}", markup=False)


@app.command("eval")
def eval_images(
    ctx: typer.Context,
    images: Annotated[Path, typer.Argument(metavar="IMAGES_DIR", help="Folder of images (jpg, png, webp, bmp, tiff).")],
    labels: Annotated[Path, typer.Argument(metavar="LABELS_DIR", help="Folder of ground-truth label PNGs, one per image, same stem.")],
    label_set: Annotated[str, typer.Option("--label-set", help="Label set of the ground truth: cihp, ccp or bodypix "
                                                           "(as `vidparse run --model bodypix --masks` writes it).")],
    scheme: Annotated[str, typer.Option(help="Classes scored: coarse (body regions), garments (skin, hair, upper, "
                                             "lower, footwear) or fine (garment types: coat, dress, skirt, pants...).")
                      ] = "coarse",
    model: ModelOption = None,
    model_dir: ModelDirOption = None,
    config: ConfigOption = None,
    roi_mode: RoiModeOption = None,
    margin: MarginOption = None,
    person_height: PersonHeightOption = None,
    score_threshold: ScoreOption = None,
    json_path: JsonOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Score parsing against ground-truth label maps: IoU per class of a scheme, mIoU and pixel accuracy."""
    _setup_logging(verbose)
    from vidparse.evaluation.datasets import check_labels, find_samples
    from vidparse.evaluation.runs import evaluate_images
    from vidparse.evaluation.tables import image_table
    from vidparse.jobs import ResolvedModels
    from vidparse.pipeline.cpus import threads_per_worker
    from vidparse.stages.labels import SCHEMES, load_label_set

    with user_errors():
        if scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme '{scheme}'", hint=f"choose one of: {', '.join(SCHEMES)}")
        settings = _settings(ctx, config)
        truth = load_label_set(label_set)
        samples = find_samples(images, labels)
        check_file_output(json_path, "--json", [config, *(p for s in samples for p in (s.image_path, s.label_path))],
                          example="out.json")
        check_labels(samples, truth)  # a bad label map is found before any photo is parsed
        models = ResolvedModels.for_config(settings)
        with _progress() as progress:
            task = progress.add_task("eval", total=len(samples))
            report = evaluate_images(settings, models, truth, samples, threads_per_worker(1, settings.threads),
                                     on_sample=lambda _: progress.advance(task), scheme=scheme)
        _report(image_table(report), report, json_path)


@app.command("train")
def train_weights(
    images: Annotated[Path, typer.Argument(metavar="IMAGES_DIR", help="Folder of labelled photos (jpg, png, webp, bmp, tiff).")],
    labels: Annotated[Path, typer.Argument(metavar="LABELS_DIR", help="Folder of their label PNGs, one per photo, same stem.")],
    label_set: Annotated[str, typer.Option("--label-set", help="Label set of the labels: ccp or cihp.")] = "ccp",
    output: Annotated[Path, typer.Option("--output", "-o", help="Weights file to write (ONNX); MODEL_CARD.md goes "
                                                                  "beside it.")] = Path("cihp-net.onnx"),
    folds: Annotated[int, typer.Option(min=0, max=20, help="k of the k-fold scores reported first; 0 skips them.")] = 4,
    epochs: Annotated[int, typer.Option(min=1, max=1000, help="Passes over the photos.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed of everything random: the same seed gives the same weights on the same kind of CPU.")] = 0,
    processes: Annotated[int, typer.Option(min=0, help="Processes computing the frozen models' outputs; 0 = one per "
                                                        "usable CPU.")] = 0,
    cache: Annotated[Optional[Path], typer.Option(help="Folder keeping the frozen models' outputs between runs "
                                                        "(default: the user cache).")] = None,
    float32: Annotated[bool, typer.Option("--float32", help="Train in float32 even on a CPU with bfloat16 "
                                                             "instructions (about 1.6x the time).")] = False,
    class_weight_power: Annotated[float, typer.Option(min=0.0, max=1.0, help="Loss weight of each class: its pixel "
                                                      "share to this power, negated (0 = unweighted, 0.5 = inverse "
                                                      "square root).")] = 0.5,
    verbose: VerboseOption = False,
) -> None:
    """Train cihp-net's network from labelled photos: k-fold scores, then weights and a model card."""
    _setup_logging(verbose)
    logging.getLogger("vidparse.training").setLevel(logging.INFO)  # each epoch's loss, each fold scored
    from vidparse.signals import interrupted_by_stop_signals

    # from the start: a script's background job has SIGINT ignored until the block, and checking ccp-train's
    # photos takes seconds
    with user_errors(), interrupted_by_stop_signals():
        from vidparse.evaluation.tables import image_table

        try:
            from vidparse.training.run import TrainingJob
        except ImportError as exc:
            raise ConfigError(f"training needs {exc.name}", hint='pip install "vidparse"') from exc
        check_file_output(output, "--output", example="cihp-net.onnx")
        job = TrainingJob(images, labels, label_set, output, folds, epochs, seed, processes, cache,
                          bfloat16=not float32, class_weight_power=class_weight_power)
        samples = job.check()
        with _progress() as progress:
            card = job.run(progress, samples)
        for report in job.scores.values():
            report_console().print(image_table(report))
        console.print(f"wrote {output} and {card}", markup=False)


@app.command("eval-video")
def eval_video(
    ctx: typer.Context,
    input: Annotated[str, typer.Argument(metavar="VIDEO", help="Video file, or a URL FFmpeg can open.")],
    max_frames: Annotated[Optional[int], typer.Option(min=EVAL_VIDEO_MIN_FRAMES, help="Stop after this many frames.")] = None,
    temporal_window: Annotated[Optional[int], typer.Option(
        "--temporal-window", help="Parses the vote moves by flow and votes over (temporal.window; 1 = off).")] = None,
    truth: Annotated[Optional[Path], typer.Option(
        help="MOT ground truth (gt.txt: frame,id,x,y,w,h,...): also count ID switches of the tracks.")] = None,
    model: ModelOption = None,
    model_dir: ModelDirOption = None,
    config: ConfigOption = None,
    roi_mode: RoiModeOption = None,
    margin: MarginOption = None,
    person_height: PersonHeightOption = None,
    score_threshold: ScoreOption = None,
    json_path: JsonOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Measure how steady a video's labels are: flicker, frame-to-frame agreement, ID switches.

    Flicker is labels changing where the image stood still and persons vanishing for a frame or three; agreement is
    between consecutive frames (as is, and with the motion taken out by optical flow) and with each frame's own
    parse; ID switches are counted against MOT ground truth. Per frame, and as `vidparse run` writes the labels."""
    _setup_logging(verbose)
    from vidparse.evaluation.runs import check_long_enough, evaluate_video
    from vidparse.evaluation.tracking import read_mot
    from vidparse.evaluation.tables import video_table
    from vidparse.jobs import ResolvedModels
    from vidparse.pipeline.cpus import threads_per_worker
    from vidparse.stages.source import probe

    with user_errors():
        check_file_output(json_path, "--json", [input, truth, config], example="out.json")
        settings = _measuring(_settings(ctx, config))
        frames = probe(input, settings.live).frames or 0  # a camera that cannot be reached fails here, before the bar
        check_long_enough(input, frames)  # where the header tells; else once measured
        ground_truth = read_mot(truth) if truth else None
        models = ResolvedModels.for_config(settings)
        with _progress() as progress:
            task = progress.add_task("eval-video", total=min(filter(None, (frames, max_frames)), default=None))
            report = evaluate_video(settings, models, input, max_frames, threads_per_worker(1, settings.threads),
                                    on_frame=lambda: progress.advance(task), truth=ground_truth)
        if ground_truth is not None and not any(0 <= seq < report.frames for seq in ground_truth):
            console.print(f"[yellow]warning:[/] no box of {escape(str(truth))} falls on frames 1-{report.frames} of the video: "
                          "ID switches are not counted (n/a)", highlight=False, soft_wrap=True)
        _report(video_table(report), report, json_path)


def main() -> None:
    app()
