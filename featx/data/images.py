"""Images as tensors: the transforms and the torch Dataset of a Collection (reading an image as upright 8-bit
RGB is :mod:`featx.data.decode`'s ``load_image``, re-exported here).

Extraction splits the evaluation transform in two: :class:`ResizeUint8` (the PIL resize, in the decoding
threads or processes) and :func:`normalize_batch` (ToTensor + Normalize on whole uint8 batches, on the compute
device). Together they give exactly the tensors of :func:`make_transform`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from featx.data.collection import Collection
from featx.data.content import UNKNOWN, FileId
from featx.data.decode import EXIF_ORIENTATION, load_image, read_image
from featx.errors import FeatxError, arg

__all__ = ["ImageDataset", "RandomRotate90", "ResizeUint8", "describe_preprocessing", "load_image", "make_transform",
           "normalize_batch", "read_image"]


class RandomRotate90:
    """Rotate a PIL image by a random multiple of 90 degrees."""

    def __call__(self, img: Image.Image) -> Image.Image:
        k = int(torch.randint(0, 4, ()).item())
        if k == 0:
            return img
        return img.transpose((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                              Image.Transpose.ROTATE_270)[k - 1])

    def __repr__(self) -> str:
        return "RandomRotate90()"


def make_transform(image_size: int, mean: Sequence[float], std: Sequence[float], *,
                   augment: bool = False, color_jitter: bool = False) -> T.Compose:
    """PIL image -> normalised float tensor (3, image_size, image_size).

    Evaluation: Resize((s, s)) -> ToTensor -> Normalize(mean, std). ``augment`` adds horizontal and
    vertical flips, random 90-degree rotations and a small affine jitter (and ColorJitter when
    ``color_jitter``) before the tensor conversion.
    """
    if int(image_size) < 1:
        raise FeatxError(f"{arg('image_size', image_size)} must be a positive number of pixels")
    steps = [T.Resize((int(image_size), int(image_size)), antialias=True)]
    if augment:
        steps += [T.RandomHorizontalFlip(), T.RandomVerticalFlip(), RandomRotate90(),
                  T.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.95, 1.05))]
        if color_jitter:
            steps.append(T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02))
    steps += [T.ToTensor(), T.Normalize(list(map(float, mean)), list(map(float, std)))]
    return T.Compose(steps)


def describe_preprocessing(transform: T.Compose) -> dict:
    """What an evaluation transform of :func:`make_transform` does, read from its steps, as attributes for a
    feature store: ``preprocessing`` (in words), ``transform`` (its repr), ``resize_interpolation``,
    ``resize_antialias``, ``channel_order``, ``colour_conversion``, ``value_range`` and ``exif_orientation``
    (``applied``: images turned upright by their EXIF tag; stores made before featx did so have no such
    attribute and read as ``ignored``, :data:`featx.store.schema.LEGACY_SETTINGS`)."""
    steps = list(transform.transforms)
    resize = next(t for t in steps if isinstance(t, T.Resize))
    norm = next(t for t in steps if isinstance(t, T.Normalize))
    height, width = (resize.size, resize.size) if isinstance(resize.size, int) else resize.size
    mode = getattr(resize.interpolation, "value", str(resize.interpolation))
    colour = ("decoded with PIL, turned upright by its EXIF orientation (PIL.ImageOps.exif_transpose) and "
              "converted to 8-bit RGB by Image.convert('RGB') (grey copied to the three channels, palettes expanded, "
              "alpha dropped); 16-bit, 32-bit integer and float images are first scaled to 8 bits by their own "
              "minimum and maximum")
    value_range = (f"ToTensor scales 0-255 to 0-1 (float32, channels first: 3 x {height} x {width}), then each "
                   f"channel becomes (x - mean) / std with mean {list(norm.mean)} and std {list(norm.std)}")
    words = (f"{colour}; resized to {width}x{height} px ({mode}, antialias={bool(resize.antialias)}; the whole "
             f"image, aspect ratio not kept, no crop); {value_range}")
    return {"preprocessing": words, "transform": repr(transform), "resize_interpolation": mode,
            "resize_antialias": bool(resize.antialias), "channel_order": "RGB", "colour_conversion": colour,
            "value_range": value_range, "exif_orientation": EXIF_ORIENTATION}


class ResizeUint8:
    """PIL image -> uint8 tensor (image_size, image_size, 3), channels last: the Resize step of
    :func:`make_transform` exactly (PIL bilinear, which always antialiases), without ToTensor / Normalize."""

    def __init__(self, image_size: int):
        if int(image_size) < 1:
            raise FeatxError(f"{arg('image_size', image_size)} must be a positive number of pixels")
        self.image_size = int(image_size)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        return torch.from_numpy(np.array(img.resize(size, Image.Resampling.BILINEAR), dtype=np.uint8))

    def __repr__(self) -> str:
        return f"ResizeUint8({self.image_size})"


def normalize_batch(images: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                    std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """uint8 images (B, H, W, 3) on any device -> float32 (B, 3, H, W), channels-last in memory.

    The same operations as ToTensor then Normalize (divide by 255, subtract mean, divide by std), so a batch
    of :class:`ResizeUint8` outputs becomes the stacked tensors of :func:`make_transform`. ``mean`` and ``std``
    may be float32 tensors already on the images' device (a CUDA caller passes those: building them from
    numbers each batch would copy them to the GPU and wait for it).
    """
    x = images.permute(0, 3, 1, 2).to(torch.float32).div_(255)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


class ImageDataset(torch.utils.data.Dataset):
    """Items are (image tensor, index into collection.samples, error message or ""), and with ``identify``
    the :class:`~featx.data.content.FileId` of the bytes decoded (``UNKNOWN`` for an unreadable image).

    An unreadable image gives a zero tensor of the usual shape and a one-line message naming the file,
    so that a long extraction records it and goes on.
    """

    def __init__(self, collection: Collection, transform, indices: Sequence[int] | None = None, *,
                 identify: bool = False):
        self.collection = collection
        self.transform = transform
        self.indices = list(range(len(collection.samples))) if indices is None else [int(i) for i in indices]
        self.identify = identify
        self._blank_shape: tuple[tuple[int, ...], torch.dtype] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple:
        index = self.indices[i]
        path = self.collection.abspath(index)
        try:
            image, ident = read_image(path, self.identify)
            tensor = self.transform(image)
        except FeatxError as exc:
            return self._item(self._blank(), index, str(exc), UNKNOWN)
        except Exception as exc:  # a transform failing on an odd image
            return self._item(self._blank(), index, f"cannot transform image {path}: {exc}".splitlines()[0], UNKNOWN)
        return self._item(tensor, index, "", ident)

    def _item(self, tensor: torch.Tensor, index: int, error: str, ident: FileId) -> tuple:
        return (tensor, index, error, ident) if self.identify else (tensor, index, error)

    def _blank(self) -> torch.Tensor:
        if self._blank_shape is None:
            like = self.transform(Image.new("RGB", (8, 8)))
            self._blank_shape = (tuple(like.shape), like.dtype)
        shape, dtype = self._blank_shape
        return torch.zeros(shape, dtype=dtype)
