"""Hybrid deep-learning COVID-19 diagnosis from chest X-ray and CT images."""

__version__ = '0.1.0'
