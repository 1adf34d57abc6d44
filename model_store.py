"""Where model files live: resolve a model by name, list what is present, pull from the public source."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import re
import shutil
import socket
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vidparse.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

MODEL_DIR_ENV = "VIDPARSE_MODEL_DIR"
CACHE_ENV = "VIDPARSE_CACHE"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str  # relative to a model directory: a file, or a folder for hub snapshots
    description: str
    license: str
    url: str | None = None  # single-file download
    sha256: str | None = None
    hub_id: str | None = None  # ModelScope snapshot
    needs: tuple[str, ...] = ()  # other models this one runs with (resolved and pulled with it)
    # "module:function" saying how a sound file pulled --from elsewhere differs from this model (None: it fits)
    mismatch: str | None = None

    @property
    def how_to_get(self) -> str:
        return f"run `vidparse models pull {self.name}`, or set ${MODEL_DIR_ENV} to a folder holding {self.path}"


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="bodypix",
            path="bodypix/MobileNetV1-x050-stride16.onnx",
            description="BodyPix 2.0 MobileNetV1 0.50 stride 16: person mask + 24 body parts",
            license="Apache-2.0",
            url="https://github.com/keijiro/BodyPixSentis/raw/28429a7/Packages/jp.keijiro.bodypix/ONNX/MobileNetV1-x050-stride16.onnx",
            sha256="f2e51d18eec8e3c9ef3f196ea0245db1d86529161d19e14466ad4ebc5e6ee242",
        ),
        ModelSpec(
            name="fastestdet",
            path="fastestdet/FastestDet.onnx",
            description="FastestDet COCO-80 detector (person boxes)",
            license="BSD-3-Clause",
            url="https://github.com/dog-qiuqiu/FastestDet/raw/50473cd/example/onnx-runtime/FastestDet.onnx",
            sha256="31cb14c017fce347cb4c846ec62fdf00d76bb3beecdf4be21e7116ac67feb880",
        ),
        ModelSpec(
            name="cihp-lite",
            path="skin-clothes-hair/PAN-mobilenetv3s-skin-clothes-hair.onnx",
            description="CIHP 20 classes offline: BodyPix parts fused with a PAN skin/clothes/hair segmenter",
            license="MIT (segmenter), Apache-2.0 (BodyPix)",
            url="https://github.com/Kazuhito00/Skin-Clothes-Hair-Segmentation-using-SMP/raw/043fc08/02.model/_old/"
                "PAN(timm-mobilenetv3_small_100)_452_1.02M_0.8028/best_model_simplifier.onnx",
            sha256="324a22a1c2e3a433d6225d4c5c50f50912797a4d14b69f7d632eeb5c85346f36",
            needs=("bodypix",),
        ),
        ModelSpec(
            name="multiclass",
            path="mediapipe/selfie_multiclass_256x256.tflite",
            description="MediaPipe multiclass selfie segmenter: hair, body skin, face skin, clothes, accessories",
            license="Apache-2.0",
            url="https://storage.googleapis.com/mediapipe-models/image_segmenter/selfie_multiclass_256x256/float32/"
                "latest/selfie_multiclass_256x256.tflite",
            sha256="c6748b1253a99067ef71f7e26ca71096cd449baefa8f101900ea23016507e0e0",
        ),
        ModelSpec(
            name="cihp-net",
            path="cihp-net.onnx",
            description="CIHP 20 classes with garment types: a network trained here (weights/MODEL_CARD.md) on the "
                        "outputs of BodyPix and MediaPipe's multiclass segmenter",
            license="Apache-2.0 (weights trained on Clothing-Co-Parsing; MediaPipe, BodyPix)",
            needs=("bodypix", "multiclass"),
            mismatch="vidparse.stages.parsers.cihp_net:file_mismatch",
        ),
        ModelSpec(
            name="m2fp",
            path="m2fp",
            description="M2FP multi-human parsing, ResNet-101, CIHP 20 classes",
            license="CC BY-NC 4.0",
            hub_id="iic/cv_resnet101_image-multiple-human-parsing",
        ),
        ModelSpec(
            name="m2fp-single",
            path="m2fp-single",
            description="M2FP single-human parsing, ResNet-101, per-person crops",
            license="CC BY-NC 4.0",
            hub_id="iic/cv_resnet101_image-single-human-parsing",
        ),
    )
}


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:  # a name mistyped is the user's mistake (exit 2), not a model missing or broken (5)
        raise ConfigError(f"unknown model '{name}'", hint=f"choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or _user_cache() / "models")


def training_cache_dir() -> Path:
    """Where `vidparse train` keeps the frozen models' outputs: inside ``$VIDPARSE_CACHE`` when it is set."""
    return Path(os.environ[CACHE_ENV]) / "training" if os.environ.get(CACHE_ENV) else _user_cache() / "training"


