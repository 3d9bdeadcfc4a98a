"""A frozen text encoder for task conditioning: a T5 encoder or a CLIP text model with its tokenizer, loaded with
``transformers`` from a local folder the user gives (``local_files_only=True``: nothing is downloaded, at run time
or ever), turning each task text into one vector ``(text_dim,)``.

Pooling: T5 has no summary token, so a text's vector is the mean of its last hidden states over its own tokens
(padding masked out), as sentence-T5 does; CLIP's text model has one, the pooled output (the final layer-normed
state at the end-of-text token, what CLIP's own text projection reads). The width is the model's (``d_model``
or ``hidden_size``): the dynamics model's ``text_dim`` must equal it.

Embeddings are cached per distinct text: a dataset has a few tasks (a LeRobot dataset's task table, a Meta-World
task's name), so each is encoded once per run, whatever the batches. The encoder's weights stay frozen and
outside the dynamics model's ``state_dict``: the export records only which encoder it was trained with
(``DynamicsConfig.text_encoder``), and the same folder is given again to sample.

Only safetensors weights are read (``use_safetensors=True``): a ``pytorch_model.bin`` is a pickle.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from wm_video.models.export import read_json_object

# config.json's model_type -> the transformers class of its text encoder, and how its states become one vector
TEXT_MODELS = {
    "t5": ("T5EncoderModel", "mean"),
    "mt5": ("MT5EncoderModel", "mean"),
    "umt5": ("UMT5EncoderModel", "mean"),
    "clip": ("CLIPTextModel", "pooled"),
    "clip_text_model": ("CLIPTextModel", "pooled"),
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# a fast tokenizer's one file, or a slow one's: T5's SentencePiece model, CLIP's BPE vocabulary (with merges.txt)
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "vocab.json")


def check_text_checkpoint(path: Path) -> str:
    """The ``model_type`` of the transformers checkpoint in folder ``path``; FileNotFoundError when it is not a
    folder, ValueError naming what is missing (``config.json``, safetensors weights, tokenizer files) or a model
    type that is not a T5 or CLIP text model."""
    if not path.is_dir():
        raise FileNotFoundError(f"text encoder {path}: not a folder; give a local transformers checkpoint folder "
                                "(config.json, model.safetensors and tokenizer files, as save_pretrained writes them)")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        bin_note = " (pytorch_model.bin is a pickle and is not read: re-save with save_pretrained)" \
            if (path / "pytorch_model.bin").is_file() else ""
        missing.append(f"weights {' or '.join(WEIGHT_FILES)}{bin_note}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        missing.append(f"tokenizer files (one of {', '.join(TOKENIZER_FILES)}; save the tokenizer with "
                       "tokenizer.save_pretrained into the same folder)")
    if missing:
        raise ValueError(f"text encoder {path} is not a transformers checkpoint: missing {'; '.join(missing)}")
    model_type = read_json_object(path / "config.json").get("model_type")
    if model_type not in TEXT_MODELS:
        raise ValueError(f"text encoder {path}: config.json has model_type {model_type!r}; supported text encoders: "
                         f"{', '.join(TEXT_MODELS)} (a T5 encoder or a CLIP text model)")
    return model_type


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[Any]:
    """``transformers`` imported, with its per-load progress bar and info lines off for the duration."""
    import transformers  # heavy (seconds): imported by text-conditioned runs only
    from transformers.utils import logging as hf_logging

    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity(logging.ERROR)
    try:
        yield transformers
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


class TextEncoder:
    """A frozen T5 or CLIP text encoder from a local folder: task texts -> embeddings ``(b, text_dim)``.

    Args:
        path: a local transformers checkpoint folder (``config.json``, ``model.safetensors``, tokenizer files).
        device: where the encoder runs (default ``cpu``: it encodes each distinct text once).
        max_length: tokens kept per text (default 77, CLIP's context; a longer text is cut).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", max_length: int = 77) -> None:
        self.path = Path(path)
        model_type = check_text_checkpoint(self.path)
        class_name, self.pooling = TEXT_MODELS[model_type]
        with _quiet_transformers() as transformers:
            try:
                model = getattr(transformers, class_name).from_pretrained(self.path, local_files_only=True,
                                                                          use_safetensors=True)
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            except (OSError, ValueError) as e:
                raise ValueError(f"text encoder {self.path}: transformers could not load it as a {class_name} with "
                                 f"its tokenizer ({' '.join(str(e).split())[:300]})") from e
        self.model = model.float().eval().requires_grad_(False).to(device)
        config = self.model.config
        self.dim = int(getattr(config, "d_model", None) or config.hidden_size)
        limit = getattr(config, "max_position_embeddings", None)  # CLIP's learned positions; T5's are relative
        self.max_length = min(max_length, limit) if limit else max_length
        self.cache: dict[str, torch.Tensor] = {}  # text -> (text_dim,) float32 on the CPU

    @property
    def name(self) -> str:
        """What a dynamics export records as the encoder it was trained with: the folder's resolved path."""
        return str(self.path.resolve())

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.embed(texts)

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``b`` texts -> float32 ``(b, text_dim)`` on the CPU; a text seen before comes from the cache, the new ones
        are encoded together. ValueError for an entry that is not a non-empty string (a clip without task text)."""
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"task text [{i}] is {text!r}: every clip of a text-conditioned batch needs its task "
                                 "text (meta.json extra.task)")
        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            self.cache.update(zip(new, self._encode(new), strict=True))
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self.cache[t] for t in texts])

    def _encode(self, texts: list[str]) -> torch.Tensor:
        """Distinct texts -> ``(b, text_dim)`` float32 on the CPU, pooled as the module docstring says."""
        device = next(self.model.parameters()).device
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)  # (b, l)
        out = self.model(input_ids=ids, attention_mask=mask)
        if self.pooling == "pooled":
            return out.pooler_output.float().cpu()
        weights = mask[..., None].float()  # (b, l, 1)
        pooled = (out.last_hidden_state.float() * weights).sum(1) / weights.sum(1).clamp(min=1)
        return pooled.cpu()


def text_encoder_for(text_dim: int, trained_with: str, path: str | Path | None, where: str = "dynamics",
                     device: str | torch.device = "cpu") -> TextEncoder | None:
    """The text encoder a dynamics model needs: None for a model without text (``text_dim`` 0), which refuses a
    ``path``; for a model with text, the :class:`TextEncoder` at ``path``, which must be given (nothing is
    downloaded) and be ``text_dim`` wide. ``trained_with``: the encoder the model records, named in the errors."""
    if not text_dim:
        if path:
            raise ValueError(f"{where}: this dynamics model was trained without task text (text_dim=0); it takes no "
                             f"text encoder (got {path})")
        return None
    if not path:
        raise ValueError(f"{where}: this dynamics model was trained with task text (text_dim={text_dim}, text encoder "
                         f"{trained_with or 'unrecorded'}); give the local folder of that encoder (text_encoder=PATH "
                         "or --text-encoder PATH): it is never downloaded")
    encoder = TextEncoder(path, device)
    if encoder.dim != text_dim:
        raise ValueError(f"{where}: text encoder {path} gives {encoder.dim}-wide embeddings, the model takes "
                         f"text_dim={text_dim} (it was trained with {trained_with or 'an unrecorded encoder'})")
    return encoder
