"""Observables computed from predicted tensors: spectra, phonons, field-driven MD.

Import the submodules directly, e.g. ``from etgnn.observables import spectra``.
"""
