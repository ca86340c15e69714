"""Processor of the tiny test VLA (remote code; copied next to its weights by `build_tiny_vla`).

Same contract as OpenVLA's `PrismaticProcessor`: `processor(text, images)` returns `input_ids`,
`attention_mask` and `pixel_values` of shape (B, 6, S, S), i.e. the image under two normalizations
(ImageNet mean/std as for DINOv2, and 0.5/0.5 as for SigLIP) stacked on the channel axis.
"""

from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature, ImageProcessingMixin, ProcessorMixin


class TinyVLAImageProcessor(ImageProcessingMixin):
    model_input_names = ["pixel_values"]

    def __init__(
        self,
        image_size: int = 224,
        means: Sequence[Sequence[float]] = ((0.485, 0.456, 0.406), (0.5, 0.5, 0.5)),
        stds: Sequence[Sequence[float]] = ((0.229, 0.224, 0.225), (0.5, 0.5, 0.5)),
        **kwargs,
    ):
        self.image_size = image_size
        self.means = [list(m) for m in means]
        self.stds = [list(s) for s in stds]
        super().__init__(**kwargs)

    def preprocess(self, images: Union[Image.Image, List[Image.Image]], return_tensors=None, **_) -> BatchFeature:
        if isinstance(images, Image.Image):
            images = [images]
        size = (self.image_size, self.image_size)
        # PIL resizes in C; everything after is one vectorized pass over the whole batch.
        batch = np.stack([np.asarray(img.convert("RGB").resize(size, Image.BILINEAR)) for img in images])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.means, dtype=torch.float32).view(1, -1, 1, 1)  # (1, 6, 1, 1)
        std = torch.tensor(self.stds, dtype=torch.float32).view(1, -1, 1, 1)
        pixel_values = (x.repeat(1, len(self.means), 1, 1) - mean) / std
        return BatchFeature({"pixel_values": pixel_values})

    def __call__(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)


class TinyVLAProcessor(ProcessorMixin):
    attributes = ["image_processor", "tokenizer"]
    image_processor_class = "AutoImageProcessor"
    tokenizer_class = "AutoTokenizer"

    def __init__(self, image_processor=None, tokenizer=None):
        super().__init__(image_processor, tokenizer)

    def __call__(
        self,
        text: Union[str, List[str]],
        images: Union[Image.Image, List[Image.Image]],
        padding: Union[bool, str] = False,
        truncation: Optional[bool] = None,
        max_length: Optional[int] = None,
        return_tensors="pt",
    ) -> BatchFeature:
        n_text = 1 if isinstance(text, str) else len(text)
        n_images = 1 if isinstance(images, Image.Image) else len(images)
        if n_text != n_images:
            raise ValueError(f"Batch is malformed: {n_text} texts but {n_images} images")
        pixel_values = self.image_processor(images)["pixel_values"]
        text_inputs = self.tokenizer(
            text, return_tensors=return_tensors, padding=padding, truncation=truncation, max_length=max_length
        )
        return BatchFeature(data={**text_inputs, "pixel_values": pixel_values})

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> List[str]:
        return list(dict.fromkeys(self.tokenizer.model_input_names + self.image_processor.model_input_names))
