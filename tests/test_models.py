"""Model lookup order, listing, and pulls over real HTTP from a server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import vidparse
from conftest import MODELS, run_cli
from vidparse import model_store
from vidparse.errors import ConfigError, ModelError


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VIDPARSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VIDPARSE_MODEL_DIR", raising=False)
    return tmp_path


@pytest.fixture
def file_server() -> Iterator[str]:
    """Serves ../shared/models read-only on an ephemeral loopback port."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(MODELS))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_lookup_order_explicit_then_env_then_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = isolated / "cache" / "bodypix" / "MobileNetV1-x050-stride16.onnx"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert model_store.resolve_model("bodypix") == cached
    env_dir = isolated / "env"
    (env_dir / "bodypix").mkdir(parents=True)
    (env_dir / "bodypix" / "MobileNetV1-x050-stride16.onnx").write_bytes(b"y")
    monkeypatch.setenv("VIDPARSE_MODEL_DIR", str(env_dir))
    assert model_store.resolve_model("bodypix").parent.parent == env_dir
    explicit = isolated / "mine.onnx"
    explicit.write_bytes(b"z")
    assert model_store.resolve_model("bodypix", explicit) == explicit


def test_an_explicit_folder_gives_the_models_file_or_names_the_one_it_holds(isolated: Path) -> None:
    folder = isolated / "mine"
    folder.mkdir()
    (folder / "trained.onnx").write_bytes(b"w")
    with pytest.raises(ModelError, match="is a folder without MobileNetV1-x050-stride16.onnx") as caught:
        model_store.resolve_model("bodypix", folder)
    assert caught.value.hint == f"give the file itself, e.g. {folder / 'trained.onnx'}"
    (folder / "MobileNetV1-x050-stride16.onnx").write_bytes(b"n")
    assert model_store.resolve_model("bodypix", folder) == folder / "MobileNetV1-x050-stride16.onnx"
    with pytest.raises(ModelError, match="does not exist") as caught:
        model_store.resolve_model("bodypix", isolated / "no.onnx")
    assert "pull" not in (caught.value.hint or ""), "a path the user named is checked, not pulled"


@pytest.mark.parametrize("model, wrong, message", [
    ("bodypix", "weights/cihp-net.onnx", "is not a BodyPix model"),
    ("cihp-lite", "weights/cihp-net.onnx", "is not the skin / clothes / hair segmenter"),
    ("cihp-lite", "fastestdet/FastestDet.onnx", "is not a skin / clothes / hair segmenter model"),
    ("cihp-net", "bodypix/MobileNetV1-x050-stride16.onnx", "is not a cihp-net network"),
])
def test_a_file_made_for_another_model_is_one_line_at_load(model: str, wrong: str, message: str, shared: Path,
                                                           tmp_path: Path) -> None:
    path = Path(__file__).parents[1] / wrong if wrong.startswith("weights/") else MODELS / wrong
    result = run_cli("run", str(shared / "data" / "photos" / "messi5.jpg"), "-o", str(tmp_path / "o.jpg"),
                     "--model", model, "--model-dir", str(path))
    assert result.returncode == 5, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr


@pytest.mark.parametrize("model", ["bodypix", "cihp-lite"])
def test_a_model_path_that_is_no_model_is_never_to_be_removed(model: str, shared: Path, tmp_path: Path) -> None:
    """--model-dir naming the user's own photo: they are told to check --model-dir, not to remove the photo."""
    photo = shared / "data" / "photos" / "messi5.jpg"
    result = run_cli("run", str(photo), "-o", str(tmp_path / "o.jpg"), "--model", model, "--model-dir", str(photo))
    assert result.returncode == 5, result.stderr
    said = " ".join(result.stderr.split())
    assert f"error: cannot load model {photo}: it is not a model folder or ONNX file" in said
    assert "hint: check --model-dir" in said and "remove" not in said and "Traceback" not in said


