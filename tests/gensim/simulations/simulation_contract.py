"""Contract every :class:`gensim.simulations.Simulation` must meet, as a test class to subclass.

Usage, in a ``test_<solver>.py`` next to this file::

    from simulation_contract import SimulationContract

    class TestMySolverContract(SimulationContract):
        @pytest.fixture
        def simulation(self):
            return MySolver(small sizes)

Keep the instance small: every test below runs it at least once.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gensim.simulations import FieldSpec, Simulation
from sampling import ParameterSpace


class SimulationContract:
    """Shared tests; subclasses provide the ``simulation`` fixture."""

    @pytest.fixture
    def simulation(self) -> Simulation:
        raise NotImplementedError("subclasses provide a small Simulation instance")

    @pytest.fixture
    def params(self, simulation: Simulation) -> np.ndarray:
        """A point inside the space, away from the bounds: shape (n_params,)."""
        return simulation.space.from_unit(np.full((1, simulation.space.dim), 0.3))[0]

    def test_declares_space_fields_and_steps(self, simulation):
        assert isinstance(simulation.space, ParameterSpace)
        assert len(simulation.fields) >= 1
        assert all(isinstance(f, FieldSpec) for f in simulation.fields)
        assert isinstance(simulation.n_steps, int) and simulation.n_steps >= 1

    def test_run_yields_every_step_with_declared_fields(self, simulation, params):
        out = list(simulation.run(params, seed=0))
        assert [step for step, _, _ in out] == list(range(simulation.n_steps))
        times = np.array([t for _, t, _ in out])
        assert np.all(np.isfinite(times)) and np.all(np.diff(times) > 0)
        for _, _, fields in out:
            assert set(fields) == {f.name for f in simulation.fields}
            for spec in simulation.fields:
                value = fields[spec.name]
                assert value.shape == spec.shape
                assert value.dtype == np.dtype(spec.dtype)
                assert np.all(np.isfinite(value))

    def test_same_seed_same_output(self, simulation, params):
        a = list(simulation.run(params, seed=7))
        b = list(simulation.run(params, seed=7))
        for (_, ta, fa), (_, tb, fb) in zip(a, b):
            assert ta == tb
            for name in fa:
                np.testing.assert_array_equal(fa[name], fb[name])

    def test_out_of_bounds_params_raise(self, simulation, params):
        bad = params.copy()
        bad[0] = simulation.space.upper[0] + abs(simulation.space.upper[0]) + 1.0
        with pytest.raises(ValueError, match=simulation.space.names[0]):
            next(iter(simulation.run(bad)))

    def test_wrong_number_of_params_raises(self, simulation, params):
        with pytest.raises(ValueError, match="expected"):
            next(iter(simulation.run(params[:-1])))

    def test_module_does_not_import_torch(self, simulation):
        module = type(simulation).__module__
        code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, f"{module} imports torch: {result.stderr}"
