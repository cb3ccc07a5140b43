"""Convolutional autoencoder for CIFAR-10: model, data, training, checkpoints."""
