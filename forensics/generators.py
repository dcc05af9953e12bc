"""Generated-image families and post-processing chains, so a classifier learns what generators share.

No generator can be downloaded on the build machines, and a classifier trained
on one synthesis recipe learns that recipe. Here each *family* is a distinct
synthesis process that re-draws a real photograph from a reduced copy of it,
the way the decoder of a generator draws an image from a small latent grid:

- ``nearest_decoder``: nearest-neighbour up-sampling, each step followed by a 3x3 convolution;
- ``bilinear_decoder``: bilinear up-sampling, each step followed by a 3x3 convolution;
- ``transposed_conv``: strided 4x4 transposed convolutions (the classic checkerboard source);
- ``pixel_shuffle``: sub-pixel convolution (a convolution to 4x the channels, then pixel shuffle);
- ``random_conv_decoder``: a randomly initialised multi-layer convolutional decoder with
  non-linearities, mixed up-sampling and a linear read-out fitted to the photo (least squares);
- ``trained_upsampler``: a small convolutional generator trained here (a few hundred steps of L1
  super-resolution on training-split photographs, seeded, so it is the same network every run).

Every family draws its own random kernels per image (around a family-specific
base), so a family is a process, not one fixed kernel. Real and generated
images then go through the same random post-processing chain (resize, mild
noise, JPEG 60-95 / WebP 60-95 / PNG), so the container and compression
cannot separate the classes.

Every family re-draws from a reduced copy, so generated images are softer
than crops of sharp photographs, and a classifier can learn "soft means
generated": an authentic photograph slightly out of focus is then called
AI-generated (bench.authentic_conditions). Capture conditions (`capture`,
off unless a dataset asks for them) shoot the scene itself out of focus,
shaken, noise-reduced or sharpened *before* either class is made from it, so
softness no longer separates real from generated.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

GENERATOR_FAMILIES = (
    "nearest_decoder", "bilinear_decoder", "transposed_conv", "pixel_shuffle", "random_conv_decoder", "trained_upsampler",
)
REAL_FAMILY = "real"  # the family recorded for photographs


def generate(rng: np.random.Generator, image: np.ndarray, family: str) -> np.ndarray:
    """Re-draw an (H, W, 3) uint8 photograph with one generator family; returns (H, W, 3) uint8."""
    import torch

    if family not in GENERATOR_FAMILIES:
        raise ValueError(f"Wrong generator family `{family}`, supported families: {list(GENERATOR_FAMILIES)}")
    height, width = image.shape[:2]
    if family == "random_conv_decoder":
        return _random_conv_decoder(rng, image)
    factor = 2  # a 4x reduction leaves visibly blurred images: a cue no real generator offers
    latent = _reduce(image, factor)
    upsampler = _trained_upsampler() if family == "trained_upsampler" else None
    with torch.inference_mode():
        if upsampler is not None:
            output = upsampler(latent)
        else:
            output = latent
            for _ in range(int(np.log2(factor))):
                output = _UPSAMPLING_STEPS[family](rng, output)
    return _to_image(output, height, width)


def _reduce(image: np.ndarray, factor: int):
    """The photo box-filtered to 1/factor of its size, as a (1, 3, h, w) float tensor in [0, 1]."""
    import torch

    height, width = image.shape[:2]
    small = Image.fromarray(image).resize((max(width // factor, 2), max(height // factor, 2)), Image.BOX)
    return torch.from_numpy(np.asarray(small, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0


def _to_image(tensor, height: int, width: int) -> np.ndarray:
    import torch.nn.functional as F

    if tensor.shape[-2:] != (height, width):  # odd sizes: the decoder made a pixel or two less
        tensor = F.interpolate(tensor, size=(height, width), mode="nearest")
    array = tensor[0].permute(1, 2, 0).clamp(0, 1).mul(255).round().byte().numpy()
    return np.ascontiguousarray(array)


def _torch_generator(rng: np.random.Generator):
    import torch

    return torch.Generator().manual_seed(int(rng.integers(0, 2**31 - 1)))


def _smoothing_kernel(rng: np.random.Generator, size: int, strength: float):
    """(3, 3, size, size) kernels: a per-channel smoothing base plus random perturbation and channel mixing."""
    import torch

    generator = _torch_generator(rng)
    taps = torch.tensor([1.0, 2.0, 1.0]) if size == 3 else torch.tensor([0.25, 0.75, 0.75, 0.25])
    base = torch.outer(taps, taps)
    base = base / base.sum()
    kernel = torch.zeros(3, 3, size, size)
    for channel in range(3):
        kernel[channel, channel] = base * (1 + strength * torch.randn(size, size, generator=generator))
        kernel[channel] += 0.1 * strength * base.mean() * torch.randn(3, size, size, generator=generator)
    return kernel / kernel.sum(dim=(1, 2, 3), keepdim=True)  # keeps mean brightness


def _interpolate_then_convolve(mode: str):
    def step(rng: np.random.Generator, tensor):
        import torch.nn.functional as F

        upsampled = F.interpolate(tensor, scale_factor=2, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
        return F.conv2d(F.pad(upsampled, (1, 1, 1, 1), mode="replicate"), _detail_kernel(rng, 0.2, 0.5))

    return step


def _detail_kernel(rng: np.random.Generator, low: float, high: float):
    """A 3x3 kernel that restores detail the way a decoder's learned convolution does: identity plus a
    random amount of (identity - perturbed smoothing), i.e. a perturbed sharpening."""
    identity = _identity_kernel(3)
    amount = float(rng.uniform(0.0, 1.0))
    return identity + amount * (identity - _smoothing_kernel(rng, 3, float(rng.uniform(low, high))))


def _identity_kernel(size: int):
    import torch

    kernel = torch.zeros(3, 3, size, size)
    for channel in range(3):
        kernel[channel, channel, size // 2, size // 2] = 1.0
    return kernel


def _transposed_convolution(rng: np.random.Generator, tensor):
    import torch.nn.functional as F

    kernel = _smoothing_kernel(rng, 4, float(rng.uniform(0.08, 0.3))) * 4  # stride 2: each output sums a quarter
    return F.conv_transpose2d(tensor, kernel, stride=2, padding=1)


def _pixel_shuffle(rng: np.random.Generator, tensor):
    import torch
    import torch.nn.functional as F

    # 12 output channels: for every colour, one slightly different 3x3 kernel per sub-pixel position.
    kernels = torch.cat([_detail_kernel(rng, 0.1, 0.3) for _ in range(4)], dim=0)
    kernels = kernels.view(4, 3, 3, 3, 3).permute(1, 0, 2, 3, 4).reshape(12, 3, 3, 3)  # pixel_shuffle groups by colour
    features = F.conv2d(F.pad(tensor, (1, 1, 1, 1), mode="replicate"), kernels)
    return F.pixel_shuffle(features, 2)


_UPSAMPLING_STEPS = {
    "nearest_decoder": _interpolate_then_convolve("nearest"),
    "bilinear_decoder": _interpolate_then_convolve("bilinear"),
    "transposed_conv": _transposed_convolution,
    "pixel_shuffle": _pixel_shuffle,
}


def _random_conv_decoder(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Random features of a reduced photo through a random decoder; a least-squares read-out draws the photo."""
    import torch
    import torch.nn.functional as F

    height, width = image.shape[:2]
    factor = int(rng.choice([2, 4]))
    latent = _reduce(image, factor)
    generator = _torch_generator(rng)
    channels = 16
    with torch.inference_mode():
        features = F.leaky_relu(F.conv2d(latent, torch.randn(channels, 3, 1, 1, generator=generator)), 0.2)
        for _ in range(int(np.log2(factor))):
            mode = ("nearest", "bilinear", "transposed")[int(rng.integers(3))]
            if mode == "transposed":
                weight = torch.randn(channels, channels, 4, 4, generator=generator) / np.sqrt(channels * 4)
                features = F.conv_transpose2d(features, weight, stride=2, padding=1)
            else:
                features = F.interpolate(features, scale_factor=2, mode=mode)
            weight = torch.randn(channels, channels, 3, 3, generator=generator) / np.sqrt(channels * 9 / 2)
            features = F.leaky_relu(F.conv2d(F.pad(features, (1, 1, 1, 1), mode="replicate"), weight), 0.2)
        guide = F.interpolate(latent, size=features.shape[-2:], mode="bilinear", align_corners=False)
        design = torch.cat([features, guide, torch.ones_like(guide[:, :1])], dim=1)[0].flatten(1).T.double()
        target = F.interpolate(torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255.0, size=features.shape[-2:],
                               mode="area")[0].flatten(1).T.double()
        readout = torch.linalg.lstsq(design, target).solution
        output = (design @ readout).T.reshape(1, 3, *features.shape[-2:]).float()
    return _to_image(output, height, width)


