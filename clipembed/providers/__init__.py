"""Embedding providers behind one protocol (:mod:`clipembed.providers.base`)."""
