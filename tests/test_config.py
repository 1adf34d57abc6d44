import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from conftest import run_cli
from vidparse.cli import CONFIG_HELP
from vidparse.config import Config, default_config_path, load_config, preset_names, read_yaml
from vidparse.errors import ConfigError
from vidparse.pipeline import cpus
from vidparse.pipeline.cpus import threads_per_worker, usable_cpus


@pytest.fixture
def six_cpus_in_a_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An affinity of 6 CPUs and an empty cgroup folder (no quota) standing in for /sys/fs/cgroup."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setattr(cpus, "CGROUP_ROOT", tmp_path)
    return tmp_path


def test_defaults_load(six_cpus_in_a_cgroup: Path) -> None:
    config = load_config()
    assert (config.model, config.workers, config.roi.mode) == ("cihp-net", None, "roi")
    assert config.worker_count == 6, "no worker count given: one per usable CPU"
    assert config.parser_options.segmenter_detail == 0.7
    (six_cpus_in_a_cgroup / "cpu.max").write_text("250000 100000\n")
    assert load_config().worker_count == 2, "a 2.5 CPU quota gives 2 workers"


@pytest.mark.parametrize(
    "files, expected",
    [
        ({}, 6),
        ({"cpu.max": "max 100000"}, 6),
        ({"cpu.max": "250000 100000"}, 2),
        ({"cpu.max": "800000 100000"}, 6),
        ({"cpu.max": "50000 100000"}, 1),
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 6),
    ],
    ids=["no-quota", "v2-max", "v2-2.5", "v2-above-affinity", "v2-half", "v1-3", "v1-unlimited"],
)
def test_usable_cpus_is_the_affinity_capped_by_the_cgroup_quota(six_cpus_in_a_cgroup: Path, files: dict[str, str],
                                                                 expected: int) -> None:
    for name, text in files.items():
        (six_cpus_in_a_cgroup / name).parent.mkdir(exist_ok=True)
        (six_cpus_in_a_cgroup / name).write_text(text + "\n")
    assert usable_cpus() == expected


def test_threads_per_worker_share_the_usable_cpus(six_cpus_in_a_cgroup: Path) -> None:
    assert [threads_per_worker(workers, 0) for workers in (1, 2, 4, 6, 8)] == [6, 3, 1, 1, 1]
    assert threads_per_worker(4, 5) == 5, "an explicit thread count wins"


def test_python_defaults_equal_the_yaml() -> None:
    """A Config made in Python (no YAML read) is the one configs/default.yaml gives, and the YAML names every key
    the dataclasses have (so it documents them all)."""
    assert Config() == load_config()

    def keys(node: dict, prefix: str = "") -> set[str]:
        return {f"{prefix}{k}" for k in node} | {key for k, v in node.items() if isinstance(v, dict)
                                                  for key in keys(v, f"{prefix}{k}.")}

    assert keys(read_yaml(default_config_path())) == keys(Config().to_dict())


def test_file_then_cli_overrides(tmp_path: Path) -> None:
    path = tmp_path / "my.yaml"
    path.write_text("workers: 3\nroi:\n  margin: 0.3\ncompose:\n  alpha: 0.2\n")
    config = load_config(path, {"workers": 2, "compose.alpha": None})
    assert config.workers == 2  # the flag wins
    assert config.roi.margin == 0.3 and config.roi.person_height == 512  # the file, merged over defaults
    assert config.compose.alpha == 0.2  # a flag not given leaves the file's value


