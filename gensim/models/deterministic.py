"""Deterministic surrogate: a LightningModule mapping (parameters, t) to the fields."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gensim.models.base import FieldSurrogate
from gensim.models.components import Decoder
from gensim.models.components.decoder import NetFactory
from gensim.simulations.base import FieldSpec


class RegressionSurrogate(FieldSurrogate):
    """A surrogate that regresses the fields on (parameters, t): MSE in normalized units.

    Subclasses build the network and give :meth:`normalized_prediction`; the prediction in
    physical units and the training loss are the same for all of them.
    """

    def normalized_prediction(self, cond: torch.Tensor) -> torch.Tensor:
        """Fields in normalized units, shape (B, D), from the normalized condition, shape (B, n_cond)."""
        raise NotImplementedError

    def forward(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predict fields in physical units.

        Parameters
        ----------
        params : Tensor, shape (B, n_params)
        t : Tensor, shape (B,)

        Returns
        -------
        Tensor, shape (B, D)
        """
        return self.out_norm.denormalize(self.normalized_prediction(self.condition(params, t)))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        cond, y = self.normalized_batch(batch)
        # Per-sample squared error, so that a replay policy's importance weights apply per sample.
        loss = self.batch_mean((self.normalized_prediction(cond) - y).pow(2).mean(dim=1), batch)
        self.log_step({"train_loss": loss}, prog_bar=True)
        return loss


class DeterministicSurrogate(RegressionSurrogate):
    """Regress the flattened fields on (parameters, t) with a mean-squared error in normalized units.

    The network is a :class:`~gensim.models.components.Decoder` without latent. Inputs and outputs
    are normalized with statistics learned from the first training batches of the stream, then
    frozen (see :class:`~gensim.models.base.FieldSurrogate`).

    Parameters
    ----------
    fields : sequence of FieldSpec (or dicts of its arguments)
        Output fields, in buffer order.
    n_params : int
        Length of the parameter vector.
    net : callable
        ``net(in_features, out_features) -> nn.Module`` (a Hydra partial such as
        :class:`gensim.models.components.MLP`).
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW weight decay.
    warmup_steps : int
        Linear learning-rate warm-up; then a cosine decay to ``lr * final_lr_ratio`` at
        ``trainer.max_steps``.
    final_lr_ratio : float
    normalizer_warmup_batches : int
        Batches whose statistics define the normalization.
    time_features : sequence of str
        Features of t in the condition (:data:`gensim.models.base.TIME_FEATURES`).

    Batches
    -------
    ``{"params": (B, n_params), "t": (B,), "fields": (B, D)}`` float32 tensors.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        net: NetFactory,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        final_lr_ratio: float = 0.01,
        normalizer_warmup_batches: int = 100,
        time_features: Sequence[str] = ("t",),
    ) -> None:
        super().__init__(fields, n_params, normalizer_warmup_batches, time_features)
        self.save_hyperparameters(ignore=["net", "fields"])
        self.record_fields()
        self.decoder = Decoder(self.n_cond, 0, self.n_out, net)

    def normalized_prediction(self, cond: torch.Tensor) -> torch.Tensor:
        """Fields in normalized units, shape (B, D), from the normalized condition, shape (B, n_cond)."""
        return self.decoder(cond)
