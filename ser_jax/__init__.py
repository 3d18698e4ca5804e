"""ser-jax: speech emotion recognition on RAVDESS with JAX/Flax."""

__version__ = "0.1.0"
