"""DrQ image augmentation."""

import torch as th


def shift_offsets(batch: int, pad: int, device: th.device | str = "cpu") -> th.Tensor:
    """DrQ's random shifts of a batch: a ``(row, column)`` offset per sample, each uniform in ``[-pad, pad]``."""
    return th.randint(0, 2 * pad + 1, (batch, 2), device=device) - pad


def shift(images: th.Tensor, offsets: th.Tensor) -> th.Tensor:
    """Each image padded by replicating its border, then cropped back to its size at its ``offsets`` (the same offset
    for all its channels/frames).

    :param images: ``(batch, channels, height, width)``, any numeric dtype (uint8 frames stay in 0..255)
    :param offsets: ``(batch, 2)`` row and column offsets (:func:`shift_offsets`)
    :return: Float tensor of the same shape
    """
    batch, channels, height, width = images.shape
    # Replicate padding then cropping at offset o is indexing the unpadded image at clamp(o - pad + i): one gather
    # on the (uint8) frames instead of a padded float copy, converted to float once at the end
    rows = (offsets[:, :1] + th.arange(height, device=images.device)).clamp(0, height - 1)
    cols = (offsets[:, 1:] + th.arange(width, device=images.device)).clamp(0, width - 1)
    pixels = (rows.unsqueeze(2) * width + cols.unsqueeze(1)).view(batch, 1, height * width)
    shifted = images.flatten(2).gather(2, pixels.expand(batch, channels, height * width))
    return shifted.view(batch, channels, height, width).float()


def random_shift(images: th.Tensor, pad: int = 4) -> th.Tensor:
    """DrQ random shift: :func:`shift` at random :func:`shift_offsets` (``pad``: the largest shift in pixels)."""
    if pad == 0:
        return images.float()
    return shift(images, shift_offsets(len(images), pad, images.device))
