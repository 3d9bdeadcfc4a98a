"""Tiny random text encoders saved into a test folder, as a user's local checkpoint would be: a T5 encoder or a CLIP
text model (``d_model`` / ``hidden_size`` 16, one layer) with a word-level tokenizer trained from scratch on a few
words with ``tokenizers`` (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

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
