"""Named presets of the model and training configs: ``debug`` (CPU tests, seconds), ``tiny`` (the README demo),
``small`` (one machine), ``base`` (a GPU node) and ``large`` (multi-node), for kinds ``trainer``, ``tokenizer``,
``dynamics``, ``decoder`` and ``train_tokenizer`` / ``train_dynamics`` / ``train_decoder``. YAML files in
``configs/`` start from one of these and override fields.

The model configs are defined in ``wm_video/models/`` (plain PyTorch, which knows nothing of presets); their
presets live here, beside the training configs that hold them. Importing this module registers them in
:mod:`wm_video.config`'s registry (:mod:`wm_video.registry` imports every preset module).
"""

from __future__ import annotations

import dataclasses

from wm_video.config import register_kind, register_preset
from wm_video.data.loader import LoaderConfig
from wm_video.data.presets import loader_base, loader_debug, loader_large, loader_tiny
from wm_video.models.decoder.config import DecoderConfig
from wm_video.models.dynamics.config import DynamicsConfig
from wm_video.models.tokenizer.config import TokenizerConfig
from wm_video.training.decoder_module import DecoderTrainConfig
from wm_video.training.dynamics_config import DynamicsTrainConfig
from wm_video.training.optim import OptimConfig
from wm_video.training.tokenizer_config import TokenizerTrainConfig
from wm_video.training.trainer_config import TrainerConfig

for _kind, _cls in (("trainer", TrainerConfig), ("tokenizer", TokenizerConfig), ("dynamics", DynamicsConfig),
                    ("decoder", DecoderConfig), ("train_tokenizer", TokenizerTrainConfig),
                    ("train_dynamics", DynamicsTrainConfig), ("train_decoder", DecoderTrainConfig)):
    register_kind(_kind, _cls)


@register_preset("trainer", "debug")
def trainer_debug() -> TrainerConfig:
    return TrainerConfig(accelerator="cpu", devices=1, max_steps=4, log_every_n_steps=1, checkpoint_every_n_steps=2,
                         limit_val_batches=2, logger="tensorboard", run_dir="runs/debug")


@register_preset("trainer", "small")
def trainer_small() -> TrainerConfig:
    return TrainerConfig(devices=1, max_steps=20_000, log_every_n_steps=25, checkpoint_every_n_steps=1000,
                         run_dir="runs/small")


@register_preset("trainer", "base")
def trainer_base() -> TrainerConfig:
    return TrainerConfig(accelerator="gpu", devices=-1, strategy="ddp", max_steps=200_000, log_every_n_steps=50,
                         checkpoint_every_n_steps=2000, run_dir="runs/base")


@register_preset("trainer", "large")
def trainer_large() -> TrainerConfig:
    return TrainerConfig(accelerator="gpu", devices=-1, num_nodes=4, strategy="ddp", max_steps=500_000,
                         log_every_n_steps=100, checkpoint_every_n_steps=2000, run_dir="runs/large")


@register_preset("tokenizer", "debug")
def tokenizer_debug() -> TokenizerConfig:
    return TokenizerConfig(resolution=32, downsample=4, base_channels=8, norm_groups=4, latent_channels=8,
                           codebook_size=32, codebook_dim=4)


@register_preset("tokenizer", "small")
def tokenizer_small() -> TokenizerConfig:
    # 64x64 frames -> 8x8 = 64 tokens; 2.7M parameters, narrow at full resolution (16 channels) and wide at
    # the bottom (128): about 46 training frames/s on a 2-core CPU, against 25 for a uniform 32-wide stack.
    return TokenizerConfig(resolution=64, downsample=8, base_channels=16, channel_mult=[1, 2, 4, 8, 8], norm_groups=8,
                           latent_channels=64, codebook_size=512, codebook_dim=32)


@register_preset("tokenizer", "base")
def tokenizer_base() -> TokenizerConfig:
    return TokenizerConfig(resolution=128, downsample=8, base_channels=128, layers_per_block=2, latent_channels=256,
                           codebook_size=8192, codebook_dim=32, mid_attention=True)


