"""LoRA adapters (peft) on some Linear layers of the dynamics model, and folding them back into the weights.

``finetune.lora`` (e.g. ``finetune.lora.rank=8`` on the command line) wraps the chosen Linear layers with peft's
LoRA layers, ``W x + (alpha / r) B A x`` with ``B`` zero at the start (so the model starts as the pretrained one),
and trains only ``A`` and ``B`` plus the parameters ``finetune.lora.train`` names. Training checkpoints hold the
adapter form; :func:`merge_lora` folds the adapters into the weights they adapt, so an export is a plain model that
loads without peft (fine-tuning's export and ``wm-video export --checkpoint`` both do).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

# The Linear layers LoRA adapts by default: attention projections, MLP and adaLN modulation of every block, and the
# final modulation (not the action encoder, which trains in full, nor the output heads).
DEFAULT_LORA_TARGETS = ("backbone.blocks.*.spatial", "backbone.blocks.*.temporal", "backbone.blocks.*.mlp",
                        "backbone.blocks.*.modulation", "backbone.out_modulation")
LORA_ADAPTER = "default"  # peft's adapter name: the one adapter of a run


@dataclass
class LoraOptions:
    """LoRA adapters (peft) on some Linear layers of the dynamics model, folded into the weights at export.

    Args:
        rank: adapter rank ``r`` (the low-rank update ``B A`` has ``r * (in + out)`` parameters per layer).
        alpha: the update is scaled by ``alpha / rank``; None: ``2 * rank`` (scale 2).
        dropout: dropout on the adapters' input (training only).
        targets: module-name patterns of the layers to adapt (``*`` matches any run of characters); a pattern
            naming a module selects every Linear layer in it, e.g. ``backbone.blocks.*.temporal`` selects each
            block's ``temporal.qkv`` and ``temporal.proj``. Each pattern must select some Linear layer.
        train: parameter-name prefixes trained in full beside the adapters (``*`` wildcards allowed): by default
            the action encoder (``actions``); add ``token_head`` and ``outcome`` to train the output heads too.
    """

    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    train: list[str] = field(default_factory=lambda: ["actions"])

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"finetune.lora: field 'rank' must be >= 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"finetune.lora: field 'dropout' must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("finetune.lora: field 'targets' is empty: name the Linear layers to adapt")

    @property
    def scale_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank


def _matches(name: str, pattern: str) -> bool:
    """``pattern`` (``*`` wildcards) is ``name`` or a prefix of it that ends at a name boundary."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"{pattern}.*")


def params_matching(model: nn.Module, prefixes: Iterable[str], what: str) -> list[str]:
    """Names of the parameters under ``prefixes``, in model order; an unmatched prefix is an error naming
    ``what`` (the config field) and listing the model's modules."""
    names = [name for name, _ in model.named_parameters()]
    hits: set[str] = set()
    for prefix in prefixes:
        hit = [n for n in names if _matches(n, prefix)]
        if not hit:
            modules = [n for n, _ in model.named_modules() if n and n.count(".") <= 1]
            raise ValueError(f"{what}: {prefix!r} matches no parameter name; modules: {modules} "
                             "(e.g. backbone.blocks, or backbone.blocks.*.spatial for every block's spatial attention)")
        hits.update(hit)
    return [n for n in names if n in hits]


def lora_targets(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Names of the ``nn.Linear`` modules the ``patterns`` select (see :class:`LoraOptions`), in model order. A
    pattern that selects none is an error naming it and listing the model's Linear layers (block indices
    written ``*``)."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen: set[str] = set()
    for pattern in patterns:
        hit = [n for n in linear if _matches(n, pattern)]
        if not hit:
            kinds = list(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in linear))
            raise ValueError(f"finetune.lora.targets: {pattern!r} matches no Linear layer; the model's Linear layers "
                             f"(block indices as *): {kinds}")
        chosen.update(hit)
    return [n for n in linear if n in chosen]


def apply_lora(model: nn.Module, options: LoraOptions) -> list[str]:
    """Wrap the Linear layers ``options.targets`` select with peft LoRA layers, in place (the model keeps its
    class, its forward and its other modules), and leave trainable only the adapters and the parameters under
    ``options.train``. Returns the adapted modules' names. The adapters start with ``B = 0``: the model computes
    exactly what it did before."""
    from peft import LoraConfig, inject_adapter_in_model  # heavy (imports transformers): only LoRA runs pay for it

    targets = lora_targets(model, options.targets)
    extra = set(params_matching(model, options.train, "finetune.lora.train"))
    config = LoraConfig(r=options.rank, lora_alpha=options.scale_alpha, lora_dropout=options.dropout,
                        target_modules=targets, bias="none")
    # Full names select exactly these layers (peft also matches name suffixes: "mlp.0" alone would catch the
    # action encoder's "actions.mlp.0" too).
    inject_adapter_in_model(config, model, adapter_name=LORA_ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name or name in extra)
    return targets


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA adapter of ``model`` into the weight it adapts (``W + (alpha / r) B A``) and put the plain
    layer back in its place, in place: afterwards ``model.state_dict()`` has the plain names again and loads into
    a model built without peft. Returns the number of layers merged."""
    from peft.tuners.tuners_utils import BaseTunerLayer  # heavy (imports transformers): only LoRA runs pay for it

    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in wrapped:
        layer.merge(safe_merge=True)  # raises on NaN in the merged weight
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer.get_base_layer())
    return len(wrapped)
