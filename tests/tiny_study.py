"""The overrides of a tiny heat2d ``gensim-train`` study (a few seconds), shared by the end-to-end
tests that need a real study rather than a particular one."""

#: 24 training and 4 held-out simulations of 10 steps on a 16 x 16 grid, 600 optimizer steps.
TINY = [
    "simulation.grid=16",
    "simulation.n_steps=10",
    "launcher.max_simulations=24",
    "data.n_validation=4",
    "data.watermark=64",
    "data.batch_size=32",
    "data.steps_per_epoch=100",
    "buffer.capacity=200",
    "model.net.hidden=[64,64]",
    "model.warmup_steps=20",
    "model.normalizer_warmup_batches=10",
    "trainer.max_steps=600",
]
