"""BroNet building blocks (residual MLP with LayerNorm) and the critic-owned task embedding.

Layer layout follows the BRC reference (``jaxrl/networks.py``)::

    x = ReLU(LN(Dense(width)(input)))                                   # input projection
    for each block: x = x + LN(Dense(width)(ReLU(LN(Dense(width)(x)))))  # residual block
    out = Dense(out_dim)(x)                                             # optional head, no LN before it

Every layer can be built as an *ensemble*: ``ensemble_size`` independent copies whose weights are stacked
so that all members run as one batched matmul instead of a Python loop over critics.
"""

import math

import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

# Flax's LayerNorm default; PyTorch's default (1e-5) differs.
LAYER_NORM_EPS = 1e-6


class EnsembleLinear(nn.Module):
    """``ensemble_size`` independent linear layers applied as one batched matmul.

    :param in_features: Input size of each member
    :param out_features: Output size of each member
    :param ensemble_size: Number of members
    """

    def __init__(self, in_features: int, out_features: int, ensemble_size: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.ensemble_size = ensemble_size
        # (members, in, out): x @ W, the flax kernel layout
        self.weight = nn.Parameter(th.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(th.zeros(ensemble_size, 1, out_features))
        for member in range(ensemble_size):
            nn.init.kaiming_uniform_(self.weight.data[member].T, a=math.sqrt(5))

    def forward(self, x: th.Tensor) -> th.Tensor:
        """:param x: ``(members, batch, in)``, or ``(batch, in)`` to feed the same input to every member."""
        if x.dim() == 2:
            # A shared input broadcasts against the stacked weights: one matmul, no copies
            return th.matmul(x, self.weight) + self.bias
        return th.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, ensemble_size={self.ensemble_size}"


class EnsembleLayerNorm(nn.Module):
    """LayerNorm with a separate scale and offset for each ensemble member (input ``(members, batch, width)``)."""

    def __init__(self, width: int, ensemble_size: int, eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(th.ones(ensemble_size, 1, width))
        self.bias = nn.Parameter(th.zeros(ensemble_size, 1, width))

    def forward(self, x: th.Tensor) -> th.Tensor:
        return th.addcmul(self.bias, F.layer_norm(x, x.shape[-1:], eps=self.eps), self.weight)


def _linear(in_features: int, out_features: int, ensemble_size: int | None) -> nn.Module:
    if ensemble_size is None:
        return nn.Linear(in_features, out_features)
    return EnsembleLinear(in_features, out_features, ensemble_size)


def _layer_norm(width: int, ensemble_size: int | None) -> nn.Module:
    if ensemble_size is None:
        return nn.LayerNorm(width, eps=LAYER_NORM_EPS)
    return EnsembleLayerNorm(width, ensemble_size)


def orthogonal_init_(layer: nn.Module, gain: float) -> None:
    """Orthogonal kernel with ``gain`` and zero bias (flax ``orthogonal`` + zeros), per ensemble member."""
    if isinstance(layer, EnsembleLinear):
        for member in range(layer.ensemble_size):
            nn.init.orthogonal_(layer.weight.data[member], gain=gain)
    elif isinstance(layer, nn.Linear):
        nn.init.orthogonal_(layer.weight, gain=gain)
    else:
        raise TypeError(f"orthogonal_init_ expects a linear layer, got {type(layer).__name__}")
    nn.init.zeros_(layer.bias)


class BroNetBlock(nn.Module):
    """Residual block ``x + LN(Dense(ReLU(LN(Dense(x)))))``, no activation after the add."""

    def __init__(self, width: int, ensemble_size: int | None = None, activation_fn: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.net = nn.Sequential(
            _linear(width, width, ensemble_size),
            _layer_norm(width, ensemble_size),
            activation_fn(),
            _linear(width, width, ensemble_size),
            _layer_norm(width, ensemble_size),
        )

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.net(x)


class BroNet(nn.Module):
    """BroNet: input projection Dense->LN->ReLU, then ``len(net_arch)`` residual blocks, then an optional head.

    ``net_arch`` lists residual blocks, one width each (the SBX SimBa convention): ``[512, 512]`` is a
    512-wide projection followed by two 512-wide blocks. All blocks must share one width.

    :param input_dim: Size of the input features
    :param net_arch: One entry per residual block; all equal (the width)
    :param output_dim: Size of a linear head after the last block, or ``None`` for no head
    :param ensemble_size: Build ``ensemble_size`` independent networks evaluated as one batched computation;
        ``None`` for a single plain network
    :param activation_fn: Activation function (ReLU in BRC)
    """

    def __init__(
        self,
        input_dim: int,
        net_arch: list[int],
        output_dim: int | None = None,
        ensemble_size: int | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        if len(net_arch) == 0 or any(w != net_arch[0] for w in net_arch) or net_arch[0] <= 0:
            raise ValueError(
                f"BroNet net_arch lists residual blocks of one positive width, e.g. [512, 512]; got {net_arch}. "
                "Use a list of equal widths (one entry per block)."
            )
        width = net_arch[0]
        self.width = width
        self.ensemble_size = ensemble_size
        self.input_layer = nn.Sequential(
            _linear(input_dim, width, ensemble_size), _layer_norm(width, ensemble_size), activation_fn()
        )
        self.blocks = nn.Sequential(*[BroNetBlock(width, ensemble_size, activation_fn) for _ in net_arch])
        self.head = _linear(width, output_dim, ensemble_size) if output_dim is not None else None
        self.output_dim = output_dim if output_dim is not None else width
        for module in self.modules():
            if isinstance(module, nn.Linear | EnsembleLinear):
                orthogonal_init_(module, gain=math.sqrt(2))

    def forward(self, x: th.Tensor) -> th.Tensor:
        x = self.blocks(self.input_layer(x))
        return x if self.head is None else self.head(x)


class TaskEmbedding(nn.Module):
    """Learnable task embeddings, renormalised on every call (unit L2 norm by default, as in the BRC code).

    :param num_tasks: Number of rows (tasks)
    :param embedding_dim: Size of each embedding
    :param norm: ``"l2"`` (reference code default) or ``"l1"`` (the paper's variant)
    """

    def __init__(self, num_tasks: int, embedding_dim: int = 32, norm: str = "l2"):
        super().__init__()
        if norm not in ("l1", "l2"):
            raise ValueError(f"embedding_norm must be 'l1' or 'l2', got {norm!r}")
        if num_tasks < 1 or embedding_dim < 1:
            raise ValueError(f"TaskEmbedding needs num_tasks >= 1 and embedding_dim >= 1, got {num_tasks}, {embedding_dim}")
        self.norm = norm
        self.embedding = nn.Embedding(num_tasks, embedding_dim)
        # flax nn.Embed default init: variance_scaling(1, fan_in, normal) = N(0, 1/embedding_dim)
        nn.init.normal_(self.embedding.weight, std=1.0 / math.sqrt(embedding_dim))

    @property
    def num_tasks(self) -> int:
        """Number of rows (tasks) of the table."""
        return self.embedding.num_embeddings

    def forward(self, task_ids: th.Tensor) -> th.Tensor:
        emb = self.embedding(task_ids)
        # No epsilon, as in the reference: an all-zero row cannot arise from the Gaussian init
        return emb / emb.norm(p=2 if self.norm == "l2" else 1, dim=-1, keepdim=True)

    def add_rows(self, count: int, rule: str = "mean") -> None:
        """Grow the table by ``count`` tasks, keeping the existing rows (transfer to new tasks).

        :param count: Number of new tasks
        :param rule: ``"mean"``: each new row starts as the mean of the existing rows (the "average task", so a
            new task starts from what the critic learned across tasks); ``"random"``: a fresh N(0, 1/dim) row
        """
        if rule not in ("mean", "random"):
            raise ValueError(f"rule must be 'mean' or 'random', got {rule!r}")
        old = self.embedding.weight.data
        if rule == "mean":
            new = old.mean(0, keepdim=True).expand(count, -1).clone()
        else:
            new = th.randn(count, old.shape[1], device=old.device, dtype=old.dtype) / math.sqrt(old.shape[1])
        self.embedding = nn.Embedding(old.shape[0] + count, old.shape[1], device=old.device, dtype=old.dtype)
        self.embedding.weight.data.copy_(th.cat([old, new]))


class ImpalaResidual(nn.Module):
    """``x + conv(relu(conv(relu(x))))`` with 3x3 convolutions."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1)
        )

    def forward(self, x: th.Tensor) -> th.Tensor:
        return x + self.net(x)


class ImpalaCNN(BaseFeaturesExtractor):
    """Impala-style encoder (Espeholt et al. 2018): per stage a 3x3 conv, a 3x3 max-pool with stride 2 and two
    residual blocks; then ReLU, flatten and a linear layer to ``features_dim``.

    :param observation_space: Channel-first image space
    :param features_dim: Output size
    :param channels: Channels of each stage
    """

    def __init__(self, observation_space: spaces.Box, features_dim: int = 256, channels: tuple[int, ...] = (16, 32, 32)):
        super().__init__(observation_space, features_dim)
        layers: list[nn.Module] = []
        in_channels = observation_space.shape[0]
        for out_channels in channels:
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
                nn.MaxPool2d(3, stride=2, padding=1),
                ImpalaResidual(out_channels),
                ImpalaResidual(out_channels),
            ]
            in_channels = out_channels
        self.cnn = nn.Sequential(*layers, nn.ReLU(), nn.Flatten())
        with th.no_grad():
            n_flatten = self.cnn(th.zeros(1, *observation_space.shape)).shape[1]
        self.linear = nn.Sequential(nn.Linear(n_flatten, features_dim), nn.ReLU())

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.linear(self.cnn(observations))
