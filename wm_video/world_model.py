"""``WorldModel``: tokenizer + dynamics transformer + (optional) diffusion decoder in one pretrained folder.

A world-model folder holds one export per part and an index::

    world_model.json      resolution, fps, action space, normalisation statistics, part fingerprints, versions
    tokenizer/            config.json + model.safetensors (+ quality.json)
    dynamics/             config.json + model.safetensors (+ quality.json)
    decoder/              config.json + model.safetensors (+ quality.json)   (absent: frames come from the VQ decoder)
    README.md             the model card (:mod:`wm_video.model_card`); each part folder holds its own

A part's ``quality.json`` (written by ``wm-video train``, :mod:`wm_video.training.quality`) holds its held-out
metrics and quality-gate verdicts; :attr:`WorldModel.quality` carries them, and :attr:`WorldModel.head_quality` tells
generation which of the dynamics model's reward and termination heads passed (a failed head's captions are left out).

``WorldModel.from_pretrained(dir)`` reads the index, loads each part with its own ``from_pretrained`` and checks
that the parts fit together (vocabulary, token grid, the decoder's tokenizer fingerprint). ``save_pretrained``
writes the whole folder under a temporary name and moves it into place, so a reader never sees half of one; it
replaces a previous world-model folder but never deletes what it did not write
(:func:`wm_video.utils.atomic.write_folder`), a README.md someone wrote included.
``from_pretrained`` also takes a hub repo id (``owner/name``); :meth:`WorldModel.push_to_hub` uploads the folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wm_video.model_card import EvalReport, folder_eval_summary, load_eval_summary, may_write_card, world_model_card
from wm_video.models.card import CARD, is_generated_card
from wm_video.models.decoder import DiffusionDecoder
from wm_video.models.dynamics import DynamicsModel
from wm_video.models.export import QUALITY, read_quality
from wm_video.models.tokenizer import VQTokenizer
from wm_video.models.tokenizer.model import to_model_frames, weights_fingerprint
from wm_video.utils.atomic import write_folder
from wm_video.utils.hub import resolve_folder, upload_folder
from wm_video.world_model_index import (
    FORMAT_VERSION,
    INDEX,
    WorldModelInfo,
    is_world_model_folder,
    part_folders,
    read_index,
)

__all__ = ["FOLDER_ENTRIES", "FORMAT_VERSION", "INDEX", "RenderSettings", "WorldModel", "WorldModelInfo",
           "is_world_model_folder", "keep_still_patches", "part_folders", "read_index",
           "vq_render"]

FOLDER_ENTRIES = (INDEX, "tokenizer", "dynamics", "decoder")  # all that save_pretrained writes (and replaces)


@dataclass(frozen=True)
class RenderSettings:
    """How :meth:`WorldModel.decode` draws frames from tokens: one object from the caller (``WorldModelEnv(...,
    render=...)``, the generation pipeline, evaluation) down to the decoder.

    Args:
        num_inference_steps: diffusion decoder steps per frame, one network call each, 1 to the decoder's
            ``max_inference_steps`` (None, the default: the decoder's own ``num_inference_steps``).
        sampler: diffusion sampler, ``euler`` or ``dpmsolver`` (None, the default: the decoder's own).
        keep_still: with the VQ decoder, keep the previous frame's pixels wherever a token did not change (None, the
            default: on for a patch-local tokenizer, :attr:`WorldModel.keeps_still_patches`; False: every patch
            drawn by the VQ decoder).

    ``num_inference_steps`` and ``sampler`` apply to a diffusion decoder only, ``keep_still`` to the VQ decoder
    only; a world model given a setting it has no use for warns (once per model) and ignores it.
    """

    num_inference_steps: int | None = None
    sampler: str | None = None
    keep_still: bool | None = None


def keep_still_patches(frames: torch.Tensor, tokens: torch.Tensor, prev_frame: torch.Tensor,
                       prev_tokens: torch.Tensor) -> torch.Tensor:
    """Frames ``(b, t, 3, h, w)`` drawn from ``tokens`` ``(b, t, h', w')``, with every patch whose token equals the
    previous frame's token replaced by that frame's pixels, frame after frame from ``prev_frame`` ``(b, 3, h, w)``
    and its tokens ``prev_tokens`` ``(b, h', w')``. A patch that never changes keeps the true pixels of the last real
    frame through a whole rollout, as copying the last frame would, and only what changed is drawn by the decoder."""
    fy, fx = frames.shape[-2] // tokens.shape[-2], frames.shape[-1] // tokens.shape[-1]
    out = []
    for i in range(tokens.shape[1]):
        still = (tokens[:, i] == prev_tokens).repeat_interleave(fy, -2).repeat_interleave(fx, -1)  # (b, h, w)
        prev_frame = torch.where(still[:, None], prev_frame, frames[:, i])
        prev_tokens = tokens[:, i]
        out.append(prev_frame)
    return torch.stack(out, 1)


def vq_render(tokenizer: VQTokenizer, tokens: torch.Tensor, prev_frame: torch.Tensor | None,
              prev_tokens: torch.Tensor | None, keep_still: bool) -> torch.Tensor:
    """Frames ``(b, t, 3, h, w)`` in [-1, 1] drawn from ``tokens`` ``(b, t, h', w')`` by the VQ decoder, after
    ``prev_frame`` ``(b, 3, h, w)`` in [-1, 1] whose tokens are ``prev_tokens`` (either None: none): with
    ``keep_still``, still patches keep the previous frame's pixels (:func:`keep_still_patches`); a decoder that reads
    the previous frame reads the frame drawn before, kept patches included, as a rollout shows them."""
    keep = keep_still and prev_frame is not None and prev_tokens is not None
    if not tokenizer.reads_previous_frame:
        frames = tokenizer.detokenize(tokens).clamp(-1, 1)
        return keep_still_patches(frames, tokens, prev_frame, prev_tokens) if keep else frames
    out = []
    for i in range(tokens.shape[1]):
        frame = tokenizer.detokenize(tokens[:, i: i + 1], prev_frame)
        if keep:
            frame = keep_still_patches(frame, tokens[:, i: i + 1], prev_frame, prev_tokens)
        prev_frame, prev_tokens = frame[:, 0], tokens[:, i]
        out.append(frame)
    return torch.cat(out, 1)


def _actions_text(kind: str, n: int | None, dim: int | None) -> str:
    """``discrete actions (N)``, ``continuous actions (D dims)`` or the kind itself: for action-space errors."""
    return {"discrete": f"discrete actions ({n})", "continuous": f"continuous actions ({dim} dims)"}.get(kind, kind)


class WorldModel(nn.Module):
    """The three parts, checked to fit together. ``decoder`` None renders frames with the tokenizer's VQ decoder.
    ``quality``: each part's ``quality.json`` by part name (``tokenizer``, ``dynamics``, ``decoder``), where known."""

    def __init__(self, tokenizer: VQTokenizer, dynamics: DynamicsModel, decoder: DiffusionDecoder | None = None,
                 info: WorldModelInfo | None = None, quality: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        t, d = tokenizer.config, dynamics.config
        mismatch = [f"{name}: tokenizer {a}, dynamics {b}" for name, a, b in (
            ("vocab_size", tokenizer.vocab_size, d.vocab_size), ("token_h", t.token_grid, d.token_h),
            ("token_w", t.token_grid, d.token_w)) if a != b]
        if mismatch:
            raise ValueError("world model: the dynamics model was not trained on this tokenizer's tokens ("
                             + "; ".join(mismatch) + ")")
        if decoder is not None:
            decoder.check_tokenizer(tokenizer, "world model: decoder's tokenizer")
        self.tokenizer, self.dynamics, self.decoder = tokenizer.eval(), dynamics.eval(), decoder
        if decoder is not None:
            decoder.eval()
        self.info = info or WorldModelInfo(resolution=t.resolution)
        self.domain: str | None = None  # the action domain this is a view of (:meth:`for_domain`)
        self._ignored_settings: set[str] = set()  # RenderSettings fields already warned about (once per model)
        self.quality = {k: v for k, v in (quality or {}).items() if v is not None}
        if self.info.resolution != t.resolution:
            raise ValueError(f"world model: index resolution {self.info.resolution} but the tokenizer is built for "
                             f"{t.resolution}")

    @property
    def resolution(self) -> int:
        return self.info.resolution

    @property
    def context_frames(self) -> int:
        """Frames the dynamics model attends to (older context frames are dropped)."""
        return self.dynamics.config.context_frames

    @property
    def action_type(self) -> str:
        return self.dynamics.config.action_type

    @property
    def domains(self) -> list[str]:
        """The dynamics model's action domains by name (trained on a mixture); empty for one action space."""
        return [d.name for d in self.dynamics.config.domains]

    def for_domain(self, name: str | None = None) -> WorldModel:
        """This world model as action domain ``name`` sees it: the dynamics model's
        :meth:`~wm_video.models.dynamics.DynamicsModel.domain_model` (the same weights, nothing copied) and an index
        whose ``action_space`` and action statistics are that domain's. What generation, evaluation, planning, the
        gym env and play take (``--domain``). A model of one action space returns itself for None or its one
        domain's name (``default``); ValueError naming the known domains for an unknown name, or for None when the
        model has several."""
        dyn = self.dynamics.domain_model(name)
        if dyn is self.dynamics:
            return self
        d = self.dynamics.config.domain(name)
        space = (self.info.action_space.get("domains") or {}).get(d.name) or {"kind": d.action_type}
        stats = {k: v for k, v in self.info.stats.items() if k != "actions"}  # --data's, maybe another domain's
        if d.action_type == "continuous":
            stats["actions"] = {"mean": list(d.action_mean), "std": list(d.action_std)}
        info = dataclasses.replace(self.info, action_space=space, stats=stats)
        view = WorldModel(self.tokenizer, dyn, self.decoder, info, self.quality)
        view.domain = d.name
        return view

    def check_data_actions(self, space: Any, where: str) -> None:
        """ValueError naming ``where`` when a dataset's action space (``ActionSpace``: kind and size) is not the
        one this model takes: data of another game or robot, or of another of the model's action domains.
        Action-free data, or an action-free model, always fits (the null action stands in)."""
        c = self.dynamics.config
        if c.action_type == "none" or space.kind == "none":
            return
        mine, theirs = _actions_text(c.action_type, c.num_actions, c.action_dim), _actions_text(space.kind, space.n,
                                                                                               space.dim)
        if theirs != mine:
            who = f"its action domain {self.domain!r}" if self.domain else "the world model"
            raise ValueError(f"{where}: the data has {theirs}, but {who} takes {mine}")

    @property
    def head_quality(self) -> dict[str, bool | None]:
        """Whether the dynamics model's ``reward`` and ``termination`` heads passed their quality gates: True, False
        (at their constant baseline: their predictions mean nothing), None (not checkable: the data had none); an
        empty dict when the dynamics part has no ``quality.json`` (made outside ``wm-video train``)."""
        return dict((self.quality.get("dynamics") or {}).get("heads") or {})

    @property
    def device(self) -> torch.device:
        return next(self.dynamics.parameters()).device

    def check_frames(self, frames: torch.Tensor, where: str = "frames") -> None:
        """``(b, t, 3, h, w)`` at this model's resolution; clear errors otherwise."""
        res = self.resolution
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"{where}: expected (b, t, 3, h, w) frames, got {tuple(frames.shape)}")
        if tuple(frames.shape[-2:]) != (res, res):
            raise ValueError(f"{where}: frames are {frames.shape[-2]}x{frames.shape[-1]}, the model needs "
                             f"{res}x{res}")

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(b, t, 3, h, w)`` uint8 or float in [-1, 1] -> tokens ``(b, t, h', w')``."""
        self.check_frames(frames)
        return self.tokenizer.tokenize(to_model_frames(frames).to(self.device))

    @property
    def keeps_still_patches(self) -> bool:
        """Whether rendering keeps the previous frame's pixels where a token did not change, by default (a
        :class:`RenderSettings` ``keep_still`` overrides it): with the VQ decoder (no diffusion decoder) of a
        patch-local tokenizer (``encoder="patch"``), whose token of a patch changes whenever its pixels do, so an
        unchanged token means an unchanged patch."""
        return self.decoder is None and self.tokenizer.patch_local

    def warn_ignored(self, render: RenderSettings) -> None:
        """Warn, once per model and setting, about each field of ``render`` this model has no use for (the
        diffusion decoder's steps and sampler without one; ``keep_still`` with one): it is ignored."""
        if self.decoder is None:
            ignored = [f for f in ("num_inference_steps", "sampler") if getattr(render, f) is not None]
            why = "this world model has no diffusion decoder (frames come from the tokenizer's VQ decoder)"
        else:
            ignored = ["keep_still"] if render.keep_still is not None else []
            why = "this world model renders with its diffusion decoder, not the VQ decoder"
        for name in ignored:
            if name not in self._ignored_settings:
                self._ignored_settings.add(name)
                warnings.warn(f"render settings: {name}={getattr(render, name)!r} is ignored: {why}", stacklevel=2)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, prev_frame: torch.Tensor | None = None, *,
               prev_tokens: torch.Tensor | None = None, render: RenderSettings | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Tokens ``(b, t, h', w')`` -> frames ``(b, t, 3, h, w)`` in [-1, 1], by the diffusion decoder when there
        is one (``prev_frame`` conditions it when it was trained to), else by the VQ decoder.

        Args:
            tokens: the frames' tokens.
            prev_frame: ``(b, 3, h, w)`` (uint8, or float in [-1, 1]), the frame before the first one.
            prev_tokens: ``(b, h', w')``, its tokens: with the VQ decoder and ``keep_still`` (see
                :class:`RenderSettings`), each frame keeps the pixels of the frame before it wherever its token
                equals that frame's token (:func:`keep_still_patches`).
            render: decoder steps, sampler, keep_still (None: every default).
            generator: the diffusion decoder's noise; the same seed gives the same frames.
        """
        render = render or RenderSettings()
        self.warn_ignored(render)
        if self.decoder is not None:
            return self.decoder.render(tokens, prev_frame, render.num_inference_steps, render.sampler, generator)
        keep = self.keeps_still_patches if render.keep_still is None else render.keep_still
        if prev_frame is None or not (keep or self.tokenizer.reads_previous_frame):
            return vq_render(self.tokenizer, tokens, None, None, False)
        # a float frame is already a model frame (the env's previous frame, every step): no range check, no host sync
        prev = prev_frame if prev_frame.is_floating_point() else to_model_frames(prev_frame)
        return vq_render(self.tokenizer, tokens, prev.to(tokens.device),
                         None if prev_tokens is None else prev_tokens.to(tokens.device), keep)

    def save_pretrained(self, path: str | os.PathLike, overwrite: bool = False, *, license: str | None = None,
                        datasets: list[str] | None = None, eval_report: EvalReport | None = None,
                        repo_id: str | None = None) -> Path:
        """Write the folder (parts + index + model cards) under a temporary name, then move it into place; returns
        ``path``. ``path`` may be absent, empty or a previous world-model folder (replaced); a folder holding
        anything else is refused (:class:`~wm_video.utils.atomic.OutputRefused`) unless ``overwrite``, and even then
        only the :data:`FOLDER_ENTRIES` in it are replaced, the rest kept, a README.md this project did not write
        included (:func:`~wm_video.model_card.may_write_card`).

        Args:
            license, datasets: the card's (and the index's) license and hub dataset ids (default: :attr:`info`'s).
            eval_report: a ``wm-video eval`` report (its dict, ``report.json`` or folder) whose PSNR table the card
                shows and the index records (default: :attr:`info`'s ``evaluation``).
            repo_id: the hub repo the folder is for: the card names it and loads it by it.
        """
        info = dataclasses.replace(
            self.info, license=license or self.info.license,
            datasets=list(self.info.datasets if datasets is None else datasets),
            evaluation=self.info.evaluation if eval_report is None else load_eval_summary(eval_report))
        card = may_write_card(Path(path))
        return write_folder(path, lambda tmp: self._write_folder(tmp, info, (repo_id or "") if card else None),
                            previous=is_world_model_folder, marker=INDEX, what="world-model export",
                            owned=(*FOLDER_ENTRIES, CARD) if card else FOLDER_ENTRIES, overwrite=overwrite)

    def _write_folder(self, tmp: Path, info: WorldModelInfo, repo_id: str | None) -> None:
        """Parts, quality records, card (``repo_id`` None: none; "": not for a hub repo) and, last, the index."""
        index = self.index(info)
        parts = {name: part for name, part in (("tokenizer", self.tokenizer), ("dynamics", self.dynamics),
                                               ("decoder", self.decoder)) if part is not None}
        card = world_model_card(index, parts, info.license, info.datasets, repo_id=repo_id or None)
        part_card = {"license": info.license, "tags": card.data.tags, "datasets": card.data.datasets,
                     "world_model": True}
        for name, part in parts.items():
            part.save_pretrained(tmp / name, model_card_kwargs=part_card)
        for part, record in self.quality.items():
            if (tmp / part).is_dir():
                (tmp / part / QUALITY).write_text(json.dumps(record, indent=2) + "\n")
        if repo_id is not None:
            (tmp / CARD).write_text(str(card))
        (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload world model with wm-video",
                    private: bool | None = None, token: str | bool | None = None, revision: str | None = None,
                    create_pr: bool = False, license: str | None = None, datasets: list[str] | None = None,
                    eval_report: EvalReport | None = None) -> str:
        """:meth:`save_pretrained` into a temporary folder, uploaded to the hub model repo ``repo_id`` in one commit
        (the repo is created if absent); returns the commit's URL. Part folders are replaced whole (a part this
        model lacks is deleted); the repo's other files stay, a README.md this project did not write included.
        ``private``, ``token``, ``revision``, ``create_pr``: as ``huggingface_hub.HfApi``; the rest as
        :meth:`save_pretrained`. ``WorldModel.from_pretrained(repo_id)`` loads it back."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "world_model", license=license, datasets=datasets,
                                          eval_report=eval_report, repo_id=repo_id)
            return upload_folder(folder, repo_id, replaced=("tokenizer", "dynamics", "decoder"), card=CARD,
                                 card_is_ours=is_generated_card, commit_message=commit_message, private=private,
                                 token=token, revision=revision, create_pr=create_pr)

    def fingerprints(self) -> dict[str, str]:
        """A hash of every weight of each part, by part name: the index records them, and loading checks them, so
        a part swapped or edited after export is refused."""
        parts = {"tokenizer": self.tokenizer, "dynamics": self.dynamics, "decoder": self.decoder}
        return {name: weights_fingerprint(part) for name, part in parts.items() if part is not None}

    def index(self, info: WorldModelInfo | None = None) -> dict[str, Any]:
        """The ``world_model.json`` object of this model, with ``info`` (default :attr:`info`)."""
        import diffusers

        import wm_video

        info = info or self.info
        parts = {"tokenizer": "tokenizer", "dynamics": "dynamics"}
        if self.decoder is not None:
            parts["decoder"] = "decoder"
        return {"format_version": FORMAT_VERSION, "resolution": info.resolution, "fps": info.fps,
                "action_space": info.action_space, "stats": info.stats, "source": info.source,
                "license": info.license, "datasets": info.datasets, "evaluation": info.evaluation,
                "context_frames": self.context_frames, "tokens_per_frame": self.dynamics.config.tokens_per_frame,
                "vocab_size": self.tokenizer.vocab_size, "fingerprints": self.fingerprints(),
                "parts": parts, "versions": {"wm_video": wm_video.__version__, "torch": torch.__version__,
                                             "diffusers": diffusers.__version__}}

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str = "cpu", *, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, local_files_only: bool = False,
                        token: str | bool | None = None) -> WorldModel:
        """Assemble a world model from a folder written by :meth:`save_pretrained` (or ``wm-video export``), or a hub
        model repo id (``owner/name``) when ``path`` is no folder (``revision``, ``cache_dir``, ``local_files_only``,
        ``token``: :func:`wm_video.utils.hub.resolve_folder`). A folder's ``eval/report.json`` newer than its index
        (``wm-video eval --out FOLDER/eval``) becomes :attr:`info`'s ``evaluation``, for the next card."""
        path = resolve_folder(path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only,
                              token=token)
        index, parts, info = read_index(path)
        index_file = Path(path) / INDEX
        info.evaluation = folder_eval_summary(Path(path), index_file) or info.evaluation
        tok = VQTokenizer.from_pretrained(parts["tokenizer"], map_location=map_location)
        dyn = DynamicsModel.from_pretrained(parts["dynamics"], map_location=map_location)
        dec = None
        if "decoder" in parts:
            dec = DiffusionDecoder.from_pretrained(parts["decoder"], map_location=map_location)
        recorded = index.get("fingerprints")
        if not isinstance(recorded, dict) or set(recorded) != set(parts):
            raise ValueError(f"{index_file}: field 'fingerprints' must give a fingerprint for each of {sorted(parts)}, "
                             f"got {recorded!r} (a folder made by an older wm-video, or edited: rebuild it with "
                             "'wm-video export')")
        loaded = {"tokenizer": tok, "dynamics": dyn, "decoder": dec}
        for part, fp in recorded.items():
            if weights_fingerprint(loaded[part]) != fp:
                raise ValueError(f"{index_file}: field 'fingerprints.{part}' does not match the weights in "
                                 f"{parts[part]} (the part was replaced or edited after export)")
        return cls(tok, dyn, dec, info, {part: read_quality(folder) for part, folder in parts.items()})
