"""Deterministic surrogate: a LightningModule mapping (parameters, t) to the fields."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import nn

from gensim.metrics import relative_l2, summarize_errors
from gensim.models.components import RunningNormalizer
from gensim.simulations.base import FieldSpec


def _as_specs(fields: Sequence[FieldSpec | dict]) -> tuple[FieldSpec, ...]:
    return tuple(f if isinstance(f, FieldSpec) else FieldSpec(**f) for f in fields)


class DeterministicSurrogate(L.LightningModule):
    """Regress the flattened fields on (parameters, t) with a mean-squared error in normalized units.

    Inputs and outputs are normalized with statistics learned from the first training batches of
    the stream (:class:`RunningNormalizer`), then frozen; they are module buffers, so checkpoints
    restore them exactly.

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

    Batches
    -------
    ``{"params": (B, n_params), "t": (B,), "fields": (B, D)}`` float32 tensors.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        net: Callable[[int, int], nn.Module],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        final_lr_ratio: float = 0.01,
        normalizer_warmup_batches: int = 100,
    ) -> None:
        super().__init__()
        self.fields = _as_specs(fields)
        self.save_hyperparameters(ignore=["net", "fields"])
        self.hparams["fields"] = [vars(f) | {"shape": list(f.shape)} for f in self.fields]
        n_out = sum(f.size for f in self.fields)
        self.net = net(n_params + 1, n_out)
        self.in_norm = RunningNormalizer(n_params + 1, normalizer_warmup_batches, rel_floor=0.0)
        self.out_norm = RunningNormalizer(n_out, normalizer_warmup_batches)
        self._val_errors: list[torch.Tensor] = []

    @staticmethod
    def inputs(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Network input (B, n_params + 1): the parameters and the time."""
        return torch.cat([batch["params"], batch["t"].reshape(-1, 1).to(batch["params"].dtype)], dim=1)

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
        x = self.inputs({"params": params, "t": t})
        return self.out_norm.denormalize(self.net(self.in_norm.normalize(x)))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = self.inputs(batch), batch["fields"]
        self.in_norm.update(x)
        self.out_norm.update(y)
        loss = nn.functional.mse_loss(self.net(self.in_norm.normalize(x)), self.out_norm.normalize(y))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch["params"], batch["t"])
        self._val_errors.append(relative_l2(pred, batch["fields"], self.fields).cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_errors:
            return
        summary = summarize_errors(torch.cat(self._val_errors))
        self._val_errors.clear()
        self.log("val_rel_l2_mean", summary["mean"], prog_bar=True)
        self.log("val_rel_l2_p99", summary["p99"])

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(int(self.trainer.max_steps), 1) if self.trainer.max_steps and self.trainer.max_steps > 0 else None
        if total is None:
            return opt
        warm, floor = self.hparams.warmup_steps, self.hparams.final_lr_ratio

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = min((step - warm) / max(total - warm, 1), 1.0)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
