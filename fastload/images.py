"""The image path's public names, in one place: ``from fastload.images import ImageFolder,
ImagePipeline, RandomResizedCrop, ...``.

Datasets of encoded files (fastload.plan.image_datasets), the declared pipeline and its
steps (fastload.batch.image_pipeline), and the errors a bad file raises (fastload.errors).
"""

from fastload.batch.image_pipeline import (
    CenterCrop,
    ImageBatcher,
    ImagePipeline,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
)
from fastload.errors import ImageDecodeError, ImageTooLargeError, UnsupportedImageError
from fastload.plan.image_datasets import IMG_EXTENSIONS, ImageFolder, ImageList

__all__ = [
    "IMG_EXTENSIONS",
    "CenterCrop",
    "ImageBatcher",
    "ImageDecodeError",
    "ImageFolder",
    "ImageList",
    "ImagePipeline",
    "ImageTooLargeError",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "Resize",
    "UnsupportedImageError",
]
