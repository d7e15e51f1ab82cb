"""nst-jax: Gatys-style neural style transfer on JAX."""