def _user_cache() -> Path:
    return Path.home() / ".cache" / "vidparse"


# Weights trained for vidparse ship inside the package (cihp-net): looked for after the user's folders.
PACKAGED_DIR = Path(__file__).resolve().parent / "weights"


def model_dir() -> Path | None:
    """``$VIDPARSE_MODEL_DIR``, where it is set."""
    return Path(os.environ[MODEL_DIR_ENV]) if os.environ.get(MODEL_DIR_ENV) else None


def search_dirs() -> list[Path]:
    return [*filter(None, [model_dir()]), cache_dir(), PACKAGED_DIR]


def resolve_model(name: str, explicit: Path | None = None) -> Path:
    """Find a model: an explicit path first, then ``$VIDPARSE_MODEL_DIR``, then the user cache. The models it
    ``needs`` must be found too (in the usual places), so that a missing one fails before any work starts."""
    needed_models(name)
    return _located(model_spec(name), explicit)


def needed_models(name: str) -> list[tuple[str, Path]]:
    """The models ``name`` runs with (its ``needs``, and theirs first), each with where it is found."""
    return [found for need in model_spec(name).needs
            for found in (*needed_models(need), (need, _located(model_spec(need))))]


def _located(spec: ModelSpec, explicit: Path | None = None) -> Path:
    """``spec``'s own file or folder (not the models it needs)."""
    if explicit is not None:
        return _explicit_model(spec, explicit)
    if (found := _first_found(spec)) is not None:
        return found
    looked = ", ".join(str(d / spec.path) for d in search_dirs())
    raise ModelError(f"model '{spec.name}' not found (looked in {looked})", hint=spec.how_to_get)


def _first_found(spec: ModelSpec) -> Path | None:
    """``spec``'s file or folder in the first of `search_dirs` that holds it."""
    return next((c for c in (d / spec.path for d in search_dirs()) if _exists(c)), None)


def _exists(candidate: Path) -> bool:
    """Whether a model is at ``candidate``; a folder of the search that cannot be looked into is a ModelError (the
    permissions of $VIDPARSE_MODEL_DIR or the cache, a stale network mount), not a crash."""
    try:
        return candidate.exists()
    except OSError as exc:
        raise ModelError(f"cannot look for models at {candidate}: {exc.strerror or exc}",
                         hint=f"make the folder readable, or point ${MODEL_DIR_ENV} or ${CACHE_ENV} elsewhere") from exc


def _explicit_model(spec: ModelSpec, explicit: Path) -> Path:
    """The model file a user named, or the file ``spec`` expects inside the folder they named."""
    if not explicit.exists():
        raise ModelError(f"model path {explicit} does not exist",
                         hint="check the path (a relative one starts from the current folder)")
    wanted = Path(spec.path)
    if spec.hub_id and not explicit.is_dir():
        raise ModelError(f"model path {explicit} is a file: {spec.name} takes a model folder (configuration.json "
                         f"and pytorch_model.pt, as in ModelScope's {spec.hub_id})",
                         hint=f"give its folder: `vidparse models pull {spec.name}` fetches it, "
                              f"`vidparse models make-random {spec.name} DIR` makes one with random weights")
    if not explicit.is_dir() or not wanted.suffix:  # a file, or a hub snapshot's folder
        return explicit
    for candidate in (explicit / wanted, explicit / wanted.name):
        if candidate.is_file():
            return candidate
    held = sorted(p.name for p in explicit.iterdir() if p.suffix == wanted.suffix)
    raise ModelError(f"model path {explicit} is a folder without {wanted.name}",
                     hint=f"give the file itself, e.g. {explicit / held[0]}" if held else
                     f"give the {spec.name} file itself, or a folder holding {wanted.name}")


