"""ser-jax: speech emotion recognition on RAVDESS with JAX/Flax.

Importing the package sets, before JAX starts, one XLA:CPU flag (Eigen instead of YNNPACK
convolutions, several times faster to train on CPU; `ser_jax.xla_cpu` says why and when not)
and glibc malloc settings that keep freed memory for the next step instead of unmapping it
(no page-fault storm every step; `ser_jax.glibc_malloc`).
"""
from ser_jax import glibc_malloc as _glibc_malloc
from ser_jax import xla_cpu as _xla_cpu

__version__ = "0.1.0"

# What the import did about the XLA:CPU flag: 'applied', or why not (see ser_jax/xla_cpu.py).
XLA_CPU_FLAGS = _xla_cpu.apply()
# What it did about glibc malloc: 'applied', or why not (see ser_jax/glibc_malloc.py).
GLIBC_MALLOC = _glibc_malloc.apply()
