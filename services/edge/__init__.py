"""The edge worker: one resident base pipeline with users' adapters, running the batched early phase
of personal requests and handing each latent to its user's device (or finishing a request alone with
its user's adapter)."""
