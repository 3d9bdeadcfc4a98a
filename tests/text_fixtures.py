"""Tiny random text encoders saved into a test folder, as a user's local checkpoint would be: a T5 encoder or a CLIP
text model (``d_model`` / ``hidden_size`` 16, one layer) with a word-level tokenizer trained from scratch on a few
words with ``tokenizers`` (nothing downloaded); frame datasets whose clips carry task text; and the perturbation
that makes a fresh text model's text matter."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = "reach push pick place open close the a drawer door window button press red blue block".split()


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def save_tiny_text_encoder(path: Path, kind: str = "t5", seed: int = 0) -> Path:
    """A random ``t5`` or ``clip`` text encoder and its tokenizer, saved with ``save_pretrained`` into ``path``."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    if kind == "t5":
        model = T5EncoderModel(T5Config(vocab_size=tokenizer.vocab_size, d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                        num_heads=2, pad_token_id=0, eos_token_id=1))
    else:
        model = CLIPTextModel(CLIPTextConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32,
                                             num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                             pad_token_id=0, eos_token_id=1, bos_token_id=1))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_task_frames(root: Path, tasks: list[str], num_actions: int = 4, size: int = 32, t: int = 6) -> None:
    """Frame shards of random ``size`` x ``size`` clips (``t`` frames, discrete actions of ``num_actions``) whose
    clips carry task text (``meta.json`` ``extra.task``): one shard per task, two one-clip episodes each."""
    from wm_video.data.schema import ActionSpace, Clip, ClipMeta
    from wm_video.data.writer import ShardWriter, finalize_dataset

    space = ActionSpace("discrete", n=num_actions)
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    paths = []
    for s, task in enumerate(tasks):
        path = root / f"shard-{s:06d}.tar"
        with ShardWriter(path, space, "raw") as w:
            for i in range(2):
                meta = ClipMeta(episode_id=f"ep{s}{i}", clip_start=0, num_frames=t, fps=15.0, source="test",
                                fields=[], extra={"task": task})
                frames = rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8)
                w.write(Clip(frames, meta, rng.integers(0, num_actions, t).astype(np.int64)))
            w.close()
        paths.append(path)
    finalize_dataset(root, paths, resolution=[size, size], fps=15.0, clip_len=t, storage="raw", action_space=space,
                     source={"kind": "test"})


def make_text_matter(dynamics) -> None:
    """A fresh text model predicts as without text (its text offset and adaLN modulations start at zero): make those
    zero-initialised weights random, the text ones large, so the task text changes the predictions."""
    import torch

    with torch.no_grad():
        for name, p in dynamics.named_parameters():
            if not p.any() or name.startswith("text."):
                p.normal_(std=2.0 if name.startswith("text.") else 0.3)