def stored_model(path: Path) -> str | None:
    """The model whose file ``path`` is in a model folder (``$VIDPARSE_MODEL_DIR``, the cache, the shipped weights);
    None for a path the user named elsewhere (--model-dir, a configuration's ``model_path``)."""
    resolved = path.resolve()
    return next((spec.name for folder in search_dirs() for spec in MODELS.values()
                 if (folder / spec.path).resolve() == resolved), None)


def unloadable_model(path: Path, reason: str) -> ModelError:
    """The error for a model file that does not load. A model folder's copy is damaged and fetched again; a path the
    user named may be any file of theirs (a photo), which they are never told to remove."""
    name = stored_model(path)
    if name is None:
        return ModelError(f"cannot load model {path}: it is not a model folder or ONNX file ({reason})",
                          hint="check --model-dir (or model_path in the configuration): give the model's .onnx file "
                               "or the folder that holds it")
    return ModelError(f"cannot load model {path}: {reason}",
                      hint=f"the file is corrupt: replace or remove {path}, then `vidparse models pull {name}` "
                           "fetches it again")


def find_model(name: str) -> Path | None:
    """``name``'s own file or folder where it is found, whether or not the models it needs are (None where it is
    not; a folder that cannot be looked into is a ModelError)."""
    return _first_found(model_spec(name))


MODEL_CARD = "MODEL_CARD.md"  # written beside trained weights by `vidparse train` (training/card.py)
_CARD_RECORD = re.compile(r"^# [\w-]+ weights: `(?P<name>[^`]+)`$.*?^- sha256: `(?P<sha256>[0-9a-f]{64})`",
                          re.MULTILINE | re.DOTALL)


def card_sha256(weights: Path) -> str | None:
    """The sha256 that the model card beside ``weights`` records for them; None without a card naming them."""
    try:
        text = (weights.parent / MODEL_CARD).read_text(errors="replace")
    except OSError:
        return None
    record = _CARD_RECORD.search(text)
    return record["sha256"] if record and record["name"] == weights.name else None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, target: Path, sha256: str | None, progress=None,
             check: Callable[[Path], None] | None = None) -> Path:
    """Download ``url`` to ``target`` atomically, checking its sha256 (or, for a model without a published one, that
    it is an ONNX model, and that ``check`` of the downloaded file raises nothing). ``progress(done, total)`` is
    optional."""
    with _folders_removed_on_failure(target.parent):
        return _download(url, target, sha256, progress, check)


@contextlib.contextmanager
def _folders_removed_on_failure(folder: Path) -> Iterator[None]:
    """On a failure in the block, remove ``folder`` and its parents that did not exist before it (the cache's
    ``bodypix/``): a failed pull leaves nothing behind. One that holds files by then stays."""
    missing = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for path in missing:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def _download(url: str, target: Path, sha256: str | None, progress, check: Callable[[Path], None] | None) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False)
    except OSError as exc:
        raise ModelError(f"cannot write the model cache {target.parent}: {exc.strerror or exc}",
                         hint=f"set ${CACHE_ENV} to a writable folder") from exc
    tmp_path = Path(tmp.name)
    try:
        with tmp:
            done = total = 0
            try:
                with urllib.request.urlopen(url, timeout=30) as response:
                    total = int(response.headers.get("Content-Length") or 0)
                    for block in iter(lambda: response.read(1 << 16), b""):
                        tmp.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            except (urllib.error.URLError, OSError) as exc:
                raise ModelError(f"download of {url} failed: {exc}",
                                 hint=f"check the network, or copy the file by hand to {target}") from exc
        if total and done < total:
            raise ModelError(f"download of {url} failed: the connection closed after {done} of {total} bytes",
                             hint="try again")
        if sha256 and (actual := sha256_of(tmp_path)) != sha256:
            raise ModelError(f"checksum mismatch for {url}: got {actual[:16]}…, expected {sha256[:16]}…",
                             hint="the download is corrupt or the source changed; try again or get the file by hand")
        if not sha256 and target.suffix == ".onnx":
            _check_onnx(tmp_path, url)
        if check:
            check(tmp_path)
    except BaseException:  # a failure, Ctrl-C or SIGTERM: no hidden partial file is left behind
        tmp_path.unlink(missing_ok=True)
        raise
    tmp_path.chmod(0o644)  # a temporary file is made private; the model is not
    tmp_path.replace(target)
    return target