@functools.lru_cache(maxsize=1)
def _trained_upsampler(steps: int = 200, seed: int = 0):
    """The `trained_upsampler` generator: a small transposed-convolution network with a learned residual over
    bilinear up-sampling, trained here for `steps` Adam steps of L1 2x super-resolution on 32 px patches of
    the training-split photographs (a few seconds; seeded and single-threaded, so every run of one torch
    build trains the same weights)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from forensics.synthetic import photographs_for_split

    class Upsampler(nn.Module):
        def __init__(self):
            super().__init__()
            self.lift = nn.Conv2d(3, 24, 3, padding=1)
            self.up = nn.ConvTranspose2d(24, 24, 4, stride=2, padding=1)
            self.body = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 3, 3, padding=1))

        def forward(self, latent):
            base = F.interpolate(latent, scale_factor=2, mode="bilinear", align_corners=False)
            return base + self.body(F.relu(self.up(F.relu(self.lift(latent)))))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float sums in the same order on every run
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    photos = [photo for _, photo in photographs_for_split("train")]
    model = Upsampler()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    try:
        for _ in range(steps):
            batch = []
            for _ in range(8):
                photo = photos[int(rng.integers(len(photos)))]
                top = int(rng.integers(0, photo.shape[0] - 32 + 1))
                left = int(rng.integers(0, photo.shape[1] - 32 + 1))
                batch.append(photo[top : top + 32, left : left + 32])
            target = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0
            loss = F.l1_loss(model(F.avg_pool2d(target, 2)), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval().requires_grad_(False)


# --- post-processing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostProcessing:
    """Ranges of the post-processing chain every sample (real and generated) goes through."""

    resize_probability: float = 0.5
    resize_range: tuple[float, float] = (0.6, 1.25)
    noise_probability: float = 0.3
    noise_sigma: tuple[float, float] = (1.0, 3.0)
    codec_weights: tuple[tuple[str, float], ...] = (("jpeg", 0.6), ("webp", 0.25), ("png", 0.15))
    quality_range: tuple[int, int] = (60, 95)

    def draw_scale(self, rng: np.random.Generator) -> float:
        """The resize factor of one chain (1.0 when this sample is not resized)."""
        return float(rng.uniform(*self.resize_range)) if rng.random() < self.resize_probability else 1.0


# --- capture conditions ----------------------------------------------------------------------------------

CAPTURE_CONDITIONS = ("lens_defocus", "shallow_depth_of_field", "camera_shake", "noise_reduction", "sharpening")
# Drawn only where a dataset names it (CaptureConditions.conditions), so the default draws above keep their bytes.
EXTRA_CAPTURE_CONDITIONS = ("tone_curve",)


@dataclass(frozen=True)
class CaptureConditions:
    """How the scene may have been shot and developed: applied to a photograph crop before it becomes a real
    or a generated sample, so both classes share it. `probability` 0 (the default) leaves datasets as before."""

    probability: float = 0.0
    conditions: tuple[str, ...] = CAPTURE_CONDITIONS  # drawn from uniformly
    defocus_radius: tuple[float, float] = (1.0, 3.0)  # lens_defocus: a disc of this radius (px) over the frame
    background_radius: tuple[float, float] = (2.0, 5.0)  # shallow_depth_of_field: the disc outside a sharp region
    shake_length: tuple[int, int] = (3, 9)  # camera_shake: a line of this length (px) at a random angle
    denoise_strength: tuple[float, float] = (5.0, 12.0)  # noise_reduction: the filter strength h of non-local means
    unsharp_amount: tuple[float, float] = (0.5, 1.5)  # sharpening: unsharp mask strength, radius 1-2 px
    gamma: tuple[float, float] = (0.7, 1.4)  # tone_curve: gamma, then contrast about mid-grey
    contrast: tuple[float, float] = (0.8, 1.3)

    def __post_init__(self):
        unknown = sorted(set(self.conditions) - set(CAPTURE_CONDITIONS + EXTRA_CAPTURE_CONDITIONS))
        if unknown or not self.conditions:
            raise ValueError(f"Wrong capture conditions {unknown or '(none)'}, supported conditions: "
                             f"{list(CAPTURE_CONDITIONS + EXTRA_CAPTURE_CONDITIONS)}")


def _disc_kernel(radius: float) -> np.ndarray:
    size = 2 * int(np.ceil(radius)) + 1
    ys, xs = np.mgrid[:size, :size] - size // 2
    kernel = (np.hypot(ys, xs) <= radius + 0.5).astype(np.float32)
    return kernel / kernel.sum()


def _line_kernel(length: int, angle: float) -> np.ndarray:
    import cv2

    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (length, length))
    return kernel / max(kernel.sum(), 1e-6)


def _convolved(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _sharp_region_weight(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """1 in an ellipse somewhere in the frame (the subject in focus), falling to 0 over as much again."""
    centre_y, centre_x = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    radius_y, radius_x = rng.uniform(0.15, 0.35) * height, rng.uniform(0.15, 0.35) * width
    ys, xs = np.mgrid[:height, :width]
    distance = np.hypot((ys - centre_y) / radius_y, (xs - centre_x) / radius_x)
    return np.clip(2.0 - distance, 0.0, 1.0)


def capture(rng: np.random.Generator, image: np.ndarray, config: CaptureConditions = CaptureConditions()) -> tuple[np.ndarray, str]:
    """Maybe shoot an (H, W, 3) uint8 crop through one capture condition; returns (image, the step in words or "")."""
    import cv2

    if config.probability <= 0 or rng.random() >= config.probability:  # no draw at 0: older datasets stay the same bytes
        return image, ""
    condition = config.conditions[int(rng.integers(len(config.conditions)))]
    if condition == "lens_defocus":
        radius = float(rng.uniform(*config.defocus_radius))
        return _convolved(image, _disc_kernel(radius)), f"capture {condition} {radius:.1f}"
    if condition == "shallow_depth_of_field":
        radius = float(rng.uniform(*config.background_radius))
        weight = _sharp_region_weight(rng, *image.shape[:2])[..., None]
        blurred = _convolved(image, _disc_kernel(radius)).astype(np.float32)
        mixed = image * weight + blurred * (1 - weight)
        return mixed.round().clip(0, 255).astype(np.uint8), f"capture {condition} {radius:.1f}"
    if condition == "camera_shake":
        length = int(rng.integers(config.shake_length[0], config.shake_length[1] + 1))
        return _convolved(image, _line_kernel(length, float(rng.uniform(0, 180)))), f"capture {condition} {length}"
    if condition == "noise_reduction":  # non-local means, as phones denoise: flat areas lose their grain
        strength = float(rng.uniform(*config.denoise_strength))
        denoised = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(image), None, strength, strength, 5, 15)
        return denoised, f"capture {condition} {strength:.0f}"
    if condition == "tone_curve":
        gamma, contrast = float(rng.uniform(*config.gamma)), float(rng.uniform(*config.contrast))
        toned = 0.5 + contrast * ((image / 255.0) ** gamma - 0.5)
        return (toned * 255).round().clip(0, 255).astype(np.uint8), f"capture {condition} {gamma:.2f}/{contrast:.2f}"
    amount, sigma = float(rng.uniform(*config.unsharp_amount)), float(rng.uniform(1.0, 2.0))
    blurred = cv2.GaussianBlur(image, (0, 0), sigma).astype(np.float32)
    sharpened = image + amount * (image.astype(np.float32) - blurred)
    return sharpened.round().clip(0, 255).astype(np.uint8), f"capture {condition} {amount:.1f}"


CODEC_SUFFIXES = {"jpeg": ".jpg", "webp": ".webp", "png": ".png"}


def post_process(
    rng: np.random.Generator, image: np.ndarray, size: tuple[int, int] | None = None, config: PostProcessing = PostProcessing()
) -> tuple[bytes, str, str]:
    """Resize (to `size` = (width, height), when given), maybe add noise, then encode.

    Returns (encoded bytes, file suffix, the chain in words, e.g. `resize 0.81 > noise 1.7 > jpeg 74`).
    """
    steps = []
    picture = Image.fromarray(image)
    if size is not None and picture.size != tuple(size):
        steps.append(f"resize {size[0] / picture.width:.2f}")
        picture = picture.resize(tuple(size), Image.BICUBIC if rng.random() < 0.5 else Image.BILINEAR)
    if rng.random() < config.noise_probability:
        sigma = float(rng.uniform(*config.noise_sigma))
        noisy = np.asarray(picture, dtype=np.float32) + rng.normal(0.0, sigma, (picture.height, picture.width, 3))
        picture = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
        steps.append(f"noise {sigma:.1f}")
    codecs, weights = zip(*config.codec_weights)
    codec = str(rng.choice(codecs, p=np.asarray(weights) / np.sum(weights)))
    buffer = io.BytesIO()
    if codec == "png":
        picture.save(buffer, format="PNG")
        steps.append("png")
    else:
        quality = int(rng.integers(config.quality_range[0], config.quality_range[1] + 1))
        picture.save(buffer, format="JPEG" if codec == "jpeg" else "WEBP", quality=quality)
        steps.append(f"{codec} {quality}")
    return buffer.getvalue(), CODEC_SUFFIXES[codec], " > ".join(steps)