@register_preset("tokenizer", "large")
def tokenizer_large() -> TokenizerConfig:
    return TokenizerConfig(resolution=256, downsample=16, base_channels=128, layers_per_block=2,
                           latent_channels=256, codebook_size=16384, codebook_dim=32, mid_attention=True)


@register_preset("train_tokenizer", "debug")
def train_tokenizer_debug() -> TokenizerTrainConfig:
    return TokenizerTrainConfig(model=tokenizer_debug(), trainer=trainer_debug(), loader=loader_debug(),
                                optim=OptimConfig(lr=1e-3, warmup_steps=2), frames_per_clip=2, val_batches=2)


@register_preset("train_tokenizer", "small")
def train_tokenizer_small() -> TokenizerTrainConfig:
    # One machine (CPU or one GPU): 8 clips x 2 frames = 16 frames per step at 64x64.
    trainer = TrainerConfig(max_steps=20_000, val_check_interval=250, log_every_n_steps=50,
                            checkpoint_every_n_steps=500, run_dir="runs/tokenizer_small")
    loader = LoaderConfig(batch_size=8, num_workers=1, shuffle_buffer=512, resampled=True, epoch_length=100_000)
    return TokenizerTrainConfig(model=tokenizer_small(), trainer=trainer, loader=loader,
                                optim=OptimConfig(lr=1e-3, warmup_steps=100), frames_per_clip=2, val_batches=4)


@register_preset("train_tokenizer", "base")
def train_tokenizer_base() -> TokenizerTrainConfig:
    trainer = dataclasses.replace(trainer_base(), val_check_interval=1000, run_dir="runs/tokenizer_base")
    return TokenizerTrainConfig(model=tokenizer_base(), trainer=trainer, loader=loader_base(),
                                optim=OptimConfig(lr=4e-4, warmup_steps=2000), frames_per_clip=4)


@register_preset("train_tokenizer", "large")
def train_tokenizer_large() -> TokenizerTrainConfig:
    trainer = dataclasses.replace(trainer_large(), val_check_interval=2000, run_dir="runs/tokenizer_large")
    return TokenizerTrainConfig(model=tokenizer_large(), trainer=trainer, loader=loader_large(),
                                optim=OptimConfig(lr=3e-4, warmup_steps=5000), frames_per_clip=2)


# ---- dynamics -----------------------------------------------------------------------------------------------------


@register_preset("dynamics", "debug")
def dynamics_debug() -> DynamicsConfig:
    return DynamicsConfig(vocab_size=32, token_h=4, token_w=4, context_frames=4, width=32, depth=2, heads=2,
                          cond_dim=16, num_actions=6, reward_bins=17)


@register_preset("dynamics", "small")
def dynamics_small() -> DynamicsConfig:
    # 64x64 frames through the small tokenizer: 8x8 tokens from 512 codes; about 23M parameters.
    return DynamicsConfig(vocab_size=512, token_h=8, token_w=8, context_frames=16, width=384, depth=8, heads=6,
                          cond_dim=128)


@register_preset("dynamics", "base")
def dynamics_base() -> DynamicsConfig:
    # 128x128 frames through the base tokenizer: 16x16 tokens from 8192 codes; about 0.33B parameters.
    return DynamicsConfig(vocab_size=8192, token_h=16, token_w=16, context_frames=16, width=1024, depth=16,
                          heads=16, cond_dim=256, spatial_pos="rope")


@register_preset("dynamics", "large")
def dynamics_large() -> DynamicsConfig:
    # About 1.2B parameters; 16x16 tokens (256x256 frames through the large tokenizer) from 16384 codes.
    return DynamicsConfig(vocab_size=16384, token_h=16, token_w=16, context_frames=16, width=2048, depth=16,
                          heads=16, cond_dim=256, spatial_pos="rope")


@register_preset("train_dynamics", "debug")
def train_dynamics_debug() -> DynamicsTrainConfig:
    return DynamicsTrainConfig(model=dynamics_debug(), trainer=trainer_debug(), loader=loader_debug(),
                               optim=OptimConfig(lr=1e-3, warmup_steps=2), val_batches=2)


