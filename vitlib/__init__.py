"""vitlib: the paper "Scaling Vision Transformers" as tested JAX/Flax/Optax code."""
__version__ = "0.1.0"