def test_a_damaged_model_in_a_model_folder_is_fetched_again(shared: Path, tmp_path: Path) -> None:
    for name in ("fastestdet", "bodypix"):
        (tmp_path / name).mkdir()
    (tmp_path / model_store.MODELS["fastestdet"].path).symlink_to(MODELS / model_store.MODELS["fastestdet"].path)
    damaged = tmp_path / model_store.MODELS["bodypix"].path
    damaged.write_bytes(b"not a model")
    result = run_cli("run", str(shared / "data" / "photos" / "messi5.jpg"), "-o", str(tmp_path / "o.jpg"),
                     "--model", "bodypix", env={"VIDPARSE_MODEL_DIR": str(tmp_path)})
    assert result.returncode == 5, result.stderr
    said = " ".join(result.stderr.split())
    assert f"replace or remove {damaged}, then `vidparse models pull bodypix` fetches it again" in said, said


def model_folder_with_one_cut_short(folder: Path, damaged: str, others: tuple[str, ...]) -> Path:
    """A $VIDPARSE_MODEL_DIR with the models ``others`` (links to the real ones) and model ``damaged`` cut short
    halfway, as a download that stopped leaves it; the damaged file's path."""
    for name in others:
        link = folder / model_store.MODELS[name].path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(model_store.resolve_model(name))
    whole = model_store.resolve_model(damaged).read_bytes()
    target = folder / model_store.MODELS[damaged].path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(whole[:len(whole) // 2])
    return target


def test_a_model_cut_short_stops_a_run_of_several_inputs_before_any_process_starts(shared: Path, tmp_path: Path
                                                                                   ) -> None:
    """Found only when the workers loaded it, it failed every stream apart ('stream ... failed' each, progress bars)
    after the processes had started: now one line and its hint, exit 5, before any work."""
    damaged = model_folder_with_one_cut_short(tmp_path / "models", "fastestdet", ("bodypix",))
    photo = str(shared / "data" / "photos" / "messi5.jpg")
    result = run_cli("run", photo, photo, "-o", str(tmp_path / "parsed") + "/", "--model", "bodypix",
                     env={"VIDPARSE_MODEL_DIR": str(tmp_path / "models")})
    assert result.returncode == ModelError.exit_code, result.stderr
    assert result.stderr.splitlines() == [
        f"error: cannot load model {damaged}: truncated or not an ONNX model: its protobuf data is broken "
        f"({damaged.stat().st_size} bytes)",
        f"hint: the file is corrupt: replace or remove {damaged}, then `vidparse models pull fastestdet` fetches it "
        "again"], result.stderr


def test_a_segmenter_cut_short_fails_the_api_parser_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Parser checks the files of every model it runs with when it is made, not when it first parses."""
    damaged = model_folder_with_one_cut_short(tmp_path / "models", "multiclass", ("fastestdet", "bodypix"))
    monkeypatch.setenv("VIDPARSE_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("VIDPARSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelError, match=f"cannot load model {damaged}: truncated") as raised:
        vidparse.Parser(model="cihp-net")
    assert raised.value.hint and "vidparse models pull multiclass" in raised.value.hint


@pytest.mark.parametrize("model", ["m2fp", "m2fp-single"])
def test_an_m2fp_model_path_that_is_a_file_says_a_folder_is_wanted(model: str, shared: Path, tmp_path: Path) -> None:
    onnx = model_store.PACKAGED_DIR / "cihp-net.onnx"
    result = run_cli("run", str(shared / "data" / "photos" / "messi5.jpg"), "-o", str(tmp_path / "o.png"),
                     "--model", model, "--model-dir", str(onnx))
    assert result.returncode == 5, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: model path {onnx} is a file: {model} takes a model folder (configuration.json")
    assert f"vidparse models make-random {model} DIR" in result.stderr and "Traceback" not in result.stderr


def test_the_training_cache_is_inside_vidparse_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert model_store.training_cache_dir() == isolated / "cache" / "training"
    monkeypatch.delenv("VIDPARSE_CACHE")
    assert model_store.training_cache_dir() == Path.home() / ".cache" / "vidparse" / "training"


def test_missing_model_names_the_places_and_the_fix(isolated: Path) -> None:
    with pytest.raises(ModelError) as caught:
        model_store.resolve_model("fastestdet")
    assert "looked in" in caught.value.message and str(isolated / "cache") in caught.value.message
    assert "vidparse models pull fastestdet" in caught.value.hint
    with pytest.raises(ConfigError, match="unknown model 'yolo'"):
        model_store.resolve_model("yolo")


def test_a_model_folder_that_cannot_be_looked_into_is_one_line(isolated: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """$VIDPARSE_MODEL_DIR on a folder this user may not read: a ModelError naming it, not a PermissionError."""
    locked = isolated / "locked"
    stat = Path.stat

    def refused(path: Path, **kwargs: bool):
        if locked in path.parents:
            raise PermissionError(13, "Permission denied", str(path))
        return stat(path, **kwargs)

    monkeypatch.setattr(Path, "stat", refused)
    monkeypatch.setenv("VIDPARSE_MODEL_DIR", str(locked))
    for look in (model_store.resolve_model, model_store.find_model):
        with pytest.raises(ModelError, match=f"cannot look for models at {locked}/fastestdet/.*: Permission denied"):
            look("fastestdet")


def test_pull_downloads_and_checks_sha256(isolated: Path, file_server: str) -> None:
    seen = []
    path = model_store.pull("fastestdet", f"{file_server}/fastestdet/FastestDet.onnx",
                            progress=lambda done, total: seen.append((done, total)))
    assert path == isolated / "cache" / "fastestdet" / "FastestDet.onnx"
    assert path.read_bytes() == (MODELS / "fastestdet" / "FastestDet.onnx").read_bytes()
    assert seen[-1][0] == seen[-1][1] == path.stat().st_size
    assert model_store.resolve_model("fastestdet") == path
    assert path.stat().st_mode & 0o777 == 0o644, "readable by all, as a copied file would be"


def test_a_pull_from_an_unreachable_modelscope_is_one_line_at_once(isolated: Path) -> None:
    """The hub client retried for half a minute, logging each try under an empty progress bar."""
    from rtsp import free_port

    env = {"VIDPARSE_CACHE": str(isolated / "cache"), "MODELSCOPE_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    result = run_cli("models", "pull", "m2fp-single", env=env, timeout=60)
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith("error: ModelScope (http://127.0.0.1:") and "cannot be reached" in result.stderr
    assert len(result.stderr.splitlines()) == 2 and "hint:" in result.stderr, result.stderr
    assert not (isolated / "cache").exists() or not any((isolated / "cache").iterdir()), "nothing left in the cache"


def test_pull_from_a_downloaded_copy(isolated: Path) -> None:
    path = model_store.pull("fastestdet", str(MODELS / "fastestdet" / "FastestDet.onnx"))
    assert path.read_bytes() == (MODELS / "fastestdet" / "FastestDet.onnx").read_bytes()
    with pytest.raises(ModelError, match="neither a URL nor a file"):
        model_store.pull("bodypix", str(isolated / "no.onnx"))


def test_cihp_lite_needs_bodypix_and_a_pull_fetches_both(isolated: Path, file_server: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bodypix = model_store.MODELS["bodypix"]
    monkeypatch.setitem(model_store.MODELS, "bodypix", dataclasses.replace(bodypix, url=f"{file_server}/{bodypix.path}"))
    with pytest.raises(ModelError, match="model 'bodypix' not found"):
        model_store.resolve_model("cihp-lite")
    segmenter = model_store.MODELS["cihp-lite"].path
    path = model_store.pull("cihp-lite", f"{file_server}/{segmenter}")  # checked against the spec's sha256
    assert path == isolated / "cache" / segmenter and path.read_bytes() == (MODELS / segmenter).read_bytes()
    assert (isolated / "cache" / bodypix.path).read_bytes() == (MODELS / bodypix.path).read_bytes()
    assert model_store.resolve_model("cihp-lite") == path


def test_cihp_net_ships_its_weights_and_a_pull_fetches_the_segmenter(isolated: Path, file_server: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("bodypix", "multiclass"):
        spec = model_store.MODELS[name]
        monkeypatch.setitem(model_store.MODELS, name, dataclasses.replace(spec, url=f"{file_server}/{spec.path}"))
    with pytest.raises(ModelError, match="model 'bodypix' not found"):
        model_store.resolve_model("cihp-net")
    path = model_store.pull("cihp-net")
    assert path == model_store.PACKAGED_DIR / "cihp-net.onnx", "the weights come with vidparse"
    segmenter = model_store.MODELS["multiclass"].path
    assert (isolated / "cache" / segmenter).read_bytes() == (MODELS / segmenter).read_bytes()  # sha256 checked
    assert model_store.resolve_model("cihp-net") == path


def test_a_pull_of_cihp_net_checks_a_copy_from_elsewhere_and_without_one_restores_the_shipped_weights(
        isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDPARSE_MODEL_DIR", str(MODELS))  # the segmenters it needs
    shipped = model_store.PACKAGED_DIR / "cihp-net.onnx"
    damaged = isolated / "damaged.onnx"
    damaged.write_bytes(shipped.read_bytes()[:5000])
    with pytest.raises(ModelError, match="is not an ONNX model"):
        model_store.pull("cihp-net", str(damaged))
    assert not list((isolated / "cache").glob("*cihp-net*")), "nothing of it is kept"
    copied = model_store.pull("cihp-net", str(shipped))  # a good file from elsewhere is kept, and is used
    assert copied == isolated / "cache" / "cihp-net.onnx" and model_store.find_model("cihp-net") == copied
    assert model_store.pull("cihp-net") == shipped and not copied.exists(), "a plain pull: the shipped weights"


def test_a_pull_of_cihp_net_from_another_models_file_is_refused_and_keeps_the_shipped_weights(
        isolated: Path, shared: Path) -> None:
    env = {"VIDPARSE_CACHE": str(isolated / "cache"), "VIDPARSE_MODEL_DIR": str(MODELS)}
    result = run_cli("models", "pull", "cihp-net", "--from", str(MODELS / "fastestdet" / "FastestDet.onnx"), env=env)
    assert result.returncode == 5, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "FastestDet.onnx is not a cihp-net network" in error and "hint: " in result.stderr
    assert not list((isolated / "cache").glob("*cihp-net*")), "nothing of it is kept"
    run = run_cli("run", str(shared / "data" / "photos" / "messi5.jpg"), "-o", str(isolated / "o.png"),
                  "--model", "cihp-net", env=env)
    assert run.returncode == 0, run.stderr


def test_a_pull_from_elsewhere_warns_of_the_copy_that_is_found_first(isolated: Path) -> None:
    shipped = str(model_store.PACKAGED_DIR / "cihp-net.onnx")
    env = {"VIDPARSE_CACHE": str(isolated / "cache"), "VIDPARSE_MODEL_DIR": str(MODELS)}
    quiet = run_cli("models", "pull", "cihp-net", "--from", shipped, env=env)
    assert quiet.returncode == 0 and "found before" not in quiet.stderr, "the pulled copy is the one used"
    first = isolated / "models"
    first.mkdir()
    (first / "cihp-net.onnx").write_bytes(Path(shipped).read_bytes() + b"an older copy")  # differs from the one pulled
    for folder in ("bodypix", "mediapipe"):
        (first / folder).symlink_to(MODELS / folder)
    warned = run_cli("models", "pull", "cihp-net", "--from", shipped, env={**env, "VIDPARSE_MODEL_DIR": str(first)})
    assert warned.returncode == 0, warned.stderr
    assert f"{first / 'cihp-net.onnx'} is found before {isolated / 'cache' / 'cihp-net.onnx'}" in \
        " ".join(warned.stderr.split())


def test_a_pull_from_elsewhere_says_nothing_of_an_identical_copy_found_first(
        isolated: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """It warned "remove it to use the new one" of a copy in $VIDPARSE_MODEL_DIR the same as the file pulled: that
    copy is the model pulled."""
    first = isolated / "models"
    first.mkdir()
    (first / "fastestdet").mkdir()
    pulled_from = MODELS / "fastestdet" / "FastestDet.onnx"
    (first / "fastestdet" / "FastestDet.onnx").write_bytes(pulled_from.read_bytes())
    monkeypatch.setenv("VIDPARSE_MODEL_DIR", str(first))
    with caplog.at_level(logging.WARNING, logger="vidparse"):
        model_store.pull("fastestdet", str(pulled_from))
    assert not caplog.records, caplog.text


def test_a_cached_cihp_net_that_does_not_fit_names_the_copy_and_how_to_drop_it(isolated: Path, shared: Path) -> None:
    cached = isolated / "cache" / "cihp-net.onnx"
    cached.parent.mkdir()
    cached.write_bytes((MODELS / "fastestdet" / "FastestDet.onnx").read_bytes())  # as an older vidparse let through
    env = {"VIDPARSE_CACHE": str(cached.parent), "VIDPARSE_MODEL_DIR": str(MODELS)}
    result = run_cli("run", str(shared / "data" / "photos" / "messi5.jpg"), "-o", str(isolated / "o.png"),
                     "--model", "cihp-net", env=env)
    assert result.returncode == 5, result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    (hint,) = [line for line in result.stderr.splitlines() if line.startswith("hint:")]
    assert f"{cached} is not a cihp-net network" in error
    assert "vidparse models pull cihp-net" in hint and "--model-dir" not in hint


def test_a_cache_that_cannot_be_written_is_one_line(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated / "afile").write_text("x")
    monkeypatch.setenv("VIDPARSE_CACHE", str(isolated / "afile"))
    with pytest.raises(ModelError, match="cannot write the model cache .*afile/fastestdet") as caught:
        model_store.pull("fastestdet", str(MODELS / "fastestdet" / "FastestDet.onnx"))
    assert "VIDPARSE_CACHE" in (caught.value.hint or "")


def test_a_pull_stopped_midway_leaves_no_partial_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def ctrl_c_midway(done: int, total: int) -> None:
        if done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        model_store.pull("fastestdet", str(MODELS / "fastestdet" / "FastestDet.onnx"), progress=ctrl_c_midway)
    assert not [path for path in (isolated / "cache").rglob("*") if path.is_file()], "no hidden partial file"


def test_a_pull_of_a_model_present_and_whole_fetches_nothing(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDPARSE_MODEL_DIR", str(MODELS))  # no network here: a download would fail
    assert model_store.pull("bodypix") == MODELS / model_store.MODELS["bodypix"].path
    assert not (isolated / "cache").exists()


def test_pull_rejects_a_file_with_the_wrong_checksum(isolated: Path, file_server: str) -> None:
    with pytest.raises(ModelError, match="checksum mismatch"):
        model_store.pull("fastestdet", f"{file_server}/bodypix/MobileNetV1-x050-stride16.onnx")
    assert not list((isolated / "cache").rglob("*.onnx")), "nothing half-downloaded is left"


def test_pull_from_an_unreachable_source_is_a_model_error(isolated: Path) -> None:
    with pytest.raises(ModelError, match="download of .* failed"):
        model_store.pull("bodypix", "http://127.0.0.1:9/none.onnx")


@pytest.mark.parametrize("cache_there", [True, False])
def test_a_failed_pull_removes_the_folders_it_made(cache_there: bool, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    if cache_there:
        cache.mkdir()
    failed = run_cli("models", "pull", "bodypix", "--from", "http://127.0.0.1:1/x.onnx",
                     env={"VIDPARSE_CACHE": str(cache), "VIDPARSE_MODEL_DIR": ""})
    assert failed.returncode == 5 and "download of http://127.0.0.1:1/x.onnx failed" in failed.stderr, failed.stderr
    assert not (cache / "bodypix").exists() and cache.exists() == cache_there, "the folders there before stay"


def test_a_model_folder_is_not_pulled_from_one_file(isolated: Path, file_server: str) -> None:
    with pytest.raises(ModelError, match="m2fp is a model folder from ModelScope .*--from takes one file's URL"):
        model_store.pull("m2fp", f"{file_server}/bodypix/MobileNetV1-x050-stride16.onnx")
    assert not list((isolated / "cache").rglob("*")), "nothing fetched, nothing standing in for the folder"


def test_models_cli_lists_and_pulls(isolated: Path, file_server: str) -> None:
    env = {"VIDPARSE_CACHE": str(isolated / "cache"), "VIDPARSE_MODEL_DIR": ""}
    listing = run_cli("models", "list", env=env)
    assert listing.returncode == 0 and "missing" in listing.stdout
    pulled = run_cli("models", "pull", "bodypix", "--from", f"{file_server}/bodypix/MobileNetV1-x050-stride16.onnx", env=env)
    assert pulled.returncode == 0, pulled.stderr
    rows = {line.split()[1]: line for line in run_cli("models", "list", env=env).stdout.splitlines()
            if line.startswith("│ ")}
    assert "missing" not in rows["bodypix"] and "missing" in rows["fastestdet"] and "missing" in rows["cihp-lite"]
    assert "MobileNetV1-x050-stride16.onnx" in rows["bodypix"], "a table piped to a file is not squeezed to 80 columns"
    assert "cihp-net.onnx (needs multiclass: missing)" in rows["cihp-net"], "its own file is there"
    words = run_cli("models", "list", env=env).stdout.split()
    assert all(word in words for spec in model_store.MODELS.values() for word in spec.description.split()), \
        "nothing cropped at the file's width"
    failed = run_cli("models", "pull", "fastestdet", "--from", "http://127.0.0.1:9/x.onnx", env=env)
    assert failed.returncode == 5 and "Traceback" not in failed.stderr
    assert [line for line in failed.stderr.splitlines() if line.startswith("error:")] == [
        "error: download of http://127.0.0.1:9/x.onnx failed: <urlopen error [Errno 111] Connection refused>"]


@pytest.mark.parametrize("make, said", [(lambda p: p.write_bytes(b""), "not a folder"), (lambda p: None, "does not exist")],
                         ids=["a-file", "missing"])
def test_a_model_dir_that_is_no_folder_is_said_to_be(make, said: str, tmp_path: Path) -> None:
    """A $VIDPARSE_MODEL_DIR that does not exist (a typo, a relative path from another folder) was listed as
    searched, every model in it 'missing', and nothing said why."""
    not_a_folder = tmp_path / "models.onnx"
    make(not_a_folder)
    listing = run_cli("models", "list", env={"VIDPARSE_CACHE": str(tmp_path / "cache"),
                                             "VIDPARSE_MODEL_DIR": str(not_a_folder)})
    assert listing.returncode == 0, listing.stderr
    assert f"searched: {not_a_folder} ({said}), {tmp_path / 'cache'}," in " ".join(listing.stdout.split())


def test_a_pull_of_an_unknown_name_is_a_user_mistake(isolated: Path) -> None:
    """Exit code 2, as a mistyped --model: 5 is for a model missing or broken."""
    unknown = run_cli("models", "pull", "yolo")
    assert unknown.returncode == 2, unknown.stderr
    assert [line for line in unknown.stderr.splitlines() if line.startswith(("error:", "hint:"))] == [
        "error: unknown model 'yolo'", f"hint: choose one of: {', '.join(model_store.MODELS)}"]
    assert "━" not in unknown.stdout + unknown.stderr, "an unknown name fails before any progress bar"
    assert not (isolated / "cache").exists()
