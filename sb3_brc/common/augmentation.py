"""DrQ image augmentation."""

import torch as th


def random_shift(images: th.Tensor, pad: int = 4) -> th.Tensor:
    """DrQ random shift: pad each image by ``pad`` pixels (replicating the border), then crop back to the
    original size at an independent random offset per sample (the same offset for all its channels/frames).

    :param images: ``(batch, channels, height, width)``, any numeric dtype (uint8 frames stay in 0..255)
    :param pad: Largest shift in pixels
    :return: Float tensor of the same shape
    """
    if pad == 0:
        return images.float()
    batch, channels, height, width = images.shape
    # Replicate padding then cropping at offset o is indexing the unpadded image at clamp(o - pad + i): one gather
    # on the (uint8) frames instead of a padded float copy, converted to float once at the end
    offsets = th.randint(0, 2 * pad + 1, (batch, 2), device=images.device) - pad
    rows = (offsets[:, :1] + th.arange(height, device=images.device)).clamp_(0, height - 1)
    cols = (offsets[:, 1:] + th.arange(width, device=images.device)).clamp_(0, width - 1)
    pixels = (rows.unsqueeze(2) * width + cols.unsqueeze(1)).view(batch, 1, height * width)
    shifted = images.flatten(2).gather(2, pixels.expand(batch, channels, height * width))
    return shifted.view(batch, channels, height, width).float()
