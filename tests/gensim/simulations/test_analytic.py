"""The tiny analytic simulation used by the end-to-end tests."""

import numpy as np
import pytest
from simulation_contract import SimulationContract

from gensim.simulations import DecayingWave


class TestDecayingWaveContract(SimulationContract):
    @pytest.fixture
    def simulation(self):
        return DecayingWave(size=8, n_steps=5)


def test_decaying_wave_solves_its_ode():
    sim = DecayingWave(size=32, n_steps=200, t_final=2.0)
    params = np.array([1.5, 0.7])
    out = np.stack([f["u"].astype(float) for _, _, f in sim.run(params)])
    # du/dt = -k u checked by central differences on the emitted steps: O(dt^2) = O(1e-4) error.
    dt = sim.times[1] - sim.times[0]
    dudt = (out[2:] - out[:-2]) / (2 * dt)
    np.testing.assert_allclose(dudt, -0.7 * out[1:-1], atol=5e-4)
    np.testing.assert_allclose(out[-1], sim.exact(params, 2.0), rtol=1e-6)


def test_decaying_wave_rejects_bad_sizes():
    with pytest.raises(ValueError, match="size >= 1"):
        DecayingWave(size=0)