def test_the_old_keyframe_cut_key_sets_the_one_cut_threshold(tmp_path: Path) -> None:
    """Keyframe mode and the vote share one cut threshold (`temporal.cut_share`), so they cannot disagree on what a
    cut is; `keyframes.cut_share`, the keyframe stage's own until then, still sets it, and says it moved."""
    old = tmp_path / "old.yaml"
    old.write_text("keyframes:\n  parse_every: 5\n  cut_share: 0.5\n")
    config = load_config(old)
    assert config.temporal.cut_share == 0.5 and config.keyframes.parse_every == 5
    assert load_config(old, {"temporal.cut_share": 0.5}).temporal.cut_share == 0.5
    with pytest.raises(ConfigError, match="'keyframes.cut_share' .0.5. and 'temporal.cut_share' .0.2."):
        load_config(old, {"temporal.cut_share": 0.2})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"workers": 0}, "'workers' must be between 1 and 1024, got 0"),
        ({"threads": -2}, "'threads' must be between 0 and 1024, got -2"),
        ({"compose.alpha": 1.5}, "'compose.alpha' must be between 0.0 and 1.0, got 1.5"),
        ({"workers": "two"}, "'workers' must be a whole number, got 'two'"),
        ({"workers": 1.5}, "'workers' must be a whole number"),
        ({"compose.legend": "yes"}, "'compose.legend' must be true or false"),
        ({"roi.mode": "boxes"}, "'roi.mode' must be one of roi, whole"),
        ({"roi.shape": 3}, "unknown config key 'roi.shape'"),
        ({"colour": 3}, "unknown config key 'colour'"),
        ({"parsers.bodypix.threshold": 0.3}, "unknown config key 'parsers.bodypix.threshold'"),
        ({"parsers.bodypix.person_threshold": 1.0}, "'parsers.bodypix.person_threshold' must be between"),
        ({"parsers.cihp-lite.material_height": 16}, "'parsers.cihp-lite.material_height' must be between 64 and"),
        ({"parsers.cihp-net.class_offsets.kilt": 1.0}, "unknown config key 'parsers.cihp-net.class_offsets.kilt'"),
        ({"parsers.cihp-net.class_offsets.skirt": "more"}, "'parsers.cihp-net.class_offsets.skirt' must be a number"),
        ({"parsers.cihp_net.mirror": True}, "unknown config key 'parsers.cihp_net'"),
        ({"compose.on": True, "compose.colour": "red"}, "unknown config key 'compose.colour'"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=overrides)
    assert message in caught.value.message
    assert caught.value.hint


def test_a_preset_by_name() -> None:
    assert load_config(Path("fast")).roi.person_height == 256
    assert load_config().roi.person_height == 512
    crowd = load_config(Path("crowd"))
    assert (crowd.roi.max_upscale, crowd.parser_options.segmenter_detail) == (3, 1.0)