@register_preset("train_dynamics", "small")
def train_dynamics_small() -> DynamicsTrainConfig:
    # One machine (CPU or one GPU): 8 clips of the 16-frame window per step.
    trainer = TrainerConfig(max_steps=50_000, val_check_interval=500, log_every_n_steps=25,
                            checkpoint_every_n_steps=500, run_dir="runs/dynamics_small")
    loader = LoaderConfig(batch_size=8, num_workers=1, shuffle_buffer=512, resampled=True, epoch_length=100_000)
    return DynamicsTrainConfig(model=dynamics_small(), trainer=trainer, loader=loader,
                               optim=OptimConfig(lr=6e-4, warmup_steps=200), val_batches=4)


@register_preset("train_dynamics", "base")
def train_dynamics_base() -> DynamicsTrainConfig:
    trainer = dataclasses.replace(trainer_base(), precision="bf16-mixed", val_check_interval=2000,
                                  run_dir="runs/dynamics_base")
    return DynamicsTrainConfig(model=dynamics_base(), trainer=trainer, loader=loader_base(),
                               optim=OptimConfig(lr=3e-4, warmup_steps=2000))


@register_preset("train_dynamics", "large")
def train_dynamics_large() -> DynamicsTrainConfig:
    trainer = dataclasses.replace(trainer_large(), precision="bf16-mixed", val_check_interval=2000,
                                  run_dir="runs/dynamics_large")
    return DynamicsTrainConfig(model=dynamics_large(), trainer=trainer, loader=loader_large(),
                               optim=OptimConfig(lr=2e-4, warmup_steps=5000))


# ---- diffusion decoder -------------------------------------------------------------------------------------------
# Residual diffusion over the token render: the residual's std is about 0.1 in [-1, 1] units on Atari and
# Meta-World at 64x64 (VQ PSNR 28-45 dB), so sigma_data 0.1; noise levels centred around it, and sampling starts
# at sigma 1 (10x the residual's std), which training visits often enough for 1-2 step sampling.
RESIDUAL_EDM = dict(residual=True, sigma_data=0.1, sigma_max=1.0, p_mean=-2.5, p_std=1.5)


@register_preset("decoder", "debug")
def decoder_debug() -> DecoderConfig:
    return DecoderConfig(block_channels=[8, 16], attention=[False, True], norm_groups=4, attention_head_dim=8,
                         embed_channels=4, **RESIDUAL_EDM)


@register_preset("decoder", "small")
def decoder_small() -> DecoderConfig:
    # 64x64: narrow at full resolution, attention only at 8x8; 2.7M UNet parameters, about 32 training frames/s
    # on a 2-core CPU (a 32-wide top level trains at 12).
    return DecoderConfig(block_channels=[16, 32, 64, 128], attention=[False, False, False, True], norm_groups=8,
                         **RESIDUAL_EDM)


@register_preset("decoder", "base")
def decoder_base() -> DecoderConfig:
    return DecoderConfig(block_channels=[64, 128, 256, 256], attention=[False, False, True, True], layers_per_block=2,
                         attention_head_dim=64, prev_frame=True, **RESIDUAL_EDM)


@register_preset("decoder", "large")
def decoder_large() -> DecoderConfig:
    return DecoderConfig(block_channels=[64, 128, 256, 512, 512], attention=[False, False, False, True, True],
                         layers_per_block=2, attention_head_dim=64, prev_frame=True, **RESIDUAL_EDM)


@register_preset("train_decoder", "debug")
def train_decoder_debug() -> DecoderTrainConfig:
    return DecoderTrainConfig(model=decoder_debug(), trainer=trainer_debug(), loader=loader_debug(),
                              optim=OptimConfig(lr=1e-3, warmup_steps=2), val_batches=1, grid_steps=2)


@register_preset("train_decoder", "small")
def train_decoder_small() -> DecoderTrainConfig:
    # One machine (CPU or one GPU): 16 clips x 2 frames = 32 frames per step at 64x64.
    trainer = TrainerConfig(max_steps=20_000, val_check_interval=250, log_every_n_steps=25,
                            checkpoint_every_n_steps=500, run_dir="runs/decoder_small")
    loader = LoaderConfig(batch_size=16, num_workers=1, shuffle_buffer=512, resampled=True, epoch_length=100_000)
    return DecoderTrainConfig(model=decoder_small(), trainer=trainer, loader=loader,
                              optim=OptimConfig(lr=5e-4, warmup_steps=100), frames_per_clip=2)


