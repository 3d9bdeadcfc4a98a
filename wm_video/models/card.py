"""Model cards: the ``README.md`` in every export folder, with Hugging Face metadata (YAML front matter) and a body
that says what the folder holds and how to load it.

huggingface_hub's ``PyTorchModelHubMixin`` writes ``README.md`` on ``save_pretrained`` from
``generate_model_card()``, by default a template of ``[More Information Needed]`` lines. Each part overrides
``generate_model_card`` with :func:`part_card`, so a part export (``wm-video export`` of one part, or a world model's
``tokenizer/``, ``dynamics/``, ``decoder/``) says what it is instead; the world model's own card is
:mod:`wm_video.model_card`. Every card this project writes carries :data:`MARKER`, so a save can tell it from a
README someone wrote (which is never replaced).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from torch import nn

CARD = "README.md"
LIBRARY = "wm-video"
DEFAULT_LICENSE = "apache-2.0"
MARKER = ("<!-- written by wm-video on save; saving again rewrites it. Delete this line to keep your edits: a card "
          "without it is never replaced. -->")
CLASSES = {"tokenizer": ("wm_video.models.tokenizer", "VQTokenizer"),
           "dynamics": ("wm_video.models.dynamics", "DynamicsModel"),
           "decoder": ("wm_video.models.decoder", "DiffusionDecoder")}
ABOUT = {
    "tokenizer": "The VQ tokenizer: frames `(b, t, 3, h, w)` to discrete tokens `(b, t, h', w')` and back.",
    "dynamics": "The dynamics model: an action-conditioned spatiotemporal transformer that predicts the next "
                "frame's tokens (MaskGIT sampling), the reward and whether the episode ends.",
    "decoder": "The diffusion decoder: renders a tokenizer's tokens into frames by denoising (EDM), conditioned on "
               "the previous frame when trained to.",
}


def is_generated_card(text: str) -> bool:
    """Whether ``text`` (a README's content) is a card this project wrote and may rewrite."""
    return MARKER in text


def tag(text: str) -> str:
    """``text`` as a hub tag: lower case, runs of anything but letters, digits and dots as one ``-``
    (``ALE/Breakout-v5`` -> ``ale-breakout-v5``)."""
    return re.sub(r"[^a-z0-9.]+", "-", str(text).lower()).strip("-")


def parameters(module: nn.Module) -> int:
    """Parameters of ``module``, each counted once (tied weights are shared)."""
    return sum(p.numel() for p in module.parameters())


def render(tags: Iterable[str], body: list[str], license: str | None = None,
           datasets: Iterable[str] | None = None) -> ModelCard:
    """A card: front matter (``library_name``, ``license``, ``tags``, ``datasets``) then :data:`MARKER` and
    ``body``'s lines. The YAML comes from huggingface_hub's ``ModelCardData`` (what the hub parses)."""
    data = ModelCardData(library_name=LIBRARY, license=license or DEFAULT_LICENSE,
                         tags=list(dict.fromkeys(t for t in tags if t)), datasets=list(datasets or []) or None)
    return ModelCard("\n".join(["---", data.to_yaml(), "---", "", MARKER, "", *body]).rstrip() + "\n")


def part_facts(model: nn.Module, kind: str) -> list[tuple[str, str]]:
    """What a card says about a ``kind`` part: (name, value) rows read from its config."""
    c = model.config
    if kind == "tokenizer":
        g = c.token_grid
        return [("resolution", f"{c.resolution}x{c.resolution} pixels"), ("token grid", f"{g}x{g}"),
                ("vocabulary", str(c.vocab_size)), ("quantizer", c.quantizer),
                ("encoder", f"{c.encoder} (downsampling {c.downsample})")]
    if kind == "dynamics":
        def space(d: Any) -> str:
            return {"discrete": f"discrete, {d.num_actions} actions", "continuous": f"continuous, {d.action_dim} dims",
                    "none": "none (video only)"}[d.action_type]

        actions = "; ".join(f"{d.name}: {space(d)}" for d in c.domains) if c.domains else space(c)
        return [("token grid", f"{c.token_h}x{c.token_w}"), ("vocabulary", str(c.vocab_size)),
                ("context", f"{c.context_frames} frames"), ("transformer", f"{c.depth} blocks, width {c.width}, "
                                                                          f"{c.heads} heads"),
                ("actions", actions), ("reward bins", str(c.reward_bins))]
    g = model.token_grid
    return [("token grid", f"{g[0]}x{g[1]}"), ("vocabulary", str(model.vocab_size)),
            ("UNet widths", ", ".join(map(str, c.block_channels))),
            ("sampler", f"{c.sampler}, {c.num_inference_steps} steps"), ("previous frame", str(c.prev_frame).lower()),
            ("tokenizer fingerprint", c.tokenizer_fingerprint or "-")]


def part_card(model: nn.Module, kind: str, license: str | None = None, tags: Iterable[str] = (),
              datasets: Iterable[str] | None = None, world_model: bool = False, **_: Any) -> ModelCard:
    """The card of a ``kind`` part (``tokenizer``, ``dynamics``, ``decoder``); what the part's
    ``generate_model_card(**model_card_kwargs)`` returns.

    Args:
        model: the part.
        kind: which part.
        license: the license's hub id (default apache-2.0).
        tags: more hub tags (the world model passes its own).
        datasets: hub dataset ids it was trained on, where known.
        world_model: the folder is part of a world-model folder (the card then points to the whole).
    """
    module, cls = CLASSES[kind]
    rows = [*part_facts(model, kind), ("parameters", f"{parameters(model):,}")]
    body = [f"# wm-video {kind}", "", ABOUT[kind], ""]
    if world_model:
        body += [f"This folder is the `{kind}` part of a world model: load the whole with "
                 "`WorldModel.from_pretrained` on the folder above (see its README.md).", ""]
    body += ["| property | value |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows), "",
             "## Load it", "", "```python", f"from {module} import {cls}", "",
             f'{kind} = {cls}.from_pretrained("path/to/this/folder")', "```", "",
             "Files: `config.json` (the config), `model.safetensors` (the weights) and, for a part trained with "
             "`wm-video train`, `quality.json` (its held-out metrics and quality-gate verdicts).", ""]
    return render(["world-model", f"wm-video-{kind}", *tags], body, license, datasets)
