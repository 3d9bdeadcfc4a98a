"""A tokenizer whose decoder reads the previous frame (``previous_frame``, Delta-IRIS-style): training and decoding
agree, frames are decoded in order, the previous frame carries what the codes cannot, and it saves, loads and
renders in a world model like any tokenizer."""

from __future__ import annotations

import pytest
import torch
from conftest import fit_losses
from test_decoder import make_tokenizer

from wm_video.models.decoder import DiffusionDecoder
from wm_video.world_model import keep_still_patches, vq_render


def frames(b=2, t=3, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, size, size, generator=g) * 2 - 1


def test_decoding_reads_the_previous_frame_as_training_does():
    tok = make_tokenizer(previous_frame=True)
    x = frames()
    tokens = tok.tokenize(x)
    with torch.no_grad():
        trained = tok(x).recon.clamp(-1, 1)  # teacher-forced: frame i reads true frame i-1, frame 0 reads none
        alone = tok.detokenize(tokens[:, :1])
        after = tok.detokenize(tokens[:, 1:2], x[:, 0])
        other = tok.detokenize(tokens[:, 1:2], x[:, 2])
    assert torch.allclose(alone, trained[:, :1], atol=1e-5)
    assert torch.allclose(after, trained[:, 1:2], atol=1e-5)
    assert (after - other).abs().max() > 1e-3  # the previous frame matters


def test_frames_are_decoded_in_order_each_from_the_one_drawn_before():
    tok = make_tokenizer(previous_frame=True)
    x = frames()
    tokens = tok.tokenize(x)
    with torch.no_grad():
        chained = tok.detokenize(tokens, x[:, 0])
        prev, manual = x[:, 0], []
        for i in range(tokens.shape[1]):
            prev = tok.detokenize(tokens[:, i: i + 1], prev)[:, 0]
            manual.append(prev)
    assert torch.equal(chained, torch.stack(manual, 1))
    plain = make_tokenizer()  # a plain tokenizer ignores a previous frame
    assert torch.equal(plain.detokenize(tokens, x[:, 0]), plain.detokenize(tokens))


def test_the_previous_frame_carries_what_the_codes_cannot(one_thread):
    """Frame 1 repeats frame 0, a blob anywhere: one code holds nothing, the previous frame's latents hold it."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    centers = torch.rand(8, 2) * 2 - 1
    imgs = torch.stack([torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 8) for cx, cy in centers])  # (8, 32, 32)
    batch = {"frames": (imgs[:, None, None].expand(8, 2, 3, 32, 32) * 255).to(torch.uint8)}
    target = batch["frames"][:, 1].float() / 127.5 - 1
    errors = {}
    for reads in (False, True):
        tok = make_tokenizer(seed=0, codebook_size=1, previous_frame=reads).train()
        fit_losses(tok, batch, 60, "rec_mse")
        with torch.no_grad():
            recon = tok.eval()(batch["frames"].float() / 127.5 - 1).recon
        errors[reads] = float((recon[:, 1] - target).pow(2).mean())
    assert errors[True] < 0.5 * errors[False], errors


def test_save_load_round_trip_and_the_fingerprint_covers_the_previous_encoder(tmp_path):
    tok = make_tokenizer(previous_frame=True)
    x = frames()
    tok.save_pretrained(tmp_path)
    loaded = type(tok).from_pretrained(tmp_path).eval()
    assert loaded.reads_previous_frame and loaded.fingerprint() == tok.fingerprint()
    tokens = tok.tokenize(x)
    with torch.no_grad():
        assert torch.equal(loaded.detokenize(tokens, x[:, 0]), tok.detokenize(tokens, x[:, 0]))
        next(loaded.previous_encoder.parameters()).add_(0.1)
    assert loaded.fingerprint() != tok.fingerprint()
    assert make_tokenizer().fingerprint() == make_tokenizer().fingerprint()  # plain tokenizers: unchanged


@pytest.mark.parametrize("keep", [True, False])
def test_vq_render_reads_the_frame_drawn_before_kept_patches_included(keep):
    tok = make_tokenizer(encoder="patch", previous_frame=True)
    x = frames(b=1, t=3)
    tokens = tok.tokenize(x)
    tokens[0, 2, 1, 1] = (tokens[0, 1, 1, 1] + 1) % tok.vocab_size  # at least one cell changes in the last frame
    with torch.no_grad():
        out = vq_render(tok, tokens[:, 1:], x[:, 0], tokens[:, 0], keep)
        prev, prev_tokens = x[:, 0], tokens[:, 0]
        for i in (1, 2):
            drawn = tok.detokenize(tokens[:, i: i + 1], prev)
            if keep:
                drawn = keep_still_patches(drawn, tokens[:, i: i + 1], prev, prev_tokens)
            assert torch.equal(out[:, i - 1], drawn[:, 0])
            prev, prev_tokens = drawn[:, 0], tokens[:, i]


def test_a_diffusion_decoder_on_such_a_tokenizer_is_refused_by_name():
    with pytest.raises(ValueError, match="previous_frame"):
        DiffusionDecoder.from_tokenizer(make_tokenizer(previous_frame=True))