def test_the_presets_are_named_in_the_help_and_when_a_name_is_wrong() -> None:
    assert {"crowd", "fast"} <= set(preset_names())
    assert all(name in CONFIG_HELP for name in preset_names())
    with pytest.raises(ConfigError) as caught:
        load_config(Path("crowdd"))
    assert caught.value.hint.endswith(", ".join(preset_names()))
    result = run_cli("run", "clip.avi", "-o", "out.mp4", "--config", "crowdd")
    assert result.returncode == 2 and "name a preset: crowd, fast" in result.stderr, result.stderr


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("workers: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- workers\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)
    twice = tmp_path / "twice.yaml"
    twice.write_text("workers: 1\ncompose:\n  alpha: 0.5\nworkers: 2\n")
    with pytest.raises(ConfigError, match=r"key 'workers' is given twice \(again on line 4\)"):
        load_config(twice)
    merged = tmp_path / "merged.yaml"  # YAML's merge key is not a repeat: what follows it overrides it
    merged.write_text("a: &base {b: 1, c: 2}\nd:\n  <<: *base\n  b: 3\n")
    assert read_yaml(merged) == {"a": {"b": 1, "c": 2}, "d": {"b": 3, "c": 2}}
    mixed = tmp_path / "mixed.yaml"  # YAML reads on as true: keys of two types
    mixed.write_text("compose:\n  on: 1\n  colour: red\n")
    with pytest.raises(ConfigError, match="unknown config key 'compose.True'"):
        load_config(mixed)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("# r\u00e9glage\nworkers: 1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_config(latin1)
    section = tmp_path / "section.yaml"  # a flag setting a key of the section hid the file's mistake
    section.write_text("compose: 3\n")
    with pytest.raises(ConfigError, match="config key 'compose' must be a mapping, got int"):
        load_config(section, {"compose.alpha": 0.5})
    emptied = tmp_path / "emptied.yaml"  # a section whose keys are all commented out changes nothing
    emptied.write_text("live:\n  # open_timeout_s: 3\nroi:\n")
    assert load_config(emptied, {"live.open_timeout_s": 0.5}).live.open_timeout_s == 0.5
    assert load_config(emptied).roi == load_config().roi


def test_importing_the_config_loads_no_stage_library() -> None:
    """The options live in `stages/options.py`: reading a config never loads PyAV, OpenCV, SciPy or a parser's
    runtime (about 0.8 s when the config imported nine stage modules)."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, vidparse.config; print(' '.join(sorted(sys.modules)))"],
                            capture_output=True, text=True, check=True).stdout.split()
    heavy = {"av", "cv2", "scipy", "onnxruntime", "torch"} & set(loaded)
    assert not heavy, f"import vidparse.config loaded {sorted(heavy)}"


@pytest.mark.parametrize("error, said", [
    (MemoryError(), "error: out of memory (MemoryError)"),
    (RuntimeError("can't start new thread"), "error: out of memory (can't start new thread)"),
    (RuntimeError("dictionary changed size during iteration"), "error: unexpected RuntimeError"),
])
def test_running_out_of_memory_is_said_so_and_other_failures_are_bugs(error: Exception, said: str,
                                                                       capsys: pytest.CaptureFixture) -> None:
    import typer

    from vidparse.cli import user_errors

    with pytest.raises(typer.Exit) as ended, user_errors():
        raise error
    assert ended.value.exit_code == 7
    printed = " ".join(capsys.readouterr().err.split())
    assert printed.startswith(said) and ("this is a bug" in printed) == ("unexpected" in said), printed


# Each command's arguments before its flags: enough to reach the configuration, which is read before any work.
COMMAND_LINES = {"run": ["run", "in.mp4", "-o", "out.mp4"], "batch": ["batch", "in.mp4", "-o", "out"],
                 "bench": ["bench", "in.mp4"], "tune": ["tune", "in.mp4"], "serve": ["serve"],
                 "eval": ["eval", "images", "labels", "--label-set", "ccp"], "eval-video": ["eval-video", "in.mp4"]}
FLAG_ERRORS = """
import json, sys
from typer.testing import CliRunner
from vidparse.cli import app
print(json.dumps([CliRunner().invoke(app, args).output for args in json.loads(sys.stdin.read())]))
"""


def config_field(key: str) -> dataclasses.Field:
    """The field of a dotted config key; a KeyError names a part that is not there."""
    owner: type = Config
    for part in key.split("."):
        field = {f.name: f for f in dataclasses.fields(owner)}[part]
        owner = typing.get_type_hints(owner)[part]
    return field


def test_every_override_flag_sets_a_config_key_there_is_and_a_wrong_value_is_told_by_that_flag(
        tmp_path: Path) -> None:
    """Which flag sets which key was a hand-kept table beside the options (`_FLAG_NAMES`): a flag not named after
    its key's last part and missing from it was told by a flag that does not exist. Now the flag comes from the
    option itself: each option in `OVERRIDES` is one of its command's, and sets a key of `Config`; a value out of a
    key's range or choices is told by the flag as typed, never by the key."""
    import typer.main

    from vidparse.cli import OVERRIDES, app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    cases = []
    for name, overrides in OVERRIDES.items():
        options = {param.name: param for param in commands[name].params}
        for parameter, key in overrides.items():
            assert parameter in options and options[parameter].opts[0].startswith("--"), (name, parameter)
            metadata = config_field(key).metadata
            if "range" in metadata:
                high = metadata["range"][1]
                cases.append((key, [*COMMAND_LINES[name], options[parameter].opts[0], str(high + 1)]))
            elif "choices" in metadata:
                cases.append((key, [*COMMAND_LINES[name], options[parameter].opts[0], "nonsense"]))
    assert len(cases) > 20
    told = subprocess.run([sys.executable, "-c", FLAG_ERRORS], input=json.dumps([args for _, args in cases]),
                          capture_output=True, text=True, cwd=tmp_path, timeout=120, check=True)
    for (key, args), output in zip(cases, json.loads(told.stdout)):
        line = next(line for line in output.splitlines() if line.startswith("error:"))
        assert line.startswith(f"error: {args[-2]} must be ") and "config key" not in output, (key, args, output)


def test_a_section_key_given_at_the_top_is_named_where_it_belongs() -> None:
    """README's keyframe mode is --parse-every; an API user writes parse_every=3 and was shown the top-level keys."""
    with pytest.raises(ConfigError) as caught:
        load_config(overrides={"parse_every": 3})
    assert caught.value.message == "unknown config key 'parse_every'"
    assert "'keyframes.parse_every'" in caught.value.hint
