"""Evaluation of a trained autoencoder: reconstructions, latents, UMAP, retrieval, report."""
