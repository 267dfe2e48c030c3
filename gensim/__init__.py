"""gensim: on-line training of neural surrogates of numerical simulations.

Importing ``gensim`` itself is cheap and imports neither torch nor lightning:
simulation worker processes import :mod:`gensim.client` and
:mod:`gensim.simulations` and must start fast.
"""

__version__ = "0.1.0"
