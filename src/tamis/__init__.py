"""tamis: a fine sieve for what matters behind a model.

Tools (each a sub-package with its own extra):

- :mod:`tamis.attribution` -- LoRIF low-rank influence functions (training-data attribution).
- :mod:`tamis.density` -- pseudo density to steer fidelity vs diversity of generative models.
"""

__version__ = "0.1.0"
