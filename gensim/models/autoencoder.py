"""Autoencoder for dimension reduction: fields -> a few latent numbers -> fields, trained on-line."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gensim.metrics import relative_l2, summarize_errors
from gensim.models.base import FieldSurrogate
from gensim.models.components import Decoder, Encoder
from gensim.models.components.decoder import NetFactory
from gensim.simulations.base import FieldSpec


class Autoencoder(FieldSurrogate):
    """An unconditional autoencoder of the flattened, normalized fields (the nonlinear analogue
    of PCA with ``latent_dim`` modes), trained from the same stream as the surrogates.

    The encoder and decoder are the shared :class:`~gensim.models.components.Encoder` and
    :class:`~gensim.models.components.Decoder` with no condition; the loss is the mean-squared
    reconstruction error in normalized units.

    An autoencoder does not predict from parameters, so ``forward(params, t)`` (what
    ``gensim-train`` evaluates as ``val_rel_l2_*``) returns the normalizer's mean field, a trivial
    prediction; the reconstruction errors are ``val_recon_rel_l2_*`` at validation and
    ``recon_rel_l2_mean`` / ``recon_rel_l2_p99`` in ``metrics.json``.

    Parameters
    ----------
    fields : sequence of FieldSpec (or dicts of its arguments)
    n_params : int
        Length of the parameter vector (the stream carries it; the autoencoder ignores it).
    net : callable
        Decoder network factory.
    encoder_net : callable
        Encoder network factory.
    latent_dim : int
        Number of latent values per sample.
    lr, weight_decay, warmup_steps, final_lr_ratio, normalizer_warmup_batches
        As for :class:`~gensim.models.DeterministicSurrogate`.
    """

    def __init__(
        self,
        fields: Sequence[FieldSpec | dict],
        n_params: int,
        net: NetFactory,
        encoder_net: NetFactory,
        latent_dim: int = 8,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_steps: int = 200,
        final_lr_ratio: float = 0.01,
        normalizer_warmup_batches: int = 100,
    ) -> None:
        super().__init__(fields, n_params, normalizer_warmup_batches)
        self.save_hyperparameters(ignore=["net", "encoder_net", "fields"])
        self.record_fields()
        self.encoder = Encoder(self.n_out, 0, latent_dim, encoder_net)
        self.decoder = Decoder(0, latent_dim, self.n_out, net)

    def encode(self, fields: torch.Tensor) -> torch.Tensor:
        """Latent codes (B, latent_dim) of fields (B, D) in physical units."""
        return self.encoder(self.out_norm.normalize(fields))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Fields (B, D) in physical units from latent codes (B, latent_dim)."""
        return self.out_norm.denormalize(self.decoder(z=z))

    def reconstruct(self, fields: torch.Tensor) -> torch.Tensor:
        """``decode(encode(fields))``, shape (B, D) -> (B, D)."""
        return self.decode(self.encode(fields))

    def forward(self, params: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The normalizer's mean field for every row (B, D): an autoencoder has no parameter map."""
        return self.out_norm.mean.to(params.dtype).expand(params.shape[0], self.n_out)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        _, y = self.normalized_batch(batch)
        loss = self.batch_mean((self.decoder(z=self.encoder(y)) - y).pow(2).mean(dim=1), batch)
        self.log_step({"train_loss": loss}, prog_bar=True)
        return loss

    #: Reconstruction errors, gathered over ranks by the base class like the surrogates' errors.
    validation_prefix = "val_recon_rel_l2"
    training_prefix = "train_recon_rel_l2"

    def validation_errors(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Relative L2 of the reconstruction of the batch's fields, shape (B, n_fields)."""
        return relative_l2(self.reconstruct(batch["fields"]), batch["fields"], self.fields)

    @torch.no_grad()
    def heldout_metrics(self, validation: dict[str, torch.Tensor], datamodule) -> dict[str, float]:
        """Held-out reconstruction relative L2 (mean and p99 over rows and fields) and the latent size.

        The held-out fields may be on any device; chunks go to the model's, reconstructions come back.
        """
        fields = validation["fields"]
        recon = torch.cat([self.reconstruct(chunk.to(self.device)).to(fields.device) for chunk in fields.split(1024)])
        summary = summarize_errors(relative_l2(recon, fields, self.fields))
        return {
            "recon_rel_l2_mean": summary["mean"],
            "recon_rel_l2_p99": summary["p99"],
            "latent_dim": float(self.hparams.latent_dim),
        }
