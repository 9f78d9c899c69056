"""DrQ image augmentation."""

import torch as th
import torch.nn.functional as F


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
    padded = F.pad(images.float(), (pad, pad, pad, pad), mode="replicate")
    offsets = th.randint(0, 2 * pad + 1, (batch, 2), device=images.device)
    rows = (offsets[:, :1] + th.arange(height, device=images.device)).view(batch, 1, height, 1)
    cropped_rows = padded.gather(2, rows.expand(batch, channels, height, width + 2 * pad))
    cols = (offsets[:, 1:] + th.arange(width, device=images.device)).view(batch, 1, 1, width)
    return cropped_rows.gather(3, cols.expand(batch, channels, height, width))
