"""A user's device: consumes its user's latents, finishes them with its personal model at its own
pace, decodes, stores and reports; heartbeats while it runs."""
