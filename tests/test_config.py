from pathlib import Path

import pytest

from vidparse.config import Config, default_config_path, load_config, read_yaml
from vidparse.errors import ConfigError
from vidparse.pipeline.cpus import usable_cpus


def test_defaults_load() -> None:
    config = load_config()
    assert (config.model, config.workers, config.roi.mode) == ("cihp-lite", None, "roi")
    assert config.worker_count == usable_cpus(), "no worker count given: one per usable CPU"
    assert config.parser_options.person_threshold == 0.5


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
