"""``ZeroShotClassifier``: the result of a classifier build, as data, and the math on it.

Weights [D, C] (unit-norm float32 columns), class names, the temperature and bias, and where
they came from. Built once per (model, classes, prompts, precision), cached on disk, saved as
safetensors with JSON metadata: never pickle, so a classifier file is safe to receive.
It never decodes an image: ``predict`` on files or PIL images hands them to the pipeline, the
one image path of zsclip (worker processes, draft decoding, an error row per bad image).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, Union

import numpy as np
from safetensors import SafetensorError

from .. import __version__
from ..encoders.fingerprint import FINGERPRINT_VERSION
from ..errors import ClassifierFileError, InputError, ZsclipWarning
from ..precision import DEFAULT_PRECISION, known_without_torch, resolve_precision, text_precision
from ..prompts import Template, expand_prompts, resolve_classes, resolve_templates
from . import formats
from .cache import cache_dir as default_cache_dir
from .cache import cache_key
from .topk import blocked_top_k, streamed_top_k

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..encoders.base import Encoder
    from ..options import RunOptions
    from .predict import TopK

ImageInput = Union["Image.Image", str, os.PathLike]  # noqa: UP007 (a runtime alias, py3.10)
T = TypeVar("T")
_FILE_FORMAT = formats.FLAT
#: Tip-Adapter heads (zsclip.adapt.heads) add a cache of few-shot features to the same layout.
TIP_ADAPTER_FORMAT = formats.TIP_ADAPTER


@dataclass
class ZeroShotClassifier:
    """Zero-shot classifier weights and everything needed to use and trace them.

    Attributes:
        weights: [embed_dim, num_classes] float32, each column L2-normalised. A classifier read from a
            file holds them as a numpy array until a torch caller asks for ``weights`` (then wrapped, not
            copied): stored features are answered with ``weights_array`` without importing torch.
        classnames: display name of each class (its first synonym).
        synonyms: all names of each class, whose prompts were averaged together.
        logit_scale: temperature multiplier applied to cosine similarities (model's own by default).
        logit_bias: added to logits for sigmoid-trained models, else None.
        provenance: model name and fingerprint, templates, precision, zsclip version, creation time.
        encoder: the model it was built with (set by ``build`` and ``load(..., encoder=)``), which
            ``predict`` uses; not part of the data (not saved, not compared).
        calibration: what ``zsclip calibrate`` fitted (``zsclip.calibration``), or None: its
            ``temperature`` divides every logit (so every head, task and runner that asks for logits or
            probabilities gets calibrated ones), with what it was fitted on and its accept table.
    """

    weights: torch.Tensor
    classnames: list[str]
    synonyms: list[list[str]]
    logit_scale: float
    logit_bias: float | None = None
    provenance: dict = field(default_factory=dict)
    encoder: Encoder | None = field(default=None, repr=False, compare=False)
    calibration: dict | None = None

    # --- building --------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        encoder: Encoder,
        classnames: str | Sequence[str | Sequence[str]],
        templates: str | os.PathLike | Sequence[str | Template] | None = None,
        *,
        precision: str = DEFAULT_PRECISION,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 256,
        progress: bool | None = None,
        logit_scale: float | None = None,
    ) -> ZeroShotClassifier:
        """Build a classifier: prompt every class with every template, encode, ensemble.

        Args:
            encoder: from ``zsclip.load_model`` or ``zsclip.wrap``.
            classnames: names, or lists of synonyms per class, or a named list ("imagenet1k").
            templates: a set name ("openai-imagenet", "openai-imagenet-7", "photo"), a file with one
                template per line, or a list of strings with ``{}`` / callables. Default:
                "openai-imagenet", OpenAI's 80 templates (best zero-shot accuracy in the CLIP paper).
            precision: "auto" (bf16 on CUDA GPUs that have it, else fp16 there; fp32 on CPUs), "fp32",
                "bf16" or "fp16"; "int8" quantizes image towers only, so its classifier is fp32.
            cache: reuse / store the result under ``cache_dir`` (default $ZSCLIP_CACHE_DIR or the
                user cache dir); the key covers model, classes, prompts and precision.
            logit_scale: fixed temperature (e.g. 100, as in the CLIP paper's eval) instead of the
                model's learned ``logit_scale.exp()``.
        """
        classes, named_list = resolve_classes(classnames)
        if logit_scale is not None:
            logit_scale = checked_scale(logit_scale)
        _warn_one_class(classes, encoder.logit_bias)
        template_list = resolve_templates(templates)
        prompts = expand_prompts(classes, template_list)
        precision = text_precision(resolve_precision(precision, encoder.device))  # int8: images only
        provenance = {
            "model": encoder.name,
            "pretrained": getattr(encoder, "pretrained", None),
            "backend": encoder.backend,
            "fingerprint": encoder.fingerprint,
            "templates": [t.text for t in template_list],
            "precision": precision,
            "zsclip_version": __version__,
            "named_class_list": classnames if named_list else None,
        }
        key = cache_key(encoder.fingerprint, classes, prompts, precision)
        cached_file = default_cache_dir(cache_dir) / f"{key}.zsc"
        if cache and cached_file.is_file():
            hit = _load_cached(cached_file, CacheRequest(encoder.fingerprint, classes, provenance["templates"],
                                                         precision, encoder.embed_dim))
            if hit is not None:
                hit.encoder = encoder
                if logit_scale is not None:
                    hit.logit_scale = float(logit_scale)
                return hit
        # prompts of one template share their leading tokens: group them so batches can share work
        template_of = [i % len(template_list) for ps in prompts for i in range(len(ps))]
        features = encoder.encode_text([p for ps in prompts for p in ps], precision=precision,
                                       batch_size=batch_size, progress=progress, groups=template_of)
        weights = ensemble(features, [len(ps) for ps in prompts])
        provenance["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        classifier = cls(weights, [names[0] for names in classes], classes, encoder.logit_scale,
                         encoder.logit_bias, provenance, encoder)
        if cache:
            _store_cached(classifier, cached_file)
        if logit_scale is not None:
            classifier.logit_scale = float(logit_scale)
        return classifier

    @classmethod
    def cached(
        cls,
        fingerprint: str,
        classnames: str | Sequence[str | Sequence[str]],
        templates: str | os.PathLike | Sequence[str | Template] | None = None,
        *,
        precision: str = DEFAULT_PRECISION,
        device: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        embed_dim: int | None = None,
    ) -> ZeroShotClassifier | None:
        """What ``build`` would return from its cache for the model with ``fingerprint`` on ``device``,
        without that model: the same key (classes, prompts, the text precision the build would run at).
        None when it is not cached (or the entry is unreadable): then only a build can make it.

        An embedding store records its model's fingerprint, so a store classified again with labels
        seen before loads no model at all (``zsclip.job.plan``). The classifier has no ``encoder``.
        ``embed_dim``: the width of the features it will judge (a store's), checked as ``build`` checks
        its model's: an entry that holds another width, other classes, prompts or model is no hit."""
        classes, _ = resolve_classes(classnames)
        template_list = resolve_templates(templates)
        prompts = expand_prompts(classes, template_list)
        resolved = known_without_torch(precision, device)
        if resolved is None:
            from ..encoders import resolve_device

            resolved = resolve_precision(precision, resolve_device(device))
        precision = text_precision(resolved)
        cached_file = default_cache_dir(cache_dir) / f"{cache_key(fingerprint, classes, prompts, precision)}.zsc"
        if not cached_file.is_file():
            return None
        hit = _load_cached(cached_file, CacheRequest(fingerprint, classes, [t.text for t in template_list], precision,
                                                     embed_dim))
        if hit is None:
            return None
        _warn_one_class(classes, hit.logit_bias)
        return hit

    # --- using -----------------------------------------------------------------------------
    @property
    def is_sigmoid(self) -> bool:
        """Sigmoid-trained models (SigLIP) score classes independently, not by softmax."""
        return self.logit_bias is not None

    @property
    def temperature(self) -> float:
        """The fitted temperature the logits are divided by (1.0 when uncalibrated)."""
        return float(self.calibration["temperature"]) if self.calibration else 1.0

    def logits(self, image_features: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """(scale * features @ weights (+ bias)) / temperature (+ a calibrated class bias): [B, D] normalised
        features -> [B, C]."""
        scale = self.logit_scale if scale is None else checked_scale(scale)
        logits = scale * image_features.float() @ self.weights
        logits = logits + self.logit_bias if self.logit_bias is not None else logits
        if not self.calibration:
            return logits
        logits = logits / self.temperature
        bias = self.calibration.get("bias")
        if bias is None:
            return logits
        import torch

        return logits + torch.tensor(bias, dtype=logits.dtype, device=logits.device)

    def probabilities(self, image_features: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """Softmax over classes, or per-class sigmoid for sigmoid-trained models."""
        import torch

        logits = self.logits(image_features, scale)
        return torch.sigmoid(logits) if self.is_sigmoid else logits.softmax(dim=-1)

    @property
    def embed_dim(self) -> int:
        """The width of the features it takes (D of the weights [D, C])."""
        return int(self.__dict__["_weights"].shape[0])

    @property
    def weights_array(self) -> np.ndarray:
        """``weights`` as a float32 numpy array [D, C] (the same memory where it can be)."""
        weights = self.__dict__["_weights"]
        if isinstance(weights, np.ndarray):
            return weights
        return weights.detach().float().cpu().numpy()

    def array_logits(self, features: np.ndarray, scale: float | None = None, *,
                     out: np.ndarray | None = None) -> np.ndarray:
        """``logits`` for features held in a numpy array, computed with numpy, operation for operation:
        an embedding store's rows are answered without importing torch (seconds at startup). ``out``: a
        float32 [N, C] array to write them into (the top-k's blocks reuse one per thread)."""
        scale = self.logit_scale if scale is None else checked_scale(scale)
        logits = np.matmul(scale * np.asarray(features, dtype=np.float32), self.weights_array, out=out)
        if self.logit_bias is not None:
            np.add(logits, np.float32(self.logit_bias), out=logits)
        if not self.calibration:
            return logits
        np.divide(logits, np.float32(self.temperature), out=logits)
        bias = self.calibration.get("bias")
        return logits if bias is None else np.add(logits, np.asarray(bias, dtype=np.float32), out=logits)

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput] | torch.Tensor,
        top_k: int = 5,
        *,
        encoder: Encoder | None = None,
        options: RunOptions | None = None,
        precision: str | None = None,
        scale: float | None = None,
    ) -> list[TopK]:
        """Top-k (label, probability) pairs per image, best first, in input order.

        ``images``: file paths or URLs, PIL images, or a preprocessed [B, 3, H, W] tensor. Files go
        through the pipeline (decoded in worker processes for large inputs): an image that cannot be
        read gets an empty row whose ``.error`` says why (and a ``ZsclipWarning``), the rest are
        predicted. A classifier loaded from a file needs the ``encoder`` of the model it was built with.
        ``options`` sets how images are decoded and encoded; ``precision`` is a shortcut for its precision.
        """
        from ..options import RunOptions
        from .predict import predict_images

        options = options or RunOptions()
        if precision is not None:
            options = options.with_(precision=precision)
        return predict_images(self, images, self._encoder_for_prediction(encoder), top_k=top_k, options=options,
                              scale=scale)

    def top_k(self, image_features: torch.Tensor | np.ndarray, k: int, scale: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor] | tuple[np.ndarray, np.ndarray]:
        """(scores, class indices) [B, k'] of the k best classes, k' = min(k, classes), best first;
        numpy arrays for numpy features (see ``array_logits``), else tensors.

        Sigmoid models rank by logits: their probabilities saturate at 1.0 and would tie.
        """
        k = max(1, min(int(k), len(self.classnames)))
        if isinstance(image_features, np.ndarray):
            weights = self.weights_array
            return blocked_top_k(len(image_features), weights.shape[1], lambda start, stop, out: self.array_logits(
                image_features[start:stop], scale, out=out), k, self.is_sigmoid, matmul=True)
        import torch

        logits = self.logits(image_features, scale)
        indices = logits.topk(k, dim=-1).indices
        probabilities = torch.sigmoid(logits) if self.is_sigmoid else logits.softmax(dim=-1)
        return probabilities.gather(-1, indices), indices

    def top_k_stream(self, items: Iterable[T], features_of: Callable[[T], np.ndarray], k: int,
                     scale: float | None = None) -> Iterator[tuple[T, np.ndarray, np.ndarray]]:
        """(item, scores, class indices) for each of ``items`` in order: ``top_k`` of ``features_of(item)``, a
        float32 numpy array [B, D], bit for bit, as one pipeline on the top-k's threads, which also advance
        ``items`` between blocks (``classifier.topk.streamed_top_k``): how a store's rows are read and
        classified as arrays, 0.5 s faster per million rows than batch by batch beside a reader thread."""
        k = max(1, min(int(k), len(self.classnames)))
        weights = self.weights_array

        def logits_for(item: T):
            features = features_of(item)
            return len(features), lambda start, stop, out: self.array_logits(features[start:stop], scale, out=out)

        return streamed_top_k(items, logits_for, weights.shape[1], k, self.is_sigmoid)

    def _encoder_for_prediction(self, encoder: Encoder | None) -> Encoder:
        encoder = encoder or self.encoder
        if encoder is None:
            raise InputError("this classifier has no model attached: pass encoder=zsclip.load_model(...) "
                             f"for {self.provenance.get('model', 'the model it was built with')}")
        self.check_encoder(encoder)
        return encoder

    def check_encoder(self, encoder: Encoder) -> None:
        """Refuse a model other than the one the classifier was built with (features would not match)."""
        expected = self.provenance.get("fingerprint")
        if expected and expected.split(":")[1:2] != [FINGERPRINT_VERSION]:
            raise ClassifierFileError(
                f"classifier was built by an older zsclip ({self.provenance.get('zsclip_version', 'unknown version')}) "
                "that identified models differently: rebuild it with `zsclip build` (or ZeroShotClassifier.build)")
        if expected and expected != encoder.fingerprint:
            raise ClassifierFileError(
                f"classifier was built for model {self.provenance.get('model')} ({expected}), not {encoder.name} "
                f"({encoder.fingerprint}): use the model it was built for (CLI: leave out --model), or rebuild it "
                f"with this model (`zsclip build --model {encoder.name}`)")

    # --- files -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write safetensors (weights) + JSON metadata, atomically: a crash never leaves half a file."""
        path = Path(path)
        metadata = {
            "format": _FILE_FORMAT,
            "classnames": self.classnames,
            "synonyms": self.synonyms,
            "logit_scale": self.logit_scale,
            "logit_bias": self.logit_bias,
            "provenance": self.provenance,
            **({"calibration": self.calibration} if self.calibration else {}),
        }
        from safetensors.torch import save_file

        from ..outputs.atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            save_file({"weights": self.weights.contiguous()}, str(temporary),
                      metadata={"zsclip": json.dumps(metadata, ensure_ascii=False)})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, encoder: Encoder | None = None) -> ZeroShotClassifier:
        """Read a file written by ``save`` (safetensors: no code is executed while loading): a zero-shot
        classifier or a linear probe. A Tip-Adapter file is ``TipAdapterClassifier.load``'s (any flat file:
        ``zsclip.classifier.files.load_flat``, which chooses between the two).

        With ``encoder``, check that it is the model the classifier was built with and attach it
        (for ``predict``)."""
        path = Path(path)
        metadata, weights = read_checked(path)
        if metadata.get("format") == TIP_ADAPTER_FORMAT:
            raise ClassifierFileError(f"{path} holds a Tip-Adapter head (zsclip adapt): read it with "
                                      "zsclip.adapt.load_classifier (or TipAdapterClassifier.load)")
        classifier = cls(weights.astype(np.float32, copy=False), list(metadata["classnames"]),
                         [list(s) for s in metadata["synonyms"]],
                         float(metadata["logit_scale"]), metadata["logit_bias"], dict(metadata["provenance"]))
        classifier.calibration = metadata.get("calibration")
        return classifier.attached(encoder)

    def attached(self, encoder: Encoder | None) -> ZeroShotClassifier:
        """This classifier with ``encoder`` checked (the model it was built with) and attached; as it is
        without one."""
        if encoder is not None:
            self.check_encoder(encoder)
            self.encoder = encoder
        return self

    def __repr__(self) -> str:
        return (f"ZeroShotClassifier({len(self.classnames)} classes, dim={self.embed_dim}, "
                f"model={self.provenance.get('model')!r}, templates={len(self.provenance.get('templates', []))})")


def read_checked(path: Path) -> tuple[dict, np.ndarray]:
    """The metadata and weights every flat classifier file holds (zero-shot, linear probe, Tip-Adapter),
    each checked for type, range and shape, or one ClassifierFileError line naming the file."""
    metadata = read_metadata(path)
    weights = _read_weights(path)
    tip_adapter = isinstance(metadata, dict) and metadata.get("format") == TIP_ADAPTER_FORMAT
    problem = _metadata_problem({**metadata, "format": _FILE_FORMAT} if tip_adapter else metadata, weights)
    if problem:
        raise ClassifierFileError(f"{path} is damaged or not a zsclip classifier file ({problem}): rebuild it")
    return metadata, weights


def read_metadata(path: str | os.PathLike) -> object:
    """The JSON ``zsclip`` metadata of a classifier file of any kind (read without loading tensors
    or running code), or one ClassifierFileError line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierFileError(f"classifier file {path} not found: write one with `zsclip build` (or "
                                  "ZeroShotClassifier.save / TreeClassifier.save)")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            return json.loads((handle.metadata() or {})["zsclip"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError, RecursionError) as error:
        reason = " ".join(str(error).split())[:160]
        raise ClassifierFileError(f"{path} is not a zsclip classifier file ({reason}): rebuild it") from None


def checked_scale(scale: object) -> float:
    """A temperature must be a finite number > 0: NaN gives NaN scores, 0 ties every class, a
    negative one ranks the worst class first."""
    try:
        value = float(scale)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"scale {scale!r} must be a finite number > 0 (e.g. 100, the CLIP paper's); leave it out "
                         "to use the model's own")
    return value


def ensemble(features: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Prompt ensembling: mean of each class's normalised prompt features, renormalised -> [D, C].

    With equal prompt counts this is the reference's reshape-mean, operation for operation.
    """
    import torch

    if len(set(counts)) == 1:
        means = features.reshape(len(counts), counts[0], -1).mean(dim=1)
    else:
        owner = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        sums = torch.zeros(len(counts), features.shape[1]).index_add_(0, owner, features)
        means = sums / torch.tensor(counts, dtype=features.dtype).unsqueeze(1)
    return (means / means.norm(dim=1, keepdim=True)).T.contiguous()


def _metadata_problem(metadata: object, weights: np.ndarray | torch.Tensor) -> str | None:
    """What is wrong with a classifier file's metadata and weights (numpy, or a tensor from a file read
    with torch), or None: every field is checked for type and consistency, so a tampered or truncated
    file is refused here, in one line, instead of failing later inside torch."""
    if not isinstance(weights, np.ndarray):
        if not weights.is_floating_point():
            return f"weights {tuple(weights.shape)} are not floating point"
        weights = weights.detach().float().cpu().numpy()
    if not isinstance(metadata, dict):
        return "metadata is not an object"
    if metadata.get("format") != _FILE_FORMAT:
        return f"unsupported format {str(metadata.get('format'))[:40]!r}, expected {_FILE_FORMAT!r}"
    names, synonyms = metadata.get("classnames"), metadata.get("synonyms")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return "classnames is not a list of names"
    if (not isinstance(synonyms, list) or len(synonyms) != len(names)
            or not all(isinstance(s, list) and s and all(isinstance(n, str) for n in s) for s in synonyms)):
        return "synonyms do not match the class names"
    scale, bias = metadata.get("logit_scale"), metadata.get("logit_bias")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        return f"logit_scale {str(scale)[:20]} is not a positive number"
    if bias is not None and (isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias)):
        return f"logit_bias {str(bias)[:20]} is not a number"
    if not isinstance(metadata.get("provenance"), dict):
        return "provenance is missing"
    from ..calibration.temperature import calibration_problem

    problem = calibration_problem(metadata.get("calibration"))
    if problem:
        return problem
    calibrated_bias = (metadata.get("calibration") or {}).get("bias")
    if calibrated_bias is not None and len(calibrated_bias) != len(names):
        return f"calibration bias has {len(calibrated_bias)} values for {len(names)} classes"
    if weights.ndim != 2 or weights.shape[1] != len(names) or not np.issubdtype(weights.dtype, np.floating):
        return f"weights {tuple(weights.shape)} do not match {len(names)} class names"
    if not np.isfinite(weights).all():
        return "weights hold NaN or infinite values"
    return None


def _read_weights(path: Path) -> np.ndarray:
    """The ``weights`` tensor of a classifier file as numpy (no torch needed; bf16, which numpy lacks,
    is read through torch), or one ClassifierFileError line naming the file."""
    from safetensors.numpy import load_file

    errors = (SafetensorError, OSError, KeyError, ValueError, TypeError, RuntimeError, RecursionError)
    try:
        try:
            return load_file(str(path))["weights"]
        except (TypeError, ValueError, SafetensorError) as error:
            if "bf16" not in str(error).lower() and "bfloat16" not in str(error).lower():
                raise
            from safetensors.torch import load_file as load_tensors

            return load_tensors(str(path))["weights"].float().numpy()
    except errors as error:
        reason = " ".join(str(error).split())[:160]
        raise ClassifierFileError(f"{path} is not a zsclip classifier file ({reason}): rebuild it") from None


def _weights_tensor(self: ZeroShotClassifier) -> torch.Tensor:
    weights = self.__dict__["_weights"]
    if isinstance(weights, np.ndarray):  # read from a file: wrapped (not copied) the first time torch needs it
        import torch

        weights = self.__dict__["_weights"] = torch.from_numpy(weights)
    return weights


def _set_weights(self: ZeroShotClassifier, weights) -> None:
    self.__dict__["_weights"] = weights


# After @dataclass (which must see ``weights`` as a plain field): reads go through the property.
ZeroShotClassifier.weights = property(_weights_tensor, _set_weights,  # type: ignore[assignment]
                                      doc="[embed_dim, num_classes] float32 tensor, each column L2-normalised.")


def _warn_one_class(classes: list[list[str]], logit_bias: float | None) -> None:
    """Softmax over a single class always gives 1.0: say so (sigmoid models score it on its own)."""
    if len(classes) == 1 and logit_bias is None:
        warnings.warn(f"only one class ({classes[0][0]!r}): softmax over one class always gives 1.0; add the "
                      "alternatives (e.g. 'other'), or use a sigmoid model such as SigLIP", ZsclipWarning,
                      stacklevel=3)  # the caller of build / cached


@dataclass(frozen=True)
class CacheRequest:
    """What a cache lookup asked for. A cache entry is named by the digest of these (``cache_key``), but
    a file name proves nothing: an entry copied, swapped or written by another user's zsclip into a shared
    cache folder holds whatever it holds. So what the entry records is compared with the request before
    it is used. ``embed_dim`` None: not checked (no model or store to compare with)."""

    fingerprint: str
    classes: list[list[str]]
    templates: list[str]
    precision: str
    embed_dim: int | None = None
    #: how many description sentences were added to the prompts (None: a plain build records none)
    descriptions: int | None = None

    def problem(self, hit: ZeroShotClassifier) -> str | None:
        """Why ``hit`` is not the classifier asked for, or None."""
        provenance = hit.provenance
        if provenance.get("fingerprint") != self.fingerprint:
            return f"it was built for model {provenance.get('model')!r} ({provenance.get('fingerprint')})"
        if [list(names) for names in hit.synonyms] != [list(names) for names in self.classes]:
            shown = ", ".join(hit.classnames[:3]) + (", ..." if len(hit.classnames) > 3 else "")
            return f"it holds other classes ({len(hit.classnames)}: {shown})"
        if provenance.get("templates") != self.templates or provenance.get("descriptions") != self.descriptions:
            return "it was built from other prompt templates" + (" or descriptions" if self.descriptions else "")
        if provenance.get("precision") != self.precision:
            return f"it was built at precision {provenance.get('precision')!r}, not {self.precision!r}"
        if self.embed_dim is not None and hit.embed_dim != self.embed_dim:
            return f"it takes {hit.embed_dim}-d features, not {self.embed_dim}-d"
        return None


def _load_cached(path: Path, request: CacheRequest) -> ZeroShotClassifier | None:
    """The entry at ``path`` when it holds what ``request`` asks for; else None, with a warning that says
    why it is ignored (the caller then builds, and overwrites the entry)."""
    try:
        hit = ZeroShotClassifier.load(path)
    except ClassifierFileError as error:
        warnings.warn(f"ignoring unreadable cache entry, rebuilding: {error}", ZsclipWarning, stacklevel=3)
        return None
    problem = request.problem(hit)
    if problem is not None:
        warnings.warn(f"ignoring classifier cache entry {path}: {problem}, not what was asked; rebuilding it",
                      ZsclipWarning, stacklevel=3)
        return None
    return hit


def _store_cached(classifier: ZeroShotClassifier, path: Path) -> None:
    try:
        classifier.save(path)
    except OSError as error:  # a read-only or full cache must not fail the build
        warnings.warn(f"could not write classifier cache {path}: {error}", ZsclipWarning, stacklevel=3)


__all__ = ["ZeroShotClassifier", "ensemble"]