@register_preset("train_decoder", "base")
def train_decoder_base() -> DecoderTrainConfig:
    trainer = dataclasses.replace(trainer_base(), precision="bf16-mixed", val_check_interval=1000,
                                  run_dir="runs/decoder_base")
    return DecoderTrainConfig(model=decoder_base(), trainer=trainer, loader=loader_base(),
                              optim=OptimConfig(lr=2e-4, warmup_steps=2000), frames_per_clip=4)


@register_preset("train_decoder", "large")
def train_decoder_large() -> DecoderTrainConfig:
    trainer = dataclasses.replace(trainer_large(), precision="bf16-mixed", val_check_interval=2000,
                                  run_dir="runs/decoder_large")
    return DecoderTrainConfig(model=decoder_large(), trainer=trainer, loader=loader_large(),
                              optim=OptimConfig(lr=1e-4, warmup_steps=5000), frames_per_clip=4)


# ---- tiny: the README demo's scale (train all three parts in about 10 minutes on 2 CPU cores) -----------------------
# Budgets are optimizer steps only, never minutes: a minute cap on a busy machine stopped the tokenizer at 60 of 450
# steps, and it drew every frame as one flat colour. trainer.max_minutes remains an opt-in safety limit.
# The demo's simulator (Pendulum-v1, cropped so the rod is 5 px wide) is a red rod on white: a 256-code tokenizer
# learns it in a few hundred steps, and a 1.5M-parameter transformer learns the swing in about 500.


@register_preset("tokenizer", "tiny")
def tokenizer_tiny() -> TokenizerConfig:
    return dataclasses.replace(tokenizer_small(), codebook_size=256)


@register_preset("train_tokenizer", "tiny")
def train_tokenizer_tiny() -> TokenizerTrainConfig:
    # 8 clips x 2 frames per step: about 2.7 steps/s on 2 cores.
    trainer = TrainerConfig(max_steps=450, val_check_interval=225, log_every_n_steps=25,
                            checkpoint_every_n_steps=225, run_dir="runs/tokenizer_tiny")
    return TokenizerTrainConfig(model=tokenizer_tiny(), trainer=trainer, loader=loader_tiny(),
                                optim=OptimConfig(lr=1e-3, warmup_steps=50), frames_per_clip=2, val_batches=2)


@register_preset("dynamics", "tiny")
def dynamics_tiny() -> DynamicsConfig:
    # 8x8 tokens from 256 codes; a 12-frame window (4 context + 8 predicted frames in the demo's evaluation).
    return DynamicsConfig(vocab_size=256, token_h=8, token_w=8, context_frames=12, width=128, depth=4, heads=4,
                          cond_dim=64)


@register_preset("train_dynamics", "tiny")
def train_dynamics_tiny() -> DynamicsTrainConfig:
    # 8 clips x 8-frame crops per step: about 1.5 steps/s on 2 cores.
    trainer = TrainerConfig(max_steps=550, val_check_interval=275, log_every_n_steps=25,
                            checkpoint_every_n_steps=275, run_dir="runs/dynamics_tiny")
    return DynamicsTrainConfig(model=dynamics_tiny(), trainer=trainer, loader=loader_tiny(),
                               optim=OptimConfig(lr=1.5e-3, warmup_steps=50), val_batches=2, train_frames=8,
                               video_every_n_steps=275)  # a rollout video at each validation


@register_preset("decoder", "tiny")
def decoder_tiny() -> DecoderConfig:
    return DecoderConfig(block_channels=[16, 32, 64], attention=[False, False, True], norm_groups=8, **RESIDUAL_EDM)


@register_preset("train_decoder", "tiny")
def train_decoder_tiny() -> DecoderTrainConfig:
    trainer = TrainerConfig(max_steps=200, val_check_interval=200, log_every_n_steps=25,
                            checkpoint_every_n_steps=200, run_dir="runs/decoder_tiny")
    return DecoderTrainConfig(model=decoder_tiny(), trainer=trainer, loader=loader_tiny(),
                              optim=OptimConfig(lr=1e-3, warmup_steps=20), frames_per_clip=2, val_batches=1,
                              grid_steps=2)
