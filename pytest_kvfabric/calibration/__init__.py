"""Timing validation against published measurements, and calibration of a GPU profile's timing terms."""