def _check_onnx(path: Path, url: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises protobuf's DecodeError, its own ValidationError, OSError
        raise ModelError(f"{url} is not an ONNX model ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                         hint="give the model's .onnx file") from exc


def pull(name: str, url: str | None = None, progress=None) -> Path:
    """Fetch a model into the user cache from its public source (``url`` overrides the source of a file model),
    and the models it needs that are not found yet."""
    spec = model_spec(name)
    if spec.hub_id and url is not None:  # one downloaded file would stand in for the folder, and pass for the model
        raise ModelError(f"{name} is a model folder from ModelScope ({spec.hub_id}): --from takes one file's URL",
                         hint=f"fetch the folder by hand and pass --model-dir, or vidparse models pull {name}")
    for need in spec.needs:
        if find_model(need) is None:
            pull(need, progress=progress)
    target = cache_dir() / spec.path
    if spec.url is None and spec.hub_id is None and url is None:  # it comes with vidparse: the shipped copy wins
        if target.is_file():
            target.unlink()
            log.warning("removed %s (a copy pulled --from elsewhere): %s's shipped weights are used", target, name)
        return resolve_model(name)
    present = find_model(name)
    if url is None and spec.sha256 and present is not None and present.is_file() and sha256_of(present) == spec.sha256:
        log.info("%s is here already: %s (its sha256 checked)", name, present)
        return present
    if spec.hub_id and url is None:
        return _snapshot_from_modelscope(spec, target)
    if url is not None and "://" not in url:  # a file downloaded by hand
        if not Path(url).is_file():
            raise ModelError(f"--from {url} is neither a URL nor a file",
                             hint="give a URL (https://…, file://…) or the path of a downloaded copy")
        url = Path(url).resolve().as_uri()
    source = url or spec.url
    assert source is not None
    log.info("downloading %s from %s", name, source)
    download(source, target, spec.sha256, progress, _fit_check(spec, source))
    found = find_model(name)
    # a copy in $VIDPARSE_MODEL_DIR is looked at first: the one used, which only matters when it differs
    if found is not None and found != target and not (found.is_file() and sha256_of(found) == sha256_of(target)):
        log.warning("%s is found before %s and is not the file just fetched: remove it to use the new one", found,
                    target)
    return target


def _fit_check(spec: ModelSpec, source: str) -> Callable[[Path], None] | None:
    """A check that refuses a file from ``source`` that is not ``spec``'s model, where ``spec`` has one."""
    if spec.mismatch is None:
        return None
    module, function = spec.mismatch.split(":")
    mismatch = getattr(importlib.import_module(module), function)

    def check(path: Path) -> None:
        if why := mismatch(path):
            raise ModelError(f"{source} is not a {spec.name} network ({why})",
                             hint=f"give a {spec.name} file made by `vidparse train`, or run "
                                  f"`vidparse models pull {spec.name}` for the shipped one")

    return check


def _unreachable(url: str, timeout_s: float = 10.0) -> str | None:
    """Why no TCP connection opens to the host of ``url`` (None: one does, or a proxy is to reach it, which the
    hub client uses and this check cannot judge)."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    try:
        with socket.create_connection((parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)),
                                      timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _snapshot_from_modelscope(spec: ModelSpec, target: Path) -> Path:
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise ModelError("the modelscope package is not installed", hint="pip install modelscope") from exc
    from modelscope.hub.api import HubApi

    endpoint = HubApi().endpoint  # $MODELSCOPE_ENDPOINT, or modelscope.cn
    if why := _unreachable(endpoint):  # said at once: the hub client retries for half a minute, logging each try
        raise ModelError(f"ModelScope ({endpoint}) cannot be reached: {why}",
                         hint="check the network, or download the model folder by hand and pass --model-dir")
    log.info("fetching %s from ModelScope hub (%s)", spec.name, spec.hub_id)
    staging = target.with_name(f".{target.name}.partial")
    try:
        snapshot_download(spec.hub_id, local_dir=str(staging))
    except Exception as exc:  # modelscope raises many types (requests, HTTPError, its own)
        shutil.rmtree(staging, ignore_errors=True)
        reason = str(exc).splitlines()[0] if str(exc) else ""
        reason = reason if len(reason) <= 160 else reason[:160] + "…"
        raise ModelError(f"could not fetch {spec.hub_id} from ModelScope: {type(exc).__name__}: {reason}",
                         hint="check the network, or download the model folder by hand and pass --model-dir") from exc
    if target.exists():
        shutil.rmtree(target)
    staging.replace(target)
    return target
