"""Devices: the session every device connection runs, and the codecs of the protocols devices speak."""
