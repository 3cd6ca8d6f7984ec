"""Keras model definitions and the shipped default model artifact."""
