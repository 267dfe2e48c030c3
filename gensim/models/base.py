"""What every surrogate shares: field layout, stream-fitted normalizers, conditioning, schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch

from gensim.data.ranks import gather_rows
from gensim.data.streaming import rows_per_chunk
from gensim.metrics import relative_l2, summarize_errors
from gensim.models.components import ReducedBasis, RunningNormalizer
from gensim.models.training_probe import TrainingProbe
from gensim.simulations.base import FieldSpec


def as_field_specs(fields: Sequence[FieldSpec | dict]) -> tuple[FieldSpec, ...]:
    """FieldSpecs from FieldSpecs or dicts of their arguments (as stored in hyperparameters)."""
    return tuple(f if isinstance(f, FieldSpec) else FieldSpec(**f) for f in fields)


def warmup_cosine(warmup_steps: int, total_steps: int, final_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over ``warmup_steps``, then a cosine decay to
    ``final_ratio`` at ``total_steps`` (constant after)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def fused_adam(module: L.LightningModule) -> dict[str, bool]:
    """``{"fused": True}`` for ``torch.optim.Adam``/``AdamW`` where it is safe, else ``{}``.

    The fused kernel updates every parameter in one call instead of a handful of tensor
    operations per parameter: for the package's small networks on CPU the optimizer step falls
    from about 0.9 to 0.25 ms (a 256 x 3 MLP, batch 128, one thread), a sixth of a training step.
    It is used where every parameter is on the CPU or a CUDA device (the other devices' kernels
    vary with the torch version), and left off under ``16-mixed`` precision, where Lightning's
    gradient clipping refuses optimizers that unscale gradients themselves.
    """
    precision = str(module.trainer.precision) if module._trainer is not None else ""
    if precision.startswith("16") or not all(p.device.type in ("cpu", "cuda") for p in module.parameters()):
        return {}
    return {"fused": True}


#: Features of the time a surrogate's condition can hold: ``t`` itself, and ``log_t``, its
#: logarithm (t > 0), which spreads out the early times of a decaying solution: on heat2d the
#: field changes most in the first steps, which a network of t alone resolves poorly.
TIME_FEATURES = ("t", "log_t")


class FieldSurrogate(L.LightningModule):
    """Base of the surrogates: flattened fields in and out, normalized with frozen stream statistics.

    The conditioning is (parameters, features of t), normalized by ``in_norm``; fields are normalized per
    value by ``out_norm``. Both normalizers learn from the first training batches of the stream
    (:class:`RunningNormalizer`), then freeze; they are module buffers, so checkpoints restore them
    exactly. Subclasses call :meth:`record_fields` after ``save_hyperparameters`` and read their
    optimizer settings (``lr``, ``weight_decay``, ``warmup_steps``, ``final_lr_ratio``) from
    ``hparams``.

    Validation computes the held-out relative L2 of ``self(params, t)`` (the point prediction) and
    logs ``val_rel_l2_mean`` and ``val_rel_l2_p99`` of the whole held-out set: under DDP the
    per-sample errors of every rank's shard are gathered, so every rank logs the same numbers.
    Beside them it logs the training error, ``train_rel_l2_mean`` and ``train_rel_l2_p99``: the
    same score on a uniform sample of the distinct training rows seen so far
    (:class:`~gensim.models.training_probe.TrainingProbe`, at most 512 rows and 32 MiB per rank,
    gathered over ranks), also returned by :meth:`training_metrics` for ``metrics.json``.

    Batches move to the device without ``sim_id`` and ``step`` (see
    :meth:`transfer_batch_to_device`).

    Parameters
    ----------
    fields : sequence of FieldSpec (or dicts of its arguments)
        Output fields, in buffer order.
    n_params : int
        Length of the parameter vector.
    normalizer_warmup_batches : int
        Batches whose statistics define the normalization.
    time_features : sequence of str
        Features of t in the condition, among :data:`TIME_FEATURES`; the condition has
        ``n_cond = n_params + len(time_features)`` values.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        normalizer_warmup_batches: int,
        time_features: Sequence[str] = ("t",),
    ) -> None:
        super().__init__()
        self.fields = as_field_specs(fields)
        self.n_params = int(n_params)
        self.n_out = sum(f.size for f in self.fields)
        self.time_features = tuple(str(name) for name in time_features)
        if not self.time_features or not set(self.time_features) <= set(TIME_FEATURES):
            raise ValueError(
                f"time_features must be a non-empty list of {list(TIME_FEATURES)}, got "
                f"{list(self.time_features)}; e.g. model.time_features=[t,log_t]"
            )
        self.n_cond = self.n_params + len(self.time_features)
        self.in_norm = RunningNormalizer(self.n_cond, normalizer_warmup_batches, rel_floor=0.0)
        self.out_norm = RunningNormalizer(self.n_out, normalizer_warmup_batches)
        self._val_errors: list[torch.Tensor] = []
        # At most 512 rows (and 32 MiB): the standard error of the mean training error is then the
        # errors' standard deviation / 22, about 5% of the mean when the spread is about the mean,
        # enough to tell a training error from a held-out one.
        self.train_probe = TrainingProbe(rows_per_chunk(self.n_out))

    def record_fields(self) -> None:
        """Store the field layout in ``hparams`` as plain data (checkpoints rebuild the model).

        A field's mesh is left out (a million nodes do not belong in ``hparams.yaml``): a model
        that needs the coordinates keeps them as a module buffer.
        """
        self.hparams["fields"] = [{"name": f.name, "shape": list(f.shape), "dtype": f.dtype} for f in self.fields]

    # -- conditioning and normalization ---------------------------------------------------------
    def inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Condition in physical units (B, n_cond): the parameters, then :attr:`time_features` of t."""
        t = batch["t"].reshape(-1, 1).to(batch["params"].dtype)
        features = {"t": lambda: t, "log_t": lambda: torch.log(t)}
        return torch.cat([batch["params"], *(features[name]() for name in self.time_features)], dim=1)

    def condition(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Normalized condition, shape (B, n_cond), from params (B, n_params) and t (B,)."""
        return self.in_norm.normalize(self.inputs({"params": params, "t": t}))

    def normalized_condition(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalized condition (B, n_cond) of a training batch; feeds ``in_norm`` while it learns."""
        if "log_t" in self.time_features and not self.in_norm.frozen and bool((batch["t"] <= 0).any()):
            # Checked while the normalizers learn only: a test on every batch would wait for the device.
            raise ValueError(
                "time_features has log_t but a training batch has t <= 0 "
                f"(min {float(batch['t'].min())}); "
                "use time_features=[t] for a simulation whose time starts at 0"
            )
        x = self.inputs(batch)
        self.in_norm.update(x)
        return self.in_norm.normalize(x)

    def normalized_batch(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized (condition (B, n_cond), fields (B, D)) of a training batch.

        Feeds the normalizers first while they are still learning.
        """
        cond, y = self.normalized_condition(batch), batch["fields"]
        self.out_norm.update(y)
        return cond, self.out_norm.normalize(y)

    @property
    def weights_version(self) -> int:
        """A count that changes whenever the meaning of the weights does.

        The weights act on normalized inputs and predict normalized fields, or coefficients of a
        basis fitted to the stream: while the normalizers learn, and at every refit of a basis
        (whose output layer is then mapped onto the new basis), weights taken before and after
        are in different units. A weight average (:class:`gensim.callbacks.WeightAverage`)
        restarts when this count changes. It is the sum of the normalizers' and bases' own
        counts, read without waiting for the device.
        """
        if not hasattr(self, "_versioned"):
            self._versioned = [m for m in self.modules() if isinstance(m, (RunningNormalizer, ReducedBasis))]
        return sum(m.version for m in self._versioned)

    def log_step(self, metrics: dict[str, torch.Tensor], prog_bar: bool = False) -> None:
        """Log per-step training metrics at the steps whose values the logger writes.

        Lightning writes a step's metrics every ``trainer.log_every_n_steps`` steps and drops the
        others, but ``self.log`` costs about 0.6 ms a call on the CPU whether or not the value is
        written: a fifth of a small model's step. Logging at the written steps and at the last
        step (``trainer.max_steps``) leaves the logs as they were and ``trainer.callback_metrics``
        with the final values; the progress bar shows the loss of the last written step.

        Parameters
        ----------
        metrics : dict of str to Tensor
            Scalar metrics of this step, e.g. ``{"train_loss": loss}``.
        prog_bar : bool
            Show them in the progress bar too.
        """
        if self._trainer is not None:
            last = 0 < self.trainer.max_steps <= self.global_step + 1
            if not (last or self.trainer._logger_connector.should_update_logs):
                return
        for name, value in metrics.items():
            self.log(name, value, prog_bar=prog_bar)

    @staticmethod
    def batch_mean(per_sample: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of a per-sample loss over the batch, with the buffer's importance weights if any.

        A replay policy that keeps its content balanced over (parameters, time), such as
        :class:`~gensim.buffers.DistributionAware`, adds ``batch["weight"]`` (B,) so that the
        weighted loss is unbiased for its target law; other batches have no weights.

        Parameters
        ----------
        per_sample : Tensor, shape (B,)
        batch : dict
            The training batch, optionally with ``"weight"`` (B,).

        Returns
        -------
        Tensor, shape ()
        """
        weight = batch.get("weight")
        if weight is None:
            return per_sample.mean()
        return (weight.to(per_sample.dtype) * per_sample).mean()

    # -- device transfer ---------------------------------------------------------------------------
    #: Batch entries the model computes with; the others (``sim_id``, ``step``) stay on the host,
    #: where the callbacks read them (:class:`~gensim.callbacks.ActiveLearning`).
    device_keys: tuple[str, ...] = ("params", "t", "fields", "weight")

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move only :attr:`device_keys` of a dict batch to ``device``; other batches as Lightning does.

        The copy is asynchronous (``non_blocking``) when the source tensor is in pinned memory,
        the only case where it can be.
        """
        if not isinstance(batch, dict):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        return {
            key: value.to(device, non_blocking=value.is_pinned()) if key in self.device_keys else value
            for key, value in batch.items()
        }

    # -- validation: the point prediction ------------------------------------------------------
    #: Logged names are ``f"{validation_prefix}_mean"`` and ``f"{validation_prefix}_p99"``.
    validation_prefix: str = "val_rel_l2"

    def validation_errors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-sample held-out errors of a validation batch, shape (B, n_fields), float64.

        The relative L2 of the point prediction ``self(params, t)``; a subclass that scores
        something else (the autoencoder's reconstruction) overrides this and
        :attr:`validation_prefix`.
        """
        return relative_l2(self(batch["params"], batch["t"]), batch["fields"], self.fields)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # Kept on the device: gathered across ranks at the epoch's end, one transfer then.
        self._val_errors.append(self.validation_errors(batch).detach())

    def on_validation_epoch_end(self) -> None:
        """Log the mean and p99 of the errors of the whole held-out set.

        Under DDP each rank holds a disjoint shard of the held-out set (unequal sizes, maybe
        none): the errors of all ranks are gathered, so every rank logs the same numbers, those
        of a single-process evaluation, without a further (mean) reduction. Every rank must
        reach this hook: Lightning skips the validation loop of a rank whose loader has no
        batch, so give such a rank an empty batch rather than no batch.
        """
        local = (
            torch.cat(self._val_errors)
            if self._val_errors
            else torch.zeros(0, len(self.fields), dtype=torch.float64, device=self.device)
        )
        self._val_errors.clear()
        errors = gather_rows(local)
        if errors.shape[0] == 0:
            return
        summary = summarize_errors(errors)
        self.log(f"{self.validation_prefix}_mean", summary["mean"], prog_bar=True)
        self.log(f"{self.validation_prefix}_p99", summary["p99"])
        # Validation runs in eval mode already; the training error uses the same point prediction.
        for name, value in self.training_metrics().items():
            if name != "train_probe_rows":
                self.log(name, value)

    # -- training error: the same score on a sample of the rows trained on --------------------
    #: Logged names are ``f"{training_prefix}_mean"`` and ``f"{training_prefix}_p99"``.
    training_prefix: str = "train_rel_l2"

    def on_train_batch_start(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.train_probe.offer(batch)

    @torch.no_grad()
    def training_errors(self) -> torch.Tensor:
        """Per-sample errors (:meth:`validation_errors`) of this rank's training probe, (n, n_fields).

        On the model's device, float64; n = 0 before the first training batch.
        """
        rows = self.train_probe.rows
        if not rows:
            return torch.zeros(0, len(self.fields), dtype=torch.float64, device=self.device)
        chunk = rows_per_chunk(self.n_out)
        return torch.cat(
            [
                self.validation_errors({k: v.to(self.device) for k, v in zip(rows, part)})
                for part in zip(*(v.split(chunk) for v in rows.values()))
            ]
        )

    def training_metrics(self) -> dict[str, float]:
        """Mean and p99 of the training errors over every rank's probe, and the probe's rows.

        A collective under DDP (every rank must call it); an empty dict when no rank has trained.
        """
        was_training = self.training
        self.eval()
        errors = gather_rows(self.training_errors())
        self.train(was_training)
        if errors.shape[0] == 0:
            return {}
        summary = summarize_errors(errors)
        return {
            f"{self.training_prefix}_mean": summary["mean"],
            f"{self.training_prefix}_p99": summary["p99"],
            "train_probe_rows": int(errors.shape[0]),
        }

    # -- optimization ---------------------------------------------------------------------------
    def total_steps(self) -> int | None:
        """``trainer.max_steps`` when it is set (> 0), else None."""
        steps = self.trainer.max_steps if self._trainer is not None else None
        return int(steps) if steps and steps > 0 else None

    def scheduled(self, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer with the warm-up + cosine schedule of ``hparams``, stepped per batch."""
        total = self.total_steps()
        if total is None:
            return {"optimizer": optimizer}
        factor = warmup_cosine(self.hparams.warmup_steps, total, self.hparams.final_lr_ratio)
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, **fused_adam(self)
        )
        return self.scheduled(opt)
