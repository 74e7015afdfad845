"""Inference backends behind one protocol (``base``); each imports its library when created."""
