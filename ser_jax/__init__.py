"""ser-jax: speech emotion recognition on RAVDESS with JAX/Flax.

Importing the package sets one XLA:CPU flag before JAX starts (Eigen instead of YNNPACK
convolutions, several times faster to train on CPU); `ser_jax.xla_cpu` says why and when not.
"""
from ser_jax import xla_cpu as _xla_cpu

__version__ = "0.1.0"

# What the import did about the XLA:CPU flag: 'applied', or why not (see ser_jax/xla_cpu.py).
XLA_CPU_FLAGS = _xla_cpu.apply()
