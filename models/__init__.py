"""Shipped detection models (OpenVINO IR), each in its own folder with a model card."""
