"""Helpers shared by the tests (tiny models live in :mod:`galip_diffusers.testing_utils`)."""
